//! The Anthropic Messages API (`/v1/messages`).

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::{retry_after, CallError, CallErrorKind, ChatProvider, ChatRequest, Completion, Role, Usage};

/// The API version this client speaks (sent as `anthropic-version`).
const API_VERSION: &str = "2023-06-01";

/// A client for one Anthropic model.
pub struct AnthropicProvider {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
}

#[derive(Deserialize)]
struct Response {
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<ResponseUsage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ResponseUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

impl AnthropicProvider {
    /// `base_url` is the API root (`https://api.anthropic.com`).
    pub fn new(base_url: &str, model: &str, api_key: Option<String>, timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Self {
            client,
            url: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            api_key,
        })
    }
}

#[async_trait]
impl ChatProvider for AnthropicProvider {
    async fn complete(&self, request: &ChatRequest) -> Result<Completion, CallError> {
        // The system prompt is a top-level field, not a message.
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let messages: Vec<_> = request.messages.iter().filter(|m| m.role != Role::System).collect();
        let mut body = json!({
            "model": self.model,
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "messages": messages,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        let mut call = self
            .client
            .post(&self.url)
            .header("anthropic-version", API_VERSION)
            .json(&body);
        if let Some(key) = &self.api_key {
            call = call.header("x-api-key", key);
        }
        let response = call.send().await.map_err(CallError::from_transport)?;
        let status = response.status();
        if !status.is_success() {
            // 529 "overloaded" is in the 5xx range: retried like any server error.
            return Err(CallError::from_status(
                status.as_u16(),
                retry_after(response.headers()),
                "",
            ));
        }
        let bytes = response.bytes().await.map_err(CallError::from_transport)?;
        let body: Response = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::new(CallErrorKind::Malformed, format!("unreadable message response: {e}")))?;
        let text: String = body
            .content
            .into_iter()
            .filter(|block| block.kind == "text")
            .filter_map(|block| block.text)
            .collect();
        let usage = body.usage.map_or_else(Usage::default, |u| Usage {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
        });
        Ok(Completion {
            text,
            usage,
            finish_reason: body.stop_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ChatMessage;
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, Router::new().route("/v1/messages", post(handler))).await });
        let provider = AnthropicProvider::new(&url, "claude", Some("k".into()), Duration::from_secs(5)).unwrap();
        let completion = provider
            .complete(&ChatRequest {
                messages: vec![
                    ChatMessage::new(Role::System, "be brief"),
                    ChatMessage::new(Role::User, "capital?"),
                ],
                max_output_tokens: 8,
                temperature: 0.0,
                json_output: false,
            })
            .await
            .unwrap();
        assert_eq!(completion.text, "Paris [1]");
        assert_eq!(
            completion.usage,
            Usage {
                prompt_tokens: 9,
                completion_tokens: 2
            }
        );
        assert_eq!(completion.finish_reason.as_deref(), Some("end_turn"));
    }
}
