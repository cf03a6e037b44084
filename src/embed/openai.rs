//! Any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, Ollama, LiteLLM, TEI…).

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use crate::error::StageError;
use crate::llm::HttpEndpoint;
use crate::secrets::ProviderKey;

/// A client for one embeddings endpoint and model.
pub struct OpenAiEmbedder {
    endpoint: HttpEndpoint,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// `base_url` is the API root, e.g. `https://api.openai.com` or `http://127.0.0.1:8000`.
    pub fn new(base_url: &str, model: &str, key: ProviderKey, timeout: Duration) -> Result<Self, StageError> {
        Ok(Self {
            endpoint: HttpEndpoint::new(base_url, "/v1/embeddings", model, key, timeout)?,
        })
    }

    /// Embeds `texts` in one request. Failures say whose fault they are: rate limits, server
    /// errors, timeouts and unreadable answers are the service's (retry); a rejected request or
    /// credentials are ours (configuration), so retrying cannot help.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, StageError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        crate::telemetry::metrics::metrics()
            .embedding_batch_texts
            .with_label_values(&["openai"])
            .observe(texts.len() as f64);
        let response = self
            .endpoint
            .key
            .send(|key| {
                let request = self
                    .endpoint
                    .client
                    .post(&self.endpoint.url)
                    .json(&serde_json::json!({ "model": self.endpoint.model, "input": texts }));
                match key {
                    Some(key) => request.bearer_auth(key.expose()),
                    None => request,
                }
            })
            .await
            .map_err(|e| {
                StageError::external(format!(
                    "embeddings request to {} failed: {}",
                    self.endpoint.url,
                    e.without_url()
                ))
            })?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let retry_after = crate::llm::retry_after(response.headers());
            return Err(
                StageError::external(format!("embeddings endpoint answered {status}")).with_retry_after(retry_after)
            );
        }
        if !status.is_success() {
            return Err(StageError::internal(format!(
                "embeddings endpoint rejected the request with {status} (check model name and credentials)"
            )));
        }
        let body: Response = response
            .json()
            .await
            .map_err(|e| StageError::external(format!("unreadable embeddings response: {}", e.without_url())))?;
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for item in body.data {
            if let Some(slot) = vectors.get_mut(item.index) {
                *slot = Some(item.embedding);
            }
        }
        vectors
            .into_iter()
            .enumerate()
            .map(|(index, vector)| {
                vector.ok_or_else(|| StageError::external(format!("embeddings response lacks input {index}")))
            })
            .collect()
    }
}

/// A scripted OpenAI-compatible embeddings endpoint for tests.
#[cfg(test)]
pub(crate) mod test_server {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::{Json, Router};

    /// A scripted endpoint: answers each call with the next status in `script` (200 = vectors
    /// whose first component is the input's length, returned in reverse order).
    pub(crate) async fn server(script: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let handler = move |headers: HeaderMap, Json(body): Json<serde_json::Value>| {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            let status = script.get(call).copied().unwrap_or(200);
            async move {
                assert_eq!(headers["authorization"], "Bearer test-key");
                if status == 999 {
                    return (StatusCode::OK, "{not json".to_owned()).into_response();
                }
                if status != 200 {
                    let mut response = (StatusCode::from_u16(status).unwrap(), "{}".to_owned()).into_response();
                    if status == 429 {
                        response
                            .headers_mut()
                            .insert("retry-after", HeaderValue::from_static("2"));
                    }
                    return response;
                }
                let inputs = body["input"].as_array().unwrap();
                let data: Vec<_> = inputs
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, t)| serde_json::json!({"index": i, "embedding": [t.as_str().unwrap().len() as f32, 1.0]}))
                    .collect();
                (StatusCode::OK, serde_json::json!({ "data": data }).to_string()).into_response()
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, Router::new().route("/v1/embeddings", post(handler))).await });
        (url, calls)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::test_server::server;
    use super::*;
    use crate::error::Fault;

    fn client(url: &str) -> OpenAiEmbedder {
        OpenAiEmbedder::new(
            url,
            "test-model",
            ProviderKey::fixed(Some(crate::secrets::Secret::new("test-key"))),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn vectors_come_back_in_input_order() {
        let (url, _) = server(vec![200]).await;
        let texts = vec!["a".to_owned(), "bbb".to_owned(), "cc".to_owned()];
        let vectors = client(&url).embed(&texts).await.unwrap();
        let firsts: Vec<f32> = vectors.iter().map(|v| v[0]).collect();
        assert_eq!(firsts, vec![1.0, 3.0, 2.0]);
    }

    #[tokio::test]
    async fn failures_are_classified_by_whose_fault_they_are() {
        let (url, calls) = server(vec![429, 503, 401, 400, 999]).await;
        let texts = vec!["x".to_owned()];
        let client = client(&url);
        let mut seen = Vec::new();
        let mut hints = Vec::new();
        for _ in 0..5 {
            let error = client.embed(&texts).await.unwrap_err();
            seen.push(error.fault);
            hints.push(error.retry_after);
        }
        assert_eq!(hints[0], Some(Duration::from_secs(2)), "429 carries Retry-After");
        assert_eq!(hints[1], None);
        assert_eq!(
            seen,
            vec![
                Fault::External,
                Fault::External,
                Fault::Internal,
                Fault::Internal,
                Fault::External
            ]
        );
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let unreachable = OpenAiEmbedder::new(
            "http://127.0.0.1:9",
            "m",
            ProviderKey::fixed(None),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(unreachable.embed(&texts).await.unwrap_err().fault, Fault::External);
    }
}
