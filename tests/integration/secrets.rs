//! Secrets (issue 21): the provider keys (an OpenAI-compatible one from the environment, an
//! Anthropic one from a file, sent as `x-api-key`) and the password in the Redis URL never show in
//! the log, the metrics, the answers, audit events, status and partial answers, dead letters, or
//! what `ragstream validate` prints. The run is steered into the failures where secrets usually
//! leak: keys refused (401), servers answering 200 with the key where the answer should be (a
//! proxy echoing the request), server errors, a Redis that goes away and comes back wanting
//! another password, a process that cannot start because Redis refuses its password, and a store
//! URL that is no Redis URL at all.

use crate::answering::{self, question, Running, Setup, TENANTS};
use crate::common;

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chaos::ChaosRow;
use common::scripted_llm::{user_message, Behaviour, Responder, Script, ScriptedLlm};
use common::*;

/// A value no one else would write: `prefix` and 64 random bits.
fn secret(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

/// The number `i` a question ends with (`… (phase i)`), as the model receives it.
fn question_number(request: &serde_json::Value) -> Option<usize> {
    let user = user_message(request);
    user.rsplit(' ').next()?.trim_end_matches(')').parse().ok()
}

/// A body that answers 200 with `key` where the answer should be: a proxy echoing the request.
fn echo(key: &str) -> Behaviour {
    let body = serde_json::json!({ "content": key, "choices": key, "error": { "message": key } });
    Behaviour::Raw {
        status: 200,
        body: body.to_string(),
    }
}

/// The Anthropic server, never an answer: it refuses the key for question 0 (a refusal ends the
/// chain); for the others it echoes the key or fails, until their attempts run out and the next
/// model is asked.
fn anthropic_script(key: String) -> Script {
    Arc::new(move |request, call| match question_number(request) {
        Some(0) => Behaviour::Status(401),
        _ if call % 2 == 0 => echo(&key),
        _ => Behaviour::Status(500),
    })
}

/// The OpenAI-compatible server: it echoes the key for every call of question 1 (so the
/// malformed reply is the last error, the one an answer's reason quotes), refuses it for
/// question 2, fails for question 3, and answers the others.
fn openai_script(key: String) -> Script {
    Arc::new(move |request, _| match question_number(request) {
        Some(1) => echo(&key),
        Some(2) => Behaviour::Status(401),
        Some(3) => Behaviour::Status(500),
        _ => Behaviour::Answer,
    })
}

fn reply() -> Responder {
    Arc::new(|_| "Refunds are accepted within 30 days [1].".to_owned())
}

/// A Redis server of this test's own that wants a password (the machine's Redis wants none):
/// killed, and started again wanting another one.
struct PasswordRedis {
    port: u16,
    child: Option<Child>,
}

impl PasswordRedis {
    async fn start(password: &str) -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.restart(password).await;
        redis
    }

    /// The server's URL with `password` in it.
    fn url(&self, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}/", self.port)
    }

    /// Starts the server (nothing kept on disk) wanting `password`; waits until it answers.
    async fn restart(&mut self, password: &str) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--requirepass", password])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (deploy/local/redis.sh installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url(password)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: gone until [`restart`](Self::restart).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asks `count` questions and waits for their answers (a `failed` one for a question that was
/// dead-lettered).
async fn ask(running: &Running, phase: &str, count: usize) {
    let messages = (0..count)
        .map(|i| {
            let text = format!("What is the refund policy? ({phase} {i})");
            let tenant = TENANTS[i % TENANTS.len()];
            question(&format!("{phase}-{i}"), tenant, &text, "qa", serde_json::json!({}))
        })
        .collect();
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = (0..count).map(|i| format!("{phase}-{i}")).collect();
    answering::answers_for(&running.topology.output, &ids, Duration::from_secs(180)).await;
}

/// Every record of `topic`: key, payload and headers, as text.
async fn records_of(topic: &str) -> String {
    read_topic(topic, 0, Duration::from_secs(30))
        .await
        .iter()
        .map(|m| {
            format!(
                "{} {} {:?}\n",
                String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()),
                String::from_utf8_lossy(&m.payload),
                m.headers
            )
        })
        .collect()
}

