//! Running a message through the ordered stages of a pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::Semaphore;
use tracing::warn;

use super::record::{MessageContext, Record};
use crate::config::{PipelineConfig, RetryConfig};
use crate::error::{Fault, StageError};
use crate::stages::Stage;
use crate::telemetry::metrics::metrics;

/// Why a message left the chain early.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Name of the stage that gave up.
    pub stage: String,
    /// What went wrong; its fault decides dead-letter or stop.
    pub error: StageError,
}

struct ChainStage {
    name: String,
    stage: Box<dyn Stage>,
    /// Bound on concurrent invocations of this stage, if the topology sets one.
    limit: Option<Arc<Semaphore>>,
}

/// The built stages of one pipeline.
pub struct StageChain {
    pipeline: String,
    stages: Vec<ChainStage>,
    retry: RetryConfig,
}

impl StageChain {
    /// Builds every stage of `config`.
    pub fn build(config: &PipelineConfig) -> Result<Self, Rejection> {
        let stages = config
            .stages
            .iter()
            .map(|spec| {
                let stage = spec.config.build().map_err(|error| Rejection {
                    stage: spec.name.clone(),
                    error,
                })?;
                Ok(ChainStage {
                    name: spec.name.clone(),
                    stage,
                    limit: spec.max_in_flight.map(|n| Arc::new(Semaphore::new(n as usize))),
                })
            })
            .collect::<Result<_, Rejection>>()?;
        Ok(Self {
            pipeline: config.name.clone(),
            stages,
            retry: config.retry.clone(),
        })
    }

    /// Calls every stage's start hook.
    pub async fn start(&self) -> Result<(), Rejection> {
        for stage in &self.stages {
            stage.stage.start().await.map_err(|error| Rejection {
                stage: stage.name.clone(),
                error,
            })?;
        }
        Ok(())
    }

    /// Calls every stage's stop hook.
    pub async fn stop(&self) {
        for stage in &self.stages {
            stage.stage.stop().await;
        }
    }

    /// Runs `record` through every stage. A stage may fan out; each output goes through the rest
    /// of the chain. The message is rejected as a whole when any of its records is: partial
    /// outputs of a rejected message are never produced.
    pub async fn run(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, Rejection> {
        let mut records = vec![record];
        for stage in &self.stages {
            let mut next = Vec::with_capacity(records.len());
            for record in records {
                next.extend(self.invoke(stage, record, context).await?);
            }
            records = next;
        }
        Ok(records)
    }

    async fn invoke(
        &self,
        stage: &ChainStage,
        record: Record,
        context: &MessageContext,
    ) -> Result<Vec<Record>, Rejection> {
        let labels = [self.pipeline.as_str(), stage.name.as_str()];
        let _permit = match &stage.limit {
            // The semaphore is never closed, so acquiring cannot fail.
            Some(limit) => Some(limit.acquire().await.expect("stage semaphore is never closed")),
            None => None,
        };
        let started = Instant::now();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.retry.initial_backoff_ms))
            .with_max_delay(Duration::from_millis(self.retry.max_backoff_ms))
            .with_max_times(self.retry.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        let mut attempts = 0u32;
        let result = (|| {
            attempts += 1;
            stage.stage.process(record.clone(), context)
        })
        .retry(backoff)
        .when(StageError::is_retryable)
        .notify(|error, delay| {
            metrics()
                .stage_messages
                .with_label_values(&[labels[0], labels[1], "retry"])
                .inc();
            warn!(pipeline = labels[0], stage = labels[1], offset = context.offset, ?delay, %error, "retrying");
        })
        .await;
        metrics()
            .stage_duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) if error.fault == Fault::Internal => "error",
            Err(_) => "dead_letter",
        };
        metrics()
            .stage_messages
            .with_label_values(&[labels[0], labels[1], outcome])
            .inc();
        result.map_err(|mut error| {
            if error.fault == Fault::External {
                error.reason = format!("gave up after {attempts} attempts: {}", error.reason);
            }
            Rejection {
                stage: stage.name.clone(),
                error,
            }
        })
    }
}
