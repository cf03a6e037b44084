//! Admission: budgets and rate limits reserve a call's expected tokens and cost before it is
//! made (atomically in the store, so concurrent requests on any replica cannot overspend), wait
//! or move to a cheaper model as `on_exceeded` says, and settle with what the call used.

use std::time::Duration;

use super::limits::{budget_lines, rate_lines, BudgetLine, LimitSet, RateLine, Refusal, Scope};
use super::{CostControls, ExceededPolicy};
use crate::contracts::{AnswerDraft, AnswerStatus};
use crate::error::StageError;
use crate::telemetry::metrics::metrics;

/// What a model call is expected to take, before it is made.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Name of the model in the chain.
    pub model: String,
    /// Prompt tokens plus the answer's bound.
    pub tokens: f64,
    pub cost_usd: f64,
}

/// Capacity taken for a call, to settle with what it really used.
#[derive(Debug)]
pub struct Reservation {
    budgets: Vec<BudgetLine>,
    rates: Vec<RateLine>,
    tokens: f64,
    cost_usd: f64,
}

/// Told of a wait before it begins (a question's status: `queued`).
pub type OnWait<'a> = dyn Fn(Duration) + Send + Sync + 'a;

/// What calls used: tokens (prompt and answer) and dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Used {
    pub tokens: f64,
    pub cost_usd: f64,
}

impl Used {
    /// What every call made for `draft` so far used.
    pub fn of(draft: &AnswerDraft) -> Self {
        let usage = &draft.provenance.usage;
        Self {
            tokens: (usage.prompt_tokens + usage.completion_tokens) as f64,
            cost_usd: draft.provenance.cost_usd,
        }
    }

    /// What was used since `earlier`.
    pub fn since(self, earlier: Used) -> Self {
        Self {
            tokens: (self.tokens - earlier.tokens).max(0.0),
            cost_usd: (self.cost_usd - earlier.cost_usd).max(0.0),
        }
    }
}

/// Whether and how a call may go ahead.
#[derive(Debug)]
pub enum Admission {
    /// Call `estimates[index]`'s model (and those after it in the tier); settle afterwards.
    Admitted {
        index: usize,
        reservation: Reservation,
        /// Set when a limit moved the call to a cheaper model: why.
        downgraded: Option<String>,
    },
    /// No call: answer with the refusal, or (`extractive`) with the best passages.
    Refused { refusal: Refusal, extractive: bool },
}

impl CostControls {
    fn scopes(&self, draft: &AnswerDraft) -> [(Scope, &LimitSet); 2] {
        let tenant_limits = self.config.tenants.get(&draft.tenant).unwrap_or(&self.config.tenant);
        [
            (Scope::Tenant(draft.tenant.clone()), tenant_limits),
            (Scope::user(&draft.tenant, &draft.user), &self.config.user),
        ]
    }

