//! The two LanceDB tables and their Arrow columns.
//!
//! `chunks` holds the searchable chunks of the live version of every document. `<chunks>_documents`
//! holds one row per document ever seen: its latest version and whether it is deleted. That row
//! is what lets an old version arriving late, even after a delete, be recognised and ignored.

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::contracts::ChunkedDocument;

/// Separates tenant and document id in `doc_key`; tenants cannot contain it (see the documents
/// schema), so the key is unambiguous.
const KEY_SEPARATOR: char = '/';

/// The key identifying a document across tenants.
pub fn doc_key(tenant: &str, doc_id: &str) -> String {
    format!("{tenant}{KEY_SEPARATOR}{doc_id}")
}

/// A SQL string literal for a LanceDB filter.
pub fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A filter matching any of `keys` in `column`.
pub fn in_list(column: &str, keys: &[&str]) -> String {
    let literals: Vec<String> = keys.iter().map(|key| sql_literal(key)).collect();
    format!("{column} IN ({})", literals.join(", "))
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn vector_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, true))
}

/// Schema of the chunks table for vectors of `dimensions`.
pub fn chunks_schema(dimensions: i32) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("tenant", DataType::Utf8, false),
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("doc_key", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("position", DataType::UInt32, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, true),
        Field::new("context", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("token_count", DataType::UInt32, false),
        // The document's metadata as a JSON object: free-form keys do not fit fixed columns.
        Field::new("metadata", DataType::Utf8, false),
        Field::new("embedding_model", DataType::Utf8, true),
        Field::new("vector", DataType::FixedSizeList(vector_item(), dimensions), false),
        Field::new("event_time", timestamp(), true),
        Field::new("indexed_at", timestamp(), false),
    ]))
}

/// Schema of the per-document state table.
pub fn documents_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("doc_key", DataType::Utf8, false),
        Field::new("tenant", DataType::Utf8, false),
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("deleted", DataType::Boolean, false),
        Field::new("chunk_count", DataType::UInt32, false),
        Field::new("embedding_model", DataType::Utf8, true),
        Field::new("updated_at", timestamp(), false),
    ]))
}

/// The vector length of a chunks table schema.
pub fn dimensions_of(schema: &Schema) -> Option<i32> {
    match schema.field_with_name("vector").ok()?.data_type() {
        DataType::FixedSizeList(_, size) => Some(*size),
        _ => None,
    }
}

/// A document version to write, with when its message was produced.
#[derive(Debug, Clone)]
pub struct DocumentWrite {
    pub document: ChunkedDocument,
    /// Kafka timestamp of the source message (ms), kept with the chunks.
    pub event_time_ms: Option<i64>,
}

/// The latest known state of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentState {
    pub doc_key: String,
    pub tenant: String,
    pub doc_id: String,
    pub version: u64,
    pub deleted: bool,
    pub chunk_count: u32,
    pub embedding_model: Option<String>,
}

fn utc_millis(values: Vec<Option<i64>>) -> TimestampMillisecondArray {
    let mut builder = TimestampMillisecondBuilder::with_capacity(values.len()).with_timezone("UTC");
    builder.extend(values);
    builder.finish()
}

/// Rows of the chunks table for the chunks of `writes` (all upserts with vectors of `dimensions`).
pub fn chunk_rows(writes: &[&DocumentWrite], dimensions: i32, now_ms: i64) -> Result<RecordBatch, ArrowError> {
    let rows: usize = writes.iter().map(|w| w.document.chunks.len()).sum();
    let mut columns = ChunkColumns::with_capacity(rows, dimensions as usize);
    for write in writes {
        columns.push(write)?;
    }
    columns.finish(dimensions, now_ms)
}

#[derive(Default)]
struct ChunkColumns {
    chunk_id: Vec<String>,
    tenant: Vec<String>,
    doc_id: Vec<String>,
    doc_key: Vec<String>,
    version: Vec<u64>,
    position: Vec<u32>,
    title: Vec<Option<String>>,
    source: Vec<Option<String>>,
    context: Vec<String>,
    text: Vec<String>,
    token_count: Vec<u32>,
    metadata: Vec<String>,
    embedding_model: Vec<Option<String>>,
    vectors: Vec<f32>,
    event_time: Vec<Option<i64>>,
}

impl ChunkColumns {
    fn with_capacity(rows: usize, dimensions: usize) -> Self {
        Self {
            chunk_id: Vec::with_capacity(rows),
            text: Vec::with_capacity(rows),
            vectors: Vec::with_capacity(rows * dimensions),
            ..Self::default()
        }
    }

