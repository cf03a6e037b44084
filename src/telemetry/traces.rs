//! OTLP trace export (`telemetry.traces`, off unless configured): one trace per consumed
//! message, continued from the producer's W3C `traceparent` header and handed on in the headers
//! of what the message produces, with a span per stage, per model call (attempt), per question
//! embedding and retrieval, and per tool call. Attribute names follow OpenTelemetry's GenAI and
//! messaging conventions. Spans carry counts, names and outcomes; with `capture_content` they
//! also carry what the model saw and wrote, which is masked text (placeholders, never personal
//! values: the restored answer is never recorded).
//!
//! Spans go through the `opentelemetry` API's global tracer: until [`install`] runs it is a
//! no-op, so the instrumented code costs nothing when tracing is off.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::context::{FutureExt, WithContext};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Status, TraceContextExt, Tracer};
use opentelemetry::{global, Context};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use serde_inline_default::serde_inline_default;

pub use opentelemetry::trace::SpanKind;
pub use opentelemetry::KeyValue;

use crate::error::{ConfigError, Findings, StageError};

/// Name of the instrumentation scope of every span.
const SCOPE: &str = "ragstream";

/// The W3C trace-context headers, replaced on what a traced message produces.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Whether [`install`] has run (spans are recorded and `traceparent` headers written).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Whether spans carry masked prompt, reply and tool texts.
static CAPTURE_CONTENT: AtomicBool = AtomicBool::new(false);

/// Export of spans to an OpenTelemetry collector (or any OTLP/HTTP backend).
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The OTLP/HTTP traces URL, used as given (e.g. `http://otel-collector:4318/v1/traces`).
    /// Unset: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` plus
    /// `/v1/traces`, else `http://localhost:4318/v1/traces`.
    pub endpoint: Option<String>,
    /// Extra HTTP headers of every export (a hosted backend's key: `${VAR}` reads it from the
    /// environment).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `service.name` of the spans.
    #[serde_inline_default("ragstream".to_owned())]
    pub service_name: String,
    /// Share of messages traced, 0 to 1, decided by trace id; a message whose producer already
    /// decided (a sampled `traceparent`) follows that decision.
    #[serde_inline_default(1.0)]
    pub sample_ratio: f64,
    /// Also record the texts of model calls and tool calls (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`, `gen_ai.tool.call.arguments`, `gen_ai.tool.call.result`).
    /// These are the masked texts the model saw: placeholders instead of personal values.
    #[serde_inline_default(false)]
    pub capture_content: bool,
    /// Bound on one export request, in milliseconds.
    #[serde_inline_default(10_000)]
    pub timeout_ms: u64,
}

impl TracesConfig {
    /// Reports every invalid setting under `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if let Some(endpoint) = &self.endpoint {
            match url::Url::parse(endpoint) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => errors.report(
                    path,
                    "endpoint",
                    format!("`{}` is not an http or https URL", url.scheme()),
                ),
                Err(error) => errors.report(path, "endpoint", format!("not a URL ({error})")),
            }
        }
        errors.require_within(path, "sample_ratio", self.sample_ratio, 0.0..=1.0);
        errors.require_nonzero(path, "timeout_ms", self.timeout_ms);
        if self.service_name.trim().is_empty() {
            errors.report(path, "service_name", "must not be empty");
        }
    }
}

/// The exporting tracer; spans still queued are sent when it is shut down.
pub struct Traces {
    provider: SdkTracerProvider,
}

/// Starts exporting spans as `config` says; the returned value sends what is queued when it is
/// shut down. `Err` with why the exporter cannot be built.
pub fn install(config: &TracesConfig) -> Result<Traces, String> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(Duration::from_millis(config.timeout_ms))
        .with_headers(config.headers.clone().into_iter().collect::<HashMap<_, _>>());
    if let Some(endpoint) = &config.endpoint {
        exporter = exporter.with_endpoint(endpoint.clone());
    }
    let exporter = exporter
        .build()
        .map_err(|error| format!("telemetry.traces: cannot build the OTLP exporter: {error}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    global::set_tracer_provider(provider.clone());
    CAPTURE_CONTENT.store(config.capture_content, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Traces { provider })
}

impl Traces {
    /// Sends the spans still queued (bounded by the export timeout) and stops exporting.
    pub async fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        // The batch exporter's thread makes blocking HTTP calls: wait for it off the async workers.
        let provider = self.provider;
        let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = result {
            tracing::warn!(%error, "traces: spans still queued at shutdown may be lost");
        }
    }
}

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether spans carry the masked texts of model and tool calls.
pub fn capture_content() -> bool {
    enabled() && CAPTURE_CONTENT.load(Ordering::Relaxed)
}

