//! Keeping the index fast and the storage bounded: the vector index once the table is big
//! enough, the full-text index, compaction of small fragments, and removal of old versions.

use std::time::{Duration, Instant};

use lancedb::index::scalar::FtsIndexBuilder;
use lancedb::index::vector::{IvfHnswSqIndexBuilder, IvfPqIndexBuilder};
use lancedb::index::{Index, IndexType};
use lancedb::table::{CompactionOptions, OptimizeAction, OptimizeOptions};
use lancedb::{DistanceType, Table};
use serde::Deserialize;

use super::{ChunkStore, StoreError};

/// Which approximate nearest-neighbour index to build on the vectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VectorIndexKind {
    /// IVF partitions with product-quantised vectors: the smallest index, quick to build;
    /// results are re-ranked by exact distance. Recall@10 0.935 at 100k chunks in
    /// `cargo bench --bench figures -- index`.
    IvfPq,
    /// IVF partitions each holding an HNSW graph over scalar-quantised vectors: recall@10 1.000
    /// and faster queries than IVF-PQ at 100k chunks, for a quarter more build time.
    #[default]
    IvfHnswSq,
}

/// When upkeep does what.
#[derive(Debug, Clone)]
pub struct MaintenancePolicy {
    /// Rows the chunks table needs before a vector index is built (below that, exact search is
    /// fast enough, and PQ training needs at least 256 rows).
    pub vector_index_min_rows: usize,
    pub vector_index: VectorIndexKind,
    /// Build and maintain a full-text index on the chunk text (for hybrid search).
    pub full_text_index: bool,
    /// Table versions older than this are removed, with the files only they used.
    pub keep_versions_for: Duration,
}

/// What one round of upkeep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub vector_index_built: bool,
    pub full_text_index_built: bool,
    pub fragments_removed: usize,
    pub fragments_added: usize,
    pub old_versions_removed: u64,
    pub duration: Duration,
}

const VECTOR_COLUMN: &str = "vector";
const TEXT_COLUMN: &str = "text";

impl ChunkStore {
    /// Drops the vector index, if there is one (benchmarks compare index kinds).
    pub async fn drop_vector_index(&self) -> Result<(), StoreError> {
        let Some(chunks) = self.chunks() else {
            return Ok(());
        };
        for index in chunks.list_indices().await? {
            if index.columns == [VECTOR_COLUMN] {
                chunks.drop_index(&index.name).await?;
            }
        }
        Ok(())
    }

    /// One round of upkeep on both tables: [`ChunkStore::update_indices`], then
    /// [`ChunkStore::tidy`]. Called between write batches, never concurrently with them, so it
    /// cannot conflict with this replica's own commits; replicas sharing a table do it in their
    /// turn (see `commit_lock`).
    pub async fn maintain(&self, policy: &MaintenancePolicy) -> Result<MaintenanceReport, StoreError> {
        let started = Instant::now();
        let mut report = self.update_indices(policy).await?;
        report.add(self.tidy(policy).await?);
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Builds the vector index once the table is big enough and the full-text index, and adds
    /// new rows to both.
    async fn update_indices(&self, policy: &MaintenancePolicy) -> Result<MaintenanceReport, StoreError> {
        let started = Instant::now();
        let mut report = MaintenanceReport::default();
        if let Some(chunks) = self.chunks() {
            let indices = chunks.list_indices().await?;
            let has_index_on = |column: &str| indices.iter().any(|index| index.columns == [column]);
            let has_vector_index = has_index_on(VECTOR_COLUMN);
            let has_text_index = indices
                .iter()
                .any(|index| index.columns == [TEXT_COLUMN] && index.index_type == IndexType::FTS);
            let rows = chunks.count_rows(None).await?;
            if !has_vector_index && rows >= policy.vector_index_min_rows.max(256) {
                build_vector_index(chunks, policy.vector_index).await?;
                report.vector_index_built = true;
            }
            if policy.full_text_index && !has_text_index && rows > 0 {
                chunks
                    .create_index(&[TEXT_COLUMN], Index::FTS(FtsIndexBuilder::default()))
                    .execute()
                    .await?;
                report.full_text_index_built = true;
            }
            // New rows are searched exactly until they are added to the indices; do that now.
            chunks
                .optimize(OptimizeAction::Index(OptimizeOptions::default()))
                .await?;
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Compacts both tables' small fragments and removes their old versions.
    async fn tidy(&self, policy: &MaintenancePolicy) -> Result<MaintenanceReport, StoreError> {
        let started = Instant::now();
        let mut report = MaintenanceReport::default();
        if let Some(chunks) = self.chunks() {
            tidy(chunks, policy, &mut report).await?;
        }
        tidy(&self.documents, policy, &mut report).await?;
        report.duration = started.elapsed();
        Ok(report)
    }
}

impl MaintenanceReport {
    /// This report with `other`'s work added (durations too).
    fn add(&mut self, other: MaintenanceReport) {
        self.vector_index_built |= other.vector_index_built;
        self.full_text_index_built |= other.full_text_index_built;
        self.fragments_removed += other.fragments_removed;
        self.fragments_added += other.fragments_added;
        self.old_versions_removed += other.old_versions_removed;
        self.duration += other.duration;
    }
}

async fn build_vector_index(table: &Table, kind: VectorIndexKind) -> Result<(), StoreError> {
    // Cosine, as queries use: an index trained for another metric would be bypassed.
    let index = match kind {
        VectorIndexKind::IvfPq => Index::IvfPq(IvfPqIndexBuilder::default().distance_type(DistanceType::Cosine)),
        VectorIndexKind::IvfHnswSq => {
            Index::IvfHnswSq(IvfHnswSqIndexBuilder::default().distance_type(DistanceType::Cosine))
        }
    };
    table.create_index(&[VECTOR_COLUMN], index).execute().await?;
    Ok(())
}

/// Compacts small fragments (each batch commit adds one) and removes old versions.
async fn tidy(table: &Table, policy: &MaintenancePolicy, report: &mut MaintenanceReport) -> Result<(), StoreError> {
    let compaction = table
        .optimize(OptimizeAction::Compact {
            options: CompactionOptions::default(),
            remap_options: None,
        })
        .await?;
    if let Some(metrics) = compaction.compaction {
        report.fragments_removed += metrics.fragments_removed;
        report.fragments_added += metrics.fragments_added;
    }
    let older_than = lancedb::table::Duration::from_std(policy.keep_versions_for)
        .map_err(|error| StoreError::Mismatch(format!("keep_versions_for out of range: {error}")))?;
    let prune = table
        .optimize(OptimizeAction::Prune {
            older_than: Some(older_than),
            delete_unverified: Some(false),
            error_if_tagged_old_versions: Some(false),
        })
        .await?;
    if let Some(removal) = prune.prune {
        report.old_versions_removed += removal.old_versions;
    }
    Ok(())
}
