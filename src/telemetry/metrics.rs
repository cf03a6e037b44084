//! Every metric ragstream exports, defined in this one module.
//!
//! Names follow `ragstream_<what>_<unit>[_total]`; labels stay low-cardinality (pipeline, stage,
//! sink, outcome, and partition numbers, which are bounded by the topic's partition count).

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
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
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "ragstream_stage_duration_seconds",
                "Time spent in one stage invocation, retries included.",
            )
            .buckets(exponential_buckets(0.000_1, 2.5, 16).expect("valid buckets")),
            &["pipeline", "stage"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(stage_duration.clone()))
            .expect("metric registered once");
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
