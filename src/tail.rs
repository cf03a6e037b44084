//! Readers that follow topics from their current end: tool replies, and the answers, status
//! events and partial answers `ask` and `serve` wait for. Nothing is committed and no group shares
//! the partitions out, so every reader sees every message produced after it started.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

/// The topics a client that asks questions and follows them uses: the `--…-topic` arguments of
/// `ask` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct QuestionTopics {
    /// Topic questions are produced to.
    #[arg(long, default_value = "questions")]
    pub questions_topic: String,
    /// Topic answers are read from.
    #[arg(long, default_value = "answers")]
    pub answers_topic: String,
    /// Topic of partial answers (the generate stage's `partials_sink`): the answer while it is
    /// written.
    #[arg(long)]
    pub partials_topic: Option<String>,
    /// Topic of status events (`decode_question`'s `status_sink`): each step the question goes
    /// through.
    #[arg(long)]
    pub status_topic: Option<String>,
}

impl QuestionTopics {
    /// The topics to follow: answers, then partials and status events when set.
    pub fn followed(&self) -> Vec<String> {
        let mut topics = vec![self.answers_topic.clone()];
        topics.extend(self.partials_topic.clone());
        topics.extend(self.status_topic.clone());
        topics
    }
}

/// How long librdkafka waits for metadata and watermarks when a reader starts.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A reader of replies and answers waits for each one: the broker may hold a fetch for
/// `fetch.wait.max.ms` even when data is there (tansu does), so it is short unless configured.
const TAIL_FETCH_WAIT_MS: &str = "20";

/// Settings of a consumer that follows topics from their current end (`role` names it): a group
/// id only names the client, partitions are assigned by hand and nothing is committed, so any
/// number of such readers each see every message.
pub fn tail_config(shared: &BTreeMap<String, String>, role: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in shared {
        config.set(key, value);
    }
    let group = format!("ragstream-{role}-{}-{:016x}", std::process::id(), rand::random::<u64>());
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    if config.get("fetch.wait.max.ms").is_none() {
        config.set("fetch.wait.max.ms", TAIL_FETCH_WAIT_MS);
    }
    config
}

/// Why a reader could not be placed at the end of its topics.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("topic `{0}` does not exist (create the topology's topics first: ragstream topics create)")]
    Missing(String),
    #[error("cannot read the partitions or the end of `{topic}`: {error}")]
    Kafka {
        topic: String,
        error: rdkafka::error::KafkaError,
    },
}

/// Assigns every partition of `topics` to `consumer` at its current end, so it sees what is
/// produced from now on (a reply to a request sent afterwards cannot slip in before it starts).
/// Explicit offsets, not `Offset::End`: the end is resolved now, not at the first fetch.
/// Blocks on librdkafka's metadata calls.
pub fn assign_from_end<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    topics: &[impl AsRef<str>],
) -> Result<(), TailError> {
    let kafka = |topic: &str| {
        let topic = topic.to_owned();
        move |error: rdkafka::error::KafkaError| TailError::Kafka { topic, error }
    };
    let mut assignment = TopicPartitionList::new();
    for topic in topics.iter().map(AsRef::as_ref) {
        let metadata = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(kafka(topic))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(TailError::Missing(topic.to_string()));
        }
        for partition in partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                .map_err(kafka(topic))?;
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(high))
                .map_err(kafka(topic))?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(kafka(topics.first().map_or("", AsRef::as_ref)))
}
