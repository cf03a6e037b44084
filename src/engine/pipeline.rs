//! One pipeline at run time: the consume loop, the processing tasks and the committer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::chain::{Rejection, StageChain, SOURCE_STEP};
use super::outputs::Outputs;
use super::wire_format::WireFormatDecoder;
use crate::config::{KafkaProperties, PipelineConfig};
use crate::core_api::{MessageContext, Payload, Record};
use crate::core_api::{Stage, StageEnvironment, StageFailure};
use crate::error::{Fault, StageError};
use crate::telemetry::metrics::metrics;
use crate::telemetry::traces::{self, MessageTrace};
use crate::telemetry::Readiness;
use crate::transport::kafka::{self, PipelineConsumer, PipelineContext};
use crate::transport::offsets::{InFlight, OffsetTracker};
use crate::transport::registry::SchemaRegistry;

/// Longest wait, at shutdown, for the last offset commit (see `run`).
const FINAL_COMMIT_DEADLINE: Duration = Duration::from_secs(10);

/// A pipeline ready to run.
pub struct Pipeline {
    name: Arc<str>,
    config: PipelineConfig,
    chain: StageChain,
    /// Shared with the messages' contexts, for records produced before a message finishes.
    outputs: Arc<Outputs>,
    consumer: Arc<PipelineConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    /// Set when a failure means this pipeline must stop without committing past it.
    fatal: CancellationToken,
    fatal_reason: Mutex<Option<String>>,
}

