//! What flows between stages: records, and the context of the message they came from.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::stage::FailureReport;
use crate::error::StageError;

/// The body of a record: raw bytes as consumed, or JSON once a stage has decoded it (so later
/// stages do not parse the same text again).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Bytes exactly as they arrived or as a stage produced them.
    Bytes(Vec<u8>),
    /// A decoded JSON value; serialized compactly when produced.
    Json(serde_json::Value),
}

impl Payload {
    /// Serializes the payload for producing.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().into_owned()
    }

    /// The payload's bytes, borrowed when it still is bytes.
    pub fn as_bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Payload::Bytes(bytes) => Cow::Borrowed(bytes),
            // Serializing a `Value` cannot fail: its keys are always strings.
            Payload::Json(value) => Cow::Owned(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    /// Reads the payload as a typed message, consuming it (no copy of an already decoded value).
    pub fn into_typed<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        match self {
            Payload::Json(value) => serde_json::from_value(value),
            Payload::Bytes(bytes) => serde_json::from_slice(&bytes),
        }
    }

    /// A JSON payload holding `message`.
    pub fn from_typed<T: Serialize + ?Sized>(message: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_value(message).map(Payload::Json)
    }

    /// The message a stage expects, `what` naming it for the error (e.g. `an answer draft (put
    /// retrieve first)`): a payload of another shape is the input's fault, not a retryable one.
    pub fn typed<T: DeserializeOwned>(self, what: &str) -> Result<T, StageError> {
        self.into_typed().map_err(|error| {
            let reason = crate::error::without_values(&error.to_string());
            StageError::input(format!("not {what}: {reason}"))
        })
    }

    /// A JSON payload holding `message`, `what` naming it for the error: a message that cannot
    /// be serialized is a defect of ragstream's own types, reported as internal.
    pub fn holding<T: Serialize + ?Sized>(message: &T, what: &str) -> Result<Self, StageError> {
        Self::from_typed(message).map_err(|error| StageError::internal(format!("cannot serialize {what}: {error}")))
    }
}

/// One record on its way through a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Kafka message key (kept from the input unless a stage changes it).
    pub key: Option<Vec<u8>>,
    /// The body.
    pub payload: Payload,
    /// Kafka headers, kept from the input unless a stage changes them.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Name of the sink this record goes to; `None` means the pipeline's first (default) sink.
    pub sink: Option<String>,
}

/// Produces records at once, while their message is still being processed: progress reports
/// (partial answers), not results. They do not hold back the offset, and when the message is
/// redelivered they are produced again.
#[async_trait]
pub trait ProduceNow: Send + Sync {
    /// Produces `records` and waits for the broker's acknowledgement.
    async fn produce_now(&self, records: Vec<Record>) -> Result<(), StageError>;
}

/// A task that serves the jobs sent to it (an embedding batcher, an index or audit table
/// writer), through a handle that is cheap to clone.
pub struct Worker<Job> {
    jobs: tokio::sync::mpsc::Sender<Job>,
}

impl<Job> Clone for Worker<Job> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<Job: Send + 'static> Worker<Job> {
    /// Starts `serve` on the current runtime with the other end of a queue of `capacity` jobs;
    /// it ends when every handle is dropped and the queue is empty.
    pub fn spawn<Served>(capacity: usize, serve: impl FnOnce(tokio::sync::mpsc::Receiver<Job>) -> Served) -> Self
    where
        Served: std::future::Future<Output = ()> + Send + 'static,
    {
        let (jobs, receiver) = tokio::sync::mpsc::channel(capacity);
        tokio::spawn(serve(receiver));
        Self { jobs }
    }

    /// Hands the task a job and waits for its reply; `Err` with what became of the task when
    /// it is gone.
    pub async fn request<Reply>(
        &self,
        job: impl FnOnce(tokio::sync::oneshot::Sender<Reply>) -> Job,
    ) -> Result<Reply, &'static str> {
        let (reply, response) = tokio::sync::oneshot::channel();
        self.jobs.send(job(reply)).await.map_err(|_| "has stopped")?;
        response.await.map_err(|_| "dropped the request")
    }
}

/// Waits for the next item, then takes every item already queued behind it: what piled up
/// while the last batch was being produced goes out as one batch, so a slow broker gets fewer,
/// larger batches instead of holding up the sender. `None` once the channel is closed.
pub async fn next_batch<T>(receiver: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> Option<Vec<T>> {
    let mut batch = vec![receiver.recv().await?];
    while let Ok(next) = receiver.try_recv() {
        batch.push(next);
    }
    Some(batch)
}

/// Where the message being processed came from, and what stages learnt about it on the way;
/// shared by every record derived from it.
#[derive(Debug)]
pub struct MessageContext {
    /// Name of the pipeline.
    pub pipeline: Arc<str>,
    /// Source topic.
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Kafka timestamp of the source message in milliseconds, when it has one.
    pub timestamp_ms: Option<i64>,
    /// When processing of the message began.
    pub received_at: Instant,
    /// What a failure of the message still owes its readers beside the dead letter, set by the
    /// stage that learns what the message is about (see [`FailureReport`]).
    failure_report: OnceLock<Arc<dyn FailureReport>>,
    /// What stages learnt about the message for the stages after them, one value per type (the
    /// question's personal-data placeholders, set by `mask_pii`). It lives exactly as long as
    /// the message: never serialized or produced.
    extensions: Extensions,
    /// Time each stage took so far, in chain order (retries included).
    stage_clock: Mutex<StageClock>,
    /// The pipeline's producer for records that cannot wait for the end of the chain.
    early_outputs: Option<EarlyOutputs>,
}

/// Per-message values by type: the engine carries them without knowing what they are.
#[derive(Default)]
struct Extensions(Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.lock().map(|map| map.len()).unwrap_or_default();
        write!(f, "Extensions({count})")
    }
}