    /// Admits the call of the first estimate whose model fits every limit (the later ones only
    /// with `downgrade`), reserving its tokens and cost; refuses otherwise. `on_wait` hears of
    /// every wait `on_exceeded: delay` makes before it begins.
    pub async fn admit(
        &self,
        draft: &AnswerDraft,
        estimates: &[Estimate],
        on_wait: &OnWait<'_>,
    ) -> Result<Admission, StageError> {
        let mut first_refusal = None;
        for (index, estimate) in estimates.iter().enumerate() {
            // Only a cheaper model can help once one did not fit.
            if index > 0 && estimate.cost_usd >= estimates[0].cost_usd && estimate.tokens >= estimates[0].tokens {
                continue;
            }
            match self.admit_one(draft, estimate, on_wait).await? {
                Ok(reservation) => {
                    let downgraded = first_refusal
                        .as_ref()
                        .map(|refusal: &Refusal| format!("downgraded to {}: {}", estimate.model, refusal.reason));
                    let outcome = if downgraded.is_some() { "downgraded" } else { "admitted" };
                    metrics().budget_decisions.with_label_values(&[outcome]).inc();
                    return Ok(Admission::Admitted {
                        index,
                        reservation,
                        downgraded,
                    });
                }
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                    if self.config.on_exceeded != ExceededPolicy::Downgrade {
                        break;
                    }
                }
            }
        }
        let refusal = first_refusal.unwrap_or_else(|| Refusal {
            status: AnswerStatus::Failed,
            reason: "no model to call".to_owned(),
        });
        let extractive = self.config.on_exceeded == ExceededPolicy::Downgrade;
        let outcome = if extractive {
            "downgraded"
        } else {
            refusal.status.as_str()
        };
        metrics().budget_decisions.with_label_values(&[outcome]).inc();
        Ok(Admission::Refused { refusal, extractive })
    }

    async fn admit_one(
        &self,
        draft: &AnswerDraft,
        estimate: &Estimate,
        on_wait: &OnWait<'_>,
    ) -> Result<Result<Reservation, Refusal>, StageError> {
        let scopes = self.scopes(draft);
        let prefix = &self.config.key_prefix;
        let rates: Vec<RateLine> = scopes
            .iter()
            .flat_map(|(scope, limits)| rate_lines(prefix, scope, limits))
            .collect();
        let buckets: Vec<_> = rates.iter().map(|line| line.bucket(estimate.tokens)).collect();
        let mut delay = DelayAllowance::new(self);
        loop {
            while let Some((wait, slowest)) = self.store.pace(&buckets).await? {
                if !delay.may_wait(wait) {
                    return Ok(Err(Refusal {
                        status: AnswerStatus::RateLimited,
                        reason: rates[slowest].exceeded(wait),
                    }));
                }
                on_wait(wait);
                self.clock.sleep(wait).await;
            }
            // Budget windows are read after any wait: a wait may have crossed into a new one.
            let now = self.now();
            let budgets: Vec<BudgetLine> = scopes
                .iter()
                .flat_map(|(scope, limits)| budget_lines(prefix, scope, limits, now))
                .collect();
            let counters: Vec<_> = budgets
                .iter()
                .map(|line| line.counter(estimate.tokens, estimate.cost_usd, now))
                .collect();
            let Err(index) = self.store.reserve(&counters).await? else {
                return Ok(Ok(Reservation {
                    budgets,
                    rates,
                    tokens: estimate.tokens,
                    cost_usd: estimate.cost_usd,
                }));
            };
            // The request does not happen now: give back the rate-limit slots it took.
            let refunds: Vec<(String, f64)> = rates
                .iter()
                .zip(&buckets)
                .map(|(line, bucket)| (line.key.clone(), -bucket.increment_ms))
                .collect();
            self.store.adjust(&refunds).await?;
            // A spent per-minute budget resets within the allowed delay; a day's does not, and
            // is refused at once rather than held until the delay runs out.
            let until_reset = (budgets[index].resets_at - self.now()).to_std().unwrap_or_default() + RESET_MARGIN;
            if !delay.may_wait(until_reset) {
                return Ok(Err(Refusal {
                    status: AnswerStatus::BudgetExceeded,
                    reason: budgets[index].exceeded(),
                }));
            }
            on_wait(until_reset);
            self.clock.sleep(until_reset).await;
        }
    }

    /// Settles a reservation with what the draft's calls used (nothing, if they failed), and
    /// updates the remaining-budget gauge of the tenant.
    pub async fn settle(&self, draft: &AnswerDraft, reservation: Reservation) -> Result<(), StageError> {
        self.settle_used(&draft.tenant, reservation, Used::of(draft)).await
    }

    /// Settles a reservation of `tenant` with what its call used.
    pub async fn settle_used(&self, tenant: &str, reservation: Reservation, used: Used) -> Result<(), StageError> {
        let used_tokens = used.tokens;
        let actual = (used.tokens, used.cost_usd);
        let reserved = (reservation.tokens, reservation.cost_usd);
        let mut corrections: Vec<(String, f64)> = reservation
            .budgets
            .iter()
            .map(|line| (line.key.clone(), line.correction(reserved, actual)))
            .collect();
        corrections.extend(
            reservation
                .rates
                .iter()
                .map(|line| (line.key.clone(), line.correction(reservation.tokens, used_tokens))),
        );
        self.store.adjust(&corrections).await?;
        // The tenant's tightest budget: what fraction of it is left.
        let mut remaining: Option<f64> = None;
        for line in reservation
            .budgets
            .iter()
            .filter(|l| matches!(l.scope, Scope::Tenant(_)))
        {
            let used: f64 = self
                .store
                .get(&line.key)
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            let limit = line.scaled_limit();
            let left = (1.0 - used / limit).clamp(0.0, 1.0);
            remaining = Some(remaining.map_or(left, |r: f64| r.min(left)));
        }
        if let Some(left) = remaining {
            metrics().budget_remaining_ratio.with_label_values(&[tenant]).set(left);
        }
        Ok(())
    }
}

/// Past a budget window's end before a delayed request tries again, so that replicas whose
/// clocks are slightly behind Redis' view of the window have moved on too.
const RESET_MARGIN: Duration = Duration::from_millis(50);

