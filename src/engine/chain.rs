//! Running a message through the ordered stages of a pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use opentelemetry::KeyValue;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::config::{PipelineConfig, RetryConfig};
use crate::core_api::{MessageContext, Record};
use crate::core_api::{Stage, StageEnvironment};
use crate::error::{Fault, StageError};
use crate::telemetry::metrics::metrics;
use crate::telemetry::traces;

/// Name of the step before the stages, in metrics and dead-letter headers (the same name as
/// the checks made before any stage).
pub const SOURCE_STEP: &str = "source";

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
    /// What the stages get when they start.
    environment: StageEnvironment,
}

impl StageChain {
    /// Builds every stage of `config`, after `source_step` (named `source`: it reads the
    /// message's wire format) when the chain has stages; an empty chain copies bytes unchanged.
    pub fn build(
        config: &PipelineConfig,
        source_step: Option<Box<dyn Stage>>,
        environment: StageEnvironment,
    ) -> Result<Self, Rejection> {
        let mut stages: Vec<ChainStage> = config
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
        if let Some(stage) = source_step.filter(|_| !stages.is_empty()) {
            stages.insert(
                0,
                ChainStage {
                    name: SOURCE_STEP.to_owned(),
                    stage,
                    limit: None,
                },
            );
        }
        Ok(Self {
            pipeline: config.name.clone(),
            stages,
            retry: config.retry.clone(),
            environment,
        })
    }

    /// Calls every stage's start hook.
    pub async fn start(&self) -> Result<(), Rejection> {
        for stage in &self.stages {
            stage.stage.start(&self.environment).await.map_err(|error| Rejection {
                stage: stage.name.clone(),
                error,
            })?;
        }
        Ok(())
    }

