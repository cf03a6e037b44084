//! Batching index writes across messages, with upkeep in between.
//!
//! A LanceDB commit costs the same for one chunk as for thousands, and every commit adds a
//! fragment and a version. So all concurrent messages hand their document to one task that
//! gathers up to `max_documents` of them (or waits at most `max_wait`), applies them as one
//! batch, and only then answers each message; the offsets of those messages are committed
//! after that, so nothing is acknowledged before it is durable. The same task runs upkeep
//! between batches, so upkeep never races this replica's writes; with a [`CommitLock`], a batch
//! and upkeep wait for this replica's turn, so they never race other replicas' commits either.

use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{ChunkStore, CommitLock, DocumentWrite, MaintenancePolicy, StoreError, WriteOutcome};
use crate::core_api::Worker;
use crate::error::StageError;
use crate::telemetry::metrics::metrics;

type Reply = oneshot::Sender<Result<WriteOutcome, StageError>>;

struct Job {
    write: DocumentWrite,
    reply: Reply,
}

/// How the writer batches and when it does upkeep.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub max_documents: usize,
    pub max_wait: Duration,
    pub maintenance_interval: Duration,
    pub maintenance: MaintenancePolicy,
    /// Replicas writing the same table take turns through this lease; `None` when this
    /// process is the table's only writer.
    pub commit_lock: Option<CommitLock>,
}

/// A handle to the writing task; cheap to clone.
#[derive(Clone)]
pub struct IndexWriter(Worker<Job>);

impl IndexWriter {
    /// Starts the writing task on the current runtime; it owns `store`.
    pub fn spawn(store: ChunkStore, settings: WriterSettings) -> Self {
        Self(Worker::spawn(4096, |receiver| run(store, receiver, settings)))
    }

    /// Applies `write` (with others) and returns once it is committed.
    pub async fn write(&self, write: DocumentWrite) -> Result<WriteOutcome, StageError> {
        self.0
            .request(|reply| Job { write, reply })
            .await
            .map_err(|gone| StageError::internal(format!("the index writer {gone}")))?
    }
}

async fn run(mut store: ChunkStore, mut receiver: mpsc::Receiver<Job>, settings: WriterSettings) {
    let mut upkeep = tokio::time::interval(settings.maintenance_interval);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; nothing to tidy yet.
    upkeep.tick().await;
    // Upkeep also runs once right after this process's first write: a new table gets its
    // full-text index at once instead of a whole interval later (hybrid search needs it).
    let mut written = false;
    loop {
        tokio::select! {
            job = receiver.recv() => {
                let Some(first) = job else { return };
                let jobs = gather(first, &mut receiver, &settings).await;
                apply(&mut store, jobs, settings.commit_lock.as_ref()).await;
                if !written {
                    written = true;
                    maintain(&store, &settings).await;
                    upkeep.reset();
                }
            }
            _ = upkeep.tick() => maintain(&store, &settings).await,
        }
    }
}

async fn gather(first: Job, receiver: &mut mpsc::Receiver<Job>, settings: &WriterSettings) -> Vec<Job> {
    let mut jobs = vec![first];
    let deadline = tokio::time::Instant::now() + settings.max_wait;
    while jobs.len() < settings.max_documents {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(job)) => jobs.push(job),
            Ok(None) | Err(_) => break,
        }
    }
    jobs
}

/// The result of `work`, done in this replica's turn when replicas share the table.
async fn in_turn<T>(
    lock: Option<&CommitLock>,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StageError> {
    let Some(lock) = lock else {
        return Ok(work.await?);
    };
    let turn = lock.take().await?;
    let result = match turn.check() {
        Ok(()) => work.await.map_err(StageError::from),
        Err(lost) => Err(lost),
    };
    turn.end().await;
    result
}

async fn apply(store: &mut ChunkStore, jobs: Vec<Job>, lock: Option<&CommitLock>) {
    let started = Instant::now();
    let (writes, replies): (Vec<DocumentWrite>, Vec<Reply>) = jobs.into_iter().map(|j| (j.write, j.reply)).unzip();
    let chunks: usize = writes.iter().map(|w| w.document.chunks.len()).sum();
    let result = in_turn(lock, store.apply(&writes)).await;
    let m = metrics();
    m.index_batch_documents.observe(writes.len() as f64);
    m.index_batch_seconds.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(outcomes) => {
            m.index_chunks_written.inc_by(chunks as u64);
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let label = match &outcome {
                    WriteOutcome::Indexed { .. } => "indexed",
                    WriteOutcome::Deleted { .. } => "deleted",
                    WriteOutcome::Skipped { .. } => "skipped",
                };
                m.index_documents.with_label_values(&[label]).inc();
                let _ = reply.send(Ok(outcome));
            }
            // After the replies, so counting (table metadata, no scan) never delays them.
            match store.count_chunks(None).await {
                Ok(rows) => m.index_rows.set(rows as i64),
                Err(error) => warn!(%error, "cannot count the index's rows"),
            }
        }
        Err(error) => {
            warn!(documents = writes.len(), %error, "index batch failed");
            m.index_documents
                .with_label_values(&["failed"])
                .inc_by(writes.len() as u64);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

async fn maintain(store: &ChunkStore, settings: &WriterSettings) {
    // A panic inside LanceDB during upkeep (seen: an index left by two replicas' concurrent
    // builds, before upkeep took turns) must not take the writer, and every write, with it.
    let upkeep = in_turn(settings.commit_lock.as_ref(), store.maintain(&settings.maintenance));
    let report = match std::panic::AssertUnwindSafe(upkeep).catch_unwind().await {
        Ok(Ok(report)) => report,
        Ok(Err(error)) => return upkeep_failed(error),
        Err(_) => return upkeep_failed(StageError::external("LanceDB panicked during upkeep")),
    };
    metrics()
        .index_maintenance_seconds
        .observe(report.duration.as_secs_f64());
    if report.vector_index_built || report.full_text_index_built || report.fragments_removed > 0 {
        info!(?report, "index upkeep");
    }
}

/// Upkeep failing only slows searches and grows storage; writes go on. Retried next round.
fn upkeep_failed(error: StageError) {
    metrics().index_maintenance_failures.inc();
    warn!(%error, "index upkeep failed");
}