/// `ragstream validate` on `yaml` with `env`: its exit status and everything it printed.
fn validate(yaml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ragstream"))
        .arg("validate")
        .arg(file.path())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_shows_in_logs_errors_metrics_topics_or_validate_output() {
    let openai_key = secret("sk-proj-");
    let anthropic_key = secret("sk-ant-api03-");
    let password = secret("s3cretPassw0rd");
    let next_password = secret("n3xtPassw0rd");
    let key_variable = format!("RAGSTREAM_TEST_OPENAI_KEY_{:x}", rand::random::<u32>());
    let store_variable = format!("RAGSTREAM_TEST_STORE_{:x}", rand::random::<u32>());
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("anthropic-key");
    std::fs::write(&key_file, format!("{anthropic_key}\n")).unwrap();

    let anthropic = ScriptedLlm::start(anthropic_script(anthropic_key.clone()), reply()).await;
    let openai = ScriptedLlm::start(openai_script(openai_key.clone()), reply()).await;
    let mut redis = PasswordRedis::start(&password).await;
    let store_url = redis.url(&password);
    let env = [
        (key_variable.as_str(), openai_key.as_str()),
        (store_variable.as_str(), store_url.as_str()),
        ("RUST_LOG", "debug"),
    ];
    // Anthropic first: its failures hand the question to the OpenAI-compatible model (a refusal
    // ends the chain). The circuit never opens, so every question calls Anthropic. No cache:
    // every question is a model call. Status events report every retry with its reason. The
    // store's URL comes from the environment.
    let setup = Setup {
        models: format!(
            "[{{ name: claude, provider: anthropic, base_url: \"{}\", model: claude-test, timeout_ms: 2000, \
               api_key_file: \"{}\" }}, \
              {{ name: gpt, provider: openai, base_url: \"{}\", model: scripted, timeout_ms: 2000, \
               api_key_env: {key_variable} }}]",
            anthropic.url,
            key_file.display(),
            openai.url
        ),
        generate_extra: format!(
            ", circuit_breaker: {{ failure_threshold: 1000 }}, cost_control: {{ store: \"${{{store_variable}}}\", \
               key_prefix: {}, cache_ttl_s: 0, tenant: {{ cost_usd_per_day: 1000 }} }}",
            unique("secrets")
        ),
        decode_extra: ", status_sink: status".to_owned(),
        ..Setup::openai(&openai.url)
    };
    let running = answering::start_adjusted("secrets", setup, &env, |topology| {
        // A store that stays unavailable dead-letters a question after two attempts.
        topology.pipeline_extra =
            "    retry: { max_attempts: 2, initial_backoff_ms: 20, max_backoff_ms: 100 }".to_owned();
    })
    .await;

    ask(&running, "store-up", 8).await;
    redis.kill();
    ask(&running, "store-gone", 4).await;
    redis.restart(&next_password).await;
    ask(&running, "store-refuses", 4).await;

    // The keys were in use: each server saw its own, and only it.
    let bearer = Some(format!("Bearer {openai_key}"));
    assert!(!openai.requests().is_empty());
    assert!(openai
        .requests()
        .iter()
        .all(|r| r.authorization == bearer && r.api_key.is_none()));
    assert!(!anthropic.requests().is_empty());
    assert!(anthropic
        .requests()
        .iter()
        .all(|r| r.api_key.as_deref() == Some(anthropic_key.as_str()) && r.authorization.is_none()));

    let log = running.process.log_text();
    assert!(log.contains("DEBUG"), "the log was written at debug level");
    assert!(log.contains("state store (Redis)"), "the store's failures were logged");
    let mut haystacks = vec![
        ("log", log),
        ("metrics", running.process.metrics().await.expect("metrics")),
    ];
    for (name, topic) in [
        ("answers", &running.topology.output),
        ("audit events", &running.audit_topic),
        ("partial answers", &running.partials_topic),
        ("status events", &running.status_topic),
        ("dead letters", &running.topology.dead_letter),
    ] {
        haystacks.push((name, records_of(topic).await));
    }
    assert!(
        haystacks
            .iter()
            .any(|(name, text)| *name == "dead letters" && !text.is_empty()),
        "questions were dead-lettered while the store was unavailable"
    );

    // A second process, whose store now refuses the password in its URL, cannot start.
    let mut refused = Ragstream::start_with_env(&running.topology.replica(), &env);
    let status = refused.wait_exit(Duration::from_secs(120)).await;
    assert!(
        status.is_some_and(|status| !status.success()),
        "a process whose store refuses its password does not start:\n{}",
        refused.log_text()
    );
    haystacks.push(("log of the refused start", refused.log_text()));

    // `ragstream validate`, of the topology as it runs and with a store URL that is no Redis URL.
    let yaml = running.topology.yaml();
    let (valid, printed) = validate(&yaml, &env);
    assert!(valid, "{printed}");
    haystacks.push(("validate output", printed));
    let not_redis = format!("http://:{password}@127.0.0.1:1/");
    let (valid, printed) = validate(&yaml, &[(store_variable.as_str(), not_redis.as_str())]);
    assert!(!valid && printed.contains("neither redis://"), "{printed}");
    haystacks.push(("validate output for a wrong store URL", printed));

    for (name, text) in &haystacks {
        for secret in [&openai_key, &anthropic_key, &password, &next_password] {
            assert!(!text.contains(secret.as_str()), "a secret shows in the {name}");
            let end = &secret[secret.len() - 12..];
            assert!(!text.contains(end), "the end of a secret shows in the {name}");
        }
    }
    let searched: usize = haystacks.iter().map(|(_, text)| text.len()).sum();
    ChaosRow {
        scenario: "secrets: provider keys, x-api-key, Redis password".to_owned(),
        note: format!(
            "4 secrets and their last 12 characters searched in {} places ({searched} bytes): 0 hits",
            haystacks.len()
        ),
        ..ChaosRow::default()
    }
    .report();
}
