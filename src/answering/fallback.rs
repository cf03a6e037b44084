//! What answers when no model does: the best-supported sentences of the passages (`extractive`),
//! `no_context` when the passages do not answer, or `failed` when passages may not answer.

use std::path::Path;
use std::sync::Arc;

use crate::contracts::{AnswerDraft, AnswerStatus, Task};
use crate::embed::{shared_local_model, Pooling};
use crate::error::StageError;
use crate::llm::grounding::NonAnswer;
use crate::llm::{extractive_answer_by_meaning, Extracted, Meaning};

/// The passages' answer, as the `generate` stage allows it.
#[derive(Clone)]
pub struct Fallback {
    /// `fallback_extractive`: the passages may answer when no model did.
    pub enabled: bool,
    /// Passages an extractive answer may quote.
    pub passages: usize,
    /// No model is configured: the passages answer every question, and may say they cannot.
    pub passages_only: bool,
    /// Ranks the passages' sentences by closeness in meaning to the question too.
    pub meaning: Option<Arc<Meaning>>,
}

/// Closeness in meaning by a local sentence-embedding model (BERT family, mean pooling, as the
/// `embed` stage loads it; the same weights are shared when it names the same directory).
pub fn meaning_by_model(model_dir: &Path) -> Result<Arc<Meaning>, StageError> {
    let model = shared_local_model(model_dir, Pooling::Mean, true, 256)?;
    Ok(Arc::new(move |question: &str, sentences: &[&str]| {
        let texts: Vec<&str> = std::iter::once(question).chain(sentences.iter().copied()).collect();
        let vectors = model.embed(&texts).ok()?;
        let (asked, sentences) = vectors.split_first()?;
        // The vectors are unit length: the dot product is the cosine.
        Some(
            sentences
                .iter()
                .map(|vector| vector.iter().zip(asked).map(|(a, b)| a * b).sum())
                .collect(),
        )
    }))
}

impl Fallback {
    /// Every model failed (or none may answer): the best passages if allowed, else `failed`.
    pub async fn no_model_answered(&self, draft: &mut AnswerDraft, reason: &str) -> Result<(), StageError> {
        if self.enabled && draft.task != Task::Extract {
            self.answer_from_passages(draft, format!("no model answered: {reason}"))
                .await
        } else {
            draft.decide(AnswerStatus::Failed, Some(format!("no model answered: {reason}")));
            Ok(())
        }
    }

    /// The model replied with something that is not an answer (empty, bare citations, the
    /// question again, unsupported): the best passages if allowed (`extractive`), else the reply
    /// marked `low_confidence`; never `ok`.
    pub async fn not_an_answer(
        &self,
        draft: &mut AnswerDraft,
        reply: String,
        non_answer: &NonAnswer,
    ) -> Result<(), StageError> {
        let reason = non_answer.reason();
        if self.enabled {
            return self.answer_from_passages(draft, reason).await;
        }
        draft.citations = Vec::new();
        draft.answer = Some(reply);
        draft.decide(AnswerStatus::LowConfidence, Some(reason));
        Ok(())
    }

    /// The best passages as the answer, status `extractive`, and why no model's answer is used.
    pub async fn answer_from_passages(&self, draft: &mut AnswerDraft, why: String) -> Result<(), StageError> {
        // After a model's failed attempt the passages answer what they can; with no model they
        // answer every question, and may say they cannot.
        let (max_passages, may_refuse) = (self.passages, self.passages_only);
        let extracted = match self.meaning.clone() {
            // Ranking by meaning runs a model over every sentence: off the async threads.
            Some(meaning) => {
                let (question, passages) = (draft.question.clone(), draft.passages.clone());
                tokio::task::spawn_blocking(move || {
                    extractive_answer_by_meaning(&question, &passages, max_passages, may_refuse, Some(&*meaning))
                })
                .await
                .map_err(|error| StageError::internal(format!("the extractive answer panicked: {error}")))?
            }
            // Word overlap alone takes microseconds: no thread hop, no copy of the passages.
            None => extractive_answer_by_meaning(&draft.question, &draft.passages, max_passages, may_refuse, None),
        };
        let (text, citations) = match extracted {
            Extracted::Answer(text, citations) | Extracted::Passages(text, citations) => (text, citations),
            Extracted::NotInPassages => {
                draft.provenance.fallback_reason = Some(why);
                draft.decide(
                    AnswerStatus::NoContext,
                    Some("the retrieved passages do not answer the question".to_owned()),
                );
                return Ok(());
            }
        };
        draft.answer = Some(text);
        draft.citations = citations;
        draft.provenance.fallback_reason = Some(why);
        draft.provenance.model = Some("extractive".to_owned());
        draft.decide(AnswerStatus::Extractive, None);
        Ok(())
    }
}
