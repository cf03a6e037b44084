//! Provider keys: from an environment variable, a file (a Kubernetes secret mount), or
//! HashiCorp Vault's KV v2 engine over HTTP with a token. A key lives in a [`Secret`], which
//! never prints: not in logs, errors, audit events, metrics or `Debug` output.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::error::StageError;

/// A value that must not be shown anywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it (an `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A key kept in Vault's KV v2 secrets engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultKey {
    /// Vault's address, e.g. `https://vault.internal:8200`.
    pub address: String,
    /// Mount of the KV v2 engine.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// Path of the secret under the mount, e.g. `ragstream/openai`.
    pub path: String,
    /// Field of the secret holding the key.
    #[serde(default = "default_field")]
    pub field: String,
    /// Environment variable holding the Vault token.
    #[serde(default = "default_token_env")]
    pub token_env: String,
}

fn default_mount() -> String {
    "secret".to_owned()
}

fn default_field() -> String {
    "api_key".to_owned()
}

fn default_token_env() -> String {
    "VAULT_TOKEN".to_owned()
}

/// Where a key comes from: at most one of the three.
#[derive(Debug, Clone, Default)]
pub struct KeySource<'a> {
    pub env: Option<&'a str>,
    pub file: Option<&'a PathBuf>,
    pub vault: Option<&'a VaultKey>,
}

impl KeySource<'_> {
    /// Reports more than one source as an error at `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let given = [self.env.is_some(), self.file.is_some(), self.vault.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            errors.push(ConfigError::new(
                path,
                "set at most one of api_key_env, api_key_file and api_key_vault",
            ));
        }
    }

    /// The key, if a source is set. Errors name the source, never the value.
    pub async fn resolve(&self) -> Result<Option<Secret>, StageError> {
        if let Some(variable) = self.env {
            return std::env::var(variable)
                .map(|value| Some(Secret::new(value)))
                .map_err(|_| {
                    StageError::internal(format!("environment variable `{variable}` (api_key_env) is not set"))
                });
        }
        if let Some(file) = self.file {
            let text = std::fs::read_to_string(file).map_err(|error| {
                StageError::internal(format!("cannot read api_key_file {}: {error}", file.display()))
            })?;
            // Secret mounts often end with a newline; a key never does.
            return Ok(Some(Secret::new(text.trim_end_matches(['\n', '\r']))));
        }
        match self.vault {
            Some(vault) => read_vault(vault).await.map(Some),
            None => Ok(None),
        }
    }
}

/// Reads `field` of the latest version of a KV v2 secret.
async fn read_vault(vault: &VaultKey) -> Result<Secret, StageError> {
    let token = std::env::var(&vault.token_env).map_err(|_| {
        StageError::internal(format!(
            "environment variable `{}` (the Vault token) is not set",
            vault.token_env
        ))
    })?;
    let url = format!(
        "{}/v1/{}/data/{}",
        vault.address.trim_end_matches('/'),
        vault.mount.trim_matches('/'),
        vault.path.trim_matches('/')
    );
    let where_ = format!("Vault secret {}/{} field `{}`", vault.mount, vault.path, vault.field);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| StageError::internal(format!("cannot build the Vault client: {error}")))?;
    let mut token = reqwest::header::HeaderValue::from_str(&token)
        .map_err(|_| StageError::internal("the Vault token is not a valid header value"))?;
    token.set_sensitive(true);
    let response = client
        .get(&url)
        .header("X-Vault-Token", token)
        .send()
        .await
        .map_err(|error| StageError::external(format!("{where_}: Vault unreachable: {}", error.without_url())))?;
    let status = response.status();
    if !status.is_success() {
        let fault = if status.is_server_error() {
            StageError::external
        } else {
            StageError::internal
        };
        return Err(fault(format!("{where_}: Vault answered {status}")));
    }
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|error| StageError::external(format!("{where_}: unreadable Vault answer: {}", error.without_url())))?;
    body["data"]["data"][&vault.field]
        .as_str()
        .map(Secret::new)
        .ok_or_else(|| StageError::internal(format!("{where_}: no such string field in the secret")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let secret = Secret::new("sk-very-secret");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(secret.expose(), "sk-very-secret");
    }

    #[tokio::test]
    async fn a_key_file_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-from-file\n").unwrap();
        let source = KeySource {
            file: Some(&file),
            ..KeySource::default()
        };
        assert_eq!(source.resolve().await.unwrap(), Some(Secret::new("sk-from-file")));
        let missing = dir.path().join("missing");
        let error = KeySource {
            file: Some(&missing),
            ..KeySource::default()
        }
        .resolve()
        .await
        .unwrap_err();
        assert!(error.reason.contains("cannot read api_key_file"), "{}", error.reason);
    }

    #[tokio::test]
    async fn vault_kv2_is_read_with_the_token_and_errors_never_hold_the_key() {
        use axum::{extract::State, http::HeaderMap, routing::get, Json, Router};
        async fn read(
            State(expected): State<String>,
            headers: HeaderMap,
        ) -> (axum::http::StatusCode, Json<serde_json::Value>) {
            if headers.get("x-vault-token").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                return (
                    axum::http::StatusCode::FORBIDDEN,
                    Json(serde_json::json!({"errors": ["permission denied"]})),
                );
            }
            (
                axum::http::StatusCode::OK,
                Json(serde_json::json!({"data": {"data": {"api_key": "sk-from-vault"}, "metadata": {"version": 3}}})),
            )
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/v1/secret/data/ragstream/openai", get(read))
            .with_state("root-token".to_owned());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let token_env = format!("RAGSTREAM_TEST_VAULT_TOKEN_{}", std::process::id());
        std::env::set_var(&token_env, "root-token");
        let vault = VaultKey {
            address: address.clone(),
            mount: "secret".into(),
            path: "ragstream/openai".into(),
            field: "api_key".into(),
            token_env: token_env.clone(),
        };
        let source = KeySource {
            vault: Some(&vault),
            ..KeySource::default()
        };
        assert_eq!(source.resolve().await.unwrap(), Some(Secret::new("sk-from-vault")));

        std::env::set_var(&token_env, "wrong-token");
        let error = source.resolve().await.unwrap_err();
        assert!(error.reason.contains("403"), "{}", error.reason);
        assert!(!error.reason.contains("wrong-token"));
        let missing_field = VaultKey {
            field: "other".into(),
            ..vault.clone()
        };
        std::env::set_var(&token_env, "root-token");
        let error = KeySource {
            vault: Some(&missing_field),
            ..KeySource::default()
        }
        .resolve()
        .await
        .unwrap_err();
        assert!(error.reason.contains("no such string field"), "{}", error.reason);
        assert!(!error.reason.contains("sk-from-vault"));
    }
}
