//! `generate`: asks a chain of language models to answer from the retrieved passages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::StageBuilder;
use crate::contracts::{AnswerDraft, AnswerStatus, PartialAnswer, Task, SCHEMA_VERSION};
use crate::core_api::{MessageContext, Payload, Record, Stage};
use crate::cost::{Admission, CostControlConfig, CostControls, Estimate};
use crate::error::{ConfigError, StageError};
use crate::llm::grounding;
use crate::llm::{
    assemble, citation, estimate_tokens, extractive_answer, parse_citations, AnthropicProvider, ChainModel,
    ChatMessage, ChatProvider, ChatRequest, CircuitBreaker, DeltaSink, Extracted, LocalProvider, ModelChain,
    OpenAiProvider, Prompt, RetryPolicy, Role, StreamEvent, Usage,
};
use crate::pii::{PiiScope, StreamRestorer};
use crate::secrets::{KeySource, ProviderKey, VaultKey};
use crate::telemetry::metrics::metrics;

/// The models a question may use, in order, and why those.
struct Plan {
    estimates: Vec<Estimate>,
    route: Option<String>,
}

/// `route` with `more` appended.
fn join_route(route: Option<String>, more: String) -> String {
    match route {
        Some(route) => format!("{route}; {more}"),
        None => more,
    }
}

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
    fn cost(&self, usage: Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_million + usage.completion_tokens as f64 * self.output_per_million)
            / 1e6
    }
}

/// One model of the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name in answers, audit events and metrics; defaults to `model`, or the file name of
    /// `model_path`.
    #[serde(default)]
    pub name: Option<String>,
    /// `openai`, `anthropic` or `local`.
    pub provider: ModelProvider,
    /// API root for `openai` / `anthropic` (e.g. `https://api.openai.com`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The model to ask for (`openai` / `anthropic`).
    #[serde(default)]
    pub model: Option<String>,
    /// Name of the environment variable holding the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A file holding the API key (e.g. a mounted Kubernetes Secret).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// The API key in HashiCorp Vault's KV v2 engine (read once, at start).
    #[serde(default)]
    pub api_key_vault: Option<VaultKey>,
    /// `local`: the GGUF file.
    #[serde(default)]
    pub model_path: Option<PathBuf>,
    /// Bound on one call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The model's context window in tokens; passages are trimmed to fit it with the answer.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: usize,
    /// Prices, for the cost in answers, budgets and metrics. Unset: the list price of a
    /// well-known hosted `model` (see `llm::pricing`), else free.
    #[serde(default)]
    pub price: Option<Price>,
}

fn default_timeout_ms() -> u64 {
    60_000
}

fn default_context_tokens() -> usize {
    8192
}

impl ModelConfig {
    /// The configured price, else the list price of a well-known hosted model, else zero.
    fn effective_price(&self) -> Price {
        let listed = || {
            let model = self
                .model
                .as_deref()
                .filter(|_| self.provider != ModelProvider::Local)?;
            let (input, output) = crate::llm::pricing::list_price(model)?;
            Some(Price {
                input_per_million: input,
                output_per_million: output,
            })
        };
        self.price.or_else(listed).unwrap_or_default()
    }

    fn display_name(&self) -> String {
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
#[serde(deny_unknown_fields)]
pub struct LlmRetryConfig {
    /// Calls per model, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry (full jitter below it); doubles per retry.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Largest backoff ceiling; a longer `Retry-After` is still honoured.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Bound on all calls and waits of a question, every model together.
    #[serde(default = "default_max_total_ms")]
    pub max_total_ms: u64,
}

impl Default for LlmRetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_total_ms: default_max_total_ms(),
        }
    }
}

fn default_max_attempts() -> u32 {
    4
}

fn default_initial_backoff_ms() -> u64 {
    250
}

fn default_max_backoff_ms() -> u64 {
    8_000
}

fn default_max_total_ms() -> u64 {
    90_000
}

/// When a model is given a rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open the circuit.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before one trial call.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: default_failure_threshold(),
            open_ms: default_open_ms(),
        }
    }
}

fn default_failure_threshold() -> u32 {
    5
}

fn default_open_ms() -> u64 {
    30_000
}

