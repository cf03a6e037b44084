//! Graceful shutdown, triggered by SIGTERM or SIGINT.
//!
//! The first signal cancels the token: pipelines stop fetching, drain in-flight work within the
//! configured deadline, commit, and the process exits 0. A second signal means the operator does
//! not want to wait: the process exits at once with 130, committing nothing more, which is safe
//! because only finished work was ever committed.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Owns the cancellation token every long-running task watches.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A shutdown handle that nothing has triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token to watch (clone it into tasks).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Starts a task that turns SIGTERM/SIGINT into cancellation.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let token = self.token.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            info!(
                signal = name,
                "shutting down: no new messages are fetched, in-flight work is drained"
            );
            token.cancel();
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
            warn!("second signal: exiting without waiting for in-flight work");
            std::process::exit(130);
        });
        Ok(())
    }
}
