//! Masking throughput, one thread, release profile:
//!
//!     cargo bench -p ragstream-pii
//!
//! Detects and masks every text of the two independent evaluation sets
//! (`tests/fixtures/pii-independent/test.jsonl`, `tests/fixtures/pii-independent-v2/{test,holdout}.jsonl`)
//! and of the generator's own labeled set
//! (`tests/fixtures/pii/labeled.jsonl`) again and again for five seconds each, one scope per text
//! as per question, and prints characters per second of input. Quality on the same sets:
//! `ragstream pii evaluate FILE` or `cargo test --test integration pii_labeled -- --nocapture`.
//!
//! The anchor, in the same run over the same interval: after each set, Microsoft Presidio's
//! analyzer (spaCy en_core_web_sm, one thread) on the same file for the same five seconds, with
//! its quality on that set, when its venv exists (`deploy/local/python-pii-bench.sh` makes it
//! at `$RAGSTREAM_PII_VENV`, default `~/.cache/ragstream/pii-venv`); see
//! `benches/python/pii_presidio.py`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ragstream_pii::evaluation::read_labeled;
use ragstream_pii::{Detector, PiiScope};

const SECONDS: u64 = 5;
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(name: &str, path: &str, detector: &Arc<Detector>) {
    let file = format!("{ROOT}/../../{path}");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|error| panic!("{file}: {error}"));
    let texts: Vec<String> = read_labeled(&text)
        .unwrap_or_else(|error| panic!("{file}: {error}"))
        .into_iter()
        .map(|record| record.text)
        .collect();
    let characters: usize = texts.iter().map(|t| t.chars().count()).sum();
    let started = Instant::now();
    let (mut rounds, mut masked) = (0usize, 0usize);
    while started.elapsed() < Duration::from_secs(SECONDS) {
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

/// The Presidio anchor on the same file for the same interval; it prints its own two lines.
fn presidio(name: &str, path: &str) {
    let venv = std::env::var("RAGSTREAM_PII_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ragstream/pii-venv"));
    let python = venv.join("bin/python");
    if !python.exists() {
        println!("presidio: skipped (no venv; run deploy/local/python-pii-bench.sh)");
        return;
    }
    let status = Command::new(python)
        .arg(Path::new(ROOT).join("../../benches/python/pii_presidio.py"))
        .arg(Path::new(ROOT).join("../..").join(path))
        .args(["--seconds", &SECONDS.to_string(), "--name", name])
        .status()
        .expect("run python");
    assert!(status.success(), "pii_presidio.py: {status}");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and must not run this.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let detector = Arc::new(Detector::default());
    // Warm-up: compiles the patterns and loads the name lists.
    let _ = PiiScope::new(detector.clone()).mask("Hi Priya, call 020 7946 0958.");
    for (name, path) in [
        ("independent test set", "tests/fixtures/pii-independent/test.jsonl"),
        (
            "second independent test set",
            "tests/fixtures/pii-independent-v2/test.jsonl",
        ),
        (
            "second set's fresh draw",
            "tests/fixtures/pii-independent-v2/holdout.jsonl",
        ),
        ("generator's labeled set", "tests/fixtures/pii/labeled.jsonl"),
    ] {
        run(name, path, &detector);
        presidio(name, path);
    }
}