/// Answers questions (the output of `retrieve`) with the first model of `models` that
/// succeeds; retries, circuit breakers and the fallback order are per model. When every model
/// fails, the answer is the best passages (`extractive`) if allowed, else `failed`. Extract
/// answers are validated against the requested JSON Schema, with one repair attempt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// Models in order of preference.
    pub models: Vec<ModelConfig>,
    /// Answer with the best passages, labelled as such, when every model failed (not for
    /// `extract`, whose answer must be JSON).
    #[serde(default = "default_true")]
    pub fallback_extractive: bool,
    /// Passages in an extractive answer.
    #[serde(default = "default_extractive_passages")]
    pub extractive_passages: usize,
    /// Default bound on the answer's length (a question's `options.max_output_tokens` overrides it).
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: f32,
    /// Retries per model.
    #[serde(default)]
    pub retry: LlmRetryConfig,
    /// Circuit breaker per model.
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    /// Sink for partial answers (`schemas/partial_answers.schema.json`) while a model writes:
    /// the models are then called in streaming mode. Not for `extract`, whose answer is only
    /// useful once validated. Unset: no streaming.
    #[serde(default)]
    pub partials_sink: Option<String>,
    /// Named groups of `models` (by name), each in order of preference. A question uses the
    /// tier its `options.model_tier` names, else its task's (`task_tiers`), else every model.
    #[serde(default)]
    pub tiers: BTreeMap<String, Vec<String>>,
    /// Task (`qa`, `summarize`, `extract`, `report`) → tier.
    #[serde(default)]
    pub task_tiers: BTreeMap<String, String>,
    /// Skip a model whose estimated cost for the question (prompt tokens and the answer's
    /// bound, at its price) is above this; none left: the extractive answer.
    #[serde(default)]
    pub max_cost_per_request_usd: Option<f64>,
    /// Budgets and rate limits per tenant and user, the response cache and replay records,
    /// shared by every replica through Redis.
    #[serde(default)]
    pub cost_control: Option<Box<CostControlConfig>>,
}

fn default_true() -> bool {
    true
}

fn default_extractive_passages() -> usize {
    3
}

fn default_max_output_tokens() -> u32 {
    512
}

impl GenerateConfig {
    fn validate_tiers(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let names: Vec<String> = self.models.iter().map(ModelConfig::display_name).collect();
        for (tier, models) in &self.tiers {
            if models.is_empty() {
                errors.push(ConfigError::new(&format!("{path}.tiers.{tier}"), "names no model"));
            }
            for model in models.iter().filter(|m| !names.contains(m)) {
                errors.push(ConfigError::new(
                    &format!("{path}.tiers.{tier}"),
                    format!("`{model}` is not the name of one of `models` ({})", names.join(", ")),
                ));
            }
        }
        for (task, tier) in &self.task_tiers {
            if !["qa", "summarize", "extract", "report"].contains(&task.as_str()) {
                errors.push(ConfigError::new(
                    &format!("{path}.task_tiers.{task}"),
                    "not a task (qa, summarize, extract, report)",
                ));
            }
            if !self.tiers.contains_key(tier) {
                errors.push(ConfigError::new(
                    &format!("{path}.task_tiers.{task}"),
                    format!("`{tier}` is not one of `tiers`"),
                ));
            }
        }
        if self
            .max_cost_per_request_usd
            .is_some_and(|ceiling| !(ceiling > 0.0 && ceiling.is_finite()))
        {
            errors.push(ConfigError::new(
                &format!("{path}.max_cost_per_request_usd"),
                "must be a positive number",
            ));
        }
    }
}

