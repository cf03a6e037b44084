//! What flows between stages.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

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
        self.as_bytes().into_owned()
    }

    /// The payload's bytes, borrowed when it still is bytes.
    pub fn as_bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Payload::Bytes(bytes) => Cow::Borrowed(bytes),
            // Serializing a `Value` cannot fail: its keys are always strings.
            Payload::Json(value) => Cow::Owned(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    /// Reads the payload as a typed message, consuming it (no copy of an already decoded value).
    pub fn into_typed<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        match self {
            Payload::Json(value) => serde_json::from_value(value),
            Payload::Bytes(bytes) => serde_json::from_slice(&bytes),
        }
    }

    /// A JSON payload holding `message`.
    pub fn from_typed<T: Serialize>(message: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_value(message).map(Payload::Json)
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
