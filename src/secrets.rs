//! Provider keys: from an environment variable, a file (a Kubernetes secret mount), or
//! HashiCorp Vault's KV v2 engine over HTTP with a token. A key lives in a [`Secret`], which
//! never prints: not in logs, errors, audit events, metrics or `Debug` output.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{ConfigError, StageError};
use serde_inline_default::serde_inline_default;

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
#[serde_inline_default]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultKey {
    /// Vault's address, e.g. `https://vault.internal:8200`.
    pub address: String,
    /// Mount of the KV v2 engine.
    #[serde_inline_default("secret".to_owned())]
    pub mount: String,
    /// Path of the secret under the mount, e.g. `ragstream/openai`.
    pub path: String,
    /// Field of the secret holding the key.
    #[serde_inline_default("api_key".to_owned())]
    pub field: String,
    /// Environment variable holding the Vault token.
    #[serde_inline_default("VAULT_TOKEN".to_owned())]
    pub token_env: String,
    /// File holding the Vault token instead of `token_env`, read again at every read of the
    /// secret: the sink of a Vault Agent, which renews the token and rewrites the file.
    pub token_file: Option<PathBuf>,
}

/// Where a provider's API key comes from, at most one of the three: the settings the models
/// (`generate.models[]`) and the embedding endpoint (`embed`) share, flattened into each. The key
/// itself never appears in the topology, logs or errors.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ApiKeySettings {
    /// Name of the environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// A file holding the API key (e.g. a mounted Kubernetes Secret).
    pub api_key_file: Option<PathBuf>,
    /// The API key in HashiCorp Vault's KV v2 engine (read at start and again when refused).
    pub api_key_vault: Option<VaultKey>,
}

impl ApiKeySettings {
    /// Reports more than one source as an error at `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let given = [
            self.api_key_env.is_some(),
            self.api_key_file.is_some(),
            self.api_key_vault.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            errors.push(ConfigError::new(
                path,
                "set at most one of api_key_env, api_key_file and api_key_vault",
            ));
        }
    }

    fn is_set(&self) -> bool {
        self.api_key_env.is_some() || self.api_key_file.is_some() || self.api_key_vault.is_some()
    }

    /// The key, if a source is set. Errors name the source, never the value.
    pub async fn resolve(&self) -> Result<Option<Secret>, StageError> {
        if let Some(variable) = &self.api_key_env {
            return std::env::var(variable)
                .map(|value| Some(Secret::new(value)))
                .map_err(|_| {
                    StageError::internal(format!("environment variable `{variable}` (api_key_env) is not set"))
                });
        }
        if let Some(file) = &self.api_key_file {
            let text = std::fs::read_to_string(file).map_err(|error| {
                StageError::internal(format!("cannot read api_key_file {}: {error}", file.display()))
            })?;
            // Secret mounts often end with a newline; a key never does.
            return Ok(Some(Secret::new(text.trim_end_matches(['\n', '\r']))));
        }
        match &self.api_key_vault {
            Some(vault) => read_vault(vault).await.map(Some),
            None => Ok(None),
        }
    }
}

/// Least time between two reads of a key's source after refusals: many calls refused at once
/// read it once, and a key that is simply wrong is not fetched from Vault at every call.
const REREAD_INTERVAL: Duration = Duration::from_secs(10);

