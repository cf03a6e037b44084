//! Producing a message's outputs, or its dead letter, and waiting for the broker's acknowledgement.
//!
//! A message counts as finished only when every record it caused is acknowledged; until then its
//! offset holds the commit watermark back. A produce that fails after librdkafka's own retries
//! (`message.timeout.ms`) is fatal for the pipeline: committing past it would lose the output.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::Message;

use super::chain::Rejection;
use crate::config::{PipelineConfig, SinkFormat};
use crate::contracts::avro;
use crate::core_api::{MessageContext, Payload, Record};
use crate::error::StageError;
use crate::telemetry::metrics::metrics;
use crate::telemetry::traces;
use crate::transport::registry::{RegisteredSink, SchemaRegistry};

/// Header names on dead letters. Documented in the README; consumers of the dead-letter topic
/// rely on them, so treat them as part of the public contract.
pub mod dead_letter_headers {
    /// Why the message could not be processed.
    pub const REASON: &str = "ragstream.dlq.reason";
    /// The stage that rejected it (`source` for checks made before any stage).
    pub const STAGE: &str = "ragstream.dlq.stage";
    /// Whose fault it was: `input` or `external`.
    pub const FAULT: &str = "ragstream.dlq.fault";
    /// The pipeline that rejected it.
    pub const PIPELINE: &str = "ragstream.dlq.pipeline";
    /// Source topic of the original message.
    pub const SOURCE_TOPIC: &str = "ragstream.source.topic";
    /// Source partition of the original message.
    pub const SOURCE_PARTITION: &str = "ragstream.source.partition";
    /// Source offset of the original message.
    pub const SOURCE_OFFSET: &str = "ragstream.source.offset";
}

/// Where a pipeline's records go.
pub struct Outputs {
    pipeline: String,
    producer: FutureProducer,
    sinks: HashMap<String, String>,
    default_sink: String,
    dead_letter_topic: String,
    registry: Option<Arc<SchemaRegistry>>,
    /// Sinks written in Avro: sink name → (topic, schema name).
    avro_sinks: HashMap<String, (String, String)>,
    /// Their schemas as registered, once [`Outputs::prepare`] has run.
    registered: OnceLock<HashMap<String, RegisteredSink>>,
}

/// A produce that did not succeed; fatal for the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A stage routed a record to a sink the pipeline does not have (a bug in the stage).
    #[error("record routed to unknown sink `{0}`")]
    UnknownSink(String),
    /// A record does not fit its Avro sink's schema (a bug in the stage that made it), or the
    /// sink was used before its schema was registered.
    #[error("cannot encode a record for sink `{sink}`: {reason}")]
    Encode { sink: String, reason: String },
    /// The broker did not acknowledge a record.
    #[error("producing to `{topic}` failed: {error}")]
    Produce {
        topic: String,
        error: rdkafka::error::KafkaError,
    },
}

