//! What cost control adds to a question, with Redis on loopback: the budget and rate-limit
//! check (reserve before the call, settle after), a cache lookup, and the exact cache's hit
//! rate on a workload of 50% new, 30% repeated and 20% paraphrased questions.
//!
//!   cargo bench --bench figures -- cost
//!
//! Env: `RAGSTREAM_BENCH_CALLS` (default 2000), `RAGSTREAM_BENCH_REDIS` (redis://127.0.0.1:6379).

use std::time::{Duration, Instant};

use ragstream::contracts::{AnswerDraft, AnswerStatus, Task};
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
    draft.reason = None;
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
            let admission = controls.admit(&draft, &estimate).await.expect("admit");
            admits.push(started.elapsed());
            let Admission::Admitted { reservation, .. } = admission else {
                panic!("refused: {admission:?}");
            };
            draft.usage.prompt_tokens = 700;
            draft.usage.completion_tokens = 40;
            draft.cost_usd = 0.0002;
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

    // Hit rate of the cache: half the questions are new, 30% repeat one asked before word for
    // word (up to case and spacing), 20% ask one again in other words. Each topic retrieves its
    // own passage; questions are embedded with the real model, as `retrieve` does, so the
    // semantic cache (threshold 0.9) can match the paraphrases.
    let model = ragstream::embed::shared_local_model(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/all-MiniLM-L6-v2")),
        ragstream::embed::Pooling::Mean,
        true,
        256,
    )
    .expect("fetch the models with deploy/local/models.sh");
    for threshold in [0.9f32, 0.8] {
        let mut semantic = config(&redis);
        semantic.semantic_threshold = Some(threshold);
        let controls = CostControls::connect(&semantic).await.expect("store");
        let (mut exact_hits, mut semantic_hits) = (0usize, 0usize);
        let paraphrases = [
            ("What is the refund policy for {}?", "How do refunds work for {}?"),
            ("How long does shipping take for {}?", "When will my {} order arrive?"),
            ("What warranty covers {}?", "Is {} under warranty, and for how long?"),
        ];
        let mut asked: Vec<String> = Vec::new();
        let (mut hits, mut lookups) = (0usize, 0usize);
        for i in 0..1000usize {
            let (plain, _) = paraphrases[i % paraphrases.len()];
            let product = format!("product {}", i / 3);
            let question = match i % 10 {
                0..=4 => plain.replace("{}", &product),
                5..=7 if !asked.is_empty() => asked[(i * 7919) % asked.len()].to_uppercase().replace(' ', "  "),
                _ if !asked.is_empty() => {
                    let earlier = &asked[(i * 104_729) % asked.len()];
                    let (_, other_for) = paraphrases
                        .iter()
                        .find(|(p, _)| earlier.starts_with(&p[..10]))
                        .unwrap_or(&paraphrases[0]);
                    let subject = earlier.split("product ").nth(1).unwrap_or("0").trim_end_matches('?');
                    other_for.replace("{}", &format!("product {subject}"))
                }
                _ => plain.replace("{}", &product),
            };
            let mut draft = draft(i, &question);
            let lower = question.to_lowercase();
            let topic = if lower.contains("refund") {
                "refunds"
            } else if lower.contains("ship") || lower.contains("arrive") {
                "shipping"
            } else {
                "warranty"
            };
            let product = lower
                .split("product")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or("0")
                .trim_end_matches(['?', ','])
                .to_owned();
            draft.passages = vec![ragstream::contracts::RetrievedPassage {
                chunk_id: format!("{topic}-{product}:1:0"),
                doc_id: format!("{topic}-{product}"),
                title: None,
                text: format!("acme {topic} policy for product {product}"),
                score: 0.8,
            }];
            draft.question_vector = model.embed(&[question.as_str()]).expect("embedding").remove(0);
            let key = controls
                .cache_key(&draft, &models, &messages(&question))
                .expect("cache on");
            lookups += 1;
            match controls.cached(&key, &draft, &models).await.expect("lookup") {
                Some(hit) => {
                    hits += 1;
                    if hit.route.as_deref().is_some_and(|r| r.starts_with("semantic")) {
                        semantic_hits += 1;
                    } else {
                        exact_hits += 1;
                    }
                }
                None => {
                    draft.answer = Some("Within 30 days [1].".to_owned());
                    draft.status = Some(AnswerStatus::Ok);
                    draft.model = Some("primary".to_owned());
                    controls.cache(&key, &draft, &models).await.expect("store");
                    if i % 10 < 5 {
                        asked.push(question);
                    }
                }
            }
        }
        println!(
            "cache hit rate: {:.1}% of {lookups} questions (50% new, 30% repeated, 20% paraphrased): \
             exact {:.1}%, semantic (threshold {threshold}) {:.1}%",
            100.0 * hits as f64 / lookups as f64,
            100.0 * exact_hits as f64 / lookups as f64,
            100.0 * semantic_hits as f64 / lookups as f64
        );
    }
}
