//! Tenant-scoped search over the chunks table: vector, full-text, or both (hybrid).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use arrow_array::{Float32Array, RecordBatch, StringArray, UInt64Array};
use futures::TryStreamExt;
use lancedb::index::scalar::FullTextSearchQuery;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::DistanceType;

use super::columns::{column, sql_literal};
use super::{ChunkStore, StoreError};
use crate::telemetry::metrics::metrics;

/// Columns a search returns besides the score.
const RESULT_COLUMNS: [&str; 6] = ["chunk_id", "doc_id", "version", "title", "context", "text"];

/// The score column of each mode, selected explicitly (lance warns that implicit projection of
/// `_distance` will go away).
fn result_columns(mode: SearchMode) -> Vec<&'static str> {
    let mut columns = RESULT_COLUMNS.to_vec();
    if mode == SearchMode::Vector {
        columns.push("_distance");
    }
    columns
}

/// Candidates re-ranked by exact distance per result when the vector index is approximate (PQ).
const REFINE_FACTOR: u32 = 4;

/// How chunks are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// Nearest vectors by cosine distance.
    Vector,
    /// Both nearest vectors and BM25 full-text matches, fused by reciprocal rank (vector only
    /// while the full-text index does not exist yet).
    Hybrid,
}

/// One chunk found by a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub chunk_id: String,
    pub doc_id: String,
    pub version: u64,
    pub title: Option<String>,
    pub context: String,
    pub text: String,
    /// Higher is better: 1 − cosine distance for vector search, the fused relevance for hybrid.
    pub score: f32,
}

/// Which chunks a search may return.
#[derive(Debug, Clone, Copy)]
pub struct SearchScope<'a> {
    pub tenant: &'a str,
    /// Only chunks indexed at or after this time.
    pub indexed_since: Option<chrono::DateTime<chrono::Utc>>,
}

impl SearchScope<'_> {
    /// The filter, applied before the nearest-neighbour search.
    fn filter(&self) -> String {
        let tenant = format!("tenant = {}", sql_literal(self.tenant));
        match self.indexed_since {
            Some(since) => format!(
                "{tenant} AND indexed_at >= TIMESTAMP '{}'",
                since.format("%Y-%m-%d %H:%M:%S%.3f")
            ),
            None => tenant,
        }
    }
}

/// Passages whose vector similarity hybrid search knows: those it may rank into the top `limit`.
const HYBRID_POOL: usize = 32;

impl ChunkStore {
    /// The `limit` best chunks of `tenant` for the query. The tenant filter is applied before
    /// the nearest-neighbour search (prefilter), so another tenant's chunks can never be
    /// returned, nor crowd out this tenant's.
    pub async fn search(
        &self,
        tenant: &str,
        query_text: &str,
        query_vector: &[f32],
        limit: usize,
        mode: SearchMode,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let scope = SearchScope {
            tenant,
            indexed_since: None,
        };
        self.search_in(scope, query_text, query_vector, limit, mode).await
    }

    /// The passages `retrieve` hands on: the `limit` best chunks in `scope` whose vector
    /// similarity is at least `min_score`. `Hybrid` ranks by vector and full-text search fused,
    /// but keeps each passage's vector similarity as its score (what `min_score` means) and
    /// drops what vector search found irrelevant.
    pub async fn passages(
        &self,
        scope: SearchScope<'_>,
        question: &str,
        vector: &[f32],
        limit: usize,
        mode: SearchMode,
        min_score: f32,
    ) -> Result<Vec<SearchHit>, StoreError> {
        // Until upkeep has built the full-text index, hybrid is vector search: one search, not
        // the pool and a fusion that could only repeat it.
        let text_ready = match self.chunks() {
            Some(table) if mode == SearchMode::Hybrid => self.has_text_index(table).await?,
            _ => false,
        };
        if !text_ready {
            let mut hits = self
                .search_in(scope, question, vector, limit, SearchMode::Vector)
                .await?;
            hits.retain(|hit| hit.score >= min_score);
            return Ok(hits);
        }
        // Vector similarities of a wider pool than `limit`: a passage full-text search ranks high
        // but vector search ranked just below `limit` (the exact term of the question, `SEV1`,
        // `Riverton`) must still be known to be relevant, or fusing could not bring it in.
        let pool = self
            .search_in(scope, question, vector, limit.max(HYBRID_POOL), SearchMode::Vector)
            .await?;
        let similarity: HashMap<String, f32> = pool
            .iter()
            .filter(|hit| hit.score >= min_score)
            .map(|hit| (hit.chunk_id.clone(), hit.score))
            .collect();
        if similarity.is_empty() {
            return Ok(Vec::new());
        }
        let fused = self
            .search_in(scope, question, vector, limit, SearchMode::Hybrid)
            .await?;
        Ok(fused
            .into_iter()
            .filter_map(|hit| {
                similarity
                    .get(&hit.chunk_id)
                    .map(|score| SearchHit { score: *score, ..hit })
            })
            .collect())
    }

