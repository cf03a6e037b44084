//! The index on an `s3://` URI behaves as on a local directory, and an outage of the object
//! store is retried, then dead-lettered, with nothing lost. Runs against the local S3-compatible
//! server started by `deploy/local/s3.sh start` (scripts/test.sh does that).

use crate::common;
use crate::indexing::{events, stop};

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::chaos::ChaosRow;
use common::proxy::Proxy;
use common::*;
use ragstream::audit::DocumentEventKind;

use ragstream::contracts::{ChunkedDocument, DocumentChunk, DocumentHeader, DocumentOp};
use ragstream::store::{ChunkStore, DocumentWrite, MaintenancePolicy, SearchMode, VectorIndexKind, WriteOutcome};

pub(crate) fn endpoint() -> String {
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

/// A new bucket on the local S3 server, and the storage options that reach it.
pub(crate) async fn new_bucket() -> (String, BTreeMap<String, String>) {
    let bucket = format!("ragstream-{:08x}", rand::random::<u32>());
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", endpoint()))
        .send()
        .await
        .expect("local S3 server (deploy/local/s3.sh start)");
    assert!(created.status().is_success(), "{created:?}");
    let options = [
        ("aws_endpoint", endpoint()),
        ("aws_allow_http", "true".to_owned()),
        ("aws_region", "us-east-1".to_owned()),
        ("aws_access_key_id", "test".to_owned()),
        ("aws_secret_access_key", "test".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    (bucket, options)
}

#[tokio::test]
async fn the_index_works_the_same_on_an_s3_uri() {
    let (bucket, options) = new_bucket().await;
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

/// Documents `range` of tenant `a`, version 1, as the index stage reads them (embedded).
fn embedded_documents(range: std::ops::Range<usize>) -> Vec<Outgoing> {
    range
        .map(|i| {
            let doc_id = format!("d{i:03}");
            Outgoing {
                partition: None,
                key: Some(doc_id.clone().into_bytes()),
                payload: serde_json::to_vec(&write("a", &doc_id, 1, DocumentOp::Upsert, 2).document).unwrap(),
            }
        })
        .collect()
}

fn doc_ids(range: std::ops::Range<usize>) -> HashSet<String> {
    range.map(|i| format!("d{i:03}")).collect()
}

/// Reads audit events until every document of `wanted` has one of `kind`.
async fn await_events(reader: &mut TopicReader, wanted: &HashSet<String>, kind: DocumentEventKind) {
    let all_seen = |received: &[Received]| {
        let seen: HashSet<String> = events(received)
            .into_iter()
            .filter(|e| e.event == kind)
            .map(|e| e.doc_id)
            .collect();
        wanted.is_subset(&seen)
    };
    reader.read_until(all_seen, Duration::from_secs(180)).await;
    assert!(all_seen(&reader.received), "not every document has a {kind:?} event");
}

/// Waits until the process has scheduled at least `count` retries in all.
async fn await_retries(process: &Ragstream, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = process.metrics().await.unwrap_or_default();
        if metric(&text, "ragstream_stage_messages_total", &[("outcome", "retry")]) >= count {
            return;
        }
        assert!(Instant::now() < deadline, "no retry:\n{}", process.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The object store cut off while documents arrive: writes fail, are retried with backoff, and
/// are dead-lettered once the attempts run out (a `document_failed` event each); an outage
/// shorter than the retries costs nothing; the table then holds exactly what was written, and
/// every offset is committed only once its document was written or dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_is_retried_then_dead_lettered_and_nothing_is_lost() {
    let (bucket, mut options) = new_bucket().await;
    let target: SocketAddr = endpoint().trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(target).await;
    options.insert("aws_endpoint".to_owned(), format!("http://127.0.0.1:{}", proxy.port));
    let uri = format!("s3://{bucket}/index");
    let settings: Vec<String> = options.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    let mut topology = TestTopology::new("s3-outage");
    topology.stages = format!(
        "[{{ type: index, uri: \"{uri}\", storage_options: {{ {} }}, batch_max_wait_ms: 20, \
             maintenance_interval_ms: 600000 }}]",
        settings.join(", ")
    );
    // Four attempts a second apart: long enough to see a short outage through.
    topology.pipeline_extra =
        "    audit_sink: out\n    retry: { max_attempts: 4, initial_backoff_ms: 1000, max_backoff_ms: 1000 }"
            .to_owned();
    topology.create_topics(1).await;
    let mut process = Ragstream::start(&topology);
    process.wait_ready(Duration::from_secs(60)).await;
    let mut audit = TopicReader::new(&topology.output);
    let mut coordinates = Vec::new();

    // Before: written.
    coordinates.extend(produce_all(&topology.input, embedded_documents(0..20)).await);
    await_events(&mut audit, &doc_ids(0..20), DocumentEventKind::DocumentIndexed).await;

    // A long outage: every attempt fails, then each document is dead-lettered.
    proxy.cut();
    coordinates.extend(produce_all(&topology.input, embedded_documents(20..40)).await);
    await_events(&mut audit, &doc_ids(20..40), DocumentEventKind::DocumentFailed).await;
    assert!(proxy.refused() > 0, "the store was unreachable");
    let dead = read_topic(&topology.dead_letter, 20, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 20, "one dead letter per document not written");
    for message in &dead {
        assert_eq!(message.headers["ragstream.dlq.fault"], "external");
        assert!(
            message.headers["ragstream.dlq.reason"].starts_with("gave up after 4 attempts: LanceDB"),
            "{:?}",
            message.headers
        );
    }

    // A short outage: the first attempts fail, a retry after the store is back writes them.
    let retries_before = metric(
        &process.metrics().await.unwrap(),
        "ragstream_stage_messages_total",
        &[("outcome", "retry")],
    );
    coordinates.extend(produce_all(&topology.input, embedded_documents(40..60)).await);
    await_retries(&process, retries_before + 1.0).await;
    proxy.restore();
    await_events(&mut audit, &doc_ids(40..60), DocumentEventKind::DocumentIndexed).await;
    assert!(process.try_status().is_none(), "{}", process.log_text());

    // Every offset is committed, and only now that every document is written or dead-lettered.
    let end = end_offsets_of(&coordinates);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed_offsets(&topology.group, &topology.input) != end {
        assert!(Instant::now() < deadline, "everything is committed once handled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(&mut process).await;
    let store = ChunkStore::open_with_options(&uri, "chunks", &options).await.unwrap();
    assert_eq!(
        store.count_chunks(None).await.unwrap(),
        2 * 40,
        "the chunks of the 40 documents written, none of the 20 dead-lettered"
    );
    let failed: Vec<String> = events(&audit.received)
        .into_iter()
        .filter(|e| e.event == DocumentEventKind::DocumentFailed)
        .map(|e| e.doc_id)
        .collect();
    assert!(
        failed.iter().all(|id| doc_ids(20..40).contains(id)),
        "only the long outage's documents failed: {failed:?}"
    );
    let outcomes: HashSet<String> = events(&audit.received).into_iter().map(|e| e.doc_id).collect();
    ChaosRow {
        scenario: "object store unreachable during indexing".to_owned(),
        messages_in: coordinates.len(),
        outputs: audit.received.len(),
        lost: doc_ids(0..60).difference(&outcomes).count(),
        duplicates: audit.received.len() - outcomes.len(),
        dead_lettered: dead.len(),
        leaked: 0,
        note: "long outage: dead-lettered after 4 attempts; short: retried and written".to_owned(),
    }
    .report();
}
