//! LLM providers and what wraps them: prompts, retries, circuit breakers, fallbacks.
//!
//! A provider turns a [`ChatRequest`] into a [`Completion`] or a [`CallError`] that says
//! whether trying again can help. Everything above the providers (retry with backoff, the
//! circuit breaker, the fallback chain) works on that classification only.

mod anthropic;
mod breaker;
mod config;
mod extractive;
pub mod grounding;
mod local;
mod openai;
pub mod pricing;
mod prompt;
mod resilience;
mod sse;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StageError;

pub use anthropic::AnthropicProvider;
pub use breaker::CircuitBreaker;
pub use config::{price_of, provider_of, BreakerConfig, LlmRetryConfig, ModelConfig, ModelProvider, Price};
pub use extractive::{extractive_answer, extractive_answer_by_meaning, Extracted, Meaning};
pub use local::{shared_local_chat_model, LocalChatModel, LocalModelError, LocalProvider};
pub use openai::OpenAiProvider;
pub use prompt::{assemble, citation, estimate_tokens, parse_citations, Passage, Prompt};
pub use resilience::{Answered, CallOutcome, ChainModel, ModelChain, RetryPolicy};

/// Who speaks a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering the assistant's call with the same `tool_call_id`.
    Tool,
}

/// One message of a conversation.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// The tools an assistant message calls (OpenAI's shape; other providers convert).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The assistant's turn that calls `calls` (with any text it wrote beside them).
    pub fn calling(text: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new(Role::Assistant, text)
        }
    }

    /// The result of the call `call_id`.
    pub fn tool_result(call_id: &str, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.to_owned()),
            ..Self::new(Role::Tool, content)
        }
    }
}

/// A tool as offered to a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an object).
    pub parameters: serde_json::Value,
}

/// A model's call of a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id of the call, which the result must name.
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

/// What a [`ToolCall`] calls: the tool and its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as the model wrote them: a JSON object, as text.
    pub arguments: String,
}

fn function_kind() -> String {
    "function".to_owned()
}

impl ToolCall {
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: function_kind(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.function.name
    }

    pub fn arguments(&self) -> &str {
        &self.function.arguments
    }
}

/// What is sent to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// Upper bound on generated tokens.
    pub max_output_tokens: u32,
    /// Sampling temperature; 0 asks for the most likely answer (deterministic where the
    /// provider allows it).
    pub temperature: f32,
    /// Ask the provider for a JSON object (OpenAI `response_format`), where it supports it.
    pub json_output: bool,
    /// Tools the model may call; empty: none.
    pub tools: Vec<ToolSpec>,
}

impl ChatRequest {
    /// `messages` for a text answer of at most `max_output_tokens`, at temperature 0, without tools.
    pub fn new(messages: Vec<ChatMessage>, max_output_tokens: u32) -> Self {
        Self {
            messages,
            max_output_tokens,
            temperature: 0.0,
            json_output: false,
            tools: Vec::new(),
        }
    }
}

/// Tokens a call consumed, as the provider reported them (or counted locally). Read from
/// either provider's response: OpenAI's `prompt_tokens`/`completion_tokens` or Anthropic's
/// `input_tokens`/`output_tokens`; a count the provider left out is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    #[serde(alias = "input_tokens")]
    pub prompt_tokens: u64,
    #[serde(alias = "output_tokens")]
    pub completion_tokens: u64,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The tools the model calls instead of (or beside) answering.
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    /// Why generation stopped (`stop`, `length`…), when the provider says.
    pub finish_reason: Option<String>,
}

/// Why a call failed, in the terms that decide what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallErrorKind {
    /// 429: the provider asks us to slow down (often with `Retry-After`).
    RateLimited,
    /// 5xx: the provider failed.
    Server,
    /// No answer within the per-call timeout.
    Timeout,
    /// Connecting, or the connection broke mid-answer.
    Connection,
    /// An answer we cannot read (not JSON, missing fields).
    Malformed,
    /// 400, 401, 403, 404…: the request or our credentials are wrong; retrying cannot help.
    Rejected,
    /// The circuit breaker is open: the provider is not called at all for a while.
    CircuitOpen,
    /// A local model failed to run.
    Local,
}

impl CallErrorKind {
    /// The snake-case name used in audit events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CallErrorKind::RateLimited => "rate_limited",
            CallErrorKind::Server => "server",
            CallErrorKind::Timeout => "timeout",
            CallErrorKind::Connection => "connection",
            CallErrorKind::Malformed => "malformed",
            CallErrorKind::Rejected => "rejected",
            CallErrorKind::CircuitOpen => "circuit_open",
            CallErrorKind::Local => "local",
        }
    }
}

