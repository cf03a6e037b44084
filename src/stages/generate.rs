//! `generate`: answers questions (the output of `retrieve`) through the layers of
//! [`crate::answering`]: replay, route, cache, admission, and the call to a chain of language
//! models.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde::Deserialize;

use super::{optional_sink, started, StageBuilder};
use crate::answering::admission::AdmissionLayer;
use crate::answering::cache::CacheLayer;
use crate::answering::call::CallLayer;
use crate::answering::fallback::{Fallback, MeaningModel};
use crate::answering::replay::{ReplayConfig, ReplayLayer};
use crate::answering::route::{RouteLayer, Routing};
use crate::answering::{Answering, Layer};
use crate::clock;
use crate::contracts::{AnswerDraft, AnswerStatus};
use crate::core_api::{MessageContext, Payload, Record, Stage, StageEnvironment};
use crate::cost::{CostControlConfig, CostControls};
use crate::error::Findings;
use crate::error::{ConfigError, StageError};
use crate::llm::{BreakerConfig, LlmRetryConfig, ModelChain, ModelConfig};
use crate::tools::{Toolbox, ToolsConfig};
use serde_inline_default::serde_inline_default;

/// Answers questions (the output of `retrieve`) with the first model of `models` that
/// succeeds; retries, circuit breakers and the fallback order are per model. When every model
/// fails, the answer is the best passages (`extractive`) if allowed, else `failed`. Extract
/// answers are validated against the requested JSON Schema, with one repair attempt.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// Models in order of preference.
    pub models: Vec<ModelConfig>,
    /// Answer with the best passages, labelled as such, when every model failed (not for
    /// `extract`, whose answer must be JSON).
    #[serde_inline_default(true)]
    pub fallback_extractive: bool,
    /// A local sentence-embedding model (a directory like the `embed` stage's `model_dir`)
    /// that also ranks the passages' sentences by closeness in meaning to the question for
    /// the extractive answer. Unset: by the words they share only.
    pub extractive_model_dir: Option<PathBuf>,
    /// Passages in an extractive answer (when no sentence answers).
    #[serde_inline_default(3)]
    pub extractive_passages: usize,
    /// Default bound on the answer's length (a question's `options.max_output_tokens` overrides it).
    #[serde_inline_default(512)]
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
    pub max_cost_per_request_usd: Option<f64>,
    /// Budgets and rate limits per tenant and user and the response cache, shared by every
    /// replica through Redis.
    pub cost_control: Option<Box<CostControlConfig>>,
    /// Replay records: a redelivered question gets the outcome it already got, without a
    /// second model call.
    #[serde(default)]
    pub replay: ReplayConfig,
    /// Tools the models may call while answering (see "Function calling" in the README).
    pub tools: Option<ToolsConfig>,
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
            errors.report(path, "max_cost_per_request_usd", "must be a positive number");
        }
    }
}

impl StageBuilder for GenerateConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.models.is_empty() && !self.fallback_extractive {
            errors.report(
                path,
                "models",
                "needs at least one model (or fallback_extractive: true for passages-only answers)",
            );
        }
        for (index, model) in self.models.iter().enumerate() {
            model.validate(&format!("{path}.models[{index}]"), self.max_output_tokens, errors);
        }
        if let Some(tools) = &self.tools {
            tools.validate(&format!("{path}.tools"), errors);
        }
        errors.require_nonzero(path, "retry.max_attempts", self.retry.max_attempts);
        self.validate_tiers(path, errors);
        if let Some(cost_control) = &self.cost_control {
            cost_control.validate(&format!("{path}.cost_control"), errors);
        }
        self.replay.validate(&format!("{path}.replay"), errors);
        if let Some(dir) = &self.extractive_model_dir {
            super::check_model_files(
                &format!("{path}.extractive_model_dir"),
                dir,
                &["config.json", "model.safetensors", "tokenizer.json"],
                errors,
            );
        }
    }

    fn sinks(&self) -> Vec<(&'static str, &str)> {
        optional_sink("partials_sink", &self.partials_sink)
    }

    fn needs_earlier(&self) -> Option<&'static str> {
        // The answer draft this stage reads is started by mask_pii.
        Some("mask_pii")
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(Generate {
            config: self.clone(),
            answering: OnceLock::new(),
        }))
    }
}

