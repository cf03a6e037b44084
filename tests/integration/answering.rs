//! Questions through decode → mask_pii → retrieve (LanceDB, the real embedding model) →
//! generate (a scripted OpenAI-compatible server) → restore_pii → emit_answer, against the
//! real broker.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::scripted_llm::{always_answer, echo_placeholders, user_message, Behaviour, Responder, Script, ScriptedLlm};
use common::*;
use ragstream::audit::QuestionEvent;
use ragstream::contracts::{
    Answer, AnswerStatus, ChunkedDocument, DocumentChunk, DocumentHeader, DocumentOp, PartialAnswer,
};
use ragstream::embed::{shared_local_model, Pooling};
use ragstream::store::{ChunkStore, DocumentWrite};

pub(crate) const MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/all-MiniLM-L6-v2");
pub(crate) const TENANTS: [&str; 5] = ["acme", "globex", "initech", "umbrella", "hooli"];
const TOPICS: [(&str, &str); 6] = [
    (
        "refunds",
        "refunds purchases within 30 days of delivery when the item is unused and in its original packaging",
    ),
    (
        "shipping",
        "ships orders within two business days; express delivery arrives the next working day",
    ),
    (
        "warranty",
        "gives a two-year warranty on hardware; batteries are covered for one year",
    ),
    (
        "support",
        "answers support tickets from 8:00 to 18:00 on weekdays and within four hours for urgent cases",
    ),
    (
        "security",
        "encrypts customer data at rest and requires two-factor login for administrators",
    ),
    (
        "pricing",
        "charges a monthly subscription per seat, with a discount for yearly plans",
    ),
];

/// Indexes one chunk per (tenant, topic), embedded with the real model, straight into LanceDB.
/// Document ids start with the tenant, so a citation of another tenant's chunk is visible.
pub(crate) async fn index_corpus(dir: &Path) {
    for tenant in TENANTS {
        write_facts(dir, tenant, &TOPICS, 1).await;
    }
}

/// Writes one document per (topic, fact) of `tenant` at `version`, embedded with the real model
/// (a newer version replaces the chunks of the older one).
pub(crate) async fn write_facts(dir: &Path, tenant: &str, facts: &[(&str, &str)], version: u64) {
    let model = shared_local_model(Path::new(MODEL_DIR), Pooling::Mean, true, 256).unwrap();
    let mut writes = Vec::new();
    let texts: Vec<String> = facts
        .iter()
        .map(|(topic, fact)| format!("{tenant} {topic} policy\n\n{tenant} {fact}."))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = model.embed(&refs).unwrap();
    for ((topic, _), (text, vector)) in facts.iter().zip(texts.into_iter().zip(vectors)) {
        let doc_id = format!("{tenant}-{topic}");
        writes.push(DocumentWrite {
            document: ChunkedDocument {
                header: DocumentHeader {
                    title: Some(format!("{tenant} {topic}")),
                    ..DocumentHeader::new(tenant, &doc_id, DocumentOp::Upsert, version)
                },
                embedding_model: Some("all-MiniLM-L6-v2".to_owned()),
                chunks: vec![DocumentChunk {
                    chunk_id: format!("{doc_id}:{version}:0"),
                    position: 0,
                    context: format!("{tenant} {topic} policy"),
                    token_count: 20,
                    text,
                    vector: Some(vector),
                }],
            },
            event_time_ms: None,
        });
    }
    let mut store = ChunkStore::open(&dir.display().to_string(), "chunks").await.unwrap();
    store.apply(&writes).await.unwrap();
}

/// Settings of one answering test.
pub(crate) struct Setup {
    pub(crate) models: String,
    pub(crate) decode_extra: String,
    pub(crate) generate_extra: String,
    pub(crate) retrieve_extra: String,
    pub(crate) mask_extra: String,
    /// The pipeline's commit interval, when the test needs its own.
    pub(crate) commit_interval_ms: Option<u64>,
}

impl Setup {
    pub(crate) fn openai(url: &str) -> Self {
        Self {
            models: format!(
                "[{{ name: primary, provider: openai, base_url: \"{url}\", model: scripted, timeout_ms: 1000 }}]"
            ),
            decode_extra: String::new(),
            generate_extra: String::new(),
            retrieve_extra: ", min_score: 0.2".to_owned(),
            mask_extra: String::new(),
            commit_interval_ms: None,
        }
    }
}

pub(crate) struct Running {
    pub(crate) topology: TestTopology,
    pub(crate) audit_topic: String,
    /// Behind the sink `partials`, for a generate stage configured to stream.
    pub(crate) partials_topic: String,
    /// Behind the sink `status`, for a decode_question stage configured to report steps.
    pub(crate) status_topic: String,
    /// The process lives as long as the test (killed on drop).
    pub(crate) process: Ragstream,
    /// The LanceDB directory the retrieve stage reads.
    pub(crate) index_dir: std::path::PathBuf,
    _index: tempfile::TempDir,
}