impl From<OutputError> for StageError {
    /// A broker that did not acknowledge is the outside world's fault (worth a retry); an
    /// unknown sink or a record that does not fit its schema is ragstream's own.
    fn from(error: OutputError) -> Self {
        match error {
            OutputError::Produce { .. } => StageError::external(error.to_string()),
            OutputError::UnknownSink(_) | OutputError::Encode { .. } => StageError::internal(error.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl crate::core_api::ProduceNow for Outputs {
    async fn produce_now(&self, records: Vec<Record>) -> Result<(), StageError> {
        Ok(self.produce(records).await?)
    }
}

impl Outputs {
    /// Outputs for `config`, producing with `producer`; Avro sinks use `registry`.
    pub fn new(config: &PipelineConfig, producer: FutureProducer, registry: Option<Arc<SchemaRegistry>>) -> Self {
        Self {
            pipeline: config.name.clone(),
            producer,
            sinks: config.sinks.iter().map(|s| (s.name.clone(), s.topic.clone())).collect(),
            default_sink: config.sinks.first().map(|s| s.name.clone()).unwrap_or_default(),
            dead_letter_topic: config.dead_letter.topic.clone(),
            registry,
            avro_sinks: config
                .sinks
                .iter()
                .filter(|sink| sink.format == SinkFormat::Avro)
                .map(|sink| {
                    let schema = sink.schema.clone().unwrap_or_default();
                    (sink.name.clone(), (sink.topic.clone(), schema))
                })
                .collect(),
            registered: OnceLock::new(),
        }
    }

    /// Registers (or looks up) the schema of every Avro sink, before the first record.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        let mut registered = HashMap::new();
        for (sink, (topic, schema_name)) in &self.avro_sinks {
            let registry = self
                .registry
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("sink `{sink}` is Avro but no schema_registry is configured"))?;
            let schema = avro::message_schema(schema_name)
                .ok_or_else(|| anyhow::anyhow!("sink `{sink}`: unknown Avro schema `{schema_name}`"))?;
            let prepared = registry.prepare_sink(topic, schema).await?;
            tracing::info!(pipeline = %self.pipeline, %sink, %topic, schema = schema.name, id = prepared.id, "Avro sink ready");
            registered.insert(sink.clone(), prepared);
        }
        // A second call (there is none) would find the same schemas.
        let _ = self.registered.set(registered);
        Ok(())
    }

    /// The bytes to produce for `payload` on `sink`: JSON as it is, or Avro for an Avro sink.
    fn encode<'p>(&self, sink: &str, payload: &'p Payload) -> Result<Cow<'p, [u8]>, OutputError> {
        if !self.avro_sinks.contains_key(sink) {
            return Ok(payload.as_bytes());
        }
        let failure = |reason: String| OutputError::Encode {
            sink: sink.to_owned(),
            reason,
        };
        let registered = self
            .registered
            .get()
            .and_then(|registered| registered.get(sink))
            .ok_or_else(|| failure("its schema is not registered yet".to_owned()))?;
        let parsed;
        let message = match payload {
            Payload::Json(value) => value,
            Payload::Bytes(bytes) => {
                parsed = serde_json::from_slice(bytes).map_err(|e| failure(format!("not JSON: {e}")))?;
                &parsed
            }
        };
        registered.encode(message).map(Cow::Owned).map_err(failure)
    }

    /// Produces every record concurrently and waits until all are acknowledged.
    pub async fn produce(&self, records: Vec<Record>) -> Result<(), OutputError> {
        let sends = records.into_iter().map(|mut record| async move {
            let sink = record.sink.clone().unwrap_or_else(|| self.default_sink.clone());
            // A consumer of the output continues the message's trace (when traces are exported).
            traces::inject_current(&mut record.headers);
            let topic = self
                .sinks
                .get(&sink)
                .ok_or_else(|| OutputError::UnknownSink(sink.clone()))?;
            let payload = self.encode(&sink, &record.payload)?;
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut future_record = FutureRecord::to(topic).payload(&*payload).headers(headers);
            if let Some(key) = &record.key {
                future_record = future_record.key(key);
            }
            self.send(future_record).await?;
            metrics()
                .messages_produced
                .with_label_values(&[&self.pipeline, &sink])
                .inc();
            Ok(())
        });
        try_join_all(sends).await.map(|_| ())
    }

    /// Sends the original message, bytes untouched, to the dead-letter topic with the reason,
    /// stage and source coordinates in headers.
    pub async fn dead_letter(
        &self,
        message: &OwnedMessage,
        context: &MessageContext,
        rejection: &Rejection,
    ) -> Result<(), OutputError> {
        use dead_letter_headers as h;
        let partition = context.partition.to_string();
        let offset = context.offset.to_string();
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        let ours: [(&str, &str); 7] = [
            (h::REASON, &rejection.error.reason),
            (h::STAGE, &rejection.stage),
            (h::FAULT, rejection.error.fault.as_str()),
            (h::PIPELINE, &self.pipeline),
            (h::SOURCE_TOPIC, &context.topic),
            (h::SOURCE_PARTITION, &partition),
            (h::SOURCE_OFFSET, &offset),
        ];
        for (key, value) in ours {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.dead_letter_topic).headers(headers);
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.send(record).await?;
        metrics()
            .messages_dead_lettered
            .with_label_values(&[&self.pipeline, &rejection.stage])
            .inc();
        Ok(())
    }

    async fn send<K, P>(&self, record: FutureRecord<'_, K, P>) -> Result<(), OutputError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let topic = record.topic.to_owned();
        // Waiting for queue space is bounded by max_in_flight upstream; delivery itself is bounded
        // by librdkafka's message.timeout.ms.
        self.producer
            .send(record, Timeout::After(Duration::from_secs(600)))
            .await
            .map(|_| ())
            .map_err(|(error, _)| OutputError::Produce { topic, error })
    }

    /// Waits for everything queued to be delivered (used when shutting down).
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(error) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(pipeline = %self.pipeline, %error, "producer flush incomplete");
        }
    }
}