/// A failed call to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub kind: CallErrorKind,
    /// What happened, without secrets or prompt text.
    pub message: String,
    /// HTTP status, when there was one.
    pub status: Option<u16>,
    /// How long the provider asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl CallError {
    pub fn new(kind: CallErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    /// Whether calling the same model again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            CallErrorKind::RateLimited
                | CallErrorKind::Server
                | CallErrorKind::Timeout
                | CallErrorKind::Connection
                | CallErrorKind::Malformed
        )
    }

    /// The error for an HTTP status that is not a success: 429 and 5xx are the provider's,
    /// everything else is a request the provider will keep rejecting.
    pub fn from_status(status: u16, retry_after: Option<Duration>, detail: &str) -> Self {
        let kind = match status {
            429 => CallErrorKind::RateLimited,
            500..=599 => CallErrorKind::Server,
            _ => CallErrorKind::Rejected,
        };
        Self {
            kind,
            message: format!("provider answered {status}{detail}"),
            status: Some(status),
            retry_after,
        }
    }

    /// A response body that is not what the API sends (`what` names it). serde quotes the
    /// values it trips over, and a response may echo the request (the key, the prompt): they are
    /// left out, as this message reaches answers, audit events and logs.
    pub fn unreadable(what: &str, error: &serde_json::Error) -> Self {
        Self::new(
            CallErrorKind::Malformed,
            format!(
                "unreadable {what}: {}",
                crate::error::without_values(&error.to_string())
            ),
        )
    }

    /// The error for a failed HTTP exchange (no status): timeouts, connection failures, bodies
    /// that broke off. The URL is left out of the message (it may carry a key).
    pub fn from_transport(error: reqwest::Error) -> Self {
        // reqwest reports every failure to read a body as a decode error, a connection closed
        // or reset partway through the body included. Bodies are parsed here, not by reqwest
        // (an unreadable one is `Malformed` there), so what is not a timeout is the connection.
        let kind = if error.is_timeout() {
            CallErrorKind::Timeout
        } else {
            CallErrorKind::Connection
        };
        Self::new(kind, error.without_url().to_string())
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// What a streaming call reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A call to `model` begins; text of any earlier attempt is void.
    Attempt { model: String, attempt: u32 },
    /// The next piece of the answer text of the current attempt.
    Text(String),
    /// The model of the current attempt calls the tool `name` (its arguments still coming).
    Calling(String),
    /// The current attempt failed with `reason`; the same model is asked again after `backoff`.
    Retrying {
        reason: String,
        backoff: std::time::Duration,
    },
}

/// Where a call sends its events. Sending never blocks the call: the receiver drains at its
/// own pace (an unbounded channel: an answer is at most a few thousand pieces).
#[derive(Debug, Clone)]
pub struct DeltaSink {
    sender: tokio::sync::mpsc::UnboundedSender<StreamEvent>,
    /// Whether the models are asked to stream their text; else only attempts, retries and tool
    /// calls are reported.
    streams_text: bool,
}

impl DeltaSink {
    /// A sink for a streaming call and the receiver of what is sent to it.
    pub fn channel() -> (Self, tokio::sync::mpsc::UnboundedReceiver<StreamEvent>) {
        Self::new(true)
    }

    /// A sink that follows a call's attempts, retries and tool calls without streaming its text.
    pub fn observer() -> (Self, tokio::sync::mpsc::UnboundedReceiver<StreamEvent>) {
        Self::new(false)
    }

    fn new(streams_text: bool) -> (Self, tokio::sync::mpsc::UnboundedReceiver<StreamEvent>) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Self { sender, streams_text }, receiver)
    }

    /// Whether the models are asked to stream their text.
    pub fn streams_text(&self) -> bool {
        self.streams_text
    }

    /// Reports the next piece of text (nothing for an empty one).
    pub fn text(&self, piece: &str) {
        if !piece.is_empty() {
            // A receiver that stopped listening only loses progress reports.
            let _ = self.sender.send(StreamEvent::Text(piece.to_owned()));
        }
    }

    /// Reports a completion that came in one piece: its text, then its tool calls.
    pub fn whole(&self, completion: &Completion) {
        self.text(&completion.text);
        for call in &completion.tool_calls {
            self.calling(call.name());
        }
    }

    /// Reports that the model calls the tool `name`.
    pub fn calling(&self, name: &str) {
        let _ = self.sender.send(StreamEvent::Calling(name.to_owned()));
    }

    /// Reports that the attempt failed with `reason` and is tried again after `backoff`.
    fn retrying(&self, reason: String, backoff: std::time::Duration) {
        let _ = self.sender.send(StreamEvent::Retrying { reason, backoff });
    }

    fn attempt(&self, model: &str, attempt: u32) {
        let _ = self.sender.send(StreamEvent::Attempt {
            model: model.to_owned(),
            attempt,
        });
    }
}

