//! PII masking throughput on the labeled set (`tests/fixtures/pii/labeled.jsonl`).
//!
//!     cargo bench --bench figures -- pii
//!
//! Detects and masks every record of the labeled set repeatedly and prints MB/s of input text
//! (one thread). Precision and recall on the same set: `cargo test --test integration pii_labeled -- --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ragstream::pii::{Detector, PiiScope};

/// Runs this benchmark and prints its figures.
pub fn run() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pii/labeled.jsonl"))
        .expect("labeled set");
    let texts: Vec<String> = text
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let detector = Arc::new(Detector::default());
    // Warm-up: compiles the patterns and loads the name lists.
    let _ = PiiScope::new(detector.clone()).mask(&texts[0]);
    let started = Instant::now();
    let mut rounds = 0usize;
    let mut masked = 0usize;
    while started.elapsed() < Duration::from_secs(5) {
        for text in &texts {
            // One scope per text, as per question.
            let scope = PiiScope::new(detector.clone());
            let (_, counts) = scope.mask(text);
            masked += counts.values().sum::<u32>() as usize;
        }
        rounds += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = (bytes * rounds) as f64;
    println!(
        "pii masking: {} texts, {:.1} KB per round, {rounds} rounds in {seconds:.1} s: {:.2} MB/s, {:.0} texts/s, {} values masked",
        texts.len(),
        bytes as f64 / 1024.0,
        total / seconds / 1e6,
        (texts.len() * rounds) as f64 / seconds,
        masked
    );
}
