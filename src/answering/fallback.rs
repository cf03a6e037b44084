//! What answers when no model does: the best-supported sentences of the passages (`extractive`),
//! `no_context` when the passages do not answer, or `failed` when passages may not answer.

use std::path::Path;
use std::sync::Arc;

use crate::contracts::{AnswerDraft, AnswerStatus, Task};
use crate::embed::{local_model_identity, shared_local_model, LocalEmbedder, Pooling};
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
    pub meaning: Option<MeaningModel>,
}

/// A local sentence-embedding model (BERT family, mean pooling, as the `embed` stage loads it;
/// the same weights are shared when it names the same directory) that ranks sentences by
/// closeness in meaning to the question.
#[derive(Clone)]
pub struct MeaningModel {
    model: Arc<LocalEmbedder>,
    /// Vectors of this identity come from the same model and settings (see
    /// [`local_model_identity`]): retrieval's vector of the question is reused when it matches.
    identity: String,
}

impl MeaningModel {
    /// Loads the model in `model_dir` (once per process).
    pub fn load(model_dir: &Path) -> Result<Self, StageError> {
        let (pooling, normalize, max_tokens) = (Pooling::Mean, true, 256);
        Ok(Self {
            model: shared_local_model(model_dir, pooling, normalize, max_tokens)?,
            identity: local_model_identity(model_dir, pooling, normalize, max_tokens),
        })
    }

    /// Closeness in meaning to `draft`'s question, reusing its vector from retrieval when that
    /// came from this model (the question is then not embedded a second time).
    fn for_question(&self, draft: &AnswerDraft) -> Arc<Meaning> {
        let model = self.model.clone();
        let asked = (draft.question_vector_model.as_deref() == Some(self.identity.as_str())
            && !draft.question_vector.is_empty())
        .then(|| draft.question_vector.clone());
        Arc::new(move |question: &str, sentences: &[&str]| {
            let (asked, vectors) = match &asked {
                Some(asked) => (asked.clone(), model.embed(sentences).ok()?),
                None => {
                    let texts: Vec<&str> = std::iter::once(question).chain(sentences.iter().copied()).collect();
                    let mut vectors = model.embed(&texts).ok()?;
                    if vectors.is_empty() {
                        return None;
                    }
                    (vectors.remove(0), vectors)
                }
            };
            // The vectors are unit length: the dot product is the cosine.
            Some(
                vectors
                    .iter()
                    .map(|vector| vector.iter().zip(&asked).map(|(a, b)| a * b).sum())
                    .collect(),
            )
        })
    }
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
        let extracted = match self.meaning.as_ref().map(|model| model.for_question(draft)) {
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
