//! The response cache's hit rate on hand-written questions over the sample corpus, retrieved
//! for real: `corpus/cache-workload.jsonl` holds 40 questions (20 per tenant), each with two
//! paraphrases written the way other users would type them. The corpus is chunked and embedded
//! with the real model into a LanceDB table; every question is embedded, searched (top 4, as the
//! default topology does) and keyed through the same prompt `generate` builds.
//!
//! A run asks 80 questions: 50% new (each question once), 30% repeats of one asked before
//! (word for word, in lower case, with other spacing, or without its question mark) and 20%
//! paraphrases of one asked before, in a random order; ten seeds. A stored answer cites the best
//! passage of the file that answers it (as a good answer would). Printed per threshold: hits,
//! by kind, and wrong hits (a cached answer to a different question).

use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::path::Path;

use ragstream::contracts::{AnswerDraft, AnswerStatus, Citation, RetrievedPassage, Task};
use ragstream::cost::{CostControlConfig, CostControls};
use ragstream::embed::LocalEmbedder;
use ragstream::llm::{assemble, estimate_tokens};
use ragstream::store::{ChunkStore, SearchMode};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// As the default topology's `retrieve`.
const TOP_K: usize = 4;
const MIN_SCORE: f32 = 0.3;
const SEEDS: u64 = 10;

#[derive(serde::Deserialize)]
struct Entry {
    tenant: String,
    question: String,
    paraphrases: Vec<String>,
    /// The corpus file that answers it.
    source: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    New,
    Repeat,
    Paraphrase,
}

/// One question of a run: its text, what it is, and which entry it asks about.
struct Asked {
    text: String,
    kind: Kind,
    entry: usize,
}

/// What retrieval gives a question: its vector and passages (the same text always gets the
/// same, so each distinct text is searched once).
struct Retrieved {
    vector: Vec<f32>,
    passages: Vec<RetrievedPassage>,
}

fn workload() -> Vec<Entry> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("corpus/cache-workload.jsonl")).expect("the workload");
    text.lines()
        .enumerate()
        .map(|(line, json)| {
            serde_json::from_str(json).unwrap_or_else(|e| panic!("corpus/cache-workload.jsonl:{}: {e}", line + 1))
        })
        .collect()
}

/// The sample corpus in a LanceDB table under `dir`, one tenant per folder.
async fn index_corpus(dir: &Path, model: &LocalEmbedder) -> ChunkStore {
    let mut store = ChunkStore::open(dir.to_str().expect("utf-8 path"), "chunks")
        .await
        .expect("store");
    for tenant in ["acme", "globex"] {
        let mut writes = Vec::new();
        for (document, chunks) in crate::index::chunked_corpus(&Path::new(ROOT).join("corpus").join(tenant), tenant) {
            let doc_id = document.header.doc_id.clone();
            writes.push(crate::index::embedded_write(&doc_id, document, chunks, model));
        }
        store.apply(&writes).await.expect("write");
    }
    store
}

/// A question asked again as users do: the same words, or changed only in case, spacing or
/// punctuation.
fn repeated(text: &str, rng: &mut impl Rng) -> String {
    match rng.random_range(0..4) {
        0 => text.to_owned(),
        1 => text.to_lowercase(),
        2 => format!(" {}  ", text.replace(' ', "  ")),
        _ => text.trim_end_matches('?').to_owned(),
    }
}

