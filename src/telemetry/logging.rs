//! `tracing` setup: human-readable by default, JSON lines for log shippers.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Coloured, aligned lines for people.
    #[default]
    Human,
    /// One JSON object per line for log pipelines.
    Json,
}

/// How chatty the default log filter is (`RUST_LOG` overrides it either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// A long-running service (`ragstream run`): lifecycle events at info.
    Service,
    /// A one-shot command (`ingest`, `search`, …): its own output is the report; only warnings.
    Command,
}

/// Installs the global subscriber. The filter comes from `RUST_LOG`, else from `verbosity`.
pub fn init_logging(format: LogFormat, verbosity: Verbosity) {
    let default = match verbosity {
        // LanceDB logs every table load and query plan at info: too much for a service log.
        Verbosity::Service => "info,rdkafka=warn,lance=warn",
        Verbosity::Command => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling in twice) is harmless, so its error is ignored.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
