//! Cost control through the real broker and Redis (`RAGSTREAM_REDIS`, default 127.0.0.1:6379), with two
//! processor replicas in one consumer group where sharing matters: budgets and rate limits hold
//! across replicas, a replayed question is not paid twice, the cache answers repeats, and a
//! provider key never shows.

use crate::answering::{question, start, write_facts, Setup, TENANTS};
use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::chaos::ChaosRow;
use common::scripted_llm::{always_answer, Behaviour, Responder, ScriptedLlm};
use common::*;
use ragstream::contracts::{Answer, AnswerStatus};

/// The shared store: `RAGSTREAM_REDIS`, default loopback (`deploy/local/redis.sh start`).
fn redis() -> String {
    std::env::var("RAGSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}
/// 40 characters: the scripted server reports 10 completion tokens for it.
const REPLY: &str = "Refunds are accepted within 30 days [1].";

fn constant_reply() -> Responder {
    Arc::new(|_| REPLY.to_owned())
}

/// Every model call costs exactly $1: 10 completion tokens at $100,000 per million, prompts free.
fn dollar_per_call(url: &str) -> String {
    format!(
        "[{{ name: primary, provider: openai, base_url: \"{url}\", model: scripted, timeout_ms: 5000, \
           price: {{ input_per_million: 0, output_per_million: 100000 }} }}]"
    )
}

fn cost_setup(url: &str, cost_control: &str) -> Setup {
    Setup {
        models: dollar_per_call(url),
        generate_extra: format!(
            ", max_output_tokens: 16, cost_control: {{ store: \"{}\", {cost_control} }}",
            redis()
        ),
        ..Setup::openai(url)
    }
}

fn questions(prefix: &str, count: usize, tenant: &str) -> (Vec<Outgoing>, HashSet<String>) {
    let mut messages = Vec::new();
    let mut ids = HashSet::new();
    for i in 0..count {
        let request_id = format!("{prefix}-{i}");
        messages.push(question(
            &request_id,
            tenant,
            &format!("What is the refund policy? (case {i})"),
            "qa",
            serde_json::json!({}),
        ));
        ids.insert(request_id);
    }
    (messages, ids)
}

/// Every answer on `topic` (duplicates included), once at least `count` arrived.
async fn all_answers(topic: &str, count: usize, timeout: Duration) -> Vec<Answer> {
    read_topic(topic, count, timeout)
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("an answer"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_holds_across_two_replicas() {
    let llm = ScriptedLlm::start(always_answer(), constant_reply()).await;
    let prefix = unique("budget");
    let budget = 100.0;
    // The cache is off: every question is a call (each names its case, so a retried call can be
    // told from a second question).
    let setup = cost_setup(
        &llm.url,
        &format!("key_prefix: {prefix}, cache_ttl_s: 0, tenant: {{ cost_usd_per_day: {budget} }}"),
    );
    let running = start("budget", setup).await;
    let mut second = Ragstream::start(&running.topology.replica());
    second.wait_ready(Duration::from_secs(60)).await;

    let count = 500;
    let (messages, ids) = questions("budget", count, "acme");
    produce_all(&running.topology.input, messages).await;
    let answers = crate::answering::answers_for(&running.topology.output, &ids, Duration::from_secs(300)).await;

    let ok: Vec<&Answer> = answers.values().filter(|a| a.status == AnswerStatus::Ok).collect();
    let exceeded: Vec<&Answer> = answers
        .values()
        .filter(|a| a.status == AnswerStatus::BudgetExceeded)
        .collect();
    assert_eq!(
        ok.len() + exceeded.len(),
        count,
        "every question is answered or refused"
    );
    let spent: f64 = answers.values().map(|a| a.provenance.cost_usd).sum();
    println!(
        "budget: ${budget}, {} answered for ${spent:.2}, {} refused budget_exceeded",
        ok.len(),
        exceeded.len()
    );
    // One request's largest cost: its reservation (16 output tokens at the price).
    let largest = 16.0 * 100_000.0 / 1e6;
    assert!(spent <= budget + largest, "spent ${spent} of a ${budget} budget");
    assert!(spent >= budget / 2.0, "only ${spent} of ${budget} was used");
    // Which questions called the model, against every answer on the topic (duplicates too): a
    // rebalance on a loaded machine can hand a question one replica is still answering to the
    // other, which decides it again (at-least-once), so a question may have two answers.
    let mut all = TopicReader::new(&running.topology.output);
    all.read_to_end(Duration::from_secs(30)).await;
    let mut statuses: HashMap<String, Vec<AnswerStatus>> = HashMap::new();
    for received in &all.received {
        let answer: Answer = serde_json::from_slice(&received.payload).unwrap();
        statuses.entry(answer.request_id).or_default().push(answer.status);
    }
    let case = regex::Regex::new(r"\(case (\d+)\)").unwrap();
    let called: HashSet<String> = llm
        .first_calls()
        .iter()
        .map(|call| format!("budget-{}", &case.captures(&call.body).expect("a case number")[1]))
        .collect();
    let answered: HashSet<String> = statuses
        .iter()
        .filter(|(_, s)| s.contains(&AnswerStatus::Ok))
        .map(|(id, _)| id.clone())
        .collect();
    let refused_only: HashSet<String> = statuses
        .iter()
        .filter(|(_, s)| s.iter().all(|s| *s == AnswerStatus::BudgetExceeded))
        .map(|(id, _)| id.clone())
        .collect();
    let decided_twice = statuses.values().filter(|s| s.len() > 1).count();
    assert!(answered.is_subset(&called), "an ok answer without a model call");
    assert!(called.is_disjoint(&refused_only), "a refused question calls no model");
    assert_eq!(
        called.len(),
        answered.len(),
        "one model call per answered question ({decided_twice} decided twice)"
    );
    assert!(exceeded
        .iter()
        .all(|a| a.provenance.cost_usd == 0.0 && a.provenance.usage.prompt_tokens == 0));
    let reason = exceeded[0].provenance.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("per-day budget of $100.00 for tenant acme") && reason.contains("resets at"),
        "{reason}"
    );
    // Both replicas answered, and between them admitted every answered question (a question
    // redelivered by a rebalance may be admitted twice): the spend above stayed within the one
    // budget, so it was shared, not kept per process. Which replica admits how many depends on
    // when the second one's partitions arrive, so only the sum is fixed.
    let mut admitted = 0.0;
    for process in [&running.process, &second] {
        let text = process.metrics().await.unwrap();
        assert!(metric(&text, "ragstream_answers_total", &[]) > 0.0);
        admitted += metric(&text, "ragstream_budget_decisions_total", &[("outcome", "admitted")]);
    }
    assert!(
        admitted >= ok.len() as f64,
        "{admitted} admitted, {} answered",
        ok.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_holds_across_two_replicas() {
    let llm = ScriptedLlm::start(always_answer(), constant_reply()).await;
    let prefix = unique("rate");
    let per_minute = 600.0;
    let setup = cost_setup(
        &llm.url,
        &format!(
            "key_prefix: {prefix}, cache_ttl_s: 0, tenant: {{ requests_per_minute: {per_minute} }}, on_exceeded: delay, \
             max_delay_ms: 120000, max_waiting: 1000"
        ),
    );
    let running = start("rate", setup).await;
    let mut second = Ragstream::start(&running.topology.replica());
    second.wait_ready(Duration::from_secs(60)).await;

    let count = 200;
    let (messages, ids) = questions("rate", count, "globex");
    produce_all(&running.topology.input, messages).await;
    let answers = crate::answering::answers_for(&running.topology.output, &ids, Duration::from_secs(180)).await;
    assert!(answers.values().all(|a| a.status == AnswerStatus::Ok));

    let mut times: Vec<_> = llm.first_calls().iter().map(|r| r.at).collect();
    times.sort();
    assert_eq!(times.len(), count);
    let span = times[count - 1].duration_since(times[0]).as_secs_f64();
    let achieved = (count - 1) as f64 / span;
    let configured = per_minute / 60.0;
    println!("rate limit: configured {configured}/s, achieved {achieved:.2}/s over {span:.1} s");
    assert!(
        (achieved - configured).abs() <= configured * 0.10,
        "achieved {achieved:.2}/s against {configured}/s"
    );
    for process in [&running.process, &second] {
        let text = process.metrics().await.unwrap();
        assert!(metric(&text, "ragstream_budget_decisions_total", &[("outcome", "delayed")]) > 0.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_before_committing_does_not_pay_twice() {
    let llm = ScriptedLlm::start(always_answer(), constant_reply()).await;
    let prefix = unique("replay");
    let setup = cost_setup(&llm.url, &format!("key_prefix: {prefix}, cache_ttl_s: 0"));
    killed_before_committing_pays_once(&llm, setup).await;
}

/// Replay records are kept without cost control too: only the `replay` block names the store.
#[tokio::test(flavor = "multi_thread")]
async fn without_cost_control_a_replica_killed_before_committing_does_not_pay_twice() {
    let llm = ScriptedLlm::start(always_answer(), constant_reply()).await;
    let prefix = unique("replay-only");
    let setup = Setup {
        models: dollar_per_call(&llm.url),
        generate_extra: format!(
            ", max_output_tokens: 16, replay: {{ store: \"{}\", key_prefix: {prefix} }}",
            redis()
        ),
        ..Setup::openai(&llm.url)
    };
    killed_before_committing_pays_once(&llm, setup).await;
}

/// 20 questions answered, the replica killed before it commits, restarted: every question
/// comes back and is answered again, identically, without a model call.
async fn killed_before_committing_pays_once(llm: &ScriptedLlm, setup: Setup) {
    let setup = Setup {
        // Nothing is committed before the kill: every question comes back.
        commit_interval_ms: Some(60_000),
        ..setup
    };
    let mut running = start("replay", setup).await;
    let count = 20;
    let mut messages = Vec::new();
    for i in 0..count {
        let request_id = format!("replay-{i}");
        messages.push(question(
            &request_id,
            TENANTS[i % TENANTS.len()],
            &format!("What is the refund policy? (case {i})"),
            "qa",
            serde_json::json!({}),
        ));
    }
    produce_all(&running.topology.input, messages).await;
    let first = all_answers(&running.topology.output, count, Duration::from_secs(120)).await;
    assert_eq!(first.len(), count);
    assert_eq!(llm.first_calls().len(), count);
    let calls_before_the_kill = llm.requests().len();

    running.process.kill9();
    running.process = Ragstream::start(&running.topology);
    running.process.wait_ready(Duration::from_secs(60)).await;
    let all = all_answers(&running.topology.output, 2 * count, Duration::from_secs(120)).await;
    assert_eq!(all.len(), 2 * count, "every question answered again after the restart");
    assert_eq!(
        llm.requests().len(),
        calls_before_the_kill,
        "no model call for a replayed question"
    );

    let mut by_request: HashMap<&str, Vec<&Answer>> = HashMap::new();
    for answer in &all {
        by_request.entry(&answer.request_id).or_default().push(answer);
    }
    for (request_id, pair) in by_request {
        assert_eq!(pair.len(), 2, "{request_id}");
        let (a, b) = (pair[0], pair[1]);
        assert_eq!(
            (
                a.status,
                &a.answer,
                &a.citations,
                &a.provenance.model,
                a.provenance.usage,
                a.provenance.cost_usd
            ),
            (
                b.status,
                &b.answer,
                &b.citations,
                &b.provenance.model,
                b.provenance.usage,
                b.provenance.cost_usd
            ),
            "{request_id}: the replayed answer differs"
        );
    }
    let text = running.process.metrics().await.unwrap();
    assert_eq!(metric(&text, "ragstream_replays_total", &[]), count as f64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_question_is_answered_from_cache_until_its_document_changes() {
    let llm = ScriptedLlm::start(always_answer(), constant_reply()).await;
    let prefix = unique("cache");
    let setup = cost_setup(&llm.url, &format!("key_prefix: {prefix}, semantic_threshold: 0.8"));
    let running = start("cache", setup).await;
    let ask_with = |request_id: &str, text: &str| question(request_id, "initech", text, "qa", serde_json::json!({}));
    let ask = |request_id: &str| ask_with(request_id, "What is the refund policy?");
    let answer_of = |request_id: &'static str| {
        let output = running.topology.output.clone();
        async move {
            let ids = HashSet::from([request_id.to_owned()]);
            let mut reader = TopicReader::new(&output);
            reader
                .read_until(
                    |received| received.iter().any(|m| m.key.as_deref() == Some(request_id.as_bytes())),
                    Duration::from_secs(60),
                )
                .await;
            let answer: Answer = reader
                .received
                .iter()
                .find(|m| m.key.as_deref() == Some(request_id.as_bytes()))
                .map(|m| serde_json::from_slice(&m.payload).unwrap())
                .unwrap_or_else(|| panic!("no answer for {ids:?}"));
            answer
        }
    };

    produce_all(&running.topology.input, vec![ask("cache-1")]).await;
    let first = answer_of("cache-1").await;
    assert_eq!((first.status, first.provenance.cached), (AnswerStatus::Ok, false));
    assert_eq!(llm.requests().len(), 1);

    produce_all(&running.topology.input, vec![ask("cache-2")]).await;
    let repeat = answer_of("cache-2").await;
    assert_eq!((repeat.status, repeat.provenance.cached), (AnswerStatus::Ok, true));
    assert_eq!(repeat.answer, first.answer);
    assert_eq!(
        (repeat.provenance.cost_usd, repeat.provenance.usage.prompt_tokens),
        (0.0, 0)
    );
    assert_eq!(llm.requests().len(), 1, "the repeat called no model");
    assert_eq!(repeat.provenance.route.as_deref(), Some("cache hit"));

    // In other words: the semantic cache (same passages, a similar question).
    produce_all(
        &running.topology.input,
        vec![ask_with("cache-2b", "Tell me about your refund policy, please.")],
    )
    .await;
    let paraphrase = answer_of("cache-2b").await;
    assert!(paraphrase.provenance.cached, "{paraphrase:?}");
    assert!(
        paraphrase
            .provenance
            .route
            .as_deref()
            .unwrap_or_default()
            .starts_with("semantic cache hit"),
        "{paraphrase:?}"
    );
    assert_eq!(llm.requests().len(), 1, "the paraphrase called no model");

    // The cited document changes: the same question goes to the model again.
    let cited = &first.citations[0].doc_id;
    assert_eq!(cited, "initech-refunds");
    write_facts(
        &running.index_dir,
        "initech",
        &[("refunds", "refunds purchases within 60 days, also when opened")],
        2,
    )
    .await;
    produce_all(&running.topology.input, vec![ask("cache-3")]).await;
    let after = answer_of("cache-3").await;
    assert_eq!((after.status, after.provenance.cached), (AnswerStatus::Ok, false));
    assert_eq!(
        llm.requests().len(),
        2,
        "the changed document invalidated the cached answer"
    );
    let text = running.process.metrics().await.unwrap();
    assert_eq!(
        metric(&text, "ragstream_cache_lookups_total", &[("outcome", "hit")]),
        2.0
    );
    assert_eq!(
        metric(&text, "ragstream_cache_lookups_total", &[("outcome", "miss")]),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_key_never_shows_in_logs_topics_metrics_or_errors() {
    let key = format!("sk-ragstream-{:016x}", rand::random::<u64>());
    let variable = format!("RAGSTREAM_TEST_KEY_{:x}", rand::random::<u32>());
    // Every third call is refused as unauthorized, so the error paths are exercised too.
    let script: common::scripted_llm::Script = Arc::new(|_, call| {
        if call % 3 == 2 {
            Behaviour::Status(401)
        } else {
            Behaviour::Answer
        }
    });
    let llm = ScriptedLlm::start(script, constant_reply()).await;
    let setup = Setup {
        models: format!(
            "[{{ name: primary, provider: openai, base_url: \"{}\", model: scripted, timeout_ms: 5000, api_key_env: {variable} }}]",
            llm.url
        ),
        ..Setup::openai(&llm.url)
    };
    let running = crate::answering::start_with_env(
        "secrets",
        setup,
        &[(variable.as_str(), key.as_str()), ("RUST_LOG", "debug")],
    )
    .await;
    let (messages, ids) = questions("secret", 12, "hooli");
    produce_all(&running.topology.input, messages).await;
    let answers = crate::answering::answers_for(&running.topology.output, &ids, Duration::from_secs(120)).await;
    assert_eq!(answers.len(), 12);
    // The key was in use: the provider saw it, and only the provider.
    let authorizations: HashSet<Option<String>> = llm.requests().into_iter().map(|r| r.authorization).collect();
    assert_eq!(authorizations, HashSet::from([Some(format!("Bearer {key}"))]));

    let mut haystacks = vec![("log", running.process.log_text())];
    haystacks.push(("metrics", running.process.metrics().await.unwrap()));
    for (name, topic) in [
        ("answers", &running.topology.output),
        ("audit", &running.audit_topic),
        ("dead letters", &running.topology.dead_letter),
    ] {
        let text: String = read_topic(topic, 0, Duration::from_secs(20))
            .await
            .iter()
            .map(|m| format!("{}{:?}", String::from_utf8_lossy(&m.payload), m.headers))
            .collect();
        haystacks.push((name, text));
    }
    // An error about the key's source, from `ragstream validate`.
    let validate = std::process::Command::new(env!("CARGO_BIN_EXE_ragstream"))
        .args(["validate", "/nonexistent/topology.yaml"])
        .env(&variable, &key)
        .output()
        .unwrap();
    haystacks.push((
        "validate output",
        format!(
            "{}{}",
            String::from_utf8_lossy(&validate.stdout),
            String::from_utf8_lossy(&validate.stderr)
        ),
    ));
    assert!(haystacks[0].1.contains("DEBUG"), "the log was written at debug level");
    for (name, text) in haystacks {
        assert!(!text.contains(&key), "the key shows in the {name}");
        assert!(
            !text.contains(&key[key.len() - 8..]),
            "the key's end shows in the {name}"
        );
    }
}

/// The answer to `request_id` on `topic`, once it arrives.
async fn answer_on(topic: &str, request_id: &str) -> Answer {
    let mut reader = TopicReader::new(topic);
    reader
        .read_until(
            |received| received.iter().any(|m| m.key.as_deref() == Some(request_id.as_bytes())),
            Duration::from_secs(60),
        )
        .await;
    reader
        .received
        .iter()
        .find(|m| m.key.as_deref() == Some(request_id.as_bytes()))
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .unwrap_or_else(|| panic!("no answer for {request_id}"))
}

/// Two users with different personal data ask paraphrased questions over a document that
/// names people. A cached answer holds placeholders numbered by the request that produced it,
/// so it is served again only for the same masked prompt (numbered the same way), never to a
/// similar question: every value restored in every answer is the one its placeholder stood for.
#[tokio::test(flavor = "multi_thread")]
async fn a_cached_answer_is_never_restored_with_another_requests_values() {
    let llm = ScriptedLlm::start(always_answer(), common::scripted_llm::echo_placeholders()).await;
    let prefix = unique("pii-cache");
    // A low threshold: the paraphrase is similar enough to be served, were it allowed.
    let setup = cost_setup(&llm.url, &format!("key_prefix: {prefix}, semantic_threshold: 0.3"));
    let running = start("piicache", setup).await;
    write_facts(
        &running.index_dir,
        "initech",
        &[(
            "approvals",
            "approves leave requests through Margaret Collins in HR and travel through Thomas Reilly",
        )],
        1,
    )
    .await;
    let ask = |request_id: &str, text: &str| question(request_id, "initech", text, "qa", serde_json::json!({}));
    let people = ["Margaret Collins", "Thomas Reilly"];
    let asked: [(&str, &str, &[&str]); 3] = [
        (
            "approver-a",
            "I am Ayşe Yılmaz (ayse.yilmaz@example.com). Who approves leave requests?",
            &["Ayşe Yılmaz", "ayse.yilmaz@example.com"],
        ),
        // Paraphrased, with other personal data numbered differently (two people, no e-mail).
        (
            "approver-b",
            "Kenji Watanabe here, my manager is Olga Petrova: who approves a leave request?",
            &["Kenji Watanabe", "Olga Petrova"],
        ),
        // The same words as the first with other values: the same masked prompt.
        (
            "approver-c",
            "I am Priya Nair (priya.nair@example.org). Who approves leave requests?",
            &["Priya Nair", "priya.nair@example.org"],
        ),
    ];
    let mut answers = Vec::new();
    for (request_id, text, _) in &asked {
        produce_all(&running.topology.input, vec![ask(request_id, text)]).await;
        answers.push(answer_on(&running.topology.output, request_id).await);
    }
    for ((request_id, _, own), answer) in asked.iter().zip(&answers) {
        let text = answer.answer.as_deref().unwrap_or_default();
        assert_eq!(answer.status, AnswerStatus::Ok, "{request_id}: {answer:?}");
        assert!(!ragstream::pii::holds_placeholders(text), "{request_id}: {text}");
        for value in own.iter().chain(&people[..1]) {
            assert!(text.contains(value), "{request_id}: `{value}` missing from {text}");
        }
        let others = asked
            .iter()
            .filter(|(other, _, _)| other != request_id)
            .flat_map(|(_, _, values)| values.iter());
        for value in others {
            assert!(
                !text.contains(value),
                "{request_id}: another request's `{value}` in {text}"
            );
        }
    }
    assert!(
        !answers[1].provenance.cached,
        "the paraphrase was answered by the model: {:?}",
        answers[1]
    );
    assert_eq!(
        (answers[2].provenance.cached, answers[2].provenance.route.as_deref()),
        (true, Some("cache hit")),
        "the same masked prompt reuses the answer"
    );
    assert_eq!(llm.requests().len(), 2);
}

/// A Redis server of this test's own on a free port (Debian's `redis-server`, which
/// `deploy/local/redis.sh` installs), appending every write to disk before it answers: killed
/// for an outage and started again with its counters, while the machine's Redis serves the other
/// tests. Killed, not paused: a paused server would run the commands queued during the pause
/// once resumed, and this test must know what the store was told.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, from its append-only file) and waits until it answers.
    async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (deploy/local/redis.sh installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok() {
                    return;
                }
            }
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: the server is gone until [`restart`](Self::restart).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Dollars counted in `tenant`'s daily cost budget under `prefix`.
    async fn spent_today(&self, prefix: &str, tenant: &str) -> f64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:budget:t:{tenant}:cost:day:*"))
            .query_async(&mut connection)
            .await
            .unwrap();
        let mut micro_dollars = 0.0;
        for key in keys {
            let value: String = redis::cmd("GET").arg(&key).query_async(&mut connection).await.unwrap();
            micro_dollars += value.parse::<f64>().unwrap();
        }
        micro_dollars / 1e6
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_questions_fail_open_or_closed_as_configured_and_no_call_is_billed_twice() {
    let llm = ScriptedLlm::start(always_answer(), constant_reply()).await;
    let mut redis = OwnRedis::start().await;
    for policy in ["open", "closed"] {
        let prefix = unique(&format!("outage-{policy}"));
        // The cache is off: every question is a call of $1 (estimated at $1.60 before it).
        let setup = Setup {
            models: dollar_per_call(&llm.url),
            generate_extra: format!(
                ", max_output_tokens: 16, cost_control: {{ store: \"{}\", key_prefix: {prefix}, cache_ttl_s: 0, \
                   tenant: {{ cost_usd_per_day: 1000 }}, on_store_unavailable: {policy} }}",
                redis.url()
            ),
            ..Setup::openai(&llm.url)
        };
        let running = start(&format!("outage-{policy}"), setup).await;
        let ask = |phase: &'static str| {
            let (messages, ids) = questions(&format!("{prefix}-{phase}"), 4, "acme");
            let topic = running.topology.output.clone();
            let input = running.topology.input.clone();
            async move {
                produce_all(&input, messages).await;
                let answers = crate::answering::answers_for(&topic, &ids, Duration::from_secs(120)).await;
                answers
                    .into_iter()
                    .filter(|(id, _)| ids.contains(id))
                    .map(|(_, answer)| answer)
                    .collect::<Vec<Answer>>()
            }
        };

        let before = ask("before").await;
        for answer in &before {
            assert_eq!(answer.status, AnswerStatus::Ok, "{answer:?}");
        }
        assert_eq!(redis.spent_today(&prefix, "acme").await, 4.0);
        let calls_before = llm.requests().len();

        redis.kill();
        let during = ask("during").await;
        let calls_during = llm.requests().len() - calls_before;
        for answer in &during {
            let route = answer.provenance.route.clone().unwrap_or_default();
            let reason = answer.provenance.reason.clone().unwrap_or_default();
            match policy {
                "open" => {
                    assert_eq!(answer.status, AnswerStatus::Ok, "{answer:?}");
                    assert!(route.contains("not checked"), "{route}");
                }
                _ => {
                    assert_eq!(answer.status, AnswerStatus::Failed, "{answer:?}");
                    assert!(reason.contains("cannot be checked"), "{reason}");
                }
            }
        }
        assert_eq!(calls_during, if policy == "open" { 4 } else { 0 }, "{policy}");

        redis.restart().await;
        let after = ask("after").await;
        for answer in &after {
            assert_eq!(answer.status, AnswerStatus::Ok, "{answer:?}");
        }
        // The calls before and after the outage, each once; the outage's calls (open) are not
        // counted, and nothing sent while the store was down is counted later.
        assert_eq!(redis.spent_today(&prefix, "acme").await, 8.0, "{policy}");
        let metrics = running.process.metrics().await.expect("the process is alive");
        assert_eq!(
            metric(
                &metrics,
                "ragstream_store_unavailable_total",
                &[("layer", "admission"), ("policy", policy)]
            ),
            4.0
        );
        let answered = before.len() + during.len() + after.len();
        ChaosRow {
            scenario: format!("Redis killed and restarted, on_store_unavailable: {policy}"),
            messages_in: 12,
            outputs: answered,
            lost: 12 - answered,
            note: format!("$8.00 billed for 8 calls, none twice; {calls_during} model calls during the outage"),
            ..ChaosRow::default()
        }
        .report();
    }
}
