//! Helpers for integration tests against the real local broker (see deploy/local/broker.sh).
//!
//! Every test uses its own random topic and group names so tests can run in parallel and
//! repeatedly against the same broker without seeing each other's messages.

#![allow(dead_code)]

pub mod chaos;
pub mod proxy;
pub mod scripted_llm;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, TopicPartitionList};

/// Bootstrap address of the test broker.
pub fn brokers() -> String {
    std::env::var("RAGSTREAM_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::rng().random::<u64>() & 0xffff_ffff_ffff)
}

/// Creates topics with `partitions` partitions each.
pub async fn create_topics(names: &[&str], partitions: i32) {
    create_topics_at(&brokers(), names, partitions).await;
}

/// [`create_topics`] on the broker at `brokers` (a test that runs a broker of its own).
pub async fn create_topics_at(brokers: &str, names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topics: Vec<_> = names
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topics request");
    for result in results {
        result.expect("topic created");
    }
}

/// A producer that accepts large messages (the 2 MB malformed payloads).
///
/// Every record is sent in a batch of its own: tansu 0.6 answers a fetch at an offset inside a
/// multi-record batch with the *next* batch, silently skipping the rest of the containing one,
/// so a consumer group resuming from a committed offset mid-batch would miss messages through
/// no fault of the consumer. One-record batches keep the tests about ragstream, not that bug.
pub fn producer() -> FutureProducer {
    producer_at(&brokers())
}

/// [`producer`] for the broker at `brokers`.
pub fn producer_at(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "8388608")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

/// A message to produce.
pub struct Outgoing {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Produces every message and returns where each one landed, in the same order.
pub async fn produce_all(topic: &str, messages: Vec<Outgoing>) -> Vec<(i32, i64)> {
    produce_all_at(&brokers(), topic, messages).await
}

/// [`produce_all`] to the broker at `brokers`.
pub async fn produce_all_at(brokers: &str, topic: &str, messages: Vec<Outgoing>) -> Vec<(i32, i64)> {
    send_all(&producer_at(brokers), topic, messages).await
}

/// [`produce_all`] with a producer the caller keeps (a benchmark times the messages, not the
/// client's start-up).
pub async fn send_all(producer: &FutureProducer, topic: &str, messages: Vec<Outgoing>) -> Vec<(i32, i64)> {
    let sends = messages.iter().map(|message| {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(&message.payload[..]);
        if let Some(key) = &message.key {
            record = record.key(&key[..]);
        }
        if let Some(partition) = message.partition {
            record = record.partition(partition);
        }
        record = record.headers(OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "test-origin",
            value: Some("common"),
        }));
        producer.send(record, Timeout::After(Duration::from_secs(60)))
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|result| {
            let delivery = result.map_err(|(error, _)| error).expect("delivered");
            (delivery.partition, delivery.offset)
        })
        .collect()
}

/// Payload prefix of the end markers [`TopicReader::read_to_end`] produces.
pub const MARKER_PREFIX: &str = "__ragstream_test_end_marker__";

/// A consumed message.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

pub fn reader(group: &str) -> StreamConsumer {
    // tansu answers a fetch only when its wait is over, even if data arrives sooner: a short
    // wait keeps readers (and the latency a benchmark sees) prompt.
    reader_waiting(group, "10")
}

/// [`reader`] with its own `fetch.wait.max.ms`.
pub fn reader_waiting(group: &str, fetch_wait_ms: &str) -> StreamConsumer {
    reader_config(&brokers(), group, fetch_wait_ms)
        .create()
        .expect("consumer")
}

/// The settings of [`reader_waiting`] for the broker at `brokers`, for a caller to add to.
pub fn reader_config(brokers: &str, group: &str, fetch_wait_ms: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        .set("fetch.wait.max.ms", fetch_wait_ms);
    config
}

/// Reads a topic from the beginning by direct assignment (no consumer group to join).
pub struct TopicReader {
    topic: String,
    brokers: String,
    consumer: StreamConsumer,
    next_offsets: HashMap<i32, i64>,
    /// Everything read so far.
    pub received: Vec<Received>,
}

impl TopicReader {
    /// A reader positioned at the beginning of every partition of `topic`.
    pub fn new(topic: &str) -> Self {
        Self::new_at(&brokers(), topic, &[])
    }

    /// [`TopicReader::new`] on the broker at `brokers`, with consumer `properties` besides the
    /// usual ones (e.g. `isolation.level`).
    pub fn new_at(brokers: &str, topic: &str, properties: &[(&str, &str)]) -> Self {
        let mut config = reader_config(brokers, &unique("reader"), "10");
        for (key, value) in properties {
            config.set(*key, *value);
        }
        let consumer: StreamConsumer = config.create().expect("consumer");
        let mut list = TopicPartitionList::new();
        for partition in partitions_of_at(brokers, topic) {
            list.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).expect("assign");
        Self {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
            consumer,
            next_offsets: HashMap::new(),
            received: Vec::new(),
        }
    }

    /// Reads until everything produced to the topic before this call has been read.
    ///
    /// tansu 0.6 reports a wrong high watermark once producers batch (the base offset of the last
    /// batch plus one), so the end is found with markers instead: one is produced to every
    /// partition and reading stops when all of them have been seen. Markers are not recorded.
    pub async fn read_to_end(&mut self, timeout: Duration) {
        let partitions = partitions_of_at(&self.brokers, &self.topic);
        let markers = partitions
            .iter()
            .map(|partition| Outgoing {
                partition: Some(*partition),
                key: None,
                payload: format!("{MARKER_PREFIX}{}", unique("end")).into_bytes(),
            })
            .collect();
        let targets: HashMap<i32, i64> = produce_all_at(&self.brokers, &self.topic, markers)
            .await
            .into_iter()
            .collect();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let done = targets
                .iter()
                .all(|(p, marker)| self.next_offsets.get(p).copied().unwrap_or(0) > *marker);
            if done {
                return;
            }
            self.read_some().await;
        }
        panic!("could not read {} to its end within {timeout:?}", self.topic);
    }

    /// Reads until at least `count` messages arrived in total (then to the end, to catch
    /// duplicates), or until `timeout`.
    pub async fn read_at_least(&mut self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.received.len() < count && Instant::now() < deadline {
            self.read_some().await;
        }
        let rest = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(10));
        self.read_to_end(rest).await;
    }

    /// Reads until `done` holds for everything received so far, then to the end (to catch
    /// duplicates), or until `timeout`.
    pub async fn read_until(&mut self, done: impl Fn(&[Received]) -> bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // `done` is looked at every 100 messages, and whenever a read finds nothing new (each
        // waits at most 500 ms): a reader that has what it waits for stops then, instead of
        // after another 100 empty reads.
        let mut unchecked = 0;
        while !(unchecked == 0 && done(&self.received)) && Instant::now() < deadline {
            let read = self.read_some().await;
            unchecked = if read && unchecked < 99 { unchecked + 1 } else { 0 };
        }
        let rest = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(10));
        self.read_to_end(rest).await;
    }

    /// [`read_until`](Self::read_until) at least `count` messages for which `matches` holds.
    pub async fn read_until_count(&mut self, matches: impl Fn(&Received) -> bool, count: usize, timeout: Duration) {
        self.read_until(
            |received| received.iter().filter(|m| matches(m)).count() >= count,
            timeout,
        )
        .await;
    }

    /// Reads the next message, waiting at most 500 ms; whether one came.
    async fn read_some(&mut self) -> bool {
        let Ok(message) = tokio::time::timeout(Duration::from_millis(500), self.consumer.recv()).await else {
            return false;
        };
        let message = message.expect("consume");
        self.next_offsets.insert(message.partition(), message.offset() + 1);
        if message
            .payload()
            .unwrap_or_default()
            .starts_with(MARKER_PREFIX.as_bytes())
        {
            return true;
        }
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.received.push(Received {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
        true
    }
}

/// Reads `topic` from the beginning until every payload in `expected` arrived, then to the end.
pub async fn read_all_of(topic: &str, expected: &HashSet<Vec<u8>>, timeout: Duration) -> Vec<Received> {
    let mut reader = TopicReader::new(topic);
    let done = |received: &[Received]| {
        let seen: HashSet<&Vec<u8>> = received.iter().map(|m| &m.payload).collect();
        expected.iter().all(|payload| seen.contains(payload))
    };
    reader.read_until(done, timeout).await;
    reader.received
}

/// Reads `topic` from the beginning until at least `at_least` messages arrived and everything up
/// to the high watermarks seen then has been read (so duplicates are caught too).
pub async fn read_topic(topic: &str, at_least: usize, timeout: Duration) -> Vec<Received> {
    let mut reader = TopicReader::new(topic);
    reader.read_at_least(at_least, timeout).await;
    reader.received
}

fn partitions_of_at(brokers: &str, topic: &str) -> Vec<i32> {
    let consumer: StreamConsumer = reader_config(brokers, &unique("meta"), "10")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata.topics()[0].partitions().iter().map(|p| p.id()).collect()
}

/// The offset after the last one in `coordinates`, per partition: where a consumer that has
/// processed everything must have committed. (Computed from produce acknowledgements because
/// tansu 0.6 under-reports high watermarks of batched partitions.)
pub fn end_offsets_of(coordinates: &[(i32, i64)]) -> HashMap<i32, i64> {
    let mut ends = HashMap::new();
    for (partition, offset) in coordinates {
        let end = ends.entry(*partition).or_insert(0);
        *end = (*end).max(offset + 1);
    }
    ends
}

/// Offsets committed by `group` on `topic` (partitions without a commit are left out).
pub fn committed_offsets(group: &str, topic: &str) -> HashMap<i32, i64> {
    committed_offsets_at(&brokers(), group, topic)
}

/// [`committed_offsets`] on the broker at `brokers`.
pub fn committed_offsets_at(brokers: &str, group: &str, topic: &str) -> HashMap<i32, i64> {
    let consumer: StreamConsumer = reader_config(brokers, group, "10").create().expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in partitions_of_at(brokers, topic) {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(offset) => Some((e.partition(), offset)),
            _ => None,
        })
        .collect()
}

