//! Message contracts: the topics are ragstream's public API.
//!
//! The JSON Schemas in `schemas/` are the single source of truth; they are compiled into the
//! binary and every decoded message is checked against them before the typed structs below are
//! filled, so the schema and the code cannot silently disagree about what is accepted. Their Avro
//! forms, for sinks in the Confluent wire format, are in [`avro`].

pub mod avro;
mod outcome;
mod status;

pub use outcome::StoredOutcome;
pub use status::{StatusEvent, Step};

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{without_values, StageError};

/// Version written to and expected in `schema_version` by this build.
pub const SCHEMA_VERSION: u32 = 1;

/// What every message about one document version carries, from the `documents` topic through
/// chunking and embedding: who it belongs to, which version, and what it says about itself.
/// Flattened into [`Document`] and [`ChunkedDocument`], so the JSON keeps one level.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentHeader {
    pub schema_version: u32,
    pub doc_id: String,
    pub tenant: String,
    pub op: DocumentOp,
    pub version: u64,
    pub title: Option<String>,
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl DocumentHeader {
    /// A header of this build's schema version, without title, source or metadata.
    pub fn new(tenant: impl Into<String>, doc_id: impl Into<String>, op: DocumentOp, version: u64) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            doc_id: doc_id.into(),
            tenant: tenant.into(),
            op,
            version,
            title: None,
            source: None,
            metadata: BTreeMap::new(),
        }
    }
}

/// A document upsert or delete (topic `documents`, key `doc_id`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    #[serde(flatten)]
    pub header: DocumentHeader,
    pub text: Option<String>,
}

/// What a document message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentOp {
    Upsert,
    Delete,
}

/// A question (topic `questions`, key `request_id`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    pub schema_version: u32,
    pub request_id: String,
    pub tenant: String,
    pub user: String,
    pub question: String,
    pub task: Task,
    pub options: Option<QuestionOptions>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The kind of work a question asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Qa,
    Summarize,
    Extract,
    Report,
}

impl Task {
    /// The snake-case name used in messages, topologies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Qa => "qa",
            Task::Summarize => "summarize",
            Task::Extract => "extract",
            Task::Report => "report",
        }
    }
}

/// Per-request options of a question.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuestionOptions {
    pub top_k: Option<u32>,
    pub model_tier: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub stream: Option<bool>,
    /// Only passages of documents indexed at or after this time (RFC 3339) are retrieved: what
    /// changed since a schedule's last run.
    pub changed_since: Option<String>,
    pub extract_schema: Option<Value>,
}

/// A document cut into chunks (the output of the `chunk` stage), ready to embed and index.
/// A delete carries no chunks. Key: `doc_id`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkedDocument {
    #[serde(flatten)]
    pub header: DocumentHeader,
    /// Name of the model that embedded the chunks, once the `embed` stage has run.
    pub embedding_model: Option<String>,
    pub chunks: Vec<DocumentChunk>,
}

/// One chunk of a document.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentChunk {
    /// `{doc_id}:{version}:{position}`: the same document version always yields the same ids,
    /// so reprocessing after a redelivery overwrites instead of duplicating.
    pub chunk_id: String,
    pub position: u32,
    /// Text to embed: the heading context, a blank line, the body.
    pub text: String,
    /// `Title > Section > Subsection` of the chunk.
    pub context: String,
    /// Tokens of `text` in the embedding model's tokenizer (special tokens excluded).
    pub token_count: u32,
    /// The embedding of `text`, once the `embed` stage has run.
    pub vector: Option<Vec<f32>>,
}

/// How a question ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerStatus {
    /// Answered.
    Ok,
    /// Answered with the best sentences of the passages, not by a model: no model answered, or
    /// the model's reply was not an answer (`fallback_reason` says which).
    Extractive,
    /// The model's reply is kept but is not an answer the passages support (`reason` says why).
    LowConfidence,
    /// Nothing in the tenant's documents was relevant enough; no model was called.
    NoContext,
    /// The tenant's PII policy refused the question.
    Blocked,
    /// Every model failed, or the answer was invalid (`reason` says which).
    Failed,
    /// A budget would be exceeded.
    BudgetExceeded,
    /// A rate limit would be exceeded.
    RateLimited,
}

