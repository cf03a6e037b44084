//! The response cache: a model's answer kept for the same masked prompt (exact) and, with a
//! `semantic_threshold`, for a similar question whose retrieved passages include every passage
//! the answer rests on.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::CostControls;
use crate::contracts::{AnswerDraft, StoredOutcome, TokenUsage};
use crate::error::StageError;
use crate::llm::ChatMessage;
use crate::telemetry::metrics::metrics;

/// Answered questions kept per list of the semantic cache (the most recent).
const MAX_SIMILAR_QUESTIONS: usize = 32;

/// An answered question in a semantic-cache list.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimilarQuestion {
    /// Its exact cache key.
    key: String,
    /// Its embedding.
    vector: Vec<f32>,
    /// The chunks its answer rests on: those it cites, or every passage it was given when it
    /// cites none. Chunk ids carry the document version, so a changed document never matches.
    #[serde(default)]
    rests_on: Vec<String>,
}

/// The chunks an answer rests on (see `SimilarQuestion::rests_on`), most relevant first.
fn rests_on(draft: &AnswerDraft) -> Vec<String> {
    let cited: Vec<String> = draft
        .passages
        .iter()
        .map(|p| &p.chunk_id)
        .filter(|id| draft.citations.iter().any(|c| &c.chunk_id == *id))
        .cloned()
        .collect();
    if cited.is_empty() {
        draft.passages.iter().map(|p| p.chunk_id.clone()).collect()
    } else {
        cited
    }
}

/// Cosine similarity; 0 for vectors of different length or zero norm.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator == 0.0 {
        0.0
    } else {
        dot / denominator
    }
}

impl CostControls {
    /// Whether answers are cached (`cache_ttl_s` above 0).
    pub fn caches(&self) -> bool {
        self.config.cache_ttl_s > 0
    }

    /// The cache key of a call: tenant, task, the models that may answer, and the masked
    /// messages (question and passages) with case and spacing normalized. `None` without cache.
    pub fn cache_key(&self, draft: &AnswerDraft, models: &[String], messages: &[ChatMessage]) -> Option<String> {
        if self.config.cache_ttl_s == 0 {
            return None;
        }
        let mut digest = Sha256::new();
        digest.update(format!("{:?}", draft.task));
        for model in models {
            digest.update([0]);
            digest.update(model.as_bytes());
        }
        for message in messages {
            digest.update([1]);
            digest.update(format!("{:?}", message.role));
            let normalized: Vec<String> = message.content.split_whitespace().map(str::to_lowercase).collect();
            digest.update(normalized.join(" "));
        }
        let hash = format!("{:x}", digest.finalize());
        Some(format!("{}:cache:{}:{hash}", self.config.key_prefix, draft.tenant))
    }

    /// The cached answer for this call: under its exact `key`, else (with a
    /// `semantic_threshold`) the answer to a similar question that rests on passages this one
    /// retrieved too.
    /// Counted as a hit or a miss.
    pub async fn cached(
        &self,
        key: &str,
        draft: &AnswerDraft,
        models: &[String],
    ) -> Result<Option<StoredOutcome>, StageError> {
        let mut found = self
            .store
            .get_json::<StoredOutcome>(key)
            .await?
            .map(|outcome| (outcome, "cache hit".to_owned()));
        if found.is_none() {
            if let Some((similar, similarity)) = self.similar(draft, models).await? {
                // A placeholder means what the vault of the request that produced the answer
                // says; this request numbers its personal data differently, so restoring it
                // here would put the wrong person or address in the answer. (Answers listed
                // before this rule may still hold some.)
                found = self
                    .store
                    .get_json::<StoredOutcome>(&similar)
                    .await?
                    .filter(|outcome| !outcome.holds_placeholders())
                    .map(|outcome| (outcome, format!("semantic cache hit (similarity {similarity:.3})")));
            }
        }
        let label = if found.is_some() { "hit" } else { "miss" };
        metrics().cache_lookups.with_label_values(&[label]).inc();
        Ok(found.map(|(mut outcome, route)| {
            outcome.provenance.usage = TokenUsage::default();
            outcome.provenance.cost_usd = 0.0;
            outcome.provenance.cached = true;
            outcome.provenance.route = Some(route);
            outcome
        }))
    }

