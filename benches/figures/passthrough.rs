//! Pass-through throughput against the local broker, side by side with kcat.
//!
//! Produces N messages of 1 KB to a 3-partition topic, then copies that topic to another one
//! twice: with ragstream (`topologies/passthrough.yaml`-style, empty stage chain) and with
//! `kcat -C | kcat -P` (deploy/local/kcat.sh). Prints messages/s for both and their ratio.
//! Needs the broker running (`deploy/local/broker.sh start`).
//!
//!     cargo bench --bench figures -- passthrough                      # 100,000 messages
//!     RAGSTREAM_BENCH_MESSAGES=20000 cargo bench --bench figures -- passthrough
//!
//! Both are timed the same way: from process start (so start-up, metadata and the consumer's
//! first fetch count for both) until the broker has acknowledged the last output: ragstream's
//! own produced counter, or the producing kcat's exit (it flushes every delivery first). Both
//! read from the start of the same input topic and copy keys and values; ragstream copies the
//! headers too (the input has none).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

const PARTITIONS: i32 = 3;
const MESSAGE_BYTES: usize = 1024;

fn brokers() -> String {
    std::env::var("RAGSTREAM_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

async fn create_topics(names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let topics: Vec<_> = names
        .iter()
        .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await.unwrap() {
        result.expect("topic created");
    }
}

async fn produce_input(topic: &str, count: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut pending = Vec::with_capacity(10_000);
    for i in 0..count {
        let mut payload = format!("{i:010} ").into_bytes();
        payload.resize(MESSAGE_BYTES, b'x');
        let key = format!("k{i}");
        let producer = producer.clone();
        let topic = topic.to_owned();
        pending.push(tokio::spawn(async move {
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            producer
                .send(record, Timeout::After(Duration::from_secs(60)))
                .await
                .map_err(|(e, _)| e)
                .expect("input delivered");
        }));
        if pending.len() == 10_000 {
            for handle in pending.drain(..) {
                handle.await.unwrap();
            }
        }
    }
    for handle in pending {
        handle.await.unwrap();
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn run_ragstream(input: &str, output: &str, dlq: &str, count: usize) -> Duration {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let topology = format!(
        "version: 1\nkafka:\n  bootstrap.servers: {brokers}\ntelemetry:\n  listen: 127.0.0.1:{port}\n\
         pipelines:\n  - name: bench\n    source: {{ topic: {input}, group: bench-{s} }}\n    max_in_flight: 2000\n\
         \x20   stages: []\n    sinks: [{{ name: out, topic: {output} }}]\n    dead_letter: {{ topic: {dlq} }}\n",
        brokers = brokers(),
        s = suffix(),
    );
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(topology.as_bytes()).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ragstream"))
        .args(["run", "--topology"])
        .arg(file.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // Polled every 5 ms: the poll's granularity is part of ragstream's figure, not kcat's.
    loop {
        if let Ok(response) = reqwest::get(format!("{base}/metrics")).await {
            let text = response.text().await.unwrap_or_default();
            if metric(&text, "ragstream_messages_produced_total") >= count as f64 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    elapsed
}

fn run_kcat(input: &str, output: &str, count: usize) -> Duration {
    let kcat = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/kcat.sh");
    let kcat = kcat.display();
    let b = brokers();
    // `-c N` rather than `-e`: tansu under-reports high watermarks, so "end of partition" is unreliable.
    // Keys and values, a tab between them (neither holds one), as ragstream copies both.
    let pipeline = format!(
        "{kcat} -C -b {b} -t {input} -o beginning -c {count} -q -f '%k\\t%s\\n' | {kcat} -P -b {b} -t {output} -K '\\t' -X linger.ms=5"
    );
    // Warm the cached librdkafka build so its first-run compile is not timed.
    Command::new("bash")
        .arg("-c")
        .arg(format!("{kcat} -V >/dev/null"))
        .status()
        .unwrap();
    let started = Instant::now();
    let status = Command::new("bash").arg("-c").arg(&pipeline).status().unwrap();
    assert!(status.success(), "kcat pipeline failed");
    started.elapsed()
}

fn report(name: &str, count: usize, elapsed: Duration) -> f64 {
    let rate = count as f64 / elapsed.as_secs_f64();
    let megabytes = rate * MESSAGE_BYTES as f64 / 1e6;
    println!(
        "{name:<10} {count} messages in {:>7.2} s  {rate:>9.0} msg/s  {megabytes:>6.1} MB/s",
        elapsed.as_secs_f64()
    );
    rate
}

/// Runs this benchmark and prints its figures.
pub async fn run() {
    let count: usize = std::env::var("RAGSTREAM_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let s = suffix();
    let (input, out_ragstream, out_kcat, dlq) = (
        format!("bench-in-{s}"),
        format!("bench-out-ragstream-{s}"),
        format!("bench-out-kcat-{s}"),
        format!("bench-dlq-{s}"),
    );
    create_topics(&[&input, &out_ragstream, &out_kcat, &dlq]).await;
    println!("producing {count} messages of {MESSAGE_BYTES} bytes to {input} ({PARTITIONS} partitions)");
    produce_input(&input, count).await;

    let ragstream = report(
        "ragstream",
        count,
        run_ragstream(&input, &out_ragstream, &dlq, count).await,
    );
    let kcat = report("kcat", count, run_kcat(&input, &out_kcat, count));
    println!("ratio ragstream/kcat: {:.2}", ragstream / kcat);
}
