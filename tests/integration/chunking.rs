//! Documents through decode_document, chunk and embed against the real broker, with the real
//! all-MiniLM-L6-v2 tokenizer and model (fetched by deploy/local/models.sh).

use crate::common;

use std::time::Duration;

use common::*;
use ragstream::contracts::{ChunkedDocument, DocumentOp};

fn document(i: usize) -> String {
    let body = "Paid leave accrues monthly and unused days carry over until the end of April. ".repeat(i % 7 + 1);
    let text = format!("# Policy {i}\n\n{body}\n\n## Exceptions\n\nManagers may approve exceptions in writing.");
    serde_json::json!({
        "schema_version": 1, "doc_id": format!("doc-{i}"), "tenant": if i % 2 == 0 { "acme" } else { "globex" },
        "op": "upsert", "version": 1, "title": format!("Handbook {i}"), "text": text,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_chunked_and_embedded_with_the_local_model() {
    let mut topology = TestTopology::new("chunk");
    let model_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/all-MiniLM-L6-v2");
    topology.stages = format!(
        "[{{ type: decode_document }}, \
          {{ type: chunk, model_dir: \"{model_dir}\", max_tokens: 64, overlap_tokens: 8 }}, \
          {{ type: embed, model_dir: \"{model_dir}\", batch_size: 16 }}]"
    );
    topology.create_topics(3).await;
    let mut messages: Vec<Outgoing> = (0..20)
        .map(|i| Outgoing {
            partition: None,
            key: Some(format!("doc-{i}").into_bytes()),
            payload: document(i).into_bytes(),
        })
        .collect();
    let empty = r#"{"schema_version":1,"doc_id":"empty","tenant":"acme","op":"upsert","version":1,"text":"   "}"#;
    let delete = r#"{"schema_version":1,"doc_id":"doc-3","tenant":"globex","op":"delete","version":2}"#;
    messages.push(Outgoing {
        partition: None,
        key: Some(b"empty".to_vec()),
        payload: empty.as_bytes().to_vec(),
    });
    messages.push(Outgoing {
        partition: None,
        key: Some(b"doc-3".to_vec()),
        payload: delete.as_bytes().to_vec(),
    });
    produce_all(&topology.input, messages).await;

    let mut process = Ragstream::start(&topology);
    process.wait_ready(Duration::from_secs(30)).await;
    let output = read_topic(&topology.output, 21, Duration::from_secs(60)).await;
    let dead = read_topic(&topology.dead_letter, 1, Duration::from_secs(60)).await;
    assert_eq!(output.len(), 21, "{}", process.log_text());
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers["ragstream.dlq.reason"], "document has no text to index");
    assert_eq!(dead[0].headers["ragstream.dlq.stage"], "chunk");

    for message in &output {
        let chunked: ChunkedDocument = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(message.key.as_deref(), Some(chunked.header.doc_id.as_bytes()));
        if chunked.header.op == DocumentOp::Delete {
            assert!(chunked.chunks.is_empty());
            continue;
        }
        assert!(chunked.chunks.len() >= 2, "each document has at least its two sections");
        for (position, chunk) in chunked.chunks.iter().enumerate() {
            assert_eq!(chunk.chunk_id, format!("{}:1:{position}", chunked.header.doc_id));
            assert!(chunk.token_count + 2 <= 64);
            let vector = chunk.vector.as_ref().expect("every chunk is embedded");
            assert_eq!(vector.len(), 384);
            let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
        }
        assert_eq!(chunked.embedding_model.as_deref(), Some("all-MiniLM-L6-v2"));
        let last = chunked.chunks.last().unwrap();
        assert!(last.context.ends_with("> Exceptions"), "{}", last.context);
    }
    process.sigterm();
    assert_eq!(
        process.wait_exit(Duration::from_secs(30)).await.and_then(|s| s.code()),
        Some(0)
    );
}
