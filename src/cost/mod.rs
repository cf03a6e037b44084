//! Cost and abuse control around the model calls of `generate`: budgets and rate limits per
//! tenant and user (reserved before a call, settled after, so concurrent requests cannot
//! overspend, in [`admission`]) and a response cache ([`cache`]). State is shared by every
//! replica through Redis, or kept in memory when the pipeline declares a single replica.

pub mod admission;
pub mod cache;
mod config;
pub mod limits;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

pub use admission::{Admission, Estimate, OnWait, Reservation, Used};
pub use config::{CostControlConfig, ExceededPolicy, StoreUnavailablePolicy};

use crate::clock::{self, Clock};
use crate::error::StageError;
use crate::state::StateStore;

/// The cost controls of one `generate` stage, connected to their store.
pub struct CostControls {
    config: CostControlConfig,
    store: StateStore,
    waiting: Arc<Semaphore>,
    /// Budget windows follow its time of day; waits for a window or a rate pass on it.
    clock: Arc<dyn Clock>,
}

impl CostControls {
    /// Connects to the configured store, on the system clock.
    pub async fn connect(config: &CostControlConfig) -> Result<Self, StageError> {
        Self::with_clock(config, clock::system()).await
    }

    /// Connects to the configured store, reading time from `clock`.
    pub async fn with_clock(config: &CostControlConfig, clock: Arc<dyn Clock>) -> Result<Self, StageError> {
        Ok(Self {
            store: StateStore::connect(&config.store, clock.clone()).await?,
            waiting: Arc::new(Semaphore::new(config.max_waiting.max(1))),
            config: config.clone(),
            clock,
        })
    }

    /// What a question meets while the store does not answer.
    pub fn on_store_unavailable(&self) -> StoreUnavailablePolicy {
        self.config.on_store_unavailable
    }

    /// The time of day on the clock.
    fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from(self.clock.wall())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::contracts::{AnswerDraft, Task};

    /// Cost controls configured by `yaml`.
    pub(crate) async fn controls(yaml: &str) -> CostControls {
        let config: CostControlConfig = serde_yaml::from_str(yaml).unwrap();
        CostControls::connect(&config).await.unwrap()
    }

    /// A question of tenant acme.
    pub(crate) fn draft() -> AnswerDraft {
        AnswerDraft::failed("acme", "r-1", "u-1", Task::Qa, "What is the refund policy?", "")
    }
}