fn tracer() -> global::BoxedTracer {
    global::tracer(SCOPE)
}

/// Kafka headers read as a W3C trace-context carrier.
struct HeaderCarrier<'a>(&'a [(String, Vec<u8>)]);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

struct HeaderWriter<'a>(&'a mut Vec<(String, Vec<u8>)>);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value.into_bytes()));
    }
}

/// What the consumption of one message is known by in its trace.
pub struct MessageTrace<'a> {
    pub pipeline: &'a str,
    pub group: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The message's headers (its producer's `traceparent`, if any).
    pub headers: &'a [(String, Vec<u8>)],
}

/// The context of a consumed message: a `process` span, child of the producer's span when the
/// message carries a `traceparent`. Without tracing, an empty context (nothing recorded).
pub fn message_context(message: &MessageTrace<'_>) -> Context {
    if !enabled() {
        return Context::new();
    }
    let parent = TraceContextPropagator::new().extract(&HeaderCarrier(message.headers));
    let tracer = tracer();
    let span = tracer
        .span_builder(format!("process {}", message.topic))
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", message.topic.to_owned()),
            KeyValue::new("messaging.destination.partition.id", message.partition.to_string()),
            KeyValue::new("messaging.consumer.group.name", message.group.to_owned()),
            KeyValue::new("messaging.kafka.offset", message.offset),
            KeyValue::new("ragstream.pipeline", message.pipeline.to_owned()),
        ])
        .start_with_context(&tracer, &parent);
    parent.with_span(span)
}

/// Replaces the trace-context headers of an output with the current span's, so a consumer of
/// the output continues this trace. Nothing changes when tracing is off.
pub fn inject_current(headers: &mut Vec<(String, Vec<u8>)>) {
    if !enabled() {
        return;
    }
    let context = Context::current();
    if !context.span().span_context().is_valid() {
        return;
    }
    headers.retain(|(name, _)| !TRACE_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)));
    TraceContextPropagator::new().inject_context(&context, &mut HeaderWriter(headers));
}

/// Ends the span of `context` with `outcome`: `Ok`, or the error's type and message.
pub fn finish(context: &Context, outcome: Result<(), (&str, &str)>) {
    let span = context.span();
    if let Err((error_type, message)) = outcome {
        span.set_attribute(KeyValue::new("error.type", error_type.to_owned()));
        span.set_status(Status::error(message.to_owned()));
    }
    span.end();
}

/// A child span of the current context, of `kind`, named and described by `describe`, which
/// runs only when spans are exported (no name is formatted for the no-op tracer).
pub fn child(kind: SpanKind, describe: impl FnOnce() -> (String, Vec<KeyValue>)) -> Context {
    let current = Context::current();
    if !enabled() {
        return current;
    }
    let (name, attributes) = describe();
    let tracer = tracer();
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(&tracer, &current);
    current.with_span(span)
}

/// `work`, run with `context` as the current trace context (spans started inside it are its
/// children).
pub fn within<Work: std::future::Future>(context: Context, work: Work) -> WithContext<Work> {
    work.with_context(context)
}

/// Runs `work` inside the span of `context` and ends the span with its outcome (the error's
/// fault as `error.type`; not its reason, which may quote the message).
pub async fn traced<T>(
    context: Context,
    work: impl std::future::Future<Output = Result<T, StageError>>,
) -> Result<T, StageError> {
    let result = within(context.clone(), work).await;
    finish(
        &context,
        result
            .as_ref()
            .map(|_| ())
            .map_err(|error| (error.fault.as_str(), "failed")),
    );
    result
}