impl StageBuilder for GenerateConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.models.is_empty() && !self.fallback_extractive {
            errors.push(ConfigError::new(
                &format!("{path}.models"),
                "needs at least one model (or fallback_extractive: true for passages-only answers)",
            ));
        }
        for (index, model) in self.models.iter().enumerate() {
            let at = format!("{path}.models[{index}]");
            model.key_source().validate(&at, errors);
            let mut require = |field: &str, present: bool| {
                if !present {
                    errors.push(ConfigError::new(
                        &format!("{at}.{field}"),
                        format!("is required for the {:?} provider", model.provider).to_lowercase(),
                    ));
                }
            };
            match model.provider {
                ModelProvider::Openai | ModelProvider::Anthropic => {
                    require("base_url", model.base_url.as_deref().is_some_and(|u| !u.is_empty()));
                    require("model", model.model.as_deref().is_some_and(|m| !m.is_empty()));
                }
                ModelProvider::Local => match &model.model_path {
                    None => require("model_path", false),
                    Some(file) if !file.is_file() => errors.push(ConfigError::new(
                        &format!("{at}.model_path"),
                        format!(
                            "{} not found (fetch models with deploy/local/models.sh)",
                            file.display()
                        ),
                    )),
                    Some(_) => {}
                },
            }
            if model.context_tokens <= self.max_output_tokens as usize {
                errors.push(ConfigError::new(
                    &format!("{at}.context_tokens"),
                    format!(
                        "must be larger than max_output_tokens ({}), got {}",
                        self.max_output_tokens, model.context_tokens
                    ),
                ));
            }
        }
        if self.retry.max_attempts == 0 {
            errors.push(ConfigError::new(
                &format!("{path}.retry.max_attempts"),
                "must be at least 1",
            ));
        }
        self.validate_tiers(path, errors);
        if let Some(cost_control) = &self.cost_control {
            cost_control.validate(&format!("{path}.cost_control"), errors);
        }
    }

    fn sinks(&self) -> Vec<(&'static str, &str)> {
        self.partials_sink
            .iter()
            .map(|sink| ("partials_sink", sink.as_str()))
            .collect()
    }

    fn needs_earlier(&self) -> Option<&'static str> {
        // The answer draft this stage reads is started by mask_pii.
        Some("mask_pii")
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(Generate {
            config: self.clone(),
            chain: OnceLock::new(),
            controls: OnceLock::new(),
        }))
    }
}

struct Generate {
    config: GenerateConfig,
    /// Built by `start`: a local model takes seconds to load.
    chain: OnceLock<ModelChain>,
    /// Connected by `start` when `cost_control` is configured.
    controls: OnceLock<CostControls>,
}

impl ModelConfig {
    fn key_source(&self) -> KeySource<'_> {
        KeySource {
            env: self.api_key_env.as_deref(),
            file: self.api_key_file.as_ref(),
            vault: self.api_key_vault.as_ref(),
        }
    }
}

async fn provider(model: &ModelConfig) -> Result<Arc<dyn ChatProvider>, StageError> {
    let timeout = Duration::from_millis(model.timeout_ms);
    let base_url = model.base_url.as_deref().unwrap_or_default();
    let name = model.model.as_deref().unwrap_or_default();
    Ok(match model.provider {
        ModelProvider::Openai => Arc::new(
            OpenAiProvider::new(base_url, name, ProviderKey::load(model.key_source()).await?, timeout)
                .map_err(StageError::internal)?,
        ),
        ModelProvider::Anthropic => Arc::new(
            AnthropicProvider::new(base_url, name, ProviderKey::load(model.key_source()).await?, timeout)
                .map_err(StageError::internal)?,
        ),
        ModelProvider::Local => {
            let path = model
                .model_path
                .clone()
                .ok_or_else(|| StageError::internal("model_path was validated"))?;
            let loaded = tokio::task::spawn_blocking(move || crate::llm::shared_local_chat_model(&path))
                .await
                .map_err(|error| StageError::internal(format!("model loading panicked: {error}")))?
                .map_err(StageError::internal)?;
            Arc::new(LocalProvider::new(loaded))
        }
    })
}

/// The JSON object in a model's reply: the whole reply, or the part inside a code fence or
/// between the first `{` and the last `}` (small models like to add words around it).
fn json_in(reply: &str) -> Option<Value> {
    let trimmed = reply.trim();
    if let Ok(value) = serde_json::from_str(trimmed) {
        return Some(value);
    }
    let start = trimmed.find('{')?;
    let end = trimmed.rfind('}')?;
    serde_json::from_str(trimmed.get(start..=end)?).ok()
}

