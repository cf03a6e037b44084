//! The Anthropic Messages API (`/v1/messages`).

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::sse::SseStream;
use super::{
    send_checked, CallError, CallErrorKind, ChatMessage, ChatProvider, ChatRequest, Completion, DeltaSink,
    HttpEndpoint, Role, StreamedToolCalls, ToolCall, Usage,
};
use crate::error::StageError;
use crate::secrets::{sensitive_header, ProviderKey};

/// The API version this client speaks (sent as `anthropic-version`).
const API_VERSION: &str = "2023-06-01";

/// A client for one Anthropic model.
pub struct AnthropicProvider {
    endpoint: HttpEndpoint,
}

#[derive(Deserialize)]
struct Response {
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    /// `tool_use` blocks: the call's id, the tool and its input.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

/// A message in Anthropic's terms: tool calls are `tool_use` blocks of the assistant's message,
/// tool results `tool_result` blocks of a user message.
fn message_json(message: &ChatMessage) -> serde_json::Value {
    match message.role {
        Role::Tool => json!({ "role": "user", "content": [{
            "type": "tool_result",
            "tool_use_id": message.tool_call_id.as_deref().unwrap_or_default(),
            "content": message.content,
        }] }),
        Role::Assistant if !message.tool_calls.is_empty() => {
            let mut blocks = Vec::new();
            if !message.content.is_empty() {
                blocks.push(json!({ "type": "text", "text": message.content }));
            }
            for call in &message.tool_calls {
                let input: serde_json::Value = serde_json::from_str(call.arguments()).unwrap_or_else(|_| json!({}));
                blocks.push(json!({ "type": "tool_use", "id": call.id, "name": call.name(), "input": input }));
            }
            json!({ "role": "assistant", "content": blocks })
        }
        _ => json!({ "role": message.role, "content": message.content }),
    }
}

impl AnthropicProvider {
    /// `base_url` is the API root (`https://api.anthropic.com`).
    pub fn new(base_url: &str, model: &str, key: ProviderKey, timeout: Duration) -> Result<Self, StageError> {
        Ok(Self {
            endpoint: HttpEndpoint::new(base_url, "/v1/messages", model, key, timeout)?,
        })
    }

