//! The local candle embedder against reference vectors computed once with the Python
//! sentence-transformers package (tests/fixtures/embeddings/all-MiniLM-L6-v2.json; the package
//! versions are recorded in the file).

use std::path::Path;

use ragstream::embed::{LocalEmbedder, Pooling};

#[derive(serde::Deserialize)]
struct Fixture {
    source: String,
    max_seq_length: usize,
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn local_embeddings_match_sentence_transformers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("tests/fixtures/embeddings/all-MiniLM-L6-v2.json")).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    let model = LocalEmbedder::load(
        &root.join("models/all-MiniLM-L6-v2"),
        Pooling::Mean,
        true,
        fixture.max_seq_length,
    )
    .unwrap_or_else(|e| panic!("{e}; run deploy/local/models.sh to fetch the model"));
    let sentences: Vec<&str> = fixture.sentences.iter().map(String::as_str).collect();
    let ours = model.embed(&sentences).unwrap();
    assert_eq!(ours.len(), fixture.embeddings.len());
    let lowest = ours
        .iter()
        .zip(&fixture.embeddings)
        .map(|(a, b)| cosine(a, b))
        .fold(f32::MAX, f32::min);
    eprintln!("lowest cosine against {}: {lowest:.9}", fixture.source);
    for ((sentence, ours), theirs) in sentences.iter().zip(&ours).zip(&fixture.embeddings) {
        let similarity = cosine(ours, theirs);
        assert!(
            similarity >= 0.999,
            "cosine {similarity} vs {} for {sentence:?}",
            fixture.source
        );
    }
}
