//! Logs, metrics and the HTTP endpoints operators and orchestrators look at.

mod http;
mod logging;
pub mod metrics;

pub use http::{serve, Readiness};
pub use logging::{init_logging, LogFormat, Verbosity};
