//! Audit events: one event per notable step, on the audit topic (`schemas/audit.schema.json`).
//!
//! Analysts read this topic, so events carry identifiers, counts, models and durations, never
//! document text, raw PII or secrets. Delivery is at least once: after a crash an event can be
//! repeated, and `event_id` is the same for the same step of the same document version so
//! readers can drop repeats.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contracts::{
    millis, now_rfc3339, AnswerDraft, AnswerStatus, ModelAttempt, Provenance, Step, Task, ToolUse, SCHEMA_VERSION,
};
use crate::core_api::{FailureReport, MessageContext, Payload, Record, StageFailure};
use crate::error::StageError;
use crate::pseudonym::{previous_user_ref, user_ref};
use crate::status::StatusReporter;

/// What a message is about, as far as audit events are concerned. Set on the message context
/// by the stage that decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A version of a document.
    Document {
        tenant: String,
        doc_id: String,
        version: u64,
    },
    /// A question, once its personal data is masked (the masked text only).
    Question {
        tenant: String,
        request_id: String,
        user: String,
        task: Task,
        masked_question: String,
    },
}

/// The kinds of document events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentEventKind {
    /// The version's chunks are in the index and replaced every older chunk of the document.
    DocumentIndexed,
    /// Every chunk of the document was removed.
    DocumentDeleted,
    /// Nothing changed: a newer version (or this one) was already applied.
    DocumentSkipped,
    /// The version could not be processed; the message went to the dead-letter topic.
    DocumentFailed,
}

impl DocumentEventKind {
    fn as_str(self) -> &'static str {
        match self {
            DocumentEventKind::DocumentIndexed => "document_indexed",
            DocumentEventKind::DocumentDeleted => "document_deleted",
            DocumentEventKind::DocumentSkipped => "document_skipped",
            DocumentEventKind::DocumentFailed => "document_failed",
        }
    }
}

/// Where the message that caused an event was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSource {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl EventSource {
    /// Where the message of `context` was read.
    fn of(context: &MessageContext) -> Self {
        Self {
            topic: context.topic.to_string(),
            partition: context.partition,
            offset: context.offset,
        }
    }
}

/// `event` as a record keyed by `key` for `sink` (`None`: the pipeline's default sink).
fn event_record(event: &impl Serialize, key: String, sink: Option<String>) -> Result<Record, StageError> {
    let payload = Payload::holding(event, "the audit event")?;
    Ok(Record {
        key: Some(key.into_bytes()),
        payload,
        headers: Vec::new(),
        sink,
    })
}

/// An event about one version of a document (key: `doc_id`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentEvent {
    pub schema_version: u32,
    /// `{tenant}/{doc_id}:{version}:{event}`: the same for a repeat of the same step.
    pub event_id: String,
    pub event: DocumentEventKind,
    /// RFC 3339, UTC, milliseconds.
    pub occurred_at: String,
    pub pipeline: String,
    pub tenant: String,
    pub doc_id: String,
    pub version: u64,
    /// Chunks written (indexed) or removed (deleted).
    pub chunk_count: Option<u64>,
    pub embedding_model: Option<String>,
    /// Milliseconds per stage, in chain order, plus `total` since the message was received.
    pub durations_ms: BTreeMap<String, f64>,
    /// Why a version was skipped or failed.
    pub reason: Option<String>,
    /// The stage that failed (failed events only).
    pub stage: Option<String>,
    /// Whose fault the failure was: `input` or `external` (failed events only).
    pub fault: Option<String>,
    pub source: EventSource,
}

impl DocumentEvent {
    /// An event of `kind` for `tenant/doc_id` at `version`, timed from `context`; optional
    /// fields are left empty for the caller to fill in.
    pub fn new(kind: DocumentEventKind, tenant: &str, doc_id: &str, version: u64, context: &MessageContext) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            event_id: format!("{tenant}/{doc_id}:{version}:{}", kind.as_str()),
            event: kind,
            occurred_at: now_rfc3339(),
            pipeline: context.pipeline.to_string(),
            tenant: tenant.to_owned(),
            doc_id: doc_id.to_owned(),
            version,
            chunk_count: None,
            embedding_model: None,
            durations_ms: durations_ms(context),
            reason: None,
            stage: None,
            fault: None,
            source: EventSource::of(context),
        }
    }

    /// The event as a record for `sink` (`None`: the pipeline's default sink), keyed by `doc_id`.
    pub fn into_record(self, sink: Option<String>) -> Result<Record, StageError> {
        let key = self.doc_id.clone();
        event_record(&self, key, sink)
    }
}

