//! Tool settings: what each tool is, who may use it, how it is reached, and the loop's bounds.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use crate::contracts::Task;
use crate::error::ConfigError;
use crate::error::Findings;
use crate::secrets::ApiKeySettings;
use serde_inline_default::serde_inline_default;

/// Tools the model may call while answering (`generate.tools`), and the bounds of the loop.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// The tools, each offered to the model with its name, description and parameters.
    pub definitions: Vec<ToolConfig>,
    /// Model turns per question at most; a model still calling tools after them gets no more
    /// and the question fails with the reason (or gets the passages' answer where configured).
    pub max_iterations: u32,
    /// Tool calls in a row that may fail (unknown tool, arguments against the schema, an error
    /// of the tool) before the loop gives up; each failure goes back to the model with its reason.
    pub max_consecutive_failures: u32,
    /// Bound on the whole loop: every model turn and tool call of one question.
    pub deadline_ms: u64,
    /// Longest tool result handed to the model, in characters; a longer one is cut.
    pub max_result_chars: usize,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            definitions: Default::default(),
            max_iterations: 10,
            max_consecutive_failures: 3,
            deadline_ms: 120_000,
            max_result_chars: 8_000,
        }
    }
}

/// One tool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// The name the model calls it by (letters, digits, `_` and `-`, at most 64).
    pub name: String,
    /// What it does and when to use it, for the model.
    pub description: String,
    /// JSON Schema of its arguments (an object); arguments that fail it go back to the model
    /// and never reach the tool.
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
    /// Tenants that may use it; unset: every tenant.
    pub tenants: Option<BTreeSet<String>>,
    /// Tasks it is offered for (`qa`, `summarize`, `report`; never `extract`, whose answer must
    /// be JSON); unset: every task but `extract`.
    pub tasks: Option<Vec<Task>>,
    /// Reached over HTTP (exactly one of `http` and `kafka`).
    pub http: Option<HttpToolConfig>,
    /// Reached on the bus: a service that reads calls from a topic and writes replies to another.
    pub kafka: Option<KafkaToolConfig>,
}

fn empty_object_schema() -> Value {
    serde_json::json!({ "type": "object", "properties": {} })
}

/// A tool behind an HTTP endpoint.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToolConfig {
    /// `GET` (arguments not in the URL go in the query string), `POST`, `PUT` or `PATCH`
    /// (arguments as a JSON body).
    #[serde_inline_default("GET".to_owned())]
    pub method: String,
    /// The URL; `{name}` is replaced by that argument, percent-encoded
    /// (e.g. `http://orders:8080/orders/{order_id}`).
    pub url: String,
    /// Extra request headers (values may use `${ENV_VAR}`, as everywhere in a topology).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer …` when set.
    #[serde(flatten)]
    pub api_key: ApiKeySettings,
    /// Bound on one call.
    #[serde_inline_default(30_000)]
    pub timeout_ms: u64,
    /// Whether calling it twice with the same arguments does no harm. A redelivered question
    /// reads every recorded result back instead of calling again either way; this says whether
    /// a call whose result was lost before it was recorded (the process stopped during it) may
    /// be made again. Not idempotent: the call is marked in the records before it is made, and a
    /// redelivery that finds the mark without a result tells the model the call's outcome is
    /// unknown instead of calling again (at most once; one more store write per call).
    #[serde(default)]
    pub idempotent: bool,
}

/// A tool behind a pair of topics: ragstream produces each call to `request_topic` and waits
/// for the reply with the call's correlation id on `reply_topic`.
///
/// A call is a JSON message keyed by its correlation id, with the headers `correlation_id` and
/// `reply_topic`: `{"correlation_id", "reply_topic", "tool", "arguments", "tenant",
/// "request_id"}` (arguments with the real values, as an HTTP tool gets them). The reply is JSON
/// on `reply_topic`: `{"correlation_id": …, "result": …}` (any JSON; a string is used as it is),
/// or `{"correlation_id": …, "error": "why"}`; the correlation id may come as the header
/// `correlation_id` instead. The correlation id is the call's idempotency key
/// (`{tenant}/{request_id}/{turn}/{call}`): a call repeated after a crash has the same one.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaToolConfig {
    /// The topic the tool reads calls from.
    pub request_topic: String,
    /// The topic the tool writes replies to. Every replica reads all of it from the end it found
    /// at start-up and takes the replies to its own calls.
    pub reply_topic: String,
    /// Bound on one call, from producing it to its reply.
    #[serde_inline_default(30_000)]
    pub timeout_ms: u64,
    /// As for an HTTP tool: whether a call lost before its result was recorded may be repeated.
    #[serde(default)]
    pub idempotent: bool,
}

fn default_tool_timeout_ms() -> u64 {
    30_000
}

impl ToolsConfig {
    /// Appends the problems of the tool settings at `path` to `errors`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        errors.require_nonzero(path, "max_iterations", self.max_iterations);
        errors.require_nonzero(path, "max_consecutive_failures", self.max_consecutive_failures);
        errors.require_nonzero(path, "deadline_ms", self.deadline_ms);
        let mut names = BTreeSet::new();
        for (index, tool) in self.definitions.iter().enumerate() {
            let at = format!("{path}.definitions[{index}]");
            tool.validate(&at, errors);
            if !names.insert(tool.name.as_str()) {
                errors.report(at, "name", format!("`{}` is defined twice", tool.name));
            }
        }
    }
}