/// Moves `group`'s committed offsets on every partition of `topic` back to the start, as an
/// operator resetting a consumer group would (the group must have no active members).
pub fn rewind_group(group: &str, topic: &str, partitions: i32) {
    rewind_group_at(&brokers(), group, topic, partitions);
}

/// [`rewind_group`] on the broker at `brokers`.
pub fn rewind_group_at(brokers: &str, group: &str, topic: &str, partitions: i32) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut offsets = TopicPartitionList::new();
    for partition in 0..partitions {
        offsets
            .add_partition_offset(topic, partition, rdkafka::Offset::Offset(0))
            .unwrap();
    }
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("rewind committed offsets");
    let committed = committed_offsets_at(brokers, group, topic);
    assert!(committed.values().all(|&o| o == 0), "{committed:?}");
}

/// A free TCP port on loopback for a process's telemetry listener.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Settings of a single-pipeline test topology.
pub struct TestTopology {
    pub input: String,
    pub output: String,
    pub dead_letter: String,
    pub group: String,
    pub stages: String,
    pub max_in_flight: u32,
    pub drain_timeout_ms: u64,
    pub commit_interval_ms: u64,
    pub port: u16,
    /// Extra YAML lines for the pipeline (e.g. a `retry:` block), indented by four spaces.
    pub pipeline_extra: String,
    /// Consumer properties for the source besides the ones every test sets: (key, value).
    pub source_kafka_extra: Vec<(String, String)>,
    /// Sinks besides `out`: (name, topic).
    pub extra_sinks: Vec<(String, String)>,
    /// Extra settings of a sink by its name (e.g. `format: avro`): (name, settings in YAML
    /// flow style, e.g. `{ format: avro, schema: answers }` without the braces).
    pub sink_settings: Vec<(String, String)>,
    /// Extra top-level YAML (e.g. a `schema_registry:` block), not indented.
    pub top_extra: String,
    /// Extra settings of `telemetry:` (e.g. a `traces:` block), each line indented by two spaces.
    pub telemetry_extra: String,
    /// Bootstrap address: the shared test broker, unless the test runs a broker of its own.
    pub brokers: String,
    /// The pipeline's name (several topologies can share one process, see [`TestTopology::yaml_with`]).
    pub name: String,
}

