//! Status events through the real broker: every step of each question, in order, under a rate
//! limit and a flaky scripted model, ending in one terminal step that matches the answer.

use crate::answering::{answers_for, question, start, Setup};
use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::scripted_llm::{echo_placeholders, Behaviour, ScriptedLlm};
use common::*;
use ragstream::contracts::{Contract, StatusEvent, Step};

fn redis() -> String {
    std::env::var("RAGSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_question_reports_its_steps_in_order_and_ends_once() {
    // Every third call fails with a 503 and is retried.
    let llm = ScriptedLlm::start(
        Arc::new(|_, call| {
            if call % 3 == 0 {
                Behaviour::Status(503)
            } else {
                Behaviour::Answer
            }
        }),
        echo_placeholders(),
    )
    .await;
    // One model call a second for the tenant (a burst of one): of 20 questions produced at once
    // most wait, however fast or loaded the machine is (at 10 a second, a loaded machine spread
    // the questions out enough that none waited).
    let setup = Setup {
        decode_extra: ", status_sink: status".to_owned(),
        generate_extra: format!(
            ", cost_control: {{ store: \"{}\", key_prefix: \"{}\", cache_ttl_s: 0, \
               tenant: {{ requests_per_minute: 60 }}, on_exceeded: delay, max_delay_ms: 60000 }}",
            redis(),
            unique("status")
        ),
        ..Setup::openai(&llm.url)
    };
    let running = start("status", setup).await;
    let count = 20;
    let messages = (0..count)
        .map(|i| {
            question(
                &format!("follow-{i}"),
                "acme",
                &format!("What is the refund policy? I am client.{i}@example.org (case {i})"),
                "qa",
                serde_json::json!({}),
            )
        })
        .collect();
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = (0..count).map(|i| format!("follow-{i}")).collect();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(120)).await;

    let mut reader = TopicReader::new(&running.status_topic);
    let terminals = |received: &[Received]| {
        received
            .iter()
            .filter_map(|r| serde_json::from_slice::<StatusEvent>(&r.payload).ok())
            .filter(|e| e.step.is_terminal())
            .count()
    };
    reader
        .read_until(|received| terminals(received) >= count, Duration::from_secs(60))
        .await;
    // Each question's events in the order they are on the topic (one partition per key).
    let mut steps: HashMap<String, Vec<StatusEvent>> = HashMap::new();
    for received in &reader.received {
        let value: serde_json::Value = serde_json::from_slice(&received.payload).unwrap();
        Contract::status().validate(&value).unwrap();
        let event: StatusEvent = serde_json::from_value(value).unwrap();
        assert_eq!(received.key.as_deref(), Some(event.request_id.as_bytes()));
        steps.entry(event.request_id.clone()).or_default().push(event);
    }
    assert_eq!(steps.len(), count);
    let (mut queued, mut retried) = (0, 0);
    for (id, events) in &steps {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>(), "{id}: {events:#?}");
        assert_eq!(events[0].step, Step::Received, "{id}");
        assert!(events.iter().any(|e| e.step == Step::Retrieving), "{id}: {events:#?}");
        assert!(
            events.iter().any(|e| matches!(e.step, Step::Generating { .. })),
            "{id}: {events:#?}"
        );
        let ends: Vec<&StatusEvent> = events.iter().filter(|e| e.step.is_terminal()).collect();
        assert_eq!(ends.len(), 1, "{id}: {events:#?}");
        assert_eq!(events.last().unwrap(), ends[0], "the terminal step is the last");
        let answer = &answers[id];
        assert_eq!(
            ends[0].step,
            Step::terminal(answer.status, answer.provenance.reason.clone()),
            "{id}"
        );
        // Retrieval comes before the first model call, and elapsed time never goes back.
        let retrieving = events.iter().position(|e| e.step == Step::Retrieving).unwrap();
        let generating = events
            .iter()
            .position(|e| matches!(e.step, Step::Generating { .. }))
            .unwrap();
        assert!(retrieving < generating, "{id}: {events:#?}");
        assert!(events.windows(2).all(|w| w[0].elapsed_ms <= w[1].elapsed_ms), "{id}");
        queued += events.iter().filter(|e| matches!(e.step, Step::Queued { .. })).count();
        retried += events
            .iter()
            .filter(|e| matches!(e.step, Step::Retrying { .. }))
            .count();
    }
    // The limit and the failing calls were really met, and shown.
    assert!(queued > 0, "no question was queued behind the rate limit");
    assert!(retried > 0, "no retry was reported");
    println!("status: {count} questions, {queued} queued steps, {retried} retries");
}
