//! What cost control adds to a question, with Redis on loopback: the budget and rate-limit
//! check (reserve before the call, settle after), a cache lookup, and the cache's hit rate on a
//! workload of 50% new, 30% repeated and 20% paraphrased questions over the sample corpus
//! (`cache_workload.rs`).
//!
//!   cargo bench --bench figures -- cost
//!
//! Env: `RAGSTREAM_BENCH_CALLS` (default 2000), `RAGSTREAM_BENCH_REDIS` (redis://127.0.0.1:6379).

use std::time::{Duration, Instant};

use ragstream::contracts::{AnswerDraft, Task};
use ragstream::cost::limits::LimitSet;
use ragstream::cost::{Admission, CostControlConfig, CostControls, Estimate};
use ragstream::llm::{ChatMessage, Role};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<44} p50 {:>7.3} ms   p99 {:>7.3} ms   ({} calls)",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples.len()
    );
}

fn config(store: &str) -> CostControlConfig {
    let yaml = format!("store: \"{store}\"\nkey_prefix: bench-{:x}\n", rand::random::<u32>());
    let mut config: CostControlConfig = serde_yaml::from_str(&yaml).expect("config");
    config.tenant = LimitSet {
        requests_per_minute: Some(1e9),
        tokens_per_minute: Some(1e12),
        cost_usd_per_day: Some(1e9),
        cost_usd_per_month: Some(1e9),
        ..LimitSet::default()
    };
    config.user = LimitSet {
        requests_per_minute: Some(1e9),
        ..LimitSet::default()
    };
    config
}

fn draft(request: usize, question: &str) -> AnswerDraft {
    let mut draft = AnswerDraft::failed("acme", &format!("bench-{request}"), "user-1", Task::Qa, question, "");
    draft.status = None;
    draft.provenance.reason = None;
    draft
}

fn messages(question: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(
            Role::System,
            "Answer only from the numbered passages and cite them as [n].",
        ),
        ChatMessage::new(
            Role::User,
            format!("[1] acme refunds policy: acme refunds purchases within 30 days.\n\nQuestion: {question}"),
        ),
    ]
}

/// Runs this benchmark and prints its figures.
pub async fn run() {
    let calls: usize = std::env::var("RAGSTREAM_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let redis = std::env::var("RAGSTREAM_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let models = vec!["primary".to_owned()];
    let estimate = [Estimate {
        model: "primary".to_owned(),
        tokens: 900.0,
        cost_usd: 0.0004,
    }];
    for store in [redis.as_str(), "memory"] {
        let mut config = config(store);
        config.single_replica = store == "memory";
        let controls = CostControls::connect(&config).await.expect("store");
        let (mut admits, mut settles, mut lookups) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..calls {
            let mut draft = draft(i, "What is the refund policy?");
            let started = Instant::now();
            let admission = controls.admit(&draft, &estimate, &|_| {}).await.expect("admit");
            admits.push(started.elapsed());
            let Admission::Admitted { reservation, .. } = admission else {
                panic!("refused: {admission:?}");
            };
            draft.provenance.usage.prompt_tokens = 700;
            draft.provenance.usage.completion_tokens = 40;
            draft.provenance.cost_usd = 0.0002;
            let started = Instant::now();
            controls.settle(&draft, reservation).await.expect("settle");
            settles.push(started.elapsed());
            let key = controls
                .cache_key(&draft, &models, &messages(&format!("question {i}")))
                .expect("cache on");
            let started = Instant::now();
            controls.cached(&key, &draft, &models).await.expect("lookup");
            lookups.push(started.elapsed());
        }
        println!("store {store}:");
        report("  budget + rate-limit check (reserve)", admits);
        report("  settle (and remaining-budget gauge)", settles);
        report("  cache lookup (miss)", lookups);
    }

    // Hit rate of the cache on hand-written questions over the sample corpus, embedded and
    // retrieved with the real model as `retrieve` does.
    let model = ragstream::embed::shared_local_model(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/all-MiniLM-L6-v2")),
        ragstream::embed::Pooling::Mean,
        true,
        256,
    )
    .expect("fetch the models with deploy/local/models.sh");
    crate::cache_workload::run(&redis, &model).await;
}
