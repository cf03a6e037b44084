//! Masking throughput, one thread, release profile:
//!
//!     cargo bench -p ragstream-pii
//!
//! Detects and masks every text of the independent evaluation set
//! (`tests/fixtures/pii-independent/test.jsonl`) and of the generator's own labeled set
//! (`tests/fixtures/pii/labeled.jsonl`) again and again for five seconds each, one scope per text
//! as per question, and prints characters per second of input. Quality on the same sets:
//! `ragstream pii evaluate FILE` or `cargo test --test integration pii_labeled -- --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ragstream_pii::evaluation::read_labeled;
use ragstream_pii::{Detector, PiiScope};

fn run(name: &str, path: &str, detector: &Arc<Detector>) {
    let file = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|error| panic!("{file}: {error}"));
    let texts: Vec<String> = read_labeled(&text)
        .unwrap_or_else(|error| panic!("{file}: {error}"))
        .into_iter()
        .map(|record| record.text)
        .collect();
    let characters: usize = texts.iter().map(|t| t.chars().count()).sum();
    let started = Instant::now();
    let (mut rounds, mut masked) = (0usize, 0usize);
    while started.elapsed() < Duration::from_secs(5) {
        for text in &texts {
            let (_, counts) = PiiScope::new(detector.clone()).mask(text);
            masked += counts.values().sum::<u32>() as usize;
        }
        rounds += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "pii masking, {name}: {} texts ({:.0} chars avg), {rounds} rounds in {seconds:.1} s: {:.2} M chars/s, {:.0} texts/s, {} values masked per round",
        texts.len(),
        characters as f64 / texts.len() as f64,
        (characters * rounds) as f64 / seconds / 1e6,
        (texts.len() * rounds) as f64 / seconds,
        masked / rounds.max(1)
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and must not run this.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let detector = Arc::new(Detector::default());
    // Warm-up: compiles the patterns and loads the name lists.
    let _ = PiiScope::new(detector.clone()).mask("Hi Priya, call 020 7946 0958.");
    run(
        "independent test set",
        "tests/fixtures/pii-independent/test.jsonl",
        &detector,
    );
    run("generator's labeled set", "tests/fixtures/pii/labeled.jsonl", &detector);
}
