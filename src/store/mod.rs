//! LanceDB access: the chunk index kept in step with document versions, search, and upkeep.
//!
//! Every write is a batch of document versions (many messages at once, never one commit per
//! chunk). A batch is applied in two commits: one `merge_insert` on the chunks table that adds
//! the new versions' chunks and removes every other chunk of those documents (so readers never
//! see a document half-replaced), then one on the documents table recording the versions. A
//! crash between the two leaves the documents table behind; the redelivered messages then apply
//! the same versions again, which yields the same rows (chunk ids are deterministic). Replicas
//! writing one table take turns (`commit_lock`).

mod columns;
pub use columns::column;
mod commit_lock;
mod maintenance;
mod search;
mod writer;

use std::collections::{BTreeMap, HashMap};

use arrow_array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, QueryBase};
use lancedb::{Connection, Table};

pub use columns::{doc_key, DocumentState, DocumentWrite};
pub use commit_lock::{CommitLock, Turn};
pub use maintenance::{MaintenancePolicy, MaintenanceReport, VectorIndexKind};
pub use search::{SearchHit, SearchMode, SearchScope};
pub use writer::{IndexWriter, WriterSettings};

use crate::contracts::DocumentOp;
use crate::error::StageError;

/// What happened to one document version of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Its chunks replaced every older chunk of the document.
    Indexed { chunks: u32 },
    /// Every chunk of the document was removed (`removed`: chunks the previous version had).
    Deleted { removed: u32 },
    /// Nothing changed, for the reason given.
    Skipped { reason: String },
}

/// A failure talking to LanceDB.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The table or its storage failed; retrying may help (I/O, commit conflicts).
    #[error("LanceDB: {0}")]
    Lance(#[from] lancedb::Error),
    /// What we were asked to write does not fit the table (a topology mistake, e.g. a
    /// different embedding model): stop rather than write a mixed index.
    #[error("{0}")]
    Mismatch(String),
}

impl From<StoreError> for StageError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Lance(error) => StageError::external(format!("LanceDB: {error}")),
            StoreError::Mismatch(reason) => StageError::internal(reason),
        }
    }
}

impl From<arrow_schema::ArrowError> for StoreError {
    fn from(error: arrow_schema::ArrowError) -> Self {
        StoreError::Mismatch(error.to_string())
    }
}

/// A LanceDB database holding one chunks table and its documents table.
pub struct ChunkStore {
    connection: Connection,
    chunks_name: String,
    /// Opened on first use (its vector width comes from the first embedded document), with that
    /// width, read once: every batch is checked against it without another schema read.
    chunks: Option<(Table, i32)>,
    documents: Table,
    /// A full-text index was seen on the chunks table. Upkeep never drops one, so once seen,
    /// hybrid searches stop listing the table's indices for every question.
    text_index_seen: std::sync::atomic::AtomicBool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn reader(batch: RecordBatch) -> Box<dyn RecordBatchReader + Send> {
    let schema = batch.schema();
    Box::new(RecordBatchIterator::new(vec![Ok(batch)], schema))
}

/// `table` with the vector width of its schema.
async fn with_dimensions(table: Table) -> Result<(Table, i32), StoreError> {
    let schema = table.schema().await?;
    let dimensions = columns::dimensions_of(&schema)
        .ok_or_else(|| StoreError::Mismatch(format!("table `{}` has no vector column", table.name())))?;
    Ok((table, dimensions))
}

async fn open_or_create(
    connection: &Connection,
    name: &str,
    schema: arrow_schema::SchemaRef,
) -> Result<Table, lancedb::Error> {
    match connection.open_table(name).execute().await {
        Err(lancedb::Error::TableNotFound { .. }) => {
            match connection.create_empty_table(name, schema).execute().await {
                // Another replica created it first.
                Err(lancedb::Error::TableAlreadyExists { .. }) => connection.open_table(name).execute().await,
                other => other,
            }
        }
        other => other,
    }
}

impl ChunkStore {
    /// Opens (creating if needed) the tables at `uri` (a directory or an object-store URI).
    /// Reads always see the latest commit, also those of other replicas.
    pub async fn open(uri: &str, table: &str) -> Result<Self, StoreError> {
        Self::open_with_options(uri, table, &BTreeMap::new()).await
    }

