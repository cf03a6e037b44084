//! Local embedding throughput (all-MiniLM-L6-v2 with candle on this machine's CPU).
//!
//!     deploy/local/models.sh && cargo bench --bench figures -- embed
//!     RAGSTREAM_BENCH_CHUNKS=1000 cargo bench --bench figures -- embed
//!
//! Embeds N chunks of about 200 words at batch sizes 1, 8 and 32 and prints chunks/s, so the
//! figure can be compared with sentence-transformers on the same machine (23.4 chunks/s at
//! batch 32 with 2 threads, measured while planning; see shared/notes/local-models.md).

use std::path::Path;

use ragstream::embed::{LocalEmbedder, Pooling};

const SENTENCES: &[&str] = &[
    "Employees accrue paid leave every month they are employed.",
    "Unused days carry over until the end of April of the following year.",
    "Travel expenses are reimbursed within thirty days when receipts are attached.",
    "Managers may approve exceptions in writing when business needs require it.",
    "Consumer groups spread the partitions of a topic across their members.",
    "Each chunk is embedded once and stored with the version of its document.",
    "Requests that exceed the budget are answered with a clear status.",
];

/// Chunks of 12 to 20 sentences (about 130 to 220 words) in varying order, so batches need
/// padding as real ones do. (7 sentences: the multipliers must be coprime with 7.)
fn chunk(i: usize) -> String {
    (0..12 + i % 9)
        .map(|j| SENTENCES[(i * 3 + j * 5) % SENTENCES.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs this benchmark and prints its figures.
pub fn run() {
    let count: usize = std::env::var("RAGSTREAM_BENCH_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ragstream::embed::tune_allocator();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let model = LocalEmbedder::load(&dir, Pooling::Mean, true, 256).expect("run deploy/local/models.sh");
    let chunks: Vec<String> = (0..count).map(chunk).collect();
    let words: usize = chunks.iter().map(|c| c.split_whitespace().count()).sum();
    println!("{count} chunks, {} words each on average", words / count);
    crate::index::embed_rate(&model, &chunks, &[1, 8, 32], "");
}