impl AnswerStatus {
    /// The snake-case name used in messages and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerStatus::Ok => "ok",
            AnswerStatus::Extractive => "extractive",
            AnswerStatus::LowConfidence => "low_confidence",
            AnswerStatus::NoContext => "no_context",
            AnswerStatus::Blocked => "blocked",
            AnswerStatus::Failed => "failed",
            AnswerStatus::BudgetExceeded => "budget_exceeded",
            AnswerStatus::RateLimited => "rate_limited",
        }
    }
}

/// A passage an answer cites.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// The `[n]` the answer cites.
    pub index: u32,
    pub doc_id: String,
    pub chunk_id: String,
    pub title: Option<String>,
    pub score: f32,
}

/// Tokens a question consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// How an answer came about, declared once for the answer message, the draft, the stored
/// outcome and the audit event: each carries it flattened, so their JSON stays flat.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Why the status is what it is (a failure, a refusal, a low-confidence reply…).
    pub reason: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// The API it was reached through (OpenTelemetry's `gen_ai.provider.name`): `openai`,
    /// `anthropic` or `ragstream.local`.
    pub provider: Option<String>,
    /// Why the answer is extractive: no model answered, or the model's reply was not an answer.
    pub fallback_reason: Option<String>,
    /// Why the models asked were chosen (tier, downgrade, cache hit, replay).
    pub route: Option<String>,
    #[serde(default)]
    pub usage: TokenUsage,
    #[serde(default)]
    pub cost_usd: f64,
    /// Answered from the response cache: no model call, no cost.
    #[serde(default)]
    pub cached: bool,
}

/// The answer to a question (topic `answers`, key `request_id`; `schemas/answers.schema.json`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub schema_version: u32,
    pub request_id: String,
    pub tenant: String,
    pub user: String,
    pub task: Task,
    pub status: AnswerStatus,
    pub answer: Option<String>,
    pub data: Option<Value>,
    pub citations: Vec<Citation>,
    #[serde(flatten)]
    pub provenance: Provenance,
    pub latency_ms: f64,
    pub created_at: String,
}

/// A piece of an answer while a model writes it (the sink `generate.partials_sink` names, key
/// `request_id`; `schemas/partial_answers.schema.json`). Progress for a user watching, not the
/// result: the message on the answers topic is the answer. The `delta`s of one
/// `(model, attempt)` in `seq` order make up the text so far; a partial with a new
/// `(model, attempt)` starts over, because the attempt before it failed. Personal data is
/// restored, as in the answer.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialAnswer {
    pub schema_version: u32,
    pub request_id: String,
    pub tenant: String,
    /// 0, 1, 2… per question, across attempts.
    pub seq: u64,
    pub model: String,
    /// 1 for a model's first call, 2 for its first retry…
    pub attempt: u32,
    /// The text that follows the previous partial of the same attempt.
    pub delta: String,
    /// Set on the last partial of the attempt that answered.
    pub done: bool,
    /// The tool the model is calling (such a partial carries no text): progress for a user
    /// waiting while the answer depends on a tool.
    pub calling: Option<String>,
}

/// A chunk found for a question, as the answering stages pass it on.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievedPassage {
    pub chunk_id: String,
    pub doc_id: String,
    pub title: Option<String>,
    /// The chunk's text with personal data masked (when `mask_pii` runs before retrieval).
    pub text: String,
    /// Cosine similarity to the question (1 is identical).
    pub score: f32,
}

