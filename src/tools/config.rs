//! Tool settings: what each tool is, who may use it, how it is reached, and the loop's bounds.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use crate::error::ConfigError;
use crate::secrets::ApiKeySettings;

/// Tools the model may call while answering (`generate.tools`), and the bounds of the loop.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// The tools, each offered to the model with its name, description and parameters.
    #[serde(default)]
    pub definitions: Vec<ToolConfig>,
    /// Model turns per question at most; a model still calling tools after them gets no more
    /// and the question fails with the reason (or gets the passages' answer where configured).
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u32,
    /// Tool calls in a row that may fail (unknown tool, arguments against the schema, an error
    /// of the tool) before the loop gives up; each failure goes back to the model with its reason.
    #[serde(default = "default_max_consecutive_failures")]
    pub max_consecutive_failures: u32,
    /// Bound on the whole loop: every model turn and tool call of one question.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Longest tool result handed to the model, in characters; a longer one is cut.
    #[serde(default = "default_max_result_chars")]
    pub max_result_chars: usize,
}

fn default_max_iterations() -> u32 {
    10
}

fn default_max_consecutive_failures() -> u32 {
    3
}

fn default_deadline_ms() -> u64 {
    120_000
}

fn default_max_result_chars() -> usize {
    8_000
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
    #[serde(default)]
    pub tenants: Option<BTreeSet<String>>,
    /// How the tool is reached.
    pub http: HttpToolConfig,
}

fn empty_object_schema() -> Value {
    serde_json::json!({ "type": "object", "properties": {} })
}

/// A tool behind an HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToolConfig {
    /// `GET` (arguments not in the URL go in the query string), `POST`, `PUT` or `PATCH`
    /// (arguments as a JSON body).
    #[serde(default = "default_method")]
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
    #[serde(default = "default_tool_timeout_ms")]
    pub timeout_ms: u64,
    /// Whether calling it twice with the same arguments does no harm. A redelivered question
    /// reads every recorded result back instead of calling again either way; this only says
    /// whether a call whose result was lost before it was recorded may be repeated.
    #[serde(default)]
    pub idempotent: bool,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_tool_timeout_ms() -> u64 {
    30_000
}

impl ToolsConfig {
    /// Appends the problems of the tool settings at `path` to `errors`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.max_iterations == 0 {
            errors.push(ConfigError::new(
                &format!("{path}.max_iterations"),
                "must be at least 1",
            ));
        }
        if self.max_consecutive_failures == 0 {
            errors.push(ConfigError::new(
                &format!("{path}.max_consecutive_failures"),
                "must be at least 1",
            ));
        }
        if self.deadline_ms == 0 {
            errors.push(ConfigError::new(&format!("{path}.deadline_ms"), "must be at least 1"));
        }
        let mut names = BTreeSet::new();
        for (index, tool) in self.definitions.iter().enumerate() {
            let at = format!("{path}.definitions[{index}]");
            tool.validate(&at, errors);
            if !names.insert(tool.name.as_str()) {
                errors.push(ConfigError::new(
                    &format!("{at}.name"),
                    format!("`{}` is defined twice", tool.name),
                ));
            }
        }
    }
}

impl ToolConfig {
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            errors.push(ConfigError::new(
                &format!("{at}.name"),
                "must be 1 to 64 letters, digits, `_` or `-` (what model APIs accept)",
            ));
        }
        if self.parameters.get("type").and_then(Value::as_str) != Some("object") {
            errors.push(ConfigError::new(
                &format!("{at}.parameters"),
                "must be a JSON Schema of `type: object`",
            ));
        } else if let Err(error) = jsonschema::validator_for(&self.parameters) {
            errors.push(ConfigError::new(
                &format!("{at}.parameters"),
                format!("not a valid JSON Schema: {error}"),
            ));
        }
        let http = &self.http;
        if !["GET", "POST", "PUT", "PATCH"].contains(&http.method.as_str()) {
            errors.push(ConfigError::new(
                &format!("{at}.http.method"),
                format!("`{}` is not one of GET, POST, PUT, PATCH", http.method),
            ));
        }
        if let Err(error) = reqwest::Url::parse(&http.url.replace(['{', '}'], "")) {
            errors.push(ConfigError::new(
                &format!("{at}.http.url"),
                format!("not a URL: {error}"),
            ));
        }
        if http.timeout_ms == 0 {
            errors.push(ConfigError::new(&format!("{at}.http.timeout_ms"), "must be at least 1"));
        }
        http.api_key.validate(&format!("{at}.http"), errors);
    }

    /// Whether `tenant` may use this tool.
    pub fn allowed_for(&self, tenant: &str) -> bool {
        self.tenants.as_ref().is_none_or(|tenants| tenants.contains(tenant))
    }
}