/// 80 questions: every entry once (new), 24 repeats and 16 paraphrases of entries already asked.
fn run_order(entries: &[Entry], seed: u64) -> Vec<Asked> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut fresh: Vec<usize> = (0..entries.len()).collect();
    fresh.shuffle(&mut rng);
    let (mut repeats, mut paraphrases) = (entries.len() * 3 / 5, entries.len() * 2 / 5);
    let mut unused_paraphrases: Vec<(usize, usize)> = Vec::new();
    let mut asked: Vec<Asked> = Vec::new();
    let mut asked_entries: Vec<usize> = Vec::new();
    while !fresh.is_empty() || repeats + paraphrases > 0 {
        let remaining = fresh.len() + repeats + paraphrases;
        let pick = rng.random_range(0..remaining);
        let kind = if asked_entries.is_empty() || pick < fresh.len() {
            Kind::New
        } else if pick < fresh.len() + repeats {
            Kind::Repeat
        } else if unused_paraphrases.is_empty() {
            // Every paraphrase of the questions asked so far is used: draw again.
            continue;
        } else {
            Kind::Paraphrase
        };
        let question = match kind {
            Kind::New => {
                let Some(entry) = fresh.pop() else { break };
                asked_entries.push(entry);
                unused_paraphrases.extend((0..entries[entry].paraphrases.len()).map(|p| (entry, p)));
                Asked {
                    text: entries[entry].question.clone(),
                    kind,
                    entry,
                }
            }
            Kind::Repeat => {
                repeats -= 1;
                let entry = *asked_entries.choose(&mut rng).expect("one asked");
                Asked {
                    text: repeated(&entries[entry].question, &mut rng),
                    kind,
                    entry,
                }
            }
            Kind::Paraphrase => {
                paraphrases -= 1;
                let at = rng.random_range(0..unused_paraphrases.len());
                let (entry, p) = unused_paraphrases.swap_remove(at);
                Asked {
                    text: entries[entry].paraphrases[p].clone(),
                    kind,
                    entry,
                }
            }
        };
        asked.push(question);
    }
    asked
}

async fn retrieve(store: &ChunkStore, model: &LocalEmbedder, tenant: &str, text: &str) -> Retrieved {
    let vector = model.embed(&[text]).expect("embedding").remove(0);
    let hits = store
        .search(tenant, text, &vector, TOP_K, SearchMode::Vector)
        .await
        .expect("search");
    let passages = hits
        .into_iter()
        .filter(|hit| hit.score >= MIN_SCORE)
        .map(|hit| RetrievedPassage {
            chunk_id: hit.chunk_id,
            doc_id: hit.doc_id,
            title: hit.title,
            text: hit.text,
            score: hit.score,
        })
        .collect();
    Retrieved { vector, passages }
}

/// What a good answer cites: the best passage from the file that answers the question, or
/// the best passage when retrieval missed that file.
fn cite(passages: &[RetrievedPassage], source: &str) -> Citation {
    let (index, passage) = passages
        .iter()
        .enumerate()
        .find(|(_, p)| p.doc_id.ends_with(source))
        .unwrap_or((0, &passages[0]));
    Citation {
        index: index as u32 + 1,
        doc_id: passage.doc_id.clone(),
        chunk_id: passage.chunk_id.clone(),
        title: passage.title.clone(),
        score: passage.score,
    }
}

