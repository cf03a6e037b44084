//! OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp server, LiteLLM…).

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::sse::SseStream;
use super::{
    estimate_tokens, send_checked, CallError, CallErrorKind, ChatProvider, ChatRequest, Completion, DeltaSink,
    HttpEndpoint, StreamedToolCalls, ToolCall, Usage,
};
use crate::error::StageError;
use crate::secrets::ProviderKey;

/// A client for one `/v1/chat/completions` endpoint and model.
pub struct OpenAiProvider {
    endpoint: HttpEndpoint,
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ResponseMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCall>,
}

/// A streamed piece of a message: text, or pieces of tool calls.
#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallPiece>,
}

/// A piece of a streamed tool call: the first names it, the rest carry its arguments.
#[derive(Deserialize)]
struct ToolCallPiece {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionPiece>,
}

#[derive(Deserialize)]
struct FunctionPiece {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// One `data:` event of a streamed completion.
#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    /// Only on the last chunk, when `stream_options.include_usage` is honoured.
    #[serde(default)]
    usage: Option<Usage>,
    /// Some servers report a failure inside the stream, after a 200.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

impl OpenAiProvider {
    /// `base_url` is the API root (`https://api.openai.com`, `http://127.0.0.1:11434`); the
    /// path `/v1/chat/completions` is added. `timeout` bounds one call.
    pub fn new(base_url: &str, model: &str, key: ProviderKey, timeout: Duration) -> Result<Self, StageError> {
        Ok(Self {
            endpoint: HttpEndpoint::new(base_url, "/v1/chat/completions", model, key, timeout)?,
        })
    }

    fn body(&self, request: &ChatRequest) -> serde_json::Value {
        let mut body = json!({
            "model": self.endpoint.model,
            "messages": request.messages,
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
        });
        if request.json_output {
            body["response_format"] = json!({ "type": "json_object" });
        }
        if !request.tools.is_empty() {
            let tools: Vec<serde_json::Value> = request
                .tools
                .iter()
                .map(|tool| {
                    json!({ "type": "function", "function": {
                        "name": tool.name, "description": tool.description, "parameters": tool.parameters,
                    } })
                })
                .collect();
            body["tools"] = json!(tools);
        }
        body
    }

    /// Sends `body`; the response when its status is a success.
    async fn send(&self, body: &serde_json::Value) -> Result<reqwest::Response, CallError> {
        send_checked(&self.endpoint.key, |key| {
            let call = self.endpoint.client.post(&self.endpoint.url).json(body);
            match key {
                Some(key) => call.bearer_auth(key.expose()),
                None => call,
            }
        })
        .await
    }
}

/// A whole (non-streamed) chat completion.
fn parse_completion(bytes: &[u8]) -> Result<Completion, CallError> {
    let body: Response = serde_json::from_slice(bytes).map_err(|e| CallError::unreadable("chat completion", &e))?;
    let choice = body
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| CallError::new(CallErrorKind::Malformed, "chat completion has no choices"))?;
    Ok(Completion {
        text: choice.message.content.unwrap_or_default(),
        tool_calls: choice.message.tool_calls,
        usage: body.usage.unwrap_or_default(),
        finish_reason: choice.finish_reason,
    })
}