/// A retrieved passage as an audit event records it: identifiers and scores, no text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkUse {
    pub chunk_id: String,
    pub doc_id: String,
    pub score: f32,
    /// Whether the answer cites it.
    pub cited: bool,
}

/// What every event about a question carries, whatever happened (flattened into the event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionEnvelope {
    pub schema_version: u32,
    /// `{tenant}/{request_id}:{event}` plus what tells repeats of one step apart.
    pub event_id: String,
    pub event: String,
    /// RFC 3339, UTC, milliseconds.
    pub occurred_at: String,
    pub pipeline: String,
    pub tenant: String,
    pub request_id: String,
    /// A pseudonym of the user ([`user_ref`](crate::pseudonym::user_ref)).
    pub user_ref: String,
    /// During a key rotation: the pseudonym under the retiring key, which rows from before
    /// the rotation carry as their `user_ref`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ref_previous: Option<String>,
    /// Milliseconds per stage, in chain order, plus `total` since the message was received.
    pub durations_ms: BTreeMap<String, f64>,
    pub source: EventSource,
}

impl QuestionEnvelope {
    /// The envelope of an `event` about `draft`, whose id ends in `id_suffix`, timed from `context`.
    fn new(event: &str, id_suffix: &str, draft: &AnswerDraft, context: &MessageContext) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            event_id: format!("{}/{}:{event}{id_suffix}", draft.tenant, draft.request_id),
            event: event.to_owned(),
            occurred_at: now_rfc3339(),
            pipeline: context.pipeline.to_string(),
            tenant: draft.tenant.clone(),
            request_id: draft.request_id.clone(),
            user_ref: user_ref(&draft.tenant, &draft.user),
            user_ref_previous: previous_user_ref(&draft.tenant, &draft.user),
            durations_ms: durations_ms(context),
            source: EventSource::of(context),
        }
    }

    /// `event` as a record for `sink`, keyed by the request id.
    fn record(&self, event: &impl Serialize, sink: Option<String>) -> Result<Record, StageError> {
        event_record(event, self.request_id.clone(), sink)
    }
}

/// The event for one tool call of a question (key: `request_id`, event `tool_called`, id
/// suffix `:{iteration}:{index}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolEvent {
    #[serde(flatten)]
    pub envelope: QuestionEnvelope,
    #[serde(flatten)]
    pub call: ToolUse,
}

impl ToolEvent {
    /// The events for the tool calls of `draft`, timed from `context`.
    pub fn all_of(draft: &AnswerDraft, context: &MessageContext) -> Vec<Self> {
        draft
            .tool_calls
            .iter()
            .map(|call| Self {
                envelope: QuestionEnvelope::new(
                    "tool_called",
                    &format!(":{}:{}", call.iteration, call.index),
                    draft,
                    context,
                ),
                call: call.clone(),
            })
            .collect()
    }

    /// The event as a record for `sink`, keyed by `request_id`.
    pub fn into_record(self, sink: Option<String>) -> Result<Record, StageError> {
        self.envelope.record(&self, sink)
    }
}

/// The event for an answered question (key: `request_id`), whatever its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionEvent {
    /// Event `question_answered`, no id suffix.
    #[serde(flatten)]
    pub envelope: QuestionEnvelope,
    pub task: Task,
    pub status: AnswerStatus,
    pub masked_question: String,
    pub chunks: Vec<ChunkUse>,
    #[serde(flatten)]
    pub provenance: Provenance,
    pub attempts: Vec<ModelAttempt>,
    pub pii_counts: BTreeMap<String, u32>,
    pub context_pii_counts: BTreeMap<String, u32>,
    pub invented_placeholders: u32,
}

impl QuestionEvent {
    /// The event for `draft` (after the answering stages), timed from `context`.
    pub fn new(draft: &AnswerDraft, status: AnswerStatus, context: &MessageContext) -> Self {
        let cited: Vec<&str> = draft.citations.iter().map(|c| c.chunk_id.as_str()).collect();
        Self {
            envelope: QuestionEnvelope::new("question_answered", "", draft, context),
            task: draft.task,
            status,
            masked_question: draft.question.clone(),
            chunks: draft
                .passages
                .iter()
                .map(|p| ChunkUse {
                    chunk_id: p.chunk_id.clone(),
                    doc_id: p.doc_id.clone(),
                    score: p.score,
                    cited: cited.contains(&p.chunk_id.as_str()),
                })
                .collect(),
            provenance: draft.provenance.clone(),
            attempts: draft.attempts.clone(),
            pii_counts: draft.pii_counts.clone(),
            context_pii_counts: draft.context_pii_counts.clone(),
            invented_placeholders: draft.invented_placeholders,
        }
    }

