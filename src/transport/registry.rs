//! Confluent Schema Registry support: Avro messages in the Confluent wire format (a 0 byte, the
//! schema id as 4 big-endian bytes, the Avro datum), with schema_registry_converter for the
//! registry calls and for decoding (it fetches and caches writer schemas by id).

use std::sync::Arc;
use std::time::Duration;

use apache_avro::types::Value as Avro;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{perform_sr_call, post_schema, SrSettings};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SrCall, SuppliedSchema};
use serde_json::Value as Json;

use crate::config::SchemaRegistryConfig;
use crate::contracts::avro::{schema_by_full_name, to_json, MessageSchema};
use crate::error::StageError;

/// The first byte of a message in the Confluent wire format. JSON text never starts with it, so
/// a source can take both formats.
const MAGIC_BYTE: u8 = 0;

/// Whether `bytes` are a message in the Confluent wire format.
pub fn is_wire_format(bytes: &[u8]) -> bool {
    bytes.len() > 5 && bytes[0] == MAGIC_BYTE
}

/// The schema id a wire-format message names.
pub fn schema_id(bytes: &[u8]) -> Option<u32> {
    is_wire_format(bytes).then(|| u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]))
}

/// The subject of a topic's message values (Confluent's default `TopicNameStrategy`).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// A connection to one registry, shared by every pipeline of the process.
pub struct SchemaRegistry {
    settings: SrSettings,
    auto_register: bool,
    decoder: AvroDecoder,
}

/// A sink's schema as registered: what to encode with and the id to put in front.
#[derive(Clone, Copy)]
pub struct RegisteredSink {
    /// ragstream's schema of the sink's records.
    pub schema: &'static MessageSchema,
    /// The registry's id of that schema.
    pub id: u32,
}

impl SchemaRegistry {
    /// A client for the registry `config` describes (no request is made yet).
    pub fn new(config: &SchemaRegistryConfig) -> anyhow::Result<Arc<Self>> {
        let mut builder = SrSettings::new_builder(config.url.trim_end_matches('/').to_owned());
        builder.set_timeout(Duration::from_millis(config.timeout_ms));
        if let Some(username) = &config.username {
            builder.set_basic_authorization(username, config.password.as_deref());
        }
        let settings = builder
            .build()
            .map_err(|error| anyhow::anyhow!("schema_registry: cannot build the HTTP client: {}", error.error))?;
        Ok(Arc::new(Self {
            decoder: AvroDecoder::new(settings.clone()),
            settings,
            auto_register: config.auto_register,
        }))
    }

    /// Registers `schema` for `topic`'s values, or with `auto_register: false` checks that
    /// exactly this schema is registered there; returns its id either way.
    pub async fn prepare_sink(&self, topic: &str, schema: &'static MessageSchema) -> anyhow::Result<RegisteredSink> {
        let subject = value_subject(topic);
        let id = if self.auto_register {
            let supplied =
                SuppliedSchema::new(Some(schema.full_name.clone()), SchemaType::Avro, schema.text.to_owned());
            post_schema(&self.settings, subject.clone(), supplied)
                .await
                .map_err(|error| {
                    anyhow::anyhow!(
                        "schema registry refused schemas/avro/{}.avsc under subject `{subject}`: {}",
                        schema.name,
                        describe(&error)
                    )
                })?
                .id
        } else {
            let body = serde_json::json!({ "schema": schema.text }).to_string();
            perform_sr_call(&self.settings, SrCall::PostForVersion(&subject, &body))
                .await
                .map_err(|error| {
                    anyhow::anyhow!(
                        "schemas/avro/{}.avsc is not registered under subject `{subject}` and \
                         schema_registry.auto_register is false (register it first): {}",
                        schema.name,
                        describe(&error)
                    )
                })?
                .id
                .ok_or_else(|| anyhow::anyhow!("schema registry answered the lookup of `{subject}` without an id"))?
        };
        Ok(RegisteredSink { schema, id })
    }

    /// The JSON form of a wire-format message, its writer schema fetched by id (once).
    pub async fn decode(&self, bytes: &[u8]) -> Result<Json, StageError> {
        let id = schema_id(bytes).unwrap_or_default();
        let decoded = self.decoder.decode(Some(bytes)).await.map_err(|error| {
            let reason = format!("cannot decode the Avro message (schema id {id}): {}", describe(&error));
            // The converter marks only 502/503 and connection failures retriable; any 5xx is
            // the registry's trouble, not the message's (a 404 for an unknown id is).
            if error.retriable || error.error.contains("failed with status 5") {
                StageError::external(reason)
            } else {
                StageError::input(reason)
            }
        })?;
        let mut json = to_json(decoded.value);
        // A field that carries JSON as text in Avro becomes that JSON again, as in a JSON message.
        if let Some(schema) = decoded.name.and_then(|name| schema_by_full_name(&name.fullname(None))) {
            schema
                .restore_json_text(&mut json)
                .map_err(|error| StageError::input(format!("Avro message (schema id {id}): {error}")))?;
        }
        Ok(json)
    }
}

impl RegisteredSink {
    /// `message` in the wire format. A message that does not fit the schema is our bug (the
    /// stages produce these messages), so the error names the field.
    pub fn encode(&self, message: &Json) -> Result<Vec<u8>, String> {
        let value: Avro = self
            .schema
            .to_avro(message)
            .map_err(|error| format!("not a valid {} message: {error}", self.schema.name))?;
        let datum = self
            .schema
            .datum(value)
            .map_err(|error| format!("cannot write a {} message in Avro: {error}", self.schema.name))?;
        let mut bytes = Vec::with_capacity(5 + datum.len());
        bytes.push(MAGIC_BYTE);
        bytes.extend_from_slice(&self.id.to_be_bytes());
        bytes.extend_from_slice(&datum);
        Ok(bytes)
    }
}

/// The registry's error without the converter's retry and cache flags.
fn describe(error: &SRCError) -> String {
    match &error.cause {
        Some(cause) => format!("{} ({cause})", error.error),
        None => error.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::avro::message_schema;

    #[test]
    fn json_is_never_taken_for_the_wire_format() {
        assert!(!is_wire_format(br#"{"schema_version":1}"#));
        assert!(!is_wire_format(&[0, 0, 0, 1]));
        assert!(is_wire_format(&[0, 0, 0, 0, 7, 2]));
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9]), Some(258));
        assert_eq!(value_subject("answers"), "answers-value");
    }

    #[test]
    fn encoding_puts_the_magic_byte_and_id_in_front_of_the_datum() {
        let sink = RegisteredSink {
            schema: message_schema("partial_answers").unwrap(),
            id: 0x0102_0304,
        };
        let message = serde_json::json!({
            "schema_version": 1, "request_id": "r1", "tenant": "t", "seq": 0, "model": "m",
            "attempt": 1, "delta": "Hi", "done": false
        });
        let bytes = sink.encode(&message).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&bytes[..5], &[0, 1, 2, 3, 4]);
        let decoded = sink.schema.read_datum(&bytes[5..]).unwrap();
        assert_eq!(to_json(decoded), message);
    }
}
