//! Tools the model may call while it answers: each defined in the topology with a JSON Schema
//! for its arguments and an HTTP endpoint or a pair of Kafka topics behind it.
//!
//! Personal data stays masked end to end: the model only ever sees placeholders, the real values
//! are put back into a call's arguments right before the tool runs, and the tool's result is
//! masked with the request's own vault before the model reads it, so the model can refer to a
//! value by the placeholder it already knows. What a call returned is recorded under
//! (request, turn, call) before the loop goes on, so a redelivered question reads it back
//! instead of calling the tool again.

mod config;
mod http;
mod kafka;
mod records;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use config::{HttpToolConfig, KafkaToolConfig, ToolConfig, ToolsConfig};
pub use records::{RecordedResult, ToolRecords};

use crate::contracts::{millis, AnswerDraft, Task};
use crate::error::StageError;
use crate::llm::{ToolCall, ToolSpec};
use crate::pii::PiiScope;
use crate::secrets::ProviderKey;
use crate::telemetry::metrics::metrics;
use crate::telemetry::traces::gen_ai::{self, Operation};
use crate::telemetry::traces::{self, KeyValue, SpanKind};

/// The tools of one `generate` stage, ready to run.
pub struct Toolbox {
    tools: BTreeMap<String, Tool>,
    /// The clients of the tools on the bus, when there are any.
    kafka: Option<kafka::KafkaTools>,
    records: Option<ToolRecords>,
    pub limits: ToolLimits,
}

/// The loop's bounds (see [`ToolsConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct ToolLimits {
    pub max_iterations: u32,
    pub max_consecutive_failures: u32,
    pub deadline: Duration,
    pub max_result_chars: usize,
}

struct Tool {
    config: ToolConfig,
    schema: jsonschema::Validator,
    /// The client of a tool behind HTTP; none for a tool on the bus.
    http: Option<HttpClient>,
}

struct HttpClient {
    client: reqwest::Client,
    key: ProviderKey,
}

/// Which call of which question: the key its result is recorded under.
#[derive(Debug, Clone)]
pub struct CallSite<'a> {
    pub tenant: &'a str,
    pub task: Task,
    pub request_id: &'a str,
    /// 0 for the model's first turn.
    pub iteration: u32,
    /// Position of the call among the turn's calls.
    pub index: usize,
}

/// What one tool call came to, as the model and the audit see it: personal data masked.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    pub tool: String,
    /// The arguments as the model wrote them (placeholders, never real values).
    pub masked_arguments: String,
    /// The result, or why there is none, as handed to the model (masked).
    pub content: String,
    /// `ok`, `unknown_tool`, `not_allowed`, `invalid_arguments`, `timeout`, `failed`.
    pub outcome: &'static str,
    pub latency_ms: f64,
    /// Read back from the records of an earlier delivery: the tool was not called again.
    pub replayed: bool,
}

impl ToolOutcome {
    pub fn is_ok(&self) -> bool {
        self.outcome == "ok"
    }
}

impl Toolbox {
    /// Compiles the schemas, reads the keys, connects the tools on the bus (with the topology's
    /// shared `kafka` client properties) and the result records (`records`: none when replay
    /// records are off).
    pub async fn build(
        config: &ToolsConfig,
        kafka_properties: &BTreeMap<String, String>,
        records: Option<ToolRecords>,
    ) -> Result<Self, StageError> {
        let mut tools = BTreeMap::new();
        for tool in &config.definitions {
            let schema = jsonschema::validator_for(&tool.parameters).map_err(|error| {
                StageError::internal(format!(
                    "tool `{}`: parameters are not a JSON Schema: {error}",
                    tool.name
                ))
            })?;
            let http = match &tool.http {
                Some(http) => Some(HttpClient {
                    client: crate::llm::http_client(Duration::from_millis(http.timeout_ms))?,
                    key: ProviderKey::load(&http.api_key).await?,
                }),
                None => None,
            };
            tools.insert(
                tool.name.clone(),
                Tool {
                    config: tool.clone(),
                    schema,
                    http,
                },
            );
        }
        let on_the_bus: Vec<&KafkaToolConfig> = config.definitions.iter().filter_map(|t| t.kafka.as_ref()).collect();
        let kafka = if on_the_bus.is_empty() {
            None
        } else {
            Some(kafka::KafkaTools::connect(kafka_properties, on_the_bus).await?)
        };
        Ok(Self {
            tools,
            kafka,
            records,
            limits: ToolLimits {
                max_iterations: config.max_iterations,
                max_consecutive_failures: config.max_consecutive_failures,
                deadline: Duration::from_millis(config.deadline_ms),
                max_result_chars: config.max_result_chars,
            },
        })
    }

