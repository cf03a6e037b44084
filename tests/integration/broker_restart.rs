//! The broker restarted while both pipelines run (issue 21), on a broker of the test's own: the
//! shared broker serves every other test at the same time, so it is never the one killed.
//!
//! What happens depends on what the broker keeps (README, "Delivery guarantees", Broker restart):
//!
//! - **PostgreSQL storage** keeps the log, the committed offsets and the idempotent producers'
//!   IDs and sequence numbers. librdkafka resends what was not acknowledged under the same
//!   sequence numbers (tansu answers DUPLICATE_SEQUENCE_NUMBER for what it already has, which
//!   librdkafka counts as delivered), the consumers rejoin and resume from their commits:
//!   ragstream keeps running, nothing is lost, and only messages not committed before the kill
//!   come out twice.
//! - **Memory storage** forgets everything, the producers' IDs included. A resent batch then gets
//!   UNKNOWN_PRODUCER_ID: after a retry librdkafka raises a fatal error ("unable to retry without
//!   risking duplication/reordering"); for a first attempt it bumps the epoch locally and retries,
//!   which tansu (unlike Kafka, which accepts sequence 0 from an unknown producer) refuses again
//!   until `message.timeout.ms`. Either way the produce fails, the pipeline stops without
//!   committing past it and the process exits 1. The operator recreates the topics and resets the
//!   groups (tansu accepts a commit without checking the group generation, so the stopping
//!   process may have committed the old topics' offsets onto the new broker); a restarted
//!   ragstream then processes everything the new broker holds.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::chaos::ChaosRow;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

const PARTITIONS: i32 = 3;
/// Inputs per pipeline before the kill.
const BEFORE: usize = 1_500;
/// Inputs per pipeline after the restart.
const AFTER: usize = 300;
/// Outputs per pipeline before the broker is killed: well under way, far from done.
const MID_STREAM: f64 = 150.0;
/// The pipelines' producers give up on an output after this long (librdkafka's default is 300 s).
const MESSAGE_TIMEOUT_MS: u64 = 60_000;
/// The line a pipeline logs when it stops on a failed produce (src/engine/pipeline.rs).
const FATAL_LINE: &str = "fatal error; stopping without committing past the failed message";
/// What a reader of a broker on PostgreSQL 15 needs (README, "The local broker and its known limits").
const READ_UNCOMMITTED: &[(&str, &str)] = &[("isolation.level", "read_uncommitted")];

/// A tansu broker of this test's own, on its own port.
struct Tansu {
    port: u16,
    storage: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Tansu {
    /// Starts tansu on `port` with `storage` (a `--storage-engine` URL) and waits until it answers.
    async fn start(port: u16, storage: &str) -> Self {
        let mut tansu = Self {
            port,
            storage: storage.to_owned(),
            child: None,
            log: std::env::temp_dir().join(format!("{}.log", unique("tansu"))),
        };
        tansu.spawn().await;
        tansu
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// As deploy/local/broker.sh starts it; both runs log to the same file.
    async fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("tansu log file");
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", url.as_str()])
            .args(["--advertised-listener-url", url.as_str()])
            .args(["--storage-engine", self.storage.as_str()])
            .stdout(log.try_clone().expect("tansu log file"))
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        self.wait_until_it_answers().await;
    }

    /// Polls with a metadata request (not just an open port) until the broker speaks Kafka.
    async fn wait_until_it_answers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let brokers = self.brokers();
            // A fresh client each time: a client that saw the port closed backs off reconnecting.
            let answered = tokio::task::spawn_blocking(move || {
                let probe: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", brokers.as_str())
                    .create()
                    .expect("metadata probe");
                probe.fetch_metadata(None, Duration::from_secs(2)).is_ok()
            })
            .await
            .expect("metadata probe task");
            if answered {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                panic!("tansu exited during start-up ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not answer a metadata request within 60 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: the broker gets no chance to flush or say goodbye.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("tansu is running");
        child.kill().expect("SIGKILL tansu");
        child.wait().expect("tansu exits");
    }

    /// Starts it again on the same port with the same storage.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.spawn().await;
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `tansu` on PATH, or where `cargo install` (deploy/local/broker.sh install) puts it.
fn tansu_binary() -> PathBuf {
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("tansu")).collect())
        .unwrap_or_default();
    let installed = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin/tansu"));
    on_path
        .into_iter()
        .chain(installed)
        .find(|candidate| candidate.is_file())
        .expect("tansu is not installed: run deploy/local/broker.sh install")
}

/// A PostgreSQL database of this run on 127.0.0.1:5432 with tansu's schema, dropped afterwards.
struct Database {
    name: String,
}

impl Database {
    fn create(schema: &Path) -> Self {
        let name = unique("ragstream_restart").replace('-', "_");
        let create = format!("CREATE DATABASE \"{name}\"");
        psql(&["-c", create.as_str()]);
        let database = Self { name };
        let schema = schema.to_str().expect("RAGSTREAM_TANSU_PG_SCHEMA is UTF-8");
        psql(&["-d", database.name.as_str(), "-f", schema]);
        database
    }