impl TestTopology {
    /// Fresh random topics and group; empty stage chain.
    pub fn new(prefix: &str) -> Self {
        Self {
            input: unique(&format!("{prefix}-in")),
            output: unique(&format!("{prefix}-out")),
            dead_letter: unique(&format!("{prefix}-dlq")),
            group: unique(&format!("{prefix}-group")),
            stages: "[]".to_owned(),
            max_in_flight: 256,
            drain_timeout_ms: 10_000,
            commit_interval_ms: 200,
            port: free_port(),
            pipeline_extra: String::new(),
            source_kafka_extra: Vec::new(),
            extra_sinks: Vec::new(),
            sink_settings: Vec::new(),
            top_extra: String::new(),
            telemetry_extra: String::new(),
            brokers: brokers(),
            name: "test".to_owned(),
        }
    }

    /// The same topology for a second replica (same topics and group, its own telemetry port).
    pub fn replica(&self) -> Self {
        Self {
            input: self.input.clone(),
            output: self.output.clone(),
            dead_letter: self.dead_letter.clone(),
            group: self.group.clone(),
            stages: self.stages.clone(),
            pipeline_extra: self.pipeline_extra.clone(),
            extra_sinks: self.extra_sinks.clone(),
            source_kafka_extra: self.source_kafka_extra.clone(),
            sink_settings: self.sink_settings.clone(),
            top_extra: self.top_extra.clone(),
            telemetry_extra: self.telemetry_extra.clone(),
            brokers: self.brokers.clone(),
            name: self.name.clone(),
            port: free_port(),
            ..*self
        }
    }

