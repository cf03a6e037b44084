//! Every metric ragstream exports, defined in this one module.
//!
//! Names follow `ragstream_<what>_<unit>[_total]`; labels stay low-cardinality (pipeline, stage,
//! sink, outcome, and partition numbers, which are bounded by the topic's partition count).

use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, CounterVec, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The process-wide metrics.
pub struct Metrics {
    registry: Registry,
    /// Messages read from a pipeline's source topic.
    pub messages_consumed: IntCounterVec,
    /// Records produced to a sink topic and acknowledged by the broker.
    pub messages_produced: IntCounterVec,
    /// Messages sent to the dead-letter topic, by the stage that rejected them.
    pub messages_dead_lettered: IntCounterVec,
    /// Stage invocations by outcome (`ok`, `dead_letter`, `retry`, `error`).
    pub stage_messages: IntCounterVec,
    /// Time spent in one stage invocation.
    pub stage_duration: HistogramVec,
    /// Messages being processed right now.
    pub in_flight: IntGaugeVec,
    /// Last committed offset per source partition.
    pub committed_offset: IntGaugeVec,
    /// High watermark minus committed offset per source partition.
    pub consumer_lag: IntGaugeVec,
    /// Partitions currently assigned to this process.
    pub assigned_partitions: IntGaugeVec,
    /// Offset commits by result (`ok`, `error`).
    pub commits: IntCounterVec,
    /// Document versions handled by the index, by outcome (`indexed`, `deleted`, `skipped`, `failed`).
    pub index_documents: IntCounterVec,
    /// Chunks written to the index.
    pub index_chunks_written: IntCounter,
    /// Documents per index write batch (one LanceDB commit pair each).
    pub index_batch_documents: Histogram,
    /// Time to apply one index write batch.
    pub index_batch_seconds: Histogram,
    /// Time of one round of index upkeep (index builds, compaction, version cleanup).
    pub index_maintenance_seconds: Histogram,
    /// Rounds of index upkeep that failed (retried next round).
    pub index_maintenance_failures: IntCounter,
    /// Rows (chunks) in the index table after the last write batch.
    pub index_rows: IntGauge,
    /// Time of one LanceDB search (the retrieval query).
    pub retrieval_seconds: Histogram,
    /// Texts per embedding forward pass or HTTP request, by provider (`local`, `openai`).
    pub embedding_batch_texts: HistogramVec,
    /// Time of one call to a language model (one attempt), by model.
    pub llm_request_seconds: HistogramVec,
    /// Calls to language models by outcome (`ok`, `rate_limited`, `server`, `timeout`…).
    pub llm_attempts: IntCounterVec,
    /// Tokens consumed by answered questions, by kind (`prompt`, `completion`).
    pub llm_tokens: IntCounterVec,
    /// Tool calls by tool and outcome (`ok`, `unknown_tool`, `not_allowed`, `invalid_arguments`,
    /// `timeout`, `failed`), replayed ones included.
    pub tool_calls: IntCounterVec,
    /// Time of one tool call (check, call and masking), by tool; replayed calls not included.
    pub tool_call_seconds: HistogramVec,
    /// What answered questions cost, by the configured prices.
    pub llm_cost_usd: CounterVec,
    /// Answers emitted, by status.
    pub answers: IntCounterVec,
    /// Personal data replaced by placeholders, by kind and where it was found
    /// (`question`, `context`).
    pub pii_masked: IntCounterVec,
    /// Response-cache lookups by outcome (`hit`, `miss`).
    pub cache_lookups: IntCounterVec,
    /// Budget and rate-limit decisions by outcome (`admitted`, `delayed`, `downgraded`,
    /// `budget_exceeded`, `rate_limited`).
    pub budget_decisions: IntCounterVec,
    /// Fraction of the tightest budget window a tenant has left (0 to 1).
    pub budget_remaining_ratio: GaugeVec,
    /// State store failures met by the answering layers, by layer (`replay`, `cache`,
    /// `admission`) and what was done (`retry`, `open`, `closed`, `write_lost`).
    pub store_unavailable: IntCounterVec,
    /// Questions answered again from their replay record after a redelivery (no model call).
    pub replays: IntCounter,
    /// OpenTelemetry GenAI `gen_ai.client.operation.duration`: one model call (attempt), by
    /// operation, provider, requested model and error type (empty when it succeeded).
    pub gen_ai_operation_seconds: HistogramVec,
    /// OpenTelemetry GenAI `gen_ai.client.token.usage`: tokens of one successful model call, by
    /// operation, provider, model and token type (`input`, `output`).
    pub gen_ai_token_usage: HistogramVec,
    /// Audit events written to the audit table (repeats after a redelivery included).
    pub audit_table_rows: IntCounter,
    /// Audit table files by result (`ok`, `failed`).
    pub audit_table_files: IntCounterVec,
    /// Time to encode and write one audit table file.
    pub audit_table_write_seconds: Histogram,
}

