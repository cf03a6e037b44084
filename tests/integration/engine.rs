//! The engine against the real broker: delivery, crashes, ordering of commits, dead letters,
//! graceful shutdown and metrics. Start the broker first (`deploy/local/broker.sh start`).

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use rand::seq::SliceRandom;

const PARTITIONS: i32 = 3;

fn numbered(count: usize) -> Vec<Outgoing> {
    (0..count)
        .map(|i| Outgoing {
            partition: Some((i % PARTITIONS as usize) as i32),
            key: Some(format!("k{i}").into_bytes()),
            payload: format!("message-{i:06}").into_bytes(),
        })
        .collect()
}

/// Produces `count` numbered messages; returns payload → (partition, offset).
async fn produce_numbered(topic: &str, count: usize) -> HashMap<Vec<u8>, (i32, i64)> {
    let messages = numbered(count);
    let payloads: Vec<Vec<u8>> = messages.iter().map(|m| m.payload.clone()).collect();
    let coordinates = produce_all(topic, messages).await;
    payloads.into_iter().zip(coordinates).collect()
}

fn count_by_payload(received: &[Received]) -> HashMap<Vec<u8>, usize> {
    let mut counts = HashMap::new();
    for message in received {
        *counts.entry(message.payload.clone()).or_insert(0) += 1;
    }
    counts
}