/// One call to a model, as the audit event records it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAttempt {
    pub model: String,
    /// 1 for the first call to this model.
    pub attempt: u32,
    /// `ok`, or the error kind (`rate_limited`, `server`, `timeout`, `connection`, `malformed`,
    /// `rejected`, `circuit_open`, `local`).
    pub outcome: String,
    pub status: Option<u16>,
    /// Wait before this call (backoff or Retry-After).
    pub waited_ms: f64,
    pub latency_ms: f64,
}

/// One tool call of a question, as the draft and the audit keep it: personal data masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolUse {
    /// The model turn that made the call (0 for the first).
    pub iteration: u32,
    /// The call's position among the calls of its turn.
    pub index: u32,
    pub tool: String,
    /// The arguments as the model wrote them (JSON text): placeholders, never real values.
    pub masked_arguments: String,
    /// The result, or why there is none, as the model read it: personal data masked.
    pub masked_result: String,
    /// `ok`, `unknown_tool`, `not_allowed`, `invalid_arguments`, `timeout` or `failed`.
    pub outcome: String,
    pub latency_ms: f64,
    /// Read back from the records of an earlier delivery: the tool was not called again.
    pub replayed: bool,
}

/// A question on its way through the answering stages (between `mask_pii` and `emit_answer`).
/// The question text is masked; the originals of its placeholders stay in the message
/// context, so this struct can be logged or produced without leaking personal data.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerDraft {
    pub schema_version: u32,
    pub request_id: String,
    pub tenant: String,
    pub user: String,
    pub task: Task,
    /// The question with personal data replaced by placeholders.
    pub question: String,
    pub options: Option<QuestionOptions>,
    /// Personal data masked in the question, per kind label.
    #[serde(default)]
    pub pii_counts: BTreeMap<String, u32>,
    /// Personal data masked in the retrieved passages, per kind label.
    #[serde(default)]
    pub context_pii_counts: BTreeMap<String, u32>,
    #[serde(default)]
    pub passages: Vec<RetrievedPassage>,
    /// Set once the outcome is decided; later stages leave a decided draft alone.
    pub status: Option<AnswerStatus>,
    /// The answer, placeholders still in until `restore_pii`.
    pub answer: Option<String>,
    pub data: Option<Value>,
    #[serde(default)]
    pub citations: Vec<Citation>,
    #[serde(flatten)]
    pub provenance: Provenance,
    #[serde(default)]
    pub attempts: Vec<ModelAttempt>,
    /// Placeholders in the answer that the request never handed out (set by `restore_pii`).
    #[serde(default)]
    pub invented_placeholders: u32,
    /// The tools the model called, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolUse>,
    /// The masked question's embedding (set by `retrieve`), for the semantic response cache
    /// and the meaning ranker of the passages' answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub question_vector: Vec<f32>,
    /// What `question_vector` came from (model and settings): only a ranker using the same
    /// model may reuse it.
    pub question_vector_model: Option<String>,
}

impl AnswerDraft {
    /// Settles the outcome (first decision wins).
    pub fn decide(&mut self, status: AnswerStatus, reason: Option<String>) {
        if self.status.is_none() {
            self.status = Some(status);
            self.provenance.reason = reason;
        }
    }

    /// Takes a decision back (a `no_context` that the tools may still answer).
    pub fn reopen(&mut self) {
        self.status = None;
        self.provenance.reason = None;
    }

    /// Whether a stage already settled the outcome.
    pub fn is_decided(&self) -> bool {
        self.status.is_some()
    }

