//! `restore_pii`: puts the original personal data back into the answer.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::StageBuilder;
use crate::contracts::AnswerDraft;
use crate::core_api::{MessageContext, Payload, Record, Stage};
use crate::error::StageError;
use crate::pii::PiiScope;

/// Replaces the placeholders in the answer (the output of `generate`) with the values they
/// stand for, tolerating the case and spacing changes models make. Placeholders the model
/// invented are left as written and counted in the audit event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestorePiiConfig {}

impl StageBuilder for RestorePiiConfig {
    fn needs_earlier(&self) -> Option<&'static str> {
        // The placeholder map lives only in the message context that mask_pii filled.
        Some("mask_pii")
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(RestorePii))
    }
}

struct RestorePii;

/// Restores every string inside an extracted JSON value, leaving its structure intact.
fn restore_json(value: &mut Value, scope: &PiiScope, invented: &mut u32) {
    match value {
        Value::String(text) => {
            let restored = scope.restore(text);
            *invented += restored.invented;
            *text = restored.text;
        }
        Value::Array(items) => items.iter_mut().for_each(|item| restore_json(item, scope, invented)),
        Value::Object(fields) => fields
            .values_mut()
            .for_each(|field| restore_json(field, scope, invented)),
        _ => {}
    }
}

#[async_trait]
impl Stage for RestorePii {
    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let mut draft: AnswerDraft = record.payload.typed("an answer draft (put generate first)")?;
        let scope = context
            .extension::<PiiScope>()
            .ok_or_else(|| StageError::internal("no placeholders in the message context (mask_pii did not run)"))?;
        if let Some(data) = &mut draft.data {
            let mut invented = 0;
            restore_json(data, &scope, &mut invented);
            draft.invented_placeholders = invented;
            draft.answer = Some(data.to_string());
        } else if let Some(answer) = &draft.answer {
            let restored = scope.restore(answer);
            draft.invented_placeholders = restored.invented;
            draft.answer = Some(restored.text);
        }
        let payload = Payload::holding(&draft, "the answer draft")?;
        Ok(vec![Record { payload, ..record }])
    }
}