    /// Whether the model may call tools for `draft`: its tenant may use one for its task (never
    /// an extraction, whose answer must be JSON).
    pub fn serve(&self, draft: &AnswerDraft) -> bool {
        self.tools
            .values()
            .any(|tool| tool.config.allowed_for(&draft.tenant, draft.task))
    }

    /// The tools `tenant` may use for `task`, as offered to the model.
    pub fn specs_for(&self, tenant: &str, task: Task) -> Vec<ToolSpec> {
        self.tools
            .values()
            .filter(|tool| tool.config.allowed_for(tenant, task))
            .map(|tool| ToolSpec {
                name: tool.config.name.clone(),
                description: tool.config.description.clone(),
                parameters: tool.config.parameters.clone(),
            })
            .collect()
    }

    /// Runs `call` for the question at `site`: its recorded result when an earlier delivery
    /// recorded one, else the tool itself with the arguments' placeholders restored from
    /// `scope`; the result masked with `scope` either way.
    pub async fn run(&self, call: &ToolCall, site: &CallSite<'_>, scope: Option<&PiiScope>) -> ToolOutcome {
        let span = tool_span(call);
        let outcome = traces::within(span.clone(), self.run_traced(call, site, scope)).await;
        traces::annotate(&span, KeyValue::new("ragstream.tool.outcome", outcome.outcome));
        traces::annotate(&span, KeyValue::new("ragstream.tool.replayed", outcome.replayed));
        // What the model wrote and read: placeholders, not the values the tool was called with.
        traces::annotate_content(&span, "gen_ai.tool.call.arguments", || outcome.masked_arguments.clone());
        traces::annotate_content(&span, "gen_ai.tool.call.result", || outcome.content.clone());
        traces::finish(
            &span,
            if outcome.is_ok() {
                Ok(())
            } else {
                Err((outcome.outcome, "the tool call failed"))
            },
        );
        outcome
    }

    async fn run_traced(&self, call: &ToolCall, site: &CallSite<'_>, scope: Option<&PiiScope>) -> ToolOutcome {
        let started = Instant::now();
        let idempotent = self.tools.get(call.name()).is_none_or(|tool| tool.config.idempotent());
        let (outcome, raw, replayed) = match self.recorded(site, call).await {
            Some(recorded) if !recorded.is_started() => (recorded.outcome_name(), recorded.content, true),
            // An earlier delivery called the tool and stopped before its result was recorded:
            // a tool that is not idempotent is not called a second time.
            Some(_) if !idempotent => (
                "failed",
                "error: an earlier delivery of this question called the tool and its result was lost; \
                 the tool is not idempotent, so it is not called again"
                    .to_owned(),
                true,
            ),
            _ => {
                if !idempotent {
                    self.record(site, &RecordedResult::started(call), call).await;
                }
                let (outcome, raw) = self.call(call, site, scope).await;
                self.record(site, &RecordedResult::new(call, outcome, &raw), call).await;
                (outcome, raw, false)
            }
        };
        let content = cut(&raw, self.limits.max_result_chars);
        let content = match scope {
            Some(scope) => scope.mask(&content).0,
            None => content,
        };
        let latency_ms = millis(started.elapsed());
        let metrics = metrics();
        metrics.tool_calls.with_label_values(&[call.name(), outcome]).inc();
        if !replayed {
            metrics
                .tool_call_seconds
                .with_label_values(&[call.name()])
                .observe(latency_ms / 1000.0);
        }
        ToolOutcome {
            tool: call.name().to_owned(),
            masked_arguments: call.arguments().to_owned(),
            content,
            outcome,
            latency_ms,
            replayed,
        }
    }

    /// Records `record` for the call at `site`. A result that cannot be recorded is still used;
    /// the loss is a repeat call after a redelivery, which the warning makes visible.
    async fn record(&self, site: &CallSite<'_>, record: &RecordedResult, call: &ToolCall) {
        if let Some(records) = &self.records {
            if let Err(error) = records.record(site, record).await {
                tracing::warn!(tool = %call.name(), reason = %error.reason, "cannot record a tool call");
            }
        }
    }