    /// The draft of a question nothing has been decided for yet.
    pub fn new(tenant: &str, request_id: &str, user: &str, task: Task, masked_question: &str) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            request_id: request_id.to_owned(),
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            task,
            question: masked_question.to_owned(),
            options: None,
            pii_counts: BTreeMap::new(),
            context_pii_counts: BTreeMap::new(),
            passages: Vec::new(),
            status: None,
            answer: None,
            data: None,
            citations: Vec::new(),
            provenance: Provenance::default(),
            attempts: Vec::new(),
            invented_placeholders: 0,
            tool_calls: Vec::new(),
            question_vector: Vec::new(),
            question_vector_model: None,
        }
    }

    /// The draft of a question that failed before an answer could be prepared.
    pub fn failed(tenant: &str, request_id: &str, user: &str, task: Task, masked_question: &str, reason: &str) -> Self {
        let mut draft = Self::new(tenant, request_id, user, task, masked_question);
        draft.decide(AnswerStatus::Failed, Some(reason.to_owned()));
        draft
    }

    /// The answers-topic message for this draft, `latency_ms` after the question arrived. A
    /// draft no stage decided says so (a chain without `generate`) instead of passing for ok.
    pub fn into_answer(self, latency_ms: f64) -> Answer {
        let mut provenance = self.provenance;
        let status = self.status.unwrap_or_else(|| {
            provenance.reason = Some("the pipeline has no stage that answers (generate)".to_owned());
            AnswerStatus::Failed
        });
        Answer {
            schema_version: SCHEMA_VERSION,
            request_id: self.request_id,
            tenant: self.tenant,
            user: self.user,
            task: self.task,
            status,
            answer: self.answer,
            data: self.data,
            citations: self.citations,
            provenance,
            latency_ms,
            created_at: now_rfc3339(),
        }
    }
}