/// Checks an extract reply: the JSON it holds, or every way it breaks `schema`.
fn check_extract(reply: &str, schema: Option<&Value>) -> Result<Value, String> {
    let value = json_in(reply).ok_or_else(|| "the reply is not a JSON object".to_owned())?;
    let Some(schema) = schema else {
        return Ok(value);
    };
    let validator = jsonschema::validator_for(schema).map_err(|e| format!("the extract schema is invalid: {e}"))?;
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .map(|error| {
            let at = error.instance_path().to_string();
            format!("{}: {error}", if at.is_empty() { "/" } else { &at })
        })
        .collect();
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems.join("; "))
    }
}

impl Generate {
    fn chain(&self) -> Result<&ModelChain, StageError> {
        self.chain
            .get()
            .ok_or_else(|| StageError::internal("generate stage used before start"))
    }

    fn price_of(&self, model: &str) -> Price {
        self.config
            .models
            .iter()
            .find(|m| m.display_name() == model)
            .map(ModelConfig::effective_price)
            .unwrap_or_default()
    }

    /// Calls the chain and records the calls on the draft; the answer text, or why none came.
    async fn call(
        &self,
        draft: &mut AnswerDraft,
        request: &ChatRequest,
        deltas: Option<&DeltaSink>,
        models: &[String],
    ) -> Result<String, String> {
        let chain = self.chain().map_err(|error| error.reason)?;
        let names: Vec<&str> = models.iter().map(String::as_str).collect();
        let outcome = chain.complete_among(request, deltas, &names).await;
        for attempt in &outcome.attempts {
            metrics()
                .llm_attempts
                .with_label_values(&[&attempt.model, &attempt.outcome])
                .inc();
            // An attempt the breaker refused never reached the model: no request to time.
            if attempt.outcome != "circuit_open" {
                metrics()
                    .llm_request_seconds
                    .with_label_values(&[&attempt.model])
                    .observe(attempt.latency_ms / 1000.0);
            }
        }
        draft.attempts.extend(outcome.attempts);
        let answered = outcome.result.map_err(|error| error.to_string())?;
        let usage = answered.completion.usage;
        draft.usage.prompt_tokens += usage.prompt_tokens;
        draft.usage.completion_tokens += usage.completion_tokens;
        draft.cost_usd += self.price_of(&answered.model).cost(usage);
        if draft.model.is_none() {
            draft.fallback_reason = answered.fallback_reason;
        }
        draft.model = Some(answered.model);
        Ok(answered.completion.text)
    }

