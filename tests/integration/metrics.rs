//! `/metrics`, scraped during and after an end-to-end run of the answering pipeline, checked
//! against what happened: what was consumed, produced and dead-lettered, and what the answers
//! themselves report (tokens, cost, model calls).

use crate::answering::{answers_for, question, start, Setup, TENANTS};
use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::scripted_llm::{always_answer, echo_placeholders, ScriptedLlm};
use common::*;
use ragstream::contracts::AnswerStatus;

const QUESTIONS: usize = 30;
const UNDECODABLE: usize = 3;

/// Scrapes until `done` holds for the text (or fails after `timeout`), returning that text.
async fn scrape_until(process: &Ragstream, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = process.metrics().await.unwrap_or_default();
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never got there; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_match_what_the_run_did() {
    let llm = ScriptedLlm::start(always_answer(), echo_placeholders()).await;
    let setup = Setup {
        models: format!(
            "[{{ name: primary, provider: openai, base_url: \"{}\", model: scripted, timeout_ms: 1000, \
               price: {{ input_per_million: 3.0, output_per_million: 15.0 }} }}]",
            llm.url
        ),
        generate_extra: ", partials_sink: partials".to_owned(),
        ..Setup::openai(&llm.url)
    };
    let running = start("metrics", setup).await;
    let mut messages = Vec::new();
    let mut ids = HashSet::new();
    for i in 0..QUESTIONS {
        let request_id = format!("metrics-{i}");
        messages.push(question(
            &request_id,
            TENANTS[i % TENANTS.len()],
            "How long do refunds take?",
            "qa",
            serde_json::json!({}),
        ));
        ids.insert(request_id);
    }
    for i in 0..UNDECODABLE {
        messages.push(Outgoing {
            partition: None,
            key: Some(format!("bad-{i}").into_bytes()),
            payload: b"not json".to_vec(),
        });
    }
    produce_all(&running.topology.input, messages).await;

    // During the run: counters only grow, and nothing is answered that was not consumed.
    let process = &running.process;
    let mut previous = (0.0, 0.0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = process.metrics().await.unwrap_or_default();
        let consumed = metric(&text, "ragstream_messages_consumed_total", &[]);
        let answered = metric(&text, "ragstream_answers_total", &[]);
        assert!(consumed >= previous.0 && answered >= previous.1, "a counter went down");
        assert!(answered <= consumed, "{answered} answers for {consumed} messages");
        previous = (consumed, answered);
        if answered >= QUESTIONS as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {answered} answers counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(60)).await;
    assert!(answers.values().all(|a| a.status == AnswerStatus::Ok));
    // Every record acknowledged and every offset committed: the counters have settled.
    let total = (QUESTIONS + UNDECODABLE) as f64;
    let text = scrape_until(process, Duration::from_secs(60), |text| {
        metric(text, "ragstream_messages_produced_total", &[("sink", "audit")]) >= QUESTIONS as f64
            && metric(text, "ragstream_committed_offset", &[]) >= total
    })
    .await;
    let count = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels);
    let q = QUESTIONS as f64;

    assert_eq!(
        count("ragstream_messages_consumed_total", &[("pipeline", "test")]),
        total
    );
    assert_eq!(count("ragstream_messages_produced_total", &[("sink", "out")]), q);
    assert_eq!(count("ragstream_messages_produced_total", &[("sink", "audit")]), q);
    let partials = read_topic(&running.partials_topic, QUESTIONS, Duration::from_secs(30)).await;
    assert_eq!(
        count("ragstream_messages_produced_total", &[("sink", "partials")]),
        partials.len() as f64
    );
    assert_eq!(
        count(
            "ragstream_messages_dead_lettered_total",
            &[("stage", "decode_question")]
        ),
        UNDECODABLE as f64
    );
    assert_eq!(
        count(
            "ragstream_stage_messages_total",
            &[("stage", "decode_question"), ("outcome", "dead_letter")]
        ),
        UNDECODABLE as f64
    );
    for stage in ["mask_pii", "retrieve", "generate", "restore_pii", "emit_answer"] {
        let labels = [("stage", stage), ("outcome", "ok")];
        assert_eq!(count("ragstream_stage_messages_total", &labels), q, "{stage}");
        assert_eq!(
            count("ragstream_stage_duration_seconds_count", &[("stage", stage)]),
            q,
            "{stage}"
        );
    }
    // The `source` step reads every message's wire format before the first stage.
    assert_eq!(
        count("ragstream_stage_duration_seconds_count", &[("stage", "source")]),
        total
    );

    // Answers by tenant and status, as the answers say.
    assert_eq!(count("ragstream_answers_total", &[("status", "ok")]), q);
    for tenant in TENANTS {
        let answered = answers.values().filter(|a| a.tenant == tenant).count() as f64;
        assert_eq!(
            count("ragstream_answers_total", &[("tenant", tenant), ("status", "ok")]),
            answered,
            "{tenant}"
        );
    }

    // Model calls, tokens and cost, as the scripted server saw them and the answers report.
    let calls = llm.bodies().len() as f64;
    assert_eq!(calls, q, "one call per question");
    let attempts = [("model", "primary"), ("outcome", "ok")];
    assert_eq!(count("ragstream_llm_attempts_total", &attempts), calls);
    assert_eq!(
        count("ragstream_llm_request_duration_seconds_count", &[("model", "primary")]),
        calls
    );
    let prompt: u64 = answers.values().map(|a| a.provenance.usage.prompt_tokens).sum();
    let completion: u64 = answers.values().map(|a| a.provenance.usage.completion_tokens).sum();
    assert!(prompt > 0 && completion > 0);
    assert_eq!(
        count(
            "ragstream_llm_tokens_total",
            &[("model", "primary"), ("kind", "prompt")]
        ),
        prompt as f64
    );
    assert_eq!(
        count(
            "ragstream_llm_tokens_total",
            &[("model", "primary"), ("kind", "completion")]
        ),
        completion as f64
    );
    let cost: f64 = answers.values().map(|a| a.provenance.cost_usd).sum();
    let expected_cost = (prompt as f64 * 3.0 + completion as f64 * 15.0) / 1e6;
    assert!((cost - expected_cost).abs() < 1e-9, "{cost} vs {expected_cost}");
    let counted_cost = count("ragstream_llm_cost_usd_total", &[("model", "primary")]);
    assert!((counted_cost - cost).abs() < 1e-9, "{counted_cost} vs {cost}");

    // Retrieval: one LanceDB search and one question embedding per question.
    assert_eq!(count("ragstream_retrieval_duration_seconds_count", &[]), q);
    assert_eq!(
        count("ragstream_embedding_batch_texts_sum", &[("provider", "local")]),
        q
    );

    // At rest: nothing in flight, all partitions owned, offsets at the end of the topic.
    assert_eq!(count("ragstream_in_flight_messages", &[]), 0.0);
    assert_eq!(count("ragstream_assigned_partitions", &[("pipeline", "test")]), 3.0);
    assert_eq!(count("ragstream_committed_offset", &[]), total);
    // Lag comes from librdkafka's statistics (every 5 s): it settles at zero.
    scrape_until(process, Duration::from_secs(30), |text| {
        text.contains("ragstream_consumer_lag_messages{") && metric(text, "ragstream_consumer_lag_messages", &[]) == 0.0
    })
    .await;
}