/// The span of one stage of `pipeline` for the current message.
pub fn stage(pipeline: &str, stage: &str) -> Context {
    child(SpanKind::Internal, || {
        (
            format!("stage {stage}"),
            vec![
                KeyValue::new("ragstream.pipeline", pipeline.to_owned()),
                KeyValue::new("ragstream.stage", stage.to_owned()),
            ],
        )
    })
}

/// Sets `attribute` on the span of `context` (a count or a name learnt while it ran).
pub fn annotate(context: &Context, attribute: KeyValue) {
    context.span().set_attribute(attribute);
}

/// Sets `name` to `text` on the span of `context` when content is captured; `text` must be
/// masked (what the model saw or wrote).
pub fn annotate_content(context: &Context, name: &'static str, text: impl FnOnce() -> String) {
    if capture_content() {
        context.span().set_attribute(KeyValue::new(name, text()));
    }
}

/// OpenTelemetry GenAI names that several spans use (the others are written where they are
/// set): the operation, the provider (`openai`, `anthropic`, `ragstream.local`) and the model as
/// configured (what answers, metrics and the audit table call it).
pub mod gen_ai {
    pub const OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";

    /// The `gen_ai.operation.name` values of ragstream's spans and metrics.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Operation {
        /// A model call.
        Chat,
        /// A question's embedding.
        Embeddings,
        /// A search of the chunks table.
        Retrieval,
        /// A tool call.
        ExecuteTool,
    }

    impl Operation {
        pub fn name(self) -> &'static str {
            match self {
                Operation::Chat => "chat",
                Operation::Embeddings => "embeddings",
                Operation::Retrieval => "retrieval",
                Operation::ExecuteTool => "execute_tool",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> TracesConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_export_every_message_without_content() {
        let traces = config("{}");
        assert_eq!(traces.endpoint, None);
        assert_eq!(traces.sample_ratio, 1.0);
        assert!(!traces.capture_content);
        assert_eq!(traces.service_name, "ragstream");
        let mut errors = Vec::new();
        traces.validate("telemetry.traces", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn every_invalid_setting_is_reported_at_once() {
        let traces = config("{ endpoint: 'ftp://collector', sample_ratio: 1.5, timeout_ms: 0, service_name: ' ' }");
        let mut errors = Vec::new();
        traces.validate("telemetry.traces", &mut errors);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:?}");
        for field in ["endpoint", "sample_ratio", "timeout_ms", "service_name"] {
            assert!(text.iter().any(|e| e.contains(field)), "{field}: {text:?}");
        }
        let mut errors = Vec::new();
        config("{ endpoint: 'not a url' }").validate("telemetry.traces", &mut errors);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn an_unknown_setting_is_refused() {
        assert!(serde_yaml::from_str::<TracesConfig>("{ endpiont: 'http://x' }").is_err());
    }

    #[test]
    fn without_tracing_nothing_is_recorded_and_headers_stay() {
        assert!(!enabled());
        let headers = vec![(
            "traceparent".to_owned(),
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
        )];
        let context = message_context(&MessageTrace {
            pipeline: "p",
            group: "g",
            topic: "t",
            partition: 0,
            offset: 1,
            headers: &headers,
        });
        assert!(!context.has_active_span());
        let mut out = headers.clone();
        inject_current(&mut out);
        assert_eq!(out, headers);
    }

    #[test]
    fn a_traceparent_header_is_read_from_kafka_headers() {
        let headers = vec![
            ("test-origin".to_owned(), b"x".to_vec()),
            (
                "TraceParent".to_owned(),
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
            ),
        ];
        let parent = TraceContextPropagator::new().extract(&HeaderCarrier(&headers));
        let span = parent.span();
        let context = span.span_context();
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(context.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        let mut written = Vec::new();
        TraceContextPropagator::new().inject_context(&parent, &mut HeaderWriter(&mut written));
        assert_eq!(written[0].0, "traceparent");
        assert_eq!(
            written[0].1,
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec()
        );
    }
}
