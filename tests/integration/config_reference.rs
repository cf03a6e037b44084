//! The README is the configuration reference: every setting a topology file accepts (each field
//! of a config struct that rejects unknown fields) must be documented there, so a new setting
//! cannot ship undocumented. The fields are read from the structs' source.

use std::collections::BTreeSet;
use std::path::Path;

use regex::Regex;

/// `(file, struct, field)` of every field of every `deny_unknown_fields` struct under `src/`, and
/// of the structs such a struct flattens into itself (`#[serde(flatten)]`).
fn config_fields() -> Vec<(String, String, String)> {
    let config_struct =
        Regex::new(r"(?m)^#\[serde\((?:default, )?deny_unknown_fields\)\]\s*\npub(?:\(crate\))? struct (\w+) \{")
            .unwrap();
    let flattened = Regex::new(r"(?m)^    #\[serde\(flatten\)\]\s*\n    pub(?:\(crate\))? \w+: (\w+),").unwrap();
    let field = Regex::new(r"(?m)^    pub(?:\(crate\))? (\w+):").unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    for entry in walkdir::WalkDir::new(&root) {
        let entry = entry.unwrap();
        if entry.path().extension().is_some_and(|e| e == "rs") {
            let file = entry.path().strip_prefix(&root).unwrap().display().to_string();
            sources.push((file, std::fs::read_to_string(entry.path()).unwrap()));
        }
    }
    let body = |text: &str, start: usize| {
        let end = text[start..].find("\n}").map_or(text.len(), |end| start + end);
        text[start..end].to_owned()
    };
    let mut found = Vec::new();
    let mut flattened_types = BTreeSet::new();
    for (file, text) in &sources {
        for start in config_struct.captures_iter(text) {
            let fields = body(text, start.get(0).unwrap().end());
            flattened_types.extend(flattened.captures_iter(&fields).map(|c| c[1].to_owned()));
            // A flattened field is a group of settings, listed below, not a setting of its own.
            let fields = flattened.replace_all(&fields, "");
            for name in field.captures_iter(&fields) {
                found.push((file.clone(), start[1].to_owned(), name[1].to_owned()));
            }
        }
    }
    for (file, text) in &sources {
        for name in &flattened_types {
            let Some(at) = text.find(&format!("\npub struct {name} {{")) else {
                continue;
            };
            let fields = body(text, at + 1);
            for field_name in field.captures_iter(&fields) {
                found.push((file.clone(), name.clone(), field_name[1].to_owned()));
            }
        }
    }
    found
}

#[test]
fn every_topology_setting_is_in_the_readme() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let fields = config_fields();
    assert!(
        fields.len() > 80,
        "only {} fields found: is the pattern stale?",
        fields.len()
    );
    let missing: BTreeSet<String> = fields
        .iter()
        .filter(|(_, _, name)| {
            let documented = Regex::new(&format!(r"(`{name}`|\b{name}:|`{name} )")).unwrap();
            !documented.is_match(&readme)
        })
        .map(|(file, owner, name)| format!("{name} ({owner} in src/{file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "{} settings are not documented in README.md (as `name` or name:):\n  {}",
        missing.len(),
        missing.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn the_check_finds_fields_of_stage_configs() {
    let fields = config_fields();
    let has = |owner: &str, name: &str| fields.iter().any(|(_, o, n)| o == owner && n == name);
    assert!(has("GenerateConfig", "partials_sink"));
    assert!(has("ReplayConfig", "ttl_s"));
    assert!(has("SinkConfig", "format"));
    assert!(
        has("ApiKeySettings", "api_key_vault"),
        "fields of flattened settings are found too"
    );
    assert!(has("SchemaRegistryConfig", "auto_register"));
}
