//! OTLP trace export against the real broker: questions through the whole answering chain
//! (a scripted model that calls a tool, a real HTTP tool server), with `telemetry.traces`
//! pointing at an OTLP/HTTP collector in the test that decodes what ragstream sends.

use crate::answering::{answers_for, question, start_adjusted, Setup};
use crate::common::*;
use crate::tools::{order_status_model, tools_block, OrderService, ToolModel};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde_json::json;

/// A span as the collector received it, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

/// An OTLP/HTTP (protobuf) traces endpoint keeping every span it is sent.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = spans.clone();
        let handler = move |body: Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf trace export");
                let mut kept = kept.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            kept.push(Received {
                                service: service.clone(),
                                span,
                            });
                        }
                    }
                }
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::new(),
                )
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let router = Router::new().route("/v1/traces", post(handler));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, spans }
    }

    /// The spans of trace `trace_id` (hex) once `done` holds for them; fails after `timeout`.
    async fn trace(&self, trace_id: &str, timeout: Duration, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|r| hex(&r.span.trace_id) == trace_id)
                .map(|r| r.span.clone())
                .collect();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id} incomplete after {timeout:?}: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            // Waiting for the exporter's next batch (an event in another process), not for
            // time to pass: the loop ends as soon as the spans are there.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(text)) => text.clone(),
        Some(AnyValue::IntValue(n)) => n.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(x)) => x.to_string(),
        Some(AnyValue::ArrayValue(array)) => array
            .values
            .iter()
            .map(|v| text(v.value.as_ref()))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}

/// The span's attributes as text.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|a| (a.key.clone(), text(a.value.as_ref().and_then(|v| v.value.as_ref()))))
        .collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found = named(spans, name);
    assert_eq!(
        found.len(),
        1,
        "one `{name}` span in {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

/// `child` lies inside `parent`: its parent id, and its time within the parent's.
fn assert_child(child: &Span, parent: &Span) {
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{} is a child of {}",
        child.name, parent.name
    );
    assert!(
        child.start_time_unix_nano >= parent.start_time_unix_nano
            && child.end_time_unix_nano <= parent.end_time_unix_nano,
        "{} within {}",
        child.name,
        parent.name
    );
}

