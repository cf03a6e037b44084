//! The topology file model (version 1).
//!
//! Every struct rejects unknown fields so a typo is an error, not a silently ignored setting.
//! Defaults are chosen for a single-node demo on loopback; production deployments override
//! them in the topology file.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::pseudonym::PseudonymConfig;
use crate::schedule::SchedulesConfig;
use crate::stages::StageConfig;
use crate::telemetry::traces::TracesConfig;
use serde_inline_default::serde_inline_default;

/// librdkafka client properties, passed through verbatim (e.g. `security.protocol`, `sasl.mechanism`).
pub type KafkaProperties = BTreeMap<String, String>;

/// Root of a topology file. Built by [`crate::config::load`], which deserializes each pipeline
/// and stage separately so that every mistake in the file is reported at once.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Format version of the file; this build reads `1`.
    pub version: u32,
    /// librdkafka properties shared by every consumer and producer (at least `bootstrap.servers`).
    pub kafka: KafkaProperties,
    /// Logs, metrics and health endpoints.
    pub telemetry: TelemetryConfig,
    /// How the process stops on SIGTERM/SIGINT.
    pub shutdown: ShutdownConfig,
    /// Defaults used by `ragstream topics create` when it creates the topology's topics.
    pub topic_defaults: TopicDefaults,
    /// A Confluent-compatible Schema Registry, for sinks written in Avro and for reading
    /// messages in the Confluent wire format; none: JSON only.
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// The pipelines this process runs, each with its own consumer group.
    pub pipelines: Vec<PipelineConfig>,
    /// Questions produced on a timetable (cron expressions in a time zone).
    pub schedules: Option<SchedulesConfig>,
    /// The key of the user pseudonyms in audit events and cost-control keys.
    pub pseudonyms: PseudonymConfig,
}

/// The top level of the file, with pipelines left raw so each can be checked on its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTopology {
    pub version: u32,
    #[serde(default, deserialize_with = "crate::config::kafka_props::deserialize")]
    pub kafka: KafkaProperties,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub topic_defaults: TopicDefaults,
    pub schema_registry: Option<SchemaRegistryConfig>,
    pub schedules: Option<SchedulesConfig>,
    #[serde(default)]
    pub pseudonyms: PseudonymConfig,
    /// Checked pipeline by pipeline from the raw document; declared so the key is expected here.
    #[allow(dead_code)]
    pub pipelines: Vec<serde_yaml::Value>,
}

/// Logs, metrics and health endpoints.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Address of the HTTP listener serving `/metrics`, `/healthz` and `/readyz`.
    #[serde_inline_default("127.0.0.1:9898".to_owned())]
    pub listen: String,
    /// OTLP trace export (spans per message, stage, model call, retrieval and tool call);
    /// unset: no spans are exported.
    #[serde(default)]
    pub traces: Option<TracesConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:9898".to_owned()
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            traces: None,
        }
    }
}

/// How the process stops on SIGTERM/SIGINT.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight messages may take to finish after fetching stops. Whatever is still
    /// unfinished then is abandoned uncommitted, so it is redelivered on the next start.
    #[serde_inline_default(10_000)]
    pub drain_timeout_ms: u64,
}

fn default_drain_timeout_ms() -> u64 {
    10_000
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout_ms: default_drain_timeout_ms(),
        }
    }
}

/// A Confluent-compatible Schema Registry (Confluent, Karapace, Apicurio's ccompat API, …).
///
/// Sinks with `format: avro` write the Confluent wire format: a 0 byte, the schema id (4 bytes,
/// big-endian), the Avro datum. Their schemas are registered (or looked up) under the subject
/// `<topic>-value` when the pipeline starts, so a registry that is down or refuses a schema stops
/// the start, not a message. Sources need no setting: a message starting with the 0 byte is read
/// in the wire format (its schema fetched by id, once), anything else as JSON.
#[serde_inline_default]
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL, e.g. `http://schema-registry:8081`.
    pub url: String,
    /// Register the sinks' schemas on start (true), or only look them up and refuse to start if
    /// one is not registered exactly (false; for registries where only a deploy pipeline may
    /// register, with the schemas from `schemas/avro/`).
    #[serde_inline_default(true)]
    pub auto_register: bool,
    /// HTTP Basic user name, if the registry wants one.
    pub username: Option<String>,
    /// HTTP Basic password (use `${ENV_VAR}`; never logged or printed).
    pub password: Option<String>,
    /// Timeout of one registry request.
    #[serde_inline_default(5_000)]
    pub timeout_ms: u64,
}

