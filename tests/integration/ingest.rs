//! `ragstream ingest` against the real broker.

use crate::common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use ragstream::contracts::Document;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_is_ingested_and_its_unreadable_files_are_reported() {
    let topic = unique("ingest");
    create_topics(&[&topic], 3).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("handbook");
    std::fs::create_dir_all(root.join("policies")).unwrap();
    std::fs::write(root.join("leave.md"), "# Leave\n\nEmployees get 27 days of paid leave.").unwrap();
    std::fs::write(
        root.join("policies/travel.txt"),
        "Hotels are capped at 180 dollars a night.",
    )
    .unwrap();
    std::fs::write(
        root.join("policies/rates.html"),
        "<html><head><title>Rates</title></head><body><p>Same-day delivery costs 29 dollars.</p></body></html>",
    )
    .unwrap();
    std::fs::write(root.join("logo.png"), b"\x89PNG").unwrap();
    std::fs::write(root.join("broken.txt"), b"caf\xe9 latin-1, not UTF-8").unwrap();
    std::os::unix::fs::symlink(root.join("gone.md"), root.join("dangling.md")).unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_ragstream"))
        .current_dir(dir.path())
        .args([
            "ingest",
            "handbook",
            "--tenant",
            "acme",
            "--topic",
            &topic,
            "--brokers",
            &brokers(),
        ])
        // tansu 0.6.0 with memory storage mis-serves fetches inside multi-record batches.
        .args(["-X", "batch.num.messages=1"])
        .output()
        .expect("run ragstream ingest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: handbook/broken.txt: not UTF-8 text (invalid byte at offset 3)"),
        "{stderr}"
    );
    assert!(stderr.contains("error: handbook/dangling.md: cannot read"), "{stderr}");
    assert!(stdout.contains("ingested 3 files"), "{stdout}");
    assert!(stdout.contains("2 failed, 1 skipped"), "{stdout}");

    let received = read_topic(&topic, 3, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 3);
    let documents: Vec<Document> = received
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let ids: HashSet<&str> = documents.iter().map(|d| d.header.doc_id.as_str()).collect();
    assert_eq!(
        ids,
        HashSet::from([
            "handbook/leave.md",
            "handbook/policies/travel.txt",
            "handbook/policies/rates.html"
        ])
    );
    for (message, document) in received.iter().zip(&documents) {
        assert_eq!(message.key.as_deref(), Some(document.header.doc_id.as_bytes()));
        assert_eq!(document.header.tenant, "acme");
    }
    let html = documents.iter().find(|d| d.header.doc_id.ends_with(".html")).unwrap();
    assert_eq!(html.header.title.as_deref(), Some("Rates"));
    assert!(html
        .text
        .as_deref()
        .unwrap()
        .contains("Same-day delivery costs 29 dollars."));
}