    /// Where answered questions resting on `chunk` are listed for the semantic cache: per
    /// tenant, task, models and chunk. An answer is listed under the most relevant chunk it
    /// rests on; a question looks in the lists of every passage it retrieved, so a paraphrase
    /// that ranks the passages differently, or retrieves some others, still finds it.
    fn similar_list_key(&self, draft: &AnswerDraft, models: &[String], chunk: &str) -> String {
        let mut digest = Sha256::new();
        digest.update(draft.task.as_str());
        for model in models {
            digest.update([0]);
            digest.update(model.as_bytes());
        }
        digest.update([1]);
        digest.update(chunk.as_bytes());
        let hash = format!("{:x}", digest.finalize());
        format!("{}:similar:{}:{hash}", self.config.key_prefix, draft.tenant)
    }

    /// The cache key of the most similar answered question above the threshold whose answer
    /// rests only on passages this question retrieved too, if any.
    async fn similar(&self, draft: &AnswerDraft, models: &[String]) -> Result<Option<(String, f32)>, StageError> {
        let Some(threshold) = self.config.semantic_threshold else {
            return Ok(None);
        };
        if draft.question_vector.is_empty() {
            return Ok(None);
        }
        let retrieved: Vec<&str> = draft.passages.iter().map(|p| p.chunk_id.as_str()).collect();
        let mut best: Option<(String, f32)> = None;
        for chunk in &retrieved {
            let list = self.similar_list_key(draft, models, chunk);
            for entry in self.similar_questions(&list).await? {
                let similarity = cosine(&entry.vector, &draft.question_vector);
                let grounded = !entry.rests_on.is_empty()
                    && entry.rests_on.iter().all(|needed| retrieved.contains(&needed.as_str()));
                if grounded && similarity >= threshold && best.as_ref().is_none_or(|(_, b)| similarity > *b) {
                    best = Some((entry.key, similarity));
                }
            }
        }
        Ok(best)
    }

    /// The answered questions listed under `list` (none if it is missing or unreadable).
    async fn similar_questions(&self, list: &str) -> Result<Vec<SimilarQuestion>, StageError> {
        Ok(self.store.get_json(list).await?.unwrap_or_default())
    }

