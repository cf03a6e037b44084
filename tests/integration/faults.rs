//! What the engine does with each kind of failure, against the real broker: the input's fault is
//! dead-lettered, an external service's fault is retried (and dead-lettered once attempts run
//! out), and our own fault stops the pipeline without committing past the message.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

fn messages(count: usize, special: &[(usize, &str)]) -> Vec<Outgoing> {
    (0..count)
        .map(|i| {
            let tag = special.iter().find(|(n, _)| *n == i).map_or("plain", |(_, tag)| tag);
            Outgoing {
                partition: Some(0),
                key: Some(format!("k{i}").into_bytes()),
                payload: format!("message-{i:04}-{tag}").into_bytes(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_failures_are_retried_and_dead_lettered_when_attempts_run_out() {
    let mut topology = TestTopology::new("external");
    topology.stages = "[{ type: fault_injection, name: outage, contains: down, fault: external }, \
                       { type: fault_injection, name: blip, contains: flaky, fault: external, fail_times: 2 }]"
        .to_owned();
    topology.pipeline_extra = "    retry: { max_attempts: 3, initial_backoff_ms: 5, max_backoff_ms: 20 }".to_owned();
    topology.create_topics(1).await;
    let special: Vec<(usize, &str)> = (0..100)
        .step_by(10)
        .map(|i| (i, if i % 20 == 0 { "down" } else { "flaky" }))
        .collect();
    let coordinates = produce_all(&topology.input, messages(100, &special)).await;

    let mut process = Ragstream::start(&topology);
    process.wait_ready(Duration::from_secs(30)).await;
    let output = read_topic(&topology.output, 95, Duration::from_secs(60)).await;
    let dead = read_topic(&topology.dead_letter, 5, Duration::from_secs(60)).await;
    assert_eq!(
        output.len(),
        95,
        "plain and flaky messages come through:\n{}",
        process.log_text()
    );
    assert_eq!(dead.len(), 5, "messages whose dependency stays down are dead-lettered");
    for message in &dead {
        assert!(String::from_utf8_lossy(&message.payload).ends_with("-down"));
        assert_eq!(message.headers["ragstream.dlq.fault"], "external");
        assert_eq!(message.headers["ragstream.dlq.stage"], "outage");
        assert_eq!(
            message.headers["ragstream.dlq.reason"],
            "gave up after 3 attempts: injected external fault (failure 3)"
        );
    }
    let text = process.metrics().await.unwrap();
    // 5 "down" messages retried twice each, 5 "flaky" ones retried twice each before passing.
    assert_eq!(
        metric(&text, "ragstream_stage_messages_total", &[("outcome", "retry")]),
        20.0
    );
    let end = end_offsets_of(&coordinates);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while committed_offsets(&topology.group, &topology.input) != end {
        assert!(
            std::time::Instant::now() < deadline,
            "everything is committed once handled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    process.sigterm();
    assert_eq!(
        process.wait_exit(Duration::from_secs(30)).await.and_then(|s| s.code()),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_fault_stops_the_pipeline_without_committing_past_the_message() {
    let mut topology = TestTopology::new("internal");
    topology.max_in_flight = 1;
    topology.stages = "[{ type: fault_injection, name: buggy, contains: bug, fault: internal }]".to_owned();
    topology.create_topics(1).await;
    let coordinates = produce_all(&topology.input, messages(100, &[(50, "bug")])).await;
    let poisoned_offset = coordinates[50].1;

    for run in 1..=2 {
        // The second run logs JSON lines, as a log shipper would read them.
        let format = if run == 1 { "human" } else { "json" };
        let mut process = Ragstream::start_with_env(&topology, &[("RAGSTREAM_LOG_FORMAT", format)]);
        let status = process.wait_exit(Duration::from_secs(60)).await;
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(1),
            "run {run} exits 1:\n{}",
            process.log_text()
        );
        assert!(
            process.log_text().contains("stage `buggy` failed"),
            "{}",
            process.log_text()
        );
        let committed = committed_offsets(&topology.group, &topology.input);
        assert_eq!(
            committed.get(&0),
            Some(&poisoned_offset),
            "run {run}: committed up to, not past, the bug"
        );
        if format == "json" {
            let log = process.log_text();
            let lines: Vec<serde_json::Value> = log
                .lines()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
                .collect();
            let fatal = lines.iter().find(|l| l["level"] == "ERROR").expect("an ERROR line");
            assert_eq!(fatal["pipeline"], "test");
        }
    }
    let output = read_topic(&topology.output, 50, Duration::from_secs(30)).await;
    let payloads: HashSet<String> = output
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(
        payloads.len(),
        50,
        "everything before the bug was delivered, nothing after it"
    );
    assert!(payloads.iter().all(|p| p.as_str() < "message-0050"));
}
