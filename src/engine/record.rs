//! What flows between stages.

use std::sync::Arc;

/// The body of a record: raw bytes as consumed, or JSON once a stage has decoded it (so later
/// stages do not parse the same text again).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Bytes exactly as they arrived or as a stage produced them.
    Bytes(Vec<u8>),
    /// A decoded JSON value; serialized compactly when produced.
    Json(serde_json::Value),
}

impl Payload {
    /// Serializes the payload for producing.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Payload::Bytes(bytes) => bytes.clone(),
            // Serializing a `Value` cannot fail: its keys are always strings.
            Payload::Json(value) => serde_json::to_vec(value).unwrap_or_default(),
        }
    }
}

/// One record on its way through a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Kafka message key (kept from the input unless a stage changes it).
    pub key: Option<Vec<u8>>,
    /// The body.
    pub payload: Payload,
    /// Kafka headers, kept from the input unless a stage changes them.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Name of the sink this record goes to; `None` means the pipeline's first (default) sink.
    pub sink: Option<String>,
}

/// Where the message being processed came from; shared by every record derived from it.
#[derive(Debug, Clone)]
pub struct MessageContext {
    /// Name of the pipeline.
    pub pipeline: Arc<str>,
    /// Source topic.
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Kafka timestamp of the source message in milliseconds, when it has one.
    pub timestamp_ms: Option<i64>,
}
