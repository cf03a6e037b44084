//! An answer's outcome as the replay records and the response cache keep it (JSON in the state
//! store): what the answer needs, placeholders still in.

use serde::{Deserialize, Serialize};

use super::{AnswerDraft, AnswerStatus, Citation, Provenance};
use crate::pii::holds_placeholders;

/// An outcome kept for a replay or the cache: what the answer needs, placeholders still in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredOutcome {
    pub status: AnswerStatus,
    pub answer: Option<String>,
    pub data: Option<serde_json::Value>,
    #[serde(default)]
    pub citations: Vec<Citation>,
    #[serde(flatten)]
    pub provenance: Provenance,
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
            answer: draft.answer.clone(),
            data: draft.data.clone(),
            citations: draft.citations.clone(),
            provenance: draft.provenance.clone(),
            question_sha256: None,
        })
    }

    /// The outcome for a request id already answered for a different question: `failed`, no
    /// model call, nothing charged.
    pub fn request_id_reused(request_id: &str) -> Self {
        Self {
            status: AnswerStatus::Failed,
            answer: None,
            data: None,
            citations: Vec::new(),
            provenance: Provenance {
                reason: Some(format!(
                    "request_id `{request_id}` was already answered for a different question; a new question needs a new request_id"
                )),
                ..Provenance::default()
            },
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
        let reason = self.provenance.reason.clone();
        draft.answer = self.answer;
        draft.data = self.data;
        draft.citations = self.citations;
        draft.provenance = self.provenance;
        draft.decide(self.status, reason);
    }
}
