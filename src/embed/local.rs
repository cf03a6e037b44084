//! A BERT-family sentence-embedding model run in-process with candle (pure Rust, CPU).
//!
//! Loads `config.json`, `model.safetensors` and `tokenizer.json` from a directory (nothing is
//! downloaded) and reproduces what sentence-transformers does for all-MiniLM-L6-v2: tokenize
//! with truncation at the model's limit, run the encoder, mean-pool over each text's tokens,
//! L2-normalise. CLS pooling is selectable for bge-style models.

use std::ops::Range;
use std::path::Path;

use super::bert::{Batch, BertEncoder};
use super::EmbedError;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::error::ModelFileError;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Average of the token vectors, padding excluded (sentence-transformers' MiniLM models).
    Mean,
    /// The `[CLS]` token's vector (bge-style models).
    Cls,
}

/// A loaded local embedding model.
pub struct LocalEmbedder {
    model: BertEncoder,
    tokenizer: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    dimensions: usize,
    /// A batch is split into up to this many parts, one forward pass per core (see `embed`).
    cores: usize,
}

impl LocalEmbedder {
    /// Loads the model in `dir`. `max_tokens` truncates inputs (256 for all-MiniLM-L6-v2, as
    /// sentence-transformers does); texts are never padded (see `BertEncoder`).
    pub fn load(dir: &Path, pooling: Pooling, normalize: bool, max_tokens: usize) -> Result<Self, ModelFileError> {
        let config_file = dir.join("config.json");
        let config_text = std::fs::read_to_string(&config_file).map_err(|e| ModelFileError::new(&config_file, e))?;
        let config: Config = serde_json::from_str(&config_text).map_err(|e| ModelFileError::new(&config_file, e))?;
        let weights = dir.join("model.safetensors");
        // SAFETY: the weights file is memory-mapped read-only; it must not be modified while the
        // process runs, which holds for model directories managed by deploy/local/models.sh.
        let vars = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
            .map_err(|e| ModelFileError::new(&weights, e))?;
        let model = BertEncoder::load(vars, &config).map_err(|e| ModelFileError::new(&weights, e))?;
        let tokenizer_file = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_file).map_err(|e| ModelFileError::new(&tokenizer_file, e))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| ModelFileError::new(&tokenizer_file, e))?;
        // The shipped tokenizer.json pads every text to 128 tokens; the encoder takes texts
        // at their own lengths.
        tokenizer.with_padding(None);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            model,
            tokenizer,
            pooling,
            normalize,
            dimensions: config.hidden_size,
            cores,
        })
    }

    /// Length of every vector this model returns.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Embeds a batch of texts; the result is in the same order.
    ///
    /// A batch of several texts is cut into one contiguous part per core with about the same
    /// number of tokens, and each part runs a whole forward pass on its own thread,
    /// single-threaded: for the small matrices of a MiniLM batch this beats splitting every
    /// matrix product across cores, which synchronises the threads a few hundred times per
    /// batch. A single text splits its matrix products across every core instead.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenization(e.to_string()))?;
        let lanes = self.cores.min(texts.len());
        if lanes <= 1 {
            return self.embed_encoded(&encodings, true);
        }
        let lengths: Vec<usize> = encodings.iter().map(Encoding::len).collect();
        let encodings = &encodings;
        std::thread::scope(|scope| {
            let parts: Vec<_> = split_by_tokens(&lengths, lanes)
                .into_iter()
                .map(|part| scope.spawn(move || self.embed_encoded(&encodings[part], false)))
                .collect();
            let mut vectors = Vec::with_capacity(texts.len());
            for part in parts {
                vectors.extend(part.join().map_err(|_| EmbedError::Stopped("had a thread panic"))??);
            }
            Ok(vectors)
        })
    }

    fn embed_encoded(&self, encodings: &[Encoding], parallel: bool) -> Result<Vec<Vec<f32>>, EmbedError> {
        let lengths: Vec<usize> = encodings.iter().map(Encoding::len).collect();
        let ids: Vec<u32> = encodings.iter().flat_map(|e| e.get_ids().iter().copied()).collect();
        let types: Vec<u32> = encodings
            .iter()
            .flat_map(|e| e.get_type_ids().iter().copied())
            .collect();
        let states = self.model.forward(
            &Batch {
                ids: &ids,
                types: &types,
                lengths: &lengths,
            },
            parallel,
        )?;
        let hidden = self.dimensions;
        let mut first = 0;
        Ok(lengths
            .iter()
            .map(|&length| {
                let rows = &states[first * hidden..(first + length) * hidden];
                first += length;
                self.pool(rows)
            })
            .collect())
    }

    /// One text's vector from its token vectors (`tokens × hidden`).
    fn pool(&self, states: &[f32]) -> Vec<f32> {
        let hidden = self.dimensions;
        let mut vector = match self.pooling {
            Pooling::Cls => states[..hidden].to_vec(),
            Pooling::Mean => {
                let mut sum = vec![0f32; hidden];
                for token in states.chunks_exact(hidden) {
                    for (s, v) in sum.iter_mut().zip(token) {
                        *s += v;
                    }
                }
                let count = (states.len() / hidden).max(1) as f32;
                sum.iter_mut().for_each(|s| *s /= count);
                sum
            }
        };
        if self.normalize {
            let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            vector.iter_mut().for_each(|v| *v /= norm);
        }
        vector
    }
}

