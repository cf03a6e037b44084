//! A model server that fails below HTTP, against the real broker: bytes that are not HTTP, a
//! connection half-closed before or partway through the answer, a body or event stream that
//! trickles and never ends. Every call ends at once or at the model's `timeout_ms`, is retried
//! by the `retry` policy, and each question gets exactly one answer: `ok` from the attempt that
//! answered, charged for that call alone, or `failed` once the attempts run out, charged nothing.

use crate::answering::{answers_for, audit_events, question, start, Setup, TENANTS};
use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::chaos::ChaosRow;
use common::scripted_llm::{user_message, Behaviour, Script, ScriptedLlm};
use common::*;
use ragstream::contracts::AnswerStatus;

/// Calls per question and model: the `retry.max_attempts` of the answering harness.
const ATTEMPTS: usize = 4;
/// The only reply: every call that answers reports the same usage, so costs the same.
const REPLY: &str = "Refunds are accepted within 30 days [1].";

/// One question and what the server does with its calls.
struct Case {
    request_id: String,
    /// What the first `faulty_calls` calls get; later ones are answered.
    fault: Behaviour,
    faulty_calls: usize,
    /// The outcome the audit records for each faulty attempt.
    outcome: &'static str,
}

impl Case {
    fn answered(&self) -> bool {
        self.faulty_calls < ATTEMPTS
    }

    /// The outcomes of its attempts: its faults (as many as are allowed), then the answer.
    fn expected_outcomes(&self) -> Vec<&'static str> {
        let mut outcomes = vec![self.outcome; self.faulty_calls.min(ATTEMPTS)];
        if self.answered() {
            outcomes.push("ok");
        }
        outcomes
    }
}

/// Each fault by name, with the attempt outcome it must be classified as: a connection that
/// fails (at once) or a call that runs into its timeout.
fn faults() -> [(&'static str, Behaviour, &'static str); 4] {
    [
        ("garbage", Behaviour::Garbage, "connection"),
        ("half-close", Behaviour::HalfClose, "connection"),
        ("mid-body", Behaviour::HalfCloseMidBody, "connection"),
        (
            "drip",
            Behaviour::SlowDrip {
                every: Duration::from_millis(100),
            },
            "timeout",
        ),
    ]
}

/// Per fault, questions that fail once, on every attempt but the last, and on every attempt;
/// and questions the server answers at once, for the cost of one call.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, fault, outcome) in faults() {
        for faulty_calls in [1, ATTEMPTS - 1, ATTEMPTS] {
            for copy in 0..2 {
                cases.push(Case {
                    request_id: format!("{name}-{faulty_calls}-{copy}"),
                    fault: fault.clone(),
                    faulty_calls,
                    outcome,
                });
            }
        }
    }
    for copy in 0..4 {
        cases.push(Case {
            request_id: format!("clean-0-{copy}"),
            fault: Behaviour::Answer,
            faulty_calls: 0,
            outcome: "ok",
        });
    }
    cases
}

/// The request id a question names in its text (`(ref …)`), which the model's prompt repeats.
fn request_id_in(text: &str) -> Option<String> {
    let start = text.find("(ref ")? + "(ref ".len();
    Some(text[start..].split(')').next()?.to_owned())
}

/// Plays each question's case: its fault for its first `faulty_calls` calls, then answers.
fn script(cases: &[Case]) -> Script {
    let plan: HashMap<String, (Behaviour, usize)> = cases
        .iter()
        .map(|case| (case.request_id.clone(), (case.fault.clone(), case.faulty_calls)))
        .collect();
    let calls: Mutex<HashMap<String, usize>> = Mutex::default();
    Arc::new(move |request: &serde_json::Value, _call: usize| {
        let Some(request_id) = request_id_in(&user_message(request)) else {
            return Behaviour::Answer;
        };
        let mut calls = calls.lock().unwrap();
        let made = calls.entry(request_id.clone()).or_default();
        *made += 1;
        match plan.get(&request_id) {
            Some((fault, faulty_calls)) if *made <= *faulty_calls => fault.clone(),
            _ => Behaviour::Answer,
        }
    })
}

