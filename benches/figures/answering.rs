//! Answering benchmark: printed figures, nothing asserted.
//!
//!     deploy/local/broker.sh start && cargo bench --bench figures -- answering
//!     RAGSTREAM_BENCH_ROWS=20000 cargo bench --bench figures -- answering    # a smaller index
//!
//! The questions pipeline as the default topology runs it (decode → mask_pii → retrieve with
//! the real embedding model → generate → restore_pii → emit_answer) against the real broker, a
//! LanceDB table of N chunks (default 100,000, with an IVF-HNSW-SQ index; synthetic vectors
//! around topic centres as in the index benchmark) and the scripted OpenAI-compatible server
//! of the integration tests, which answers after a fixed delay:
//!
//! 1. Overhead per question: questions one at a time, server delay 200 ms; end-to-end latency
//!    (produced → answer consumed) minus the 200 ms: p50/p95/p99, and where it goes: each
//!    stage's time from the `question_answered` audit events, and the rest (the broker legs:
//!    question produced → consumed by ragstream, answer produced → consumed here). The client
//!    keeps one producer and one consumer for the whole run, so neither one's start-up counts.
//! 2. Throughput: 640 questions at once, server delay 1 s, `max_in_flight: 64`: questions/s (a
//!    pipeline that never blocks on the model gets close to 64/s).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::scripted_llm::{echo_placeholders, Behaviour, ScriptedLlm};
use crate::common::{producer, reader_waiting, send_all, unique, Outgoing, Ragstream, TestTopology};
use ragstream::store::{ChunkStore, MaintenancePolicy, VectorIndexKind};
use rand::SeedableRng;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;

const MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/all-MiniLM-L6-v2");
const PARTITIONS: i32 = 3;
const TENANT: &str = "bench";

/// `rows` chunks of one tenant around 1,000 topic centres, with the vector index the index
/// stage would build at that size.
async fn build_index(dir: &Path, rows: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let topics = crate::index::Topics::new(&mut rng, 1_000);
    let mut store = ChunkStore::open(dir.to_str().unwrap(), "chunks").await.unwrap();
    let started = Instant::now();
    let written = crate::index::write_synthetic(
        &mut store,
        rows,
        &mut rng,
        &topics,
        |_| TENANT,
        |doc, position| format!("Section {position} of policy document {doc}: opening hours, refunds and support."),
    )
    .await;
    store
        .maintain(&MaintenancePolicy {
            vector_index_min_rows: 0,
            vector_index: VectorIndexKind::IvfHnswSq,
            full_text_index: false,
            keep_versions_for: Duration::ZERO,
        })
        .await
        .unwrap();
    println!(
        "index: {written} chunks written and indexed (IVF-HNSW-SQ) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A running questions pipeline, the client's producer, the arrival time of every answer and
/// the stage timings of every audit event.
struct Pipeline {
    topology: TestTopology,
    producer: FutureProducer,
    answers: mpsc::UnboundedReceiver<(String, Instant)>,
    stage_times: mpsc::UnboundedReceiver<(String, BTreeMap<String, f64>)>,
    _process: Ragstream,
}

impl Pipeline {
    async fn send(&self, messages: Vec<Outgoing>) {
        send_all(&self.producer, &self.topology.input, messages).await;
    }
}

/// A consumer of every partition of `topic` from its start, which asks often, so the figures
/// show the pipeline's latency, not this consumer's long poll.
fn follow(topic: &str) -> StreamConsumer {
    let consumer = reader_waiting(&unique("bench-reader"), &fetch_wait_ms());
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

async fn start(prefix: &str, index: &Path, llm: &ScriptedLlm, max_in_flight: u32) -> Pipeline {
    let mut topology = TestTopology::new(prefix);
    topology.max_in_flight = max_in_flight;
    // As the default topology's questions pipeline sets it (tansu holds a fetch for its whole
    // wait, even when data arrives sooner).
    topology.source_kafka_extra = vec![("fetch.wait.max.ms".to_owned(), fetch_wait_ms())];
    let audit = unique(&format!("{prefix}-audit"));
    topology.extra_sinks = vec![("audit".to_owned(), audit.clone())];
    topology.stages = format!(
        "[{{ type: decode_question }}, {{ type: mask_pii }}, \
          {{ type: retrieve, uri: \"{uri}\", embedding: {{ model_dir: \"{MODEL_DIR}\" }}, top_k: 5, min_score: 0.0 }}, \
          {{ type: generate, models: [{{ name: scripted, provider: openai, base_url: \"{url}\", model: scripted, timeout_ms: 10000 }}] }}, \
          {{ type: restore_pii }}, {{ type: emit_answer, audit_sink: audit }}]",
        uri = index.display(),
        url = llm.url,
    );
    topology.create_topics(PARTITIONS).await;
    let mut process = Ragstream::start(&topology);
    process.wait_ready(Duration::from_secs(120)).await;

    // The answers consumer stands for a waiting service.
    let consumer = follow(&topology.output);
    let (sender, answers) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(message) = consumer.recv().await {
            let arrived = Instant::now();
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            if sender.send((key, arrived)).is_err() {
                return;
            }
        }
    });
    let audit_reader = follow(&audit);
    let (timings, stage_times) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(message) = audit_reader.recv().await {
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(message.payload().unwrap_or_default()) else {
                continue;
            };
            if event["event"] != "question_answered" {
                continue;
            }
            let request = event["request_id"].as_str().unwrap_or_default().to_owned();
            let durations = serde_json::from_value(event["durations_ms"].clone()).unwrap_or_default();
            if timings.send((request, durations)).is_err() {
                return;
            }
        }
    });
    let producer = producer();
    Pipeline {
        topology,
        producer,
        answers,
        stage_times,
        _process: process,
    }
}

