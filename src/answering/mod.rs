//! How a question's answer is decided: one ordered chain of layers around the model call, the
//! way tower middleware wraps a service. Each layer gets the question on the way in and may
//! decide it itself (a replay, a cache hit, a refusal) or hand it to the next layer, and sees
//! the outcome on the way back out (to remember it, cache it, settle what it reserved):
//!
//! ```text
//! replay → route → cache → admission → call
//! ```
//!
//! - [`replay`]: a redelivered question gets the outcome it already got; every outcome is
//!   remembered on the way out. On whether or not cost control is on.
//! - [`route`]: the prompt, and the models that may answer it with what each is expected to
//!   cost (tier, ceiling); no model left: the passages answer.
//! - [`cache`]: the answer to the same (or, semantically, a similar) question; a model's answer
//!   is kept on the way out. Only with `cost_control`.
//! - [`admission`]: budgets and rate limits admit the call (perhaps to a cheaper model), wait,
//!   or refuse; what the call used is settled on the way out. Only with `cost_control`.
//! - [`call`]: the models, with retries, circuit breakers and fallbacks, streaming partial
//!   answers; a reply that is no answer goes to the passages ([`fallback`]).
//!
//! A new guard is one file with one [`Layer`] and one line where the `generate` stage lists
//! its layers.

pub mod admission;
pub mod cache;
pub mod call;
pub mod fallback;
mod partial;
pub mod replay;
pub mod route;
mod tool_loop;

use std::sync::Arc;

use async_trait::async_trait;

use crate::contracts::AnswerDraft;
use crate::core_api::MessageContext;
use crate::cost::{Estimate, StoreUnavailablePolicy};
use crate::error::{Fault, StageError};
use crate::llm::{ChatRequest, Prompt};
use crate::telemetry::metrics::metrics;
use crate::tools::Toolbox;

/// One question on its way through the layers.
pub struct Turn<'a> {
    /// The question, decided by the layer that answers it.
    pub draft: &'a mut AnswerDraft,
    /// The message it came from (personal-data vault, producing partial answers).
    pub context: &'a MessageContext,
    /// What the model would be asked and which models may answer: set by [`route`].
    pub call: Option<CallPlan>,
}

/// The model call a question needs, as [`route`] planned it.
pub struct CallPlan {
    pub prompt: Prompt,
    pub request: ChatRequest,
    /// The models that may answer, in order, each with what its call is expected to cost.
    /// [`admission`] drops those a limit rules out.
    pub estimates: Vec<Estimate>,
    /// Admits every model turn after the first (a tool loop's) against the same budgets and
    /// rate limits: set by [`admission`] when they apply.
    pub later_turns: Option<Arc<admission::TurnGate>>,
}

impl CallPlan {
    /// The names of the models that may answer, in order.
    pub fn models(&self) -> Vec<String> {
        self.estimates.iter().map(|e| e.model.clone()).collect()
    }
}

impl Turn<'_> {
    /// The planned call; an error for a layer placed before [`route`].
    pub fn planned(&mut self) -> Result<&mut CallPlan, StageError> {
        self.call
            .as_mut()
            .ok_or_else(|| StageError::internal("a layer that needs the call plan runs before route"))
    }
}

/// A guard around the model call.
#[async_trait]
pub trait Layer: Send + Sync {
    /// Decides `turn` itself, or hands it to `next` (and may act on the outcome).
    async fn answer(&self, turn: &mut Turn<'_>, next: Next<'_>) -> Result<(), StageError>;
}

/// The layers after the current one.
#[derive(Clone, Copy)]
pub struct Next<'a>(&'a [Box<dyn Layer>]);

impl Next<'_> {
    /// Hands `turn` to the next layer.
    pub async fn answer(self, turn: &mut Turn<'_>) -> Result<(), StageError> {
        match self.0.split_first() {
            Some((layer, rest)) => layer.answer(turn, Next(rest)).await,
            None => Err(StageError::internal("no layer decided the question")),
        }
    }
}

/// The layers of one `generate` stage, outermost first.
pub struct Answering {
    layers: Vec<Box<dyn Layer>>,
    /// The tools of the call layer, if it has any.
    tools: Option<Arc<Toolbox>>,
}

impl Answering {
    pub fn new(layers: Vec<Box<dyn Layer>>, tools: Option<Arc<Toolbox>>) -> Self {
        Self { layers, tools }
    }

    /// Whether the model may call tools for `draft` (so a question without passages may still
    /// be answered).
    pub fn offers_tools(&self, draft: &AnswerDraft) -> bool {
        self.tools.as_ref().is_some_and(|tools| tools.serve(draft))
    }

    /// Decides `draft`.
    pub async fn answer(&self, draft: &mut AnswerDraft, context: &MessageContext) -> Result<(), StageError> {
        let mut turn = Turn {
            draft,
            context,
            call: None,
        };
        Next(&self.layers).answer(&mut turn).await
    }
}

/// `route` with `more` appended.
/// What a store-backed layer (replay records, the response cache, admission) does with an error
/// of its store: the store's failures are its only external faults (model calls are the call
/// layer's). `Ok(Some(policy))`: the store is unavailable and `policy` applies; `Err`: the
/// error itself, to be returned (a defect, or `retry`).
pub(crate) fn store_unavailable(
    layer: &'static str,
    policy: StoreUnavailablePolicy,
    error: StageError,
) -> Result<StoreUnavailablePolicy, StageError> {
    if error.fault != Fault::External {
        return Err(error);
    }
    metrics()
        .store_unavailable
        .with_label_values(&[layer, policy.as_str()])
        .inc();
    match policy {
        StoreUnavailablePolicy::Retry => Err(error),
        open_or_closed => {
            tracing::warn!(layer, policy = open_or_closed.as_str(), reason = %error.reason, "state store unavailable");
            Ok(open_or_closed)
        }
    }
}

/// Records what the store could not keep after the question was answered (a settlement, a
/// cached answer, a replay record). Never the stage's failure: retrying the stage would call
/// the model, and pay, a second time for an answer that exists.
pub(crate) fn store_write_lost(layer: &'static str, result: Result<(), StageError>) {
    if let Err(error) = result {
        metrics()
            .store_unavailable
            .with_label_values(&[layer, "write_lost"])
            .inc();
        tracing::warn!(layer, reason = %error.reason, "state store write lost; the answer goes out");
    }
}

pub(crate) fn join_route(route: Option<String>, more: String) -> String {
    match route {
        Some(route) => format!("{route}; {more}"),
        None => more,
    }
}