struct Generate {
    config: GenerateConfig,
    /// Built by `start`: a local model takes seconds to load, a store to connect.
    answering: OnceLock<Answering>,
}

impl Generate {
    /// The layers around the model call, outermost first (see [`crate::answering`]).
    async fn layers(
        &self,
        environment: &StageEnvironment,
    ) -> Result<(Vec<Box<dyn Layer>>, Option<Arc<Toolbox>>), StageError> {
        let config = &self.config;
        let chain = Arc::new(ModelChain::connect(&config.models, &config.retry, &config.circuit_breaker).await?);
        let meaning = match &config.extractive_model_dir {
            Some(dir) => {
                let dir = dir.clone();
                let loaded = tokio::task::spawn_blocking(move || MeaningModel::load(&dir))
                    .await
                    .map_err(|error| StageError::internal(format!("model loading panicked: {error}")))?;
                Some(loaded?)
            }
            None => None,
        };
        let fallback = Fallback {
            enabled: config.fallback_extractive,
            passages: config.extractive_passages,
            passages_only: config.models.is_empty(),
            meaning,
        };
        let controls = match &config.cost_control {
            Some(cost_control) => Some(Arc::new(CostControls::connect(cost_control).await?)),
            None => None,
        };
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        let mut tool_records = None;
        if config.replay.ttl_s > 0 {
            let shared = config
                .cost_control
                .as_ref()
                .map(|c| (c.store.as_str(), c.key_prefix.as_str(), c.on_store_unavailable));
            let replay = ReplayLayer::connect(&config.replay, shared, clock::system()).await?;
            tool_records = Some(replay.tool_records());
            layers.push(Box::new(replay));
        }
        let tools = match &config.tools {
            Some(tools) if !tools.definitions.is_empty() => {
                Some(Arc::new(Toolbox::build(tools, &environment.kafka, tool_records).await?))
            }
            _ => None,
        };
        layers.push(Box::new(RouteLayer {
            routing: Routing {
                models: config.models.clone(),
                tiers: config.tiers.clone(),
                task_tiers: config.task_tiers.clone(),
                max_cost_per_request_usd: config.max_cost_per_request_usd,
                max_output_tokens: config.max_output_tokens,
                temperature: config.temperature,
            },
            chain: chain.clone(),
            fallback: fallback.clone(),
        }));
        if let Some(controls) = controls {
            if controls.caches() {
                layers.push(Box::new(CacheLayer {
                    controls: controls.clone(),
                }));
            }
            layers.push(Box::new(AdmissionLayer {
                controls,
                fallback: fallback.clone(),
            }));
        }
        layers.push(Box::new(CallLayer {
            chain,
            models: config.models.clone(),
            partials_sink: config.partials_sink.clone(),
            fallback,
            tools: tools.clone(),
        }));
        Ok((layers, tools))
    }
}

#[async_trait]
impl Stage for Generate {
    async fn start(&self, environment: &StageEnvironment) -> Result<(), StageError> {
        let (layers, tools) = self.layers(environment).await?;
        let _ = self.answering.set(Answering::new(layers, tools));
        Ok(())
    }

    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let mut draft: AnswerDraft = record.payload.typed("an answer draft (put retrieve first)")?;
        let answering = started(&self.answering, "generate")?;
        // Nothing in the documents: the tools may still know (an order's status).
        if draft.status == Some(AnswerStatus::NoContext) && answering.offers_tools(&draft) {
            draft.reopen();
        }
        if !draft.is_decided() {
            answering.answer(&mut draft, context).await?;
        }
        let payload = Payload::holding(&draft, "the answer draft")?;
        Ok(vec![Record { payload, ..record }])
    }
}
