use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::*;
use crate::contracts::{ChunkedDocument, DocumentChunk, DocumentHeader};

const DIMENSIONS: usize = 16;

fn vector(seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let raw: Vec<f32> = (0..DIMENSIONS).map(|_| rng.random_range(-1.0..1.0)).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    raw.into_iter().map(|x| x / norm).collect()
}

fn write(tenant: &str, doc_id: &str, version: u64, op: DocumentOp, chunks: usize) -> DocumentWrite {
    let chunks = (0..chunks)
        .map(|position| DocumentChunk {
            chunk_id: format!("{doc_id}:{version}:{position}"),
            position: position as u32,
            text: format!("{tenant} {doc_id} version {version} part {position} about shipping parcels"),
            context: doc_id.to_owned(),
            token_count: 8,
            vector: Some(vector(version * 1000 + position as u64 + doc_id.len() as u64 * 7)),
        })
        .collect();
    DocumentWrite {
        document: ChunkedDocument {
            header: DocumentHeader {
                title: Some(format!("Title of {doc_id}")),
                metadata: [("lang".to_owned(), "en".to_owned())].into(),
                ..DocumentHeader::new(tenant, doc_id, op, version)
            },
            embedding_model: Some("test-model".to_owned()),
            chunks,
        },
        event_time_ms: Some(1_700_000_000_000),
    }
}

fn upsert(tenant: &str, doc_id: &str, version: u64, chunks: usize) -> DocumentWrite {
    write(tenant, doc_id, version, DocumentOp::Upsert, chunks)
}

fn delete(tenant: &str, doc_id: &str, version: u64) -> DocumentWrite {
    write(tenant, doc_id, version, DocumentOp::Delete, 0)
}

async fn store() -> (tempfile::TempDir, ChunkStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path().to_str().unwrap(), "chunks").await.unwrap();
    (dir, store)
}

async fn chunk_ids(store: &ChunkStore) -> Vec<String> {
    let table = store.chunks().unwrap();
    let batches: Vec<RecordBatch> = table
        .query()
        .select(lancedb::query::Select::columns(&["chunk_id"]))
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut ids: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let ids = columns::column::<arrow_array::StringArray>(b, "chunk_id").unwrap();
            ids.iter().map(|id| id.unwrap().to_owned()).collect::<Vec<_>>()
        })
        .collect();
    ids.sort();
    ids
}

/// Version 2 of `a/d1` (one chunk) and the delete of `a/d2`, reported the same way the first
/// time and on a redelivery.
async fn apply_second_versions(store: &mut ChunkStore) {
    let outcomes = store
        .apply(&[upsert("a", "d1", 2, 1), delete("a", "d2", 2)])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            WriteOutcome::Indexed { chunks: 1 },
            WriteOutcome::Deleted { removed: 2 }
        ]
    );
}

#[tokio::test]
async fn versions_replace_deletes_remove_and_late_versions_are_ignored() {
    let (_dir, mut store) = store().await;
    let outcomes = store
        .apply(&[
            upsert("a", "d1", 1, 3),
            upsert("a", "d2", 1, 2),
            upsert("b", "d1", 1, 1),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes[0], WriteOutcome::Indexed { chunks: 3 });
    assert_eq!(store.count_chunks(None).await.unwrap(), 6);

    // A new version with fewer chunks replaces all old ones; a delete removes; the same doc id
    // of another tenant is untouched.
    apply_second_versions(&mut store).await;
    assert_eq!(chunk_ids(&store).await, ["d1:1:0", "d1:2:0"], "b/d1 v1 and a/d1 v2");

    // Late old versions, after an update and after a delete, change nothing.
    let outcomes = store
        .apply(&[upsert("a", "d1", 1, 3), upsert("a", "d2", 1, 2)])
        .await
        .unwrap();
    assert!(
        outcomes.iter().all(|o| matches!(o, WriteOutcome::Skipped { .. })),
        "{outcomes:?}"
    );
    assert_eq!(chunk_ids(&store).await, ["d1:1:0", "d1:2:0"]);

    // Redelivery of applied versions changes nothing and is reported as before.
    apply_second_versions(&mut store).await;
    assert_eq!(store.count_chunks(None).await.unwrap(), 2);

    // Within one batch the newest version wins whatever the order.
    let outcomes = store
        .apply(&[upsert("a", "d3", 5, 2), upsert("a", "d3", 4, 4), delete("a", "d3", 3)])
        .await
        .unwrap();
    assert_eq!(outcomes[0], WriteOutcome::Indexed { chunks: 2 });
    assert!(matches!(outcomes[1], WriteOutcome::Skipped { .. }));
    assert_eq!(store.count_chunks(Some("doc_id = 'd3'".into())).await.unwrap(), 2);
}

#[tokio::test]
async fn a_store_reopened_sees_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().to_str().unwrap();
    let mut first = ChunkStore::open(uri, "chunks").await.unwrap();
    first.apply(&[upsert("a", "d1", 3, 2)]).await.unwrap();
    let mut second = ChunkStore::open(uri, "chunks").await.unwrap();
    let outcomes = second.apply(&[upsert("a", "d1", 2, 5)]).await.unwrap();
    assert!(matches!(outcomes[0], WriteOutcome::Skipped { .. }));
    assert_eq!(second.count_chunks(None).await.unwrap(), 2);
}

