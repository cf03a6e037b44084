//! Function calling through the real broker: a scripted OpenAI-compatible model that calls
//! tools, a real HTTP tool server, and the whole answering chain between them.

use crate::answering::{answers_for, question, start, Setup};
use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use ragstream::contracts::AnswerStatus;
use serde_json::{json, Value};

/// What the scripted model does on a turn, from the conversation so far.
type Turn = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// A model server that answers each request with the message `turn` writes; every request body
/// is logged.
struct ToolModel {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

impl ToolModel {
    async fn start(turn: Turn) -> Self {
        let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = bodies.clone();
        let handler = move |body: String| {
            let (turn, log) = (turn.clone(), log.clone());
            async move {
                log.lock().unwrap().push(body.clone());
                let request: Value = serde_json::from_str(&body).unwrap();
                let message = turn(&request);
                let finish = if message.get("tool_calls").is_some() {
                    "tool_calls"
                } else {
                    "stop"
                };
                Json(json!({
                    "choices": [{ "message": message, "finish_reason": finish }],
                    "usage": { "prompt_tokens": 10, "completion_tokens": 5 }
                }))
            }
        };
        let url = serve(Router::new().route("/v1/chat/completions", post(handler))).await;
        Self { url, bodies }
    }
}

/// The tool results so far in a conversation, in order.
fn tool_results(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn user_text(request: &Value) -> String {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

fn call(id: &str, name: &str, arguments: Value) -> Value {
    json!({ "id": id, "type": "function", "function": { "name": name, "arguments": arguments.to_string() } })
}

/// Calls `get_order_status` with the order number and the e-mail placeholder of the question,
/// then answers with the tool's result.
fn order_status_model() -> Turn {
    Arc::new(|request: &Value| {
        let results = tool_results(request);
        if let Some(result) = results.last() {
            return json!({ "role": "assistant", "content": format!("Your order: {result}") });
        }
        let question = user_text(request);
        let order = regex::Regex::new(r"order (?:number )?(\d+)")
            .unwrap()
            .captures(&question)
            .unwrap()[1]
            .to_owned();
        let email = regex::Regex::new(r"\[EMAIL[_ ]\d+\]")
            .unwrap()
            .find(&question)
            .map(|m| m.as_str().to_owned());
        json!({ "role": "assistant", "content": null,
                "tool_calls": [call("call_1", "get_order_status", json!({ "order_id": order.parse::<u64>().unwrap(), "email": email }))] })
    })
}

/// (order, e-mail, idempotency key) of every call an order service received.
type CallLog = Arc<Mutex<Vec<(String, String, String)>>>;

/// An order service: the status of an order for the e-mail it was placed with; every call is
/// logged with its path, e-mail and idempotency key.
struct OrderService {
    url: String,
    calls: CallLog,
}

impl OrderService {
    async fn start(delay: Duration) -> Self {
        let calls: CallLog = Arc::default();
        let handler = move |State(calls): State<CallLog>,
                            Path(order): Path<String>,
                            headers: HeaderMap,
                            uri: axum::http::Uri| async move {
            let query: HashMap<String, String> = uri
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(name, value)| {
                    let value = value.replace('+', " ");
                    let value = percent_encoding::percent_decode_str(&value)
                        .decode_utf8_lossy()
                        .into_owned();
                    (name.to_owned(), value)
                })
                .collect();
            let email = query.get("email").cloned().unwrap_or_default();
            let key = headers
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            calls.lock().unwrap().push((order.clone(), email.clone(), key));
            tokio::time::sleep(delay).await;
            Json(json!({ "order_id": order, "status": "in transit", "contact": email }))
        };
        let url = serve(
            Router::new()
                .route("/orders/{order}", get(handler))
                .with_state(calls.clone()),
        )
        .await;
        Self { url, calls }
    }
}

fn tools_block(order_url: &str, extra: &str) -> String {
    format!(
        ", tools: {{ max_iterations: 3, max_consecutive_failures: 2 {extra}, definitions: [{{ \
           name: get_order_status, description: \"The delivery status of an order\", \
           parameters: {{ type: object, required: [order_id, email], properties: {{ \
             order_id: {{ type: integer }}, email: {{ type: string }} }} }}, \
           http: {{ url: \"{order_url}/orders/{{order_id}}\", timeout_ms: 2000, idempotent: false }} }}] }}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_model_calls_a_tool_with_real_values_and_sees_only_placeholders() {
    let model = ToolModel::start(order_status_model()).await;
    let orders = OrderService::start(Duration::ZERO).await;
    let mut setup = Setup::openai(&model.url);
    setup.generate_extra = tools_block(&orders.url, "");
    let running = start("tools-order", setup).await;
    let count = 100;
    let email = |i: usize| format!("customer.{i}@example-shop.io");
    let messages = (0..count)
        .map(|i| {
            question(
                &format!("order-{i}"),
                "acme",
                &format!("What is the status of my order number {}? I am {}.", 1000 + i, email(i)),
                "qa",
                json!({}),
            )
        })
        .collect();
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = (0..count).map(|i| format!("order-{i}")).collect();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(120)).await;

    for i in 0..count {
        let answer = &answers[&format!("order-{i}")];
        assert_eq!(answer.status, AnswerStatus::Ok, "{answer:?}");
        let text = answer.answer.as_deref().unwrap();
        assert!(text.contains("in transit"), "{text}");
        assert!(
            text.contains(&email(i)),
            "the answer has the real e-mail restored: {text}"
        );
    }
    // The tool got the real values, once per question.
    let calls = orders.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), count);
    for i in 0..count {
        assert!(
            calls
                .iter()
                .any(|(order, mail, _)| *order == (1000 + i).to_string() && *mail == email(i)),
            "order {} was asked with its real e-mail",
            1000 + i
        );
    }
    // The model never saw one of them: not in the question, not in the tool's result.
    let bodies = model.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2 * count, "two turns per question");
    for body in &bodies {
        assert!(
            !body.contains("@example-shop.io"),
            "a real e-mail reached the model: {body}"
        );
    }
    // The audit has one tool_called event per call, with masked arguments only.
    let audit = read_topic(&running.audit_topic, 2 * count, Duration::from_secs(60)).await;
    let mut tool_events = 0;
    for message in &audit {
        let text = String::from_utf8(message.payload.clone()).unwrap();
        assert!(!text.contains("@example-shop.io"), "a real e-mail in the audit: {text}");
        let event: Value = serde_json::from_str(&text).unwrap();
        ragstream::contracts::Contract::audit().validate(&event).unwrap();
        if event["event"] == "tool_called" {
            tool_events += 1;
            assert_eq!(event["tool"], "get_order_status");
            assert_eq!(event["outcome"], "ok");
        }
    }
    assert_eq!(tool_events, count);
    let metrics = running.process.metrics().await.expect("metrics");
    assert_eq!(
        metric(
            &metrics,
            "ragstream_tool_calls_total",
            &[("tool", "get_order_status"), ("outcome", "ok")]
        ),
        count as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loop_is_bounded_and_bad_calls_go_back_to_the_model() {
    // Asks for the order again and again with arguments that fail the schema, or calls a tool
    // that does not exist, or keeps calling: never answers.
    let turn: Turn = Arc::new(|request: &Value| {
        let question = user_text(request);
        let calls = if question.contains("schema") {
            vec![call("c", "get_order_status", json!({ "order_id": "not a number" }))]
        } else if question.contains("unknown") {
            vec![call("c", "delete_everything", json!({}))]
        } else {
            let n = tool_results(request).len();
            vec![call(
                &format!("c{n}"),
                "get_order_status",
                json!({ "order_id": n, "email": "[EMAIL_1]" }),
            )]
        };
        json!({ "role": "assistant", "content": null, "tool_calls": calls })
    });
    let model = ToolModel::start(turn).await;
    let orders = OrderService::start(Duration::ZERO).await;
    let mut setup = Setup::openai(&model.url);
    setup.generate_extra = tools_block(&orders.url, "");
    let running = start("tools-bounds", setup).await;
    let asks = [
        ("schema", "Check the schema of order 5 please"),
        ("unknown", "Call the unknown tool for order 6"),
        ("forever", "Keep asking about order 7, mail a@b.io"),
    ];
    let messages = asks
        .iter()
        .map(|(id, text)| question(id, "acme", text, "qa", json!({})))
        .collect();
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = asks.iter().map(|(id, _)| id.to_string()).collect();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(60)).await;

    for (id, _) in asks {
        let answer = &answers[id];
        assert_ne!(answer.status, AnswerStatus::Ok, "{answer:?}");
    }
    let reason = |id: &str| {
        answers[id]
            .provenance
            .reason
            .clone()
            .or(answers[id].provenance.fallback_reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason("schema").contains("max_consecutive_failures"),
        "{}",
        reason("schema")
    );
    assert!(
        reason("unknown").contains("max_consecutive_failures"),
        "{}",
        reason("unknown")
    );
    assert!(reason("forever").contains("max_iterations"), "{}", reason("forever"));
    // Schema-invalid and unknown calls never reached the tool; the looping one did, 3 times.
    assert_eq!(orders.calls.lock().unwrap().len(), 3);
    // The model was told why its calls failed.
    let bodies = model.bodies.lock().unwrap().clone();
    assert!(bodies.iter().any(|b| b.contains("do not fit the tool's schema")));
    assert!(bodies
        .iter()
        .any(|b| b.contains("there is no tool `delete_everything`")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_tool_is_cut_at_its_timeout() {
    let model = ToolModel::start(order_status_model()).await;
    // Answers after 30 s; the tool's timeout is 2 s.
    let orders = OrderService::start(Duration::from_secs(30)).await;
    let mut setup = Setup::openai(&model.url);
    setup.generate_extra = tools_block(&orders.url, "");
    let running = start("tools-hang", setup).await;
    let message = question(
        "hang",
        "acme",
        "What is the status of order 42? I am x@y.io.",
        "qa",
        json!({}),
    );
    produce_all(&running.topology.input, vec![message]).await;
    let ids: HashSet<String> = ["hang".to_owned()].into();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(60)).await;
    let answer = &answers["hang"];
    // The model got "did not answer within 2000 ms" and answered with it.
    assert!(
        answer
            .answer
            .as_deref()
            .unwrap_or_default()
            .contains("did not answer within 2000 ms"),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_question_does_not_call_the_tool_again() {
    let model = ToolModel::start(order_status_model()).await;
    let orders = OrderService::start(Duration::ZERO).await;
    let mut setup = Setup::openai(&model.url);
    setup.generate_extra = tools_block(&orders.url, "");
    let running = start("tools-replay", setup).await;
    // The same request twice (a redelivery after a lost commit looks the same to the stage).
    let ask = || {
        question(
            "again",
            "acme",
            "What is the status of my order 77? I am r@e.io.",
            "qa",
            json!({}),
        )
    };
    produce_all(&running.topology.input, vec![ask()]).await;
    let ids: HashSet<String> = ["again".to_owned()].into();
    answers_for(&running.topology.output, &ids, Duration::from_secs(60)).await;
    produce_all(&running.topology.input, vec![ask()]).await;
    let mut reader = TopicReader::new(&running.topology.output);
    reader.read_at_least(2, Duration::from_secs(60)).await;
    assert_eq!(orders.calls.lock().unwrap().len(), 1, "the tool ran once");
    let keys: HashSet<String> = orders.calls.lock().unwrap().iter().map(|c| c.2.clone()).collect();
    assert_eq!(
        keys,
        HashSet::from(["acme/again/0/0".to_owned()]),
        "the idempotency key names the call"
    );
}
