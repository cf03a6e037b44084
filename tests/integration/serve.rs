//! `ragstream serve` against the real broker and a running answering pipeline: a client posts a
//! question and follows it as Server-Sent Events to the answer; keys see only their tenant's
//! requests; bad bodies get 400 with the reason; an unreachable broker gets 503.

use crate::answering::{start, Setup};
use crate::common;

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use common::scripted_llm::{echo_placeholders, Behaviour, ScriptedLlm};
use common::*;
use ragstream::contracts::{Answer, AnswerStatus, StatusEvent, Step};
use ragstream::serve::key_hash;
use reqwest::StatusCode;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `ragstream serve` process with the keys `key-acme` (tenant acme) and `key-globex`.
struct Server {
    url: String,
    process: Ragstream,
    _keys: tempfile::NamedTempFile,
}

impl Server {
    async fn start(brokers: &str, topics: &[(&str, &str)], extra: &[&str]) -> Self {
        let keys = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        let document = format!(
            "keys:\n  - tenant: acme\n    sha256: {}\n  - tenant: globex\n    sha256: {}\n",
            key_hash("key-acme"),
            key_hash("key-globex")
        );
        std::fs::write(keys.path(), document).unwrap();
        let port = free_port();
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--keys".into(),
            keys.path().as_os_str().to_owned(),
            "--brokers".into(),
            brokers.into(),
        ];
        for (flag, topic) in topics {
            args.push(format!("--{flag}").into());
            args.push((*topic).into());
        }
        args.extend(extra.iter().map(OsString::from));
        let process = Ragstream::spawn(&args, port, &[]);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            process,
            _keys: keys,
        }
    }

    /// Waits until the listener answers `/healthz`.
    async fn wait_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/healthz", self.url)).await.is_err() {
            assert!(
                self.process.try_status().is_none(),
                "serve exited:\n{}",
                self.process.log_text()
            );
            assert!(tokio::time::Instant::now() < deadline, "serve did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post(&self, key: &str, body: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/questions", self.url))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, key: Option<&str>, path: &str) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.unwrap()
    }
}

/// Reads a Server-Sent Events stream to its end: (event name, data) pairs.
async fn read_events(mut response: reqwest::Response, timeout: Duration) -> Vec<(String, Value)> {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, response.chunk())
        .await
        .unwrap_or(Ok(None))
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ").or_else(|| line.strip_prefix("event:")) {
                    name = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                    data.push_str(value);
                }
            }
            Some((name?, serde_json::from_str(&data).ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_follows_its_question_to_the_answer_and_other_tenants_see_nothing() {
    let llm = ScriptedLlm::start(Arc::new(|_, _| Behaviour::Answer), echo_placeholders()).await;
    let setup = Setup {
        decode_extra: ", status_sink: status".to_owned(),
        generate_extra: ", partials_sink: partials".to_owned(),
        ..Setup::openai(&llm.url)
    };
    let running = start("serve", setup).await;
    let topics = [
        ("questions-topic", running.topology.input.as_str()),
        ("answers-topic", running.topology.output.as_str()),
        ("status-topic", running.status_topic.as_str()),
        ("partials-topic", running.partials_topic.as_str()),
    ];
    let mut server = Server::start(&brokers(), &topics, &[]).await;
    server.process.wait_ready(Duration::from_secs(30)).await;

    let (status, created) = server
        .post(
            "key-acme",
            r#"{"question": "What is the refund policy? I am mary@example.com", "user": "u-7", "options": {"stream": true}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["request_id"].as_str().unwrap().to_owned();
    assert_eq!(created["events_url"], format!("/v1/questions/{id}/events"));

    let response = server
        .get(Some("key-acme"), &format!("/v1/questions/{id}/events"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = read_events(response, Duration::from_secs(60)).await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names.last(),
        Some(&"answer"),
        "the stream ends with the answer: {names:?}"
    );
    let steps: Vec<StatusEvent> = events
        .iter()
        .filter(|(name, _)| name == "status")
        .map(|(_, data)| serde_json::from_value(data.clone()).unwrap())
        .collect();
    assert_eq!(steps.first().map(|s| &s.step), Some(&Step::Received), "{names:?}");
    assert!(
        steps.iter().any(|s| matches!(s.step, Step::Generating { .. })),
        "{names:?}"
    );
    assert!(
        names.contains(&"partial"),
        "the text arrives while it is written: {names:?}"
    );
    let answer: Answer = serde_json::from_value(events.last().unwrap().1.clone()).unwrap();
    assert_eq!(answer.request_id, id);
    assert_eq!(answer.tenant, "acme");
    assert_eq!(answer.status, AnswerStatus::Ok, "{answer:?}");
    assert!(
        answer.answer.as_deref().unwrap().contains("mary@example.com"),
        "{answer:?}"
    );

    // The latest state, for the key's tenant only.
    let latest = server.get(Some("key-acme"), &format!("/v1/questions/{id}")).await;
    assert_eq!(latest.status(), StatusCode::OK);
    let latest: Value = latest.json().await.unwrap();
    assert_eq!(latest["answer"]["request_id"], id.as_str());
    let other = server.get(Some("key-globex"), &format!("/v1/questions/{id}")).await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let other = server
        .get(Some("key-globex"), &format!("/v1/questions/{id}/events"))
        .await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let none = server.get(None, &format!("/v1/questions/{id}")).await;
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    let wrong = server.get(Some("key-nobody"), &format!("/v1/questions/{id}")).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // Bad bodies: 400 with the reason, nothing produced.
    for (body, reason) in [
        ("{not json", "the body is not a question"),
        (r#"{"user": "u"}"#, "missing field `question`"),
        (r#"{"question": "q", "tenant": "globex"}"#, "unknown field `tenant`"),
        (r#"{"question": "q", "task": "poem"}"#, "task"),
        (r#"{"question": "q", "options": {"top_k": "five"}}"#, "options.top_k"),
    ] {
        let (status, error) = server.post("key-acme", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(reason), "{body}: {message}");
    }
    let (status, _) = server.post("key-unknown", r#"{"question": "q"}"#).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_the_broker_cannot_take_gets_503_after_the_retry_window() {
    // Nothing listens on this port: the producer retries for the window, then gives up.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start(&nowhere, &[], &["--produce-timeout-s", "2"]).await;
    server.wait_listening().await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/questions", server.url))
        .bearer_auth("key-acme")
        .body(r#"{"question": "anyone there?"}"#)
        .send()
        .await
        .unwrap();
    assert!(
        response.headers().get("retry-after").is_some(),
        "503 says when to come back"
    );
    let status = response.status();
    let error: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    assert!(error["error"].as_str().unwrap().contains("send it again"), "{error}");
    let ready = server.get(None, "/readyz").await;
    assert_eq!(
        ready.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "not following any answers"
    );
}