    /// The event as a record for `sink`, keyed by `request_id`.
    pub fn into_record(self, sink: Option<String>) -> Result<Record, StageError> {
        self.envelope.record(&self, sink)
    }
}

fn durations_ms(context: &MessageContext) -> BTreeMap<String, f64> {
    let mut durations: BTreeMap<String, f64> = context
        .stage_times()
        .into_iter()
        .map(|(stage, elapsed)| (stage, millis(elapsed)))
        .collect();
    durations.insert("total".to_owned(), millis(context.received_at.elapsed()));
    durations
}

/// The audit event for a document rejected by `stage` with `error`.
fn failure_event(
    (tenant, doc_id, version): (&str, &str, u64),
    context: &MessageContext,
    stage: &str,
    error: &StageError,
) -> DocumentEvent {
    let mut event = DocumentEvent::new(DocumentEventKind::DocumentFailed, tenant, doc_id, version, context);
    event.reason = Some(error.reason.clone());
    event.stage = Some(stage.to_owned());
    event.fault = Some(error.fault.as_str().to_owned());
    event
}

/// What a dead-lettered message still owes its readers once a stage identified it, beside the
/// dead letter: a document's `document_failed` event (to `audit_sink`), or for a question a
/// `failed` answer (to the default sink, so the asking service is not left waiting) and its
/// `question_answered` event.
impl FailureReport for Subject {
    fn records(&self, failure: &StageFailure<'_>) -> Result<Vec<Record>, StageError> {
        let StageFailure {
            context,
            stage,
            error,
            audit_sink,
        } = *failure;
        let mut records = Vec::new();
        match self {
            Subject::Document {
                tenant,
                doc_id,
                version,
            } => {
                if let Some(sink) = audit_sink {
                    let event = failure_event((tenant, doc_id, *version), context, stage, error);
                    records.push(event.into_record(Some(sink.to_owned()))?);
                }
            }
            Subject::Question {
                tenant,
                request_id,
                user,
                task,
                masked_question,
            } => {
                let reason = format!(
                    "the question could not be processed ({} fault in stage {stage}); it was sent to the dead-letter topic",
                    error.fault
                );
                let draft = AnswerDraft::failed(tenant, request_id, user, *task, masked_question, &reason);
                if let Some(sink) = audit_sink {
                    records.push(
                        QuestionEvent::new(&draft, AnswerStatus::Failed, context).into_record(Some(sink.to_owned()))?,
                    );
                }
                if let Some(status) = context.extension::<StatusReporter>() {
                    records.extend(status.record(Step::terminal(AnswerStatus::Failed, Some(reason.clone()))));
                }
                let answer = draft.into_answer(millis(context.received_at.elapsed()));
                let payload = Payload::holding(&answer, "the answer")?;
                records.push(Record {
                    key: Some(answer.request_id.into_bytes()),
                    payload,
                    headers: Vec::new(),
                    sink: None,
                });
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_document_failure_is_reported_once_a_stage_identified_the_document() {
        let context = MessageContext::new(Arc::from("documents"), Arc::from("docs"), 2, 7, None);
        let error = StageError::input("document text is empty");
        assert!(context.failure_report().is_none());
        context.set_failure_report(Arc::new(Subject::Document {
            tenant: "acme".into(),
            doc_id: "a.md".into(),
            version: 3,
        }));
        context.record_stage_time("decode_document", Duration::from_micros(1500));
        context.record_stage_time("chunk", Duration::from_millis(2));
        context.record_stage_time("chunk", Duration::from_millis(1));
        let report = context.failure_report().unwrap();
        let failure = StageFailure {
            context: &context,
            stage: "chunk",
            error: &error,
            audit_sink: None,
        };
        assert!(report.records(&failure).unwrap().is_empty());
        let records = report
            .records(&StageFailure {
                audit_sink: Some("audit"),
                ..failure
            })
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].sink.as_deref(), Some("audit"));
        let event: DocumentEvent = records[0].payload.clone().into_typed().unwrap();
        assert_eq!(event.event_id, "acme/a.md:3:document_failed");
        assert_eq!(event.reason.as_deref(), Some("document text is empty"));
        assert_eq!(event.fault.as_deref(), Some("input"));
        assert_eq!(event.durations_ms["decode_document"], 1.5);
        assert_eq!(event.durations_ms["chunk"], 3.0);
        assert!(event.durations_ms.contains_key("total"));
        assert_eq!(event.source.offset, 7);
        let value = serde_json::to_value(&event).unwrap();
        crate::contracts::Contract::audit().validate(&value).unwrap();
    }
}