/// How much longer one request may wait under `on_exceeded: delay`, and its place among the
/// `max_waiting` requests allowed to wait at once (held for the whole admission).
struct DelayAllowance<'a> {
    control: &'a CostControls,
    waited: Duration,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<'a> DelayAllowance<'a> {
    fn new(control: &'a CostControls) -> Self {
        Self {
            control,
            waited: Duration::ZERO,
            permit: None,
        }
    }

    /// Whether the request may wait `wait` more; if so, counts it as waited.
    fn may_wait(&mut self, wait: Duration) -> bool {
        let config = &self.control.config;
        if config.on_exceeded != ExceededPolicy::Delay
            || self.waited + wait > Duration::from_millis(config.max_delay_ms)
        {
            return false;
        }
        if self.permit.is_none() {
            self.permit = self.control.waiting.clone().try_acquire_owned().ok();
            if self.permit.is_none() {
                return false;
            }
            metrics().budget_decisions.with_label_values(&["delayed"]).inc();
        }
        self.waited += wait;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use chrono::{DateTime, Utc};

    use crate::clock::{Clock, ManualClock};
    use crate::cost::tests::{controls, draft};
    use crate::cost::CostControlConfig;

    fn dollar() -> Vec<Estimate> {
        vec![Estimate {
            model: "primary".to_owned(),
            tokens: 100.0,
            cost_usd: 1.0,
        }]
    }

    fn reservation(admission: Admission) -> Reservation {
        match admission {
            Admission::Admitted { reservation, .. } => reservation,
            Admission::Refused { refusal, .. } => panic!("refused: {}", refusal.reason),
        }
    }

    /// `delay` holds a request whose per-minute budget is spent until the next minute, and
    /// admits it there. The wait passes on a manual clock: the test takes no real minute.
    #[tokio::test]
    async fn delay_waits_for_a_spent_per_minute_budget_to_reset() {
        let config: CostControlConfig = serde_yaml::from_str(
            "{ store: memory, single_replica: true, on_exceeded: delay, max_delay_ms: 65000, \
             tenant: { cost_usd_per_minute: 1.0 } }",
        )
        .unwrap();
        let clock = ManualClock::default();
        let controls = CostControls::with_clock(&config, Arc::new(clock.clone()))
            .await
            .unwrap();
        let started = clock.now();
        let first = reservation(controls.admit(&draft(), &dollar(), &|_| {}).await.unwrap());
        let second = reservation(controls.admit(&draft(), &dollar(), &|_| {}).await.unwrap());
        assert!(
            second.budgets[0].resets_at > first.budgets[0].resets_at,
            "the second request was admitted in a later window"
        );
        assert_ne!(second.budgets[0].key, first.budgets[0].key);
        // It waited for the window to end (and the margin for clocks that disagree), no longer.
        let waited = clock.now() - started;
        assert!(DateTime::<Utc>::from(clock.wall()) >= first.budgets[0].resets_at);
        assert!(waited <= Duration::from_secs(60) + RESET_MARGIN, "{waited:?}");
    }

    /// A per-day budget does not reset within `max_delay_ms`: refused without waiting for it.
    #[tokio::test]
    async fn delay_refuses_a_budget_that_resets_after_the_longest_delay() {
        let controls = controls(
            "{ store: memory, single_replica: true, on_exceeded: delay, max_delay_ms: 600000, \
             tenant: { cost_usd_per_day: 1.0 } }",
        )
        .await;
        reservation(controls.admit(&draft(), &dollar(), &|_| {}).await.unwrap());
        let refused = controls.admit(&draft(), &dollar(), &|_| {}).await.unwrap();
        let Admission::Refused { refusal, extractive } = refused else {
            panic!("admitted over the budget");
        };
        assert_eq!(refusal.status, AnswerStatus::BudgetExceeded);
        assert!(!extractive);
        assert!(refusal.reason.contains("per-day budget of $1.00"), "{}", refusal.reason);
    }

    /// With `reject`, a spent per-minute budget is refused even though it resets soon.
    #[tokio::test]
    async fn reject_does_not_wait_for_a_reset() {
        let controls = controls("{ store: memory, single_replica: true, tenant: { cost_usd_per_minute: 1.0 } }").await;
        reservation(controls.admit(&draft(), &dollar(), &|_| {}).await.unwrap());
        let refused = controls.admit(&draft(), &dollar(), &|_| {}).await.unwrap();
        assert!(matches!(
            refused,
            Admission::Refused {
                refusal: Refusal {
                    status: AnswerStatus::BudgetExceeded,
                    ..
                },
                ..
            }
        ));
    }
}