    /// Like [`ChunkStore::open`], with object-store settings (e.g. `aws_endpoint`,
    /// `aws_allow_http`, `aws_region` for an S3-compatible store); unset ones come from the
    /// environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) as the object_store crate reads them.
    pub async fn open_with_options(
        uri: &str,
        table: &str,
        storage_options: &BTreeMap<String, String>,
    ) -> Result<Self, StoreError> {
        let connection = lancedb::connect(uri)
            .read_consistency_interval(std::time::Duration::ZERO)
            .storage_options(storage_options.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .execute()
            .await?;
        let documents = open_or_create(&connection, &format!("{table}_documents"), columns::documents_schema()).await?;
        let chunks = match connection.open_table(table).execute().await {
            Ok(chunks) => Some(with_dimensions(chunks).await?),
            Err(lancedb::Error::TableNotFound { .. }) => None,
            Err(error) => return Err(error.into()),
        };
        let store = Self {
            connection,
            chunks_name: table.to_owned(),
            chunks,
            documents,
            text_index_seen: Default::default(),
        };
        Ok(store)
    }

    /// The chunks table, created for vectors of `dimensions` if it does not exist yet.
    async fn chunks_for(&mut self, dimensions: i32) -> Result<&Table, StoreError> {
        if self.chunks.is_none() {
            let table = open_or_create(&self.connection, &self.chunks_name, columns::chunks_schema(dimensions)).await?;
            self.chunks = Some(with_dimensions(table).await?);
        }
        let (table, existing) = self.chunks.as_ref().expect("set above");
        if *existing != dimensions {
            return Err(StoreError::Mismatch(format!(
                "table `{}` holds {existing}-dimensional vectors but the chunks have {dimensions} (a different embedding model?)",
                self.chunks_name,
            )));
        }
        Ok(table)
    }

    /// The chunks table, if any document was indexed yet.
    pub fn chunks(&self) -> Option<&Table> {
        self.chunks.as_ref().map(|(table, _)| table)
    }

    /// The latest recorded state of each of `keys` that has one.
    pub async fn document_states(&self, keys: &[&str]) -> Result<HashMap<String, DocumentState>, StoreError> {
        let mut states = HashMap::new();
        // Bounded IN lists keep the filter expression small.
        for keys in keys.chunks(500) {
            let batches: Vec<RecordBatch> = self
                .documents
                .query()
                .only_if(columns::in_list("doc_key", keys))
                .execute()
                .await?
                .try_collect()
                .await?;
            for state in columns::read_document_states(&batches)? {
                states.insert(state.doc_key.clone(), state);
            }
        }
        Ok(states)
    }

    /// Applies a batch of document versions; returns one outcome per write, in order.
    pub async fn apply(&mut self, writes: &[DocumentWrite]) -> Result<Vec<WriteOutcome>, StoreError> {
        let keys: Vec<String> = writes
            .iter()
            .map(|w| doc_key(&w.document.header.tenant, &w.document.header.doc_id))
            .collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let known = self.document_states(&key_refs).await?;
        let plan = plan(writes, &keys, &known);
        let mut outcomes = plan.outcomes;

        let upserts: Vec<&DocumentWrite> = plan
            .applied
            .iter()
            .map(|&i| &writes[i])
            .filter(|w| w.document.header.op == DocumentOp::Upsert)
            .collect();
        let applied_keys: Vec<&str> = plan.applied.iter().map(|&i| keys[i].as_str()).collect();
        if !applied_keys.is_empty() {
            self.replace_chunks(&upserts, &applied_keys).await?;
            let states: Vec<DocumentState> = plan
                .applied
                .iter()
                .map(|&i| new_state(&writes[i], &keys[i], known.get(&keys[i])))
                .collect();
            let mut merge = self.documents.merge_insert(&["doc_key"]);
            merge.when_matched_update_all(None).when_not_matched_insert_all();
            merge
                .execute(reader(columns::document_rows(&states, now_ms())?))
                .await?;
            for (&i, state) in plan.applied.iter().zip(&states) {
                outcomes[i] = Some(state.outcome());
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every write is either applied or decided by the plan"))
            .collect())
    }

    /// One commit: the chunks of `upserts` in, every other chunk of `applied_keys` out.
    async fn replace_chunks(&mut self, upserts: &[&DocumentWrite], applied_keys: &[&str]) -> Result<(), StoreError> {
        let remove_others = columns::in_list("doc_key", applied_keys);
        let dimensions = upserts
            .iter()
            .flat_map(|w| w.document.chunks.first())
            .find_map(|chunk| chunk.vector.as_ref().map(|v| v.len() as i32));
        match dimensions {
            Some(dimensions) => {
                let rows = columns::chunk_rows(upserts, dimensions, now_ms())?;
                let table = self.chunks_for(dimensions).await?;
                let mut merge = table.merge_insert(&["tenant", "chunk_id"]);
                merge
                    .when_matched_update_all(None)
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(Some(remove_others));
                merge.execute(reader(rows)).await?;
            }
            // Only deletes (or chunkless upserts): nothing to insert.
            None => {
                if let Some(table) = self.chunks() {
                    table.delete(&remove_others).await?;
                }
            }
        }
        Ok(())
    }

    /// Rows in the chunks table matching `filter` (all rows with `None`).
    pub async fn count_chunks(&self, filter: Option<String>) -> Result<usize, StoreError> {
        match self.chunks() {
            Some(table) => Ok(table.count_rows(filter).await?),
            None => Ok(0),
        }
    }
}

/// The state after applying `write`. A deleted document keeps the number of chunks its delete
/// removed, so a redelivered delete is reported exactly like the first.
fn new_state(write: &DocumentWrite, key: &str, previous: Option<&DocumentState>) -> DocumentState {
    let document = &write.document;
    let deleted = document.header.op == DocumentOp::Delete;
    let chunk_count = if deleted {
        previous.filter(|s| !s.deleted).map_or(0, |s| s.chunk_count)
    } else {
        document.chunks.len() as u32
    };
    DocumentState {
        doc_key: key.to_owned(),
        tenant: document.header.tenant.clone(),
        doc_id: document.header.doc_id.clone(),
        version: document.header.version,
        deleted,
        chunk_count,
        embedding_model: document.embedding_model.clone(),
    }
}

/// Which writes of a batch to apply: per document, the newest version of the batch if it is
/// newer than the recorded one. The others get their outcome here.
struct Plan {
    applied: Vec<usize>,
    outcomes: Vec<Option<WriteOutcome>>,
}

fn plan(writes: &[DocumentWrite], keys: &[String], known: &HashMap<String, DocumentState>) -> Plan {
    let mut newest: HashMap<&str, usize> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let entry = newest.entry(key).or_insert(i);
        // On a tie the later message wins: it is the one a redelivery would end with too.
        if writes[i].document.header.version >= writes[*entry].document.header.version {
            *entry = i;
        }
    }
    let mut outcomes = vec![None; writes.len()];
    let mut applied = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let version = writes[i].document.header.version;
        let winner = newest[key.as_str()];
        if winner != i {
            outcomes[i] = Some(WriteOutcome::Skipped {
                reason: format!(
                    "superseded by version {} in the same batch",
                    writes[winner].document.header.version
                ),
            });
            continue;
        }
        match known.get(key) {
            Some(state) if state.version > version => {
                outcomes[i] = Some(WriteOutcome::Skipped {
                    reason: format!("version {version} is older than the applied version {}", state.version),
                });
            }
            // A redelivery of what was applied: report it the same way again (the audit event
            // of the first time may not have been produced before a crash).
            Some(state) if state.version == version => {
                outcomes[i] = Some(state.outcome());
            }
            _ => applied.push(i),
        }
    }
    Plan { applied, outcomes }
}

impl DocumentState {
    /// How applying this state is reported: the same the first time and on every redelivery.
    fn outcome(&self) -> WriteOutcome {
        if self.deleted {
            WriteOutcome::Deleted {
                removed: self.chunk_count,
            }
        } else {
            WriteOutcome::Indexed {
                chunks: self.chunk_count,
            }
        }
    }
}

#[cfg(test)]
mod tests;