    /// [`call`](Self::call) in streaming mode, producing partial answers to `sink` as the
    /// text comes.
    async fn call_streaming<'a>(
        &self,
        draft: &mut AnswerDraft,
        request: &ChatRequest,
        context: &'a MessageContext,
        sink: &str,
        models: &[String],
    ) -> (Result<String, String>, PartialStream<'a>) {
        let mut partials = PartialStream {
            context,
            sink: sink.to_owned(),
            request_id: draft.request_id.clone(),
            tenant: draft.tenant.clone(),
            seq: 0,
            current: None,
            restorer: StreamRestorer::default(),
        };
        let (deltas, receiver) = DeltaSink::channel();
        let call = async move {
            let reply = self.call(draft, request, Some(&deltas), models).await;
            drop(deltas); // ends the forwarding below
            reply
        };
        let (reply, ()) = tokio::join!(call, partials.forward(receiver));
        // The caller ends the stream once it knows whether the reply is the answer.
        (reply, partials)
    }

    async fn answer(&self, draft: &mut AnswerDraft, context: &MessageContext) -> Result<(), StageError> {
        let controls = self.controls.get();
        if let Some(controls) = controls {
            // A redelivered question: the outcome it already got, without a model call.
            if let Some(stored) = controls.replayed(draft).await? {
                metrics().replays.inc();
                stored.apply(draft);
                return Ok(());
            }
        }
        let options = draft.options.clone().unwrap_or_default();
        let max_output = options.max_output_tokens.unwrap_or(self.config.max_output_tokens);
        let context_tokens = self
            .config
            .models
            .iter()
            .map(|m| m.context_tokens)
            .min()
            .unwrap_or(8192);
        // The models' own tokenizers where known (a local model), else an estimate.
        let count_tokens = |text: &str| match self.chain.get() {
            Some(chain) => chain.count_tokens(text),
            None => estimate_tokens(text),
        };
        let prompt = assemble(
            draft.task,
            &draft.question,
            &draft.passages,
            options.extract_schema.as_ref(),
            context_tokens,
            max_output as usize,
            &count_tokens,
        );
        let request = ChatRequest {
            messages: prompt.messages.clone(),
            max_output_tokens: max_output,
            temperature: self.config.temperature,
            json_output: draft.task == Task::Extract,
        };
        let plan = self.plan(draft, &request);
        draft.route = plan.route.clone();
        let names: Vec<String> = plan.estimates.iter().map(|e| e.model.clone()).collect();
        if names.is_empty() {
            let reason = match &plan.route {
                Some(route) if !self.config.models.is_empty() => format!("no model may answer ({route})"),
                _ => "no model is configured".to_owned(),
            };
            self.fall_back(draft, &reason);
            return self.remember(draft).await;
        }
        let Some(controls) = controls else {
            return self.answer_with(draft, context, &prompt, request, &names).await;
        };
        let cache_key = controls.cache_key(draft, &names, &request.messages);
        if let Some(key) = &cache_key {
            if let Some(hit) = controls.cached(key, draft, &names).await? {
                hit.apply(draft);
                return self.remember(draft).await;
            }
        }
        let (index, reservation) = match controls.admit(draft, &plan.estimates).await? {
            Admission::Admitted {
                index,
                reservation,
                downgraded,
            } => {
                if let Some(why) = downgraded {
                    draft.route = Some(join_route(draft.route.take(), why));
                }
                (index, reservation)
            }
            Admission::Refused { refusal, extractive } => {
                if extractive && draft.task != Task::Extract && self.config.fallback_extractive {
                    draft.route = Some(join_route(
                        draft.route.take(),
                        format!("extractive answer: {}", refusal.reason),
                    ));
                    self.fall_back(draft, &refusal.reason);
                } else {
                    draft.decide(refusal.status, Some(refusal.reason));
                }
                return self.remember(draft).await;
            }
        };
        let answered = self
            .answer_with(draft, context, &prompt, request, &names[index..])
            .await;
        // Settle even when the call failed: what it did not use goes back to the budgets.
        controls.settle(draft, reservation).await?;
        answered?;
        let from_a_model = draft.status == Some(AnswerStatus::Ok) && draft.model.as_deref() != Some("extractive");
        if let (Some(key), true) = (&cache_key, from_a_model) {
            controls.cache(key, draft, &names).await?;
        }
        self.remember(draft).await
    }

    /// Records the outcome for replays, when cost control is on.
    async fn remember(&self, draft: &AnswerDraft) -> Result<(), StageError> {
        match self.controls.get() {
            Some(controls) => controls.remember(draft).await,
            None => Ok(()),
        }
    }

    /// The models a question may use, in order, with what each call is expected to cost: the
    /// tier of the question (its `model_tier`) or of its task, less the models whose estimate
    /// is above `max_cost_per_request_usd`.
    fn plan(&self, draft: &AnswerDraft, request: &ChatRequest) -> Plan {
        let requested = draft.options.as_ref().and_then(|o| o.model_tier.clone());
        let task = draft.task.as_str();
        let tier = match &requested {
            Some(tier) if self.config.tiers.contains_key(tier) => Some((tier.clone(), "requested".to_owned())),
            _ => self
                .config
                .task_tiers
                .get(task)
                .map(|tier| (tier.clone(), format!("task {task}"))),
        };
        let (names, mut route): (Vec<String>, Vec<String>) = match &tier {
            Some((tier, why)) => (
                self.config.tiers.get(tier).cloned().unwrap_or_default(),
                vec![format!("tier {tier} ({why})")],
            ),
            None => (
                self.config.models.iter().map(ModelConfig::display_name).collect(),
                Vec::new(),
            ),
        };
        if let Some(unknown) = requested.filter(|t| !self.config.tiers.contains_key(t)) {
            route.push(format!("unknown tier `{unknown}` requested"));
        }
        let text: String = request
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let output = u64::from(request.max_output_tokens);
        let mut estimates: Vec<Estimate> = names
            .iter()
            .map(|name| {
                let prompt = match self.chain.get() {
                    Some(chain) => chain.count_tokens_for(name, &text),
                    None => estimate_tokens(&text),
                } as u64;
                let usage = Usage {
                    prompt_tokens: prompt,
                    completion_tokens: output,
                };
                Estimate {
                    model: name.clone(),
                    tokens: (prompt + output) as f64,
                    cost_usd: self.price_of(name).cost(usage),
                }
            })
            .collect();
        if let Some(ceiling) = self.config.max_cost_per_request_usd {
            let (fit, over): (Vec<Estimate>, Vec<Estimate>) =
                estimates.into_iter().partition(|e| e.cost_usd <= ceiling);
            for skipped in &over {
                route.push(format!(
                    "{} skipped: estimated ${:.4} above the ${ceiling} ceiling",
                    skipped.model, skipped.cost_usd
                ));
            }
            estimates = fit;
        }
        Plan {
            estimates,
            route: (!route.is_empty()).then(|| route.join("; ")),
        }
    }

    /// Calls the models named in `models` and decides the draft with their answer.
    async fn answer_with(
        &self,
        draft: &mut AnswerDraft,
        context: &MessageContext,
        prompt: &Prompt,
        mut request: ChatRequest,
        models: &[String],
    ) -> Result<(), StageError> {
        let schema = draft.options.as_ref().and_then(|o| o.extract_schema.clone());
        let schema = schema.as_ref();
        let streaming_sink = self
            .config
            .partials_sink
            .as_deref()
            .filter(|_| draft.task != Task::Extract && context.can_produce_now());
        let (reply, mut stream) = match streaming_sink {
            _ if self.config.models.is_empty() => (Err("no model is configured".to_owned()), None),
            Some(sink) => {
                let (reply, stream) = self.call_streaming(draft, &request, context, sink, models).await;
                (reply, Some(stream))
            }
            None => (self.call(draft, &request, None, models).await, None),
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(reason) => {
                self.fall_back(draft, &reason);
                if let Some(stream) = stream.as_mut() {
                    stream.replace_with(draft).await;
                }
                return Ok(());
            }
        };
        if draft.task != Task::Extract {
            let passages: Vec<&str> = prompt.passages.iter().map(|p| p.text.as_str()).collect();
            if let Some(non_answer) = grounding::judge(&reply, &draft.question, &passages) {
                self.not_an_answer(draft, reply, &non_answer);
                if let Some(stream) = stream.as_mut() {
                    stream.replace_with(draft).await;
                }
                return Ok(());
            }
            if let Some(stream) = stream.as_mut() {
                stream.finish().await;
            }
            draft.citations = parse_citations(&reply, &prompt.passages);
            if draft.citations.is_empty() {
                // The model cited nothing: its sources are the passages it took its words from.
                draft.citations = grounding::supporting_passages(&reply, &passages)
                    .into_iter()
                    .map(|i| citation(i + 1, &prompt.passages[i]))
                    .collect();
            }
            draft.answer = Some(reply);
            draft.decide(AnswerStatus::Ok, None);
            return Ok(());
        }
        // Extract: the reply must be JSON valid against the schema; one repair attempt.
        let checked = match check_extract(&reply, schema) {
            Ok(value) => Ok(value),
            Err(problem) => {
                request.messages.push(ChatMessage::new(Role::Assistant, reply.clone()));
                request.messages.push(ChatMessage::new(
                    Role::User,
                    format!("That reply is not valid: {problem}. Reply with only the corrected JSON object."),
                ));
                match self.call(draft, &request, None, models).await {
                    Ok(repaired) => check_extract(&repaired, schema),
                    Err(reason) => Err(reason),
                }
            }
        };
        match checked {
            Ok(value) => {
                draft.citations = prompt
                    .passages
                    .iter()
                    .enumerate()
                    .map(|(i, p)| citation(i + 1, p))
                    .collect();
                draft.answer = Some(value.to_string());
                draft.data = Some(value);
                draft.decide(AnswerStatus::Ok, None);
            }
            Err(problem) => draft.decide(
                AnswerStatus::Failed,
                Some(format!("the answer is not valid against the extract schema: {problem}")),
            ),
        }
        Ok(())
    }

    /// The model replied with something that is not an answer (empty, bare citations, the
    /// question again, unsupported): the best passages if allowed (`extractive`), else the reply
    /// marked `low_confidence`; never `ok`.
    fn not_an_answer(&self, draft: &mut AnswerDraft, reply: String, non_answer: &grounding::NonAnswer) {
        let reason = non_answer.reason();
        if self.config.fallback_extractive {
            self.answer_from_passages(draft, reason);
        } else {
            draft.citations = Vec::new();
            draft.answer = Some(reply);
            draft.decide(AnswerStatus::LowConfidence, Some(reason));
        }
    }

    /// The best passages as the answer, status `extractive`, and why no model's answer is used.
    fn answer_from_passages(&self, draft: &mut AnswerDraft, why: String) {
        let (text, citations) = match extractive_answer(
            &draft.question,
            &draft.passages,
            self.config.extractive_passages,
            // With no model the passages answer every question, and may say they cannot;
            // after a model's failed attempt they answer what they can.
            self.config.models.is_empty(),
        ) {
            Extracted::Answer(text, citations) | Extracted::Passages(text, citations) => (text, citations),
            Extracted::NotInPassages => {
                draft.fallback_reason = Some(why);
                draft.decide(
                    AnswerStatus::NoContext,
                    Some("the retrieved passages do not answer the question".to_owned()),
                );
                return;
            }
        };
        draft.answer = Some(text);
        draft.citations = citations;
        draft.fallback_reason = Some(why);
        draft.model = Some("extractive".to_owned());
        draft.decide(AnswerStatus::Extractive, None);
    }

    /// Every model failed: the best passages if allowed, else `failed`.
    fn fall_back(&self, draft: &mut AnswerDraft, reason: &str) {
        if self.config.fallback_extractive && draft.task != Task::Extract {
            self.answer_from_passages(draft, format!("no model answered: {reason}"));
        } else {
            draft.decide(AnswerStatus::Failed, Some(format!("no model answered: {reason}")));
        }
    }
}