impl ToolConfig {
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        // What model APIs accept as a function name.
        errors.require_name(at, "name", &self.name);
        if self.parameters.get("type").and_then(Value::as_str) != Some("object") {
            errors.report(at, "parameters", "must be a JSON Schema of `type: object`");
        } else if let Err(error) = jsonschema::validator_for(&self.parameters) {
            errors.report(at, "parameters", format!("not a valid JSON Schema: {error}"));
        }
        if self.tasks.as_ref().is_some_and(|tasks| tasks.contains(&Task::Extract)) {
            errors.report(
                at,
                "tasks",
                "`extract` cannot use tools: its answer must be the JSON the schema asks for",
            );
        }
        match (&self.http, &self.kafka) {
            (Some(http), None) => http.validate(&format!("{at}.http"), errors),
            (None, Some(kafka)) => kafka.validate(&format!("{at}.kafka"), errors),
            _ => errors.push(ConfigError::new(
                at,
                "needs exactly one of `http` and `kafka` (how the tool is reached)",
            )),
        }
    }

    /// Whether the model may use this tool for `task` of `tenant`.
    pub fn allowed_for(&self, tenant: &str, task: Task) -> bool {
        task != Task::Extract
            && self.tenants.as_ref().is_none_or(|tenants| tenants.contains(tenant))
            && self.tasks.as_ref().is_none_or(|tasks| tasks.contains(&task))
    }

    /// Whether calling it twice with the same arguments does no harm.
    pub fn idempotent(&self) -> bool {
        match (&self.http, &self.kafka) {
            (Some(http), _) => http.idempotent,
            (None, Some(kafka)) => kafka.idempotent,
            (None, None) => false,
        }
    }

    /// Bound on one call.
    pub fn timeout_ms(&self) -> u64 {
        match (&self.http, &self.kafka) {
            (Some(http), _) => http.timeout_ms,
            (None, Some(kafka)) => kafka.timeout_ms,
            (None, None) => default_tool_timeout_ms(),
        }
    }
}

impl HttpToolConfig {
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let http = self;
        if !["GET", "POST", "PUT", "PATCH"].contains(&http.method.as_str()) {
            errors.report(
                at,
                "method",
                format!("`{}` is not one of GET, POST, PUT, PATCH", http.method),
            );
        }
        if let Err(error) = reqwest::Url::parse(&http.url.replace(['{', '}'], "")) {
            errors.report(at, "url", format!("not a URL: {error}"));
        }
        errors.require_nonzero(at, "timeout_ms", http.timeout_ms);
        http.api_key.validate(at, errors);
    }
}

impl KafkaToolConfig {
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        for (field, topic) in [
            ("request_topic", &self.request_topic),
            ("reply_topic", &self.reply_topic),
        ] {
            if topic.trim().is_empty() {
                errors.push(ConfigError::new(&format!("{at}.{field}"), "must name a topic"));
            }
        }
        if self.request_topic == self.reply_topic {
            errors.report(
                at,
                "reply_topic",
                "must differ from request_topic (the calls would be read as replies)",
            );
        }
        errors.require_nonzero(at, "timeout_ms", self.timeout_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(yaml: &str) -> ToolConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn problems(config: &ToolsConfig) -> Vec<String> {
        let mut errors = Vec::new();
        config.validate("generate.tools", &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_tool_is_offered_to_its_tenants_and_tasks_only() {
        let tool = tool(
            "{ name: orders, description: d, tenants: [acme], tasks: [qa, report], \
               http: { url: \"http://orders/{id}\" } }",
        );
        assert!(tool.allowed_for("acme", Task::Qa));
        assert!(tool.allowed_for("acme", Task::Report));
        assert!(!tool.allowed_for("acme", Task::Summarize));
        assert!(!tool.allowed_for("globex", Task::Qa));
        let anyone = self::tool("{ name: orders, description: d, http: { url: \"http://orders\" } }");
        assert!(anyone.allowed_for("globex", Task::Summarize));
        assert!(
            !anyone.allowed_for("globex", Task::Extract),
            "extraction answers with JSON only"
        );
    }

    #[test]
    fn every_tool_problem_is_reported_at_once() {
        let config = ToolsConfig {
            definitions: vec![
                tool("{ name: \"bad name\", description: d, tasks: [extract] }"),
                tool(
                    "{ name: both, description: d, http: { url: \"http://x\" }, \
                       kafka: { request_topic: a, reply_topic: b } }",
                ),
                tool(
                    "{ name: bus, description: d, kafka: { request_topic: calls, reply_topic: calls, timeout_ms: 0 } }",
                ),
            ],
            max_iterations: 0,
            ..ToolsConfig::default()
        };
        let problems = problems(&config);
        let expected = [
            "generate.tools.max_iterations",
            "generate.tools.definitions[0].name",
            "generate.tools.definitions[0].tasks",
            "generate.tools.definitions[0]: needs exactly one of `http` and `kafka`",
            "generate.tools.definitions[1]: needs exactly one of `http` and `kafka`",
            "generate.tools.definitions[2].kafka.reply_topic",
            "generate.tools.definitions[2].kafka.timeout_ms",
        ];
        for expected in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} missing from {problems:#?}"
            );
        }
    }
}