    /// Calls every stage's drain hook (fetching has stopped).
    pub async fn drain(&self) {
        for stage in &self.stages {
            stage.stage.drain().await;
        }
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
        context.start_stage(&stage.name);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.retry.initial_backoff_ms))
            .with_max_delay(Duration::from_millis(self.retry.max_backoff_ms))
            .with_max_times(self.retry.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        let max_backoff = Duration::from_millis(self.retry.max_backoff_ms);
        let mut attempts = 0u32;
        let span = traces::stage(&self.pipeline, &stage.name);
        let attempt = (|| {
            attempts += 1;
            stage.stage.process(record.clone(), context)
        })
        .retry(backoff)
        .when(StageError::is_retryable)
        .adjust(|error, delay| retry_delay(error, delay, max_backoff))
        .notify(|error, delay| {
            metrics()
                .stage_messages
                .with_label_values(&[labels[0], labels[1], "retry"])
                .inc();
            warn!(pipeline = labels[0], stage = labels[1], offset = context.offset, ?delay, %error, "retrying");
        });
        let result = traces::within(span.clone(), attempt).await;
        context.finish_stage();
        traces::annotate(&span, KeyValue::new("ragstream.stage.attempts", i64::from(attempts)));
        traces::finish(
            &span,
            match &result {
                Ok(_) => Ok(()),
                // The fault, not the reason: a reason may quote the message.
                Err(error) => Err((error.fault.as_str(), "the stage failed")),
            },
        );
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

/// The wait before the next attempt: the backoff's `delay`, or longer if the service said when
/// to come back (bounded by `max_backoff`, so one hint cannot stall a partition indefinitely).
/// `None` means the attempts are used up, which a hint must not change.
fn retry_delay(error: &StageError, delay: Option<Duration>, max_backoff: Duration) -> Option<Duration> {
    delay.map(|delay| match error.retry_after {
        Some(wait) => wait.min(max_backoff).max(delay),
        None => delay,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::core_api::Payload;

    /// Fails with `fault` for the first `failures` calls, then passes records through.
    struct Flaky {
        fault: Fault,
        failures: u32,
        calls: Arc<AtomicU32>,
    }

    #[async_trait]
    impl Stage for Flaky {
        async fn process(&self, record: Record, _: &MessageContext) -> Result<Vec<Record>, StageError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call < self.failures {
                return Err(StageError {
                    fault: self.fault,
                    reason: format!("failure {}", call + 1),
                    retry_after: None,
                });
            }
            Ok(vec![record])
        }
    }

    /// Emits each record twice, routed to two sinks.
    struct FanOut;

    #[async_trait]
    impl Stage for FanOut {
        async fn process(&self, record: Record, _: &MessageContext) -> Result<Vec<Record>, StageError> {
            let audit = Record {
                sink: Some("audit".into()),
                ..record.clone()
            };
            Ok(vec![record, audit])
        }
    }

    fn chain(stages: Vec<(&str, Box<dyn Stage>)>, max_attempts: u32) -> StageChain {
        StageChain {
            pipeline: "unit".into(),
            stages: stages
                .into_iter()
                .map(|(name, stage)| ChainStage {
                    name: name.into(),
                    stage,
                    limit: None,
                })
                .collect(),
            retry: RetryConfig {
                max_attempts,
                initial_backoff_ms: 1,
                max_backoff_ms: 2,
            },
            environment: StageEnvironment::default(),
        }
    }

    fn flaky(fault: Fault, failures: u32) -> (Box<dyn Stage>, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let stage = Flaky {
            fault,
            failures,
            calls: calls.clone(),
        };
        (Box::new(stage), calls)
    }

    fn input() -> (Record, MessageContext) {
        let record = Record {
            key: Some(b"k".to_vec()),
            payload: Payload::Bytes(b"v".to_vec()),
            headers: vec![],
            sink: None,
        };
        let context = MessageContext::new(Arc::from("unit"), Arc::from("in"), 0, 42, None);
        (record, context)
    }

    #[tokio::test]
    async fn external_faults_are_retried_until_they_pass() {
        let (stage, calls) = flaky(Fault::External, 2);
        let (record, context) = input();
        let out = chain(vec![("flaky", stage)], 3)
            .run(record.clone(), &context)
            .await
            .unwrap();
        assert_eq!(out, vec![record]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_retry_waits_as_long_as_the_service_asked_up_to_max_backoff() {
        let ms = Duration::from_millis;
        let hinted = |wait| StageError::external("429").with_retry_after(Some(ms(wait)));
        let max = ms(1_000);
        assert_eq!(retry_delay(&hinted(300), Some(ms(50)), max), Some(ms(300)));
        assert_eq!(retry_delay(&hinted(5_000), Some(ms(50)), max), Some(max));
        assert_eq!(
            retry_delay(&hinted(10), Some(ms(50)), max),
            Some(ms(50)),
            "never shorter than the backoff"
        );
        assert_eq!(retry_delay(&hinted(300), None, max), None, "no extra attempts");
        assert_eq!(
            retry_delay(&StageError::external("503"), Some(ms(50)), max),
            Some(ms(50))
        );
    }

    #[tokio::test]
    async fn external_faults_give_up_after_max_attempts() {
        let (stage, calls) = flaky(Fault::External, u32::MAX);
        let (record, context) = input();
        let rejection = chain(vec![("flaky", stage)], 4)
            .run(record, &context)
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(rejection.stage, "flaky");
        assert_eq!(rejection.error.fault, Fault::External);
        assert_eq!(rejection.error.reason, "gave up after 4 attempts: failure 4");
    }

    #[tokio::test]
    async fn input_and_internal_faults_are_never_retried() {
        for fault in [Fault::Input, Fault::Internal] {
            let (stage, calls) = flaky(fault, u32::MAX);
            let (record, context) = input();
            let rejection = chain(vec![("bad", stage)], 5).run(record, &context).await.unwrap_err();
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{fault} is not retried");
            assert_eq!(rejection.error.fault, fault);
            assert_eq!(rejection.error.reason, "failure 1");
        }
    }

    #[tokio::test]
    async fn fan_out_records_each_run_through_the_rest_of_the_chain() {
        let (counter, calls) = flaky(Fault::Input, 0);
        let (record, context) = input();
        let stages: Vec<(&str, Box<dyn Stage>)> = vec![("fan", Box::new(FanOut)), ("count", counter)];
        let out = chain(stages, 1).run(record, &context).await.unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].sink.as_deref(), Some("audit"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_rejected_fan_out_rejects_the_whole_message() {
        let (fails_second, _) = flaky(Fault::Input, 0);
        struct FailOnAudit(Box<dyn Stage>);
        #[async_trait]
        impl Stage for FailOnAudit {
            async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
                if record.sink.is_some() {
                    return Err(StageError::input("audit copy rejected"));
                }
                self.0.process(record, context).await
            }
        }
        let (record, context) = input();
        let stages: Vec<(&str, Box<dyn Stage>)> = vec![
            ("fan", Box::new(FanOut)),
            ("check", Box::new(FailOnAudit(fails_second))),
        ];
        let rejection = chain(stages, 1).run(record, &context).await.unwrap_err();
        assert_eq!(rejection.stage, "check");
    }
}
