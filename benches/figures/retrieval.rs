//! Retrieval quality on documentation this project did not write: printed figures, nothing
//! asserted.
//!
//!     cargo bench --bench figures -- retrieval
//!
//! The corpus is the Cargo, rustc and rustdoc books as the Rust toolchain installs them
//! (`$(rustc --print sysroot)/share/doc/rust/html`, about 280 pages; skipped when the toolchain
//! has no docs). The questions, `corpus/retrieval-rustdocs.jsonl`, were written by someone who
//! read one page per question and never ran a retriever: for each, the page that answers it.
//! Pages are read as `ragstream ingest` reads HTML, cut as the `chunk` stage does, embedded with
//! the local model and written to a LanceDB table with the full-text index upkeep builds. Each
//! question is then searched as the `retrieve` stage searches (no `min_score`, so only ranking
//! counts), with vector search alone and with hybrid search:
//!
//! - recall@5: the answering page is among the top 5 passages;
//! - MRR@10: the mean of 1 / the rank of its first passage in the top 10 (0 when absent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ragstream::chunk::{chunk_text, ChunkLimits, ModelTokenizer};
use ragstream::embed::{LocalEmbedder, Pooling};
use ragstream::ingest::read_document;
use ragstream::store::{ChunkStore, MaintenancePolicy, SearchMode, SearchScope, VectorIndexKind};

use crate::index::embedded_write;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BOOKS: [&str; 3] = ["cargo", "rustc", "rustdoc"];
const TENANT: &str = "docs";

#[derive(serde::Deserialize)]
struct Question {
    book: String,
    page: String,
    question: String,
}

/// Where the toolchain keeps its HTML books, if it installed them.
fn docs_root() -> Option<PathBuf> {
    let output = Command::new("rustc").args(["--print", "sysroot"]).output().ok()?;
    let root = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim()).join("share/doc/rust/html");
    BOOKS.iter().all(|book| root.join(book).is_dir()).then_some(root)
}

/// The pages of `book`: every HTML file but the generated whole-book, contents and error pages.
fn pages(root: &Path, book: &str) -> Vec<(String, PathBuf)> {
    let book_root = root.join(book);
    let mut pages: Vec<(String, PathBuf)> = walkdir::WalkDir::new(&book_root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "html"))
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy();
            !matches!(name.as_ref(), "print.html" | "toc.html" | "404.html" | "CHANGELOG.html")
        })
        .map(|entry| {
            let relative = entry.path().strip_prefix(&book_root).unwrap().display().to_string();
            (format!("{book}/{relative}"), entry.into_path())
        })
        .collect();
    pages.sort();
    pages
}

/// Reads, chunks, embeds and indexes every page; returns the number of chunks.
async fn index_pages(store: &mut ChunkStore, model: &LocalEmbedder, pages: &[(String, PathBuf)]) -> usize {
    let model_dir = Path::new(ROOT).join("models/all-MiniLM-L6-v2");
    let tokenizer = ModelTokenizer::from_model_dir(&model_dir).expect("run deploy/local/models.sh");
    // The default topology's chunk settings.
    let limits = ChunkLimits {
        max_tokens: 256,
        overlap_tokens: 32,
        special_tokens: 2,
    };
    let mut chunk_count = 0;
    let mut writes = Vec::new();
    for (doc_id, path) in pages {
        let Ok(document) = read_document(path, TENANT, Some(1)) else {
            continue;
        };
        let chunks = chunk_text(
            document.text.as_deref().unwrap_or_default(),
            document.header.title.as_deref(),
            limits,
            &tokenizer,
        );
        chunk_count += chunks.len();
        writes.push(embedded_write(doc_id, document, chunks, model));
        if writes.len() == 50 {
            store.apply(&writes).await.unwrap();
            writes.clear();
        }
    }
    store.apply(&writes).await.unwrap();
    // What the index stage's upkeep builds with its defaults at this size: the full-text index
    // (the vector index waits for 10,000 chunks, so vector search is exact here).
    store
        .maintain(&MaintenancePolicy {
            vector_index_min_rows: 10_000,
            vector_index: VectorIndexKind::IvfHnswSq,
            full_text_index: true,
            keep_versions_for: Duration::ZERO,
        })
        .await
        .unwrap();
    chunk_count
}

/// Recall@5, MRR@10 and the p50 search time of one mode over every question.
struct Scores {
    found_in_5: usize,
    reciprocal_ranks: f64,
    millis: Vec<f64>,
}

/// Runs this benchmark and prints its figures.
pub async fn run() {
    let Some(root) = docs_root() else {
        println!("retrieval: skipped (the toolchain has no HTML books; `rustup component add rust-docs`)");
        return;
    };
    let questions: Vec<Question> = std::fs::read_to_string(Path::new(ROOT).join("corpus/retrieval-rustdocs.jsonl"))
        .expect("corpus/retrieval-rustdocs.jsonl")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("a question line"))
        .collect();
    let pages: Vec<(String, PathBuf)> = BOOKS.iter().flat_map(|book| pages(&root, book)).collect();
    let model_dir = Path::new(ROOT).join("models/all-MiniLM-L6-v2");
    let model = LocalEmbedder::load(&model_dir, Pooling::Mean, true, 256).expect("run deploy/local/models.sh");
    let dir = tempfile::tempdir().unwrap();
    let mut store = ChunkStore::open(dir.path().to_str().unwrap(), "chunks").await.unwrap();
    let started = Instant::now();
    let chunks = index_pages(&mut store, &model, &pages).await;
    println!(
        "corpus: {} pages of the {} books ({chunks} chunks) indexed in {:.0} s; {} questions",
        pages.len(),
        BOOKS.join(", "),
        started.elapsed().as_secs_f64(),
        questions.len()
    );
    let scope = SearchScope {
        tenant: TENANT,
        indexed_since: None,
    };
    let mut scores: BTreeMap<&str, Scores> = BTreeMap::new();
    for question in &questions {
        let answer_page = format!("{}/{}", question.book, question.page);
        let vector = model.embed(&[question.question.as_str()]).expect("embedded").remove(0);
        for (name, mode) in [("vector", SearchMode::Vector), ("hybrid", SearchMode::Hybrid)] {
            let searched = Instant::now();
            let hits = store
                .passages(scope, &question.question, &vector, 10, mode, f32::MIN)
                .await
                .unwrap();
            let score = scores.entry(name).or_insert(Scores {
                found_in_5: 0,
                reciprocal_ranks: 0.0,
                millis: Vec::new(),
            });
            score.millis.push(searched.elapsed().as_secs_f64() * 1e3);
            let rank = hits.iter().position(|hit| hit.doc_id == answer_page);
            if rank.is_some_and(|rank| rank < 5) {
                score.found_in_5 += 1;
            }
            score.reciprocal_ranks += rank.map_or(0.0, |rank| 1.0 / (rank + 1) as f64);
        }
    }
    let total = questions.len() as f64;
    println!(
        "  {:<8} {:>9} {:>8} {:>15}",
        "search", "recall@5", "MRR@10", "p50 search ms"
    );
    for (name, mut score) in scores {
        score.millis.sort_by(f64::total_cmp);
        println!(
            "  {name:<8} {:>8.1}% {:>8.3} {:>15.1}",
            100.0 * score.found_in_5 as f64 / total,
            score.reciprocal_ranks / total,
            score.millis[score.millis.len() / 2]
        );
    }
}
