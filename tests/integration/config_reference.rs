//! The README is the configuration reference: every setting a topology file accepts (each field
//! of a config struct that rejects unknown fields) must be documented there, so a new setting
//! cannot ship undocumented. The fields are read from the structs' source.

use std::collections::BTreeSet;
use std::path::Path;

use regex::Regex;

/// `(file, struct, field)` of every field of every `deny_unknown_fields` struct under `src/`.
fn config_fields() -> Vec<(String, String, String)> {
    let struct_start =
        Regex::new(r"(?m)^#\[serde\(deny_unknown_fields\)\]\s*\npub(?:\(crate\))? struct (\w+) \{").unwrap();
    let field = Regex::new(r"(?m)^    pub(?:\(crate\))? (\w+):").unwrap();
    let mut found = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in walkdir::WalkDir::new(&root) {
        let entry = entry.unwrap();
        if entry.path().extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let file = entry.path().strip_prefix(&root).unwrap().display().to_string();
        for start in struct_start.captures_iter(&text) {
            let body_start = start.get(0).unwrap().end();
            let body_end = text[body_start..]
                .find("\n}")
                .map_or(text.len(), |end| body_start + end);
            for name in field.captures_iter(&text[body_start..body_end]) {
                found.push((file.clone(), start[1].to_owned(), name[1].to_owned()));
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
    assert!(has("SchemaRegistryConfig", "auto_register"));
}