pub(crate) async fn start(prefix: &str, setup: Setup) -> Running {
    start_with_env(prefix, setup, &[]).await
}

/// [`start`] with extra environment variables for the process.
pub(crate) async fn start_with_env(prefix: &str, setup: Setup, env: &[(&str, &str)]) -> Running {
    start_adjusted(prefix, setup, env, |_| {}).await
}

/// [`start_with_env`], `adjust` changing the topology before the process starts (its
/// telemetry, say).
pub(crate) async fn start_adjusted(
    prefix: &str,
    setup: Setup,
    env: &[(&str, &str)],
    adjust: impl FnOnce(&mut TestTopology),
) -> Running {
    let index = tempfile::tempdir().unwrap();
    index_corpus(index.path()).await;
    let mut topology = TestTopology::new(prefix);
    if let Some(interval) = setup.commit_interval_ms {
        topology.commit_interval_ms = interval;
    }
    let audit_topic = unique(&format!("{prefix}-audit"));
    let partials_topic = unique(&format!("{prefix}-partials"));
    let status_topic = unique(&format!("{prefix}-status"));
    topology.extra_sinks = vec![
        ("audit".to_owned(), audit_topic.clone()),
        ("partials".to_owned(), partials_topic.clone()),
        ("status".to_owned(), status_topic.clone()),
    ];
    topology.stages = format!(
        "[{{ type: decode_question {decode} }}, \
          {{ type: mask_pii {mask} }}, \
          {{ type: retrieve, uri: \"{uri}\", embedding: {{ model_dir: \"{MODEL_DIR}\" }}, top_k: 3 {retrieve} }}, \
          {{ type: generate, models: {models}, \
             retry: {{ max_attempts: 4, initial_backoff_ms: 50, max_backoff_ms: 400, max_total_ms: 30000 }} {generate} }}, \
          {{ type: restore_pii }}, \
          {{ type: emit_answer, audit_sink: audit }}]",
        uri = index.path().display(),
        models = setup.models,
        decode = setup.decode_extra,
        mask = setup.mask_extra,
        retrieve = setup.retrieve_extra,
        generate = setup.generate_extra,
    );
    adjust(&mut topology);
    topology.create_topics(3).await;
    let mut process = Ragstream::start_with_env(&topology, env);
    process.wait_ready(Duration::from_secs(60)).await;
    Running {
        topology,
        audit_topic,
        partials_topic,
        status_topic,
        process,
        index_dir: index.path().to_path_buf(),
        _index: index,
    }
}

pub(crate) fn question(request_id: &str, tenant: &str, text: &str, task: &str, options: serde_json::Value) -> Outgoing {
    let payload = serde_json::json!({
        "schema_version": 1, "request_id": request_id, "tenant": tenant, "user": format!("user-{request_id}"),
        "question": text, "task": task, "options": options,
    });
    Outgoing {
        partition: None,
        key: Some(request_id.as_bytes().to_vec()),
        payload: payload.to_string().into_bytes(),
    }
}

