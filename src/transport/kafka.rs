//! Kafka clients on rdkafka: consumer with rebalance-aware commits, idempotent producer, admin.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use super::offsets::{OffsetTracker, TopicPartition};
use crate::config::KafkaProperties;
use crate::telemetry::metrics::metrics;
use crate::telemetry::Readiness;

/// How often librdkafka reports statistics (used for the consumer-lag gauge) unless the
/// topology sets `statistics.interval.ms` itself.
const DEFAULT_STATISTICS_INTERVAL_MS: &str = "5000";

/// Largest message the producer accepts unless configured: dead letters carry oversize
/// originals unchanged, so the producer must accept whatever the consumer could fetch.
const DEFAULT_PRODUCER_MAX_MESSAGE_BYTES: &str = "16777216";

/// Builds a librdkafka configuration: shared properties, then the specific overrides, verbatim.
pub fn client_config(shared: &KafkaProperties, overrides: &KafkaProperties) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in shared.iter().chain(overrides) {
        config.set(key, value);
    }
    config
}

/// Consumer settings that at-least-once delivery depends on.
pub fn consumer_config(shared: &KafkaProperties, overrides: &KafkaProperties, group: &str) -> ClientConfig {
    let mut config = client_config(shared, overrides);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    if config.get("auto.offset.reset").is_none() {
        // A new group must see what was produced before it started, or those messages are lost.
        config.set("auto.offset.reset", "earliest");
    }
    if config.get("statistics.interval.ms").is_none() {
        config.set("statistics.interval.ms", DEFAULT_STATISTICS_INTERVAL_MS);
    }
    config
}

/// An idempotent producer: librdkafka's retries cannot duplicate or reorder outputs.
pub fn create_producer(shared: &KafkaProperties, overrides: &KafkaProperties) -> KafkaResult<FutureProducer> {
    let mut config = client_config(shared, overrides);
    config.set("enable.idempotence", "true");
    if config.get("message.max.bytes").is_none() {
        config.set("message.max.bytes", DEFAULT_PRODUCER_MAX_MESSAGE_BYTES);
    }
    config.create()
}

/// The consumer of one pipeline.
pub type PipelineConsumer = StreamConsumer<PipelineContext>;

/// Ties a consumer's rebalances and statistics to its pipeline's offset tracker and metrics.
pub struct PipelineContext {
    pipeline: String,
    tracker: Arc<Mutex<OffsetTracker>>,
    readiness: Readiness,
}

impl PipelineContext {
    /// A context for `pipeline`, sharing the tracker the processing tasks update.
    pub fn new(pipeline: &str, tracker: Arc<Mutex<OffsetTracker>>, readiness: Readiness) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            tracker,
            readiness,
        }
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|element| (element.topic().to_owned(), element.partition()))
        .collect()
}

impl ClientContext for PipelineContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, partition_stats) in &stats.partitions {
                // Partition -1 is librdkafka's internal "unassigned" partition.
                if *partition < 0 || partition_stats.hi_offset < 0 {
                    continue;
                }
                let key = (topic.clone(), *partition);
                // Before our first commit, librdkafka knows the group's committed offset.
                let committed = self
                    .tracker()
                    .committed(&key)
                    .or((partition_stats.committed_offset >= 0).then_some(partition_stats.committed_offset));
                let Some(committed) = committed else {
                    continue;
                };
                let lag = (partition_stats.hi_offset - committed).max(0);
                metrics()
                    .consumer_lag
                    .with_label_values(&[&self.pipeline, topic, &partition.to_string()])
                    .set(lag);
            }
        }
    }
}

impl ConsumerContext for PipelineContext {
    /// Before partitions go to another consumer, commit what is finished for them. Work still
    /// running for them is abandoned to the new owner, which will redeliver it.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = partitions_of(list);
            let final_offsets = self.tracker().revoke(&revoked);
            if !final_offsets.is_empty() {
                match commit_offsets(consumer, &final_offsets, CommitMode::Sync) {
                    Ok(()) => record_commit(&self.pipeline, &final_offsets),
                    Err(error) => {
                        metrics().commits.with_label_values(&[&self.pipeline, "error"]).inc();
                        warn!(pipeline = %self.pipeline, %error, "commit on revoke failed; finished messages will be redelivered");
                    }
                }
            }
            info!(pipeline = %self.pipeline, partitions = ?revoked, "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned = partitions_of(list);
                self.tracker().assign(assigned.clone());
                info!(pipeline = %self.pipeline, partitions = ?assigned, "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => warn!(pipeline = %self.pipeline, %error, "rebalance error"),
        }
        let count = consumer.assignment().map(|list| list.count()).unwrap_or(0);
        metrics()
            .assigned_partitions
            .with_label_values(&[&self.pipeline])
            .set(count as i64);
        self.readiness.set_assigned(&self.pipeline, count);
    }
}

/// Commits explicit offsets (the offset of the next message to read, per partition).
pub fn commit_offsets<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    offsets: &[(TopicPartition, i64)],
    mode: CommitMode,
) -> KafkaResult<()> {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&list, mode)
}

/// Updates the committed-offset gauge and commit counter after a successful commit.
pub fn record_commit(pipeline: &str, offsets: &[(TopicPartition, i64)]) {
    let metrics = metrics();
    metrics.commits.with_label_values(&[pipeline, "ok"]).inc();
    for ((topic, partition), offset) in offsets {
        metrics
            .committed_offset
            .with_label_values(&[pipeline, topic, &partition.to_string()])
            .set(*offset);
    }
}

/// Creates topics that do not exist yet; existing ones are left as they are.
/// Returns the names that were created.
pub async fn create_topics(
    properties: &KafkaProperties,
    topics: &[String],
    partitions: i32,
    replication_factor: i32,
) -> anyhow::Result<Vec<String>> {
    let admin: AdminClient<DefaultClientContext> = client_config(properties, &KafkaProperties::new()).create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication_factor)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic `{name}`: {code}"),
        }
    }
    Ok(created)
}