/// The labels of the GenAI metrics: OpenTelemetry's attribute names with `.` as `_`, the way
/// OpenTelemetry's Prometheus exporter writes them, so dashboards built for the semantic
/// conventions work unchanged.
pub const GEN_AI_CALL_LABELS: [&str; 4] = [
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "error_type",
];
pub const GEN_AI_TOKEN_LABELS: [&str; 4] = [
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_token_type",
];

/// Adds `metric` to `registry` and hands it back. Definitions are constants of this module, so
/// a failure here is a bug caught by the first test that touches metrics.
fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<M>) -> M {
    let metric = metric.expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
    )
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help))
}

fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.5, 14).expect("valid buckets")
}

/// The buckets OpenTelemetry's GenAI conventions advise for token usage: 1 to 67M by powers of 4.
fn token_buckets() -> Vec<f64> {
    exponential_buckets(1.0, 4.0, 14).expect("valid buckets")
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let stage_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "ragstream_stage_duration_seconds",
                    "Time spent in one stage invocation, retries included.",
                )
                .buckets(exponential_buckets(0.000_1, 2.5, 16).expect("valid buckets")),
                &["pipeline", "stage"],
            ),
        );
        Self {
            messages_consumed: counter(
                &registry,
                "ragstream_messages_consumed_total",
                "Messages read from a pipeline's source topic.",
                &["pipeline"],
            ),
            messages_produced: counter(
                &registry,
                "ragstream_messages_produced_total",
                "Records produced to a sink topic and acknowledged by the broker.",
                &["pipeline", "sink"],
            ),
            messages_dead_lettered: counter(
                &registry,
                "ragstream_messages_dead_lettered_total",
                "Messages sent to the dead-letter topic, by the stage that rejected them.",
                &["pipeline", "stage"],
            ),
            stage_messages: counter(
                &registry,
                "ragstream_stage_messages_total",
                "Stage invocations by outcome (ok, dead_letter, retry, error).",
                &["pipeline", "stage", "outcome"],
            ),
            stage_duration,
            in_flight: gauge(
                &registry,
                "ragstream_in_flight_messages",
                "Messages being processed right now.",
                &["pipeline"],
            ),
            committed_offset: gauge(
                &registry,
                "ragstream_committed_offset",
                "Last offset committed per source partition.",
                &["pipeline", "topic", "partition"],
            ),
            consumer_lag: gauge(
                &registry,
                "ragstream_consumer_lag_messages",
                "High watermark minus committed offset per source partition.",
                &["pipeline", "topic", "partition"],
            ),
            assigned_partitions: gauge(
                &registry,
                "ragstream_assigned_partitions",
                "Source partitions currently assigned to this process.",
                &["pipeline"],
            ),
            commits: counter(
                &registry,
                "ragstream_offset_commits_total",
                "Offset commits by result (ok, error).",
                &["pipeline", "result"],
            ),
            index_documents: counter(
                &registry,
                "ragstream_index_documents_total",
                "Document versions handled by the index, by outcome (indexed, deleted, skipped, failed).",
                &["outcome"],
            ),
            index_chunks_written: plain_counter(
                &registry,
                "ragstream_index_chunks_written_total",
                "Chunks written to the index.",
            ),
            index_batch_documents: histogram(
                &registry,
                "ragstream_index_batch_documents",
                "Documents per index write batch.",
                exponential_buckets(1.0, 2.0, 12).expect("valid buckets"),
            ),
            index_batch_seconds: histogram(
                &registry,
                "ragstream_index_batch_duration_seconds",
                "Time to apply one index write batch.",
                seconds_buckets(),
            ),
            index_maintenance_seconds: histogram(
                &registry,
                "ragstream_index_maintenance_duration_seconds",
                "Time of one round of index upkeep (index builds, compaction, version cleanup).",
                seconds_buckets(),
            ),
            index_maintenance_failures: plain_counter(
                &registry,
                "ragstream_index_maintenance_failures_total",
                "Rounds of index upkeep that failed (retried next round).",
            ),
            index_rows: register(
                &registry,
                IntGauge::new("ragstream_index_rows", "Rows (chunks) in the index table after the last write batch."),
            ),
            retrieval_seconds: histogram(
                &registry,
                "ragstream_retrieval_duration_seconds",
                "Time of one LanceDB search (the retrieval query).",
                seconds_buckets(),
            ),
            embedding_batch_texts: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "ragstream_embedding_batch_texts",
                        "Texts per embedding forward pass or HTTP request, by provider (local, openai).",
                    )
                    .buckets(exponential_buckets(1.0, 2.0, 10).expect("valid buckets")),
                    &["provider"],
                ),
            ),
            llm_request_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "ragstream_llm_request_duration_seconds",
                        "Time of one call to a language model (one attempt, streamed or not), by model.",
                    )
                    .buckets(seconds_buckets()),
                    &["model"],
                ),
            ),
            llm_attempts: counter(
                &registry,
                "ragstream_llm_attempts_total",
                "Calls to language models by outcome (ok, rate_limited, server, timeout, connection, malformed, rejected, circuit_open, local).",
                &["model", "outcome"],
            ),
            tool_calls: counter(
                &registry,
                "ragstream_tool_calls_total",
                "Tool calls by tool and outcome (ok, unknown_tool, not_allowed, invalid_arguments, timeout, failed), replayed ones included.",
                &["tool", "outcome"],
            ),
            tool_call_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "ragstream_tool_call_duration_seconds",
                        "Time of one tool call (argument check, the call, masking the result), by tool; replayed calls not included.",
                    )
                    .buckets(seconds_buckets()),
                    &["tool"],
                ),
            ),
            llm_tokens: counter(
                &registry,
                "ragstream_llm_tokens_total",
                "Tokens consumed by answered questions, by kind (prompt, completion).",
                &["tenant", "model", "task", "kind"],
            ),
            llm_cost_usd: register(
                &registry,
                CounterVec::new(
                    Opts::new("ragstream_llm_cost_usd_total", "What answered questions cost, by the configured prices."),
                    &["tenant", "model", "task"],
                ),
            ),
            answers: counter(
                &registry,
                "ragstream_answers_total",
                "Answers emitted, by status (ok, extractive, low_confidence, no_context, blocked, failed, budget_exceeded, rate_limited).",
                &["tenant", "status"],
            ),
            pii_masked: counter(
                &registry,
                "ragstream_pii_masked_total",
                "Personal data replaced by placeholders, by kind and where it was found (question, context).",
                &["kind", "found_in"],
            ),
            cache_lookups: counter(
                &registry,
                "ragstream_cache_lookups_total",
                "Response-cache lookups by outcome (hit, miss).",
                &["outcome"],
            ),
            budget_decisions: counter(
                &registry,
                "ragstream_budget_decisions_total",
                "Budget and rate-limit decisions by outcome (admitted, delayed, downgraded, budget_exceeded, rate_limited).",
                &["outcome"],
            ),
            budget_remaining_ratio: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "ragstream_budget_remaining_ratio",
                        "Fraction of the tightest budget window a tenant has left (0 to 1).",
                    ),
                    &["tenant"],
                ),
            ),
            store_unavailable: counter(
                &registry,
                "ragstream_store_unavailable_total",
                "State store failures met by the answering layers, by layer and what was done (retry, open, closed, write_lost).",
                &["layer", "policy"],
            ),
            replays: plain_counter(
                &registry,
                "ragstream_replays_total",
                "Questions answered again from their replay record after a redelivery (no model call).",
            ),
            gen_ai_operation_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gen_ai_client_operation_duration_seconds",
                        "GenAI operation duration (OpenTelemetry gen_ai.client.operation.duration): one model call.",
                    )
                    .buckets(seconds_buckets()),
                    &GEN_AI_CALL_LABELS,
                ),
            ),
            gen_ai_token_usage: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gen_ai_client_token_usage",
                        "Tokens of one model call by type (OpenTelemetry gen_ai.client.token.usage).",
                    )
                    .buckets(token_buckets()),
                    &GEN_AI_TOKEN_LABELS,
                ),
            ),
            audit_table_rows: plain_counter(
                &registry,
                "ragstream_audit_table_rows_total",
                "Audit events written to the audit table (repeats after a redelivery included).",
            ),
            audit_table_files: counter(
                &registry,
                "ragstream_audit_table_files_total",
                "Audit table files by result (ok, failed; a failed file's events are retried).",
                &["result"],
            ),
            audit_table_write_seconds: histogram(
                &registry,
                "ragstream_audit_table_write_duration_seconds",
                "Time to encode and write one audit table file.",
                seconds_buckets(),
            ),
            registry,
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|error| format!("# failed to encode metrics: {error}\n"))
    }
}

/// The process-wide metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}
