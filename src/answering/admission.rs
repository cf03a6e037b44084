//! Budgets and rate limits as a layer: the call is admitted (perhaps to a cheaper model of the
//! tier), delayed, answered from the passages, or refused; whatever the call used is settled
//! on the way out, also when it failed, so what it did not use goes back to the budgets. A tool
//! loop's later turns are admitted one by one through the [`TurnGate`] this layer hands the call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::fallback::Fallback;
use super::{join_route, store_unavailable, store_write_lost, Layer, Next, Turn};
use crate::contracts::{millis, AnswerDraft, AnswerStatus, Step, Task};
use crate::cost::limits::Refusal;
use crate::cost::{Admission, CostControls, Estimate, Reservation, StoreUnavailablePolicy, Used};
use crate::error::StageError;
use crate::status::StatusReporter;

/// Why a question is not answered under `on_store_unavailable: closed`.
const STORE_CLOSED: &str =
    "not answered: budgets and rate limits cannot be checked while the state store is unavailable";

/// Reserves a call's expected tokens and cost, and settles them after it.
pub struct AdmissionLayer {
    pub controls: Arc<CostControls>,
    pub fallback: Fallback,
}

#[async_trait]
impl Layer for AdmissionLayer {
    async fn answer(&self, turn: &mut Turn<'_>, next: Next<'_>) -> Result<(), StageError> {
        let estimates = turn.planned()?.estimates.clone();
        let status = turn.context.extension::<StatusReporter>();
        let draft = &mut *turn.draft;
        let admitted = match self.controls.admit(draft, &estimates, &queued(&status)).await {
            Ok(admitted) => admitted,
            Err(error) => match store_unavailable("admission", self.controls.on_store_unavailable(), error)? {
                StoreUnavailablePolicy::Open => {
                    draft.provenance.route = Some(join_route(
                        draft.provenance.route.take(),
                        "budgets and rate limits not checked: the state store is unavailable".to_owned(),
                    ));
                    // No reservation and no gate: nothing to settle, later tool turns go ahead.
                    return next.answer(turn).await;
                }
                _ => {
                    draft.decide(AnswerStatus::Failed, Some(STORE_CLOSED.to_owned()));
                    return Ok(());
                }
            },
        };
        let reservation = match admitted {
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
        // A tool loop's later turns are admitted one by one as they come.
        let gate = Arc::new(TurnGate {
            controls: self.controls.clone(),
            reservations: Mutex::new(vec![(reservation, Used::of(turn.draft))]),
            status,
        });
        turn.planned()?.later_turns = Some(gate.clone());
        let answered = next.answer(turn).await;
        store_write_lost("admission", gate.settle(turn.draft).await);
        answered
    }
}

/// The budgets and rate limits of one question's later model turns: each turn reserves what it
/// is expected to take before it is made, and every reservation is settled with what its own
/// turn used.
pub struct TurnGate {
    controls: Arc<CostControls>,
    /// Each turn's reservation, with what the draft had used when the turn began.
    reservations: Mutex<Vec<(Reservation, Used)>>,
    /// Hears of a turn held back by a limit.
    status: Option<Arc<StatusReporter>>,
}

/// Reports a wait for a limit as the question's `queued` step.
fn queued(status: &Option<Arc<StatusReporter>>) -> impl Fn(Duration) + Send + Sync + '_ {
    move |wait| {
        if let Some(status) = status {
            status.report(Step::Queued { wait_ms: millis(wait) });
        }
    }
}

impl TurnGate {
    /// Reserves `estimate` for the next turn of `draft`; the refusal, when a limit refuses it.
    pub async fn admit(&self, draft: &AnswerDraft, estimate: &Estimate) -> Result<Result<(), Refusal>, StageError> {
        let on_wait = queued(&self.status);
        let admitted = match self
            .controls
            .admit(draft, std::slice::from_ref(estimate), &on_wait)
            .await
        {
            Ok(admitted) => admitted,
            Err(error) => {
                return match store_unavailable("admission", self.controls.on_store_unavailable(), error)? {
                    StoreUnavailablePolicy::Open => Ok(Ok(())),
                    _ => Ok(Err(Refusal {
                        status: AnswerStatus::Failed,
                        reason: STORE_CLOSED.to_owned(),
                    })),
                }
            }
        };
        match admitted {
            Admission::Admitted { reservation, .. } => {
                self.reservations
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((reservation, Used::of(draft)));
                Ok(Ok(()))
            }
            Admission::Refused { refusal, .. } => Ok(Err(refusal)),
        }
    }

    /// Settles every turn's reservation with what that turn used.
    async fn settle(&self, draft: &AnswerDraft) -> Result<(), StageError> {
        let reservations = std::mem::take(&mut *self.reservations.lock().unwrap_or_else(|p| p.into_inner()));
        let marks: Vec<Used> = reservations
            .iter()
            .map(|(_, mark)| *mark)
            .skip(1)
            .chain([Used::of(draft)])
            .collect();
        for ((reservation, began), ended) in reservations.into_iter().zip(marks) {
            self.controls
                .settle_used(&draft.tenant, reservation, ended.since(began))
                .await?;
        }
        Ok(())
    }
}