/// `fetch.wait.max.ms` of ragstream's source consumer and of the client's readers:
/// `RAGSTREAM_BENCH_FETCH_WAIT_MS`, else what `topologies/default.yaml` sets for its questions
/// pipeline (read from the file, so the benchmark follows the shipped setting).
fn fetch_wait_ms() -> String {
    if let Ok(wait) = std::env::var("RAGSTREAM_BENCH_FETCH_WAIT_MS") {
        return wait;
    }
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/default.yaml"))
        .expect("topologies/default.yaml");
    let topology: serde_yaml::Value = serde_yaml::from_str(&text).expect("the default topology is YAML");
    let questions = topology["pipelines"]
        .as_sequence()
        .and_then(|pipelines| pipelines.iter().find(|pipeline| pipeline["name"] == "questions"))
        .expect("a questions pipeline");
    let wait = &questions["source"]["kafka"]["fetch.wait.max.ms"];
    wait.as_u64()
        .map(|ms| ms.to_string())
        .expect("fetch.wait.max.ms set for questions")
}

fn question(request_id: &str, i: usize) -> Outgoing {
    let payload = serde_json::json!({
        "schema_version": 1, "request_id": request_id, "tenant": TENANT, "user": format!("user-{}", i % 50),
        "task": "qa",
        "question": format!("What are the opening hours for refunds at site {i}? Call me at +44 20 7946 0{:03} or mail jo{i}@example.com.", i % 1000),
    });
    Outgoing {
        partition: None,
        key: Some(request_id.as_bytes().to_vec()),
        payload: payload.to_string().into_bytes(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn overhead(index: &Path) {
    const DELAY: Duration = Duration::from_millis(200);
    const QUESTIONS: usize = 200;
    let llm = ScriptedLlm::start(Arc::new(|_, _| Behaviour::AnswerAfter(DELAY)), echo_placeholders()).await;
    let mut pipeline = start("bench-overhead", index, &llm, 64).await;
    // Warm-up: the first question pays for connections and lazy initialisation.
    for i in 0..5 {
        let id = format!("warm-{i}");
        pipeline.send(vec![question(&id, i)]).await;
        while pipeline.answers.recv().await.is_some_and(|(key, _)| key != id) {}
    }
    while pipeline.stage_times.try_recv().is_ok() {}
    let mut overheads = Vec::with_capacity(QUESTIONS);
    let mut breakdown: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for i in 0..QUESTIONS {
        let id = format!("q-{i}");
        let sent = Instant::now();
        pipeline.send(vec![question(&id, i)]).await;
        let overhead = loop {
            let (key, arrived) = pipeline.answers.recv().await.expect("answers keep coming");
            if key == id {
                break (arrived - sent).saturating_sub(DELAY).as_secs_f64() * 1e3;
            }
        };
        overheads.push(overhead);
        let durations = loop {
            let (key, durations) = pipeline.stage_times.recv().await.expect("audit events keep coming");
            if key == id {
                break durations;
            }
        };
        // `total` runs from the message's receipt to its outputs' hand-over; the rest of the
        // round trip is the broker legs (and the client's own reading).
        let inside = durations.get("total").copied().unwrap_or_default();
        breakdown
            .entry("(broker legs and client)".to_owned())
            .or_default()
            .push(overhead + DELAY.as_secs_f64() * 1e3 - inside);
        for (stage, ms) in durations {
            breakdown.entry(stage).or_default().push(ms);
        }
    }
    overheads.sort_by(f64::total_cmp);
    println!(
        "overhead per question ({QUESTIONS} one at a time, server 200 ms): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        percentile(&overheads, 0.5),
        percentile(&overheads, 0.95),
        percentile(&overheads, 0.99)
    );
    println!("  where it goes (p50 / p99 ms; generate includes the server's 200 ms):");
    for (part, mut times) in breakdown {
        times.sort_by(f64::total_cmp);
        println!(
            "    {part:<26} {:>8.1} {:>8.1}",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}

async fn throughput(index: &Path) {
    const QUESTIONS: usize = 640;
    let llm = ScriptedLlm::start(
        Arc::new(|_, _| Behaviour::AnswerAfter(Duration::from_secs(1))),
        echo_placeholders(),
    )
    .await;
    let mut pipeline = start("bench-throughput", index, &llm, 64).await;
    let started = Instant::now();
    let messages = (0..QUESTIONS).map(|i| question(&format!("t-{i}"), i)).collect();
    pipeline.send(messages).await;
    let mut seen: HashMap<String, Instant> = HashMap::new();
    while seen.len() < QUESTIONS {
        let (key, arrived) = pipeline.answers.recv().await.expect("answers keep coming");
        seen.insert(key, arrived);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = llm.requests().len();
    println!(
        "throughput ({QUESTIONS} questions, server 1 s per call, 64 in flight): {:.1} questions/s ({elapsed:.1} s; {calls} model calls)",
        QUESTIONS as f64 / elapsed
    );
}

/// Runs this benchmark and prints its figures.
pub async fn run() {
    let rows = std::env::var("RAGSTREAM_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let index = tempfile::tempdir().unwrap();
    build_index(index.path(), rows).await;
    overhead(index.path()).await;
    throughput(index.path()).await;
}
