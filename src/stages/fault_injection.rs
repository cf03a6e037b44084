//! `fault_injection`: fails chosen records on purpose, with a chosen fault domain.
//!
//! For failure drills and tests: it proves, against a real broker, what the engine does with each
//! kind of failure (dead-letter, retry then dead-letter, stop without committing).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Deserialize;

use super::StageBuilder;
use crate::core_api::{MessageContext, Record, Stage};
use crate::error::Findings;
use crate::error::{ConfigError, Fault, StageError};

/// Fails every record whose payload contains `contains`; other records pass unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultInjectionConfig {
    /// Substring of the payload that triggers the failure.
    pub contains: String,
    /// Whose fault the failure is: `input` (dead-letter), `external` (retry) or `internal` (stop).
    pub fault: Fault,
    /// How many times a matching record fails before it passes (per record, counted in this
    /// process); 0 means it always fails. Lets a drill show a transient outage being absorbed.
    #[serde(default)]
    pub fail_times: u32,
}

impl StageBuilder for FaultInjectionConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.contains.is_empty() {
            errors.report(path, "contains", "must not be empty (it would fail every record)");
        }
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(FaultInjection {
            config: self.clone(),
            failures: Mutex::new(HashMap::new()),
        }))
    }
}

struct FaultInjection {
    config: FaultInjectionConfig,
    /// Failures so far per (partition, offset) of the source message.
    failures: Mutex<HashMap<(i32, i64), u32>>,
}

#[async_trait]
impl Stage for FaultInjection {
    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let payload = record.payload.as_bytes();
        let matches = payload
            .windows(self.config.contains.len())
            .any(|window| window == self.config.contains.as_bytes());
        if !matches {
            return Ok(vec![record]);
        }
        let failures = {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let count = failures.entry((context.partition, context.offset)).or_insert(0);
            *count += 1;
            *count
        };
        if self.config.fail_times > 0 && failures > self.config.fail_times {
            return Ok(vec![record]);
        }
        Err(StageError {
            fault: self.config.fault,
            reason: format!("injected {} fault (failure {failures})", self.config.fault),
            retry_after: None,
        })
    }
}