    /// tansu's storage URL; loopback needs no TLS (the local server's certificate is for localhost).
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}?sslmode=disable", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn psql(args: &[&str]) {
    let output = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"])
        .args(args)
        .output()
        .expect("run psql (the PostgreSQL client)");
    assert!(
        output.status.success(),
        "psql {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// tansu v0.6.0's PostgreSQL DDL (etc/initdb.d/010-schema.sql in its source repository; not in
/// the crate). Without it the PostgreSQL scenario cannot run: it says why and passes, unless
/// `RAGSTREAM_CHAOS_PG=1` asks for it, which makes the missing schema a failure.
fn pg_schema() -> Option<PathBuf> {
    let why = "RAGSTREAM_TANSU_PG_SCHEMA is not set (tansu 0.6.0 does not ship its PostgreSQL DDL; \
               point it at tansu v0.6.0's etc/initdb.d/010-schema.sql)";
    match std::env::var_os("RAGSTREAM_TANSU_PG_SCHEMA").filter(|path| !path.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "RAGSTREAM_TANSU_PG_SCHEMA={} is not a file",
                path.display()
            );
            Some(path)
        }
        None if std::env::var("RAGSTREAM_CHAOS_PG").as_deref() == Ok("1") => {
            panic!("RAGSTREAM_CHAOS_PG=1 asks for the PostgreSQL broker restart, but {why}")
        }
        None => {
            eprintln!("broker restart on PostgreSQL storage NOT RUN: {why}; RAGSTREAM_CHAOS_PG=1 makes this a failure");
            None
        }
    }
}

/// Stand-ins for the documents and questions pipelines in one process: each passes its messages
/// through after a short random delay, so work is in flight when the broker dies.
fn pipelines(brokers: &str, read_uncommitted: bool) -> [TestTopology; 2] {
    ["documents", "questions"].map(|name| {
        let mut topology = TestTopology::new(&format!("restart-{name}"));
        topology.brokers = brokers.to_owned();
        topology.name = name.to_owned();
        topology.stages = "[{ type: random_delay, min_ms: 5, max_ms: 50 }]".to_owned();
        topology.max_in_flight = 16;
        topology.pipeline_extra = format!("    producer:\n      message.timeout.ms: {MESSAGE_TIMEOUT_MS}");
        if read_uncommitted {
            for (key, value) in READ_UNCOMMITTED {
                topology
                    .source_kafka_extra
                    .push(((*key).to_owned(), (*value).to_owned()));
            }
        }
        topology
    })
}

/// Produces `count` messages tagged `tag` to each pipeline's input; per pipeline, payload →
/// (partition, offset).
async fn produce_inputs(
    brokers: &str,
    topologies: &[TestTopology; 2],
    tag: &str,
    count: usize,
) -> Vec<HashMap<Vec<u8>, (i32, i64)>> {
    let mut sent: Vec<HashMap<Vec<u8>, (i32, i64)>> = Vec::new();
    for topology in topologies {
        let messages: Vec<Outgoing> = (0..count)
            .map(|i| Outgoing {
                partition: Some((i % PARTITIONS as usize) as i32),
                key: Some(format!("{tag}-{i}").into_bytes()),
                payload: format!("{}-{tag}-{i:05}", topology.name).into_bytes(),
            })
            .collect();
        let payloads: Vec<Vec<u8>> = messages.iter().map(|m| m.payload.clone()).collect();
        let coordinates = produce_all_at(brokers, &topology.input, messages).await;
        sent.push(payloads.into_iter().zip(coordinates).collect());
    }
    sent
}

