//! Logs, metrics, traces and the HTTP endpoints operators and orchestrators look at.

mod http;
mod logging;
pub mod metrics;
pub mod traces;

pub use http::{serve, Readiness};
pub use logging::{init_logging, LogFormat, Verbosity};
