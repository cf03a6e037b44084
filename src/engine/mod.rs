//! The pipeline engine: consume, run the stage chain, produce, commit — at least once.

mod chain;
mod outputs;
mod pipeline;
mod runtime;
mod shutdown;
mod wire_format;

pub use chain::{Rejection, StageChain};
pub use pipeline::Pipeline;
pub use runtime::run_topology;
pub use shutdown::Shutdown;
pub use wire_format::WireFormatDecoder;