const STAGES: [&str; 6] = [
    "decode_question",
    "mask_pii",
    "retrieve",
    "generate",
    "restore_pii",
    "emit_answer",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_question_is_one_trace_with_genai_spans_that_hold_masked_text_only() {
    let collector = Collector::start().await;
    let model = ToolModel::start(order_status_model()).await;
    let orders = OrderService::start(Duration::ZERO).await;
    let mut setup = Setup::openai(&model.url);
    setup.generate_extra = tools_block(&orders.url, "");
    let endpoint = collector.url.clone();
    let running = start_adjusted("traces", setup, &[], move |topology| {
        topology.telemetry_extra = format!(
            "  traces:\n    endpoint: \"{endpoint}\"\n    service_name: ragstream-traces-test\n    capture_content: true"
        );
    })
    .await;

    // Three questions: one continuing its producer's sampled trace, one starting a trace of its
    // own, one whose producer decided not to sample (so nothing of it may be exported).
    let producer_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    let unsampled_trace = "5cf92f3577b34da6a3ce929d0e0e4799";
    let asks = [
        (
            "traced",
            "What is the status of my order number 4711? I am alice.traced@example-shop.io.",
            Some(format!("00-{producer_trace}-{producer_span}-01")),
        ),
        (
            "untraced",
            "What is the status of my order number 4712? I am bob.untraced@example-shop.io.",
            None,
        ),
        (
            "unsampled",
            "What is the status of my order number 4713? I am carol.unsampled@example-shop.io.",
            Some(format!("00-{unsampled_trace}-{producer_span}-00")),
        ),
    ];
    let client = producer();
    for (id, text, traceparent) in &asks {
        let message = question(id, "acme", text, "qa", json!({}));
        let mut headers = OwnedHeaders::new();
        if let Some(traceparent) = traceparent {
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(traceparent.as_str()),
            });
        }
        let record = FutureRecord::to(&running.topology.input)
            .key(&message.key.as_ref().unwrap()[..])
            .payload(&message.payload[..])
            .headers(headers);
        client
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .expect("sent");
    }
    let ids: HashSet<String> = asks.iter().map(|(id, _, _)| id.to_string()).collect();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(90)).await;
    let answer = &answers["traced"];
    assert!(answer
        .answer
        .as_deref()
        .unwrap()
        .contains("alice.traced@example-shop.io"));

    // The answer carries the trace on: same trace id, a span of ragstream's as parent.
    let mut reader = TopicReader::new(&running.topology.output);
    reader
        .read_until(|received| received.len() >= 3, Duration::from_secs(30))
        .await;
    let answer_headers: HashMap<String, Option<String>> = reader
        .received
        .iter()
        .map(|m| {
            (
                String::from_utf8(m.key.clone().unwrap()).unwrap(),
                m.headers.get("traceparent").cloned(),
            )
        })
        .collect();
    let handed_on = answer_headers["traced"].clone().expect("the answer has a traceparent");
    assert!(handed_on.starts_with(&format!("00-{producer_trace}-")), "{handed_on}");
    assert!(
        !handed_on.contains(producer_span),
        "the parent is ragstream's span: {handed_on}"
    );

    let complete = |spans: &[Span]| {
        let names: HashSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        names.contains(format!("process {}", running.topology.input).as_str())
            && names.contains("execute_tool get_order_status")
            && STAGES
                .iter()
                .all(|stage| names.contains(format!("stage {stage}").as_str()))
            && named(spans, "chat primary").len() == 2
    };
    let spans = collector.trace(producer_trace, Duration::from_secs(60), complete).await;

    // The message: a consumer span under the producer's span.
    let root = one(&spans, &format!("process {}", running.topology.input));
    assert_eq!(hex(&root.parent_span_id), producer_span);
    assert_eq!(root.kind, SpanKind::Consumer as i32);
    let root_attributes = attributes(root);
    assert_eq!(root_attributes["messaging.system"], "kafka");
    assert_eq!(root_attributes["messaging.destination.name"], running.topology.input);
    assert_eq!(root_attributes["messaging.consumer.group.name"], running.topology.group);
    assert!(root_attributes.contains_key("messaging.kafka.offset"));
    assert!(
        handed_on.contains(&hex(&root.span_id)),
        "the answer's parent is the message span"
    );

    // Every stage under it, in chain order.
    let mut previous_end = 0;
    for stage in STAGES {
        let span = one(&spans, &format!("stage {stage}"));
        assert_child(span, root);
        assert_eq!(attributes(span)["ragstream.stage"], stage);
        assert_eq!(attributes(span)["ragstream.stage.attempts"], "1");
        assert!(
            span.start_time_unix_nano >= previous_end,
            "{stage} after the stage before"
        );
        previous_end = span.end_time_unix_nano;
    }

    // Retrieval: the question's embedding and the search, under the retrieve stage.
    let retrieve = one(&spans, "stage retrieve");
    let embedding = one(&spans, "embeddings all-MiniLM-L6-v2");
    assert_child(embedding, retrieve);
    let embedding_attributes = attributes(embedding);
    assert_eq!(embedding_attributes["gen_ai.operation.name"], "embeddings");
    assert_eq!(embedding_attributes["gen_ai.provider.name"], "ragstream.local");
    let search = one(&spans, "retrieval chunks");
    assert_child(search, retrieve);
    let search_attributes = attributes(search);
    assert_eq!(search_attributes["gen_ai.operation.name"], "retrieval");
    assert_eq!(search_attributes["gen_ai.data_source.id"], "chunks");
    assert_eq!(search_attributes["ragstream.tenant"], "acme");
    assert!(search_attributes.contains_key("ragstream.retrieval.passages"));

    // The model calls (two turns: the tool call, then the answer) and the tool call, under
    // generate, with GenAI names; their tokens are the answer's.
    let generate = one(&spans, "stage generate");
    let chats = named(&spans, "chat primary");
    let mut tokens = (0u64, 0u64);
    for chat in &chats {
        assert_child(chat, generate);
        assert_eq!(chat.kind, SpanKind::Client as i32);
        let chat_attributes = attributes(chat);
        assert_eq!(chat_attributes["gen_ai.operation.name"], "chat");
        assert_eq!(chat_attributes["gen_ai.provider.name"], "openai");
        assert_eq!(chat_attributes["gen_ai.request.model"], "primary");
        tokens.0 += chat_attributes["gen_ai.usage.input_tokens"].parse::<u64>().unwrap();
        tokens.1 += chat_attributes["gen_ai.usage.output_tokens"].parse::<u64>().unwrap();
        let prompt = &chat_attributes["gen_ai.input.messages"];
        assert!(
            prompt.contains("[EMAIL"),
            "the captured prompt holds the placeholder: {prompt}"
        );
        assert!(chat_attributes.contains_key("gen_ai.output.messages"));
        assert_eq!(chat.status.as_ref().map_or(0, |s| s.code), StatusCode::Unset as i32);
    }
    let usage = &answer.provenance.usage;
    assert_eq!(tokens, (usage.prompt_tokens, usage.completion_tokens));
    let tool = one(&spans, "execute_tool get_order_status");
    assert_child(tool, generate);
    let tool_attributes = attributes(tool);
    assert_eq!(tool_attributes["gen_ai.operation.name"], "execute_tool");
    assert_eq!(tool_attributes["gen_ai.tool.name"], "get_order_status");
    assert_eq!(tool_attributes["gen_ai.tool.call.id"], "call_1");
    assert_eq!(tool_attributes["ragstream.tool.outcome"], "ok");
    assert!(tool_attributes["gen_ai.tool.call.arguments"].contains("[EMAIL"));

    // The question without a traceparent is a trace of its own, rooted at its message span.
    let untraced = answer_headers["untraced"]
        .clone()
        .expect("a traceparent on every traced answer");
    let untraced_trace = untraced.split('-').nth(1).unwrap().to_owned();
    assert_ne!(untraced_trace, producer_trace);
    let own = collector
        .trace(&untraced_trace, Duration::from_secs(60), |spans| {
            named(spans, "stage emit_answer").len() == 1
        })
        .await;
    let own_root = one(&own, &format!("process {}", running.topology.input));
    assert!(own_root.parent_span_id.is_empty(), "a root span");

    // After both traces are in, every span the collector got: none of the unsampled trace, none
    // holding a personal value, all under the configured service name.
    let everything = collector.spans.lock().unwrap().clone();
    assert!(
        everything.iter().all(|r| hex(&r.span.trace_id) != unsampled_trace),
        "the producer did not sample that trace"
    );
    for received in &everything {
        assert_eq!(received.service, "ragstream-traces-test");
        for (key, value) in attributes(&received.span) {
            assert!(
                !value.contains("@example-shop.io"),
                "a personal value in span {} attribute {key}: {value}",
                received.span.name
            );
        }
        if let Some(status) = &received.span.status {
            assert!(!status.message.contains("@example-shop.io"));
        }
    }
}
