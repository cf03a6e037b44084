//! The HTTP listener: `/metrics` for Prometheus, `/healthz` for liveness, `/readyz` for readiness.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::metrics;

/// Which pipelines have joined their consumer group.
///
/// A pipeline counts as ready once its first assignment arrives, even an empty one: with more
/// replicas than partitions some replicas legitimately own nothing, and marking them unready
/// would make an orchestrator restart healthy standbys.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    pipelines: Arc<Mutex<BTreeMap<String, Option<usize>>>>,
}

impl Readiness {
    /// Declares a pipeline that must be assigned before the process is ready.
    pub fn register(&self, pipeline: &str) {
        self.lock().insert(pipeline.to_owned(), None);
    }

    /// Records the number of partitions currently assigned to `pipeline`.
    pub fn set_assigned(&self, pipeline: &str, partitions: usize) {
        self.lock().insert(pipeline.to_owned(), Some(partitions));
    }

    /// True when every registered pipeline has received an assignment.
    pub fn is_ready(&self) -> bool {
        let pipelines = self.lock();
        !pipelines.is_empty() && pipelines.values().all(Option::is_some)
    }

    fn report(&self) -> String {
        self.lock()
            .iter()
            .map(|(name, assigned)| match assigned {
                Some(count) => format!("{name}: {count} partitions assigned\n"),
                None => format!("{name}: waiting for partition assignment\n"),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<usize>>> {
        // A poisoned lock only means a panic elsewhere; the map itself is always consistent.
        self.pipelines.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Serves the endpoints on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, readiness: Readiness, shutdown: CancellationToken) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(|| async { metrics().render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, readiness.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_pipeline_has_an_assignment() {
        let readiness = Readiness::default();
        assert!(!readiness.is_ready(), "nothing registered yet");
        readiness.register("documents");
        readiness.register("questions");
        readiness.set_assigned("documents", 3);
        assert!(!readiness.is_ready());
        readiness.set_assigned("questions", 0);
        assert!(
            readiness.is_ready(),
            "an empty assignment still means the group was joined"
        );
        assert_eq!(
            readiness.report(),
            "documents: 3 partitions assigned\nquestions: 0 partitions assigned\n"
        );
    }
}
