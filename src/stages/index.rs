//! `index`: writes embedded documents into LanceDB and emits an audit event for each.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{started, StageBuilder};
use crate::audit::{DocumentEvent, DocumentEventKind, Subject};
use crate::contracts::ChunkedDocument;
use crate::core_api::{MessageContext, Record, Stage, StageEnvironment};
use crate::error::Findings;
use crate::error::{ConfigError, StageError};
use crate::state;
use crate::store::{
    ChunkStore, CommitLock, DocumentWrite, IndexWriter, MaintenancePolicy, VectorIndexKind, WriteOutcome,
    WriterSettings,
};
use serde_inline_default::serde_inline_default;

/// Keeps a LanceDB table holding exactly the chunks of the live version of every document
/// (the output of `embed`): a newer version replaces all older chunks, `delete` removes them,
/// an older version arriving late is ignored. Writes are batched across messages; the output
/// is one audit event per document (`document_indexed`, `document_deleted` or
/// `document_skipped`) for the pipeline's default sink.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Where the database lives: a local directory (created if missing) or an object-store URI
    /// (`s3://bucket/path`, `gs://…`, `az://…`; credentials from the environment).
    pub uri: String,
    /// Object-store settings, e.g. `aws_endpoint`, `aws_region`, `aws_allow_http` for an
    /// S3-compatible store; credentials are best left to the environment (`AWS_ACCESS_KEY_ID`…).
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Name of the chunks table; document versions are kept in `<table>_documents`.
    #[serde_inline_default("chunks".to_owned())]
    pub table: String,
    /// Most documents written in one batch (one LanceDB commit pair).
    #[serde_inline_default(64)]
    pub batch_max_documents: usize,
    /// Longest wait for more documents before a partial batch is written.
    #[serde_inline_default(100)]
    pub batch_max_wait_ms: u64,
    /// Chunks the table needs before the vector index is built (exact search below that).
    #[serde_inline_default(10_000)]
    pub vector_index_min_rows: usize,
    /// `ivf_hnsw_sq` (default: best recall and latency in `cargo bench --bench figures -- index`) or `ivf_pq`.
    #[serde(default)]
    pub vector_index: VectorIndexKind,
    /// Build a full-text index on chunk text for hybrid search.
    #[serde_inline_default(true)]
    pub full_text_index: bool,
    /// How often upkeep runs: index builds and refreshes, compaction, old-version cleanup.
    #[serde_inline_default(60_000)]
    pub maintenance_interval_ms: u64,
    /// Table versions older than this are removed during upkeep.
    #[serde_inline_default(3_600)]
    pub keep_versions_for_s: u64,
    /// A Redis URL (`redis://…`) shared by every replica writing this table: they take turns
    /// through a lease there, so a replica never replaces a newer version another replica just
    /// wrote. Required whenever more than one process writes the table (replicas of a pipeline
    /// whose documents of one id may arrive on different partitions, or several pipelines);
    /// without it this process assumes it is the table's only writer.
    #[serde(default)]
    pub commit_lock: Option<String>,
}

impl StageBuilder for IndexConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.uri.trim().is_empty() {
            errors.report(path, "uri", "must not be empty");
        }
        errors.require_name(path, "table", &self.table);
        errors.require_within(path, "batch_max_documents", self.batch_max_documents, 1..=10_000);
        errors.require_nonzero(path, "maintenance_interval_ms", self.maintenance_interval_ms);
        if let Some(Err(problem)) = self.commit_lock.as_deref().map(state::check_url) {
            errors.report(path, "commit_lock", problem);
        }
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(IndexStage {
            config: self.clone(),
            writer: OnceLock::new(),
        }))
    }
}

struct IndexStage {
    config: IndexConfig,
    /// Set by `start`: opening the database is async.
    writer: OnceLock<IndexWriter>,
}

fn is_local_path(uri: &str) -> bool {
    !uri.contains("://")
}

#[async_trait]
impl Stage for IndexStage {
    async fn start(&self, _environment: &StageEnvironment) -> Result<(), StageError> {
        let config = &self.config;
        if is_local_path(&config.uri) {
            std::fs::create_dir_all(&config.uri)
                .map_err(|error| StageError::internal(format!("cannot create {}: {error}", config.uri)))?;
        }
        let store = ChunkStore::open_with_options(&config.uri, &config.table, &config.storage_options)
            .await
            .map_err(|error| StageError::internal(format!("cannot open the index at {}: {error}", config.uri)))?;
        let commit_lock = match &config.commit_lock {
            Some(url) => Some(CommitLock::connect(url, &config.uri, &config.table).await?),
            None => None,
        };
        let settings = WriterSettings {
            max_documents: config.batch_max_documents,
            max_wait: Duration::from_millis(config.batch_max_wait_ms),
            maintenance_interval: Duration::from_millis(config.maintenance_interval_ms),
            maintenance: MaintenancePolicy {
                vector_index_min_rows: config.vector_index_min_rows,
                vector_index: config.vector_index,
                full_text_index: config.full_text_index,
                keep_versions_for: Duration::from_secs(config.keep_versions_for_s),
            },
            commit_lock,
        };
        let _ = self.writer.set(IndexWriter::spawn(store, settings));
        Ok(())
    }

    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let writer = started(&self.writer, "index")?;
        let document: ChunkedDocument = record
            .payload
            .typed("an embedded document (put chunk and embed first)")?;
        let (tenant, doc_id, version) = (
            document.header.tenant.clone(),
            document.header.doc_id.clone(),
            document.header.version,
        );
        // A pipeline that starts here (documents embedded by another pipeline) still reports a
        // failed write per document, as `decode_document` does for the whole chain.
        if context.failure_report().is_none() {
            context.set_failure_report(Arc::new(Subject::Document {
                tenant: tenant.clone(),
                doc_id: doc_id.clone(),
                version,
            }));
        }
        let embedding_model = document.embedding_model.clone();
        let outcome = writer
            .write(DocumentWrite {
                document,
                event_time_ms: context.timestamp_ms,
            })
            .await?;
        let (kind, chunk_count, reason) = match outcome {
            WriteOutcome::Indexed { chunks } => (DocumentEventKind::DocumentIndexed, Some(chunks), None),
            WriteOutcome::Deleted { removed } => (DocumentEventKind::DocumentDeleted, Some(removed), None),
            WriteOutcome::Skipped { reason } => (DocumentEventKind::DocumentSkipped, None, Some(reason)),
        };
        // The event's durations include this stage's time so far (the chain's stage clock).
        let mut event = DocumentEvent::new(kind, &tenant, &doc_id, version, context);
        event.chunk_count = chunk_count.map(u64::from);
        event.reason = reason;
        if kind == DocumentEventKind::DocumentIndexed {
            event.embedding_model = embedding_model;
        }
        Ok(vec![event.into_record(None)?])
    }
}
