//! Status events: the steps a question goes through, for a caller following it
//! (`schemas/status.schema.json`).

use serde::{Deserialize, Serialize};

use super::AnswerStatus;

/// One step of one delivery of a question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub schema_version: u32,
    pub request_id: String,
    pub tenant: String,
    /// 0, 1, 2… per delivery.
    pub seq: u64,
    #[serde(flatten)]
    pub step: Step,
    /// When the step began (RFC 3339, UTC).
    pub at: String,
    /// Since this delivery was received.
    pub elapsed_ms: f64,
}

/// What happens to the question, with what each step tells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Decoded and accepted.
    Received,
    /// Waiting behind a rate limit or a budget window.
    Queued { wait_ms: f64 },
    /// Searching the tenant's documents.
    Retrieving,
    /// A model call begins.
    Generating { model: String, attempt: u32 },
    /// That call failed and is tried again after `backoff_ms`.
    Retrying {
        model: String,
        attempt: u32,
        reason: String,
        backoff_ms: f64,
    },
    /// The model calls a tool.
    CallingTool { tool: String },
    /// The answer is given (`ok`, `extractive`, `low_confidence`, `no_context`).
    Answered { status: AnswerStatus },
    /// No answer: `reason` says why.
    Failed {
        status: AnswerStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A budget, a rate limit or the tenant's PII policy refused the question.
    Refused {
        status: AnswerStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Step {
    /// The terminal step for an answer of `status`.
    pub fn terminal(status: AnswerStatus, reason: Option<String>) -> Self {
        match status {
            AnswerStatus::Failed => Step::Failed { status, reason },
            AnswerStatus::BudgetExceeded | AnswerStatus::RateLimited | AnswerStatus::Blocked => {
                Step::Refused { status, reason }
            }
            _ => Step::Answered { status },
        }
    }

    /// Whether the question's delivery ends with this step.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Step::Answered { .. } | Step::Failed { .. } | Step::Refused { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{Contract, SCHEMA_VERSION};

    #[test]
    fn every_step_matches_the_schema() {
        let steps = [
            Step::Received,
            Step::Queued { wait_ms: 120.5 },
            Step::Retrieving,
            Step::Generating {
                model: "primary".into(),
                attempt: 1,
            },
            Step::Retrying {
                model: "primary".into(),
                attempt: 1,
                reason: "server: 503".into(),
                backoff_ms: 250.0,
            },
            Step::CallingTool {
                tool: "get_order_status".into(),
            },
            Step::terminal(AnswerStatus::Ok, None),
            Step::terminal(AnswerStatus::Failed, Some("every model failed".into())),
            Step::terminal(AnswerStatus::RateLimited, Some("20 requests per minute".into())),
        ];
        for (seq, step) in steps.into_iter().enumerate() {
            let event = StatusEvent {
                schema_version: SCHEMA_VERSION,
                request_id: "r-1".into(),
                tenant: "acme".into(),
                seq: seq as u64,
                step,
                at: "2026-12-07T06:30:00.000Z".into(),
                elapsed_ms: 12.5,
            };
            let value = serde_json::to_value(&event).unwrap();
            Contract::status().validate(&value).unwrap();
            assert_eq!(serde_json::from_value::<StatusEvent>(value).unwrap(), event);
        }
        assert_eq!(
            serde_json::to_value(Step::terminal(AnswerStatus::RateLimited, None)).unwrap(),
            serde_json::json!({ "step": "refused", "status": "rate_limited" })
        );
    }
}