    /// Keeps a model's answer for identical (and, with a threshold, similar) questions.
    pub async fn cache(&self, key: &str, draft: &AnswerDraft, models: &[String]) -> Result<(), StageError> {
        let Some(outcome) = StoredOutcome::of(draft) else {
            return Ok(());
        };
        let ttl = Duration::from_secs(self.config.cache_ttl_s);
        self.store.set_json(key, &outcome, ttl).await?;
        // An answer with placeholders is served only for the exact same masked prompt, whose
        // placeholders are numbered the same way (see `cached`).
        if self.config.semantic_threshold.is_none() || draft.question_vector.is_empty() || outcome.holds_placeholders()
        {
            return Ok(());
        }
        let rests_on = rests_on(draft);
        let Some(anchor) = rests_on.first() else {
            return Ok(());
        };
        let list = self.similar_list_key(draft, models, anchor);
        // Read, append, write back: two replicas adding at once may drop one entry, which
        // only costs a future hit.
        let mut entries = self.similar_questions(&list).await?;
        entries.retain(|entry| entry.key != key);
        entries.push(SimilarQuestion {
            key: key.to_owned(),
            vector: draft.question_vector.clone(),
            rests_on,
        });
        let excess = entries.len().saturating_sub(MAX_SIMILAR_QUESTIONS);
        entries.drain(..excess);
        self.store.set_json(&list, &entries, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{AnswerStatus, Citation, Task};
    use crate::cost::tests::controls;

    fn passage(chunk_id: &str) -> crate::contracts::RetrievedPassage {
        crate::contracts::RetrievedPassage {
            chunk_id: chunk_id.to_owned(),
            doc_id: chunk_id.split(':').next().unwrap().to_owned(),
            title: None,
            text: format!("text of {chunk_id}"),
            score: 0.8,
        }
    }

    /// A question with `vector` that retrieved `chunks`.
    fn asking(question: &str, vector: [f32; 2], chunks: &[&str]) -> AnswerDraft {
        let mut draft = AnswerDraft::failed("acme", "r-1", "u-1", Task::Qa, question, "");
        draft.status = None;
        draft.question_vector = vector.to_vec();
        draft.passages = chunks.iter().map(|c| passage(c)).collect();
        draft
    }

    /// A similar question reuses an answer when every passage the answer cites was retrieved
    /// again, however the others differ; not when a cited passage is missing or changed, and
    /// not when the question is not similar enough.
    #[tokio::test]
    async fn the_semantic_cache_reuses_an_answer_whose_cited_passages_were_retrieved_again() {
        let controls = controls("{ store: memory, single_replica: true, semantic_threshold: 0.9 }").await;
        let models = vec!["primary".to_owned()];
        let mut answered = asking(
            "How many leave days?",
            [1.0, 0.0],
            &["leave:1:0", "pay:1:2", "travel:1:1"],
        );
        answered.answer = Some("27 days [1].".to_owned());
        answered.citations = vec![Citation {
            index: 1,
            doc_id: "leave".to_owned(),
            chunk_id: "leave:1:0".to_owned(),
            title: None,
            score: 0.8,
        }];
        answered.decide(AnswerStatus::Ok, None);
        let key = |draft: &AnswerDraft| {
            let messages = [ChatMessage::new(crate::llm::Role::User, draft.question.clone())];
            controls.cache_key(draft, &models, &messages).unwrap()
        };
        controls.cache(&key(&answered), &answered, &models).await.unwrap();

        // Other words, other passages beside the cited one, in another order.
        let paraphrase = asking("leave days per year", [0.95, 0.312], &["benefits:1:4", "leave:1:0"]);
        let hit = controls.cached(&key(&paraphrase), &paraphrase, &models).await.unwrap();
        let hit = hit.expect("the cited passage was retrieved again");
        assert_eq!(hit.answer.as_deref(), Some("27 days [1]."));
        assert!(hit.provenance.cached && hit.provenance.route.unwrap().starts_with("semantic cache hit"));

        let cited_missing = asking("leave days per year", [0.95, 0.312], &["pay:1:2", "travel:1:1"]);
        let changed = asking("leave days per year", [0.95, 0.312], &["leave:2:0", "pay:1:2"]);
        let unlike = asking("parking rules", [0.6, 0.8], &["leave:1:0", "pay:1:2"]);
        for (what, draft) in [
            ("a cited passage not retrieved", cited_missing),
            ("the cited document changed", changed),
            ("a dissimilar question", unlike),
        ] {
            let found = controls.cached(&key(&draft), &draft, &models).await.unwrap();
            assert!(found.is_none(), "{what}: {found:?}");
        }
    }

    /// An answer with placeholders is numbered by the vault of the request that produced it:
    /// the same masked prompt (numbered the same way) may reuse it, a similar one may not.
    #[tokio::test]
    async fn an_answer_with_placeholders_is_not_served_to_a_similar_question() {
        let controls = controls("{ store: memory, single_replica: true, semantic_threshold: 0.9 }").await;
        let models = vec!["primary".to_owned()];
        let mut answered = asking("Who approves [PERSON_1]'s leave?", [1.0, 0.0], &["leave:1:0"]);
        answered.answer = Some("[PERSON_2] approves it [1].".to_owned());
        answered.decide(AnswerStatus::Ok, None);
        let key = |draft: &AnswerDraft| {
            let messages = [ChatMessage::new(crate::llm::Role::User, draft.question.clone())];
            controls.cache_key(draft, &models, &messages).unwrap()
        };
        controls.cache(&key(&answered), &answered, &models).await.unwrap();

        let same = asking("Who approves [PERSON_1]'s leave?", [1.0, 0.0], &["leave:1:0"]);
        let exact = controls.cached(&key(&same), &same, &models).await.unwrap();
        assert_eq!(exact.unwrap().provenance.route.as_deref(), Some("cache hit"));
        let paraphrase = asking("[PERSON_1] wants leave: who signs?", [0.99, 0.1], &["leave:1:0"]);
        let found = controls.cached(&key(&paraphrase), &paraphrase, &models).await.unwrap();
        assert!(found.is_none(), "{found:?}");
    }
}
