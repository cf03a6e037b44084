//! An answer's outcome as the replay records and the response cache keep it (JSON in the state
//! store): what the answer needs, placeholders still in.

use serde::{Deserialize, Serialize};

use super::{AnswerDraft, AnswerStatus, Citation, TokenUsage};
use crate::pii::holds_placeholders;

/// An outcome kept for a replay or the cache: what the answer needs, placeholders still in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredOutcome {
    pub status: AnswerStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    #[serde(default)]
    pub citations: Vec<Citation>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub fallback_reason: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub usage: TokenUsage,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub cached: bool,
    /// For a replay record: the digest of the masked question it answered, so a request id
    /// reused for another question is refused instead of served this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_sha256: Option<String>,
}

impl StoredOutcome {
    /// The outcome of a decided draft.
    pub fn of(draft: &AnswerDraft) -> Option<Self> {
        Some(Self {
            status: draft.status?,
            reason: draft.reason.clone(),
            answer: draft.answer.clone(),
            data: draft.data.clone(),
            citations: draft.citations.clone(),
            model: draft.model.clone(),
            fallback_reason: draft.fallback_reason.clone(),
            route: draft.route.clone(),
            usage: draft.usage,
            cost_usd: draft.cost_usd,
            cached: draft.cached,
            question_sha256: None,
        })
    }

    /// The outcome for a request id already answered for a different question: `failed`, no
    /// model call, nothing charged.
    pub fn request_id_reused(request_id: &str) -> Self {
        Self {
            status: AnswerStatus::Failed,
            reason: Some(format!(
                "request_id `{request_id}` was already answered for a different question; a new question needs a new request_id"
            )),
            answer: None,
            data: None,
            citations: Vec::new(),
            model: None,
            fallback_reason: None,
            route: None,
            usage: TokenUsage::default(),
            cost_usd: 0.0,
            cached: false,
            question_sha256: None,
        }
    }

    /// Whether the answer (or extracted data) holds personal-data placeholders.
    pub fn holds_placeholders(&self) -> bool {
        self.answer.as_deref().is_some_and(holds_placeholders)
            || self
                .data
                .as_ref()
                .is_some_and(|data| holds_placeholders(&data.to_string()))
    }

    /// Decides `draft` with this outcome.
    pub fn apply(self, draft: &mut AnswerDraft) {
        draft.answer = self.answer;
        draft.data = self.data;
        draft.citations = self.citations;
        draft.model = self.model;
        draft.fallback_reason = self.fallback_reason;
        draft.route = self.route;
        draft.usage = self.usage;
        draft.cost_usd = self.cost_usd;
        draft.cached = self.cached;
        draft.decide(self.status, self.reason);
    }
}