/// Reads the answers topic until every request id has an answer; fails on a duplicate.
pub(crate) async fn answers_for(
    topic: &str,
    request_ids: &HashSet<String>,
    timeout: Duration,
) -> HashMap<String, Answer> {
    let mut reader = TopicReader::new(topic);
    reader
        .read_until(
            |received| {
                // The topic may hold answers to earlier questions too: wait for these ones.
                let keys: HashSet<&[u8]> = received.iter().filter_map(|m| m.key.as_deref()).collect();
                request_ids.iter().all(|id| keys.contains(id.as_bytes()))
            },
            timeout,
        )
        .await;
    let mut answers = HashMap::new();
    for message in &reader.received {
        let answer: Answer = serde_json::from_slice(&message.payload).expect("an answer");
        ragstream::contracts::Contract::answers()
            .validate(&serde_json::from_slice(&message.payload).unwrap())
            .unwrap();
        assert!(
            answers.insert(answer.request_id.clone(), answer).is_none(),
            "a second answer for the same request"
        );
    }
    let missing: Vec<_> = request_ids.iter().filter(|id| !answers.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "no answer for {} questions, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    answers
}

/// The audit events on `topic` once `count` have arrived, each checked against its contract, with
/// its JSON text.
pub(crate) async fn audit_events(topic: &str, count: usize) -> Vec<(QuestionEvent, String)> {
    read_topic(topic, count, Duration::from_secs(60))
        .await
        .into_iter()
        .map(|m| {
            let text = String::from_utf8(m.payload).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            ragstream::contracts::Contract::audit().validate(&value).unwrap();
            (serde_json::from_value(value).unwrap(), text)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Personal data

/// A Luhn-valid 16-digit card number starting with 4.
fn card(i: usize) -> String {
    let body: Vec<u32> = format!("4{:014}", 532_015_112_830_u64 + i as u64 * 7919)
        .chars()
        .map(|c| c.to_digit(10).unwrap())
        .collect();
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(position, digit)| {
            if position % 2 == 0 {
                let doubled = digit * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                *digit
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    let digits: String = body
        .iter()
        .map(|d| char::from_digit(*d, 10).unwrap())
        .collect::<String>()
        + &check.to_string();
    format!(
        "{} {} {} {}",
        &digits[0..4],
        &digits[4..8],
        &digits[8..12],
        &digits[12..16]
    )
}

/// A valid German IBAN (mod-97 check digits computed).
fn iban(i: usize) -> String {
    let bban = format!("37040044{:010}", 532_013_000 + i as u64 * 31);
    // Letters become numbers (D=13, E=14); the check digits are 98 - (number mod 97).
    let numeric = format!("{bban}131400");
    let remainder = numeric
        .chars()
        .fold(0u64, |acc, c| (acc * 10 + c.to_digit(10).unwrap() as u64) % 97);
    format!("DE{:02}{bban}", 98 - remainder)
}

/// Names from many places, with the letters their owners write them with.
const FIRST: [&str; 16] = [
    "Łukasz", "Søren", "Ayşe", "Siobhán", "Jürgen", "Priya", "Chidi", "Mateus", "Ingrid", "Zoltán", "Kenji", "Amélie",
    "Dmitri", "Fatima", "Rafael", "Mary",
];
const LAST: [&str; 13] = [
    "Wiśniewski",
    "Kjærgaard",
    "Yılmaz",
    "O'Connell",
    "Weiß",
    "Raghunathan",
    "Okonkwo",
    "Conceição",
    "Lindqvist",
    "Kovács",
    "Watanabe",
    "Fontaine",
    "Johnson",
];
/// Phone numbers as people write them: international, and national without a country code in
/// the formats of ten countries, one with an extension; `{}` takes three digits.
const PHONES: [&str; 13] = [
    "+44 20 7946 0{}",
    "020 7946 0{}",
    "030 9018 2{}",
    "01 42 68 5{}",
    "(212) 736-1{}",
    "+1 212-736-1{} ext. 42",
    "0412 345 {}",
    "912 345 {}",
    "020 555 8{}",
    "090-1234-5{}",
    "(11) 3456-7{}",
    "22 123 4{}",
    "08-123 456 {}",
];
/// Street addresses of the US, the UK and continental Europe, on one line or several; `{}`
/// takes the house number.
const ADDRESSES: [&str; 8] = [
    "{} Rosewood Lane, Springfield",
    "Hauptstraße {}\n10115 Berlin",
    "{}, rue Lemoine\n75011 Paris",
    "Flat 2, {} Rosewood Lane\nLeeds LS6 2QT",
    "{} Evergreen Terrace Apt. 4B\nSpringfield, OR 97403",
    "Calle Mayor {}, 28013 Madrid",
    "Keizersgracht {}\n1015 CJ Amsterdam",
    "ul. Kwiatowa {}/3\n00-123 Warszawa",
];

/// Every kind of personal data the masking stage supports, distinct per question, in the forms
/// the detector must know without configuration.
fn personal_data(i: usize) -> Vec<(&'static str, String)> {
    let phone = PHONES[i % PHONES.len()].replace("{}", &format!("{:03}", i % 1000));
    let first = FIRST[i % FIRST.len()];
    let last = LAST[(i / 3) % LAST.len()];
    let (area, group, serial) = (100 + i % 500, 10 + i % 80, 1000 + i);
    let ssn = match i % 3 {
        0 => format!("{area:03}-{group:02}-{serial:04}"),
        1 => format!("{area:03} {group:02} {serial:04}"),
        _ => format!("{area:03}{group:02}{serial:04}"),
    };
    let dob = match i % 3 {
        0 => format!("{} March {}", 1 + i % 28, 1950 + i % 50),
        1 => format!("{}-03-{:02}", 1950 + i % 50, 1 + i % 28),
        _ => format!("03/{:02}/{}", 1 + i % 28, 1950 + i % 50),
    };
    let profile = match i % 3 {
        0 => format!("https://www.linkedin.com/in/customer-{i}"),
        1 => format!("https://github.com/jdoe{i}"),
        _ => format!("https://crm.example.net/customers/{}", 40_000 + i),
    };
    vec![
        ("PERSON", format!("{first} {last}")),
        ("DOB", dob),
        ("EMAIL", format!("customer.{i}@mail{}.example.com", i % 7)),
        ("PHONE", phone),
        ("CARD", card(i)),
        ("IBAN", iban(i)),
        ("SSN", ssn),
        ("IP", format!("10.{}.{}.{}", i % 250, i % 7, 1 + i % 200)),
        (
            "URL_CREDENTIALS",
            format!("https://svc{i}:pa55w0rd{i}@db{i}.internal.example.com/prod"),
        ),
        ("URL", profile),
        (
            "ADDRESS",
            ADDRESSES[i % ADDRESSES.len()].replace("{}", &(10 + i).to_string()),
        ),
    ]
}

/// A support e-mail carrying every value: greeting, body, signature.
fn pii_question(i: usize, values: &[(&str, String)]) -> String {
    let v: HashMap<&str, &str> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    format!(
        "Hello support,\n\nmy name is {}, born on {}. Mail me at {} or call me on {}. My card {} and account {} \
         were charged twice; my social security number is {}. My profile: {}\n\nI live at:\n{}\n\n\
         A login from {} through {} failed. What is your refund policy? (ref q{i})\n\nKind regards,\n{}",
        v["PERSON"],
        v["DOB"],
        v["EMAIL"],
        v["PHONE"],
        v["CARD"],
        v["IBAN"],
        v["SSN"],
        v["URL"],
        v["ADDRESS"],
        v["IP"],
        v["URL_CREDENTIALS"],
        v["PERSON"],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn personal_data_never_reaches_the_model_or_the_audit_topic_and_is_restored_in_answers() {
    let llm = ScriptedLlm::start(always_answer(), echo_placeholders()).await;
    let running = start("pii", Setup::openai(&llm.url)).await;
    let count = 200;
    let mut originals: HashMap<String, Vec<(&str, String)>> = HashMap::new();
    let mut messages = Vec::new();
    for i in 0..count {
        let request_id = format!("pii-{i}");
        let values = personal_data(i);
        messages.push(question(
            &request_id,
            TENANTS[i % 5],
            &pii_question(i, &values),
            "qa",
            serde_json::json!({}),
        ));
        originals.insert(request_id, values);
    }
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = originals.keys().cloned().collect();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(240)).await;

    let bodies = llm.bodies();
    assert!(bodies.len() >= count, "the model was asked {} times", bodies.len());
    let audit = audit_events(&running.audit_topic, count).await;
    assert_eq!(audit.len(), count);
    let audit_text: String = audit.iter().map(|(_, text)| text.as_str()).collect();
    let mut leaks = Vec::new();
    for (request_id, values) in &originals {
        let answer = &answers[request_id];
        assert_eq!(answer.status, AnswerStatus::Ok, "{answer:?}");
        let text = answer.answer.as_deref().unwrap();
        for (kind, value) in values {
            if bodies.iter().any(|body| body.contains(value.as_str())) {
                leaks.push(format!("{kind} {value} reached the model"));
            }
            if audit_text.contains(value.as_str()) {
                leaks.push(format!("{kind} {value} reached the audit topic"));
            }
            assert!(
                text.contains(value.as_str()),
                "{kind} `{value}` not restored in: {text}"
            );
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks, e.g. {:?}",
        leaks.len(),
        &leaks[..leaks.len().min(5)]
    );
    for (event, _) in &audit {
        assert_eq!(event.pii_counts.len(), 11, "every kind counted: {:?}", event.pii_counts);
        assert!(event.masked_question.contains("[EMAIL_1]"));
        assert_eq!(event.invented_placeholders, 0);
    }
    // The model saw the placeholders it was told to keep.
    assert!(bodies
        .iter()
        .all(|b| b.contains("[CARD_1]") && b.contains("[PERSON_1]")));
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[tokio::test(flavor = "multi_thread")]
async fn streamed_answers_arrive_as_partials_that_add_up_to_the_answer() {
    // The first call for every fourth question breaks off halfway through its stream: its
    // partials are void, and the retry's partials start over. Every call for question 0
    // breaks: its stream ends with the answer given instead (the passages').
    let first_calls = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let script: Script = Arc::new(move |request, _| {
        let user = user_message(request);
        let marker = user
            .find("(ref q")
            .and_then(|at| user[at..].split(')').next())
            .unwrap_or_default()
            .to_owned();
        let number: usize = marker.trim_start_matches("(ref q").parse().unwrap_or(0);
        let first_call = first_calls.lock().unwrap().insert(marker);
        if number == 0 || number % 4 == 1 && first_call {
            Behaviour::BreakMidStream
        } else {
            Behaviour::Answer
        }
    });
    let llm = ScriptedLlm::start(script, echo_placeholders()).await;
    let setup = Setup {
        // Broken streams are failures the circuit breaker counts; here they must reach the retry.
        generate_extra: ", partials_sink: partials, circuit_breaker: { failure_threshold: 1000 }".to_owned(),
        ..Setup::openai(&llm.url)
    };
    let running = start("stream", setup).await;
    let count = 24;
    let mut originals = HashMap::new();
    let mut messages = Vec::new();
    for i in 0..count {
        let request_id = format!("stream-{i}");
        let values = personal_data(i);
        messages.push(question(
            &request_id,
            TENANTS[i % 5],
            &pii_question(i, &values),
            "qa",
            serde_json::json!({}),
        ));
        originals.insert(request_id, values);
    }
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = originals.keys().cloned().collect();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(120)).await;

    let mut reader = TopicReader::new(&running.partials_topic);
    reader
        .read_until_count(
            |m| serde_json::from_slice::<PartialAnswer>(&m.payload).is_ok_and(|p| p.done),
            count,
            Duration::from_secs(60),
        )
        .await;
    let mut partials: HashMap<String, Vec<PartialAnswer>> = HashMap::new();
    for message in &reader.received {
        let value: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        ragstream::contracts::Contract::partial_answers()
            .validate(&value)
            .unwrap();
        let partial: PartialAnswer = serde_json::from_value(value).unwrap();
        assert_eq!(message.key.as_deref(), Some(partial.request_id.as_bytes()));
        partials.entry(partial.request_id.clone()).or_default().push(partial);
    }
    let (mut restarted, mut restored) = (0, 0);
    for (request_id, values) in &originals {
        let answer = answers[request_id].answer.as_deref().unwrap();
        let mut pieces = partials.remove(request_id).unwrap_or_default();
        pieces.sort_by_key(|p| p.seq);
        let seqs: Vec<u64> = pieces.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, (0..pieces.len() as u64).collect::<Vec<_>>(), "{request_id}: gaps");
        let last = pieces.last().unwrap_or_else(|| panic!("{request_id}: no partials"));
        assert!(last.done, "{request_id}: the last partial is not marked done");
        let answered_by = (&last.model, last.attempt);
        if pieces.iter().any(|p| (&p.model, p.attempt) != answered_by) {
            restarted += 1;
        }
        let streamed: String = pieces
            .iter()
            .filter(|p| (&p.model, p.attempt) == answered_by)
            .map(|p| p.delta.as_str())
            .collect();
        assert_eq!(streamed, answer, "{request_id}: partials do not add up to the answer");
        // Question 0 (every call breaks), and any question whose retries all failed on a loaded
        // machine: answered from the passages, which the stream ends with.
        if answers[request_id].status == AnswerStatus::Extractive {
            assert_eq!(last.model, "extractive");
            continue;
        }
        assert_ne!(request_id, "stream-0", "every call for it broke, yet a model answered");
        restored += 1;
        for (kind, value) in values {
            assert!(streamed.contains(value.as_str()), "{kind} not restored in the partials");
        }
    }
    assert!(restarted > 0, "no question saw a broken stream and a restart");
    assert!(
        restored >= count / 2,
        "only {restored} of {count} questions were answered by the model"
    );
    assert!(llm.requests().iter().all(|r| r.body.contains("\"stream\":true")));
}

// ---------------------------------------------------------------------------------------------
// Resilience

/// 30% of calls fail, each failure kind in turn.
fn flaky() -> Script {
    Arc::new(|_, call| match call % 20 {
        0 => Behaviour::RateLimited { retry_after_s: 1 },
        3 => Behaviour::Status(500),
        7 => Behaviour::Status(503),
        10 => Behaviour::Hang(Duration::from_secs(3)),
        13 => Behaviour::Reset,
        17 => Behaviour::Malformed,
        _ => Behaviour::Answer,
    })
}

fn marker_of(body: &str) -> Option<String> {
    let request: serde_json::Value = serde_json::from_str(body).ok()?;
    let user = user_message(&request);
    let start = user.find("(ref ")?;
    Some(user[start..].split(')').next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_provider_failures_are_absorbed_and_retry_after_is_honoured() {
    let llm = ScriptedLlm::start(flaky(), echo_placeholders()).await;
    let running = start("flaky", Setup::openai(&llm.url)).await;
    let count = 120;
    let messages = (0..count)
        .map(|i| {
            question(
                &format!("flaky-{i}"),
                TENANTS[i % 5],
                &format!("How long do refunds take? (ref r{i})"),
                "qa",
                serde_json::json!({}),
            )
        })
        .collect();
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = (0..count).map(|i| format!("flaky-{i}")).collect();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(240)).await;
    for answer in answers.values() {
        match answer.status {
            AnswerStatus::Ok => assert!(answer.answer.is_some()),
            // Retries ran out: the passages answer, and say why.
            AnswerStatus::Extractive => assert!(answer.provenance.fallback_reason.is_some()),
            AnswerStatus::Failed => assert!(answer.provenance.reason.is_some()),
            other => panic!("unexpected status {other:?}"),
        }
    }
    let audit = audit_events(&running.audit_topic, count).await;
    for (event, _) in &audit {
        assert!(event.attempts.len() <= 4, "retries are bounded: {:?}", event.attempts);
    }
    let requests = llm.requests();
    let failures = requests.iter().filter(|r| r.behaviour != Behaviour::Answer).count();
    assert!(
        failures * 100 / requests.len() >= 20,
        "{failures} of {} calls failed",
        requests.len()
    );
    // Every 429 said "retry after 1 s": the same question's next call came no sooner.
    let mut checked = 0;
    for (position, request) in requests.iter().enumerate() {
        if request.behaviour != (Behaviour::RateLimited { retry_after_s: 1 }) {
            continue;
        }
        let marker = marker_of(&request.body).unwrap();
        if let Some(next) = requests[position + 1..]
            .iter()
            .find(|r| marker_of(&r.body).as_deref() == Some(&marker))
        {
            let gap = next.at - request.at;
            assert!(
                gap >= Duration::from_millis(990),
                "{marker} retried {gap:?} after a 429 with Retry-After: 1"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} rate-limited calls were retried");
    // Some questions were answered on a later attempt: the audit shows the failed ones too.
    assert!(audit
        .iter()
        .any(|(e, _)| e.attempts.len() > 1 && e.status == AnswerStatus::Ok));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_circuit_sends_questions_to_the_fallback_model() {
    let primary = ScriptedLlm::start(Arc::new(|_, _| Behaviour::Status(503)), echo_placeholders()).await;
    let fallback = ScriptedLlm::start(always_answer(), echo_placeholders()).await;
    let setup = Setup {
        models: format!(
            "[{{ name: primary, provider: openai, base_url: \"{}\", model: big, timeout_ms: 1000 }}, \
              {{ name: fallback, provider: openai, base_url: \"{}\", model: small, timeout_ms: 1000 }}]",
            primary.url, fallback.url
        ),
        generate_extra: ", circuit_breaker: { failure_threshold: 3, open_ms: 600000 }".to_owned(),
        ..Setup::openai("unused")
    };
    let running = start("fallback", setup).await;
    // First wave: the primary fails until its circuit opens.
    let first: Vec<_> = (0..3)
        .map(|i| {
            question(
                &format!("fb-{i}"),
                "acme",
                "Which warranty applies?",
                "qa",
                serde_json::json!({}),
            )
        })
        .collect();
    produce_all(&running.topology.input, first).await;
    let ids: HashSet<String> = (0..3).map(|i| format!("fb-{i}")).collect();
    answers_for(&running.topology.output, &ids, Duration::from_secs(60)).await;
    let calls_before = primary.requests().len();
    assert!(calls_before >= 3);
    // Second wave: the open circuit keeps the primary out of it entirely.
    let second: Vec<_> = (3..23)
        .map(|i| {
            question(
                &format!("fb-{i}"),
                "acme",
                "Which warranty applies?",
                "qa",
                serde_json::json!({}),
            )
        })
        .collect();
    produce_all(&running.topology.input, second).await;
    let ids: HashSet<String> = (0..23).map(|i| format!("fb-{i}")).collect();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(60)).await;
    assert_eq!(
        primary.requests().len(),
        calls_before,
        "the primary was called while its circuit was open"
    );
    for i in 3..23 {
        let answer = &answers[&format!("fb-{i}")];
        assert_eq!(answer.status, AnswerStatus::Ok);
        assert_eq!(answer.provenance.model.as_deref(), Some("fallback"));
        assert_eq!(
            answer.provenance.fallback_reason.as_deref(),
            Some("primary failed (circuit_open)")
        );
    }
    for i in 0..3 {
        let answer = &answers[&format!("fb-{i}")];
        assert_eq!(answer.provenance.model.as_deref(), Some("fallback"), "{answer:?}");
        assert!(answer
            .provenance
            .fallback_reason
            .as_deref()
            .unwrap()
            .starts_with("primary failed"));
    }
}

// ---------------------------------------------------------------------------------------------
// Tenant isolation, task handling

/// Cites every passage it was given.
/// Answers with the words of passage 1 (an answer the passages support) and cites every passage.
fn cite_all() -> Responder {
    Arc::new(|request| {
        let user = user_message(request);
        let cited: String = (1..=10)
            .filter(|n| user.contains(&format!("\n[{n}] ")))
            .map(|n| format!("[{n}]"))
            .collect();
        let first: String = user
            .lines()
            .find_map(|line| line.strip_prefix("[1] "))
            .unwrap_or_default()
            .split_whitespace()
            .take(10)
            .collect::<Vec<_>>()
            .join(" ");
        format!("The documents say: {first} {cited}.")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_never_cite_another_tenants_documents() {
    let llm = ScriptedLlm::start(always_answer(), cite_all()).await;
    let mut setup = Setup::openai(&llm.url);
    setup.retrieve_extra = ", min_score: -1".to_owned();
    let running = start("tenants", setup).await;
    let count = 500;
    let asks = [
        "refund policy",
        "shipping times",
        "warranty",
        "support hours",
        "security",
        "prices",
        "acme refunds",
        "globex shipping",
    ];
    let messages = (0..count)
        .map(|i| {
            question(
                &format!("t-{i}"),
                TENANTS[i % 5],
                &format!("Tell me about {} (ref t{i})", asks[i % asks.len()]),
                "qa",
                serde_json::json!({}),
            )
        })
        .collect();
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = (0..count).map(|i| format!("t-{i}")).collect();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(300)).await;
    let mut citations = 0;
    for answer in answers.values() {
        assert_eq!(answer.status, AnswerStatus::Ok);
        assert!(!answer.citations.is_empty());
        for citation in &answer.citations {
            assert!(
                citation.doc_id.starts_with(&format!("{}-", answer.tenant)),
                "{} cited {}",
                answer.tenant,
                citation.doc_id
            );
            citations += 1;
        }
    }
    assert!(citations >= count * 3, "{citations} citations");
    // And the passages sent to the model were the tenant's own.
    for body in llm.bodies() {
        let user = user_message(&serde_json::from_str(&body).unwrap());
        let marker = user.rsplit("(ref t").next().unwrap().trim_end_matches(')');
        let tenant = TENANTS[marker.parse::<usize>().unwrap() % 5];
        for other in TENANTS.iter().filter(|t| **t != tenant) {
            assert!(
                !user.contains(&format!("] ({other} ")),
                "{tenant}'s prompt holds a passage of {other}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn extract_answers_are_schema_valid_json_or_failed_with_the_validation_error() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let responder: Responder = Arc::new(move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        let messages = request["messages"].as_array().unwrap();
        let asked = messages.iter().find(|m| m["role"] == "user").unwrap()["content"]
            .as_str()
            .unwrap();
        let repairing = messages.len() > 2;
        if asked.contains("GOOD") || (asked.contains("REPAIRABLE") && repairing) {
            r#"Here you go: {"refund_days": 30, "contact": "[EMAIL_1]"}"#.to_owned()
        } else {
            r#"{"refund_days": "thirty days"}"#.to_owned()
        }
    });
    let llm = ScriptedLlm::start(always_answer(), responder).await;
    let running = start("extract", Setup::openai(&llm.url)).await;
    let schema = serde_json::json!({
        "type": "object",
        "required": ["refund_days"],
        "properties": {"refund_days": {"type": "integer"}, "contact": {"type": ["string", "null"]}}
    });
    let options = serde_json::json!({ "extract_schema": schema });
    let messages = vec![
        question(
            "x-good",
            "acme",
            "GOOD: how many days for refunds? Answer to ops@acme.example",
            "extract",
            options.clone(),
        ),
        question(
            "x-repair",
            "acme",
            "REPAIRABLE: how many days for refunds? Answer to ops@acme.example",
            "extract",
            options.clone(),
        ),
        question(
            "x-bad",
            "acme",
            "BAD: how many days for refunds?",
            "extract",
            options.clone(),
        ),
    ];
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = ["x-good", "x-repair", "x-bad"].map(String::from).into();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(60)).await;
    let good = &answers["x-good"];
    assert_eq!(good.status, AnswerStatus::Ok);
    assert_eq!(
        good.data,
        Some(serde_json::json!({"refund_days": 30, "contact": "ops@acme.example"}))
    );
    assert!(!good.citations.is_empty());
    assert_eq!(
        answers["x-repair"].status,
        AnswerStatus::Ok,
        "{:?}",
        answers["x-repair"]
    );
    let bad = &answers["x-bad"];
    assert_eq!(bad.status, AnswerStatus::Failed);
    let reason = bad.provenance.reason.as_deref().unwrap();
    assert!(
        reason.contains("/refund_days") && reason.contains("not of type"),
        "{reason}"
    );
    assert!(llm.bodies().iter().all(|b| !b.contains("ops@acme.example")));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_context_and_blocked_questions_call_no_model() {
    let llm = ScriptedLlm::start(always_answer(), echo_placeholders()).await;
    let mut setup = Setup::openai(&llm.url);
    setup.retrieve_extra = ", min_score: 0.6".to_owned();
    setup.mask_extra = ", actions: { ssn: block }".to_owned();
    let running = start("nocontext", setup).await;
    let messages = vec![
        question(
            "n-1",
            "acme",
            "What is the airspeed velocity of an unladen swallow?",
            "qa",
            serde_json::json!({}),
        ),
        question(
            "n-2",
            "acme",
            "My SSN is 123-45-6789, what is the acme refunds policy?",
            "qa",
            serde_json::json!({}),
        ),
    ];
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = ["n-1", "n-2"].map(String::from).into();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(60)).await;
    assert_eq!(answers["n-1"].status, AnswerStatus::NoContext);
    assert_eq!(answers["n-2"].status, AnswerStatus::Blocked);
    assert!(answers["n-2"].provenance.reason.as_deref().unwrap().ends_with("SSN"));
    assert!(llm.bodies().is_empty());
    let audit = audit_events(&running.audit_topic, 2).await;
    assert!(audit.iter().all(|(_, text)| !text.contains("123-45-6789")));
}

/// Replies that are not answers: nothing, bare citation markers, the question said again.
fn non_answers() -> Responder {
    Arc::new(|request| {
        let user = user_message(request);
        let asked = user.rsplit("Request: ").next().unwrap_or_default().to_owned();
        if asked.contains("(empty)") {
            String::new()
        } else if asked.contains("(markers)") {
            "1. [1] 2. [2] 3. [3]".to_owned()
        } else {
            asked
        }
    })
}

/// A reply that is empty, only citation markers, or the question again is never `ok`: with
/// `fallback_extractive` the passages answer (`extractive`, with sources and the reason), without
/// it the reply is `low_confidence` with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn non_answers_are_never_ok() {
    let llm = ScriptedLlm::start(always_answer(), non_answers()).await;
    let ask = |id: &str, text: &str| question(id, "acme", text, "qa", serde_json::json!({}));
    let asked = [
        (
            "na-empty",
            "What is the acme refunds policy? (empty)",
            "empty or only citation markers",
        ),
        (
            "na-markers",
            "How fast does acme ship orders? (markers)",
            "empty or only citation markers",
        ),
        (
            "na-echo",
            "When does acme answer support tickets?",
            "restated the question",
        ),
    ];
    for extractive in [true, false] {
        let mut setup = Setup::openai(&llm.url);
        setup.generate_extra = format!(", fallback_extractive: {extractive}");
        let running = start(if extractive { "nonanswer-x" } else { "nonanswer" }, setup).await;
        let suffix = if extractive { "x" } else { "m" };
        let messages = asked
            .iter()
            .map(|(id, text, _)| ask(&format!("{id}-{suffix}"), text))
            .collect();
        produce_all(&running.topology.input, messages).await;
        let ids: HashSet<String> = asked.iter().map(|(id, _, _)| format!("{id}-{suffix}")).collect();
        let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(60)).await;
        for (id, _, why) in &asked {
            let answer = &answers[&format!("{id}-{suffix}")];
            if extractive {
                assert_eq!(answer.status, AnswerStatus::Extractive, "{answer:?}");
                assert_eq!(answer.provenance.model.as_deref(), Some("extractive"));
                assert!(
                    !answer.citations.is_empty(),
                    "an extractive answer shows its sources: {answer:?}"
                );
                assert!(
                    answer.answer.as_deref().unwrap_or_default().contains("acme"),
                    "{answer:?}"
                );
            } else {
                assert_eq!(answer.status, AnswerStatus::LowConfidence, "{answer:?}");
                assert!(
                    answer.provenance.reason.as_deref().unwrap_or_default().contains(why),
                    "{answer:?}"
                );
            }
        }
        let audit = audit_events(&running.audit_topic, asked.len()).await;
        assert!(audit.iter().all(|(event, _)| event.status != AnswerStatus::Ok));
    }
}

// ---------------------------------------------------------------------------------------------
// The local model: a real answer, offline

const LOCAL_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
);

#[tokio::test(flavor = "multi_thread")]
async fn the_local_model_answers_from_the_passages_offline() {
    let setup = Setup {
        models: format!("[{{ name: smollm2, provider: local, model_path: \"{LOCAL_MODEL}\", timeout_ms: 120000 }}]"),
        generate_extra: ", max_output_tokens: 48".to_owned(),
        ..Setup::openai("unused")
    };
    let running = start("local", setup).await;
    let messages = vec![question(
        "local-1",
        "acme",
        "I am Mary Johnson. How many days do I have to return a purchase for a refund?",
        "qa",
        serde_json::json!({}),
    )];
    produce_all(&running.topology.input, messages).await;
    let ids: HashSet<String> = ["local-1".to_owned()].into();
    let answers = answers_for(&running.topology.output, &ids, Duration::from_secs(180)).await;
    let answer = &answers["local-1"];
    // The 135M model's reply is used when it is an answer the passages support; otherwise the
    // passages answer and say why. Either way the asker gets the fact, with its source.
    match answer.status {
        AnswerStatus::Ok => {
            assert_eq!(answer.provenance.model.as_deref(), Some("smollm2"));
            assert!(answer.provenance.fallback_reason.is_none(), "{answer:?}");
        }
        AnswerStatus::Extractive => {
            let why = answer.provenance.fallback_reason.as_deref().unwrap_or_default();
            assert!(why.starts_with("the model's reply"), "{answer:?}");
        }
        _ => panic!("{answer:?}"),
    }
    assert!(!answer.citations.is_empty(), "{answer:?}");
    let text = answer.answer.as_deref().unwrap();
    assert!(!text.trim().is_empty());
    assert!(
        answer.provenance.usage.prompt_tokens > 50 && answer.provenance.usage.completion_tokens > 0,
        "{:?}",
        answer.provenance.usage
    );
    let audit = audit_events(&running.audit_topic, 1).await;
    assert!(
        audit[0].0.masked_question.starts_with("I am [PERSON_1]."),
        "{}",
        audit[0].0.masked_question
    );
}
