//! `embed`: adds an embedding to every chunk of a chunked document.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::StageBuilder;
use crate::contracts::ChunkedDocument;
use crate::core_api::{MessageContext, Payload, Record, Stage, StageEnvironment};
use crate::embed::{local_model_identity, shared_local_model, EmbedBatcher, OpenAiEmbedder, Pooling};
use crate::error::Findings;
use crate::error::{ConfigError, StageError};
use crate::secrets::{ApiKeySettings, ProviderKey};

/// Which model embeds the chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedProvider {
    /// A local model run in-process with candle (`model_dir`).
    #[default]
    Local,
    /// An OpenAI-compatible `/v1/embeddings` endpoint (`base_url`, `model`, and a key from
    /// `api_key_env`, `api_key_file` or `api_key_vault`).
    Openai,
}

/// Embeds the chunks of each document (the output of `chunk`), with a local model (batching
/// texts across concurrent messages, the model loaded once per process) or an OpenAI-compatible
/// endpoint (one request per `batch_size` chunks; failures retried by the pipeline's policy).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    /// `local` (default) or `openai`.
    pub provider: EmbedProvider,
    /// Local: directory with `config.json`, `model.safetensors` and `tokenizer.json`.
    pub model_dir: Option<PathBuf>,
    /// OpenAI-compatible: API root, e.g. `http://127.0.0.1:8000` (the path `/v1/embeddings` is added).
    pub base_url: Option<String>,
    /// OpenAI-compatible: the model to ask for, e.g. `text-embedding-3-small`.
    pub model: Option<String>,
    /// Where the API key comes from: `api_key_env`, `api_key_file` or `api_key_vault`.
    #[serde(flatten)]
    pub api_key: ApiKeySettings,
    /// OpenAI-compatible: timeout of one request.
    pub timeout_ms: u64,
    /// Name recorded with the vectors (and checked by the index, so that a table never mixes
    /// models); defaults to the directory's name.
    pub model_name: Option<String>,
    /// `mean` (sentence-transformers MiniLM models) or `cls` (bge-style models).
    pub pooling: Pooling,
    /// L2-normalise the vectors (what sentence-transformers' Normalize module does).
    pub normalize: bool,
    /// Inputs are truncated to this many tokens (the model's limit; 256 for all-MiniLM-L6-v2).
    pub max_tokens: usize,
    /// Most texts embedded in one forward pass. For 180-word chunks on 2 cores 8 and 32 are
    /// equally fast (15.0 and 14.8 chunks/s, `cargo bench --bench figures -- embed`); 8 waits
    /// less for a batch to fill.
    pub batch_size: usize,
    /// Extra wait for more texts before a partial batch is embedded. 0: what has queued is
    /// embedded at once, and texts that arrive meanwhile form the next batch, so batches still
    /// fill under load while a lone question never waits.
    pub max_wait_ms: u64,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            provider: Default::default(),
            model_dir: None,
            base_url: None,
            model: None,
            api_key: Default::default(),
            timeout_ms: 30_000,
            model_name: None,
            pooling: Pooling::Mean,
            normalize: true,
            max_tokens: 256,
            batch_size: 8,
            max_wait_ms: 0,
        }
    }
}

impl StageBuilder for EmbedConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        match self.provider {
            EmbedProvider::Local => match &self.model_dir {
                None => errors.report(path, "model_dir", "is required for the local provider"),
                Some(dir) => super::check_model_files(
                    &format!("{path}.model_dir"),
                    dir,
                    &["config.json", "model.safetensors", "tokenizer.json"],
                    errors,
                ),
            },
            EmbedProvider::Openai => {
                for (field, value) in [("base_url", &self.base_url), ("model", &self.model)] {
                    if value.as_deref().is_none_or(str::is_empty) {
                        errors.push(ConfigError::new(
                            &format!("{path}.{field}"),
                            "is required for the openai provider",
                        ));
                    }
                }
                self.api_key.validate(path, errors);
            }
        }
        errors.require_within(path, "batch_size", self.batch_size, 1..=1024);
        errors.require_nonzero(path, "max_tokens", self.max_tokens);
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(EmbedStage {
            embedder: Embedder::build(self)?,
            model_name: self.recorded_model_name(),
        }))
    }
}

