//! Documents through decode → chunk → embed (the real local model) → index (LanceDB) against
//! the real broker: the table must hold exactly the chunks of each document's live version,
//! whatever is redelivered, delivered late, or interrupted by `kill -9`.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use arrow_array::{RecordBatch, StringArray, UInt64Array};
use common::*;
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use ragstream::audit::{DocumentEvent, DocumentEventKind};
use ragstream::embed::{shared_local_model, Pooling};
use ragstream::store::{ChunkStore, SearchMode};

const MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/all-MiniLM-L6-v2");
const TENANTS: [&str; 2] = ["northwind", "contoso"];

/// Short, distinct texts (one or two chunks each) so that 200 documents embed quickly. Each
/// tenant writes about its own subject so a leak across tenants would be visible in the text.
fn text(tenant: &str, i: usize, version: u64) -> String {
    let subject = if tenant == TENANTS[0] {
        "refrigerated freight and cold-chain trucks"
    } else {
        "cloud invoices and subscription billing"
    };
    let extra = "Each clause was reviewed by the compliance team. ".repeat(i % 3);
    format!(
        "# {tenant} note {i}\n\nThis {tenant} note {i}, revision {version}, is about {subject}. {extra}\n\n\
         ## Details\n\nItem {i} applies to {subject} from revision {version} onwards."
    )
}

fn upsert(tenant: &str, i: usize, version: u64) -> Outgoing {
    let doc_id = format!("doc-{i:03}");
    let payload = serde_json::json!({
        "schema_version": 1, "doc_id": doc_id, "tenant": tenant, "op": "upsert",
        "version": version, "title": format!("Note {i}"), "text": text(tenant, i, version),
        "metadata": {"kind": "note"},
    });
    message(&doc_id, payload)
}

fn delete(tenant: &str, i: usize, version: u64) -> Outgoing {
    let doc_id = format!("doc-{i:03}");
    let payload = serde_json::json!({
        "schema_version": 1, "doc_id": doc_id, "tenant": tenant, "op": "delete", "version": version,
    });
    message(&doc_id, payload)
}

fn message(doc_id: &str, payload: serde_json::Value) -> Outgoing {
    Outgoing {
        partition: None,
        key: Some(doc_id.as_bytes().to_vec()),
        payload: payload.to_string().into_bytes(),
    }
}

