//! What each tool call returned, kept in the state store (the replay records' store, for as
//! long as they are kept) so that a redelivered question reads it back instead of calling the
//! tool again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::CallSite;
use crate::error::StageError;
use crate::llm::ToolCall;
use crate::state::StateStore;

/// Where the results are kept.
pub struct ToolRecords {
    store: StateStore,
    key_prefix: String,
    ttl: Duration,
}

/// One call's result as recorded. The result is kept as the tool returned it, before masking:
/// masking it again on a redelivery gives the same placeholders as the first time, and the
/// store holds it only as long as the replay records (a store as trusted as the tool itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedResult {
    pub tool: String,
    /// Digest of the arguments the model wrote (placeholders, not values).
    pub arguments_sha256: String,
    pub outcome: String,
    pub content: String,
}

impl RecordedResult {
    pub fn new(call: &ToolCall, outcome: &str, content: &str) -> Self {
        Self {
            tool: call.name().to_owned(),
            arguments_sha256: digest(call.arguments()),
            outcome: outcome.to_owned(),
            content: content.to_owned(),
        }
    }

    /// The mark of a call to a tool that is not idempotent, recorded before it is made: found
    /// without a result on a redelivery, the call may have happened.
    pub fn started(call: &ToolCall) -> Self {
        Self::new(call, STARTED, "")
    }

    /// Whether this is only the mark of a call made, without its result.
    pub fn is_started(&self) -> bool {
        self.outcome == STARTED
    }

    /// Whether this is the result of `call` (same tool, same arguments).
    pub fn is_for(&self, call: &ToolCall) -> bool {
        self.tool == call.name() && self.arguments_sha256 == digest(call.arguments())
    }

    /// The outcome's name as [`super::ToolOutcome`] has it.
    pub fn outcome_name(&self) -> &'static str {
        ["ok", "unknown_tool", "not_allowed", "invalid_arguments", "timeout"]
            .into_iter()
            .find(|name| *name == self.outcome)
            .unwrap_or("failed")
    }
}

/// The outcome of a call recorded before it is made.
const STARTED: &str = "started";

fn digest(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

impl ToolRecords {
    pub fn new(store: StateStore, key_prefix: &str, ttl: Duration) -> Self {
        Self {
            store,
            key_prefix: key_prefix.to_owned(),
            ttl,
        }
    }

    fn key(&self, site: &CallSite<'_>) -> String {
        format!(
            "{}:tool:{}:{}:{}:{}",
            self.key_prefix, site.tenant, site.request_id, site.iteration, site.index
        )
    }

    pub async fn read(&self, site: &CallSite<'_>) -> Result<Option<RecordedResult>, StageError> {
        self.store.get_json(&self.key(site)).await
    }

    pub async fn record(&self, site: &CallSite<'_>, result: &RecordedResult) -> Result<(), StageError> {
        self.store.set_json(&self.key(site), result, self.ttl).await
    }
}