impl EmbedConfig {
    /// The model's name with its vectors: `model_name`, else the model directory's name, else
    /// the endpoint's model.
    pub(super) fn recorded_model_name(&self) -> String {
        let directory_name = self
            .model_dir
            .as_ref()
            .and_then(|dir| dir.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        self.model_name
            .clone()
            .or(directory_name)
            .or_else(|| self.model.clone())
            .unwrap_or_else(|| "unnamed".to_owned())
    }

    /// OpenTelemetry's `gen_ai.provider.name` of the embedding model.
    pub(super) fn provider_name(&self) -> &'static str {
        match self.provider {
            EmbedProvider::Local => "ragstream.local",
            EmbedProvider::Openai => "openai",
        }
    }
}

enum Backend {
    /// Set by `start`: loading weights is slow and needs the runtime for the batching task.
    Local(OnceLock<EmbedBatcher>),
    /// Set by `start`: the key may come from Vault, over the network.
    Remote(Box<OnceLock<OpenAiEmbedder>>),
}

/// Texts to vectors with the configured provider; shared by `embed` and `retrieve`, so that
/// questions are embedded exactly like the chunks they are compared with.
pub(super) struct Embedder {
    config: EmbedConfig,
    backend: Backend,
}

impl Embedder {
    pub(super) fn build(config: &EmbedConfig) -> Result<Self, StageError> {
        let backend = match config.provider {
            EmbedProvider::Local => Backend::Local(OnceLock::new()),
            EmbedProvider::Openai => Backend::Remote(Box::default()),
        };
        Ok(Self {
            config: config.clone(),
            backend,
        })
    }

    /// Loads a local model (once per process) and starts its batching task, or reads the
    /// endpoint's key and builds its client.
    pub(super) async fn start(&self) -> Result<(), StageError> {
        let slot = match &self.backend {
            Backend::Local(slot) => slot,
            Backend::Remote(slot) => {
                let client = OpenAiEmbedder::new(
                    self.config.base_url.as_deref().unwrap_or_default(),
                    self.config.model.as_deref().unwrap_or_default(),
                    ProviderKey::load(&self.config.api_key).await?,
                    Duration::from_millis(self.config.timeout_ms),
                )?;
                let _ = slot.set(client);
                return Ok(());
            }
        };
        let config = self.config.clone();
        let dir = config
            .model_dir
            .clone()
            .ok_or_else(|| StageError::internal("model_dir was validated"))?;
        let model = tokio::task::spawn_blocking(move || {
            shared_local_model(&dir, config.pooling, config.normalize, config.max_tokens)
        })
        .await
        .map_err(|error| StageError::internal(format!("model loading panicked: {error}")))??;
        let batcher = EmbedBatcher::spawn(
            model,
            self.config.batch_size,
            Duration::from_millis(self.config.max_wait_ms),
        );
        let _ = slot.set(batcher);
        Ok(())
    }

    /// What the vectors come from: vectors of the same identity can be compared.
    pub(super) fn identity(&self) -> String {
        let config = &self.config;
        match (&self.backend, &config.model_dir) {
            (Backend::Local(_), Some(dir)) => {
                local_model_identity(dir, config.pooling, config.normalize, config.max_tokens)
            }
            _ => format!(
                "openai:{}:{}",
                config.base_url.as_deref().unwrap_or_default(),
                config.model.as_deref().unwrap_or_default()
            ),
        }
    }