#[derive(Default)]
struct Tally {
    asked: [usize; 3],
    exact: [usize; 3],
    semantic: [usize; 3],
    wrong: usize,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::New => 0,
        Kind::Repeat => 1,
        Kind::Paraphrase => 2,
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// Prints the hit rates of the exact cache alone and with each semantic threshold.
pub async fn run(redis: &str, model: &LocalEmbedder) {
    let entries = workload();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = index_corpus(dir.path(), model).await;
    let models = vec!["primary".to_owned()];
    let mut retrieved: HashMap<(String, String), Retrieved> = HashMap::new();
    // How often a paraphrase retrieves the same passages as its question: the semantic cache
    // only compares questions that did.
    let (mut same_set, mut paraphrases_seen) = (0usize, 0usize);
    for threshold in [None, Some(0.92f32), Some(0.85), Some(0.8), Some(0.75), Some(0.7)] {
        let mut tally = Tally::default();
        for seed in 0..SEEDS {
            let yaml = format!("store: \"{redis}\"\nkey_prefix: bench-{:x}\n", rand::random::<u32>());
            let mut config: CostControlConfig = serde_yaml::from_str(&yaml).expect("config");
            config.semantic_threshold = threshold;
            let controls = CostControls::connect(&config).await.expect("store");
            for (i, asked) in run_order(&entries, seed).into_iter().enumerate() {
                let entry = &entries[asked.entry];
                // Each distinct text is embedded and searched once (the original too, for the
                // paraphrase statistics).
                for text in [&asked.text, &entry.question] {
                    let key = (entry.tenant.clone(), text.clone());
                    if let MapEntry::Vacant(vacant) = retrieved.entry(key) {
                        vacant.insert(retrieve(&store, model, &entry.tenant, text).await);
                    }
                }
                let found = &retrieved[&(entry.tenant.clone(), asked.text.clone())];
                if threshold.is_none() && seed == 0 && asked.kind == Kind::Paraphrase {
                    let original = &retrieved[&(entry.tenant.clone(), entry.question.clone())];
                    let ids = |passages: &[RetrievedPassage]| {
                        let mut ids: Vec<String> = passages.iter().map(|p| p.chunk_id.clone()).collect();
                        ids.sort();
                        ids
                    };
                    paraphrases_seen += 1;
                    same_set += usize::from(ids(&found.passages) == ids(&original.passages));
                }
                let mut draft = AnswerDraft::failed(
                    &entry.tenant,
                    &format!("bench-{seed}-{i}"),
                    "user-1",
                    Task::Qa,
                    &asked.text,
                    "",
                );
                draft.status = None;
                draft.provenance.reason = None;
                draft.passages = found.passages.clone();
                draft.question_vector = found.vector.clone();
                let prompt = assemble(
                    Task::Qa,
                    &asked.text,
                    &draft.passages,
                    None,
                    8192,
                    512,
                    &estimate_tokens,
                );
                let key = controls.cache_key(&draft, &models, &prompt.messages).expect("cache on");
                let kind = slot(asked.kind);
                tally.asked[kind] += 1;
                if draft.passages.is_empty() {
                    // Answered `no_context` by `retrieve`: never reaches the cache.
                    continue;
                }
                match controls.cached(&key, &draft, &models).await.expect("lookup") {
                    Some(hit) => {
                        if hit
                            .provenance
                            .route
                            .as_deref()
                            .is_some_and(|r| r.starts_with("semantic"))
                        {
                            tally.semantic[kind] += 1;
                        } else {
                            tally.exact[kind] += 1;
                        }
                        // The stored answer names the entry it answered.
                        if hit.answer.as_deref() != Some(format!("answer {}", asked.entry).as_str()) {
                            tally.wrong += 1;
                        }
                    }
                    None => {
                        draft.answer = Some(format!("answer {}", asked.entry));
                        draft.citations = vec![cite(&draft.passages, &entry.source)];
                        draft.status = Some(AnswerStatus::Ok);
                        draft.provenance.model = Some("primary".to_owned());
                        controls.cache(&key, &draft, &models).await.expect("store");
                    }
                }
            }
        }
        let total: usize = tally.asked.iter().sum();
        let hits = |kind: usize| tally.exact[kind] + tally.semantic[kind];
        let label = threshold.map_or("exact cache only".to_owned(), |t| format!("semantic_threshold {t}"));
        println!(
            "{label:<24} hit rate {:>5.1}% of {total} (exact {:.1}%, semantic {:.1}%); repeats hit {:.1}%, \
             paraphrases hit {:.1}%, new questions hit {:.1}%; wrong answers served: {}",
            percent(hits(0) + hits(1) + hits(2), total),
            percent(tally.exact.iter().sum::<usize>(), total),
            percent(tally.semantic.iter().sum::<usize>(), total),
            percent(hits(1), tally.asked[1]),
            percent(hits(2), tally.asked[2]),
            percent(hits(0), tally.asked[0]),
            tally.wrong,
        );
    }
    println!(
        "paraphrases retrieving the same {TOP_K} passages as their question: {same_set} of {paraphrases_seen} \
         ({:.0}%)",
        percent(same_set, paraphrases_seen)
    );
}
