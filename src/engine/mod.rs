//! The pipeline engine: consume, run the stage chain, produce, commit — at least once.

mod chain;
pub mod offsets;
mod outputs;
mod pipeline;
mod record;
mod runtime;
mod shutdown;
mod wire_format;

pub use chain::{Rejection, StageChain};
pub use pipeline::Pipeline;
pub use record::{MessageContext, Payload, ProduceNow, Record};
pub use runtime::run_topology;
pub use shutdown::Shutdown;
pub use wire_format::WireFormatDecoder;