/// A [`ProduceNow`] behind a name `Debug` can print.
#[derive(Clone)]
struct EarlyOutputs(Arc<dyn ProduceNow>);

impl std::fmt::Debug for EarlyOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EarlyOutputs")
    }
}

/// The stages a message has been through, and the one it is in.
#[derive(Debug, Default)]
struct StageClock {
    finished: Vec<(String, Duration)>,
    running: Option<(String, Instant)>,
}

impl MessageContext {
    /// The context of a message consumed from `topic`/`partition`/`offset`.
    pub fn new(pipeline: Arc<str>, topic: Arc<str>, partition: i32, offset: i64, timestamp_ms: Option<i64>) -> Self {
        Self {
            pipeline,
            topic,
            partition,
            offset,
            timestamp_ms,
            received_at: Instant::now(),
            failure_report: OnceLock::new(),
            extensions: Extensions::default(),
            stage_clock: Mutex::new(StageClock::default()),
            early_outputs: None,
        }
    }

    /// Lets stages produce records before the message is finished, with `outputs`.
    pub fn with_early_outputs(mut self, outputs: Arc<dyn ProduceNow>) -> Self {
        self.early_outputs = Some(EarlyOutputs(outputs));
        self
    }

    /// Whether [`produce_now`](Self::produce_now) reaches a broker (it does in a running
    /// pipeline, not in a stage's unit test).
    pub fn can_produce_now(&self) -> bool {
        self.early_outputs.is_some()
    }

    /// The producer behind [`produce_now`](Self::produce_now), for work that outlives a call
    /// (a task producing a question's status events in order).
    pub fn early_outputs(&self) -> Option<Arc<dyn ProduceNow>> {
        self.early_outputs.as_ref().map(|EarlyOutputs(outputs)| outputs.clone())
    }

    /// Produces `records` now (see [`ProduceNow`]); without early outputs there is nowhere to
    /// send them and they are dropped.
    pub async fn produce_now(&self, records: Vec<Record>) -> Result<(), StageError> {
        match &self.early_outputs {
            Some(EarlyOutputs(outputs)) => outputs.produce_now(records).await,
            None => Ok(()),
        }
    }

    /// The value of type `T` a stage stored for this message, if one did.
    pub fn extension<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let map = self.extensions.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&TypeId::of::<T>())
            .cloned()
            .and_then(|value| value.downcast::<T>().ok())
    }

    /// The value of type `T` stored for this message, stored first from `init` when there is
    /// none (a retried stage finds the value of its first attempt).
    pub fn extension_or_insert_with<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let mut map = self.extensions.0.lock().unwrap_or_else(|p| p.into_inner());
        let value = map.entry(TypeId::of::<T>()).or_insert_with(|| Arc::new(init())).clone();
        drop(map);
        value
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("extensions are stored under their own type id"))
    }

    /// Sets what a failure of this message owes its readers; the first report set stays (a
    /// retried stage sets the same one again).
    pub fn set_failure_report(&self, report: Arc<dyn FailureReport>) {
        let _ = self.failure_report.set(report);
    }

    /// What a failure of this message owes its readers, once a stage has said.
    pub fn failure_report(&self) -> Option<&Arc<dyn FailureReport>> {
        self.failure_report.get()
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, StageClock> {
        self.stage_clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the start of `stage` for this message (called by the stage chain).
    pub fn start_stage(&self, stage: &str) {
        self.clock().running = Some((stage.to_owned(), Instant::now()));
    }

    /// Marks the end of the stage started last.
    pub fn finish_stage(&self) {
        let running = self.clock().running.take();
        if let Some((stage, started)) = running {
            self.record_stage_time(&stage, started.elapsed());
        }
    }

    /// Records that `stage` took `elapsed` for this message.
    pub fn record_stage_time(&self, stage: &str, elapsed: Duration) {
        self.clock().finished.push((stage.to_owned(), elapsed));
    }

    /// Time spent per stage so far, in chain order, the running stage included up to now (so a
    /// stage can report its own time in what it emits); a stage that ran for several records
    /// of the message is summed.
    pub fn stage_times(&self) -> Vec<(String, Duration)> {
        let clock = self.clock();
        let running = clock
            .running
            .as_ref()
            .map(|(stage, started)| (stage, started.elapsed()));
        let mut summed: Vec<(String, Duration)> = Vec::with_capacity(clock.finished.len() + 1);
        for (stage, elapsed) in clock.finished.iter().map(|(s, e)| (s, *e)).chain(running) {
            match summed.iter_mut().find(|(name, _)| name == stage) {
                Some((_, total)) => *total += elapsed,
                None => summed.push((stage.clone(), elapsed)),
            }
        }
        summed
    }
}