    /// Creates the input, output and dead-letter topics and those of the extra sinks.
    pub async fn create_topics(&self, partitions: i32) {
        let mut topics = vec![self.input.as_str(), self.output.as_str(), self.dead_letter.as_str()];
        topics.extend(self.extra_sinks.iter().map(|(_, topic)| topic.as_str()));
        create_topics_at(&self.brokers, &topics, partitions).await;
    }

    /// The `sink_settings` of sink `name` as YAML lines of its entry.
    fn sink_settings_of(&self, name: &str) -> String {
        self.sink_settings
            .iter()
            .filter(|(sink, _)| sink == name)
            .flat_map(|(_, settings)| settings.split(','))
            .map(|setting| format!("        {}\n", setting.trim()))
            .collect()
    }

    /// The topology file text.
    pub fn yaml(&self) -> String {
        format!(
            r#"version: 1
kafka:
  bootstrap.servers: {brokers}
telemetry:
  listen: 127.0.0.1:{port}
{telemetry_extra}
shutdown:
  drain_timeout_ms: {drain}
{top_extra}
pipelines:
{pipeline}"#,
            brokers = self.brokers,
            port = self.port,
            drain = self.drain_timeout_ms,
            top_extra = self.top_extra,
            telemetry_extra = self.telemetry_extra,
            pipeline = self.pipeline_yaml(),
        )
    }

    /// A topology that runs this pipeline and `others` in one process; the top-level settings
    /// (broker, telemetry port, shutdown, extras) are this one's. Pipeline names must differ.
    pub fn yaml_with(&self, others: &[&TestTopology]) -> String {
        let mut text = self.yaml();
        for other in others {
            assert_eq!(other.brokers, self.brokers, "pipelines of one process share its broker");
            assert_ne!(other.name, self.name, "pipeline names must differ");
            text.push_str(&other.pipeline_yaml());
        }
        text
    }