    async fn recorded(&self, site: &CallSite<'_>, call: &ToolCall) -> Option<RecordedResult> {
        let records = self.records.as_ref()?;
        match records.read(site).await {
            // The model of a redelivered question may call something else at the same place
            // (a sampling model): only the same call gets the recorded result.
            Ok(Some(recorded)) if recorded.is_for(call) => Some(recorded),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(tool = %call.name(), reason = %error.reason, "cannot read tool result records");
                None
            }
        }
    }

    /// Checks and runs the call: the outcome's name and the raw result or reason.
    async fn call(&self, call: &ToolCall, site: &CallSite<'_>, scope: Option<&PiiScope>) -> (&'static str, String) {
        let Some(tool) = self.tools.get(call.name()) else {
            let known: Vec<&str> = self.tools.keys().map(String::as_str).collect();
            return (
                "unknown_tool",
                format!(
                    "error: there is no tool `{}`; the tools are: {}",
                    call.name(),
                    known.join(", ")
                ),
            );
        };
        if !tool.config.allowed_for(site.tenant, site.task) {
            return (
                "not_allowed",
                format!("error: the tool `{}` is not available here", call.name()),
            );
        }
        let arguments: Value = match serde_json::from_str(if call.arguments().trim().is_empty() {
            "{}"
        } else {
            call.arguments()
        }) {
            Ok(arguments) => arguments,
            Err(error) => {
                return (
                    "invalid_arguments",
                    format!("error: the arguments are not JSON: {error}"),
                )
            }
        };
        let problems: Vec<String> = tool
            .schema
            .iter_errors(&arguments)
            .take(5)
            .map(|error| {
                let at = error.instance_path().to_string();
                format!("{}: {}", if at.is_empty() { "arguments" } else { &at }, error)
            })
            .collect();
        if !problems.is_empty() {
            return (
                "invalid_arguments",
                format!(
                    "error: the arguments do not fit the tool's schema: {}",
                    problems.join("; ")
                ),
            );
        }
        // The tool needs the real values: the model wrote placeholders.
        let arguments = match scope {
            Some(scope) => restore_strings(arguments, scope),
            None => arguments,
        };
        let idempotency_key = format!("{}/{}/{}/{}", site.tenant, site.request_id, site.iteration, site.index);
        let result = match (&tool.http, &tool.config.http, &tool.config.kafka, &self.kafka) {
            (Some(HttpClient { client, key }), Some(http), _, _) => {
                http::call(client, key, http, &arguments, &idempotency_key).await
            }
            (None, _, Some(config), Some(bus)) => {
                let on_the_bus = kafka::KafkaCall {
                    correlation_id: &idempotency_key,
                    tool: call.name(),
                    tenant: site.tenant,
                    request_id: site.request_id,
                };
                bus.call(config, &on_the_bus, &arguments).await
            }
            _ => Err(http::ToolError::Failed("the tool has no backend".to_owned())),
        };
        match result {
            Ok(result) => ("ok", result),
            Err(http::ToolError::Timeout) => (
                "timeout",
                format!("error: the tool did not answer within {} ms", tool.config.timeout_ms()),
            ),
            Err(http::ToolError::Failed(reason)) => ("failed", format!("error: {reason}")),
        }
    }
}

/// `value` with the placeholders in every string restored to the request's real values.
/// The span of one tool call (OpenTelemetry's GenAI `execute_tool {tool}`).
fn tool_span(call: &ToolCall) -> opentelemetry::Context {
    traces::child(SpanKind::Internal, || {
        let name = format!("{} {}", Operation::ExecuteTool.name(), call.name());
        let attributes = vec![
            KeyValue::new(gen_ai::OPERATION_NAME, Operation::ExecuteTool.name()),
            KeyValue::new("gen_ai.tool.name", call.name().to_owned()),
            KeyValue::new("gen_ai.tool.call.id", call.id.clone()),
            KeyValue::new("gen_ai.tool.type", "function"),
        ];
        (name, attributes)
    })
}

fn restore_strings(value: Value, scope: &PiiScope) -> Value {
    match value {
        Value::String(text) => Value::String(scope.restore(&text).text),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| restore_strings(v, scope)).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(name, v)| (name, restore_strings(v, scope)))
                .collect(),
        ),
        other => other,
    }
}

/// `text` cut to `max_chars` characters, saying so.
fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}… (cut at {max_chars} characters)", &text[..end]),
        None => text.to_owned(),
    }
}