async fn wait_for_metric(process: &Ragstream, name: &str, at_least: f64, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(text) = process.metrics().await {
            if metric(&text, name, &[]) >= at_least {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not reach {at_least}:\n{}",
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts ragstream and returns once it has produced 300 outputs and holds at least
/// `in_flight` messages, with the number in flight at that moment.
async fn start_under_load(topology: &TestTopology, in_flight: f64) -> (Ragstream, f64) {
    let mut process = Ragstream::start(topology);
    process.wait_ready(Duration::from_secs(30)).await;
    let produced = "ragstream_messages_produced_total";
    wait_for_metric(&process, produced, 300.0, Duration::from_secs(60)).await;
    let gauge = "ragstream_in_flight_messages";
    let text = wait_for_metric(&process, gauge, in_flight, Duration::from_secs(30)).await;
    let now = metric(&text, gauge, &[]);
    (process, now)
}

async fn wait_for_commits_to_reach_the_end(group: &str, topic: &str, end: &HashMap<i32, i64>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let committed = committed_offsets(group, topic);
        if end.iter().all(|(p, e)| committed.get(p) == Some(e)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed {committed:?} never reached end {end:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stop_cleanly(process: &mut Ragstream) {
    process.sigterm();
    let status = process.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "clean exit:\n{}",
        process.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_delivers_10000_messages_exactly_once_and_commits_to_the_end() {
    let mut topology = TestTopology::new("pass");
    topology.max_in_flight = 1000;
    topology.create_topics(PARTITIONS).await;
    let sent = produce_numbered(&topology.input, 10_000).await;

    let mut process = Ragstream::start(&topology);
    process.wait_ready(Duration::from_secs(30)).await;
    let received = read_topic(&topology.output, 10_000, Duration::from_secs(240)).await;
    let counts = count_by_payload(&received);
    assert_eq!(
        received.len(),
        10_000,
        "every message exactly once:\n{}",
        process.log_text()
    );
    assert_eq!(counts.len(), 10_000);
    assert!(sent.keys().all(|payload| counts.get(payload) == Some(&1)));
    let headers_kept = received
        .iter()
        .all(|m| m.headers.get("test-origin").map(String::as_str) == Some("common"));
    assert!(headers_kept, "headers pass through unchanged");

    let end = end_offsets_of(&sent.values().copied().collect::<Vec<_>>());
    wait_for_commits_to_reach_the_end(&topology.group, &topology.input, &end, Duration::from_secs(30)).await;
    let text = process.metrics().await.expect("metrics");
    assert_eq!(
        metric(&text, "ragstream_messages_consumed_total", &[("pipeline", "test")]),
        10_000.0
    );
    assert_eq!(
        metric(&text, "ragstream_messages_produced_total", &[("sink", "out")]),
        10_000.0
    );
    assert_eq!(metric(&text, "ragstream_messages_dead_lettered_total", &[]), 0.0);
    assert_eq!(metric(&text, "ragstream_in_flight_messages", &[]), 0.0);
    for (partition, offset) in &end {
        let labels = [
            ("topic", topology.input.as_str()),
            ("partition", &partition.to_string()),
        ];
        assert_eq!(metric(&text, "ragstream_committed_offset", &labels), *offset as f64);
    }
    stop_cleanly(&mut process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_with_messages_in_flight_loses_nothing() {
    let mut topology = TestTopology::new("crash");
    topology.max_in_flight = 400;
    topology.stages = "[{ type: random_delay, min_ms: 200, max_ms: 1500 }]".to_owned();
    topology.create_topics(PARTITIONS).await;
    let sent = produce_numbered(&topology.input, 3_000).await;

    let (mut first, in_flight) = start_under_load(&topology, 100.0).await;
    first.kill9();
    let committed = committed_offsets(&topology.group, &topology.input);

    let mut second = Ragstream::start(&topology);
    let expected: HashSet<Vec<u8>> = sent.keys().cloned().collect();
    let received = read_all_of(&topology.output, &expected, Duration::from_secs(240)).await;
    let counts = count_by_payload(&received);
    let missing: Vec<_> = sent.keys().filter(|p| !counts.contains_key(*p)).collect();
    assert!(
        missing.is_empty(),
        "{} inputs lost:\n{}",
        missing.len(),
        second.log_text()
    );
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).map(|(p, _)| p).collect();
    for payload in &duplicates {
        let (partition, offset) = sent[*payload];
        let committed = committed.get(&partition).copied().unwrap_or(0);
        assert!(
            offset >= committed,
            "offset {offset} of partition {partition} was committed ({committed}) yet redelivered"
        );
    }
    eprintln!(
        "killed with {in_flight} in flight; {} duplicates after restart",
        duplicates.len()
    );
    stop_cleanly(&mut second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offset_never_passes_an_unfinished_message() {
    let mut topology = TestTopology::new("order");
    // Slow enough (about 250 messages/s) that many samples are taken while commits move.
    topology.max_in_flight = 50;
    topology.commit_interval_ms = 50;
    topology.stages = "[{ type: random_delay, min_ms: 0, max_ms: 400 }]".to_owned();
    topology.create_topics(PARTITIONS).await;
    let sent = produce_numbered(&topology.input, 3_000).await;
    let by_coordinates: HashMap<(i32, i64), Vec<u8>> = sent.iter().map(|(p, c)| (*c, p.clone())).collect();

    let mut process = Ragstream::start(&topology);
    process.wait_ready(Duration::from_secs(30)).await;
    let mut output = TopicReader::new(&topology.output);
    let mut samples_with_progress = 0;
    loop {
        // Read the commit first, then the outputs: anything below the commit must already be out.
        let committed = committed_offsets(&topology.group, &topology.input);
        output.read_to_end(Duration::from_secs(30)).await;
        let seen: HashSet<&Vec<u8>> = output.received.iter().map(|m| &m.payload).collect();
        for (&(partition, offset), payload) in &by_coordinates {
            if offset < committed.get(&partition).copied().unwrap_or(0) {
                assert!(
                    seen.contains(payload),
                    "offset {offset} of partition {partition} committed before its output"
                );
            }
        }
        if committed.values().any(|offset| *offset > 0) {
            samples_with_progress += 1;
        }
        if seen.len() == sent.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples_with_progress >= 3, "the check ran while commits were moving");
    stop_cleanly(&mut process).await;
}

const VALID_DOCUMENTS: usize = 500;

fn document(i: usize) -> Vec<u8> {
    format!(
        r#"{{"schema_version":1,"doc_id":"doc-{i}","tenant":"acme","op":"upsert","version":1,"title":"Doc {i}","text":"Body of document {i}."}}"#
    )
    .into_bytes()
}

/// 330 invalid UTF-8, 330 invalid JSON, 330 missing required fields and 10 payloads of 2 MB.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    let mut messages = Vec::new();
    for i in 0..330 {
        let mut bytes = format!(r#"{{"doc_id":"bad-utf8-{i}","text":""#).into_bytes();
        bytes.extend_from_slice(&[0xc3, 0x28, 0xff]);
        bytes.extend_from_slice(b"\"}");
        messages.push(("payload is not valid UTF-8", bytes));
        messages.push((
            "payload is not valid JSON",
            format!("{{\"doc_id\": \"x{i}\", ").into_bytes(),
        ));
        messages.push((
            "document does not match its schema",
            format!(r#"{{"schema_version":1,"doc_id":"missing-{i}","op":"upsert","version":1}}"#).into_bytes(),
        ));
    }
    for i in 0..10 {
        let mut big = format!(r#"{{"schema_version":1,"doc_id":"big-{i}","text":""#).into_bytes();
        big.resize(2 * 1024 * 1024, b'a');
        messages.push(("exceeds max_message_bytes", big));
    }
    messages
}

/// A message of the dead-letter test: the expected reason (None when valid), key, payload.
type Planned = (Option<&'static str>, Vec<u8>, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_go_to_the_dead_letter_topic_and_valid_ones_are_processed() {
    let mut topology = TestTopology::new("dlq");
    topology.stages = "[{ type: decode_document }]".to_owned();
    topology.create_topics(PARTITIONS).await;

    let mut outgoing: Vec<Planned> = (0..VALID_DOCUMENTS)
        .map(|i| (None, format!("doc-{i}").into_bytes(), document(i)))
        .collect();
    for (i, (reason, payload)) in malformed().into_iter().enumerate() {
        outgoing.push((Some(reason), format!("bad-{i}").into_bytes(), payload));
    }
    outgoing.shuffle(&mut rand::rng());
    let messages = outgoing
        .iter()
        .map(|(_, key, payload)| Outgoing {
            partition: None,
            key: Some(key.clone()),
            payload: payload.clone(),
        })
        .collect();
    let coordinates = produce_all(&topology.input, messages).await;
    let malformed_count = outgoing.iter().filter(|(reason, _, _)| reason.is_some()).count();
    assert_eq!(malformed_count, 1000);

    let mut process = Ragstream::start(&topology);
    process.wait_ready(Duration::from_secs(30)).await;
    let valid = read_topic(&topology.output, VALID_DOCUMENTS, Duration::from_secs(180)).await;
    let dead = read_topic(&topology.dead_letter, malformed_count, Duration::from_secs(180)).await;
    assert!(
        process.try_status().is_none(),
        "the process never crashes:\n{}",
        process.log_text()
    );
    assert_eq!(valid.len(), VALID_DOCUMENTS, "{}", process.log_text());
    assert_eq!(dead.len(), malformed_count);

    let expected: HashMap<&[u8], (usize, &Planned)> =
        outgoing.iter().enumerate().map(|(i, o)| (&o.1[..], (i, o))).collect();
    for message in &dead {
        let (index, (reason, _, payload)) = expected[&message.key.as_ref().unwrap()[..]];
        let reason = reason.expect("only malformed messages are dead-lettered");
        assert_eq!(&message.payload, payload, "original bytes untouched");
        let header = |name: &str| message.headers.get(name).cloned().unwrap_or_default();
        assert!(
            header("ragstream.dlq.reason").contains(reason),
            "{} vs {reason}",
            header("ragstream.dlq.reason")
        );
        let stage = if reason.contains("max_message_bytes") {
            "source"
        } else {
            "decode_document"
        };
        assert_eq!(header("ragstream.dlq.stage"), stage);
        assert_eq!(header("ragstream.dlq.fault"), "input");
        assert_eq!(header("ragstream.source.topic"), topology.input);
        let (partition, offset) = coordinates[index];
        assert_eq!(header("ragstream.source.partition"), partition.to_string());
        assert_eq!(header("ragstream.source.offset"), offset.to_string());
        assert_eq!(header("test-origin"), "common", "original headers kept");
    }
    for message in &valid {
        let value: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(
            message.key.as_deref(),
            Some(value["doc_id"].as_str().unwrap().as_bytes())
        );
    }

    let end = end_offsets_of(&coordinates);
    wait_for_commits_to_reach_the_end(&topology.group, &topology.input, &end, Duration::from_secs(30)).await;
    let text = process.metrics().await.expect("metrics");
    assert_eq!(metric(&text, "ragstream_messages_consumed_total", &[]), 1500.0);
    assert_eq!(
        metric(&text, "ragstream_messages_produced_total", &[]),
        VALID_DOCUMENTS as f64
    );
    assert_eq!(
        metric(
            &text,
            "ragstream_messages_dead_lettered_total",
            &[("stage", "decode_document")]
        ),
        990.0
    );
    assert_eq!(
        metric(&text, "ragstream_messages_dead_lettered_total", &[("stage", "source")]),
        10.0
    );
    let outcomes = [("stage", "decode_document"), ("outcome", "ok")];
    assert_eq!(
        metric(&text, "ragstream_stage_messages_total", &outcomes),
        VALID_DOCUMENTS as f64
    );
    let histogram_count = metric(
        &text,
        "ragstream_stage_duration_seconds_count",
        &[("stage", "decode_document")],
    );
    assert_eq!(histogram_count, 1490.0, "oversize messages never reach the stage");
    stop_cleanly(&mut process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_commits_exits_zero_and_restart_continues() {
    let mut topology = TestTopology::new("term");
    topology.max_in_flight = 300;
    topology.drain_timeout_ms = 10_000;
    topology.stages = "[{ type: random_delay, min_ms: 50, max_ms: 400 }]".to_owned();
    topology.create_topics(PARTITIONS).await;
    let sent = produce_numbered(&topology.input, 3_000).await;

    let (mut first, _) = start_under_load(&topology, 50.0).await;
    first.sigterm();
    let deadline = Duration::from_millis(topology.drain_timeout_ms) + Duration::from_secs(10);
    let status = first.wait_exit(deadline).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit 0 within the deadline:\n{}",
        first.log_text()
    );
    assert!(first.log_text().contains("pipeline stopped cleanly"));

    let mut second = Ragstream::start(&topology);
    let expected: HashSet<Vec<u8>> = sent.keys().cloned().collect();
    let received = read_all_of(&topology.output, &expected, Duration::from_secs(240)).await;
    let counts = count_by_payload(&received);
    let missing = sent.keys().filter(|p| !counts.contains_key(*p)).count();
    assert_eq!(missing, 0, "nothing lost:\n{}", second.log_text());
    let duplicates = counts.values().filter(|n| **n > 1).count();
    assert_eq!(duplicates, 0, "a drained shutdown commits everything it finished");
    stop_cleanly(&mut second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_takes_over_partitions_without_losing_messages() {
    let mut topology = TestTopology::new("replicas");
    // About 300 messages/s, so plenty of every partition is left when the second replica joins.
    topology.max_in_flight = 50;
    topology.stages = "[{ type: random_delay, min_ms: 50, max_ms: 250 }]".to_owned();
    topology.create_topics(PARTITIONS).await;
    let sent = produce_numbered(&topology.input, 4_000).await;

    let (mut first, _) = start_under_load(&topology, 20.0).await;
    let second_topology = topology.replica();
    let mut second = Ragstream::start(&second_topology);
    // The group rebalances: the first replica commits what it finished for the partitions it
    // gives up, and the second continues from there.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = second.metrics().await.unwrap_or_default();
        if metric(&text, "ragstream_messages_produced_total", &[]) > 0.0 {
            break;
        }
        if let Some(status) = second.try_status() {
            panic!("second replica exited with {status}:\n{}", second.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "second replica never got work (metrics: {text:?}):\n{}",
            second.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected: HashSet<Vec<u8>> = sent.keys().cloned().collect();
    let received = read_all_of(&topology.output, &expected, Duration::from_secs(240)).await;
    let counts = count_by_payload(&received);
    let missing = sent.keys().filter(|p| !counts.contains_key(*p)).count();
    assert_eq!(missing, 0, "nothing lost across the rebalance:\n{}", first.log_text());
    let first_assigned = metric(&first.metrics().await.unwrap(), "ragstream_assigned_partitions", &[]);
    let second_assigned = metric(&second.metrics().await.unwrap(), "ragstream_assigned_partitions", &[]);
    assert_eq!(
        first_assigned + second_assigned,
        PARTITIONS as f64,
        "partitions are split between replicas"
    );
    assert!(first_assigned >= 1.0 && second_assigned >= 1.0);
    stop_cleanly(&mut first).await;
    stop_cleanly(&mut second).await;
}