    /// This pipeline's entry under `pipelines:`.
    fn pipeline_yaml(&self) -> String {
        format!(
            r#"  - name: {name}
    source:
      topic: {input}
      group: {group}
      kafka:
        # A killed process's membership expires after this; the default 45 s slows the tests.
        session.timeout.ms: 6000
        heartbeat.interval.ms: 1000
{source_kafka_extra}    max_in_flight: {max_in_flight}
    max_message_bytes: 1048576
    commit_interval_ms: {commit}
{extra}
    stages: {stages}
    sinks:
      - name: out
        topic: {output}
{out_settings}{extra_sinks}    dead_letter:
      topic: {dlq}
"#,
            name = self.name,
            input = self.input,
            group = self.group,
            max_in_flight = self.max_in_flight,
            commit = self.commit_interval_ms,
            stages = self.stages,
            extra = self.pipeline_extra,
            source_kafka_extra = self
                .source_kafka_extra
                .iter()
                .map(|(key, value)| format!("        {key}: {value}\n"))
                .collect::<String>(),
            output = self.output,
            out_settings = self.sink_settings_of("out"),
            extra_sinks = self
                .extra_sinks
                .iter()
                .map(|(name, topic)| format!(
                    "      - name: {name}\n        topic: {topic}\n{}",
                    self.sink_settings_of(name)
                ))
                .collect::<String>(),
            dlq = self.dead_letter,
        )
    }
}

/// A `ragstream run` child process.
pub struct Ragstream {
    child: Option<Child>,
    port: u16,
    _topology: Option<tempfile::NamedTempFile>,
    pub log: PathBuf,
}

impl Ragstream {
    /// Starts `ragstream run` on the topology; logs go to a temporary file.
    pub fn start(topology: &TestTopology) -> Self {
        Self::start_with_env(topology, &[])
    }

    /// Like [`Ragstream::start`], with extra environment variables for the process.
    pub fn start_with_env(topology: &TestTopology, env: &[(&str, &str)]) -> Self {
        Self::start_yaml(&topology.yaml(), topology.port, env)
    }

    /// Starts `ragstream run` on a topology file's text (e.g. [`TestTopology::yaml_with`]);
    /// `port` is its telemetry port.
    pub fn start_yaml(yaml: &str, port: u16, env: &[(&str, &str)]) -> Self {
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        file.write_all(yaml.as_bytes()).unwrap();
        let args = ["run".into(), "--topology".into(), file.path().as_os_str().to_owned()];
        let mut process = Self::spawn(&args, port, env);
        process._topology = Some(file);
        process
    }

    /// Starts `ragstream` with `args`; `port` serves `/readyz`. Logs go to a temporary file.
    pub fn spawn(args: &[std::ffi::OsString], port: u16, env: &[(&str, &str)]) -> Self {
        let log = std::env::temp_dir().join(format!("{}.log", unique("ragstream")));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ragstream"))
            .args(args)
            .env("RUST_LOG", "info,rdkafka=warn,librdkafka=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn ragstream");
        Self {
            child: Some(child),
            port,
            _topology: None,
            log,
        }
    }

    /// The process's log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fetches `/metrics`, or None if the listener is not up.
    pub async fn metrics(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        reqwest::get(url).await.ok()?.text().await.ok()
    }

    /// Waits until `/readyz` says every pipeline has its partitions.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(response) = reqwest::get(&url).await {
                if response.status().is_success() {
                    return;
                }
            }
            assert!(
                self.try_status().is_none(),
                "ragstream exited early:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ragstream not ready within {timeout:?}:\n{}", self.log_text());
    }

    /// The exit status if the process has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// `kill -9`: no chance to drain or commit.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Ragstream {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sum of the values of metric samples named `name` whose labels contain every `label="value"`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.split(['{', ' ']).next() == Some(name)
                && labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