/// Texts of these token `lengths` cut into up to `parts` contiguous ranges with about the same
/// number of tokens each.
fn split_by_tokens(lengths: &[usize], parts: usize) -> Vec<Range<usize>> {
    let total: usize = lengths.iter().sum();
    let mut ranges = Vec::with_capacity(parts);
    let (mut start, mut before) = (0, 0);
    for (i, &length) in lengths.iter().enumerate() {
        let after = before + length;
        // Part k ends near k/parts of the tokens: before or after this text, whichever is
        // closer (compared at `parts` times the scale, to stay in integers).
        let target = total * (ranges.len() + 1);
        if ranges.len() + 1 < parts && after * parts >= target {
            let cut = if i > start && target.saturating_sub(before * parts) < after * parts - target {
                i
            } else {
                i + 1
            };
            ranges.push(start..cut);
            start = cut;
        }
        before = after;
    }
    if start < lengths.len() {
        ranges.push(start..lengths.len());
    }
    ranges
}

// They read the downloaded models (deploy/local/models.sh): `cargo test --lib` alone needs no
// model file; scripts/test.sh turns the feature on.
#[cfg(all(test, feature = "model-files"))]
mod tests {
    use super::*;

    fn model() -> LocalEmbedder {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
        LocalEmbedder::load(&dir, Pooling::Mean, true, 256)
            .unwrap_or_else(|e| panic!("{e}; run deploy/local/models.sh to fetch the model"))
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b))
    }

    #[test]
    fn vectors_are_unit_length_and_meaningful() {
        let model = model();
        assert_eq!(model.dimensions(), 384);
        let texts = [
            "Employees accrue 27 days of paid leave per year.",
            "How many days of paid leave do I get?",
            "The quick brown fox jumps over the lazy dog.",
        ];
        let vectors = model.embed(&texts).unwrap();
        assert_eq!(vectors.len(), 3);
        for vector in &vectors {
            assert_eq!(vector.len(), 384);
            let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        }
        assert!(cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]) + 0.3);
    }

    #[test]
    fn a_batch_is_split_into_contiguous_parts_of_about_equal_tokens() {
        assert_eq!(split_by_tokens(&[10, 10, 10, 10], 2), vec![0..2, 2..4]);
        // The long text goes with the short one before it, not with both neighbours.
        assert_eq!(split_by_tokens(&[10, 200, 10, 10], 2), vec![0..2, 2..4]);
        assert_eq!(split_by_tokens(&[200, 10, 10, 10], 2), vec![0..1, 1..4]);
        assert_eq!(split_by_tokens(&[10, 10, 200], 2), vec![0..2, 2..3]);
        assert_eq!(split_by_tokens(&[5, 5, 5, 5, 5, 5], 3), vec![0..2, 2..4, 4..6]);
        assert_eq!(split_by_tokens(&[7], 2), vec![0..1]);
        assert_eq!(split_by_tokens(&[1, 100, 1, 1], 3), vec![0..1, 1..2, 2..4]);
        for lengths in [
            vec![1, 2, 3, 4, 5, 6, 7],
            vec![256; 9],
            vec![3, 250, 3, 250, 9],
            vec![1, 300, 2, 2],
        ] {
            for parts in 2..=4 {
                let ranges = split_by_tokens(&lengths, parts);
                assert!(ranges.len() <= parts);
                assert_eq!(ranges.first().unwrap().start, 0);
                assert_eq!(ranges.last().unwrap().end, lengths.len());
                assert!(ranges.iter().all(|r| !r.is_empty()));
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            }
        }
    }

    #[test]
    fn batching_and_padding_do_not_change_a_vector() {
        let model = model();
        let alone = model.embed(&["short text"]).unwrap();
        let padded = model
            .embed(&[
                "short text",
                "a much longer text that forces padding of the short one in this batch",
            ])
            .unwrap();
        assert!(cosine(&alone[0], &padded[0]) > 0.99999);
    }
}
