//! Status events: each step a question goes through, produced to the status sink as it happens
//! (`schemas/status.schema.json`), so a caller can follow a long request.
//!
//! `decode_question` starts a [`StatusReporter`] for the message when it has a `status_sink`;
//! the stages after it report their steps through the message's context. Steps are produced in
//! the order they were reported by one task per question, without holding up the question; the
//! terminal step goes out with the answer itself (after the earlier steps are flushed), so the
//! status topic never says "answered" before the answers topic has the answer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::contracts::{millis, StatusEvent, Step, SCHEMA_VERSION};
use crate::core_api::{next_batch, MessageContext, Payload, ProduceNow, Record};

/// Reports the steps of one delivery of one question.
pub struct StatusReporter {
    request_id: String,
    tenant: String,
    sink: String,
    received_at: Instant,
    /// The next step's number.
    seq: Mutex<u64>,
    queue: mpsc::UnboundedSender<Command>,
}

enum Command {
    Produce(Record),
    /// Answered once everything queued before it is produced.
    Flush(oneshot::Sender<()>),
}

impl StatusReporter {
    /// Starts reporting the question `request_id` of `tenant` to `sink`, and reports it
    /// `received`; none where the context cannot produce (a stage's unit test).
    pub fn start(context: &MessageContext, sink: &str, request_id: &str, tenant: &str) -> Option<Self> {
        let outputs = context.early_outputs()?;
        let (queue, commands) = mpsc::unbounded_channel();
        tokio::spawn(produce_in_order(outputs, commands, request_id.to_owned()));
        let reporter = Self {
            request_id: request_id.to_owned(),
            tenant: tenant.to_owned(),
            sink: sink.to_owned(),
            received_at: context.received_at,
            seq: Mutex::new(0),
            queue,
        };
        reporter.report(Step::Received);
        Some(reporter)
    }

    /// Reports `step` now; it is produced after the steps reported before it.
    pub fn report(&self, step: Step) {
        // Numbered and queued under one lock: steps reported at once from two tasks (the
        // model call and its progress) reach the topic in the order of their numbers.
        let mut seq = self.lock();
        if let Some(record) = self.numbered(&mut seq, step) {
            // The task ends only when the reporter is dropped: a send cannot fail before.
            let _ = self.queue.send(Command::Produce(record));
        }
    }

    /// The record of `step`, numbered after those reported so far, for a stage that produces
    /// it with its own outputs (the terminal step, with the answer).
    pub fn record(&self, step: Step) -> Option<Record> {
        let mut seq = self.lock();
        self.numbered(&mut seq, step)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.seq.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn numbered(&self, seq: &mut u64, step: Step) -> Option<Record> {
        let event = StatusEvent {
            schema_version: SCHEMA_VERSION,
            request_id: self.request_id.clone(),
            tenant: self.tenant.clone(),
            seq: *seq,
            step,
            at: crate::contracts::now_rfc3339(),
            elapsed_ms: millis(self.received_at.elapsed()),
        };
        *seq += 1;
        Some(Record {
            key: Some(self.request_id.clone().into_bytes()),
            payload: Payload::from_typed(&event).ok()?,
            headers: Vec::new(),
            sink: Some(self.sink.clone()),
        })
    }

    /// Waits until every step reported so far is produced (or could not be).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

/// Reports `step` for the question of `context`, when it has a status reporter.
pub fn report(context: &MessageContext, step: Step) {
    if let Some(reporter) = context.extension::<StatusReporter>() {
        reporter.report(step);
    }
}

/// Produces the steps in the order they come, what queued up meanwhile together.
async fn produce_in_order(
    outputs: Arc<dyn ProduceNow>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    request_id: String,
) {
    while let Some(batch) = next_batch(&mut commands).await {
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        for command in batch {
            match command {
                Command::Produce(record) => records.push(record),
                Command::Flush(done) => flushes.push(done),
            }
        }
        if !records.is_empty() {
            if let Err(error) = outputs.produce_now(records).await {
                // Progress is lost, not the answer: that comes on the answers topic regardless.
                tracing::warn!(%request_id, %error, "cannot produce status events");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