/// One model whose every answered call costs the same (prompts free), bounded at 1 s a call.
fn setup(url: &str, streamed: bool) -> Setup {
    let partials = if streamed { ", partials_sink: partials" } else { "" };
    Setup {
        models: format!(
            "[{{ name: primary, provider: openai, base_url: \"{url}\", model: scripted, timeout_ms: 1000, \
               price: {{ input_per_million: 0, output_per_million: 100000 }} }}]"
        ),
        // Without the passages' answer, a question whose attempts all fail is `failed`. The
        // circuit must stay closed while questions fail on purpose: an open one refuses calls
        // unsent, and the attempts would no longer be the server's calls.
        generate_extra: format!(
            ", fallback_extractive: false, circuit_breaker: {{ failure_threshold: 1000 }}{partials}"
        ),
        ..Setup::openai(url)
    }
}

/// Asks every case's question of a pipeline whose model server plays the cases, and checks
/// that each got one answer as the policy says, its attempts were exactly the server's calls,
/// and only the call that answered was paid for.
async fn each_call_is_bounded_retried_and_answered_once(prefix: &str, streamed: bool) {
    let cases = cases();
    let llm = ScriptedLlm::start(script(&cases), Arc::new(|_: &serde_json::Value| REPLY.to_owned())).await;
    let mut running = start(prefix, setup(&llm.url, streamed)).await;
    let messages = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let text = format!("What is the refund policy? (ref {})", case.request_id);
            question(
                &case.request_id,
                TENANTS[i % TENANTS.len()],
                &text,
                "qa",
                serde_json::json!({}),
            )
        })
        .collect();
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = cases.iter().map(|case| case.request_id.clone()).collect();
    // Nothing lost, nothing answered twice (`answers_for` fails on a missing or second answer).
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(180)).await;
    let audit: HashMap<String, _> = audit_events(&running.audit_topic, cases.len())
        .await
        .into_iter()
        .map(|(event, _)| (event.envelope.request_id.clone(), event))
        .collect();
    let mut calls: HashMap<String, usize> = HashMap::new();
    for request in llm.requests() {
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        let request_id = request_id_in(&user_message(&body)).expect("every call is for a question");
        *calls.entry(request_id).or_default() += 1;
        if streamed {
            assert_eq!(body["stream"], true, "a call of a streaming pipeline did not stream");
        }
    }

    let clean = &answers["clean-0-0"];
    let one_call = (clean.provenance.cost_usd, clean.provenance.usage.completion_tokens);
    assert!(one_call.0 > 0.0, "a call that answered cost nothing: {clean:?}");
    for case in &cases {
        let id = &case.request_id;
        let answer = &answers[id];
        let outcomes: Vec<&str> = audit[id].attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, case.expected_outcomes(), "{id}: {answer:?}");
        // Each attempt was one call the server saw: none repeated behind the policy's back.
        assert_eq!(calls.get(id).copied().unwrap_or(0), outcomes.len(), "{id}");
        let paid = (answer.provenance.cost_usd, answer.provenance.usage.completion_tokens);
        if case.answered() {
            assert_eq!(answer.status, AnswerStatus::Ok, "{id}: {answer:?}");
            assert_eq!(answer.answer.as_deref(), Some(REPLY), "{id}");
            assert_eq!(paid, one_call, "{id}: the failed calls were charged too");
        } else {
            assert_eq!(answer.status, AnswerStatus::Failed, "{id}: {answer:?}");
            let reason = answer.provenance.reason.as_deref().unwrap_or_default();
            assert!(reason.starts_with("no model answered"), "{id}: {reason}");
            assert_eq!(paid, (0.0, 0), "{id}: calls that failed were charged");
        }
    }
    let log = running.process.log_text();
    assert!(running.process.try_status().is_none(), "ragstream exited:\n{log}");
    assert!(!log.contains("panicked"), "ragstream panicked:\n{log}");
    let failed = answers.values().filter(|a| a.status == AnswerStatus::Failed).count();
    ChaosRow {
        scenario: format!(
            "model server garbage, half-closed, slow drip ({})",
            if streamed { "streamed" } else { "whole" }
        ),
        messages_in: cases.len(),
        outputs: answers.len(),
        lost: ids.len() - answers.len(),
        note: format!(
            "{} calls for {} questions, each bounded by its 1 s timeout; {failed} answered `failed` \
             when every attempt failed, none charged",
            llm.requests().len(),
            cases.len()
        ),
        ..ChaosRow::default()
    }
    .report();
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_half_closed_and_dripping_answers_are_bounded_retried_and_answered_once() {
    each_call_is_bounded_retried_and_answered_once("model-faults", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_half_closed_and_dripping_streams_are_bounded_retried_and_answered_once() {
    each_call_is_bounded_retried_and_answered_once("model-faults-stream", true).await;
}