impl Pipeline {
    /// Builds the clients and stages of `config`.
    pub fn build(
        config: &PipelineConfig,
        shared: &KafkaProperties,
        readiness: &Readiness,
        registry: Option<Arc<SchemaRegistry>>,
    ) -> anyhow::Result<Arc<Self>> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        readiness.register(&config.name);
        let context = PipelineContext::new(&config.name, tracker.clone(), readiness.clone());
        let consumer: PipelineConsumer = kafka::consumer_config(shared, &config.source.kafka, &config.source.group)
            .create_with_context(context)
            .with_context(|| format!("pipeline `{}`: cannot create consumer", config.name))?;
        let producer = kafka::create_producer(shared, &config.producer)
            .with_context(|| format!("pipeline `{}`: cannot create producer", config.name))?;
        let source_step: Box<dyn Stage> = Box::new(WireFormatDecoder::new(registry.clone()));
        let environment = StageEnvironment { kafka: shared.clone() };
        let chain = StageChain::build(config, Some(source_step), environment).map_err(|rejection| {
            anyhow::anyhow!(
                "pipeline `{}`: cannot build stage `{}`: {}",
                config.name,
                rejection.stage,
                rejection.error
            )
        })?;
        Ok(Arc::new(Self {
            name: Arc::from(config.name.as_str()),
            config: config.clone(),
            chain,
            outputs: Arc::new(Outputs::new(config, producer, registry)),
            consumer: Arc::new(consumer),
            tracker,
            fatal: CancellationToken::new(),
            fatal_reason: Mutex::new(None),
        }))
    }

    /// Consumes until `shutdown` is cancelled (or a fatal error), then drains in-flight messages
    /// for at most `drain_timeout`, commits what finished, and returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, drain_timeout: Duration) -> anyhow::Result<()> {
        self.chain.start().await.map_err(|rejection| {
            anyhow::anyhow!(
                "pipeline `{}`: stage `{}` failed to start: {}",
                self.name,
                rejection.stage,
                rejection.error
            )
        })?;
        self.outputs
            .prepare()
            .await
            .with_context(|| format!("pipeline `{}`: cannot prepare its sinks", self.name))?;
        self.consumer
            .subscribe(&[&self.config.source.topic])
            .with_context(|| format!("pipeline `{}`: cannot subscribe", self.name))?;
        info!(pipeline = %self.name, topic = %self.config.source.topic, group = %self.config.source.group, "pipeline started");

        let committer_stop = CancellationToken::new();
        let committer = tokio::spawn(self.clone().commit_periodically(committer_stop.clone()));
        let tasks = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(self.config.max_in_flight as usize));
        loop {
            // Take a slot before fetching so at most max_in_flight messages are ever held.
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.fatal.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            };
            let message = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.fatal.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => {
                    let message = message.detach();
                    let in_flight = self
                        .lock_tracker()
                        .begin((message.topic().to_owned(), message.partition()), message.offset());
                    metrics().messages_consumed.with_label_values(&[&self.name]).inc();
                    metrics().in_flight.with_label_values(&[&self.name]).inc();
                    tasks.spawn(self.clone().process(message, in_flight, permit));
                }
                Err(error) => {
                    // Consumer errors are transient (broker down, rebalancing); librdkafka recovers.
                    warn!(pipeline = %self.name, %error, "consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }

        tasks.close();
        let pending = tasks.len();
        info!(pipeline = %self.name, in_flight = pending, "fetching stopped; draining");
        self.chain.drain().await;
        if tokio::time::timeout(drain_timeout, tasks.wait()).await.is_err() {
            let abandoned = self.lock_tracker().in_flight();
            warn!(pipeline = %self.name, abandoned, "drain deadline reached; unfinished messages stay uncommitted and will be redelivered");
        }
        committer_stop.cancel();
        // A commit is a blocking librdkafka call: against a broker that went away (or came back
        // without this group) it may not return. The messages it would have committed are
        // redelivered; waiting for it would keep the process from exiting at all.
        let final_commit = async {
            let _ = committer.await;
            self.commit(CommitMode::Sync).await;
        };
        if tokio::time::timeout(FINAL_COMMIT_DEADLINE, final_commit).await.is_err() {
            warn!(pipeline = %self.name, "final offset commit did not finish; uncommitted messages will be redelivered");
        }
        self.chain.stop().await;
        self.outputs.flush(Duration::from_secs(5));
        let fatal = self.fatal_reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match fatal {
            Some(reason) => anyhow::bail!("pipeline `{}` stopped: {reason}", self.name),
            None => {
                info!(pipeline = %self.name, "pipeline stopped cleanly");
                Ok(())
            }
        }
    }

    async fn process(self: Arc<Self>, message: OwnedMessage, in_flight: InFlight, permit: OwnedSemaphorePermit) {
        let context = MessageContext::new(
            self.name.clone(),
            Arc::from(message.topic()),
            message.partition(),
            message.offset(),
            message.timestamp().to_millis(),
        )
        .with_early_outputs(self.outputs.clone());
        let headers = message_headers(&message);
        let trace = traces::message_context(&MessageTrace {
            pipeline: &self.name,
            group: &self.config.source.group,
            topic: &context.topic,
            partition: context.partition,
            offset: context.offset,
            headers: &headers,
        });
        let (outcome, rejected_by) = traces::within(trace.clone(), self.settle(&message, &context, headers)).await;
        match (&rejected_by, &outcome) {
            // The stage and the fault, not the reason: a reason may quote the message.
            (Some(rejection), _) => traces::finish(
                &trace,
                Err((
                    rejection.error.fault.as_str(),
                    &format!("rejected by stage `{}`", rejection.stage),
                )),
            ),
            (None, Err(_)) => traces::finish(&trace, Err(("produce", "the outputs could not be produced"))),
            (None, Ok(())) => traces::finish(&trace, Ok(())),
        }
        match outcome {
            Ok(()) => {
                self.lock_tracker().finish(&in_flight);
            }
            Err(reason) => self.stop_fatally(reason),
        }
        metrics().in_flight.with_label_values(&[&self.name]).dec();
        drop(permit);
    }

    /// Runs the message through the chain and produces its outputs, or dead-letters it; `Err`
    /// with why the pipeline must stop, and the rejection when a stage refused the message.
    async fn settle(
        &self,
        message: &OwnedMessage,
        context: &MessageContext,
        headers: Vec<(String, Vec<u8>)>,
    ) -> (Result<(), String>, Option<Rejection>) {
        match self.transform(message, context, headers).await {
            Ok(records) => (self.outputs.produce(records).await.map_err(|e| e.to_string()), None),
            Err(rejection) if rejection.error.fault == Fault::Internal => (
                Err(format!(
                    "stage `{}` failed at {}/{}/{}: {}",
                    rejection.stage, context.topic, context.partition, context.offset, rejection.error
                )),
                Some(rejection),
            ),
            Err(rejection) => {
                warn!(
                    pipeline = %self.name, stage = %rejection.stage, partition = context.partition,
                    offset = context.offset, reason = %rejection.error.reason, "dead-lettering message"
                );
                (self.dead_letter(message, context, &rejection).await, Some(rejection))
            }
        }
    }

    /// Dead-letters the message and, when a stage had identified it, emits what its readers
    /// still expect (the stage's [`FailureReport`](crate::core_api::FailureReport): a document's
    /// failure event, a question's `failed` answer); the offset waits for all of them.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        context: &MessageContext,
        rejection: &Rejection,
    ) -> Result<(), String> {
        let events = match context.failure_report() {
            Some(report) => report
                .records(&StageFailure {
                    context,
                    stage: &rejection.stage,
                    error: &rejection.error,
                    audit_sink: self.config.audit_sink.as_deref(),
                })
                .map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let (dead_letter, events) = tokio::join!(
            self.outputs.dead_letter(message, context, rejection),
            self.outputs.produce(events)
        );
        dead_letter.and(events).map_err(|e| e.to_string())
    }

    async fn transform(
        &self,
        message: &OwnedMessage,
        context: &MessageContext,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Record>, Rejection> {
        let payload = message.payload().unwrap_or_default();
        if payload.len() > self.config.max_message_bytes {
            return Err(Rejection {
                stage: SOURCE_STEP.to_owned(),
                error: StageError::input(format!(
                    "payload of {} bytes exceeds max_message_bytes ({})",
                    payload.len(),
                    self.config.max_message_bytes
                )),
            });
        }
        let record = Record {
            key: message.key().map(<[u8]>::to_vec),
            payload: Payload::Bytes(payload.to_vec()),
            headers,
            sink: None,
        };
        self.chain.run(record, context).await
    }

    fn stop_fatally(&self, reason: String) {
        error!(pipeline = %self.name, %reason, "fatal error; stopping without committing past the failed message");
        let mut slot = self.fatal_reason.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(reason);
        self.fatal.cancel();
    }

    async fn commit_periodically(self: Arc<Self>, stop: CancellationToken) {
        let mut interval = tokio::time::interval(Duration::from_millis(self.config.commit_interval_ms));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => self.commit(CommitMode::Sync).await,
            }
        }
    }

    /// Commits every partition whose watermark moved since the last commit.
    async fn commit(self: &Arc<Self>, mode: CommitMode) {
        let candidates = self.lock_tracker().commit_candidates();
        if candidates.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        let to_commit = candidates.clone();
        // A synchronous commit blocks on a broker round trip; keep it off the async workers.
        let result = tokio::task::spawn_blocking(move || kafka::commit_offsets(&*consumer, &to_commit, mode)).await;
        match result {
            Ok(Ok(())) => {
                self.lock_tracker().mark_committed(&candidates);
                kafka::record_commit(&self.name, &candidates);
            }
            Ok(Err(error)) => {
                metrics().commits.with_label_values(&[&self.name, "error"]).inc();
                warn!(pipeline = %self.name, %error, "offset commit failed; will retry");
            }
            Err(error) => warn!(pipeline = %self.name, %error, "offset commit task failed"),
        }
    }

    fn lock_tracker(&self) -> std::sync::MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The message's Kafka headers as (name, value) pairs (a header without a value: empty).
fn message_headers(message: &OwnedMessage) -> Vec<(String, Vec<u8>)> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}
