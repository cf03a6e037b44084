//! The response cache as a layer: a question whose masked prompt was answered before (or, with
//! a `semantic_threshold`, a similar question resting on passages this one retrieved too) gets
//! that answer without a model call; a model's own answer is kept on the way out.

use std::sync::Arc;

use async_trait::async_trait;

use super::{store_unavailable, store_write_lost, Layer, Next, Turn};
use crate::contracts::AnswerStatus;
use crate::cost::CostControls;
use crate::error::StageError;

/// Serves and keeps cached answers (`cost_control.cache_ttl_s` above 0).
pub struct CacheLayer {
    pub controls: Arc<CostControls>,
}

#[async_trait]
impl Layer for CacheLayer {
    async fn answer(&self, turn: &mut Turn<'_>, next: Next<'_>) -> Result<(), StageError> {
        let plan = turn
            .call
            .as_ref()
            .ok_or_else(|| StageError::internal("cache runs before route"))?;
        // Keyed by every model that may answer, before admission narrows them.
        let models = plan.models();
        let key = self.controls.cache_key(turn.draft, &models, &plan.request.messages);
        if let Some(key) = &key {
            match self.controls.cached(key, turn.draft, &models).await {
                Ok(Some(hit)) => {
                    hit.apply(turn.draft);
                    return Ok(());
                }
                Ok(None) => {}
                // Open or closed alike: no cache, and admission decides what the question gets.
                Err(error) => {
                    store_unavailable("cache", self.controls.on_store_unavailable(), error)?;
                }
            }
        }
        next.answer(turn).await?;
        let draft = &*turn.draft;
        let from_a_model =
            draft.status == Some(AnswerStatus::Ok) && draft.provenance.model.as_deref() != Some("extractive");
        if let (Some(key), true) = (&key, from_a_model) {
            store_write_lost("cache", self.controls.cache(key, draft, &models).await);
        }
        Ok(())
    }
}
