//! What a caller sees while the models work: partial answers (the streamed text, personal data
//! restored, produced to the partials sink as it comes; the stream always ends with the answer
//! actually given) and status events (each model attempt, retry and tool call).

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::contracts::{millis, Step};
use crate::contracts::{AnswerDraft, PartialAnswer, SCHEMA_VERSION};
use crate::core_api::{next_batch, MessageContext, Payload, Record};
use crate::llm::{DeltaSink, StreamEvent};
use crate::pii::{PiiScope, StreamRestorer};
use crate::status::StatusReporter;

/// Turns a call's events into partial answers (personal data restored) and status events.
pub(super) struct Progress<'a> {
    context: &'a MessageContext,
    /// Where partial answers go; none: the text is not streamed.
    partials_sink: Option<String>,
    status: Option<Arc<StatusReporter>>,
    request_id: String,
    tenant: String,
    seq: u64,
    /// The model and attempt the text now arriving belongs to.
    current: Option<(String, u32)>,
    restorer: StreamRestorer,
}

impl<'a> Progress<'a> {
    /// Progress of `draft`'s request: partial answers to `partials_sink`, status events when
    /// the message has a status reporter; none when there is neither.
    pub(super) fn new(context: &'a MessageContext, partials_sink: Option<&str>, draft: &AnswerDraft) -> Option<Self> {
        let status = context.extension::<StatusReporter>();
        if partials_sink.is_none() && status.is_none() {
            return None;
        }
        Some(Self {
            context,
            partials_sink: partials_sink.map(str::to_owned),
            status,
            request_id: draft.request_id.clone(),
            tenant: draft.tenant.clone(),
            seq: 0,
            current: None,
            restorer: StreamRestorer::default(),
        })
    }

    /// Where a call sends its events: the text too when partial answers are streamed.
    pub(super) fn sink(&self) -> (DeltaSink, UnboundedReceiver<StreamEvent>) {
        if self.partials_sink.is_some() {
            DeltaSink::channel()
        } else {
            DeltaSink::observer()
        }
    }

    fn report(&self, step: Step) {
        if let Some(status) = &self.status {
            status.report(step);
        }
    }

    /// Produces partials until the call ends. Events that queued up while the last partials
    /// were being produced go out as one partial: a slow broker gets fewer, larger pieces
    /// instead of slowing the model down.
    pub(super) async fn forward(&mut self, mut receiver: UnboundedReceiver<StreamEvent>) {
        while let Some(events) = next_batch(&mut receiver).await {
            let mut records = Vec::new();
            let mut text = String::new();
            for event in events {
                match event {
                    StreamEvent::Attempt { model, attempt } => {
                        records.extend(self.partial(std::mem::take(&mut text), false));
                        // What the failed attempt held back is void with it.
                        self.restorer = StreamRestorer::default();
                        self.report(Step::Generating {
                            model: model.clone(),
                            attempt,
                        });
                        self.current = Some((model, attempt));
                    }
                    StreamEvent::Retrying { reason, backoff } => {
                        if let Some((model, attempt)) = self.current.clone() {
                            self.report(Step::Retrying {
                                model,
                                attempt,
                                reason,
                                backoff_ms: millis(backoff),
                            });
                        }
                    }
                    StreamEvent::Text(piece) => {
                        let restored = self.restore(&piece);
                        text.push_str(&restored);
                    }
                    StreamEvent::Calling(tool) => {
                        records.extend(self.partial(std::mem::take(&mut text), false));
                        self.report(Step::CallingTool { tool: tool.clone() });
                        records.extend(self.calling(tool));
                    }
                }
            }
            records.extend(self.partial(text, false));
            self.send(records).await;
        }
    }

    /// No model's streamed reply is the answer (every attempt failed, or the reply was not an
    /// answer): the answer given instead, whole, as the last partial, so a follower's stream
    /// ends with what the answers topic says. Nothing is sent when there is no answer text.
    pub(super) async fn replace_with(&mut self, draft: &AnswerDraft) {
        let Some(answer) = draft.answer.as_deref() else {
            return;
        };
        let attempt = self.current.as_ref().map_or(1, |(_, attempt)| attempt + 1);
        self.current = Some((
            draft
                .provenance
                .model
                .clone()
                .unwrap_or_else(|| "extractive".to_owned()),
            attempt,
        ));
        self.restorer = StreamRestorer::default();
        let restored = self.restore(answer);
        self.end_with(restored).await;
    }

    /// The last partial of the attempt that answered: what the restorer still held back.
    pub(super) async fn finish(&mut self) {
        self.end_with(String::new()).await;
    }

    /// The last partial: `text`, then what the restorer still held back, marked done.
    async fn end_with(&mut self, text: String) {
        let rest = match self.context.extension::<PiiScope>() {
            Some(scope) => scope.with_vault(|vault| self.restorer.finish(vault)),
            None => String::new(),
        };
        let last = self.partial_always(text + &rest, true);
        self.send(last.into_iter().collect()).await;
    }

    fn restore(&mut self, piece: &str) -> String {
        let context = self.context;
        match context.extension::<PiiScope>() {
            Some(scope) => scope.with_vault(|vault| self.restorer.push(piece, vault)),
            None => piece.to_owned(),
        }
    }

    /// A partial carrying `delta`, unless it is empty.
    fn partial(&mut self, delta: String, done: bool) -> Option<Record> {
        if delta.is_empty() {
            return None;
        }
        self.partial_always(delta, done)
    }

    fn partial_always(&mut self, delta: String, done: bool) -> Option<Record> {
        self.record(delta, done, None)
    }

    /// A partial saying the model calls `tool`.
    fn calling(&mut self, tool: String) -> Option<Record> {
        self.record(String::new(), false, Some(tool))
    }

    fn record(&mut self, delta: String, done: bool, calling: Option<String>) -> Option<Record> {
        let sink = self.partials_sink.clone()?;
        let (model, attempt) = self.current.clone()?;
        let partial = PartialAnswer {
            calling,
            schema_version: SCHEMA_VERSION,
            request_id: self.request_id.clone(),
            tenant: self.tenant.clone(),
            seq: self.seq,
            model,
            attempt,
            delta,
            done,
        };
        self.seq += 1;
        Some(Record {
            key: Some(self.request_id.clone().into_bytes()),
            payload: Payload::from_typed(&partial).ok()?,
            headers: Vec::new(),
            sink: Some(sink),
        })
    }

    async fn send(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        if let Err(error) = self.context.produce_now(records).await {
            // Progress is lost, not the answer: that comes on the answers topic regardless.
            tracing::warn!(request_id = %self.request_id, %error, "cannot produce partial answers");
        }
    }
}