#[async_trait]
impl Stage for Generate {
    async fn start(&self) -> Result<(), StageError> {
        let breaker = &self.config.circuit_breaker;
        let mut models = Vec::with_capacity(self.config.models.len());
        for model in &self.config.models {
            models.push(ChainModel {
                name: model.display_name(),
                provider: provider(model).await?,
                breaker: Arc::new(CircuitBreaker::new(
                    breaker.failure_threshold,
                    Duration::from_millis(breaker.open_ms),
                )),
            });
        }
        let retry = &self.config.retry;
        let policy = RetryPolicy {
            max_attempts: retry.max_attempts,
            initial_backoff: Duration::from_millis(retry.initial_backoff_ms),
            max_backoff: Duration::from_millis(retry.max_backoff_ms),
            max_total: Duration::from_millis(retry.max_total_ms),
            // Each provider's own timeout bounds a call; this only guards against a provider
            // that ignores it.
            call_timeout: Duration::from_millis(
                self.config.models.iter().map(|m| m.timeout_ms).max().unwrap_or(60_000) + 1_000,
            ),
        };
        let _ = self.chain.set(ModelChain::new(models, policy));
        if let Some(config) = &self.config.cost_control {
            let _ = self.controls.set(CostControls::connect(config).await?);
        }
        Ok(())
    }

    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let mut draft: AnswerDraft = record
            .payload
            .into_typed()
            .map_err(|error| StageError::input(format!("not an answer draft (put retrieve first): {error}")))?;
        if !draft.is_decided() {
            self.answer(&mut draft, context).await?;
        }
        let payload = Payload::from_typed(&draft)
            .map_err(|error| StageError::internal(format!("cannot serialize the answer draft: {error}")))?;
        Ok(vec![Record { payload, ..record }])
    }
}

