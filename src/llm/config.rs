//! Which models a pipeline asks and how they are reached: the `models`, `retry` and
//! `circuit_breaker` settings of a `generate` stage, their checks, and the [`ModelChain`] built
//! from them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{
    AnthropicProvider, ChainModel, ChatProvider, CircuitBreaker, LocalProvider, ModelChain, OpenAiProvider,
    RetryPolicy, Usage,
};
use crate::error::Findings;
use crate::error::{ConfigError, StageError};
use crate::secrets::{ApiKeySettings, ProviderKey};
use serde_inline_default::serde_inline_default;

/// Which API a model is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelProvider {
    /// Any OpenAI-compatible `/v1/chat/completions` (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM).
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
    /// A GGUF chat model run in-process (`model_path`); no network, no key.
    Local,
}

/// Dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt (input) tokens.
    #[serde(default)]
    pub input_per_million: f64,
    /// Per million completion (output) tokens.
    #[serde(default)]
    pub output_per_million: f64,
}

impl Price {
    /// What `usage` costs at this price.
    pub fn cost(&self, usage: Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_million + usage.completion_tokens as f64 * self.output_per_million)
            / 1e6
    }
}

/// One model of the chain.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name in answers, audit events and metrics; defaults to `model`, or the file name of
    /// `model_path`.
    pub name: Option<String>,
    /// `openai`, `anthropic` or `local`.
    pub provider: ModelProvider,
    /// API root for `openai` / `anthropic` (e.g. `https://api.openai.com`).
    pub base_url: Option<String>,
    /// The model to ask for (`openai` / `anthropic`).
    pub model: Option<String>,
    /// Where the API key comes from: `api_key_env`, `api_key_file` or `api_key_vault`.
    #[serde(flatten)]
    pub api_key: ApiKeySettings,
    /// `local`: the GGUF file.
    pub model_path: Option<PathBuf>,
    /// Bound on one call.
    #[serde_inline_default(60_000)]
    pub timeout_ms: u64,
    /// The model's context window in tokens; passages are trimmed to fit it with the answer.
    #[serde_inline_default(8192)]
    pub context_tokens: usize,
    /// Prices, for the cost in answers, budgets and metrics. Unset: the list price of a
    /// well-known hosted `model` (see `llm::pricing`), else free.
    pub price: Option<Price>,
}

impl ModelConfig {
    /// The configured price, else the list price of a well-known hosted model, else zero.
    pub fn effective_price(&self) -> Price {
        let listed = || {
            let model = self
                .model
                .as_deref()
                .filter(|_| self.provider != ModelProvider::Local)?;
            let (input, output) = super::pricing::list_price(model)?;
            Some(Price {
                input_per_million: input,
                output_per_million: output,
            })
        };
        self.price.or_else(listed).unwrap_or_default()
    }

    /// The model's name in answers, audit events, metrics and tiers.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.model.clone())
            .or_else(|| {
                self.model_path
                    .as_ref()
                    .and_then(|p| p.file_stem())
                    .map(|s| s.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "unnamed".to_owned())
    }
}

/// Retries of one model.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmRetryConfig {
    /// Calls per model, the first included.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry (full jitter below it); doubles per retry.
    pub initial_backoff_ms: u64,
    /// Largest backoff ceiling; a longer `Retry-After` is still honoured.
    pub max_backoff_ms: u64,
    /// Bound on all calls and waits of a question, every model together.
    pub max_total_ms: u64,
}

impl Default for LlmRetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff_ms: 250,
            max_backoff_ms: 8_000,
            max_total_ms: 90_000,
        }
    }
}

/// When a model is given a rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before one trial call.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_ms: 30_000,
        }
    }
}

