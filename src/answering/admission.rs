//! Budgets and rate limits as a layer: the call is admitted (perhaps to a cheaper model of the
//! tier), delayed, answered from the passages, or refused; whatever the call used is settled
//! on the way out, also when it failed, so what it did not use goes back to the budgets.

use std::sync::Arc;

use async_trait::async_trait;

use super::fallback::Fallback;
use super::{join_route, Layer, Next, Turn};
use crate::contracts::Task;
use crate::cost::{Admission, CostControls};
use crate::error::StageError;

/// Reserves a call's expected tokens and cost, and settles them after it.
pub struct AdmissionLayer {
    pub controls: Arc<CostControls>,
    pub fallback: Fallback,
}

#[async_trait]
impl Layer for AdmissionLayer {
    async fn answer(&self, turn: &mut Turn<'_>, next: Next<'_>) -> Result<(), StageError> {
        let estimates = turn.planned()?.estimates.clone();
        let draft = &mut *turn.draft;
        let reservation = match self.controls.admit(draft, &estimates).await? {
            Admission::Admitted {
                index,
                reservation,
                downgraded,
            } => {
                if let Some(why) = downgraded {
                    draft.provenance.route = Some(join_route(draft.provenance.route.take(), why));
                }
                // Only the admitted model and the cheaper ones after it may answer.
                turn.planned()?.estimates.drain(..index);
                reservation
            }
            Admission::Refused { refusal, extractive } => {
                if extractive && draft.task != Task::Extract && self.fallback.enabled {
                    draft.provenance.route = Some(join_route(
                        draft.provenance.route.take(),
                        format!("extractive answer: {}", refusal.reason),
                    ));
                    self.fallback.no_model_answered(draft, &refusal.reason).await?;
                } else {
                    draft.decide(refusal.status, Some(refusal.reason));
                }
                return Ok(());
            }
        };
        let answered = next.answer(turn).await;
        self.controls.settle(turn.draft, reservation).await?;
        answered
    }
}
