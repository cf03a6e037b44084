//! `emit_answer`: turns the finished draft into the answers-topic message and its audit event.

use async_trait::async_trait;
use serde::Deserialize;

use super::{optional_sink, StageBuilder};
use crate::audit::{QuestionEvent, ToolEvent};
use crate::contracts::millis;
use crate::contracts::{AnswerDraft, AnswerStatus, Step};
use crate::core_api::{MessageContext, Payload, Record, Stage};
use crate::error::StageError;
use crate::status::StatusReporter;
use crate::telemetry::metrics::metrics;
use serde_inline_default::serde_inline_default;

/// Emits one answer per question to the pipeline's default sink (key `request_id`;
/// `schemas/answers.schema.json`) and a `question_answered` event to `audit_sink`.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitAnswerConfig {
    /// The sink for `question_answered` events; none: no audit event.
    #[serde_inline_default(Some("audit".to_owned()))]
    pub audit_sink: Option<String>,
}

impl StageBuilder for EmitAnswerConfig {
    fn sinks(&self) -> Vec<(&'static str, &str)> {
        optional_sink("audit_sink", &self.audit_sink)
    }

    fn needs_earlier(&self) -> Option<&'static str> {
        Some("mask_pii")
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(EmitAnswer {
            audit_sink: self.audit_sink.clone(),
        }))
    }
}

struct EmitAnswer {
    audit_sink: Option<String>,
}

#[async_trait]
impl Stage for EmitAnswer {
    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let draft: AnswerDraft = record.payload.typed("an answer draft")?;
        let answer = draft.clone().into_answer(millis(context.received_at.elapsed()));
        let mut outputs = Vec::with_capacity(2 + draft.tool_calls.len());
        if let Some(sink) = &self.audit_sink {
            for tool_event in ToolEvent::all_of(&draft, context) {
                outputs.push(tool_event.into_record(Some(sink.clone()))?);
            }
            let mut event = QuestionEvent::new(&draft, answer.status, context);
            event.provenance.reason = answer.provenance.reason.clone();
            outputs.push(event.into_record(Some(sink.clone()))?);
        }
        if let Some(status) = context.extension::<StatusReporter>() {
            // After every earlier step, and produced with the answer itself.
            status.flush().await;
            let terminal = Step::terminal(answer.status, answer.provenance.reason.clone());
            outputs.extend(status.record(terminal));
        }
        record_metrics(&draft, answer.status);
        let payload = Payload::holding(&answer, "the answer")?;
        outputs.push(Record {
            key: Some(answer.request_id.into_bytes()),
            payload,
            headers: record.headers,
            sink: None,
        });
        Ok(outputs)
    }
}

fn record_metrics(draft: &AnswerDraft, status: AnswerStatus) {
    let metrics = metrics();
    metrics
        .answers
        .with_label_values(&[&draft.tenant, status.as_str()])
        .inc();
    for (counts, found_in) in [(&draft.pii_counts, "question"), (&draft.context_pii_counts, "context")] {
        for (kind, n) in counts {
            metrics
                .pii_masked
                .with_label_values(&[kind, found_in])
                .inc_by(u64::from(*n));
        }
    }
    if let Some(model) = &draft.provenance.model {
        let task = draft.task.as_str();
        let tokens = &metrics.llm_tokens;
        tokens
            .with_label_values(&[&draft.tenant, model, task, "prompt"])
            .inc_by(draft.provenance.usage.prompt_tokens);
        tokens
            .with_label_values(&[&draft.tenant, model, task, "completion"])
            .inc_by(draft.provenance.usage.completion_tokens);
        metrics
            .llm_cost_usd
            .with_label_values(&[&draft.tenant, model, task])
            .inc_by(draft.provenance.cost_usd);
    }
}
