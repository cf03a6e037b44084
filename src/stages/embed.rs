//! `embed`: adds an embedding to every chunk of a chunked document.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Stage, StageBuilder};
use crate::config::ConfigError;
use crate::contracts::ChunkedDocument;
use crate::embed::{shared_local_model, EmbedBatcher, Pooling};
use crate::engine::{MessageContext, Payload, Record};
use crate::error::StageError;

/// Embeds the chunks of each document (the output of `chunk`) with a local model, batching
/// texts across concurrent messages. The model is loaded once per process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    /// Directory with `config.json`, `model.safetensors` and `tokenizer.json`.
    pub model_dir: PathBuf,
    /// Name recorded with the vectors (and checked by the index, so that a table never mixes
    /// models); defaults to the directory's name.
    #[serde(default)]
    pub model_name: Option<String>,
    /// `mean` (sentence-transformers MiniLM models) or `cls` (bge-style models).
    #[serde(default = "default_pooling")]
    pub pooling: Pooling,
    /// L2-normalise the vectors (what sentence-transformers' Normalize module does).
    #[serde(default = "default_true")]
    pub normalize: bool,
    /// Inputs are truncated to this many tokens (the model's limit; 256 for all-MiniLM-L6-v2).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Most texts embedded in one forward pass. 8 was fastest for 200-word chunks on 2 cores
    /// (15 chunks/s against 10 at 32; `cargo bench --bench embed`).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest wait for more texts before a partial batch is embedded.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_pooling() -> Pooling {
    Pooling::Mean
}

fn default_true() -> bool {
    true
}

fn default_max_tokens() -> usize {
    256
}

fn default_batch_size() -> usize {
    8
}

fn default_max_wait_ms() -> u64 {
    20
}

impl StageBuilder for EmbedConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !self.model_dir.join(file).is_file() {
                errors.push(ConfigError::new(
                    &format!("{path}.model_dir"),
                    format!(
                        "{} not found (fetch models with deploy/local/models.sh)",
                        self.model_dir.join(file).display()
                    ),
                ));
            }
        }
        if !(1..=1024).contains(&self.batch_size) {
            errors.push(ConfigError::new(
                &format!("{path}.batch_size"),
                format!("must be between 1 and 1024, got {}", self.batch_size),
            ));
        }
        if self.max_tokens == 0 {
            errors.push(ConfigError::new(&format!("{path}.max_tokens"), "must be at least 1"));
        }
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        let model_name = self.model_name.clone().unwrap_or_else(|| {
            self.model_dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.model_dir.display().to_string())
        });
        Ok(Box::new(EmbedStage {
            config: self.clone(),
            model_name,
            batcher: OnceLock::new(),
        }))
    }
}

struct EmbedStage {
    config: EmbedConfig,
    model_name: String,
    /// Set by `start`: loading weights is slow and needs the runtime for the batching task.
    batcher: OnceLock<EmbedBatcher>,
}

#[async_trait]
impl Stage for EmbedStage {
    async fn start(&self) -> Result<(), StageError> {
        let config = self.config.clone();
        let model = tokio::task::spawn_blocking(move || {
            shared_local_model(&config.model_dir, config.pooling, config.normalize, config.max_tokens)
        })
        .await
        .map_err(|error| StageError::internal(format!("model loading panicked: {error}")))?
        .map_err(StageError::internal)?;
        let batcher = EmbedBatcher::spawn(
            model,
            self.config.batch_size,
            Duration::from_millis(self.config.max_wait_ms),
        );
        let _ = self.batcher.set(batcher);
        Ok(())
    }

    async fn process(&self, record: Record, _context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let batcher = self
            .batcher
            .get()
            .ok_or_else(|| StageError::internal("embed stage used before start"))?;
        let mut document: ChunkedDocument = match &record.payload {
            Payload::Json(value) => serde_json::from_value(value.clone()),
            Payload::Bytes(bytes) => serde_json::from_slice(bytes),
        }
        .map_err(|error| StageError::input(format!("not a chunked document (put chunk first): {error}")))?;
        let texts: Vec<String> = document.chunks.iter().map(|chunk| chunk.text.clone()).collect();
        let vectors = batcher.embed(texts).await.map_err(StageError::internal)?;
        for (chunk, vector) in document.chunks.iter_mut().zip(vectors) {
            chunk.vector = Some(vector);
        }
        document.embedding_model = Some(self.model_name.clone());
        let value = serde_json::to_value(&document)
            .map_err(|error| StageError::internal(format!("cannot serialize embedded chunks: {error}")))?;
        Ok(vec![Record {
            payload: Payload::Json(value),
            ..record
        }])
    }
}
