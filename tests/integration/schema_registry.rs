//! Avro in the Confluent wire format through the real broker and a real Schema Registry
//! (crabka-schema-registry, started by deploy/local/registry.sh): a client writes questions in
//! Avro with schema_registry_converter, ragstream answers in Avro, and a client decodes the
//! answers and audit events with the registry.

use crate::answering::{index_corpus, MODEL_DIR};
use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use apache_avro::types::Value as Avro;
use common::scripted_llm::{always_answer, echo_placeholders, ScriptedLlm};
use common::*;
use ragstream::contracts::{Answer, AnswerStatus};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};

/// The registry the tests use (deploy/local/registry.sh starts it; scripts/test.sh does that).
fn registry_url() -> String {
    std::env::var("RAGSTREAM_TEST_SCHEMA_REGISTRY").unwrap_or_else(|_| "http://127.0.0.1:8081".to_owned())
}

fn settings() -> SrSettings {
    SrSettings::new(registry_url())
}

/// A question as an upstream producer would write it: an Avro record of `questions.avsc`,
/// registered under `<topic>-value` and framed by the converter.
async fn avro_question(encoder: &AvroEncoder, topic: &str, request_id: &str, tenant: &str, text: &str) -> Vec<u8> {
    let schema = include_str!("../../schemas/avro/questions.avsc");
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.to_owned(),
        false,
        SuppliedSchema::new(
            Some("dev.ragstream.v1.Question".to_owned()),
            SchemaType::Avro,
            schema.to_owned(),
        ),
    );
    let fields = vec![
        ("schema_version", Avro::Int(1)),
        ("request_id", Avro::String(request_id.to_owned())),
        ("tenant", Avro::String(tenant.to_owned())),
        ("user", Avro::String(format!("user-{request_id}"))),
        ("question", Avro::String(text.to_owned())),
        ("task", Avro::Enum(0, "qa".to_owned())),
        ("options", Avro::Union(0, Box::new(Avro::Null))),
        (
            "metadata",
            Avro::Union(
                1,
                Box::new(Avro::Map(HashMap::from([(
                    "channel".to_owned(),
                    Avro::String("avro".to_owned()),
                )]))),
            ),
        ),
    ];
    encoder
        .encode(fields, strategy)
        .await
        .unwrap_or_else(|e| panic!("encoding a question: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_questions_get_avro_answers_and_audit_events_through_the_registry() {
    let llm = ScriptedLlm::start(always_answer(), echo_placeholders()).await;
    let index = tempfile::tempdir().unwrap();
    index_corpus(index.path()).await;
    let mut topology = TestTopology::new("avro");
    let audit_topic = unique("avro-audit");
    topology.extra_sinks = vec![("audit".to_owned(), audit_topic.clone())];
    topology.sink_settings = vec![
        ("out".to_owned(), "format: avro, schema: answers".to_owned()),
        ("audit".to_owned(), "format: avro, schema: audit".to_owned()),
    ];
    topology.top_extra = format!("schema_registry:\n  url: {}\n", registry_url());
    // An unknown schema id is the input's fault (404); keep any retry short anyway.
    topology.pipeline_extra = "    retry: { max_attempts: 2, initial_backoff_ms: 50, max_backoff_ms: 100 }".to_owned();
    topology.stages = format!(
        "[{{ type: decode_question }}, {{ type: mask_pii }}, \
          {{ type: retrieve, uri: \"{uri}\", embedding: {{ model_dir: \"{MODEL_DIR}\" }}, top_k: 3, min_score: 0.2 }}, \
          {{ type: generate, models: [{{ name: primary, provider: openai, base_url: \"{url}\", model: scripted, timeout_ms: 1000 }}] }}, \
          {{ type: restore_pii }}, {{ type: emit_answer, audit_sink: audit }}]",
        uri = index.path().display(),
        url = llm.url,
    );
    topology.create_topics(3).await;
    let mut process = Ragstream::start(&topology);
    process.wait_ready(Duration::from_secs(60)).await;

    // Avro questions, one JSON question on the same topic, and a wire-format message naming a
    // schema id the registry does not have.
    let encoder = AvroEncoder::new(settings());
    let mut messages = Vec::new();
    let mut expected = HashSet::new();
    for i in 0..6 {
        let request_id = format!("avro-{i}");
        let tenant = crate::answering::TENANTS[i % 5];
        let payload = avro_question(
            &encoder,
            &topology.input,
            &request_id,
            tenant,
            "What is the refund policy?",
        )
        .await;
        assert_eq!(payload[0], 0, "the Confluent wire format starts with the magic byte");
        messages.push(Outgoing {
            partition: None,
            key: Some(request_id.clone().into_bytes()),
            payload,
        });
        expected.insert(request_id);
    }
    let json_question = serde_json::json!({
        "schema_version": 1, "request_id": "json-0", "tenant": "acme", "user": "u",
        "question": "How fast is shipping?", "task": "qa"
    });
    messages.push(Outgoing {
        partition: None,
        key: Some(b"json-0".to_vec()),
        payload: json_question.to_string().into_bytes(),
    });
    expected.insert("json-0".to_owned());
    let unknown_id = [0u8, 0x7f, 0xff, 0x00, 0x01, 2, 4, 6];
    messages.push(Outgoing {
        partition: None,
        key: Some(b"unknown-schema".to_vec()),
        payload: unknown_id.to_vec(),
    });
    produce_all(&topology.input, messages).await;

    // Answers: every one in the wire format, decoded by the registry's schema for the topic.
    let decoder = AvroDecoder::new(settings());
    let mut reader = TopicReader::new(&topology.output);
    reader
        .read_until(|received| received.len() >= expected.len(), Duration::from_secs(120))
        .await;
    let mut answers: HashMap<String, Answer> = HashMap::new();
    for message in &reader.received {
        assert_eq!(message.payload[0], 0, "an answer not in the wire format");
        let decoded = decoder.decode(Some(&message.payload)).await.expect("decodable answer");
        assert_eq!(
            decoded.name.map(|n| n.fullname(None)).as_deref(),
            Some("dev.ragstream.v1.Answer")
        );
        let answer: Answer = apache_avro::from_value(&decoded.value).expect("an Answer");
        answers.insert(answer.request_id.clone(), answer);
    }
    assert_eq!(answers.keys().cloned().collect::<HashSet<_>>(), expected);
    for answer in answers.values() {
        assert_eq!(answer.status, AnswerStatus::Ok, "{answer:?}");
        assert!(!answer.citations.is_empty(), "{answer:?}");
        assert!(
            answer.citations.iter().all(|c| c.doc_id.starts_with(&answer.tenant)),
            "{answer:?}"
        );
    }
    assert_eq!(llm.bodies().len(), expected.len(), "one model call per question");

    // The answer subject holds ragstream's schema, and the answers carry its id.
    let latest: serde_json::Value = reqwest::get(format!(
        "{}/subjects/{}-value/versions/latest",
        registry_url(),
        topology.output
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = latest["id"].as_u64().expect("registered id") as u32;
    let first = &reader.received[0].payload;
    assert_eq!(u32::from_be_bytes([first[1], first[2], first[3], first[4]]), id);

    // Audit events in Avro too, one per answered question.
    let audit = read_topic(&audit_topic, expected.len(), Duration::from_secs(60)).await;
    let mut answered = HashSet::new();
    for message in &audit {
        let decoded = decoder
            .decode(Some(&message.payload))
            .await
            .expect("decodable audit event");
        let record = match decoded.value {
            Avro::Record(fields) => fields,
            other => panic!("not a record: {other:?}"),
        };
        let field = |name: &str| record.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        match field("event") {
            Some(Avro::Enum(_, event)) => assert_eq!(event, "question_answered"),
            other => panic!("event is {other:?}"),
        }
        if let Some(Avro::Union(_, request_id)) = field("request_id") {
            if let Avro::String(id) = *request_id {
                answered.insert(id);
            }
        }
    }
    assert_eq!(answered, expected);

    // The message with the unknown schema id is dead-lettered, bytes untouched, with the reason.
    let dead = read_topic(&topology.dead_letter, 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload, unknown_id);
    let reason = &dead[0].headers["ragstream.dlq.reason"];
    assert!(reason.contains("schema id 2147418113"), "{reason}");
    assert_eq!(dead[0].headers["ragstream.dlq.stage"], "source");
}