#[tokio::test]
async fn vectors_of_another_width_are_refused() {
    let (_dir, mut store) = store().await;
    store.apply(&[upsert("a", "d1", 1, 1)]).await.unwrap();
    let mut other = upsert("a", "d2", 1, 1);
    other.document.chunks[0].vector = Some(vec![0.5; 3]);
    let error = store.apply(&[other]).await.unwrap_err();
    assert!(matches!(error, StoreError::Mismatch(_)), "{error}");
    let error = StageError::from(error);
    assert_eq!(error.fault, crate::error::Fault::Internal);
}

/// The ten best hits of `tenant` for the question, after checking that they are ten and all
/// the tenant's own.
async fn ten_of_tenant(
    store: &ChunkStore,
    tenant: &str,
    text: &str,
    query: &[f32],
    mode: SearchMode,
) -> Vec<SearchHit> {
    let hits = store.search(tenant, text, query, 10, mode).await.unwrap();
    assert_eq!(hits.len(), 10);
    for hit in &hits {
        assert!(hit.text.starts_with(&format!("{tenant} ")), "{tenant}: {hit:?}");
    }
    hits
}

#[tokio::test]
async fn search_never_crosses_tenants_with_or_without_indices() {
    let (_dir, mut store) = store().await;
    let mut writes = Vec::new();
    for i in 0..150 {
        writes.push(upsert("alpha", &format!("doc-{i}"), 1, 2));
        writes.push(upsert("beta", &format!("doc-{i}"), 1, 2));
    }
    for batch in writes.chunks(100) {
        store.apply(batch).await.unwrap();
    }
    assert_eq!(store.count_chunks(None).await.unwrap(), 600);
    let query = vector(1000 + 1 + 5 * 7);
    let before = ten_of_tenant(&store, "alpha", "shipping", &query, SearchMode::Vector).await;
    assert!(
        before[0].score > 0.999,
        "the query vector itself is a chunk: {before:?}"
    );

    let policy = MaintenancePolicy {
        vector_index_min_rows: 256,
        vector_index: VectorIndexKind::IvfPq,
        full_text_index: true,
        keep_versions_for: Duration::ZERO,
    };
    let report = store.maintain(&policy).await.unwrap();
    assert!(report.vector_index_built && report.full_text_index_built, "{report:?}");
    assert!(report.fragments_removed > 1, "{report:?}");
    assert!(report.old_versions_removed > 0, "{report:?}");
    let after = ten_of_tenant(&store, "alpha", "shipping", &query, SearchMode::Vector).await;
    assert_eq!(
        after[0].chunk_id, before[0].chunk_id,
        "the exact match stays first with the index"
    );
    ten_of_tenant(&store, "beta", "parcels doc-5", &query, SearchMode::Hybrid).await;
    // A second round has nothing left to build.
    let report = store.maintain(&policy).await.unwrap();
    assert!(!report.vector_index_built && !report.full_text_index_built);
}

#[tokio::test]
async fn a_search_since_a_time_sees_only_chunks_indexed_since() {
    let (_dir, mut store) = store().await;
    store.apply(&[upsert("alpha", "doc-1", 1, 2)]).await.unwrap();
    let query = vector(1000 + 7 * 5);
    let search = |since: chrono::DateTime<chrono::Utc>| {
        let store = &store;
        let query = query.clone();
        async move {
            let scope = SearchScope {
                tenant: "alpha",
                indexed_since: Some(since),
            };
            store
                .search_in(scope, "", &query, 10, SearchMode::Vector)
                .await
                .unwrap()
        }
    };
    let hour = chrono::Duration::hours(1);
    assert_eq!(search(chrono::Utc::now() - hour).await.len(), 2);
    assert!(search(chrono::Utc::now() + hour).await.is_empty());
}