/// Turns a streaming call's events into partial answers, personal data restored.
struct PartialStream<'a> {
    context: &'a MessageContext,
    sink: String,
    request_id: String,
    tenant: String,
    seq: u64,
    /// The model and attempt the text now arriving belongs to.
    current: Option<(String, u32)>,
    restorer: StreamRestorer,
}

impl PartialStream<'_> {
    /// Produces partials until the call ends. Events that queued up while the last partials
    /// were being produced go out as one partial: a slow broker gets fewer, larger pieces
    /// instead of slowing the model down.
    async fn forward(&mut self, mut receiver: tokio::sync::mpsc::UnboundedReceiver<StreamEvent>) {
        while let Some(first) = receiver.recv().await {
            let mut events = vec![first];
            while let Ok(event) = receiver.try_recv() {
                events.push(event);
            }
            let mut records = Vec::new();
            let mut text = String::new();
            for event in events {
                match event {
                    StreamEvent::Attempt { model, attempt } => {
                        records.extend(self.partial(std::mem::take(&mut text), false));
                        // What the failed attempt held back is void with it.
                        self.restorer = StreamRestorer::default();
                        self.current = Some((model, attempt));
                    }
                    StreamEvent::Text(piece) => {
                        let restored = self.restore(&piece);
                        text.push_str(&restored);
                    }
                }
            }
            records.extend(self.partial(text, false));
            self.send(records).await;
        }
    }

    /// No model's streamed reply is the answer (every attempt failed, or the reply was not an
    /// answer): the answer given instead, whole, as the last partial, so a follower's stream
    /// ends with what the answers topic says. Nothing is sent when there is no answer text.
    async fn replace_with(&mut self, draft: &AnswerDraft) {
        let Some(answer) = draft.answer.as_deref() else {
            return;
        };
        let attempt = self.current.as_ref().map_or(1, |(_, attempt)| attempt + 1);
        self.current = Some((draft.model.clone().unwrap_or_else(|| "extractive".to_owned()), attempt));
        self.restorer = StreamRestorer::default();
        let restored = self.restore(answer);
        self.end_with(restored).await;
    }

    /// The last partial of the attempt that answered: what the restorer still held back.
    async fn finish(&mut self) {
        self.end_with(String::new()).await;
    }

    /// The last partial: `text`, then what the restorer still held back, marked done.
    async fn end_with(&mut self, text: String) {
        let rest = match self.context.extension::<PiiScope>() {
            Some(scope) => scope.with_vault(|vault| self.restorer.finish(vault)),
            None => String::new(),
        };
        let last = self.partial_always(text + &rest, true);
        self.send(last.into_iter().collect()).await;
    }

    fn restore(&mut self, piece: &str) -> String {
        let context = self.context;
        match context.extension::<PiiScope>() {
            Some(scope) => scope.with_vault(|vault| self.restorer.push(piece, vault)),
            None => piece.to_owned(),
        }
    }

    /// A partial carrying `delta`, unless it is empty.
    fn partial(&mut self, delta: String, done: bool) -> Option<Record> {
        if delta.is_empty() {
            return None;
        }
        self.partial_always(delta, done)
    }

    fn partial_always(&mut self, delta: String, done: bool) -> Option<Record> {
        let (model, attempt) = self.current.clone()?;
        let partial = PartialAnswer {
            schema_version: SCHEMA_VERSION,
            request_id: self.request_id.clone(),
            tenant: self.tenant.clone(),
            seq: self.seq,
            model,
            attempt,
            delta,
            done,
        };
        self.seq += 1;
        Some(Record {
            key: Some(self.request_id.clone().into_bytes()),
            payload: Payload::from_typed(&partial).ok()?,
            headers: Vec::new(),
            sink: Some(self.sink.clone()),
        })
    }

    async fn send(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        if let Err(error) = self.context.produce_now(records).await {
            // Progress is lost, not the answer: that comes on the answers topic regardless.
            tracing::warn!(request_id = %self.request_id, %error, "cannot produce partial answers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_replies_are_checked_against_the_schema() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["price"],
            "properties": {"price": {"type": "number"}}
        });
        assert_eq!(
            check_extract("Sure! ```json\n{\"price\": 12.5}\n```", Some(&schema)).unwrap(),
            serde_json::json!({"price": 12.5})
        );
        let problem = check_extract(r#"{"price": "cheap"}"#, Some(&schema)).unwrap_err();
        assert!(problem.starts_with("/price: "), "{problem}");
        assert_eq!(
            check_extract("no json here", Some(&schema)).unwrap_err(),
            "the reply is not a JSON object"
        );
    }

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
