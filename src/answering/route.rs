//! Which models may answer a question, and what each call is expected to cost: the prompt is
//! assembled for the smallest context window, the tier is the question's own (`model_tier`)
//! or its task's, and a model whose estimate is above the per-request ceiling is skipped.
//! When no model is left, the passages answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::fallback::Fallback;
use super::{CallPlan, Layer, Next, Turn};
use crate::contracts::{AnswerDraft, Task};
use crate::cost::Estimate;
use crate::error::StageError;
use crate::llm::{assemble, price_of, ChatRequest, ModelChain, ModelConfig, Usage};

/// The routing settings of a `generate` stage.
#[derive(Debug, Clone)]
pub struct Routing {
    pub models: Vec<ModelConfig>,
    /// Named groups of `models`, in order of preference.
    pub tiers: BTreeMap<String, Vec<String>>,
    /// Task → tier.
    pub task_tiers: BTreeMap<String, String>,
    pub max_cost_per_request_usd: Option<f64>,
    /// The answer's bound unless the question sets its own.
    pub max_output_tokens: u32,
    pub temperature: f32,
}

/// Plans the call, or lets the passages answer when no model may.
pub struct RouteLayer {
    pub routing: Routing,
    /// Counts tokens with each model's own tokenizer where it is known.
    pub chain: Arc<ModelChain>,
    pub fallback: Fallback,
}

#[async_trait]
impl Layer for RouteLayer {
    async fn answer(&self, turn: &mut Turn<'_>, next: Next<'_>) -> Result<(), StageError> {
        let plan = self.plan(turn.draft);
        if plan.estimates.is_empty() {
            let reason = match &turn.draft.provenance.route {
                Some(route) if !self.routing.models.is_empty() => format!("no model may answer ({route})"),
                _ => "no model is configured".to_owned(),
            };
            return self.fallback.no_model_answered(turn.draft, &reason).await;
        }
        turn.call = Some(plan);
        next.answer(turn).await
    }
}

/// What asking `name` with `request` is expected to take: its prompt counted with the model's
/// own tokenizer where known, and the answer's bound, at the model's price.
pub(super) fn estimate(chain: &ModelChain, prices: &[ModelConfig], name: &str, request: &ChatRequest) -> Estimate {
    let text: String = request
        .messages
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let prompt = chain.count_tokens_for(name, &text) as u64;
    let output = u64::from(request.max_output_tokens);
    let usage = Usage {
        prompt_tokens: prompt,
        completion_tokens: output,
    };
    Estimate {
        model: name.to_owned(),
        tokens: (prompt + output) as f64,
        cost_usd: price_of(prices, name).cost(usage),
    }
}

impl RouteLayer {
    /// The prompt and the models that may answer it; sets the draft's route (why those).
    fn plan(&self, draft: &mut AnswerDraft) -> CallPlan {
        let routing = &self.routing;
        let options = draft.options.clone().unwrap_or_default();
        let max_output = options.max_output_tokens.unwrap_or(routing.max_output_tokens);
        let context_tokens = routing.models.iter().map(|m| m.context_tokens).min().unwrap_or(8192);
        // The models' own tokenizers where known (a local model), else an estimate.
        let count_tokens = |text: &str| self.chain.count_tokens(text);
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
            temperature: routing.temperature,
            json_output: draft.task == Task::Extract,
            ..ChatRequest::new(prompt.messages.clone(), max_output)
        };
        let (names, mut route) = self.tier(draft);
        let mut estimates: Vec<Estimate> = names
            .iter()
            .map(|name| estimate(&self.chain, &routing.models, name, &request))
            .collect();
        if let Some(ceiling) = routing.max_cost_per_request_usd {
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
        draft.provenance.route = (!route.is_empty()).then(|| route.join("; "));
        CallPlan {
            prompt,
            request,
            estimates,
            later_turns: None,
        }
    }

    /// The models of the question's tier (its `model_tier`, else its task's), else every
    /// model; and why.
    fn tier(&self, draft: &AnswerDraft) -> (Vec<String>, Vec<String>) {
        let routing = &self.routing;
        let requested = draft.options.as_ref().and_then(|o| o.model_tier.clone());
        let task = draft.task.as_str();
        let tier = match &requested {
            Some(tier) if routing.tiers.contains_key(tier) => Some((tier.clone(), "requested".to_owned())),
            _ => routing
                .task_tiers
                .get(task)
                .map(|tier| (tier.clone(), format!("task {task}"))),
        };
        let (names, mut route) = match &tier {
            Some((tier, why)) => (
                routing.tiers.get(tier).cloned().unwrap_or_default(),
                vec![format!("tier {tier} ({why})")],
            ),
            None => (
                routing.models.iter().map(ModelConfig::display_name).collect(),
                Vec::new(),
            ),
        };
        if let Some(unknown) = requested.filter(|t| !routing.tiers.contains_key(t)) {
            route.push(format!("unknown tier `{unknown}` requested"));
        }
        (names, route)
    }
}