/// Tool calls put together from a stream's pieces: each call's id and name when they come,
/// its arguments (JSON text) appended piece by piece, the calls in the order of their index.
#[derive(Debug, Default)]
pub(crate) struct StreamedToolCalls(std::collections::BTreeMap<usize, ToolCall>);

impl StreamedToolCalls {
    /// A piece of the call at `index`; the first piece that names it is reported to `deltas`.
    pub(crate) fn push(
        &mut self,
        index: usize,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
        deltas: &DeltaSink,
    ) {
        let call = self.0.entry(index).or_insert_with(|| ToolCall::new("", "", ""));
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            call.id = id.to_owned();
        }
        if let Some(name) = name.filter(|name| !name.is_empty() && call.function.name.is_empty()) {
            call.function.name = name.to_owned();
            deltas.calling(name);
        }
        if let Some(arguments) = arguments {
            call.function.arguments.push_str(arguments);
        }
    }

    /// The calls, in order (a call without an id gets one from its index).
    pub(crate) fn finish(self) -> Vec<ToolCall> {
        self.0
            .into_iter()
            .map(|(index, mut call)| {
                if call.id.is_empty() {
                    call.id = format!("call_{index}");
                }
                call
            })
            .collect()
    }
}

/// A chat model behind some API, or in-process.
#[async_trait]
pub trait ChatProvider: Send + Sync {
    /// One call, no retries: those are the caller's, so that every attempt is visible.
    async fn complete(&self, request: &ChatRequest) -> Result<Completion, CallError>;

    /// [`complete`](Self::complete), reporting the answer's text to `deltas` as it is produced.
    /// The returned completion holds the whole text. Providers that cannot stream report it in
    /// one piece at the end.
    async fn stream(&self, request: &ChatRequest, deltas: &DeltaSink) -> Result<Completion, CallError> {
        let completion = self.complete(request).await?;
        deltas.whole(&completion);
        Ok(completion)
    }

    /// Tokens `text` takes for this model, when the provider knows its tokenizer (a local
    /// model does); `None` means the caller estimates.
    fn count_tokens(&self, _text: &str) -> Option<usize> {
        None
    }
}

/// An HTTP client whose calls give up after `timeout` (for providers and embedding APIs).
///
/// The timeout is reqwest's total one: it runs from connecting until the last byte of the
/// body, so a server that sends its head and then trickles the body (or an event stream) and
/// never ends it is cut off too. A per-read timeout would not be: every trickled piece would
/// start it again.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, StageError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| StageError::internal(format!("cannot build HTTP client: {e}")))
}

/// One model behind one HTTP endpoint: what every API client (chat, messages, embeddings) holds.
pub struct HttpEndpoint {
    pub client: reqwest::Client,
    /// The full URL of the call.
    pub url: String,
    pub model: String,
    pub key: crate::secrets::ProviderKey,
}

impl HttpEndpoint {
    /// `path` (`/v1/chat/completions`) under the API root `base_url` (a trailing `/` is
    /// dropped); calls give up after `timeout`.
    pub fn new(
        base_url: &str,
        path: &str,
        model: &str,
        key: crate::secrets::ProviderKey,
        timeout: Duration,
    ) -> Result<Self, StageError> {
        Ok(Self {
            client: http_client(timeout)?,
            url: format!("{}{path}", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            key,
        })
    }
}

/// Sends the call `build` prepares with the provider's key (a rotated key is read again after a
/// 401 or 403: [`crate::secrets::ProviderKey::send`]): the response when its status is a
/// success, else the error that the status means (429 and 5xx are retried, with any
/// `Retry-After`; Anthropic's 529 "overloaded" is a 5xx).
async fn send_checked(
    key: &crate::secrets::ProviderKey,
    build: impl Fn(Option<&crate::secrets::Secret>) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, CallError> {
    let response = key.send(build).await.map_err(CallError::from_transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(CallError::from_status(
            status.as_u16(),
            retry_after(response.headers()),
            "",
        ));
    }
    Ok(response)
}

/// The `Retry-After` header in its delay-seconds form (an HTTP date is ignored: the normal
/// backoff applies).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Serves `router` on a free loopback port for a provider test; returns its base URL.
#[cfg(test)]
pub(crate) async fn serve_for_test(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}
