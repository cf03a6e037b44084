//! The index on an `s3://` URI behaves as on a local directory. Runs against the local
//! S3-compatible server started by `deploy/local/s3.sh start` (scripts/test.sh does that).

use std::collections::BTreeMap;

use ragstream::contracts::{ChunkedDocument, DocumentChunk, DocumentHeader, DocumentOp};
use ragstream::store::{ChunkStore, DocumentWrite, MaintenancePolicy, SearchMode, VectorIndexKind, WriteOutcome};

fn endpoint() -> String {
    std::env::var("RAGSTREAM_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:9000".to_owned())
}

fn write(tenant: &str, doc_id: &str, version: u64, op: DocumentOp, chunks: usize) -> DocumentWrite {
    let chunks = (0..chunks)
        .map(|position| {
            let mut vector = vec![0.0f32; 8];
            vector[(position + doc_id.len()) % 8] = 1.0;
            DocumentChunk {
                chunk_id: format!("{doc_id}:{version}:{position}"),
                position: position as u32,
                text: format!("{tenant} text {position}"),
                context: String::new(),
                token_count: 3,
                vector: Some(vector),
            }
        })
        .collect();
    DocumentWrite {
        document: ChunkedDocument {
            header: DocumentHeader::new(tenant, doc_id, op, version),
            embedding_model: Some("test".to_owned()),
            chunks,
        },
        event_time_ms: None,
    }
}

#[tokio::test]
async fn the_index_works_the_same_on_an_s3_uri() {
    let bucket = format!("ragstream-{:08x}", rand::random::<u32>());
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", endpoint()))
        .send()
        .await
        .expect("local S3 server (deploy/local/s3.sh start)");
    assert!(created.status().is_success(), "{created:?}");
    let options: BTreeMap<String, String> = [
        ("aws_endpoint", endpoint()),
        ("aws_allow_http", "true".to_owned()),
        ("aws_region", "us-east-1".to_owned()),
        ("aws_access_key_id", "test".to_owned()),
        ("aws_secret_access_key", "test".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let uri = format!("s3://{bucket}/index");

    let mut store = ChunkStore::open_with_options(&uri, "chunks", &options).await.unwrap();
    let outcomes = store
        .apply(&[
            write("a", "d1", 1, DocumentOp::Upsert, 3),
            write("b", "d1", 1, DocumentOp::Upsert, 2),
            write("a", "d2", 1, DocumentOp::Upsert, 2),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes[0], WriteOutcome::Indexed { chunks: 3 });
    store
        .apply(&[
            write("a", "d1", 2, DocumentOp::Upsert, 1),
            write("a", "d2", 2, DocumentOp::Delete, 0),
        ])
        .await
        .unwrap();
    assert_eq!(store.count_chunks(None).await.unwrap(), 3, "a/d1 v2 (1) + b/d1 v1 (2)");

    // A second handle (another replica) sees the same state and refuses the late version.
    let mut other = ChunkStore::open_with_options(&uri, "chunks", &options).await.unwrap();
    let outcomes = other
        .apply(&[write("a", "d2", 1, DocumentOp::Upsert, 4)])
        .await
        .unwrap();
    assert!(matches!(outcomes[0], WriteOutcome::Skipped { .. }), "{outcomes:?}");

    let mut query = vec![0.0f32; 8];
    query[2] = 1.0;
    let hits = other.search("b", "text", &query, 10, SearchMode::Vector).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.text.starts_with("b ")), "{hits:?}");
    let report = other
        .maintain(&MaintenancePolicy {
            vector_index_min_rows: usize::MAX,
            vector_index: VectorIndexKind::IvfPq,
            full_text_index: true,
            keep_versions_for: std::time::Duration::ZERO,
        })
        .await
        .unwrap();
    assert!(report.full_text_index_built, "{report:?}");
    assert_eq!(other.count_chunks(None).await.unwrap(), 3);
}
