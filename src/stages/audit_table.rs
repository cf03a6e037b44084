//! `audit_table`: writes the audit events a pipeline reads into the audit table (or the answers
//! it reads into the answers table), Parquet files for SQL (`ragstream sql`, DuckDB, pandas,
//! Spark).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{started, StageBuilder};
use crate::analytics::answers::AnswerRow;
use crate::analytics::location::TableLocation;
use crate::analytics::rows::{AuditRow, TableRow};
use crate::analytics::writer::{FlushPolicy, TableWriter};
use crate::clock::{self, Clock};
use crate::contracts::Answer;
use crate::core_api::{MessageContext, Record, Stage, StageEnvironment};
use crate::error::{ConfigError, Findings, StageError};
use crate::pseudonym;

/// Writes each audit event it reads (a pipeline on the audit topic) as a row of the audit table:
/// Parquet files under `audit_events/date=YYYY-MM-DD/` (and `tenant=…/`) in a directory or an
/// object store, a file cut at `flush.max_rows` rows or after `flush.max_wait_ms`. A message is done, and its offset may be committed, only once the file holding
/// its row is written whole; after a crash the events of uncommitted messages are written
/// again, and readers drop repeats by `event_id` (`ragstream sql` does). Emits nothing: a
/// pipeline that ends with it needs no sink. With `table: answers` (a pipeline on the answers
/// topic) it writes the answers table under `answers/` instead, repeats dropped by `request_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditTableConfig {
    /// A directory (created if missing) or an object-store URI (`s3://bucket/prefix`).
    pub uri: String,
    /// Object-store settings, as for `index` (`aws_endpoint`, `aws_region`, `allow_http`…).
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Partition by tenant under each day too (`date=…/tenant=…/`).
    #[serde(default)]
    pub partition_by_tenant: bool,
    /// When a file is cut: `max_rows`, `max_wait_ms`.
    #[serde(default)]
    pub flush: FlushPolicy,
    /// What the pipeline reads and which table it writes: `audit_events` (the audit topic) or
    /// `answers` (the answers topic).
    #[serde(default)]
    pub table: TableKind,
    /// For `table: answers`: keep each answer's text and extracted data. Off by default: those
    /// hold the personal values the question had; the user is always a pseudonym (`user_ref`).
    #[serde(default)]
    pub answer_text: bool,
}

/// The table an `audit_table` stage writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// Audit events, one row each.
    #[default]
    AuditEvents,
    /// Answers, one row each.
    Answers,
}

impl StageBuilder for AuditTableConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.uri.trim().is_empty() {
            errors.report(path, "uri", "must name a directory or an object-store URI");
        }
        self.flush.validate(&format!("{path}.flush"), errors);
        if self.answer_text && self.table != TableKind::Answers {
            errors.report(path, "answer_text", "applies to `table: answers` only");
        }
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(AuditTable {
            config: self.clone(),
            writer: OnceLock::new(),
        }))
    }

    fn is_terminal(&self) -> bool {
        true
    }
}

struct AuditTable {
    config: AuditTableConfig,
    /// Set by `start`, on the pipeline's runtime.
    writer: OnceLock<Writer>,
}

/// The writing task of the configured table.
enum Writer {
    AuditEvents(TableWriter<AuditRow>),
    Answers(TableWriter<AnswerRow>),
}

fn spawn<Row: TableRow>(
    config: &AuditTableConfig,
    location: TableLocation,
    clock: std::sync::Arc<dyn Clock>,
) -> TableWriter<Row> {
    TableWriter::spawn(location, config.flush.clone(), config.partition_by_tenant, clock)
}

#[async_trait]
impl Stage for AuditTable {
    async fn start(&self, _environment: &StageEnvironment) -> Result<(), StageError> {
        let config = &self.config;
        let location = TableLocation::open(&config.uri, &config.storage_options)
            .map_err(|error| StageError::internal(format!("audit table at {}: {error}", config.uri)))?;
        let writer = match config.table {
            TableKind::AuditEvents => Writer::AuditEvents(spawn(config, location, clock::system())),
            TableKind::Answers => Writer::Answers(spawn(config, location, clock::system())),
        };
        let _ = self.writer.set(writer);
        Ok(())
    }

    async fn process(&self, record: Record, _context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let unfit = |error: crate::analytics::rows::RowError| StageError::input(error.to_string());
        match started(&self.writer, "audit_table")? {
            Writer::AuditEvents(writer) => {
                let event: Value = record.payload.typed("an audit event")?;
                writer.write(AuditRow::from_event(&event).map_err(unfit)?).await?;
            }
            Writer::Answers(writer) => {
                let answer: Answer = record.payload.typed("an answer")?;
                let user_ref = pseudonym::user_ref(&answer.tenant, &answer.user);
                let row = AnswerRow::from_answer(&answer, user_ref, self.config.answer_text).map_err(unfit)?;
                writer.write(row).await?;
            }
        }
        Ok(Vec::new())
    }

    async fn drain(&self) {
        match self.writer.get() {
            Some(Writer::AuditEvents(writer)) => writer.flush().await,
            Some(Writer::Answers(writer)) => writer.flush().await,
            None => {}
        }
    }
}
