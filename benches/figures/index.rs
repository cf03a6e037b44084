//! Ingestion and index benchmark: one run, same corpus, printed figures (nothing asserted).
//!
//!     deploy/local/broker.sh start && cargo bench --bench figures -- index
//!     RAGSTREAM_BENCH_ROWS=20000 cargo bench --bench figures -- index      # smaller query-latency table
//!
//! 1. The sample corpus (`corpus/`) cut by the chunker exactly as the `chunk` stage does.
//! 2. Those chunks embedded by the local model alone (candle, batch 8 and 32): chunks/s.
//! 3. The same chunks with Python sentence-transformers, when its venv exists
//!    (`deploy/local/python-bench.sh` makes it): chunks/s.
//! 4. End to end: `ragstream ingest corpus/` to the documents topic, `ragstream run` with
//!    decode → chunk → embed → index into a fresh LanceDB directory; timed from the start of the
//!    ingest until the audit event of the last document: chunks/s.
//! 5. LanceDB at N chunks (default 100,000; 384-dimensional unit vectors scattered around 1,000
//!    random topic centres, as embedding 100k real chunks would take hours here): write rate through the index's batch
//!    path, query latency p50/p99 of tenant-filtered top-10 searches without and with each
//!    vector index (IVF-PQ, IVF-HNSW-SQ), the index build times, and recall@10 of the indexed
//!    searches against the exact ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ragstream::chunk::{chunk_text, Chunk, ChunkLimits, ModelTokenizer};
use ragstream::contracts::{ChunkedDocument, Document, DocumentChunk, DocumentHeader, DocumentOp};
use ragstream::embed::{LocalEmbedder, Pooling};
use ragstream::ingest::{collect_files, ingest, read_document, IngestOptions};
use ragstream::store::{ChunkStore, DocumentWrite, MaintenancePolicy, SearchMode, VectorIndexKind};
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::ClientConfig;
use rdkafka::Message;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DIMENSIONS: usize = 384;
const QUERIES: usize = 200;

fn model_dir() -> PathBuf {
    Path::new(ROOT).join("models/all-MiniLM-L6-v2")
}

fn brokers() -> String {
    std::env::var("RAGSTREAM_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// Every file under `folder` (README.md aside) read as a document of `tenant`, version 1, and
/// cut by the chunker as the `chunk` stage does with the default topology's limits (256 tokens,
/// 32 overlap).
pub(crate) fn chunked_corpus(folder: &Path, tenant: &str) -> Vec<(Document, Vec<Chunk>)> {
    let tokenizer = ModelTokenizer::from_model_dir(&model_dir()).expect("run deploy/local/models.sh");
    let limits = ChunkLimits {
        max_tokens: 256,
        overlap_tokens: 32,
        special_tokens: 2,
    };
    let (files, failures, _) = collect_files(&[folder.to_path_buf()]);
    assert!(failures.is_empty(), "{failures:?}");
    files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "README.md"))
        .map(|file| {
            let document = read_document(file, tenant, Some(1)).expect("corpus file");
            let text = document.text.as_deref().unwrap_or_default();
            let chunks = chunk_text(text, document.header.title.as_deref(), limits, &tokenizer);
            (document, chunks)
        })
        .collect()
}

/// `document` cut into `chunks`, embedded with `model` (32 texts a pass), as the index stage
/// writes it; `doc_id` replaces the document's own.
pub(crate) fn embedded_write(
    doc_id: &str,
    document: Document,
    chunks: Vec<Chunk>,
    model: &LocalEmbedder,
) -> DocumentWrite {
    let texts: Vec<&str> = chunks.iter().map(|chunk| chunk.text.as_str()).collect();
    let mut vectors = Vec::with_capacity(texts.len());
    for batch in texts.chunks(32) {
        vectors.extend(model.embed(batch).expect("embedded"));
    }
    let chunks = chunks
        .into_iter()
        .zip(vectors)
        .map(|(chunk, vector)| DocumentChunk {
            chunk_id: format!("{doc_id}:1:{}", chunk.position),
            position: chunk.position as u32,
            text: chunk.text,
            context: chunk.context,
            token_count: chunk.token_count as u32,
            vector: Some(vector),
        })
        .collect();
    DocumentWrite {
        document: ChunkedDocument {
            header: DocumentHeader {
                doc_id: doc_id.to_owned(),
                version: 1,
                ..document.header
            },
            embedding_model: Some("all-MiniLM-L6-v2".to_owned()),
            chunks,
        },
        event_time_ms: None,
    }
}

/// The texts of the whole corpus's chunks.
fn corpus_chunks() -> Vec<String> {
    chunked_corpus(&Path::new(ROOT).join("corpus"), "bench")
        .into_iter()
        .flat_map(|(_, chunks)| chunks.into_iter().map(|chunk| chunk.text))
        .collect()
}