/// Waits until each pipeline has produced [`MID_STREAM`] outputs; the number in flight then.
async fn wait_mid_stream(process: &Ragstream) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(text) = process.metrics().await {
            let produced =
                |pipeline: &str| metric(&text, "ragstream_messages_produced_total", &[("pipeline", pipeline)]);
            if produced("documents") >= MID_STREAM && produced("questions") >= MID_STREAM {
                return metric(&text, "ragstream_in_flight_messages", &[]);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the pipelines did not get under way:\n{}",
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `topic` from the beginning until every payload in `expected` is there, then to the end;
/// how often each payload came, and how many records were read.
async fn read_outputs(
    brokers: &str,
    topic: &str,
    expected: &HashSet<Vec<u8>>,
    properties: &[(&str, &str)],
) -> (HashMap<Vec<u8>, usize>, usize) {
    let mut reader = TopicReader::new_at(brokers, topic, properties);
    let done = |received: &[Received]| {
        let seen: HashSet<&Vec<u8>> = received.iter().map(|m| &m.payload).collect();
        expected.iter().all(|payload| seen.contains(payload))
    };
    reader.read_until(done, Duration::from_secs(240)).await;
    let mut counts = HashMap::new();
    for message in &reader.received {
        *counts.entry(message.payload.clone()).or_insert(0) += 1;
    }
    (counts, reader.received.len())
}

/// Records on `topic` (read to its end).
async fn count_records(brokers: &str, topic: &str, properties: &[(&str, &str)]) -> usize {
    let mut reader = TopicReader::new_at(brokers, topic, properties);
    reader.read_to_end(Duration::from_secs(60)).await;
    reader.received.len()
}

async fn stop_cleanly(process: &mut Ragstream) {
    process.sigterm();
    let status = process.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "clean exit:\n{}",
        process.log_text()
    );
}

// Fails today (2026-12-08): after the fatal `UnknownProducerId` the questions pipeline logs
// "fetching stopped; draining" with 15 messages in flight and the process does not exit within
// the deadline. Run by `scripts/chaos.sh` (which includes ignored scenarios) until it is fixed.
#[ignore = "known failure: the process stays in its drain after a fatal produce error (issue 21)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_storage_restart_stops_ragstream_and_a_restarted_one_processes_the_recreated_topics() {
    let mut broker = Tansu::start(free_port(), "memory://tansu/").await;
    let brokers = broker.brokers();
    let topologies = pipelines(&brokers, false);
    for topology in &topologies {
        topology.create_topics(PARTITIONS).await;
    }
    produce_inputs(&brokers, &topologies, "before", BEFORE).await;
    let [documents, questions] = &topologies;

    let mut first = Ragstream::start_yaml(&documents.yaml_with(&[questions]), documents.port, &[]);
    first.wait_ready(Duration::from_secs(60)).await;
    let in_flight = wait_mid_stream(&first).await;

    broker.kill();
    broker.restart().await;
    // The topics went with the broker's memory: an operator recreates them.
    for topology in &topologies {
        topology.create_topics(PARTITIONS).await;
    }
    let after = produce_inputs(&brokers, &topologies, "after", AFTER).await;

    // The producers' IDs are unknown to the new broker: the first failed produce (a fatal
    // idempotence error, or a message timeout) stops its pipeline, and the process exits 1.
    let deadline = Duration::from_millis(MESSAGE_TIMEOUT_MS) + Duration::from_secs(120);
    let status = first.wait_exit(deadline).await;
    let log = first.log_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "ragstream exits 1 once its outputs cannot be delivered:\n{log}\n--- tansu:\n{}",
        broker.log_text()
    );
    assert!(log.contains(FATAL_LINE), "the log says why:\n{log}");

    // Offsets of the old topics the stopping process may have committed onto the new broker:
    // the operator resets the groups before restarting ragstream.
    let mut stale = Vec::new();
    for topology in &topologies {
        let committed = committed_offsets_at(&brokers, &topology.group, &topology.input);
        if committed.values().any(|&offset| offset > 0) {
            stale.push(format!("{}: {committed:?}", topology.name));
        }
        rewind_group_at(&brokers, &topology.group, &topology.input, PARTITIONS);
    }

    let restarted = documents.replica();
    let mut second = Ragstream::start_yaml(&restarted.yaml_with(&[questions]), restarted.port, &[]);
    second.wait_ready(Duration::from_secs(60)).await;
    let (mut lost, mut duplicates, mut outputs, mut dead_lettered) = (0, 0, 0, 0);
    for (topology, sent) in topologies.iter().zip(&after) {
        let expected: HashSet<Vec<u8>> = sent.keys().cloned().collect();
        let (counts, records) = read_outputs(&brokers, &topology.output, &expected, &[]).await;
        outputs += records;
        lost += expected.iter().filter(|payload| !counts.contains_key(*payload)).count();
        duplicates += expected
            .iter()
            .filter(|payload| counts.get(*payload).copied().unwrap_or(0) > 1)
            .count();
        dead_lettered += count_records(&brokers, &topology.dead_letter, &[]).await;
    }
    assert_eq!(
        lost,
        0,
        "the restarted ragstream processes every message the new broker holds:\n{}",
        second.log_text()
    );
    assert_eq!(dead_lettered, 0, "pass-through stages dead-letter nothing");
    stop_cleanly(&mut second).await;

    ChaosRow {
        scenario: "broker restart (memory storage)".to_owned(),
        messages_in: 2 * AFTER,
        outputs,
        lost,
        duplicates,
        dead_lettered,
        leaked: 0,
        note: format!(
            "both pipelines; {in_flight} in flight at SIGKILL; ragstream exited 1 and a restarted one \
             processed the recreated topics; the {} earlier inputs went with the broker's memory; \
             stale offsets reset: {}",
            2 * BEFORE,
            if stale.is_empty() {
                "none".to_owned()
            } else {
                stale.join("; ")
            }
        ),
    }
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_storage_restart_loses_nothing_and_repeats_only_uncommitted_work() {
    let Some(schema) = pg_schema() else {
        return;
    };
    let database = Database::create(&schema);
    let mut broker = Tansu::start(free_port(), &database.url()).await;
    let brokers = broker.brokers();
    let topologies = pipelines(&brokers, true);
    for topology in &topologies {
        topology.create_topics(PARTITIONS).await;
    }
    let before = produce_inputs(&brokers, &topologies, "before", BEFORE).await;
    let [documents, questions] = &topologies;

    let mut process = Ragstream::start_yaml(&documents.yaml_with(&[questions]), documents.port, &[]);
    process.wait_ready(Duration::from_secs(60)).await;
    let in_flight = wait_mid_stream(&process).await;
    // Commits only move forward, so everything below these was committed when the broker died.
    let committed_before: Vec<HashMap<i32, i64>> = topologies
        .iter()
        .map(|topology| committed_offsets_at(&brokers, &topology.group, &topology.input))
        .collect();

    broker.kill();
    broker.restart().await;
    let after = produce_inputs(&brokers, &topologies, "after", AFTER).await;

    let uncommitted = |partition: &i32, offset: &i64, committed: &HashMap<i32, i64>| {
        committed.get(partition).is_none_or(|mark| offset >= mark)
    };
    let (mut lost, mut duplicates, mut outputs, mut dead_lettered) = (0, 0, 0, 0);
    let mut uncommitted_at_kill = 0;
    let mut repeated_committed = Vec::new();
    let mut sent_coordinates = Vec::new();
    for (i, topology) in topologies.iter().enumerate() {
        let sent: HashMap<Vec<u8>, (i32, i64)> = before[i]
            .iter()
            .chain(&after[i])
            .map(|(p, c)| (p.clone(), *c))
            .collect();
        let expected: HashSet<Vec<u8>> = sent.keys().cloned().collect();
        let (counts, records) = read_outputs(&brokers, &topology.output, &expected, READ_UNCOMMITTED).await;
        outputs += records;
        uncommitted_at_kill += before[i]
            .values()
            .filter(|(partition, offset)| uncommitted(partition, offset, &committed_before[i]))
            .count();
        for (payload, (partition, offset)) in &sent {
            match counts.get(payload).copied().unwrap_or(0) {
                0 => lost += 1,
                1 => {}
                _ => {
                    duplicates += 1;
                    if !uncommitted(partition, offset, &committed_before[i]) {
                        repeated_committed.push(format!(
                            "{} {partition}/{offset} (committed before the kill: {:?})",
                            String::from_utf8_lossy(payload),
                            committed_before[i]
                        ));
                    }
                }
            }
        }
        dead_lettered += count_records(&brokers, &topology.dead_letter, READ_UNCOMMITTED).await;
        sent_coordinates.push(sent.into_values().collect::<Vec<_>>());
    }
    assert!(
        process.try_status().is_none(),
        "ragstream rides out a restart of a broker that keeps its state:\n{}",
        process.log_text()
    );
    assert_eq!(lost, 0, "nothing lost:\n{}", process.log_text());
    assert!(
        repeated_committed.is_empty(),
        "only work not committed before the kill is repeated: {repeated_committed:?}"
    );
    assert_eq!(dead_lettered, 0, "pass-through stages dead-letter nothing");

    // Committing resumed too: every input ends up committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (topology, coordinates) in topologies.iter().zip(&sent_coordinates) {
        let end = end_offsets_of(coordinates);
        loop {
            let committed = committed_offsets_at(&brokers, &topology.group, &topology.input);
            if end
                .iter()
                .all(|(partition, offset)| committed.get(partition) == Some(offset))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: committed {committed:?} never reached {end:?}:\n{}",
                topology.name,
                process.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stop_cleanly(&mut process).await;

    ChaosRow {
        scenario: "broker restart (PostgreSQL storage)".to_owned(),
        messages_in: 2 * (BEFORE + AFTER),
        outputs,
        lost,
        duplicates,
        dead_lettered,
        leaked: 0,
        note: format!(
            "both pipelines; {in_flight} in flight at SIGKILL; ragstream kept running; duplicates only \
             among the {uncommitted_at_kill} inputs not committed before the kill"
        ),
    }
    .report();
}
