//! ragstream's Avro schemas (`schemas/avro/*.avsc`, compiled in) and the conversion between a
//! message's JSON form, which the stages work on, and its Avro form on the wire.
//!
//! The conversion follows the mapping in `schemas/avro/README.md`: an optional field is the
//! `["null", T]` union (absent or `null` in JSON), an enum is its symbol, a map an object, and a
//! field marked `"ragstream.json_text": true` carries arbitrary JSON as its text.

use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Name, ResolvedSchema, Schema};
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use serde_json::{Map, Number, Value as Json};

/// Why a message could not be put into or taken out of its Avro form.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// The message does not fit the schema at `at` (a field path, or `the message`).
    #[error("{at}: {problem}")]
    DoesNotFit { at: String, problem: String },
    /// A field marked as JSON text holds text that is not JSON.
    #[error("{at}: not JSON text ({source})")]
    NotJsonText { at: String, source: serde_json::Error },
    /// The datum could not be written or read with the schema.
    #[error("{0}")]
    Codec(#[from] apache_avro::Error),
}

fn does_not_fit(at: &str, problem: impl Into<String>) -> AvroError {
    AvroError::DoesNotFit {
        at: at.to_owned(),
        problem: problem.into(),
    }
}

/// The field attribute marking a string that holds JSON text.
const JSON_TEXT_ATTRIBUTE: &str = "ragstream.json_text";

/// The schema files, by the name a sink's `schema` setting uses.
const SCHEMA_FILES: [(&str, &str); 6] = [
    ("answers", include_str!("../../schemas/avro/answers.avsc")),
    ("audit", include_str!("../../schemas/avro/audit.avsc")),
    ("documents", include_str!("../../schemas/avro/documents.avsc")),
    (
        "partial_answers",
        include_str!("../../schemas/avro/partial_answers.avsc"),
    ),
    ("questions", include_str!("../../schemas/avro/questions.avsc")),
    ("status", include_str!("../../schemas/avro/status.avsc")),
];

/// One of ragstream's message schemas.
pub struct MessageSchema {
    /// The file name without `.avsc`, as a sink's `schema` names it.
    pub name: &'static str,
    /// The schema text, as registered.
    pub text: &'static str,
    /// The record's full name, e.g. `dev.ragstream.v1.Answer`.
    pub full_name: String,
    schema: Schema,
    /// The named types the schema defines, for its references (resolved once).
    names: HashMap<Name, Schema>,
    /// Field paths (record field names from the root) whose string holds JSON text.
    json_text_paths: Vec<Vec<String>>,
}

static SCHEMAS: LazyLock<Vec<MessageSchema>> = LazyLock::new(|| {
    SCHEMA_FILES
        .iter()
        .map(|(name, text)| {
            // The files are compiled in and parsed by a unit test: failing here is a build bug.
            let schema = Schema::parse_str(text).unwrap_or_else(|e| panic!("schemas/avro/{name}.avsc: {e}"));
            let full_name = match &schema {
                Schema::Record(record) => record.name.fullname(None),
                _ => panic!("schemas/avro/{name}.avsc: the root is not a record"),
            };
            let mut json_text_paths = Vec::new();
            collect_json_text_paths(&schema, &mut Vec::new(), &mut json_text_paths);
            let names = ResolvedSchema::new(&schema)
                .unwrap_or_else(|e| panic!("schemas/avro/{name}.avsc: {e}"))
                .get_names()
                .iter()
                .map(|(name, schema)| (name.clone(), (*schema).clone()))
                .collect();
            MessageSchema {
                name,
                text,
                full_name,
                schema,
                names,
                json_text_paths,
            }
        })
        .collect()
});

/// The schema a sink's `schema` setting names.
pub fn message_schema(name: &str) -> Option<&'static MessageSchema> {
    SCHEMAS.iter().find(|schema| schema.name == name)
}

/// The names a sink's `schema` setting accepts.
pub fn schema_names() -> Vec<&'static str> {
    SCHEMA_FILES.iter().map(|(name, _)| *name).collect()
}

/// Our schema whose record has the full name `full_name` (what a decoded message says it is).
pub fn schema_by_full_name(full_name: &str) -> Option<&'static MessageSchema> {
    SCHEMAS.iter().find(|schema| schema.full_name == full_name)
}

fn collect_json_text_paths(schema: &Schema, path: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    match schema {
        Schema::Record(record) => {
            for field in &record.fields {
                path.push(field.name.clone());
                if field.custom_attributes.get(JSON_TEXT_ATTRIBUTE) == Some(&Json::Bool(true)) {
                    found.push(path.clone());
                }
                collect_json_text_paths(&field.schema, path, found);
                path.pop();
            }
        }
        Schema::Union(union) => {
            for variant in union.variants() {
                collect_json_text_paths(variant, path, found);
            }
        }
        _ => {}
    }
}

impl MessageSchema {
    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The Avro value of a message in its JSON form. Fails, naming the field, when the message
    /// does not fit the schema (a field the schema lacks included: nothing is dropped silently).
    pub fn to_avro(&self, message: &Json) -> Result<Avro, AvroError> {
        let converter = ToAvro { names: &self.names };
        converter.convert(&self.schema, Some(message), "")
    }

