//! `decode_document`: checks a documents-topic message against its contract.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::StageBuilder;
use crate::audit::Subject;
use crate::contracts::{Contract, Document};
use crate::core_api::{MessageContext, Payload, Record, Stage};
use crate::error::StageError;

/// Decodes and validates documents (`schemas/documents.schema.json`). Invalid UTF-8, invalid
/// JSON, schema violations and a key that differs from `doc_id` are dead-lettered with the reason.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeDocumentConfig {
    /// Accept a message whose key is not its `doc_id` (the key is then replaced by `doc_id`).
    /// Off by default: a foreign key means the producer partitions by something else, which
    /// breaks per-document ordering of versions.
    #[serde(default)]
    pub allow_foreign_key: bool,
}

impl StageBuilder for DecodeDocumentConfig {
    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(DecodeDocument {
            allow_foreign_key: self.allow_foreign_key,
        }))
    }
}

struct DecodeDocument {
    allow_foreign_key: bool,
}

#[async_trait]
impl Stage for DecodeDocument {
    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let bytes = record.payload.to_bytes();
        let (document, value): (Document, _) = Contract::documents().decode(&bytes)?;
        // A retry of this stage finds the subject already set, to the same value.
        context.set_failure_report(Arc::new(Subject::Document {
            tenant: document.header.tenant.clone(),
            doc_id: document.header.doc_id.clone(),
            version: document.header.version,
        }));
        let key =
            super::decode_question::checked_key(record.key, &document.header.doc_id, "doc_id", self.allow_foreign_key)?;
        Ok(vec![Record {
            key: Some(key),
            payload: Payload::Json(value),
            ..record
        }])
    }
}
