//! Function calling through the real broker: a scripted OpenAI-compatible model that calls
//! tools, a real HTTP tool server, and the whole answering chain between them.

use crate::answering::{answers_for, question, start, Running, Setup};
use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use ragstream::contracts::{Answer, AnswerStatus};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use serde_json::{json, Value};
use tokio::sync::watch;

/// What the scripted model does on a turn, from the conversation so far.
pub(crate) type Turn = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// A model server that answers each request with the message `turn` writes; every request body
/// is logged.
pub(crate) struct ToolModel {
    pub(crate) url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

impl ToolModel {
    pub(crate) async fn start(turn: Turn) -> Self {
        Self::start_holding(turn, None).await
    }

    /// [`ToolModel::start`], holding every turn that follows a tool result while `hold` is
    /// true (the held turns are counted in `held`).
    async fn start_holding(turn: Turn, hold: Option<(watch::Receiver<bool>, Arc<AtomicUsize>)>) -> Self {
        let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = bodies.clone();
        let handler = move |body: String| {
            let (turn, log, hold) = (turn.clone(), log.clone(), hold.clone());
            async move {
                log.lock().unwrap().push(body.clone());
                let request: Value = serde_json::from_str(&body).unwrap();
                if let Some((mut gate, held)) = hold.filter(|_| !tool_results(&request).is_empty()) {
                    if *gate.borrow() {
                        held.fetch_add(1, Ordering::SeqCst);
                        while *gate.borrow_and_update() {
                            if gate.changed().await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let message = turn(&request);
                let finish = if message.get("tool_calls").is_some() {
                    "tool_calls"
                } else {
                    "stop"
                };
                if request["stream"] == true {
                    return (
                        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                        streamed(&message, finish),
                    )
                        .into_response();
                }
                Json(json!({
                    "choices": [{ "message": message, "finish_reason": finish }],
                    "usage": { "prompt_tokens": 10, "completion_tokens": 5 }
                }))
                .into_response()
            }
        };
        let url = serve(Router::new().route("/v1/chat/completions", post(handler))).await;
        Self { url, bodies }
    }
}

/// `message` as OpenAI streams it: its text in two pieces, each tool call as a piece naming it
/// and pieces of its arguments, then the finish reason and the usage.
fn streamed(message: &Value, finish: &str) -> String {
    let mut chunks = Vec::new();
    let text = message["content"].as_str().unwrap_or_default();
    let middle = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i);
    for piece in [&text[..middle], &text[middle..]].into_iter().filter(|p| !p.is_empty()) {
        chunks.push(json!({ "choices": [{ "index": 0, "delta": { "content": piece } }] }));
    }
    for (index, call) in message["tool_calls"].as_array().into_iter().flatten().enumerate() {
        chunks.push(json!({ "choices": [{ "index": 0, "delta": { "tool_calls": [{
            "index": index, "id": call["id"], "type": "function",
            "function": { "name": call["function"]["name"], "arguments": "" } }] } }] }));
        let arguments = call["function"]["arguments"].as_str().unwrap();
        let (first, rest) = arguments.split_at(arguments.len() / 2);
        for piece in [first, rest] {
            chunks.push(json!({ "choices": [{ "index": 0, "delta": { "tool_calls": [{
                "index": index, "function": { "arguments": piece } }] } }] }));
        }
    }
    chunks.push(json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": finish }] }));
    chunks.push(json!({ "choices": [], "usage": { "prompt_tokens": 10, "completion_tokens": 5 } }));
    let mut body: String = chunks.iter().map(|chunk| format!("data: {chunk}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    body
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
pub(crate) fn order_status_model() -> Turn {
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
pub(crate) struct OrderService {
    pub(crate) url: String,
    calls: CallLog,
}

impl OrderService {
    pub(crate) async fn start(delay: Duration) -> Self {
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

/// `count` customers asking for their orders' status: `{prefix}-{i}` about order
/// `first_order + i`, each with a personal e-mail of its own.
struct OrderQuestions {
    prefix: &'static str,
    count: usize,
    first_order: usize,
}

impl OrderQuestions {
    fn email(&self, i: usize) -> String {
        format!("{}.customer.{i}@example-shop.io", self.prefix)
    }

    fn id(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    fn ids(&self) -> HashSet<String> {
        (0..self.count).map(|i| self.id(i)).collect()
    }

    async fn produce(&self, topic: &str) {
        let messages = (0..self.count)
            .map(|i| {
                let text = format!(
                    "What is the status of my order number {}? I am {}.",
                    self.first_order + i,
                    self.email(i)
                );
                question(&self.id(i), "acme", &text, "qa", json!({}))
            })
            .collect();
        produce_all(topic, messages).await;
    }

    /// Asks every question through `running` and checks every answer.
    async fn ask_all(&self, running: &Running) {
        self.produce(&running.topology.input).await;
        let answers = answers_for(&running.topology.output, &self.ids(), Duration::from_secs(120)).await;
        self.assert_answered(&answers);
    }

    /// Every answer is `ok`, quotes the tool's status and has its own real e-mail restored.
    fn assert_answered(&self, answers: &HashMap<String, Answer>) {
        for i in 0..self.count {
            let answer = &answers[&self.id(i)];
            assert_eq!(answer.status, AnswerStatus::Ok, "{answer:?}");
            let text = answer.answer.as_deref().unwrap();
            assert!(
                text.contains("in transit") && text.contains(&self.email(i)),
                "the tool's status and the real e-mail restored: {text}"
            );
            assert!(
                answer.citations.is_empty(),
                "an answer resting on the tool's result cites no document: {:?}",
                answer.citations
            );
        }
    }
}

/// Asks `text` as tenant acme's question `id` and waits for its answer.
async fn ask_one(running: &Running, id: &str, text: &str) -> Answer {
    produce_all(
        &running.topology.input,
        vec![question(id, "acme", text, "qa", json!({}))],
    )
    .await;
    let ids: HashSet<String> = [id.to_owned()].into();
    let mut answers = answers_for(&running.topology.output, &ids, Duration::from_secs(60)).await;
    answers.remove(id).expect("the answer")
}

pub(crate) fn tools_block(order_url: &str, extra: &str) -> String {
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
    let asked = OrderQuestions {
        prefix: "order",
        count: 100,
        first_order: 1000,
    };
    let (count, email) = (asked.count, |i: usize| asked.email(i));
    asked.ask_all(&running).await;
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
    let answer = &ask_one(&running, "hang", "What is the status of order 42? I am x@y.io.").await;
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
    let text = "What is the status of my order 77? I am r@e.io.";
    ask_one(&running, "again", text).await;
    produce_all(
        &running.topology.input,
        vec![question("again", "acme", text, "qa", json!({}))],
    )
    .await;
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

/// A tool on the bus: its calls read from `request_topic` by a consumer of the test, which
/// replies with the order's status on the reply topic the call names. Every call is logged.
async fn serve_tool_on_kafka(request_topic: &str, calls: Arc<Mutex<Vec<Value>>>) {
    let consumer = reader(&unique("order-service"));
    consumer.subscribe(&[request_topic]).unwrap();
    let producer = producer();
    tokio::spawn(async move {
        loop {
            let message = consumer.recv().await.unwrap();
            let call: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
            calls.lock().unwrap().push(call.clone());
            let arguments = &call["arguments"];
            let reply = json!({
                "correlation_id": call["correlation_id"],
                "result": { "order_id": arguments["order_id"], "status": "in transit", "contact": arguments["email"] },
            })
            .to_string();
            let key = call["correlation_id"].as_str().unwrap().to_owned();
            producer
                .send(
                    FutureRecord::to(call["reply_topic"].as_str().unwrap())
                        .key(&key)
                        .payload(&reply),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tool_on_kafka_topics_is_answered_by_a_consumer() {
    let model = ToolModel::start(order_status_model()).await;
    let requests = unique("tool-requests");
    let replies = unique("tool-replies");
    create_topics(&[&requests, &replies], 2).await;
    let calls: Arc<Mutex<Vec<Value>>> = Arc::default();
    serve_tool_on_kafka(&requests, calls.clone()).await;
    let mut setup = Setup::openai(&model.url);
    setup.generate_extra = format!(
        ", tools: {{ definitions: [{{ \
           name: get_order_status, description: \"The delivery status of an order\", tasks: [qa], \
           parameters: {{ type: object, required: [order_id, email], properties: {{ \
             order_id: {{ type: integer }}, email: {{ type: string }} }} }}, \
           kafka: {{ request_topic: \"{requests}\", reply_topic: \"{replies}\", timeout_ms: 10000 }} }}] }}"
    );
    let running = start("tools-kafka", setup).await;
    let asked = OrderQuestions {
        prefix: "bus",
        count: 20,
        first_order: 500,
    };
    let (count, email) = (asked.count, |i: usize| asked.email(i));
    asked.ask_all(&running).await;
    // The service on the bus got each call once, with the real e-mail, the correlation id
    // naming the call and the reply topic to answer on.
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), count);
    for i in 0..count {
        let call = calls
            .iter()
            .find(|c| c["request_id"] == format!("bus-{i}"))
            .unwrap_or_else(|| panic!("no call for bus-{i}"));
        assert_eq!(call["tool"], "get_order_status");
        assert_eq!(call["arguments"]["email"], email(i));
        assert_eq!(call["arguments"]["order_id"], 500 + i);
        assert_eq!(call["correlation_id"], format!("acme/bus-{i}/0/0"));
        assert_eq!(call["reply_topic"], replies.as_str());
    }
    let bodies = model.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2 * count);
    assert!(bodies.iter().all(|body| !body.contains("@example-shop.io")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_between_tool_call_and_answer_calls_each_tool_once() {
    // The model's second turn (after the tool's result) is held until released: the process
    // is killed while every question has called its tool and waits for the final answer.
    let (release, gate) = watch::channel(true);
    let held = Arc::new(AtomicUsize::new(0));
    let model = ToolModel::start_holding(order_status_model(), Some((gate, held.clone()))).await;
    let orders = OrderService::start(Duration::ZERO).await;
    let mut setup = Setup::openai(&model.url);
    // Long enough for a held turn; the tool results are recorded in Redis, shared by the
    // process that is killed and the one that takes over.
    setup.models = format!(
        "[{{ name: primary, provider: openai, base_url: \"{}\", model: scripted, timeout_ms: 300000 }}]",
        model.url
    );
    let redis = std::env::var("RAGSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    setup.generate_extra = format!(
        "{}, replay: {{ store: \"{redis}\", key_prefix: \"{}\" }}",
        tools_block(&orders.url, ", deadline_ms: 600000"),
        unique("tools-crash")
    );
    let mut running = start("tools-crash", setup).await;
    let asked = OrderQuestions {
        prefix: "crash",
        count: 50,
        first_order: 2000,
    };
    let count = asked.count;
    asked.produce(&running.topology.input).await;
    // A condition, not a time: every question has its tool result and waits on the model.
    let deadline = Instant::now() + Duration::from_secs(120);
    while held.load(Ordering::SeqCst) < count || orders.calls.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "{} held, {} tool calls:\n{}",
            held.load(Ordering::SeqCst),
            orders.calls.lock().unwrap().len(),
            running.process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.process.kill9();
    release.send(false).unwrap();
    running.process = common::Ragstream::start(&running.topology);
    running.process.wait_ready(Duration::from_secs(60)).await;

    let answers = answers_for(&running.topology.output, &asked.ids(), Duration::from_secs(180)).await;
    asked.assert_answered(&answers);
    // The order service (not idempotent) was called once per question: the process that took
    // over read the recorded results back.
    let calls = orders.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), count, "tool calls: {calls:?}");
    let keys: HashSet<&str> = calls.iter().map(|c| c.2.as_str()).collect();
    assert_eq!(keys.len(), count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_turn_of_the_loop_is_admitted_by_the_budget() {
    // Keeps calling the tool: only the budget stops it.
    let turn: Turn = Arc::new(|request: &Value| {
        let n = tool_results(request).len();
        json!({ "role": "assistant", "content": null, "tool_calls": [call(
            &format!("c{n}"),
            "get_order_status",
            json!({ "order_id": n, "email": "[EMAIL_1]" }),
        )] })
    });
    let model = ToolModel::start(turn).await;
    let orders = OrderService::start(Duration::ZERO).await;
    let redis = std::env::var("RAGSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let mut setup = Setup::openai(&model.url);
    // Prompts free, answers $0.1 a token: a turn is expected to take 16 tokens ($1.60) and
    // takes 5 ($0.50, the scripted server's usage). A $4 day budget admits two turns' estimates.
    setup.models = format!(
        "[{{ name: primary, provider: openai, base_url: \"{}\", model: scripted, timeout_ms: 5000, \
           price: {{ input_per_million: 0, output_per_million: 100000 }} }}]",
        model.url
    );
    setup.generate_extra = format!(
        "{}, max_output_tokens: 16, cost_control: {{ store: \"{redis}\", key_prefix: \"{}\", cache_ttl_s: 0, \
           tenant: {{ cost_usd_per_day: 4 }} }}",
        tools_block(&orders.url, ""),
        unique("tools-budget")
    );
    let running = start("tools-budget", setup).await;
    let answer = &ask_one(&running, "spender", "Where is order 9? I am s@p.io.").await;
    assert_ne!(answer.status, AnswerStatus::Ok, "{answer:?}");
    let reason = answer
        .provenance
        .reason
        .clone()
        .or(answer.provenance.fallback_reason.clone())
        .unwrap_or_default();
    assert!(reason.contains("turn 3 of the tool loop was not admitted"), "{reason}");
    // Two turns were made, each calling the tool once; the third was refused before the model.
    assert_eq!(orders.calls.lock().unwrap().len(), 2);
    assert_eq!(model.bodies.lock().unwrap().len(), 2);
    // Each turn's reservation was settled with what it used: $1 of $4 spent, 3/4 left.
    let metrics = running.process.metrics().await.expect("metrics");
    let left = metric(&metrics, "ragstream_budget_remaining_ratio", &[("tenant", "acme")]);
    assert!((left - 0.75).abs() < 1e-9, "remaining ratio {left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_answers_show_the_tool_being_called() {
    let model = ToolModel::start(order_status_model()).await;
    let orders = OrderService::start(Duration::ZERO).await;
    let mut setup = Setup::openai(&model.url);
    setup.generate_extra = format!("{}, partials_sink: partials", tools_block(&orders.url, ""));
    let running = start("tools-partials", setup).await;
    let answer = ask_one(
        &running,
        "follow",
        "What is the status of my order number 31? I am f.ollower@example-shop.io.",
    )
    .await;
    assert_eq!(answer.status, AnswerStatus::Ok, "{answer:?}");
    // Both turns were asked streaming; the first streamed its call in pieces.
    let bodies = model.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    assert!(bodies
        .iter()
        .all(|b| serde_json::from_str::<Value>(b).unwrap()["stream"] == true));
    let mut reader = TopicReader::new(&running.partials_topic);
    reader
        .read_until(
            |received| {
                received.iter().any(|r| {
                    serde_json::from_slice::<ragstream::contracts::PartialAnswer>(&r.payload).is_ok_and(|p| p.done)
                })
            },
            Duration::from_secs(30),
        )
        .await;
    let partials: Vec<ragstream::contracts::PartialAnswer> = reader
        .received
        .iter()
        .map(|r| {
            let value: Value = serde_json::from_slice(&r.payload).unwrap();
            ragstream::contracts::Contract::partial_answers()
                .validate(&value)
                .unwrap();
            serde_json::from_value(value).unwrap()
        })
        .collect();
    let calling = partials
        .iter()
        .position(|p| p.calling.as_deref() == Some("get_order_status"))
        .expect("a partial says the tool is called");
    assert!(partials[calling].delta.is_empty());
    let text: String = partials[calling..].iter().map(|p| p.delta.as_str()).collect();
    assert!(
        text.contains("in transit") && text.contains("f.ollower@example-shop.io"),
        "the answer streams after the call, personal data restored: {text}"
    );
    assert!(partials.last().unwrap().done);
}