/// Now, as every contract writes a time: RFC 3339, UTC, milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A duration in milliseconds, rounded to microseconds: enough for latency analysis, short in JSON.
pub fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// One accessor per embedded schema, each compiled once on first use.
macro_rules! contracts {
    ($($(#[$doc:meta])* $accessor:ident: $name:literal from $file:literal;)*) => {
        $(
            $(#[$doc])*
            pub fn $accessor() -> &'static Contract {
                static CONTRACT: LazyLock<Contract> =
                    LazyLock::new(|| Contract::compile($name, include_str!(concat!("../../schemas/", $file))));
                &CONTRACT
            }
        )*
    };
}

/// A compiled JSON Schema plus the name used in error messages.
pub struct Contract {
    name: &'static str,
    validator: jsonschema::Validator,
    /// Every property name the schema declares, anywhere in it: the parts of a field's path that
    /// are the contract's words. Any other part (a `metadata` key) is the message's, and may be
    /// personal data.
    declared: HashSet<String>,
}

/// How many schema violations are listed in a dead-letter reason before it is cut short.
const MAX_REPORTED_VIOLATIONS: usize = 5;

impl Contract {
    fn compile(name: &'static str, schema_text: &str) -> Self {
        // The schemas are compiled into the binary and covered by unit tests, so failing
        // here is a build defect, not a runtime condition.
        let schema: Value = serde_json::from_str(schema_text).expect("embedded schema is valid JSON");
        let validator = jsonschema::validator_for(&schema).expect("embedded schema compiles");
        let mut declared = HashSet::new();
        declared_names(&schema, &mut declared);
        Self {
            name,
            validator,
            declared,
        }
    }

    contracts! {
        /// The documents contract (`schemas/documents.schema.json`).
        documents: "document" from "documents.schema.json";
        /// The questions contract (`schemas/questions.schema.json`).
        questions: "question" from "questions.schema.json";
        /// The answers contract (`schemas/answers.schema.json`).
        answers: "answer" from "answers.schema.json";
        /// The partial answers contract (`schemas/partial_answers.schema.json`).
        partial_answers: "partial answer" from "partial_answers.schema.json";
        /// The status contract (`schemas/status.schema.json`): the steps a question goes through.
        status: "status event" from "status.schema.json";
        /// The audit contract (`schemas/audit.schema.json`): what ragstream writes to the audit topic.
        audit: "audit event" from "audit.schema.json";
    }

    /// Every way `value` breaks the schema, each with the path of the offending field. With
    /// `show_values` false nothing of the message's own is shown: the field's value is replaced
    /// by `value`, path parts the schema does not declare (a `metadata` key) by `*`, and
    /// unexpected properties are counted, not named. These reasons go into dead-letter headers
    /// and logs, and any of those may be personal data.
    fn violations(&self, value: &Value, show_values: bool) -> Vec<String> {
        self.validator
            .iter_errors(value)
            .map(|error| {
                let at = error.instance_path().to_string();
                if show_values {
                    format!("{}: {error}", root_if_empty(at))
                } else {
                    format!("{}: {}", root_if_empty(self.declared_path(&at)), masked(&error))
                }
            })
            .collect()
    }

    /// `path` (a JSON pointer into a message) with every part the schema does not declare
    /// replaced by `*`. Array positions go too: none of the validated contracts has an array,
    /// so a part of digits is a map key (a phone number, say).
    fn declared_path(&self, path: &str) -> String {
        path.split('/')
            .map(|part| {
                if part.is_empty() || self.declared.contains(part) {
                    part
                } else {
                    "*"
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Checks a message ragstream is about to write (used by tests to keep code and schema in step).
    pub fn validate(&self, value: &Value) -> Result<(), String> {
        let violations = self.violations(value, true);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} does not match its schema: {}",
                self.name,
                violations.join("; ")
            ))
        }
    }

    /// Decodes raw bytes: UTF-8, then JSON, then the schema, then the typed struct. Every failure
    /// is the input's fault and says precisely what is wrong, without quoting the values it
    /// found (a reason is a dead-letter header).
    pub fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<(T, Value), StageError> {
        let text = std::str::from_utf8(bytes).map_err(|error| {
            StageError::input(format!(
                "payload is not valid UTF-8 (invalid byte at offset {})",
                error.valid_up_to()
            ))
        })?;
        // serde_json's syntax errors name a position, never the text found there, and its
        // recursion limit (128) bounds how deep a message may nest.
        let mut value: Value = serde_json::from_str(text)
            .map_err(|error| StageError::input(format!("payload is not valid JSON: {error}")))?;
        let violations = self.violations(&value, false);
        if !violations.is_empty() {
            let shown = violations
                .iter()
                .take(MAX_REPORTED_VIOLATIONS)
                .cloned()
                .collect::<Vec<_>>();
            let more = violations.len().saturating_sub(MAX_REPORTED_VIOLATIONS);
            let suffix = if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            };
            return Err(StageError::input(format!(
                "{} does not match its schema: {}{suffix}",
                self.name,
                shown.join("; ")
            )));
        }
        integral_floats_as_integers(&mut value);
        // Still possible: an integer the schema allows but no Rust integer holds (`1e20`). The
        // sender's message, not our bug: dead-lettered, not a reason to stop the pipeline.
        let typed = serde_json::from_value(value.clone()).map_err(|error| {
            StageError::input(format!(
                "{} does not fit its typed contract: {}",
                self.name,
                without_values(&error.to_string())
            ))
        })?;
        Ok((typed, value))
    }
}

/// `/` for the path of the message itself.
fn root_if_empty(path: String) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path
    }
}

/// `error` without the message's values: jsonschema's masked form, except that it names
/// unexpected properties, whose names are the message's too.
fn masked(error: &jsonschema::ValidationError<'_>) -> String {
    match error.kind() {
        jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
            format!(
                "Additional properties are not allowed ({} unexpected)",
                unexpected.len()
            )
        }
        _ => error.masked().to_string(),
    }
}

/// Adds every property name `schema` declares, at any depth, to `names`.
fn declared_names(schema: &Value, names: &mut HashSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                names.extend(properties.keys().cloned());
            }
            map.values().for_each(|value| declared_names(value, names));
        }
        Value::Array(items) => items.iter().for_each(|item| declared_names(item, names)),
        _ => {}
    }
}

