//! Counting tokens the way the embedding model will see them.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::ModelFileError;

/// Counts tokens of a text, without the model's special tokens.
pub trait TokenCounter: Send + Sync {
    /// Number of tokens `text` encodes to.
    fn count(&self, text: &str) -> usize;
}

/// The model's own tokenizer, loaded from its `tokenizer.json`.
pub struct ModelTokenizer {
    tokenizer: Tokenizer,
}

impl ModelTokenizer {
    /// Loads `tokenizer.json` from a model directory. Truncation and padding configured in the
    /// file are switched off: the shipped MiniLM file pads and truncates to 128 tokens, which
    /// would make every count wrong.
    pub fn from_model_dir(dir: &Path) -> Result<Self, ModelFileError> {
        let file = dir.join("tokenizer.json");
        let failed = |error| ModelFileError::new(&file, error);
        let mut tokenizer = Tokenizer::from_file(&file).map_err(failed)?;
        tokenizer.with_truncation(None).map_err(failed)?;
        tokenizer.with_padding(None);
        Ok(Self { tokenizer })
    }
}

impl TokenCounter for ModelTokenizer {
    fn count(&self, text: &str) -> usize {
        // Encoding only fails on inputs the normalizer rejects; a conservative over-estimate
        // (one token per byte) keeps chunks within the model's limit in that case.
        self.tokenizer
            .encode_fast(text, false)
            .map(|encoding| encoding.len())
            .unwrap_or(text.len())
    }
}

/// Counts whitespace-separated words; for tests and rough estimates.
pub struct WordCounter;

impl TokenCounter for WordCounter {
    fn count(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
}
