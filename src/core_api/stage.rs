//! The contract between the engine and the stages it runs.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{MessageContext, Record};
use crate::error::StageError;

/// One step of a pipeline. Only [`Stage::process`] is required; the lifecycle hooks default to
/// doing nothing.
#[async_trait]
pub trait Stage: Send + Sync {
    /// Turns one record into zero or more. Errors say whose fault they are, which decides
    /// between dead-lettering the input, retrying, and stopping the pipeline.
    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError>;

    /// Called once before the first message (open connections, load models).
    async fn start(&self, _environment: &StageEnvironment) -> Result<(), StageError> {
        Ok(())
    }

    /// Called once when the pipeline stops fetching, while the messages in flight still wait
    /// for their stages: a stage that holds messages back to batch them (until a size or a
    /// time) lets them go now, so they finish within the drain deadline instead of being
    /// abandoned and redelivered.
    async fn drain(&self) {}

    /// Called once after the last message (flush buffers, close connections).
    async fn stop(&self) {}
}

/// What a stage may use of the process around it when it starts.
#[derive(Debug, Clone, Default)]
pub struct StageEnvironment {
    /// The librdkafka properties the topology's clients share (`kafka:`, at least
    /// `bootstrap.servers`), for a stage that talks to the bus itself (a tool on a topic).
    pub kafka: BTreeMap<String, String>,
}

/// What readers of a pipeline's outputs still expect when a message is dead-lettered after a
/// stage learnt what it is about: a document's failure event, a question's `failed` answer. The
/// stage that decodes the message sets it on the [`MessageContext`]; the engine produces its
/// records beside the dead letter and knows nothing of questions or documents.
pub trait FailureReport: std::fmt::Debug + Send + Sync {
    /// The records to produce for `failure`.
    fn records(&self, failure: &StageFailure<'_>) -> Result<Vec<Record>, StageError>;
}

/// A message that a stage gave up on, as the engine hands it to the message's
/// [`FailureReport`].
#[derive(Debug, Clone, Copy)]
pub struct StageFailure<'a> {
    pub context: &'a MessageContext,
    /// Name of the stage that gave up.
    pub stage: &'a str,
    pub error: &'a StageError,
    /// The pipeline's audit sink, when it has one.
    pub audit_sink: Option<&'a str>,
}
