//! The Avro schemas in `schemas/avro/` must say what the JSON Schemas in `schemas/` say: the JSON
//! Schemas are the source of truth, and a consumer reading Avro must see the same fields, the same
//! optionality and compatible types. Mapping rules are in `schemas/avro/README.md`. No broker needed:
//! both sides are read from disk and compared field by field, and every disagreement is reported
//! with its path (e.g. `answers: citations[].score: JSON number vs Avro string`).
//!
//! Avro type references (a named type used again by its name) are not resolved: every type is
//! written inline, which is all these schemas need.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

#[test]
fn avro_schemas_match_the_json_schemas() {
    let json_topics = topics_in("schemas", ".schema.json");
    let avro_topics = topics_in("schemas/avro", ".avsc");
    assert!(!json_topics.is_empty(), "no JSON Schemas found in schemas/");
    assert_eq!(
        json_topics, avro_topics,
        "every topic needs both a JSON Schema and an Avro schema"
    );

    let problems: Vec<String> = json_topics
        .iter()
        .map(String::as_str)
        .flat_map(topic_problems)
        .collect();
    assert!(
        problems.is_empty(),
        "Avro and JSON Schemas disagree:\n{}",
        problems.join("\n")
    );
}

/// The check must be able to fail: a renamed field and a wrong type, nested in an array, are both found.
#[test]
fn the_check_reports_a_renamed_field_and_a_wrong_type() {
    let json_schema = json!({
        "type": "object",
        "required": ["request_id", "citations"],
        "properties": {
            "request_id": { "type": "string" },
            "citations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["score"],
                    "properties": { "score": { "type": "number" } }
                }
            }
        }
    });
    let avro_schema = json!({
        "type": "record",
        "name": "Answer",
        "fields": [
            { "name": "requestId", "type": "string" },
            {
                "name": "citations",
                "type": {
                    "type": "array",
                    "items": { "type": "record", "name": "Citation", "fields": [{ "name": "score", "type": "string" }] }
                }
            }
        ]
    });

    assert_eq!(
        schema_problems("answers", &json_schema, &avro_schema),
        [
            "answers: citations[].score: JSON number vs Avro string",
            "answers: requestId: in Avro, missing from the JSON Schema",
            "answers: request_id: in the JSON Schema, missing from Avro",
        ]
    );
}

/// Optional must mean `["null", T]` with default null, and required must not be nullable.
#[test]
fn the_check_reports_optionality_that_differs() {
    let json_schema = json!({
        "type": "object",
        "required": ["tenant"],
        "properties": {
            "tenant": { "type": "string" },
            "title": { "type": "string" },
            "source": { "type": "string" }
        }
    });
    let avro_schema = json!({
        "type": "record",
        "name": "Document",
        "fields": [
            { "name": "tenant", "type": ["null", "string"], "default": null },
            { "name": "title", "type": "string" },
            { "name": "source", "type": ["null", "string"] }
        ]
    });

    assert_eq!(
        schema_problems("documents", &json_schema, &avro_schema),
        [
            "documents: source: optional in the JSON Schema but its Avro default is not null",
            "documents: tenant: required in the JSON Schema but nullable in Avro",
            "documents: title: optional in the JSON Schema but not nullable in Avro (want [\"null\", T], default null)",
        ]
    );
}

/// Every disagreement between the JSON Schema and the Avro schema of `topic`.
fn topic_problems(topic: &str) -> Vec<String> {
    let json_schema = read_json(&format!("schemas/{topic}.schema.json"));
    let avro_schema = read_json(&format!("schemas/avro/{topic}.avsc"));
    schema_problems(topic, &json_schema, &avro_schema)
}