    pub(super) async fn vectors(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, StageError> {
        match &self.backend {
            Backend::Local(batcher) => {
                let batcher = batcher
                    .get()
                    .ok_or_else(|| StageError::internal("embedding used before the stage started"))?;
                batcher.embed(texts).await.map_err(StageError::from)
            }
            Backend::Remote(client) => {
                let client = client
                    .get()
                    .ok_or_else(|| StageError::internal("embedding used before the stage started"))?;
                let mut vectors = Vec::with_capacity(texts.len());
                for batch in texts.chunks(self.config.batch_size) {
                    vectors.extend(client.embed(batch).await?);
                }
                Ok(vectors)
            }
        }
    }
}

struct EmbedStage {
    embedder: Embedder,
    model_name: String,
}

#[async_trait]
impl Stage for EmbedStage {
    async fn start(&self, _environment: &StageEnvironment) -> Result<(), StageError> {
        self.embedder.start().await
    }

    async fn process(&self, record: Record, _context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let mut document: ChunkedDocument = record.payload.typed("a chunked document (put chunk first)")?;
        let texts: Vec<String> = document.chunks.iter().map(|chunk| chunk.text.clone()).collect();
        let vectors = self.embedder.vectors(texts).await?;
        for (chunk, vector) in document.chunks.iter_mut().zip(vectors) {
            chunk.vector = Some(vector);
        }
        document.embedding_model = Some(self.model_name.clone());
        let payload = Payload::holding(&document, "embedded chunks")?;
        Ok(vec![Record { payload, ..record }])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::contracts::{DocumentChunk, DocumentHeader, DocumentOp};
    use crate::embed::test_server::server;

    fn chunked(texts: &[&str]) -> Record {
        let chunks = texts
            .iter()
            .enumerate()
            .map(|(i, text)| DocumentChunk {
                chunk_id: format!("d:1:{i}"),
                position: i as u32,
                text: (*text).to_owned(),
                context: String::new(),
                token_count: 1,
                vector: None,
            })
            .collect();
        let document = ChunkedDocument {
            header: DocumentHeader::new("t", "d", DocumentOp::Upsert, 1),
            embedding_model: None,
            chunks,
        };
        Record {
            key: Some(b"d".to_vec()),
            payload: Payload::Json(serde_json::to_value(document).unwrap()),
            headers: vec![],
            sink: None,
        }
    }

    fn context() -> MessageContext {
        MessageContext::new(Arc::from("p"), Arc::from("t"), 0, 0, None)
    }

    #[tokio::test]
    async fn the_openai_provider_embeds_every_chunk_in_batches() {
        let (url, calls) = server(vec![]).await;
        std::env::set_var("RAGSTREAM_TEST_EMBED_KEY", "test-key");
        let config: EmbedConfig = serde_yaml::from_str(&format!(
            "provider: openai\nbase_url: {url}\nmodel: text-embedding-test\napi_key_env: RAGSTREAM_TEST_EMBED_KEY\nbatch_size: 2"
        ))
        .unwrap();
        let mut errors = Vec::new();
        config.validate("stage", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let stage = config.build().unwrap();
        stage.start(&StageEnvironment::default()).await.unwrap();
        let out = stage.process(chunked(&["a", "bb", "ccc"]), &context()).await.unwrap();
        let Payload::Json(value) = &out[0].payload else {
            panic!("json expected")
        };
        let document: ChunkedDocument = serde_json::from_value(value.clone()).unwrap();
        let firsts: Vec<f32> = document.chunks.iter().map(|c| c.vector.as_ref().unwrap()[0]).collect();
        assert_eq!(firsts, vec![1.0, 2.0, 3.0]);
        assert_eq!(document.embedding_model.as_deref(), Some("text-embedding-test"));
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "3 chunks at batch_size 2"
        );
    }

    #[test]
    fn each_provider_requires_its_settings() {
        let config: EmbedConfig = serde_yaml::from_str("provider: openai").unwrap();
        let mut errors = Vec::new();
        config.validate("s", &mut errors);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            vec![
                "s.base_url: is required for the openai provider",
                "s.model: is required for the openai provider"
            ]
        );
        let config: EmbedConfig = serde_yaml::from_str("provider: local").unwrap();
        let mut errors = Vec::new();
        config.validate("s", &mut errors);
        assert_eq!(errors[0].to_string(), "s.model_dir: is required for the local provider");
    }
}