/// JSON Schema counts `2.0` and `1e2` as integers and serde does not: such numbers become the
/// integers they are, so that a message its schema accepts is not refused by the typed contract.
/// (Nesting is bounded: serde_json parses at most 128 levels deep.)
fn integral_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            let integer = number.as_f64().filter(|_| number.is_f64()).and_then(exact_integer);
            if let Some(integer) = integer {
                *value = integer;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// `float` as a JSON integer, when it is one that `u64` or `i64` holds exactly.
fn exact_integer(float: f64) -> Option<Value> {
    const TWO_TO_THE_64: f64 = 18_446_744_073_709_551_616.0;
    const TWO_TO_THE_63: f64 = 9_223_372_036_854_775_808.0;
    if float.fract() != 0.0 {
        None
    } else if (0.0..TWO_TO_THE_64).contains(&float) {
        Some(Value::from(float as u64))
    } else if (-TWO_TO_THE_63..0.0).contains(&float) {
        Some(Value::from(float as i64))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<(Document, Value), StageError>) -> String {
        result.expect_err("should be rejected").reason
    }

    #[test]
    fn a_schema_error_names_the_field_and_not_its_value() {
        let bytes = br#"{"schema_version":1,"doc_id":"d1","tenant":"ada.lovelace@example.org","op":"upsert","version":"v-ada.lovelace@example.org","text":"hello"}"#;
        let reason = reason(Contract::documents().decode::<Document>(bytes));
        assert!(reason.contains("/tenant") && reason.contains("/version"), "{reason}");
        assert!(
            !reason.contains("ada.lovelace"),
            "a personal value in the reason: {reason}"
        );
    }

    #[test]
    fn names_of_the_messages_own_are_left_out_of_schema_errors() {
        // An unexpected property and a metadata key, each named with personal data.
        let bytes = br#"{"schema_version":1,"doc_id":"d1","tenant":"acme","op":"upsert","version":1,"text":"t",
            "ada.lovelace@example.org":"x","metadata":{"+44 20 7946 0958":{"nested":true},"4915112345678":7}}"#;
        let document = reason(Contract::documents().decode::<Document>(bytes));
        assert!(!document.contains("ada.lovelace"), "{document}");
        assert!(
            !document.contains("7946") && !document.contains("4915112345678"),
            "{document}"
        );
        assert!(
            document.contains("/: Additional properties are not allowed (1 unexpected)"),
            "{document}"
        );
        assert!(
            document.contains("/metadata/*: value is not of type \"string\""),
            "{document}"
        );
        let options = br#"{"schema_version":1,"request_id":"r1","tenant":"acme","user":"u","question":"q","task":"qa",
            "options":{"ada@example.org":1}}"#;
        let question = Contract::questions().decode::<Question>(options).unwrap_err().reason;
        assert_eq!(
            question,
            "question does not match its schema: /options: Additional properties are not allowed (1 unexpected)"
        );
    }

    #[test]
    fn integers_written_as_floats_are_integers_and_too_large_ones_are_the_inputs_fault() {
        // JSON Schema accepts `1.0` where it asks for an integer (and the constant 1): so must
        // the typed contract.
        let bytes = br#"{"schema_version":1.0,"doc_id":"d1","tenant":"acme","op":"upsert","version":2e0,"text":"t"}"#;
        let (document, value): (Document, Value) = Contract::documents().decode(bytes).unwrap();
        assert_eq!((document.header.schema_version, document.header.version), (1, 2));
        assert_eq!(value["version"], serde_json::json!(2));
        let question = br#"{"schema_version":1,"request_id":"r1","tenant":"acme","user":"u","question":"q","task":"qa",
            "options":{"top_k":3.0,"max_output_tokens":64.0}}"#;
        let (question, _): (Question, Value) = Contract::questions().decode(question).unwrap();
        assert_eq!(question.options.unwrap().top_k, Some(3));
        // An integer no u64 holds: dead-lettered (an input fault), never a reason to stop.
        let huge = br#"{"schema_version":1,"doc_id":"d1","tenant":"acme","op":"upsert","version":4.9151123456789e25,"text":"t"}"#;
        let error = Contract::documents().decode::<Document>(huge).unwrap_err();
        assert_eq!(error.fault, crate::error::Fault::Input);
        assert_eq!(
            error.reason,
            "document does not fit its typed contract: invalid type: floating point value, expected u64"
        );
        assert_eq!(exact_integer(-3.0), Some(serde_json::json!(-3)));
        assert_eq!(exact_integer(0.5), None);
        assert_eq!(exact_integer(18_446_744_073_709_551_616.0), None);
    }

    #[test]
    fn json_errors_name_a_position_not_the_text_and_nesting_is_bounded() {
        let documents = Contract::documents();
        let broken = br#"{"doc_id": "ada@example.org" "tenant": "Ada Lovelace"}"#;
        let syntax = reason(documents.decode(broken));
        assert!(
            syntax.starts_with("payload is not valid JSON: expected `,` or `}`"),
            "{syntax}"
        );
        assert!(!syntax.contains("ada") && !syntax.contains("Ada"), "{syntax}");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let nesting = reason(documents.decode(deep.as_bytes()));
        assert!(nesting.contains("recursion limit exceeded"), "{nesting}");
        let lone_surrogate = br#"{"doc_id": "\ud800 ada@example.org"}"#;
        let escape = reason(documents.decode(lone_surrogate));
        assert!(escape.starts_with("payload is not valid JSON: "), "{escape}");
        assert!(!escape.contains("ada"), "{escape}");
    }

    #[test]
    fn accepts_a_valid_document() {
        let bytes = br#"{"schema_version":1,"doc_id":"d1","tenant":"acme","op":"upsert","version":3,"text":"hello","metadata":{"lang":"en"}}"#;
        let (document, _): (Document, Value) = Contract::documents().decode(bytes).unwrap();
        assert_eq!(document.header.doc_id, "d1");
        assert_eq!(document.header.op, DocumentOp::Upsert);
        assert_eq!(document.header.metadata["lang"], "en");
    }

    #[test]
    fn a_delete_needs_no_text() {
        let bytes = br#"{"schema_version":1,"doc_id":"d1","tenant":"acme","op":"delete","version":4}"#;
        assert!(Contract::documents().decode::<Document>(bytes).is_ok());
    }

    #[test]
    fn rejects_invalid_utf8_invalid_json_and_schema_violations() {
        let documents = Contract::documents();
        assert_eq!(
            reason(documents.decode(b"{\"a\": \"\xff\"}")),
            "payload is not valid UTF-8 (invalid byte at offset 7)"
        );
        assert!(reason(documents.decode(b"{not json")).starts_with("payload is not valid JSON: "));
        let missing = reason(documents.decode(br#"{"schema_version":1,"doc_id":"d1","op":"upsert","version":1}"#));
        assert!(missing.contains("\"tenant\" is a required property"), "{missing}");
        assert!(missing.contains("\"text\" is a required property"), "{missing}");
        let wrong_op =
            reason(documents.decode(br#"{"schema_version":1,"doc_id":"d1","tenant":"t","op":"merge","version":1}"#));
        assert!(
            wrong_op.starts_with("document does not match its schema: /op: "),
            "{wrong_op}"
        );
    }

    #[test]
    fn accepts_a_valid_question_and_rejects_an_unknown_task() {
        let questions = Contract::questions();
        let ok = br#"{"schema_version":1,"request_id":"r1","tenant":"acme","user":"u","question":"why?","task":"qa","options":{"top_k":4}}"#;
        let (question, _): (Question, Value) = questions.decode(ok).unwrap();
        assert_eq!(question.options.unwrap().top_k, Some(4));
        let bad =
            br#"{"schema_version":1,"request_id":"r1","tenant":"acme","user":"u","question":"why?","task":"poem"}"#;
        assert!(questions.decode::<Question>(bad).is_err());
    }
}