fn repository_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_json(relative: &str) -> Value {
    let path = repository_path(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Names of the files in `directory` ending in `suffix`, without it, sorted: the topics it has schemas for.
fn topics_in(directory: &str, suffix: &str) -> Vec<String> {
    let path = repository_path(directory);
    let entries = std::fs::read_dir(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let mut topics: Vec<String> = entries
        .filter_map(|entry| {
            entry
                .ok()?
                .file_name()
                .to_str()?
                .strip_suffix(suffix)
                .map(str::to_owned)
        })
        .collect();
    topics.sort();
    topics
}

/// Every disagreement, sorted and each once, as `topic: path: what differs`.
fn schema_problems(topic: &str, json_schema: &Value, avro_schema: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if avro_type_name(avro_schema) == "record" {
        compare_record("", json_schema, avro_schema, &mut problems);
    } else {
        problems.push(format!(
            "the Avro schema is {}, not a record",
            describe_avro(avro_schema)
        ));
    }
    problems.sort();
    problems.dedup();
    problems
        .into_iter()
        .map(|problem| format!("{topic}: {problem}"))
        .collect()
}

/// Field names both ways, then each field's optionality and type.
fn compare_record(path: &str, json_schema: &Value, avro_record: &Value, problems: &mut Vec<String>) {
    let json_properties = json_properties(json_schema);
    let required = json_required(json_schema);
    let avro_fields = avro_fields(avro_record);

    for (name, definitions) in &json_properties {
        let field_path = child_path(path, name);
        let Some(avro_field) = avro_fields.get(name) else {
            problems.push(format!("{field_path}: in the JSON Schema, missing from Avro"));
            continue;
        };
        for definition in definitions {
            compare_field(&field_path, definition, required.contains(name), avro_field, problems);
        }
    }
    for name in avro_fields.keys().filter(|name| !json_properties.contains_key(*name)) {
        problems.push(format!(
            "{}: in Avro, missing from the JSON Schema",
            child_path(path, name)
        ));
    }
}

/// A required property is a plain Avro type; an optional one is `["null", T]` with default null, so a
/// reader of an older message without the field still gets a value.
fn compare_field(path: &str, definition: &Value, required: bool, avro_field: &Value, problems: &mut Vec<String>) {
    let (nullable, avro_type) = split_nullable(&avro_field["type"]);
    if required && nullable {
        problems.push(format!("{path}: required in the JSON Schema but nullable in Avro"));
    }
    if !required && !nullable {
        problems.push(format!(
            "{path}: optional in the JSON Schema but not nullable in Avro (want [\"null\", T], default null)"
        ));
    }
    if !required && nullable && avro_field.get("default") != Some(&Value::Null) {
        problems.push(format!(
            "{path}: optional in the JSON Schema but its Avro default is not null"
        ));
    }
    compare_types(path, definition, avro_type, problems);
}

/// Whether `avro_type` is `["null", T]`, and T (or `avro_type` itself when it is not).
fn split_nullable(avro_type: &Value) -> (bool, &Value) {
    match avro_type.as_array().map(Vec::as_slice) {
        Some([null, inner]) if null == "null" => (true, inner),
        _ => (false, avro_type),
    }
}

/// The type mapping of `schemas/avro/README.md`, applied recursively through arrays, maps and records.
fn compare_types(path: &str, json_schema: &Value, avro_type: &Value, problems: &mut Vec<String>) {
    let kind = json_kind(json_schema);
    match (&kind, avro_type_name(avro_type)) {
        (JsonKind::String | JsonKind::AnyJson, "string")
        | (JsonKind::Integer { .. }, "long")
        | (JsonKind::Integer { fits_in_int: true }, "int")
        | (JsonKind::Number, "double")
        | (JsonKind::Boolean, "boolean") => {}
        (JsonKind::Enum(symbols), "enum") => compare_symbols(path, symbols, avro_type, problems),
        (JsonKind::Array(items), "array") => compare_types(&format!("{path}[]"), items, &avro_type["items"], problems),
        (JsonKind::Map(values), "map") => compare_types(&format!("{path}{{}}"), values, &avro_type["values"], problems),
        (JsonKind::Record(schema), "record") => compare_record(path, schema, avro_type, problems),
        _ => problems.push(format!(
            "{path}: JSON {} vs Avro {}",
            kind.describe(),
            describe_avro(avro_type)
        )),
    }
}

fn compare_symbols(path: &str, json_symbols: &BTreeSet<&str>, avro_enum: &Value, problems: &mut Vec<String>) {
    let avro_symbols = string_set(avro_enum.get("symbols"));
    let only_in_json: Vec<&str> = json_symbols.difference(&avro_symbols).copied().collect();
    let only_in_avro: Vec<&str> = avro_symbols.difference(json_symbols).copied().collect();
    if !only_in_json.is_empty() {
        problems.push(format!(
            "{path}: enum symbols missing from Avro: {}",
            only_in_json.join(", ")
        ));
    }
    if !only_in_avro.is_empty() {
        problems.push(format!(
            "{path}: enum symbols missing from the JSON Schema: {}",
            only_in_avro.join(", ")
        ));
    }
}

/// What a JSON Schema allows, reduced to the distinctions Avro can express.
enum JsonKind<'a> {
    String,
    /// Avro `int` is allowed only when the JSON Schema keeps the value within 32 bits; `long` always is.
    Integer {
        fits_in_int: bool,
    },
    Number,
    Boolean,
    /// Strings that are all valid Avro names; other string enums are plain strings.
    Enum(BTreeSet<&'a str>),
    /// The schema of the items.
    Array(&'a Value),
    /// An object with `properties`.
    Record(&'a Value),
    /// The schema of the values of an object with only `additionalProperties`.
    Map(&'a Value),
    /// No shape at all (e.g. an extract's `data`): Avro carries its JSON text as a string.
    AnyJson,
    Unsupported(String),
}

impl JsonKind<'_> {
    fn describe(&self) -> String {
        match self {
            JsonKind::String => "string".to_owned(),
            JsonKind::Integer { fits_in_int: true } => "integer".to_owned(),
            JsonKind::Integer { fits_in_int: false } => "integer without 32-bit bounds".to_owned(),
            JsonKind::Number => "number".to_owned(),
            JsonKind::Boolean => "boolean".to_owned(),
            JsonKind::Enum(_) => "enum".to_owned(),
            JsonKind::Array(_) => "array".to_owned(),
            JsonKind::Record(_) => "object with properties".to_owned(),
            JsonKind::Map(_) => "map (additionalProperties)".to_owned(),
            JsonKind::AnyJson => "any JSON (Avro string of JSON text)".to_owned(),
            JsonKind::Unsupported(what) => format!("{what} (no Avro mapping)"),
        }
    }
}

fn json_kind(schema: &Value) -> JsonKind<'_> {
    if let Some(value) = schema.get("const") {
        return const_kind(value);
    }
    if let Some(values) = schema.get("enum") {
        return enum_kind(values);
    }
    match schema.get("type") {
        None => JsonKind::AnyJson,
        Some(Value::String(name)) => match name.as_str() {
            "string" => JsonKind::String,
            "integer" => JsonKind::Integer {
                fits_in_int: bounds_fit_in_int(schema),
            },
            "number" => JsonKind::Number,
            "boolean" => JsonKind::Boolean,
            "array" => schema.get("items").map_or_else(
                || JsonKind::Unsupported("array without items".to_owned()),
                JsonKind::Array,
            ),
            "object" => object_kind(schema),
            other => JsonKind::Unsupported(format!("type {other}")),
        },
        Some(other) => JsonKind::Unsupported(format!("type {other}")),
    }
}

/// A `const` has the type of its value.
fn const_kind(value: &Value) -> JsonKind<'_> {
    match value {
        Value::String(_) => JsonKind::String,
        Value::Bool(_) => JsonKind::Boolean,
        Value::Number(number) if number.is_i64() || number.is_u64() => JsonKind::Integer {
            fits_in_int: number.as_i64().is_some_and(|whole| i32::try_from(whole).is_ok()),
        },
        Value::Number(_) => JsonKind::Number,
        other => JsonKind::Unsupported(format!("const {other}")),
    }
}

/// An Avro enum needs symbols that are Avro names; a JSON enum with any other value stays a string.
fn enum_kind(values: &Value) -> JsonKind<'_> {
    let strings: Option<BTreeSet<&str>> = values
        .as_array()
        .and_then(|values| values.iter().map(Value::as_str).collect());
    match strings {
        Some(symbols) if symbols.iter().copied().all(is_avro_name) => JsonKind::Enum(symbols),
        Some(_) => JsonKind::String,
        None => JsonKind::Unsupported("enum of non-strings".to_owned()),
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the Avro specification's names.
fn is_avro_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_')
}

fn bounds_fit_in_int(schema: &Value) -> bool {
    let fits = |bound: &str| {
        schema
            .get(bound)
            .and_then(Value::as_i64)
            .is_some_and(|value| i32::try_from(value).is_ok())
    };
    fits("minimum") && fits("maximum")
}

/// An object is a record when it lists properties, a map when it only constrains its values, and
/// arbitrary JSON (e.g. an extract schema) otherwise.
fn object_kind(schema: &Value) -> JsonKind<'_> {
    if schema.get("properties").is_some() {
        return JsonKind::Record(schema);
    }
    match schema.get("additionalProperties") {
        Some(values) if values.is_object() => JsonKind::Map(values),
        _ => JsonKind::AnyJson,
    }
}

/// Every property a message may carry, with each of its definitions. A `oneOf` branch's own
/// properties are the fields of that kind of message (the audit event kinds), so each must match
/// the Avro field; a branch repeating a property declared for every message only narrows it (e.g.
/// `event` to its kinds), so the common declaration is the one Avro must match.
fn json_properties(schema: &Value) -> BTreeMap<&str, Vec<&Value>> {
    let common = properties_of(schema);
    let mut properties: BTreeMap<&str, Vec<&Value>> = common
        .iter()
        .map(|(name, definition)| (*name, vec![*definition]))
        .collect();
    for branch in one_of_branches(schema) {
        for (name, definition) in properties_of(branch) {
            if !common.contains_key(name) {
                properties.entry(name).or_default().push(definition);
            }
        }
    }
    properties
}

fn properties_of(schema: &Value) -> BTreeMap<&str, &Value> {
    let properties = schema.get("properties").and_then(Value::as_object);
    properties
        .into_iter()
        .flatten()
        .map(|(name, definition)| (name.as_str(), definition))
        .collect()
}

/// Properties every valid message has: required by the schema itself, or by every `oneOf` branch
/// (exactly one branch matches, so a property all of them require is always there).
fn json_required(schema: &Value) -> BTreeSet<&str> {
    let mut required = string_set(schema.get("required"));
    let required_by_every_branch = one_of_branches(schema)
        .map(|branch| string_set(branch.get("required")))
        .reduce(|left, right| left.intersection(&right).copied().collect());
    required.extend(required_by_every_branch.unwrap_or_default());
    required
}

fn one_of_branches(schema: &Value) -> impl Iterator<Item = &Value> {
    schema.get("oneOf").and_then(Value::as_array).into_iter().flatten()
}

fn string_set(list: Option<&Value>) -> BTreeSet<&str> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn avro_fields(record: &Value) -> BTreeMap<&str, &Value> {
    let fields = record.get("fields").and_then(Value::as_array);
    fields
        .into_iter()
        .flatten()
        .filter_map(|field| Some((field.get("name")?.as_str()?, field)))
        .collect()
}

/// `"long"` and `{"type": "long"}` alike; `union` for a union, empty when there is no type.
fn avro_type_name(avro_type: &Value) -> &str {
    match avro_type {
        Value::String(name) => name.as_str(),
        Value::Object(_) => avro_type.get("type").and_then(Value::as_str).unwrap_or_default(),
        Value::Array(_) => "union",
        _ => "",
    }
}

fn describe_avro(avro_type: &Value) -> String {
    match avro_type {
        Value::Null => "nothing".to_owned(),
        Value::Array(_) => format!("union {avro_type}"),
        _ => avro_type_name(avro_type).to_owned(),
    }
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}
