//! A tool behind an HTTP endpoint: arguments into the URL template, the query string or a JSON
//! body; the response body is the result.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use super::config::HttpToolConfig;
use crate::secrets::ProviderKey;

/// Why a tool call has no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Failed(String),
}

/// Longest response body read from a tool; the model gets at most `max_result_chars` of it.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Calls the tool with `arguments` (an object, placeholders already restored);
/// `idempotency_key` lets the tool recognise a repeated call.
pub async fn call(
    client: &reqwest::Client,
    key: &ProviderKey,
    config: &HttpToolConfig,
    arguments: &Value,
    idempotency_key: &str,
) -> Result<String, ToolError> {
    let empty = serde_json::Map::new();
    let fields = arguments.as_object().unwrap_or(&empty);
    let (url, rest) = fill_template(&config.url, fields);
    let method = reqwest::Method::from_bytes(config.method.as_bytes())
        .map_err(|_| ToolError::Failed(format!("`{}` is not an HTTP method", config.method)))?;
    let is_get = method == reqwest::Method::GET;
    let response = key
        .send(|secret| {
            let mut request = client
                .request(method.clone(), &url)
                .header("Idempotency-Key", idempotency_key);
            for (name, value) in &config.headers {
                request = request.header(name, value);
            }
            if let Some(secret) = secret {
                request = request.bearer_auth(secret.expose());
            }
            if is_get {
                let query: Vec<(&str, String)> = rest
                    .iter()
                    .map(|(name, value)| (name.as_str(), text_of(value)))
                    .collect();
                request.query(&query)
            } else {
                request.json(&Value::Object(rest.clone()))
            }
        })
        .await
        .map_err(|error| {
            if error.is_timeout() {
                ToolError::Timeout
            } else {
                ToolError::Failed(format!("cannot reach the tool: {}", without_url(&error)))
            }
        })?;
    let status = response.status();
    let body = read_body(response).await?;
    if !status.is_success() {
        return Err(ToolError::Failed(format!(
            "the tool answered {}: {}",
            status.as_u16(),
            body.chars().take(500).collect::<String>()
        )));
    }
    Ok(body)
}

/// The URL with `{name}` replaced by that argument (percent-encoded), and the arguments the
/// template did not use.
fn fill_template(template: &str, fields: &serde_json::Map<String, Value>) -> (String, serde_json::Map<String, Value>) {
    let mut url = template.to_owned();
    let mut rest = serde_json::Map::new();
    for (name, value) in fields {
        let placeholder = format!("{{{name}}}");
        if url.contains(&placeholder) {
            url = url.replace(
                &placeholder,
                &utf8_percent_encode(&text_of(value), NON_ALPHANUMERIC).to_string(),
            );
        } else {
            rest.insert(name.clone(), value.clone());
        }
    }
    (url, rest)
}

/// A JSON value as it goes into a URL: strings without their quotes.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

async fn read_body(mut response: reqwest::Response) -> Result<String, ToolError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| {
        if error.is_timeout() {
            ToolError::Timeout
        } else {
            ToolError::Failed(format!("the tool's answer broke off: {}", without_url(&error)))
        }
    })? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY_BYTES {
            body.truncate(MAX_BODY_BYTES);
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The error without its URL: a URL can hold an argument's real value.
fn without_url(error: &reqwest::Error) -> String {
    let mut error = error.to_string();
    if let Some(start) = error.find(" for url (") {
        if let Some(end) = error[start..].find(')') {
            error.replace_range(start..start + end + 1, "");
        }
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_fill_the_template_encoded_and_the_rest_is_left() {
        let fields = serde_json::json!({ "order_id": 123, "email": "a b@x.io", "verbose": true });
        let (url, rest) = fill_template(
            "http://orders/orders/{order_id}?by={email}",
            fields.as_object().unwrap(),
        );
        assert_eq!(url, "http://orders/orders/123?by=a%20b%40x%2Eio");
        assert_eq!(Value::Object(rest), serde_json::json!({ "verbose": true }));
    }
}
