//! OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp server, LiteLLM…).

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::{retry_after, CallError, CallErrorKind, ChatProvider, ChatRequest, Completion, Usage};

/// A client for one `/v1/chat/completions` endpoint and model.
pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ResponseUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ResponseUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl OpenAiProvider {
    /// `base_url` is the API root (`https://api.openai.com`, `http://127.0.0.1:11434`); the
    /// path `/v1/chat/completions` is added. `timeout` bounds one call.
    pub fn new(base_url: &str, model: &str, api_key: Option<String>, timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Self {
            client,
            url: format!("{}/v1/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            api_key,
        })
    }
}

#[async_trait]
impl ChatProvider for OpenAiProvider {
    async fn complete(&self, request: &ChatRequest) -> Result<Completion, CallError> {
        let mut body = json!({
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
        });
        if request.json_output {
            body["response_format"] = json!({ "type": "json_object" });
        }
        let mut call = self.client.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key);
        }
        let response = call.send().await.map_err(CallError::from_transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(CallError::from_status(
                status.as_u16(),
                retry_after(response.headers()),
                "",
            ));
        }
        let bytes = response.bytes().await.map_err(CallError::from_transport)?;
        let body: Response = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::new(CallErrorKind::Malformed, format!("unreadable chat completion: {e}")))?;
        let choice = body
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| CallError::new(CallErrorKind::Malformed, "chat completion has no choices"))?;
        let usage = body.usage.map_or_else(Usage::default, |u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
        Ok(Completion {
            text: choice.message.content.unwrap_or_default(),
            usage,
            finish_reason: choice.finish_reason,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            async move { axum::serve(listener, Router::new().route("/v1/chat/completions", post(handler))).await },
        );
        url
    }

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![ChatMessage::new(Role::System, "s"), ChatMessage::new(Role::User, "q")],
            max_output_tokens: 10,
            temperature: 0.0,
            json_output: false,
        }
    }

    async fn call(status: u16, body: &'static str) -> Result<Completion, CallError> {
        let url = server(status, body).await;
        OpenAiProvider::new(&url, "m", Some("k".into()), Duration::from_secs(5))
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
}