impl std::fmt::Debug for SchemaRegistryConfig {
    /// Everything but the password, which prints as `<redacted>` when set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &self.url)
            .field("auto_register", &self.auto_register)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Defaults used when `ragstream topics create` creates the topology's topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaults {
    /// Number of partitions of each created topic.
    pub partitions: i32,
    /// Replication factor of each created topic.
    pub replication_factor: i32,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self {
            partitions: 3,
            replication_factor: 1,
        }
    }
}

/// One pipeline: a source topic, an ordered chain of in-process stages, and sinks.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Unique name; used in metric labels, logs and dead-letter headers.
    pub name: String,
    /// Where messages come from.
    pub source: SourceConfig,
    /// Upper bound on messages being processed at once (across all partitions of the source).
    pub max_in_flight: u32,
    /// Largest payload accepted; bigger ones are dead-lettered before any stage runs.
    pub max_message_bytes: usize,
    /// How often finished offsets are committed.
    pub commit_interval_ms: u64,
    /// Retry policy for failures that are an external service's fault.
    pub retry: RetryConfig,
    /// Ordered chain of stages; an empty chain copies messages to the default sink unchanged.
    pub stages: Vec<StageSpec>,
    /// Topics that stage outputs go to; the first is the default sink.
    pub sinks: Vec<SinkConfig>,
    /// Where messages that cannot be processed go, with the reason in headers.
    pub dead_letter: DeadLetterConfig,
    /// Sink that also gets an audit event (e.g. `document_failed`) for every dead-lettered message
    /// a stage had identified, so the audit topic tells the whole story, failures included.
    pub audit_sink: Option<String>,
    /// librdkafka properties for this pipeline's producer, on top of the top-level `kafka`.
    pub producer: KafkaProperties,
}

/// A pipeline as written, with stages left raw so each can be checked on its own.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipeline {
    pub name: String,
    pub source: SourceConfig,
    #[serde_inline_default(256)]
    pub max_in_flight: u32,
    #[serde_inline_default(1024 * 1024)]
    pub max_message_bytes: usize,
    #[serde_inline_default(1_000)]
    pub commit_interval_ms: u64,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Checked stage by stage from the raw value; declared so the key is expected here.
    #[allow(dead_code)]
    #[serde(default)]
    pub stages: Vec<serde_yaml::Value>,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    pub dead_letter: DeadLetterConfig,
    pub audit_sink: Option<String>,
    #[serde(default, deserialize_with = "crate::config::kafka_props::deserialize")]
    pub producer: KafkaProperties,
}

/// Where a pipeline's messages come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Topic to consume.
    pub topic: String,
    /// Consumer group; replicas sharing it split the topic's partitions between them.
    pub group: String,
    /// librdkafka properties for this consumer, on top of the top-level `kafka`.
    #[serde(default, deserialize_with = "crate::config::kafka_props::deserialize")]
    pub kafka: KafkaProperties,
}

/// A topic that stage outputs are produced to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Name stages use to route a record here (e.g. `answers`, `audit`).
    pub name: String,
    /// Topic to produce to.
    pub topic: String,
    /// How records are written: `json` (default), or `avro` in the Confluent wire format (needs
    /// the top-level `schema_registry` and `schema`).
    #[serde(default)]
    pub format: SinkFormat,
    /// For `format: avro`: which of ragstream's schemas (`schemas/avro/<schema>.avsc`) the
    /// records follow: `answers`, `partial_answers`, `audit`, `documents`, `questions` or `status`.
    pub schema: Option<String>,
}

/// The encoding of a sink's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkFormat {
    /// JSON text, as the JSON Schemas in `schemas/` describe.
    #[default]
    Json,
    /// Avro in the Confluent wire format, with the schema registered in the Schema Registry.
    Avro,
}

/// The dead-letter topic of a pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Topic receiving the original bytes of messages that cannot be processed.
    pub topic: String,
}

/// Retry policy for failures that are an external service's fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in total, the first included; after the last one the message is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles each time, with full jitter.
    pub initial_backoff_ms: u64,
    /// Upper bound of a single delay.
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
        }
    }
}

/// One entry of a pipeline's `stages` list: the settings every stage has, plus its own.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// Name used in metrics, logs and dead-letter headers; defaults to the stage type.
    pub name: String,
    /// Optional bound on concurrent calls of this stage (e.g. to protect a slow service).
    pub max_in_flight: Option<u32>,
    /// The stage type and its settings (the `type` key selects the registry entry).
    pub config: StageConfig,
}

/// Keys every stage accepts besides those of its type.
pub(crate) const COMMON_STAGE_KEYS: &[&str] = &["name", "max_in_flight"];
