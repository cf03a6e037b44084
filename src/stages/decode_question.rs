//! `decode_question`: checks a questions-topic message against its contract.

use async_trait::async_trait;
use serde::Deserialize;

use super::{optional_sink, StageBuilder};
use crate::contracts::{Contract, Question};
use crate::core_api::{MessageContext, Payload, Record, Stage};
use crate::error::StageError;
use crate::status::StatusReporter;

/// Decodes and validates questions (`schemas/questions.schema.json`). Invalid UTF-8, invalid
/// JSON, schema violations and a key that differs from `request_id` are dead-lettered.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeQuestionConfig {
    /// Accept a message whose key is not its `request_id` (the key is then replaced).
    #[serde(default)]
    pub allow_foreign_key: bool,
    /// The sink for status events (`schemas/status.schema.json`): each step a question goes
    /// through, for a caller following it; none: no status events.
    pub status_sink: Option<String>,
}

impl StageBuilder for DecodeQuestionConfig {
    fn sinks(&self) -> Vec<(&'static str, &str)> {
        optional_sink("status_sink", &self.status_sink)
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(DecodeQuestion {
            allow_foreign_key: self.allow_foreign_key,
            status_sink: self.status_sink.clone(),
        }))
    }
}

struct DecodeQuestion {
    allow_foreign_key: bool,
    status_sink: Option<String>,
}

#[async_trait]
impl Stage for DecodeQuestion {
    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let bytes = record.payload.to_bytes();
        let (question, value): (Question, _) = Contract::questions().decode(&bytes)?;
        let key = checked_key(record.key, &question.request_id, "request_id", self.allow_foreign_key)?;
        // Started once per delivery (a retried stage finds the reporter of its first attempt).
        if let (Some(sink), None) = (&self.status_sink, context.extension::<StatusReporter>()) {
            if let Some(reporter) = StatusReporter::start(context, sink, &question.request_id, &question.tenant) {
                context.extension_or_insert_with(|| reporter);
            }
        }
        Ok(vec![Record {
            key: Some(key),
            payload: Payload::Json(value),
            ..record
        }])
    }
}

/// The key a decoded message should carry: its id field. A missing key is filled in; a
/// different one is the producer's mistake unless explicitly allowed. The error names the field
/// and the rule, never the key or the id: the reason becomes a dead-letter header and a log
/// line, and a key may be personal data (an e-mail address as the request id, say).
pub(super) fn checked_key(
    key: Option<Vec<u8>>,
    id: &str,
    field: &str,
    allow_foreign_key: bool,
) -> Result<Vec<u8>, StageError> {
    match key {
        Some(key) if key != id.as_bytes() && !allow_foreign_key => Err(StageError::input(format!(
            "message key differs from {field} (the key must be the {field} unless allow_foreign_key is set)"
        ))),
        _ => Ok(id.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_a_missing_key_and_rejects_a_foreign_one() {
        assert_eq!(checked_key(None, "r1", "request_id", false).unwrap(), b"r1");
        assert_eq!(
            checked_key(Some(b"r1".to_vec()), "r1", "request_id", false).unwrap(),
            b"r1"
        );
        let error = checked_key(Some(b"x".to_vec()), "r1", "request_id", false).unwrap_err();
        assert_eq!(
            error.reason,
            "message key differs from request_id (the key must be the request_id unless allow_foreign_key is set)"
        );
        assert_eq!(
            checked_key(Some(b"x".to_vec()), "r1", "request_id", true).unwrap(),
            b"r1"
        );
    }

    #[test]
    fn a_foreign_key_is_refused_without_showing_the_key_or_the_id() {
        let key = "Siobhán O'Connell <siobhan.oconnell@example.org>";
        let id = "ticket for +44 20 7946 0958";
        let error = checked_key(Some(key.as_bytes().to_vec()), id, "doc_id", false).unwrap_err();
        assert_eq!(error.fault, crate::error::Fault::Input);
        for shown in ["Siobhán", "O'Connell", "siobhan.oconnell", "7946", "ticket"] {
            assert!(!error.reason.contains(shown), "{}", error.reason);
        }
        assert!(error.reason.contains("doc_id"), "{}", error.reason);
    }
}
