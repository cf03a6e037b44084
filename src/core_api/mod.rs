//! The core API every stage and the engine share: [`Stage`], the [`Record`]s that flow between
//! stages, and the [`MessageContext`] of the message they came from, with typed per-message
//! extensions so a stage's state needs no change here. It depends on nothing else in the crate
//! but [`crate::error`]: the engine runs stages through it without knowing what they do, and
//! stages are written against it without knowing the engine.

mod record;
mod stage;

pub use record::{next_batch, MessageContext, Payload, ProduceNow, Record, Worker};
pub use stage::{FailureReport, Stage, StageEnvironment, StageFailure};
