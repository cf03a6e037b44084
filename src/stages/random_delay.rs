//! `random_delay`: holds each record for a random time, then passes it on unchanged.
//!
//! Used to exercise out-of-order completion and draining (tests, benchmarks, chaos drills) and
//! to simulate a slow dependency in a topology before the real stage exists.

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::Deserialize;

use super::StageBuilder;
use crate::core_api::{MessageContext, Record, Stage};
use crate::error::Findings;
use crate::error::{ConfigError, StageError};

/// Delays every record by a uniformly random time in `[min_ms, max_ms]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomDelayConfig {
    /// Shortest delay in milliseconds.
    #[serde(default)]
    pub min_ms: u64,
    /// Longest delay in milliseconds.
    pub max_ms: u64,
}

impl StageBuilder for RandomDelayConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.min_ms > self.max_ms {
            errors.report(
                path,
                "min_ms",
                format!("must not exceed max_ms ({} > {})", self.min_ms, self.max_ms),
            );
        }
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(RandomDelay {
            min_ms: self.min_ms,
            max_ms: self.max_ms,
        }))
    }
}

struct RandomDelay {
    min_ms: u64,
    max_ms: u64,
}

#[async_trait]
impl Stage for RandomDelay {
    async fn process(&self, record: Record, _context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let delay = rand::rng().random_range(self.min_ms..=self.max_ms);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok(vec![record])
    }
}
