//! Several replicas of the indexing pipeline writing one LanceDB table, on a local directory and
//! on the local S3 server: the versions of one document arrive on different partitions, so
//! different replicas apply them, out of order, while every replica also runs upkeep (index
//! builds, compaction, old-version cleanup). The table must end with exactly the chunks of the
//! last version of every document, and nothing may be lost.

use crate::common;
use crate::indexing::{read_events_for, stop, table_rows_at};
use crate::object_storage::new_bucket;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::chaos::ChaosRow;
use common::*;
use ragstream::audit::DocumentEventKind;
use ragstream::contracts::{ChunkedDocument, DocumentChunk, DocumentHeader, DocumentOp};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const PARTITIONS: i32 = 4;
const TENANTS: [&str; 2] = ["northwind", "contoso"];
/// Documents per run; each gets [`VERSIONS`] versions, so 2,000 versions in all.
const DOCUMENTS: usize = 200;
const VERSIONS: u64 = 10;

fn redis_url() -> String {
    std::env::var("RAGSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Whether version `version` of document `i` deletes it: every third document is deleted
/// halfway and upserted again, every fifth ends deleted.
fn deletes(i: usize, version: u64) -> bool {
    (i % 3 == 0 && version == VERSIONS / 2) || (i % 5 == 0 && version == VERSIONS)
}

/// Chunks of version `version` of document `i`: their number changes between versions, so a
/// leftover chunk of an older version shows as a wrong count as well as a wrong version.
fn chunk_count(i: usize, version: u64) -> usize {
    1 + (i + version as usize) % 3
}

fn document(i: usize, version: u64) -> ChunkedDocument {
    let tenant = TENANTS[i % TENANTS.len()];
    let doc_id = format!("doc-{i:03}");
    let op = if deletes(i, version) {
        DocumentOp::Delete
    } else {
        DocumentOp::Upsert
    };
    let chunks = match op {
        DocumentOp::Delete => Vec::new(),
        DocumentOp::Upsert => (0..chunk_count(i, version))
            .map(|position| {
                // Vectors that differ per chunk, so index builds have something to train on.
                let vector: Vec<f32> = (0..8)
                    .map(|d| ((i * 31 + position * 7 + d * 3 + version as usize) % 17) as f32 + 1.0)
                    .collect();
                DocumentChunk {
                    chunk_id: format!("{doc_id}:{version}:{position}"),
                    position: position as u32,
                    text: format!("{tenant} {doc_id} revision {version} part {position}"),
                    context: String::new(),
                    token_count: 6,
                    vector: Some(vector),
                }
            })
            .collect(),
    };
    ChunkedDocument {
        header: DocumentHeader::new(tenant, doc_id, op, version),
        embedding_model: Some("test".to_owned()),
        chunks,
    }
}

/// Every version of every document, shuffled (a fixed seed), each on a partition of its own
/// choosing: consecutive versions of a document land on different partitions, so on different
/// replicas, and late versions arrive after newer ones.
fn messages() -> Vec<Outgoing> {
    let mut all: Vec<(usize, u64)> = (0..DOCUMENTS)
        .flat_map(|i| (1..=VERSIONS).map(move |version| (i, version)))
        .collect();
    all.shuffle(&mut StdRng::seed_from_u64(21));
    all.into_iter()
        .map(|(i, version)| Outgoing {
            partition: Some(((i as u64 + version) % PARTITIONS as u64) as i32),
            key: Some(format!("doc-{i:03}").into_bytes()),
            payload: serde_json::to_vec(&document(i, version)).unwrap(),
        })
        .collect()
}

fn topology(uri: &str, storage_options: &BTreeMap<String, String>, upkeep_every_ms: u64) -> TestTopology {
    let mut topology = TestTopology::new("writers");
    let options: Vec<String> = storage_options.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    // Frequent upkeep on every replica, with cleanup of every old version: the most commits that
    // can race the batches. The vector index is built halfway through the run.
    topology.stages = format!(
        "[{{ type: index, uri: \"{uri}\", storage_options: {{ {} }}, commit_lock: \"{}\", \
             batch_max_documents: 16, batch_max_wait_ms: 20, vector_index_min_rows: 300, \
             maintenance_interval_ms: {upkeep_every_ms}, keep_versions_for_s: 0 }}]",
        options.join(", "),
        redis_url(),
    );
    topology.pipeline_extra = "    audit_sink: out".to_owned();
    topology
}

/// The table holds, for every document whose last version is an upsert, exactly that version's
/// chunks, and nothing of any other version or of a deleted document.
fn assert_exactly_the_last_versions(rows: &BTreeMap<(String, String), (String, u64, String)>) {
    let mut expected = BTreeMap::new();
    for i in 0..DOCUMENTS {
        if deletes(i, VERSIONS) {
            continue;
        }
        let tenant = TENANTS[i % TENANTS.len()];
        for position in 0..chunk_count(i, VERSIONS) {
            let doc_id = format!("doc-{i:03}");
            expected.insert((tenant.to_owned(), format!("{doc_id}:{VERSIONS}:{position}")), doc_id);
        }
    }
    let extra: Vec<_> = rows
        .iter()
        .filter(|(k, _)| !expected.contains_key(*k))
        .take(5)
        .collect();
    let misplaced: Vec<_> = rows
        .iter()
        .filter(|(k, (doc_id, version, _))| expected.get(*k).is_some_and(|d| d != doc_id) || *version != VERSIONS)
        .take(5)
        .collect();
    assert!(misplaced.is_empty(), "rows of an older version: {misplaced:?}");
    let missing: Vec<_> = expected.keys().filter(|k| !rows.contains_key(*k)).take(5).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{} rows, {} expected; extra (first 5): {extra:?}; missing (first 5): {missing:?}",
        rows.len(),
        expected.len()
    );
}

async fn replicas_keep_exactly_the_last_versions(
    scenario: &str,
    replicas: usize,
    uri: &str,
    options: &BTreeMap<String, String>,
) {
    // Upkeep holds the table's turn, and on the local S3 server (one Python process, shared by
    // the tests running beside this one) a round takes seconds: less often there.
    let upkeep_every_ms = if options.is_empty() { 3_000 } else { 10_000 };
    let topology = topology(uri, options, upkeep_every_ms);
    topology.create_topics(PARTITIONS).await;
    let mut processes: Vec<Ragstream> = (0..replicas).map(|_| Ragstream::start(&topology.replica())).collect();
    for process in &mut processes {
        process.wait_ready(Duration::from_secs(60)).await;
    }
    let messages = messages();
    let sent = messages.len();
    let expected: HashSet<(String, String, u64)> = (0..DOCUMENTS)
        .flat_map(|i| (1..=VERSIONS).map(move |v| (TENANTS[i % TENANTS.len()].to_owned(), format!("doc-{i:03}"), v)))
        .collect();
    produce_all(&topology.input, messages).await;

    // Every version gets its audit event: none is lost, whichever replica had it.
    let mut audit = TopicReader::new(&topology.output);
    let events = read_events_for(&mut audit, &expected).await;
    for process in &mut processes {
        assert!(
            process.try_status().is_none(),
            "a replica stopped:\n{}",
            process.log_text()
        );
        // Every replica wrote: the versions of one document were spread over them.
        let metrics = process.metrics().await.unwrap_or_default();
        let written = metric(&metrics, "ragstream_index_documents_total", &[]);
        assert!(written > 0.0, "a replica wrote nothing:\n{}", process.log_text());
    }
    for process in &mut processes {
        stop(process).await;
    }
    let seen: HashSet<(String, String, u64)> = events
        .iter()
        .map(|e| (e.tenant.clone(), e.doc_id.clone(), e.version))
        .collect();
    assert_eq!(seen.len(), sent, "one outcome per version");
    assert!(
        events.iter().all(|e| e.event != DocumentEventKind::DocumentFailed),
        "no version failed"
    );
    let dead_letters = read_topic(&topology.dead_letter, 0, Duration::from_secs(2)).await;
    assert!(dead_letters.is_empty(), "{} dead letters", dead_letters.len());
    let rows = table_rows_at(uri, options).await;
    assert_exactly_the_last_versions(&rows);
    ChaosRow {
        scenario: scenario.to_owned(),
        messages_in: sent,
        outputs: events.len(),
        lost: 0,
        duplicates: events.len() - seen.len(),
        dead_lettered: 0,
        leaked: 0,
        note: format!(
            "{replicas} replicas; table = last version of all {DOCUMENTS} documents ({} rows)",
            rows.len()
        ),
    }
    .report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_on_a_local_directory_keep_exactly_the_last_version_of_every_document() {
    let directory = tempfile::tempdir().unwrap();
    let uri = directory.path().join("lancedb").display().to_string();
    replicas_keep_exactly_the_last_versions("4 index replicas, local directory", 4, &uri, &BTreeMap::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_on_s3_keep_exactly_the_last_version_of_every_document() {
    let (bucket, options) = new_bucket().await;
    replicas_keep_exactly_the_last_versions("4 index replicas, S3", 4, &format!("s3://{bucket}/index"), &options).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_s3_keep_exactly_the_last_version_of_every_document() {
    let (bucket, options) = new_bucket().await;
    replicas_keep_exactly_the_last_versions("2 index replicas, S3", 2, &format!("s3://{bucket}/index"), &options).await;
}