#[async_trait]
impl ChatProvider for OpenAiProvider {
    /// OpenAI's own encoding for OpenAI models (tiktoken); other models served through the
    /// same API are estimated by the caller.
    fn count_tokens(&self, text: &str) -> Option<usize> {
        super::pricing::openai_tokens(&self.endpoint.model, text)
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, CallError> {
        let response = self.send(&self.body(request)).await?;
        let bytes = response.bytes().await.map_err(CallError::from_transport)?;
        parse_completion(&bytes)
    }

    async fn stream(&self, request: &ChatRequest, deltas: &DeltaSink) -> Result<Completion, CallError> {
        let mut body = self.body(request);
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
        let response = self.send(&body).await?;
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        if !streamed {
            // A server that ignores `stream` answers in one piece.
            let bytes = response.bytes().await.map_err(CallError::from_transport)?;
            let completion = parse_completion(&bytes)?;
            deltas.whole(&completion);
            return Ok(completion);
        }
        let mut events = SseStream::new(response);
        let mut text = String::new();
        let mut tool_calls = StreamedToolCalls::default();
        let mut usage = None;
        let mut finish_reason = None;
        let mut saw_done = false;
        while !saw_done {
            let Some(arrived) = events.next_events().await? else {
                break;
            };
            for event in arrived {
                if event.data.trim() == "[DONE]" {
                    saw_done = true;
                    break;
                }
                let chunk: StreamChunk =
                    serde_json::from_str(&event.data).map_err(|e| CallError::unreadable("stream event", &e))?;
                if let Some(error) = chunk.error {
                    let message = error["message"].as_str().unwrap_or("no message");
                    return Err(CallError::new(
                        CallErrorKind::Server,
                        format!("provider reported an error mid-stream: {message}"),
                    ));
                }
                if let Some(reported) = chunk.usage {
                    usage = Some(reported);
                }
                for choice in chunk.choices {
                    if let Some(delta) = choice.delta {
                        if let Some(piece) = delta.content {
                            deltas.text(&piece);
                            text.push_str(&piece);
                        }
                        for (position, piece) in delta.tool_calls.into_iter().enumerate() {
                            let function = piece.function.as_ref();
                            tool_calls.push(
                                piece.index.unwrap_or(position),
                                piece.id.as_deref(),
                                function.and_then(|f| f.name.as_deref()),
                                function.and_then(|f| f.arguments.as_deref()),
                                deltas,
                            );
                        }
                    }
                    finish_reason = choice.finish_reason.or(finish_reason);
                }
            }
        }
        if !saw_done && finish_reason.is_none() {
            return Err(CallError::new(
                CallErrorKind::Connection,
                "the stream broke off before the answer was complete",
            ));
        }
        // Servers that ignore `include_usage` report nothing: an estimate beats counting the
        // call as free.
        let usage = usage.unwrap_or_else(|| Usage {
            prompt_tokens: request
                .messages
                .iter()
                .map(|m| estimate_tokens(&m.content) as u64)
                .sum(),
            completion_tokens: estimate_tokens(&text) as u64,
        });
        Ok(Completion {
            text,
            tool_calls: tool_calls.finish(),
            usage,
            finish_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ChatMessage, Role};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::{Json, Router};

    async fn server(status: u16, body: &'static str) -> String {
        let handler = move |headers: HeaderMap, Json(request): Json<serde_json::Value>| async move {
            assert_eq!(headers["authorization"], "Bearer k");
            assert_eq!(request["messages"][0]["role"], "system");
            let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
            if status == 429 {
                response.headers_mut().insert("retry-after", "3".parse().unwrap());
            }
            response
        };
        let url = crate::llm::serve_for_test(Router::new().route("/v1/chat/completions", post(handler))).await;
        url
    }

    fn request() -> ChatRequest {
        ChatRequest::new(
            vec![ChatMessage::new(Role::System, "s"), ChatMessage::new(Role::User, "q")],
            10,
        )
    }

    async fn call(status: u16, body: &'static str) -> Result<Completion, CallError> {
        let url = server(status, body).await;
        OpenAiProvider::new(
            &url,
            "m",
            ProviderKey::fixed(Some(crate::secrets::Secret::new("k"))),
            Duration::from_secs(5),
        )
        .unwrap()
        .complete(&request())
        .await
    }

    #[tokio::test]
    async fn reads_text_and_usage() {
        let completion = call(
            200,
            r#"{"choices":[{"message":{"role":"assistant","content":"Paris [1]"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#,
        )
        .await
        .unwrap();
        assert_eq!(completion.text, "Paris [1]");
        assert_eq!(
            completion.usage,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 3
            }
        );
        assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    }

    #[tokio::test]
    async fn classifies_failures() {
        let limited = call(429, "{}").await.unwrap_err();
        assert_eq!(
            (limited.kind, limited.retry_after),
            (CallErrorKind::RateLimited, Some(Duration::from_secs(3)))
        );
        assert_eq!(call(503, "{}").await.unwrap_err().kind, CallErrorKind::Server);
        assert_eq!(call(401, "{}").await.unwrap_err().kind, CallErrorKind::Rejected);
        assert_eq!(call(200, "{not json").await.unwrap_err().kind, CallErrorKind::Malformed);
        assert_eq!(
            call(200, r#"{"choices":[]}"#).await.unwrap_err().kind,
            CallErrorKind::Malformed
        );
    }

    /// A key rotated in its file while the process runs: the provider's 401 has it read again,
    /// and the call goes through with the new key, in one `complete`.
    #[tokio::test]
    async fn a_rotated_key_is_read_again_after_a_401() {
        let handler = |headers: HeaderMap| async move {
            if headers["authorization"] == "Bearer sk-new" {
                (StatusCode::OK, r#"{"choices":[{"message":{"content":"ok"}}]}"#)
            } else {
                (StatusCode::UNAUTHORIZED, r#"{"error":{"message":"invalid key"}}"#)
            }
        };
        let url = crate::llm::serve_for_test(Router::new().route("/v1/chat/completions", post(handler))).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-old").unwrap();
        let source = crate::secrets::ApiKeySettings {
            api_key_file: Some(file.clone()),
            ..Default::default()
        };
        async fn provider(url: &str, source: &crate::secrets::ApiKeySettings) -> OpenAiProvider {
            OpenAiProvider::new(
                url,
                "m",
                ProviderKey::load(source).await.unwrap(),
                Duration::from_secs(5),
            )
            .unwrap()
        }
        // Not rotated: read again, still refused, and the refusal is the caller's.
        let error = provider(&url, &source).await.complete(&request()).await.unwrap_err();
        assert_eq!((error.kind, error.status), (CallErrorKind::Rejected, Some(401)));
        // Rotated after the provider read it: the 401 has it read again, and the call succeeds.
        let rotated = provider(&url, &source).await;
        std::fs::write(&file, "sk-new").unwrap();
        assert_eq!(rotated.complete(&request()).await.unwrap().text, "ok");
    }

    /// A whole OpenAI stream: each chunk as a server-sent event, then `[DONE]`.
    fn sse(chunks: &[serde_json::Value]) -> String {
        let events: String = chunks.iter().map(|chunk| format!("data: {chunk}\n\n")).collect();
        events + "data: [DONE]\n\n"
    }

    async fn stream_from(body: impl Into<String>) -> (Result<Completion, CallError>, Vec<crate::llm::StreamEvent>) {
        let body = body.into();
        let handler = move |Json(request): Json<serde_json::Value>| async move {
            assert_eq!(request["stream"], true);
            ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        };
        let url = crate::llm::serve_for_test(Router::new().route("/v1/chat/completions", post(handler))).await;
        let provider = OpenAiProvider::new(&url, "m", ProviderKey::fixed(None), Duration::from_secs(5)).unwrap();
        let (sink, mut receiver) = DeltaSink::channel();
        let result = provider.stream(&request(), &sink).await;
        drop(sink);
        let mut events = Vec::new();
        while let Some(event) = receiver.recv().await {
            events.push(event);
        }
        (result, events)
    }

    #[tokio::test]
    async fn streams_pieces_as_they_come() {
        let (result, events) = stream_from(sse(&[
            json!({"choices": [{"delta": {"role": "assistant"}}]}),
            json!({"choices": [{"delta": {"content": "Par"}}]}),
            json!({"choices": [{"delta": {"content": "is [1]"}, "finish_reason": "stop"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}),
        ]))
        .await;
        let completion = result.unwrap();
        assert_eq!(completion.text, "Paris [1]");
        assert_eq!(completion.usage.completion_tokens, 3);
        assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            events,
            [
                crate::llm::StreamEvent::Text("Par".into()),
                crate::llm::StreamEvent::Text("is [1]".into())
            ]
        );
    }

    #[tokio::test]
    async fn streamed_tool_calls_are_put_together_and_announced() {
        // Two calls in one turn, as OpenAI streams them: a piece naming each, then its arguments.
        let (result, events) = stream_from(sse(&[
            json!({"choices": [{"delta": {"content": "Checking."}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_order_status", "arguments": ""}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"order_id\": "}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "get_weather", "arguments": "{}"}}]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "123}"}}]}, "finish_reason": "tool_calls"}]}),
        ]))
        .await;
        let completion = result.unwrap();
        assert_eq!(completion.text, "Checking.");
        assert_eq!(
            completion.tool_calls,
            [
                ToolCall::new("call_a", "get_order_status", "{\"order_id\": 123}"),
                ToolCall::new("call_b", "get_weather", "{}"),
            ]
        );
        assert_eq!(completion.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            events,
            [
                crate::llm::StreamEvent::Text("Checking.".into()),
                crate::llm::StreamEvent::Calling("get_order_status".into()),
                crate::llm::StreamEvent::Calling("get_weather".into()),
            ]
        );
    }

    #[tokio::test]
    async fn a_stream_that_breaks_off_is_a_connection_failure() {
        let (result, _) = stream_from("data: {\"choices\":[{\"delta\":{\"content\":\"Par\"}}]}\n\n").await;
        assert_eq!(result.unwrap_err().kind, CallErrorKind::Connection);
        let (result, _) = stream_from("data: {not json\n\n").await;
        assert_eq!(result.unwrap_err().kind, CallErrorKind::Malformed);
        let (result, _) = stream_from("data: {\"error\":{\"message\":\"overloaded\"}}\n\n").await;
        assert_eq!(result.unwrap_err().kind, CallErrorKind::Server);
    }

    /// The head of a 200 JSON answer whose body is cut short of its length.
    const JSON_HEAD: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n{\"choices\": [";

    /// Serves one call on a raw socket: `head` once the request arrives, then `drip` every 20 ms
    /// until the client hangs up, or, without `drip`, the write half shut there and then.
    async fn raw_server(head: &'static str, drip: Option<&'static str>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut ignored = [0u8; 4096];
            let _ = socket.read(&mut ignored).await;
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            match drip {
                Some(piece) => {
                    while socket.write_all(piece.as_bytes()).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                None => {
                    let _ = socket.shutdown().await;
                    while socket.read(&mut ignored).await.is_ok_and(|n| n > 0) {}
                }
            }
        });
        url
    }

    fn keyless(url: &str, timeout: Duration) -> OpenAiProvider {
        OpenAiProvider::new(url, "m", ProviderKey::fixed(None), timeout).unwrap()
    }

    /// A call that ends by itself; one the provider does not bound would hang the test, so it
    /// fails after a generous wait instead.
    async fn bounded(call: impl std::future::Future<Output = Result<Completion, CallError>>) -> CallError {
        tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("the call was not bounded by its timeout")
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_body_cut_short_is_a_connection_failure() {
        let url = raw_server(JSON_HEAD, None).await;
        let error = bounded(keyless(&url, Duration::from_secs(5)).complete(&request())).await;
        assert_eq!(error.kind, CallErrorKind::Connection, "{error}");
    }

    /// A body that trickles and never ends, whole or streamed: only the call's timeout ends it
    /// (each piece arrives well within it, so a per-read timeout never would).
    #[tokio::test]
    async fn a_body_that_never_ends_is_cut_off_at_the_call_timeout() {
        let timeout = Duration::from_millis(300);
        let url = raw_server(JSON_HEAD, Some(" ")).await;
        let error = bounded(keyless(&url, timeout).complete(&request())).await;
        assert_eq!(error.kind, CallErrorKind::Timeout, "{error}");

        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
        let url = raw_server(head, Some("data: {\"choices\":[{\"delta\":{\"content\":\".\"}}]}\n\n")).await;
        let (sink, _receiver) = DeltaSink::channel();
        let error = bounded(keyless(&url, timeout).stream(&request(), &sink)).await;
        assert_eq!(error.kind, CallErrorKind::Timeout, "{error}");
    }
}