impl ModelConfig {
    /// Appends the problems of this model (at `at`) to `errors`; `max_output_tokens` is the
    /// answer's bound, which must leave room in the context window.
    pub fn validate(&self, at: &str, max_output_tokens: u32, errors: &mut Vec<ConfigError>) {
        self.api_key.validate(at, errors);
        let mut require = |field: &str, present: bool| {
            if !present {
                errors.push(ConfigError::new(
                    &format!("{at}.{field}"),
                    format!("is required for the {:?} provider", self.provider).to_lowercase(),
                ));
            }
        };
        match self.provider {
            ModelProvider::Openai | ModelProvider::Anthropic => {
                require("base_url", self.base_url.as_deref().is_some_and(|u| !u.is_empty()));
                require("model", self.model.as_deref().is_some_and(|m| !m.is_empty()));
            }
            ModelProvider::Local => match &self.model_path {
                None => require("model_path", false),
                Some(file) if !file.is_file() => errors.report(
                    at,
                    "model_path",
                    format!(
                        "{} not found (fetch models with deploy/local/models.sh)",
                        file.display()
                    ),
                ),
                Some(_) => {}
            },
        }
        if self.context_tokens <= max_output_tokens as usize {
            errors.report(
                at,
                "context_tokens",
                format!(
                    "must be larger than max_output_tokens ({max_output_tokens}), got {}",
                    self.context_tokens
                ),
            );
        }
    }

    /// The provider that reaches this model (a local model is loaded, which takes seconds).
    async fn provider(&self) -> Result<Arc<dyn ChatProvider>, StageError> {
        let timeout = Duration::from_millis(self.timeout_ms);
        let base_url = self.base_url.as_deref().unwrap_or_default();
        let name = self.model.as_deref().unwrap_or_default();
        let key = || ProviderKey::load(&self.api_key);
        Ok(match self.provider {
            ModelProvider::Openai => Arc::new(OpenAiProvider::new(base_url, name, key().await?, timeout)?),
            ModelProvider::Anthropic => Arc::new(AnthropicProvider::new(base_url, name, key().await?, timeout)?),
            ModelProvider::Local => {
                let path = self
                    .model_path
                    .clone()
                    .ok_or_else(|| StageError::internal("model_path was validated"))?;
                let loaded = tokio::task::spawn_blocking(move || super::shared_local_chat_model(&path))
                    .await
                    .map_err(|error| StageError::internal(format!("model loading panicked: {error}")))?
                    .map_err(|error| StageError::internal(error.to_string()))?;
                Arc::new(LocalProvider::new(loaded))
            }
        })
    }
}

/// OpenTelemetry's `gen_ai.provider.name` of the model called `name` among `models`:
/// `openai`, `anthropic`, or `ragstream.local` for a model run in-process.
pub fn provider_of(models: &[ModelConfig], name: &str) -> &'static str {
    model_named(models, name).map_or("unknown", |m| m.provider.as_str())
}

fn model_named<'a>(models: &'a [ModelConfig], name: &str) -> Option<&'a ModelConfig> {
    models.iter().find(|m| m.display_name() == name)
}

impl ModelProvider {
    /// The provider's name in metrics, audit events and the audit table.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelProvider::Openai => "openai",
            ModelProvider::Anthropic => "anthropic",
            ModelProvider::Local => "ragstream.local",
        }
    }
}

/// The price of the model named `name` among `models` (zero for a name not configured).
pub fn price_of(models: &[ModelConfig], name: &str) -> Price {
    model_named(models, name)
        .map(ModelConfig::effective_price)
        .unwrap_or_default()
}

impl ModelChain {
    /// The chain of `models` in order, each with its own circuit breaker, retried by `retry`.
    pub async fn connect(
        models: &[ModelConfig],
        retry: &LlmRetryConfig,
        breaker: &BreakerConfig,
    ) -> Result<Self, StageError> {
        let mut chain = Vec::with_capacity(models.len());
        for model in models {
            chain.push(ChainModel {
                name: model.display_name(),
                provider_name: model.provider.as_str(),
                provider: model.provider().await?,
                breaker: Arc::new(CircuitBreaker::new(
                    breaker.failure_threshold,
                    Duration::from_millis(breaker.open_ms),
                )),
            });
        }
        let policy = RetryPolicy {
            max_attempts: retry.max_attempts,
            initial_backoff: Duration::from_millis(retry.initial_backoff_ms),
            max_backoff: Duration::from_millis(retry.max_backoff_ms),
            max_total: Duration::from_millis(retry.max_total_ms),
            // Each provider's own timeout bounds a call; this only guards against a provider
            // that ignores it.
            call_timeout: Duration::from_millis(models.iter().map(|m| m.timeout_ms).max().unwrap_or(60_000) + 1_000),
        };
        Ok(ModelChain::new(chain, policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_per_million_tokens() {
        let price = Price {
            input_per_million: 0.15,
            output_per_million: 0.6,
        };
        let cost = price.cost(Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
        });
        assert!((cost - 0.45).abs() < 1e-12);
    }
}