    /// The Avro datum (no framing) of a value of this schema.
    pub fn datum(&self, value: Avro) -> Result<Vec<u8>, AvroError> {
        let writer = GenericDatumWriter::builder(&self.schema).build()?;
        Ok(writer.write_value_to_vec(value)?)
    }

    /// Reads a datum written with this schema.
    pub fn read_datum(&self, mut bytes: &[u8]) -> Result<Avro, AvroError> {
        let reader = GenericDatumReader::builder(&self.schema).build()?;
        Ok(reader.read_value(&mut bytes)?)
    }

    /// Turns the JSON text of the fields marked as such back into JSON values.
    pub fn restore_json_text(&self, message: &mut Json) -> Result<(), AvroError> {
        for path in &self.json_text_paths {
            let Some(slot) = path.iter().try_fold(&mut *message, |value, key| value.get_mut(key)) else {
                continue;
            };
            if let Json::String(text) = slot {
                *slot = serde_json::from_str(text).map_err(|source| AvroError::NotJsonText {
                    at: path.join("."),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

struct ToAvro<'a> {
    names: &'a HashMap<Name, Schema>,
}

impl ToAvro<'_> {
    fn convert(&self, schema: &Schema, value: Option<&Json>, path: &str) -> Result<Avro, AvroError> {
        let at = if path.is_empty() { "the message" } else { path };
        if let Schema::Ref { name } = schema {
            let target = self
                .names
                .get(name)
                .ok_or_else(|| does_not_fit(at, format!("unknown type {name}")))?;
            return self.convert(target, value, path);
        }
        if let Schema::Union(union) = schema {
            let variants = union.variants();
            return match value.filter(|v| !v.is_null()) {
                None => variants
                    .iter()
                    .position(|variant| matches!(variant, Schema::Null))
                    .map(|index| Avro::Union(index as u32, Box::new(Avro::Null)))
                    .ok_or_else(|| does_not_fit(at, "missing, and the schema does not allow null")),
                Some(value) => variants
                    .iter()
                    .enumerate()
                    .filter(|(_, variant)| !matches!(variant, Schema::Null))
                    .find_map(|(index, variant)| {
                        self.convert(variant, Some(value), path)
                            .ok()
                            .map(|converted| Avro::Union(index as u32, Box::new(converted)))
                    })
                    .ok_or_else(|| does_not_fit(at, format!("{} fits no branch of the union", kind(value)))),
            };
        }
        let value = value.ok_or_else(|| does_not_fit(at, "missing (required)"))?;
        let mismatch = |expected: &str| does_not_fit(at, format!("expected {expected}, found {}", kind(value)));
        match schema {
            Schema::Null if value.is_null() => Ok(Avro::Null),
            Schema::Boolean => value.as_bool().map(Avro::Boolean).ok_or_else(|| mismatch("a boolean")),
            Schema::Int => value
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(Avro::Int)
                .ok_or_else(|| mismatch("a 32-bit integer")),
            Schema::Long => value.as_i64().map(Avro::Long).ok_or_else(|| mismatch("an integer")),
            Schema::Float => value
                .as_f64()
                .map(|n| Avro::Float(n as f32))
                .ok_or_else(|| mismatch("a number")),
            Schema::Double => value.as_f64().map(Avro::Double).ok_or_else(|| mismatch("a number")),
            Schema::String => Ok(Avro::String(match value {
                Json::String(text) => text.clone(),
                // Arbitrary JSON (an extract's data) travels as its text.
                other => other.to_string(),
            })),
            Schema::Enum(enumeration) => {
                let symbol = value.as_str().ok_or_else(|| mismatch("a string"))?;
                let index =
                    enumeration.symbols.iter().position(|s| s == symbol).ok_or_else(|| {
                        does_not_fit(at, format!("`{symbol}` is not one of {:?}", enumeration.symbols))
                    })?;
                Ok(Avro::Enum(index as u32, symbol.to_owned()))
            }
            Schema::Array(array) => {
                let items = value.as_array().ok_or_else(|| mismatch("an array"))?;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.convert(&array.items, Some(item), &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()
                    .map(Avro::Array)
            }
            Schema::Map(map) => {
                let object = value.as_object().ok_or_else(|| mismatch("an object"))?;
                object
                    .iter()
                    .map(|(key, item)| {
                        self.convert(&map.types, Some(item), &join(path, key))
                            .map(|converted| (key.clone(), converted))
                    })
                    .collect::<Result<_, _>>()
                    .map(Avro::Map)
            }
            Schema::Record(record) => {
                let object = value.as_object().ok_or_else(|| mismatch("an object"))?;
                if let Some(unknown) = object.keys().find(|key| !record.fields.iter().any(|f| &f.name == *key)) {
                    return Err(does_not_fit(
                        &join(path, unknown),
                        format!("not in the Avro schema {}", record.name.fullname(None)),
                    ));
                }
                record
                    .fields
                    .iter()
                    .map(|field| {
                        self.convert(&field.schema, object.get(&field.name), &join(path, &field.name))
                            .map(|converted| (field.name.clone(), converted))
                    })
                    .collect::<Result<_, _>>()
                    .map(Avro::Record)
            }
            other => Err(does_not_fit(
                at,
                format!("Avro type {other:?} is not used by ragstream's schemas"),
            )),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// The JSON form of a decoded Avro value: a record's null fields are left out (an absent
/// optional field), unions are their branch, enums their symbol.
pub fn to_json(value: Avro) -> Json {
    match value {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => Json::Bool(b),
        Avro::Int(n) | Avro::Date(n) | Avro::TimeMillis(n) => Json::from(n),
        Avro::Long(n)
        | Avro::TimeMicros(n)
        | Avro::TimestampMillis(n)
        | Avro::TimestampMicros(n)
        | Avro::TimestampNanos(n)
        | Avro::LocalTimestampMillis(n)
        | Avro::LocalTimestampMicros(n)
        | Avro::LocalTimestampNanos(n) => Json::from(n),
        Avro::Float(n) => float(f64::from(n)),
        Avro::Double(n) => float(n),
        Avro::String(text) | Avro::Enum(_, text) => Json::String(text),
        Avro::Bytes(bytes) | Avro::Fixed(_, bytes) => Json::from(bytes),
        Avro::Union(_, inner) => to_json(*inner),
        Avro::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Avro::Map(entries) => {
            let mut sorted: Vec<_> = entries.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(sorted.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
        Avro::Record(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(name, value)| (name, to_json(value)))
                .filter(|(_, value)| !value.is_null())
                .collect::<Map<_, _>>(),
        ),
        Avro::Uuid(uuid) => Json::String(uuid.to_string()),
        other => Json::String(format!("{other:?}")),
    }
}

fn float(n: f64) -> Json {
    Number::from_f64(n).map(Json::Number).unwrap_or(Json::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_file_parses_and_has_a_record_name() {
        for name in schema_names() {
            let schema = message_schema(name).unwrap();
            assert!(
                schema.full_name.starts_with("dev.ragstream.v1."),
                "{}",
                schema.full_name
            );
            assert!(schema_by_full_name(&schema.full_name).is_some());
        }
        assert_eq!(
            message_schema("questions").unwrap().json_text_paths,
            vec![vec!["options".to_owned(), "extract_schema".to_owned()]]
        );
        assert_eq!(
            message_schema("answers").unwrap().json_text_paths,
            vec![vec!["data".to_owned()]]
        );
    }

    fn round_trip(schema: &str, message: Json) -> Json {
        let schema = message_schema(schema).unwrap();
        let avro = schema.to_avro(&message).unwrap();
        let bytes = schema.datum(avro).unwrap();
        let decoded = schema.read_datum(&bytes).unwrap();
        let mut json = to_json(decoded);
        schema.restore_json_text(&mut json).unwrap();
        json
    }

    #[test]
    fn a_question_with_options_and_an_extract_schema_survives_the_round_trip() {
        let question = json!({
            "schema_version": 1, "request_id": "r1", "tenant": "acme", "user": "u1",
            "question": "Who signed?", "task": "extract",
            "options": {"top_k": 3, "extract_schema": {"type": "object", "required": ["name"]}},
            "metadata": {"channel": "web"}
        });
        assert_eq!(round_trip("questions", question.clone()), question);
    }

    #[test]
    fn an_answer_with_citations_and_data_survives_the_round_trip() {
        let answer = json!({
            "schema_version": 1, "request_id": "r1", "tenant": "acme", "user": "u1", "task": "extract",
            "status": "ok", "answer": "{\"name\":\"Ada\"}", "data": {"name": "Ada"},
            "citations": [{"index": 1, "doc_id": "d1", "chunk_id": "d1:1:0", "score": 0.5}],
            "model": "local", "usage": {"prompt_tokens": 10, "completion_tokens": 2},
            "cost_usd": 0.0, "cached": false, "latency_ms": 12.5, "created_at": "2026-11-27T00:00:00Z"
        });
        assert_eq!(round_trip("answers", answer.clone()), answer);
    }

    #[test]
    fn a_message_that_does_not_fit_names_the_field() {
        let schema = message_schema("answers").unwrap();
        let unfit = |message: Json| match schema.to_avro(&message).unwrap_err() {
            AvroError::DoesNotFit { at, problem } => (at, problem),
            other => panic!("{other:?}"),
        };
        let (at, problem) = unfit(
            json!({"schema_version": 1, "request_id": "r1", "tenant": "t", "user": "u", "task": "qa", "status": "maybe"}),
        );
        assert_eq!(at, "status");
        assert!(problem.starts_with("`maybe` is not one of"), "{problem}");
        let error = schema
            .to_avro(&json!({"schema_version": 1, "surprise": true}))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "surprise: not in the Avro schema dev.ragstream.v1.Answer"
        );
        let error = message_schema("partial_answers")
            .unwrap()
            .to_avro(&json!({}))
            .unwrap_err();
        assert!(error.to_string().ends_with("missing (required)"), "{error}");
    }
}