fn embed_alone(model: &LocalEmbedder, chunks: &[String]) {
    embed_rate(model, chunks, &[8, 32], "candle (ragstream) ");
}

fn sentence_transformers(chunks: &[String]) {
    let python = std::env::var("RAGSTREAM_PY").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ragstream/st-venv/bin/python")
    });
    if !python.exists() {
        println!("sentence-transformers: skipped (no venv; run deploy/local/python-bench.sh)");
        return;
    }
    let texts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(texts.path(), serde_json::to_vec(chunks).unwrap()).unwrap();
    let status = Command::new(python)
        .arg(Path::new(ROOT).join("benches/python/embed_st.py"))
        .arg(model_dir())
        .arg(texts.path())
        .args(["--batch-sizes", "8,32", "--threads", "2"])
        .status()
        .expect("run python");
    assert!(status.success());
}

async fn create_topics(names: &[&str]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let topics: Vec<_> = names
        .iter()
        .map(|name| NewTopic::new(name, 3, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await.unwrap() {
        result.expect("topic created");
    }
}

async fn end_to_end() {
    let suffix = format!("{:08x}", rand::random::<u32>());
    let (input, audit, dlq) = (
        format!("bench-docs-{suffix}"),
        format!("bench-audit-{suffix}"),
        format!("bench-dlq-{suffix}"),
    );
    create_topics(&[&input, &audit, &dlq]).await;
    let lancedb = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let model = model_dir();
    let topology = format!(
        r#"version: 1
kafka:
  bootstrap.servers: {brokers}
telemetry:
  listen: 127.0.0.1:{port}
pipelines:
  - name: documents
    source: {{ topic: {input}, group: bench-{suffix} }}
    stages:
      - type: decode_document
      - {{ type: chunk, model_dir: "{model}", max_tokens: 256, overlap_tokens: 32 }}
      - {{ type: embed, model_dir: "{model}" }}
      - {{ type: index, uri: "{db}" }}
    sinks: [{{ name: audit, topic: {audit} }}]
    audit_sink: audit
    dead_letter: {{ topic: {dlq} }}
"#,
        brokers = brokers(),
        model = model.display(),
        db = lancedb.path().display(),
    );
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), topology).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ragstream"))
        .args(["run", "--topology"])
        .arg(file.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let report = ingest(&IngestOptions {
        paths: vec![
            Path::new(ROOT).join("corpus/acme"),
            Path::new(ROOT).join("corpus/globex"),
        ],
        tenant: "bench".to_owned(),
        topic: input.clone(),
        kafka: [("bootstrap.servers".to_owned(), brokers())].into(),
        version: Some(1),
        progress: false,
    })
    .await
    .unwrap();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("bench-reader-{suffix}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&audit]).unwrap();
    let (mut events, mut chunks) = (0, 0u64);
    while events < report.ingested {
        let message = consumer.recv().await.unwrap();
        let event: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        chunks += event["chunk_count"].as_u64().unwrap_or(0);
        events += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "end to end (documents topic -> LanceDB): {} documents, {chunks} chunks in {elapsed:.1} s: {:.1} chunks/s",
        report.ingested,
        chunks as f64 / elapsed
    );
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn normalized(raw: Vec<f32>) -> Vec<f32> {
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    raw.into_iter().map(|x| x / norm).collect()
}

fn random_unit(rng: &mut impl Rng) -> Vec<f32> {
    normalized((0..DIMENSIONS).map(|_| rng.random_range(-1.0f32..1.0)).collect())
}

/// Vectors around topic centres, as sentence embeddings are (uniformly random vectors have no
/// neighbourhoods at all, which no approximate index can exploit).
pub(crate) struct Topics(Vec<Vec<f32>>);

impl Topics {
    pub(crate) fn new(rng: &mut impl Rng, count: usize) -> Self {
        Self((0..count).map(|_| random_unit(rng)).collect())
    }

    fn sample(&self, rng: &mut impl Rng) -> Vec<f32> {
        let centre = &self.0[rng.random_range(0..self.0.len())];
        normalized(centre.iter().map(|c| c + rng.random_range(-0.08f32..0.08)).collect())
    }
}

/// Writes synthetic documents of 4 chunks, vectors around `topics`, in batches of 250 documents
/// until `rows` chunks are written (the tenant and the text of each chunk from the closures);
/// returns the number written.
pub(crate) async fn write_synthetic(
    store: &mut ChunkStore,
    rows: usize,
    rng: &mut impl Rng,
    topics: &Topics,
    tenant: impl Fn(usize) -> &'static str,
    text: impl Fn(usize, u32) -> String,
) -> usize {
    const CHUNKS_PER_DOCUMENT: u32 = 4;
    let mut written = 0;
    let mut doc = 0;
    while written < rows {
        let writes: Vec<DocumentWrite> = (0..250)
            .map(|_| {
                doc += 1;
                let chunks = (0..CHUNKS_PER_DOCUMENT)
                    .map(|position| DocumentChunk {
                        chunk_id: format!("doc-{doc}:1:{position}"),
                        position,
                        text: text(doc, position),
                        context: String::new(),
                        token_count: 16,
                        vector: Some(topics.sample(rng)),
                    })
                    .collect();
                DocumentWrite {
                    document: ChunkedDocument {
                        header: DocumentHeader {
                            title: Some(format!("Document {doc}")),
                            ..DocumentHeader::new(tenant(doc), format!("doc-{doc}"), DocumentOp::Upsert, 1)
                        },
                        embedding_model: Some("synthetic".to_owned()),
                        chunks,
                    },
                    event_time_ms: None,
                }
            })
            .collect();
        written += writes.len() * CHUNKS_PER_DOCUMENT as usize;
        store.apply(&writes).await.unwrap();
    }
    written
}

/// Embeds `chunks` at each batch size with the local model and prints chunks/s.
pub(crate) fn embed_rate(model: &LocalEmbedder, chunks: &[String], batches: &[usize], label: &str) {
    model.embed(&[chunks[0].as_str()]).unwrap(); // warm-up
    for &batch in batches {
        let started = Instant::now();
        for group in chunks.chunks(batch) {
            let texts: Vec<&str> = group.iter().map(String::as_str).collect();
            model.embed(&texts).unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "{label}batch {batch:>2}: {:>7.1} chunks/s ({elapsed:.2} s)",
            chunks.len() as f64 / elapsed
        );
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn latencies(store: &ChunkStore, queries: &[Vec<f32>]) -> (f64, f64, Vec<Vec<String>>) {
    let mut times = Vec::with_capacity(queries.len());
    let mut results = Vec::with_capacity(queries.len());
    for (i, query) in queries.iter().enumerate() {
        let tenant = if i % 2 == 0 { "alpha" } else { "beta" };
        let started = Instant::now();
        let hits = store.search(tenant, "", query, 10, SearchMode::Vector).await.unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
        results.push(hits.into_iter().map(|h| h.chunk_id).collect());
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99), results)
}

async fn query_latency(rows: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ChunkStore::open(dir.path().to_str().unwrap(), "chunks").await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let topics = Topics::new(&mut rng, 1_000);
    let started = Instant::now();
    let written = write_synthetic(
        &mut store,
        rows,
        &mut rng,
        &topics,
        |doc| if doc % 2 == 0 { "alpha" } else { "beta" },
        |doc, position| format!("chunk {position} of document {doc}"),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "LanceDB writes: {written} chunks in batches of 1,000 in {elapsed:.1} s: {:.0} chunks/s",
        written as f64 / elapsed
    );
    let policy = MaintenancePolicy {
        vector_index_min_rows: usize::MAX,
        vector_index: VectorIndexKind::IvfPq,
        full_text_index: false,
        keep_versions_for: Duration::ZERO,
    };
    let started = Instant::now();
    store.maintain(&policy).await.unwrap();
    println!("compaction and cleanup: {:.1} s", started.elapsed().as_secs_f64());

    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| topics.sample(&mut rng)).collect();
    let (p50, p99, exact) = latencies(&store, &queries).await;
    println!("query without vector index ({written} chunks, tenant filter, top 10): p50 {p50:.1} ms, p99 {p99:.1} ms");
    for kind in [VectorIndexKind::IvfPq, VectorIndexKind::IvfHnswSq] {
        store.drop_vector_index().await.unwrap();
        let started = Instant::now();
        store
            .maintain(&MaintenancePolicy {
                vector_index_min_rows: 0,
                vector_index: kind,
                ..policy.clone()
            })
            .await
            .unwrap();
        println!("{kind:?} index build: {:.1} s", started.elapsed().as_secs_f64());
        let (p50, p99, approximate) = latencies(&store, &queries).await;
        let found: usize = exact
            .iter()
            .zip(&approximate)
            .map(|(e, a)| a.iter().filter(|id| e.contains(id)).count())
            .sum();
        println!(
            "query with {kind:?} index: p50 {p50:.1} ms, p99 {p99:.1} ms, recall@10 {:.3}",
            found as f64 / (10 * QUERIES) as f64
        );
    }
}

/// Runs this benchmark and prints its figures.
pub async fn run() {
    ragstream::embed::tune_allocator();
    let chunks = corpus_chunks();
    let words: usize = chunks.iter().map(|c| c.split_whitespace().count()).sum();
    println!(
        "corpus: {} chunks, {} words each on average",
        chunks.len(),
        words / chunks.len()
    );
    let model = LocalEmbedder::load(&model_dir(), Pooling::Mean, true, 256).unwrap();
    embed_alone(&model, &chunks);
    drop(model);
    sentence_transformers(&chunks);
    end_to_end().await;
    let rows = std::env::var("RAGSTREAM_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    query_latency(rows).await;
}