    fn body(&self, request: &ChatRequest) -> serde_json::Value {
        // The system prompt is a top-level field, not a message.
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let messages: Vec<_> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(message_json)
            .collect();
        let mut body = json!({
            "model": self.endpoint.model,
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "messages": messages,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if !request.tools.is_empty() {
            let tools: Vec<serde_json::Value> = request
                .tools
                .iter()
                .map(|tool| json!({ "name": tool.name, "description": tool.description, "input_schema": tool.parameters }))
                .collect();
            body["tools"] = json!(tools);
        }
        body
    }

    /// Sends `body`; the response when its status is a success.
    async fn send(&self, body: &serde_json::Value) -> Result<reqwest::Response, CallError> {
        send_checked(&self.endpoint.key, |key| {
            let call = self
                .endpoint
                .client
                .post(&self.endpoint.url)
                .header("anthropic-version", API_VERSION)
                .json(body);
            match key {
                Some(key) => match sensitive_header(key.expose()) {
                    Some(value) => call.header("x-api-key", value),
                    // Not a header value: reqwest refuses the request, naming no value.
                    None => call.header("x-api-key", key.expose()),
                },
                None => call,
            }
        })
        .await
    }
}

/// Reads a number at `pointer` in a stream event.
fn tokens_at(event: &serde_json::Value, pointer: &str) -> Option<u64> {
    event.pointer(pointer).and_then(serde_json::Value::as_u64)
}

#[async_trait]
impl ChatProvider for AnthropicProvider {
    async fn complete(&self, request: &ChatRequest) -> Result<Completion, CallError> {
        let response = self.send(&self.body(request)).await?;
        let bytes = response.bytes().await.map_err(CallError::from_transport)?;
        let body: Response =
            serde_json::from_slice(&bytes).map_err(|e| CallError::unreadable("message response", &e))?;
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in body.content {
            match block.kind.as_str() {
                "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
                "tool_use" => tool_calls.push(ToolCall::new(
                    block.id.unwrap_or_default(),
                    block.name.unwrap_or_default(),
                    block.input.unwrap_or_else(|| json!({})).to_string(),
                )),
                _ => {}
            }
        }
        let usage = body.usage.unwrap_or_default();
        Ok(Completion {
            text,
            tool_calls,
            usage,
            finish_reason: body.stop_reason,
        })
    }

    async fn stream(&self, request: &ChatRequest, deltas: &DeltaSink) -> Result<Completion, CallError> {
        let mut body = self.body(request);
        body["stream"] = json!(true);
        let mut events = SseStream::new(self.send(&body).await?);
        let mut completion = Completion {
            text: String::new(),
            tool_calls: Vec::new(),
            usage: Usage::default(),
            finish_reason: None,
        };
        let mut tool_calls = StreamedToolCalls::default();
        let mut stopped = false;
        while !stopped {
            let Some(arrived) = events.next_events().await? else {
                break;
            };
            for event in arrived {
                let event: serde_json::Value =
                    serde_json::from_str(&event.data).map_err(|e| CallError::unreadable("stream event", &e))?;
                match event["type"].as_str().unwrap_or_default() {
                    "message_start" => {
                        completion.usage.prompt_tokens =
                            tokens_at(&event, "/message/usage/input_tokens").unwrap_or_default();
                    }
                    "content_block_start" if event.pointer("/content_block/type") == Some(&json!("tool_use")) => {
                        let block = &event["content_block"];
                        tool_calls.push(
                            block_index(&event),
                            block["id"].as_str(),
                            block["name"].as_str(),
                            None,
                            deltas,
                        );
                    }
                    "content_block_delta" => {
                        if let Some(piece) = event.pointer("/delta/text").and_then(|t| t.as_str()) {
                            deltas.text(piece);
                            completion.text.push_str(piece);
                        }
                        if let Some(piece) = event.pointer("/delta/partial_json").and_then(|t| t.as_str()) {
                            tool_calls.push(block_index(&event), None, None, Some(piece), deltas);
                        }
                    }
                    "message_delta" => {
                        if let Some(reason) = event.pointer("/delta/stop_reason").and_then(|r| r.as_str()) {
                            completion.finish_reason = Some(reason.to_owned());
                        }
                        if let Some(output) = tokens_at(&event, "/usage/output_tokens") {
                            completion.usage.completion_tokens = output;
                        }
                    }
                    "message_stop" => stopped = true,
                    "error" => {
                        // `overloaded_error` and `api_error` are the provider's trouble.
                        let kind = event.pointer("/error/type").and_then(|t| t.as_str()).unwrap_or("error");
                        return Err(CallError::new(
                            CallErrorKind::Server,
                            format!("provider reported {kind} mid-stream"),
                        ));
                    }
                    _ => {} // ping, content_block_start/stop
                }
            }
        }
        if !stopped {
            return Err(CallError::new(
                CallErrorKind::Connection,
                "the stream broke off before the answer was complete",
            ));
        }
        completion.tool_calls = tool_calls.finish();
        Ok(completion)
    }
}

/// The content block a stream event belongs to.
fn block_index(event: &serde_json::Value) -> usize {
    event["index"].as_u64().unwrap_or_default() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ChatMessage, StreamEvent};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::{Json, Router};

    #[tokio::test]
    async fn sends_the_system_prompt_apart_and_reads_text_blocks() {
        let handler = |headers: HeaderMap, Json(request): Json<serde_json::Value>| async move {
            assert_eq!(headers["x-api-key"], "k");
            assert_eq!(headers["anthropic-version"], API_VERSION);
            assert_eq!(request["system"], "be brief");
            assert_eq!(request["messages"].as_array().unwrap().len(), 1);
            (
                StatusCode::OK,
                r#"{"content":[{"type":"text","text":"Paris"},{"type":"text","text":" [1]"}],"stop_reason":"end_turn","usage":{"input_tokens":9,"output_tokens":2}}"#,
            )
                .into_response()
        };
        let url = crate::llm::serve_for_test(Router::new().route("/v1/messages", post(handler))).await;
        let provider = AnthropicProvider::new(
            &url,
            "claude",
            ProviderKey::fixed(Some(crate::secrets::Secret::new("k"))),
            Duration::from_secs(5),
        )
        .unwrap();
        let completion = provider
            .complete(&ChatRequest::new(
                vec![
                    ChatMessage::new(Role::System, "be brief"),
                    ChatMessage::new(Role::User, "capital?"),
                ],
                8,
            ))
            .await
            .unwrap();
        assert_eq!(completion.text, "Paris [1]");
        assert_ends_turn_with_usage(&completion, 9, 2);
    }

    #[tokio::test]
    async fn a_response_that_echoes_the_key_is_malformed_without_showing_it() {
        // A proxy that answers 200 with the request's key where the content should be.
        let handler = |headers: HeaderMap| async move {
            let key = headers["x-api-key"].to_str().unwrap().to_owned();
            (StatusCode::OK, Json(serde_json::json!({ "content": key }))).into_response()
        };
        let url = crate::llm::serve_for_test(Router::new().route("/v1/messages", post(handler))).await;
        let key = "sk-ant-api03-echoed-7f3a9c";
        let provider = AnthropicProvider::new(
            &url,
            "claude",
            ProviderKey::fixed(Some(crate::secrets::Secret::new(key))),
            Duration::from_secs(5),
        )
        .unwrap();
        let request = ChatRequest::new(vec![ChatMessage::new(Role::User, "capital?")], 8);
        let error = provider.complete(&request).await.unwrap_err();
        assert_eq!(error.kind, CallErrorKind::Malformed);
        assert!(
            error
                .message
                .starts_with("unreadable message response: invalid type: string value"),
            "{error}"
        );
        assert!(!error.to_string().contains("7f3a9c"), "{error}");
    }

    #[track_caller]
    fn assert_ends_turn_with_usage(completion: &Completion, prompt_tokens: u64, completion_tokens: u64) {
        let usage = Usage {
            prompt_tokens,
            completion_tokens,
        };
        assert_eq!(completion.usage, usage);
        assert_eq!(completion.finish_reason.as_deref(), Some("end_turn"));
    }

    #[tokio::test]
    async fn tools_calls_and_results_travel_as_anthropic_blocks() {
        let handler = |Json(request): Json<serde_json::Value>| async move {
            assert_eq!(request["tools"][0]["name"], "get_order_status");
            assert_eq!(request["tools"][0]["input_schema"]["type"], "object");
            let messages = request["messages"].as_array().unwrap();
            // The assistant's call is a tool_use block, its result a user message's tool_result.
            assert_eq!(messages[1]["content"][0]["type"], "tool_use");
            assert_eq!(messages[1]["content"][0]["input"]["order_id"], 7);
            assert_eq!(messages[2]["role"], "user");
            assert_eq!(messages[2]["content"][0]["type"], "tool_result");
            assert_eq!(messages[2]["content"][0]["tool_use_id"], "toolu_1");
            (
                StatusCode::OK,
                r#"{"content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_2","name":"get_order_status","input":{"order_id":8}}],"stop_reason":"tool_use","usage":{"input_tokens":9,"output_tokens":2}}"#,
            )
                .into_response()
        };
        let url = crate::llm::serve_for_test(Router::new().route("/v1/messages", post(handler))).await;
        let provider =
            AnthropicProvider::new(&url, "claude", ProviderKey::fixed(None), Duration::from_secs(5)).unwrap();
        let completion = provider
            .complete(&ChatRequest {
                tools: vec![crate::llm::ToolSpec {
                    name: "get_order_status".into(),
                    description: "status".into(),
                    parameters: json!({ "type": "object", "properties": { "order_id": { "type": "integer" } } }),
                }],
                ..ChatRequest::new(
                    vec![
                        ChatMessage::new(Role::User, "order 7?"),
                        ChatMessage::calling(
                            "",
                            vec![ToolCall::new("toolu_1", "get_order_status", r#"{"order_id":7}"#)],
                        ),
                        ChatMessage::tool_result("toolu_1", "in transit"),
                    ],
                    8,
                )
            })
            .await
            .unwrap();
        assert_eq!(completion.text, "Checking.");
        assert_eq!(
            completion.tool_calls,
            vec![ToolCall::new("toolu_2", "get_order_status", r#"{"order_id":8}"#)]
        );
    }

    #[tokio::test]
    async fn streams_text_and_tool_use_deltas_with_usage() {
        let body = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9}}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Par\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"is\"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_order_status\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"order_id\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" 7}\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let handler = move |Json(request): Json<serde_json::Value>| async move {
            assert_eq!(request["stream"], true);
            ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        };
        let url = crate::llm::serve_for_test(Router::new().route("/v1/messages", post(handler))).await;
        let provider =
            AnthropicProvider::new(&url, "claude", ProviderKey::fixed(None), Duration::from_secs(5)).unwrap();
        let (sink, mut receiver) = DeltaSink::channel();
        let request = ChatRequest::new(vec![ChatMessage::new(Role::User, "capital?")], 8);
        let completion = provider.stream(&request, &sink).await.unwrap();
        drop(sink);
        assert_eq!(completion.text, "Paris");
        assert_ends_turn_with_usage(&completion, 9, 2);
        let mut pieces = Vec::new();
        while let Some(event) = receiver.recv().await {
            pieces.push(event);
        }
        assert_eq!(
            pieces,
            [
                StreamEvent::Text("Par".into()),
                StreamEvent::Text("is".into()),
                StreamEvent::Calling("get_order_status".into()),
            ]
        );
        assert_eq!(
            completion.tool_calls,
            [ToolCall::new("toolu_1", "get_order_status", "{\"order_id\": 7}")]
        );
    }
}