/// A provider's key, read at start and read again when the provider refuses it (401 or 403), so
/// a key rotated in Vault or in a mounted secret file is picked up without a restart.
pub struct ProviderKey {
    source: ApiKeySettings,
    current: std::sync::RwLock<Option<Secret>>,
    /// When a refusal last had the source read again (never: `None`); held while reading, so
    /// one refused call reads it and the others wait and take the result.
    last_reread: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl ProviderKey {
    /// Reads the key from `source` (none when no source is set).
    pub async fn load(source: &ApiKeySettings) -> Result<Self, StageError> {
        let current = source.resolve().await?;
        Ok(Self {
            source: source.clone(),
            current: std::sync::RwLock::new(current),
            last_reread: tokio::sync::Mutex::new(None),
        })
    }

    /// A key that is never read again (tests, and providers that need none).
    pub fn fixed(key: Option<Secret>) -> Self {
        Self {
            source: ApiKeySettings::default(),
            current: std::sync::RwLock::new(key),
            last_reread: tokio::sync::Mutex::new(None),
        }
    }

    /// The key to send now.
    pub fn current(&self) -> Option<Secret> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Sends the request `build` prepares with the current key; when the provider refuses it
    /// (401, 403) and a different key can be read from the source (a rotated key), sends it once
    /// more with that one. Status handling beyond that is the caller's.
    pub async fn send(
        &self,
        build: impl Fn(Option<&Secret>) -> reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let used = self.current();
        let response = build(used.as_ref()).send().await?;
        let refused = matches!(
            response.status(),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
        );
        if refused && self.changed_after_refusal(&used).await {
            return build(self.current().as_ref()).send().await;
        }
        Ok(response)
    }

    /// After the provider refused `used`: whether another key is now current (read again from
    /// the source unless a refusal had it read less than [`REREAD_INTERVAL`] ago), so the call
    /// is worth repeating once. A source that cannot be read leaves the current key in place.
    async fn changed_after_refusal(&self, used: &Option<Secret>) -> bool {
        let mut last_reread = self.last_reread.lock().await;
        if self.current() != *used {
            return true;
        }
        if !self.source.is_set() || last_reread.is_some_and(|at| at.elapsed() < REREAD_INTERVAL) {
            return false;
        }
        *last_reread = Some(std::time::Instant::now());
        match self.source.resolve().await {
            Ok(fresh) if fresh != *used => {
                tracing::info!("the provider refused its key; a new one was read from the key source");
                *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(reason = %error.reason, "the provider refused its key and the key source could not be read again");
                false
            }
        }
    }
}

/// `value` as an HTTP header value marked sensitive (HTTP/2 never indexes it; the clients' debug
/// output shows `Sensitive` instead of it), or None if it cannot be a header value.
pub fn sensitive_header(value: &str) -> Option<reqwest::header::HeaderValue> {
    let mut header = reqwest::header::HeaderValue::from_str(value).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// Reads `field` of the latest version of a KV v2 secret.
pub async fn read_vault(vault: &VaultKey) -> Result<Secret, StageError> {
    let token = match &vault.token_file {
        Some(file) => std::fs::read_to_string(file)
            .map(|text| text.trim().to_owned())
            .map_err(|error| {
                StageError::internal(format!("cannot read the Vault token_file {}: {error}", file.display()))
            })?,
        None => std::env::var(&vault.token_env).map_err(|_| {
            StageError::internal(format!(
                "environment variable `{}` (the Vault token) is not set",
                vault.token_env
            ))
        })?,
    };
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
    let token =
        sensitive_header(&token).ok_or_else(|| StageError::internal("the Vault token is not a valid header value"))?;
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

    fn file_source(path: PathBuf) -> ApiKeySettings {
        ApiKeySettings {
            api_key_file: Some(path),
            ..ApiKeySettings::default()
        }
    }

    fn vault_source(key: VaultKey) -> ApiKeySettings {
        ApiKeySettings {
            api_key_vault: Some(key),
            ..ApiKeySettings::default()
        }
    }

    #[test]
    fn a_secret_never_prints() {
        let secret = Secret::new("sk-very-secret");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        // Sent as a header (Anthropic's x-api-key, Vault's token), the key is marked sensitive
        // and the header's Debug output does not show it.
        let header = sensitive_header(secret.expose()).unwrap();
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains(secret.expose()), "{header:?}");
        assert!(sensitive_header("line\nbreak").is_none());
        assert_eq!(secret.expose(), "sk-very-secret");
    }

    #[tokio::test]
    async fn a_key_file_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-from-file\n").unwrap();
        let source = file_source(file.clone());
        assert_eq!(source.resolve().await.unwrap(), Some(Secret::new("sk-from-file")));
        let missing = dir.path().join("missing");
        let error = file_source(missing.clone()).resolve().await.unwrap_err();
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
            token_file: None,
        };
        let source = vault_source(vault.clone());
        assert_eq!(source.resolve().await.unwrap(), Some(Secret::new("sk-from-vault")));
        // A Vault Agent's token sink, read at every read.
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "root-token\n").unwrap();
        let from_file = VaultKey {
            token_env: "RAGSTREAM_TEST_NO_SUCH_VARIABLE".into(),
            token_file: Some(token_file.clone()),
            ..vault.clone()
        };
        let source_from_file = vault_source(from_file.clone());
        assert_eq!(
            source_from_file.resolve().await.unwrap(),
            Some(Secret::new("sk-from-vault"))
        );
        std::fs::write(&token_file, "revoked-token").unwrap();
        assert!(source_from_file.resolve().await.unwrap_err().reason.contains("403"));

        std::env::set_var(&token_env, "wrong-token");
        let error = source.resolve().await.unwrap_err();
        assert!(error.reason.contains("403"), "{}", error.reason);
        assert!(!error.reason.contains("wrong-token"));
        let missing_field = VaultKey {
            field: "other".into(),
            ..vault.clone()
        };
        std::env::set_var(&token_env, "root-token");
        let error = vault_source(missing_field.clone()).resolve().await.unwrap_err();
        assert!(error.reason.contains("no such string field"), "{}", error.reason);
        assert!(!error.reason.contains("sk-from-vault"));
    }

    #[tokio::test]
    async fn a_refused_key_is_read_again_from_its_file_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-old\n").unwrap();
        let key = ProviderKey::load(&file_source(file.clone())).await.unwrap();
        let old = key.current();
        assert_eq!(old, Some(Secret::new("sk-old")));
        // Unchanged file: nothing new to try.
        assert!(!key.changed_after_refusal(&old).await);
        // Rotated, but a refusal just had the file read: not read again yet.
        std::fs::write(&file, "sk-new\n").unwrap();
        assert!(!key.changed_after_refusal(&old).await);
        assert_eq!(key.current(), old);
        // Once the interval has passed it is, and the new key is current.
        key.last_reread
            .lock()
            .await
            .replace(std::time::Instant::now() - REREAD_INTERVAL);
        assert!(key.changed_after_refusal(&old).await);
        assert_eq!(key.current(), Some(Secret::new("sk-new")));
        // Another call that used the old key sees the change without a read.
        std::fs::remove_file(&file).unwrap();
        assert!(key.changed_after_refusal(&old).await);
        // A source that cannot be read keeps the current key.
        key.last_reread.lock().await.take();
        assert!(!key.changed_after_refusal(&key.current()).await);
        assert_eq!(key.current(), Some(Secret::new("sk-new")));
        // A fixed key is never read again.
        let fixed = ProviderKey::fixed(Some(Secret::new("k")));
        assert!(!fixed.changed_after_refusal(&fixed.current()).await);
    }
}
