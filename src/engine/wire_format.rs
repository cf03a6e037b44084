//! Reading a message in the Confluent wire format (Avro with a registry's schema id) into the
//! JSON form the stages work on. It runs as the first step of every chain (named `source` in
//! metrics and dead letters), so a registry that is briefly down is retried like any stage.

use async_trait::async_trait;
use std::sync::Arc;

use crate::core_api::Stage;
use crate::core_api::{MessageContext, Payload, Record};
use crate::error::StageError;
use crate::transport::registry::{is_wire_format, schema_id, SchemaRegistry};

/// Decodes wire-format payloads with the registry; JSON payloads pass untouched.
pub struct WireFormatDecoder {
    registry: Option<Arc<SchemaRegistry>>,
}

impl WireFormatDecoder {
    /// A decoder using `registry`; without one, a wire-format message is dead-lettered.
    pub fn new(registry: Option<Arc<SchemaRegistry>>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl Stage for WireFormatDecoder {
    async fn process(&self, record: Record, _context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let Payload::Bytes(bytes) = &record.payload else {
            return Ok(vec![record]);
        };
        if !is_wire_format(bytes) {
            return Ok(vec![record]);
        }
        let Some(registry) = &self.registry else {
            return Err(StageError::input(format!(
                "the message is Avro in the Confluent wire format (schema id {}), but no \
                 schema_registry is configured to read it",
                schema_id(bytes).unwrap_or_default()
            )));
        };
        let json = registry.decode(bytes).await?;
        Ok(vec![Record {
            payload: Payload::Json(json),
            ..record
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> MessageContext {
        MessageContext::new(Arc::from("p"), Arc::from("t"), 0, 0, None)
    }

    fn record(bytes: &[u8]) -> Record {
        Record {
            key: None,
            payload: Payload::Bytes(bytes.to_vec()),
            headers: Vec::new(),
            sink: None,
        }
    }

    #[tokio::test]
    async fn json_passes_and_avro_without_a_registry_is_the_inputs_fault() {
        let decoder = WireFormatDecoder::new(None);
        let json = record(br#"{"a":1}"#);
        assert_eq!(decoder.process(json.clone(), &context()).await.unwrap(), vec![json]);
        let error = decoder
            .process(record(&[0, 0, 0, 0, 42, 2, 3]), &context())
            .await
            .unwrap_err();
        assert_eq!(error.fault, crate::error::Fault::Input);
        assert!(error.reason.contains("schema id 42"), "{}", error.reason);
    }
}
