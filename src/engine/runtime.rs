//! Running a whole topology: telemetry listener plus one task per pipeline.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tracing::info;

use super::pipeline::Pipeline;
use super::shutdown::Shutdown;
use crate::clock;
use crate::config::{KafkaProperties, Topology};
use crate::schedule::Scheduler;
use crate::telemetry::{self, Readiness};
use crate::transport::kafka::create_producer;
use crate::transport::registry::SchemaRegistry;

/// Runs every pipeline of `topology` until `shutdown` fires or a pipeline fails fatally (which
/// stops the others too, so the process exits non-zero and an orchestrator restarts it).
pub async fn run_topology(topology: Topology, shutdown: Shutdown) -> anyhow::Result<()> {
    let readiness = Readiness::default();
    let address: SocketAddr = topology
        .telemetry
        .listen
        .parse()
        .context("telemetry.listen was validated as a socket address")?;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (telemetry.listen)"))?;
    info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let http = tokio::spawn(telemetry::serve(listener, readiness.clone(), shutdown.token()));

    let drain_timeout = Duration::from_millis(topology.shutdown.drain_timeout_ms);
    let registry = topology.schema_registry.as_ref().map(SchemaRegistry::new).transpose()?;
    let mut pipelines = Vec::new();
    for config in &topology.pipelines {
        pipelines.push(Pipeline::build(config, &topology.kafka, &readiness, registry.clone())?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for pipeline in pipelines {
        tasks.spawn(pipeline.run(shutdown.token(), drain_timeout));
    }
    if let Some(schedules) = &topology.schedules {
        let producer = create_producer(&topology.kafka, &KafkaProperties::new())
            .context("schedules: cannot create a Kafka producer")?;
        let scheduler = Scheduler::connect(schedules, producer, clock::system())
            .await
            .map_err(|error| anyhow::anyhow!("schedules: {}", error.reason))?;
        let token = shutdown.token();
        tasks.spawn(async move {
            scheduler.run(token).await;
            Ok(())
        });
    }
    let mut first_error = None;
    while let Some(result) = tasks.join_next().await {
        let result = result.context("pipeline task panicked").and_then(|r| r);
        if let Err(error) = result {
            // One pipeline failing stops the process: the others drain and commit first.
            shutdown.token().cancel();
            first_error.get_or_insert(error);
        }
    }
    shutdown.token().cancel();
    let _ = http.await;
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