/// The `(tenant, doc_id, version)` of each message.
fn versions_of(messages: &[Outgoing]) -> HashSet<(String, String, u64)> {
    messages
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            (
                v["tenant"].as_str().unwrap().to_owned(),
                v["doc_id"].as_str().unwrap().to_owned(),
                v["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub(crate) fn topology(prefix: &str, lancedb: &Path) -> TestTopology {
    let mut topology = TestTopology::new(prefix);
    topology.stages = format!(
        "[{{ type: decode_document }}, \
          {{ type: chunk, model_dir: \"{MODEL_DIR}\", max_tokens: 64, overlap_tokens: 8 }}, \
          {{ type: embed, model_dir: \"{MODEL_DIR}\", batch_size: 16 }}, \
          {{ type: index, uri: \"{}\", batch_max_documents: 32, batch_max_wait_ms: 50, \
             vector_index_min_rows: 300, maintenance_interval_ms: 2000, keep_versions_for_s: 0 }}]",
        lancedb.display()
    );
    topology.pipeline_extra = "    audit_sink: out".to_owned();
    topology
}

pub(crate) async fn stop(process: &mut Ragstream) {
    process.sigterm();
    let status = process.wait_exit(Duration::from_secs(30)).await;
    assert!(status.is_some_and(|s| s.success()), "{}", process.log_text());
}

pub(crate) fn events(received: &[Received]) -> Vec<DocumentEvent> {
    received
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("audit event"))
        .collect()
}

/// Reads the audit topic until every `(tenant, doc_id, version)` in `expected` has an event.
pub(crate) async fn read_events_for(
    reader: &mut TopicReader,
    expected: &HashSet<(String, String, u64)>,
) -> Vec<DocumentEvent> {
    reader
        .read_until(
            |received| {
                let seen: HashSet<(String, String, u64)> = events(received)
                    .into_iter()
                    .map(|e| (e.tenant, e.doc_id, e.version))
                    .collect();
                expected.is_subset(&seen)
            },
            Duration::from_secs(480),
        )
        .await;
    events(&reader.received)
}

/// Every row of the chunks table: (tenant, chunk_id) → (doc_id, version, text).
pub(crate) async fn table_rows(lancedb: &Path) -> BTreeMap<(String, String), (String, u64, String)> {
    table_rows_at(lancedb.to_str().unwrap(), &BTreeMap::new()).await
}

/// [`table_rows`] of the database at `uri` (a directory or an object-store URI).
pub(crate) async fn table_rows_at(
    uri: &str,
    storage_options: &BTreeMap<String, String>,
) -> BTreeMap<(String, String), (String, u64, String)> {
    let connection = lancedb::connect(uri)
        .storage_options(storage_options.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .execute()
        .await
        .unwrap();
    let table = connection.open_table("chunks").execute().await.unwrap();
    let batches: Vec<RecordBatch> = table
        .query()
        .select(Select::columns(&["tenant", "chunk_id", "doc_id", "version", "text"]))
        .execute()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut rows = BTreeMap::new();
    for batch in &batches {
        let string = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let (tenant, chunk_id, doc_id, text) = (string("tenant"), string("chunk_id"), string("doc_id"), string("text"));
        let version = batch
            .column_by_name("version")
            .unwrap()
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        for row in 0..batch.num_rows() {
            let key = (tenant.value(row).to_owned(), chunk_id.value(row).to_owned());
            let value = (
                doc_id.value(row).to_owned(),
                version.value(row),
                text.value(row).to_owned(),
            );
            assert!(rows.insert(key, value).is_none(), "duplicate chunk row");
        }
    }
    rows
}

/// Whether a chunk's text is from a document of `tenant` (each tenant's texts name only it).
fn written_by(text: &str, tenant: &str) -> bool {
    TENANTS
        .iter()
        .all(|t| text.contains(&format!("{t} note")) == (*t == tenant))
}

/// Checks the table against the live versions: every live document has exactly the chunks its
/// `document_indexed` event counted, all of that version; deleted documents have none.
fn assert_table_holds_live_versions(
    rows: &BTreeMap<(String, String), (String, u64, String)>,
    live: &HashMap<(String, String), u64>,
    chunk_counts: &HashMap<(String, String, u64), u64>,
) {
    let mut per_document: HashMap<(String, String), Vec<u64>> = HashMap::new();
    for ((tenant, chunk_id), (doc_id, version, text)) in rows {
        assert!(
            written_by(text, tenant),
            "chunk of another tenant's text: {chunk_id}: {text}"
        );
        assert!(chunk_id.starts_with(&format!("{doc_id}:{version}:")));
        per_document
            .entry((tenant.clone(), doc_id.clone()))
            .or_default()
            .push(*version);
    }
    for (document, versions) in &per_document {
        let live_version = live
            .get(document)
            .unwrap_or_else(|| panic!("chunks of a deleted document {document:?}"));
        assert!(
            versions.iter().all(|v| v == live_version),
            "{document:?}: {versions:?} vs live {live_version}"
        );
        let expected = chunk_counts[&(document.0.clone(), document.1.clone(), *live_version)];
        assert_eq!(versions.len() as u64, expected, "{document:?}");
    }
    assert_eq!(per_document.len(), live.len(), "every live document has chunks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_follows_updates_deletes_redelivery_and_late_versions() {
    let lancedb = tempfile::tempdir().unwrap();
    let topology = topology("index", lancedb.path());
    topology.create_topics(3).await;

    // 100 documents per tenant (the same ids in both), then 20 updates and 10 deletes.
    let mut messages = Vec::new();
    let mut live: HashMap<(String, String), u64> = HashMap::new();
    for tenant in TENANTS {
        for i in 0..100 {
            messages.push(upsert(tenant, i, 1));
            live.insert((tenant.to_owned(), format!("doc-{i:03}")), 1);
        }
    }
    for i in 0..20 {
        let tenant = TENANTS[i % 2];
        messages.push(upsert(tenant, i * 3, 2));
        live.insert((tenant.to_owned(), format!("doc-{:03}", i * 3)), 2);
    }
    for i in 0..10 {
        let tenant = TENANTS[i % 2];
        messages.push(delete(tenant, 50 + i * 4, 2));
        live.remove(&(tenant.to_owned(), format!("doc-{:03}", 50 + i * 4)));
    }
    let expected = versions_of(&messages);
    produce_all(&topology.input, messages).await;

    let mut process = Ragstream::start(&topology);
    process.wait_ready(Duration::from_secs(60)).await;
    let mut audit = TopicReader::new(&topology.output);
    let first = read_events_for(&mut audit, &expected).await;
    let mut chunk_counts = HashMap::new();
    for event in &first {
        if event.event == DocumentEventKind::DocumentIndexed {
            chunk_counts.insert(
                (event.tenant.clone(), event.doc_id.clone(), event.version),
                event.chunk_count.unwrap(),
            );
            assert_eq!(event.embedding_model.as_deref(), Some("all-MiniLM-L6-v2"));
            for stage in ["decode_document", "chunk", "embed", "index", "total"] {
                assert!(event.durations_ms.contains_key(stage), "{event:?}");
            }
        }
    }
    let deleted = first
        .iter()
        .filter(|e| e.event == DocumentEventKind::DocumentDeleted)
        .count();
    assert_eq!(deleted, 10, "{}", process.log_text());
    let rows = table_rows(lancedb.path()).await;
    assert_table_holds_live_versions(&rows, &live, &chunk_counts);

    // Late old versions: of an updated document and of a deleted one.
    let before_late = audit.received.len();
    produce_all(
        &topology.input,
        vec![upsert(TENANTS[0], 0, 1), upsert(TENANTS[0], 50, 1)],
    )
    .await;
    audit
        .read_until(|received| received.len() >= before_late + 2, Duration::from_secs(60))
        .await;
    let late_events = events(&audit.received[before_late..]);
    assert_eq!(late_events.len(), 2, "{late_events:?}");
    for event in &late_events {
        assert_eq!(event.event, DocumentEventKind::DocumentSkipped, "{event:?}");
        assert_eq!(
            event.reason.as_deref(),
            Some("version 1 is older than the applied version 2")
        );
    }
    assert_eq!(
        table_rows(lancedb.path()).await,
        rows,
        "late versions changed the table"
    );

    // Redelivery of everything: stop, rewind the group, start again.
    stop(&mut process).await;
    rewind_group(&topology.group, &topology.input, 3);
    let before = audit.received.len();
    let mut process = Ragstream::start(&topology);
    process.wait_ready(Duration::from_secs(60)).await;
    audit
        .read_until(
            |received| received.len() >= before + expected.len() + 2,
            Duration::from_secs(240),
        )
        .await;
    let again = events(&audit.received[before..]);
    let count = |kind| again.iter().filter(|e| e.event == kind).count();
    // Each live version is reported as indexed again (same event id), each delete as deleted.
    assert_eq!(count(DocumentEventKind::DocumentIndexed), live.len());
    assert_eq!(count(DocumentEventKind::DocumentDeleted), 10);
    assert_eq!(table_rows(lancedb.path()).await, rows, "redelivery changed the table");

    // Tenant-filtered search, with the index's upkeep having built the vector index.
    let model = shared_local_model(Path::new(MODEL_DIR), Pooling::Mean, true, 256).unwrap();
    let query = "invoices and subscription billing";
    let vector = model.embed(&[query]).unwrap().remove(0);
    let store = ChunkStore::open(lancedb.path().to_str().unwrap(), "chunks")
        .await
        .unwrap();
    for tenant in TENANTS {
        for mode in [SearchMode::Vector, SearchMode::Hybrid] {
            let hits = store.search(tenant, query, &vector, 20, mode).await.unwrap();
            assert_eq!(hits.len(), 20);
            for hit in hits {
                assert!(written_by(&hit.text, tenant), "{tenant} got {hit:?}");
            }
        }
    }
    stop(&mut process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingestion_leaves_the_same_table_as_an_uninterrupted_run() {
    let messages = || {
        let mut messages: Vec<Outgoing> = (0..80).map(|i| upsert(TENANTS[i % 2], i, 1)).collect();
        messages.extend((0..10).map(|i| upsert(TENANTS[i % 2], i * 2, 2)));
        messages.extend((0..5).map(|i| delete(TENANTS[i % 2], 40 + i * 2, 3)));
        messages
    };
    let expected = versions_of(&messages());

    // The reference: one uninterrupted run.
    let reference_db = tempfile::tempdir().unwrap();
    let reference = topology("index-ref", reference_db.path());
    reference.create_topics(3).await;
    produce_all(&reference.input, messages()).await;
    let mut process = Ragstream::start(&reference);
    process.wait_ready(Duration::from_secs(60)).await;
    read_events_for(&mut TopicReader::new(&reference.output), &expected).await;
    stop(&mut process).await;

    // The same messages, killed once some (not all) are indexed, then restarted.
    let crashed_db = tempfile::tempdir().unwrap();
    let crashed = topology("index-kill", crashed_db.path());
    crashed.create_topics(3).await;
    produce_all(&crashed.input, messages()).await;
    let mut process = Ragstream::start(&crashed);
    process.wait_ready(Duration::from_secs(60)).await;
    let mut audit = TopicReader::new(&crashed.output);
    audit.read_at_least(20, Duration::from_secs(120)).await;
    process.kill9();
    let indexed_before_kill = audit.received.len();
    assert!(indexed_before_kill < expected.len(), "killed too late to test anything");
    let mut process = Ragstream::start(&crashed);
    process.wait_ready(Duration::from_secs(60)).await;
    read_events_for(&mut audit, &expected).await;
    stop(&mut process).await;

    let reference_rows = table_rows(reference_db.path()).await;
    assert!(!reference_rows.is_empty());
    assert_eq!(table_rows(crashed_db.path()).await, reference_rows);
}
