//! `audit_table`: writes the audit events a pipeline reads into the audit table, Parquet files
//! for SQL (`ragstream sql`, DuckDB, pandas, Spark).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{started, StageBuilder};
use crate::analytics::location::TableLocation;
use crate::analytics::rows::AuditRow;
use crate::analytics::writer::{FlushPolicy, TableWriter};
use crate::clock;
use crate::core_api::{MessageContext, Record, Stage, StageEnvironment};
use crate::error::{ConfigError, Findings, StageError};

/// Writes each audit event it reads (a pipeline on the audit topic) as a row of the audit table:
/// Parquet files under `audit_events/date=YYYY-MM-DD/` (and `tenant=…/`) in a directory or an
/// object store, a file cut at `flush.max_rows` rows or after `flush.max_wait_ms`. A message is done, and its offset may be committed, only once the file holding
/// its row is written whole; after a crash the events of uncommitted messages are written
/// again, and readers drop repeats by `event_id` (`ragstream sql` does). Emits nothing: a
/// pipeline that ends with it needs no sink.
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
}

impl StageBuilder for AuditTableConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.uri.trim().is_empty() {
            errors.report(path, "uri", "must name a directory or an object-store URI");
        }
        self.flush.validate(&format!("{path}.flush"), errors);
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
    writer: OnceLock<TableWriter>,
}

#[async_trait]
impl Stage for AuditTable {
    async fn start(&self, _environment: &StageEnvironment) -> Result<(), StageError> {
        let config = &self.config;
        let location = TableLocation::open(&config.uri, &config.storage_options)
            .map_err(|error| StageError::internal(format!("audit table at {}: {error}", config.uri)))?;
        let writer = TableWriter::spawn(
            location,
            config.flush.clone(),
            config.partition_by_tenant,
            clock::system(),
        );
        let _ = self.writer.set(writer);
        Ok(())
    }

    async fn process(&self, record: Record, _context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let writer = started(&self.writer, "audit_table")?;
        let event: Value = record.payload.typed("an audit event")?;
        let row = AuditRow::from_event(&event).map_err(|error| StageError::input(error.to_string()))?;
        writer.write(row).await?;
        Ok(Vec::new())
    }

    async fn drain(&self) {
        if let Some(writer) = self.writer.get() {
            writer.flush().await;
        }
    }
}