    /// Whether the chunks table has its full-text index (asked of LanceDB only until it has).
    async fn has_text_index(&self, table: &lancedb::Table) -> Result<bool, StoreError> {
        if self.text_index_seen.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let indices = table.list_indices().await?;
        let seen = indices
            .iter()
            .any(|index| index.columns == ["text"] && index.index_type == lancedb::index::IndexType::FTS);
        self.text_index_seen.store(seen, Ordering::Relaxed);
        Ok(seen)
    }

    /// [`search`](Self::search) within `scope`: a tenant, and optionally only chunks indexed
    /// since a time (what changed since a schedule's last run).
    pub async fn search_in(
        &self,
        scope: SearchScope<'_>,
        query_text: &str,
        query_vector: &[f32],
        limit: usize,
        mode: SearchMode,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let Some(table) = self.chunks() else {
            return Ok(Vec::new());
        };
        // Until upkeep has built the full-text index there is nothing for BM25 to use.
        let mode = if mode == SearchMode::Hybrid && !self.has_text_index(table).await? {
            SearchMode::Vector
        } else {
            mode
        };
        let mut query = table
            .query()
            .only_if(scope.filter())
            .select(Select::columns(&result_columns(mode)))
            .limit(limit);
        if mode == SearchMode::Hybrid {
            query = query.full_text_search(FullTextSearchQuery::new(query_text.to_owned()));
        }
        let query = query
            .nearest_to(query_vector)?
            .distance_type(DistanceType::Cosine)
            .refine_factor(REFINE_FACTOR);
        let started = std::time::Instant::now();
        let batches: Vec<RecordBatch> = query.execute().await?.try_collect().await?;
        metrics().retrieval_seconds.observe(started.elapsed().as_secs_f64());
        let mut hits = Vec::new();
        for batch in &batches {
            hits.extend(read_hits(batch, mode)?);
        }
        Ok(hits)
    }
}

fn read_hits(batch: &RecordBatch, mode: SearchMode) -> Result<Vec<SearchHit>, StoreError> {
    let chunk_id = column::<StringArray>(batch, "chunk_id")?;
    let doc_id = column::<StringArray>(batch, "doc_id")?;
    let version = column::<UInt64Array>(batch, "version")?;
    let title = column::<StringArray>(batch, "title")?;
    let context = column::<StringArray>(batch, "context")?;
    let text = column::<StringArray>(batch, "text")?;
    let scores: Vec<f32> = match mode {
        SearchMode::Vector => column::<Float32Array>(batch, "_distance")?
            .values()
            .iter()
            .map(|distance| 1.0 - distance)
            .collect(),
        SearchMode::Hybrid => column::<Float32Array>(batch, "_relevance_score")?.values().to_vec(),
    };
    Ok((0..batch.num_rows())
        .map(|row| SearchHit {
            chunk_id: chunk_id.value(row).to_owned(),
            doc_id: doc_id.value(row).to_owned(),
            version: version.value(row),
            title: arrow_array::Array::is_valid(title, row).then(|| title.value(row).to_owned()),
            context: context.value(row).to_owned(),
            text: text.value(row).to_owned(),
            score: scores[row],
        })
        .collect())
}
