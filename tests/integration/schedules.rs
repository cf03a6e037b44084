//! Scheduled questions against the real broker and Redis: two replicas and a restart across
//! ticks produce exactly one question per tick; after three missed ticks the catch-up policy
//! produces all three and the skip policy none. Time is given to the scheduler, never waited for.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use ragstream::clock::ManualClock;
use ragstream::contracts::{Contract, Question};
use ragstream::schedule::{Scheduler, SchedulesConfig};

fn redis() -> String {
    std::env::var("RAGSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn config(topic: &str, prefix: &str) -> SchedulesConfig {
    let yaml = format!(
        r#"
store: "{store}"
key_prefix: "{prefix}"
jobs:
  - name: digest
    cron: "*/5 * * * *"
    time_zone: Europe/Berlin
    topic: "{topic}"
    tenant: acme
    question: "What changed between {{since}} and {{tick}}?"
    missed: catch_up
  - name: pulse
    cron: "*/5 * * * *"
    topic: "{topic}"
    tenant: globex
    task: report
    question: "Status report"
    missed: skip
"#,
        store = redis()
    );
    let config: SchedulesConfig = serde_yaml::from_str(&yaml).unwrap();
    let mut errors = Vec::new();
    config.validate("schedules", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    config
}

/// A replica: a scheduler of its own on the shared Redis.
async fn replica(config: &SchedulesConfig) -> Scheduler {
    let clock = Arc::new(ManualClock::default());
    Scheduler::connect(config, producer(), clock).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_tick_is_produced_once_across_replicas_restarts_and_downtime() {
    let topic = unique("schedules");
    create_topics(&[&topic], 3).await;
    let config = config(&topic, &unique("sched"));
    let a = replica(&config).await;
    let b = replica(&config).await;

    // First sight: nothing is owed for the time before.
    assert!(a.run_due(at("2026-12-07T10:01:00Z")).await.unwrap().is_empty());
    // Both replicas look at the same tick at once: one question per schedule.
    let (from_a, from_b) = tokio::join!(
        a.run_due(at("2026-12-07T10:05:00Z")),
        b.run_due(at("2026-12-07T10:05:01Z"))
    );
    let first: Vec<_> = from_a.unwrap().into_iter().chain(from_b.unwrap()).collect();
    assert_eq!(first.len(), 2, "{first:?}");
    // Looking again within the same period produces nothing.
    assert!(b.run_due(at("2026-12-07T10:06:00Z")).await.unwrap().is_empty());
    assert!(a.run_due(at("2026-12-07T10:06:00Z")).await.unwrap().is_empty());

    // Replica b restarts across the next tick: the new process finds the state and the claims.
    drop(b);
    let b = replica(&config).await;
    let (from_a, from_b) = tokio::join!(
        a.run_due(at("2026-12-07T10:10:02Z")),
        b.run_due(at("2026-12-07T10:10:00Z"))
    );
    let second: Vec<_> = from_a.unwrap().into_iter().chain(from_b.unwrap()).collect();
    assert_eq!(second.len(), 2, "{second:?}");

    // Every replica down for 10:15, 10:20 and 10:25; back at 10:27:30 (the newest tick is 150 s
    // late, beyond the 60 s grace): `digest` catches up all three, `pulse` skips them.
    drop((a, b));
    let c = replica(&config).await;
    let late = c.run_due(at("2026-12-07T10:27:30Z")).await.unwrap();
    let ticks: Vec<(String, DateTime<Utc>)> = late.iter().map(|p| (p.schedule.clone(), p.tick)).collect();
    assert_eq!(
        ticks,
        vec![
            ("digest".to_owned(), at("2026-12-07T10:15:00Z")),
            ("digest".to_owned(), at("2026-12-07T10:20:00Z")),
            ("digest".to_owned(), at("2026-12-07T10:25:00Z")),
        ]
    );
    // The next tick on time: both again.
    assert_eq!(c.run_due(at("2026-12-07T10:30:10Z")).await.unwrap().len(), 2);

    // The topic holds exactly one question per produced tick, each valid and keyed by its id.
    let mut reader = TopicReader::new(&topic);
    reader.read_at_least(9, Duration::from_secs(30)).await;
    let mut by_id: BTreeMap<String, Question> = BTreeMap::new();
    for received in &reader.received {
        let value: serde_json::Value = serde_json::from_slice(&received.payload).unwrap();
        Contract::questions().validate(&value).unwrap();
        let question: Question = serde_json::from_value(value).unwrap();
        assert_eq!(received.key.as_deref(), Some(question.request_id.as_bytes()));
        assert!(
            by_id.insert(question.request_id.clone(), question).is_none(),
            "a tick produced twice"
        );
    }
    let ids: Vec<&str> = by_id.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        vec![
            "schedule-digest-20261207T100500Z",
            "schedule-digest-20261207T101000Z",
            "schedule-digest-20261207T101500Z",
            "schedule-digest-20261207T102000Z",
            "schedule-digest-20261207T102500Z",
            "schedule-digest-20261207T103000Z",
            "schedule-pulse-20261207T100500Z",
            "schedule-pulse-20261207T101000Z",
            "schedule-pulse-20261207T103000Z",
        ]
    );
    // What changed since the previous tick is what the task reads: the question says it in the
    // schedule's time zone, and retrieval is limited to it.
    let digest = &by_id["schedule-digest-20261207T102000Z"];
    assert_eq!(digest.tenant, "acme");
    assert_eq!(
        digest.question,
        "What changed between 2026-12-07T11:15:00+01:00 and 2026-12-07T11:20:00+01:00?"
    );
    let options = digest.options.as_ref().unwrap();
    assert_eq!(options.changed_since.as_deref(), Some("2026-12-07T10:15:00Z"));
    assert_eq!(digest.metadata["schedule"], "digest");
    assert_eq!(digest.metadata["tick"], "2026-12-07T10:20:00Z");
}