    fn push(&mut self, write: &DocumentWrite) -> Result<(), ArrowError> {
        let document = &write.document;
        let key = doc_key(&document.header.tenant, &document.header.doc_id);
        let metadata =
            serde_json::to_string(&document.header.metadata).map_err(|e| ArrowError::ExternalError(e.into()))?;
        for chunk in &document.chunks {
            let vector = chunk.vector.as_ref().ok_or_else(|| {
                ArrowError::InvalidArgumentError(format!(
                    "chunk {} has no vector (put embed before index)",
                    chunk.chunk_id
                ))
            })?;
            self.chunk_id.push(chunk.chunk_id.clone());
            self.tenant.push(document.header.tenant.clone());
            self.doc_id.push(document.header.doc_id.clone());
            self.doc_key.push(key.clone());
            self.version.push(document.header.version);
            self.position.push(chunk.position);
            self.title.push(document.header.title.clone());
            self.source.push(document.header.source.clone());
            self.context.push(chunk.context.clone());
            self.text.push(chunk.text.clone());
            self.token_count.push(chunk.token_count);
            self.metadata.push(metadata.clone());
            self.embedding_model.push(document.embedding_model.clone());
            self.vectors.extend_from_slice(vector);
            self.event_time.push(write.event_time_ms);
        }
        Ok(())
    }

    fn finish(self, dimensions: i32, now_ms: i64) -> Result<RecordBatch, ArrowError> {
        let rows = self.chunk_id.len();
        if self.vectors.len() != rows * dimensions as usize {
            return Err(ArrowError::InvalidArgumentError(format!(
                "vectors do not all have the table's {dimensions} dimensions (was the embedding model changed?)"
            )));
        }
        let vectors = FixedSizeListArray::try_new(
            vector_item(),
            dimensions,
            Arc::new(Float32Array::from(self.vectors)),
            None,
        )?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.chunk_id)),
            Arc::new(StringArray::from(self.tenant)),
            Arc::new(StringArray::from(self.doc_id)),
            Arc::new(StringArray::from(self.doc_key)),
            Arc::new(UInt64Array::from(self.version)),
            Arc::new(UInt32Array::from(self.position)),
            Arc::new(StringArray::from(self.title)),
            Arc::new(StringArray::from(self.source)),
            Arc::new(StringArray::from(self.context)),
            Arc::new(StringArray::from(self.text)),
            Arc::new(UInt32Array::from(self.token_count)),
            Arc::new(StringArray::from(self.metadata)),
            Arc::new(StringArray::from(self.embedding_model)),
            Arc::new(vectors),
            Arc::new(utc_millis(self.event_time)),
            Arc::new(utc_millis(vec![Some(now_ms); rows])),
        ];
        RecordBatch::try_new(chunks_schema(dimensions), columns)
    }
}

/// Rows of the documents table.
pub fn document_rows(states: &[DocumentState], now_ms: i64) -> Result<RecordBatch, ArrowError> {
    let mut model = StringBuilder::new();
    for state in states {
        model.append_option(state.embedding_model.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(states.iter().map(|s| &s.doc_key))),
        Arc::new(StringArray::from_iter_values(states.iter().map(|s| &s.tenant))),
        Arc::new(StringArray::from_iter_values(states.iter().map(|s| &s.doc_id))),
        Arc::new(UInt64Array::from_iter_values(states.iter().map(|s| s.version))),
        Arc::new(BooleanArray::from(states.iter().map(|s| s.deleted).collect::<Vec<_>>())),
        Arc::new(UInt32Array::from_iter_values(states.iter().map(|s| s.chunk_count))),
        Arc::new(model.finish()),
        Arc::new(utc_millis(vec![Some(now_ms); states.len()])),
    ];
    RecordBatch::try_new(documents_schema(), columns)
}

/// Typed access to a column of a query result.
pub fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|column| column.as_any().downcast_ref::<T>())
        .ok_or_else(|| ArrowError::SchemaError(format!("result has no column `{name}` of the expected type")))
}

/// Reads document states out of query results over the documents table.
pub fn read_document_states(batches: &[RecordBatch]) -> Result<Vec<DocumentState>, ArrowError> {
    let mut states = Vec::new();
    for batch in batches {
        let doc_key = column::<StringArray>(batch, "doc_key")?;
        let tenant = column::<StringArray>(batch, "tenant")?;
        let doc_id = column::<StringArray>(batch, "doc_id")?;
        let version = column::<UInt64Array>(batch, "version")?;
        let deleted = column::<BooleanArray>(batch, "deleted")?;
        let chunk_count = column::<UInt32Array>(batch, "chunk_count")?;
        let model = column::<StringArray>(batch, "embedding_model")?;
        for row in 0..batch.num_rows() {
            states.push(DocumentState {
                doc_key: doc_key.value(row).to_owned(),
                tenant: tenant.value(row).to_owned(),
                doc_id: doc_id.value(row).to_owned(),
                version: version.value(row),
                deleted: deleted.value(row),
                chunk_count: chunk_count.value(row),
                embedding_model: (!model.is_null(row)).then(|| model.value(row).to_owned()),
            });
        }
    }
    Ok(states)
}
