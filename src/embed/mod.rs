//! Embedding providers: turning chunk and question texts into vectors.

mod batcher;
mod bert;
mod local;
mod openai;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use crate::error::ModelFileError;

pub use batcher::EmbedBatcher;
pub use local::{LocalEmbedder, Pooling};
pub use openai::OpenAiEmbedder;

#[cfg(test)]
pub(crate) use openai::test_server;

/// Why a local embedding came back without vectors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    #[error("tokenization failed: {0}")]
    Tokenization(String),
    /// The model refused the input (e.g. more tokens than it has positions) or its tables.
    #[error("embedding failed: {0}")]
    Model(String),
    /// The thread or task doing the work is gone (it panicked, or the process is stopping).
    #[error("the embedding task {0}")]
    Stopped(&'static str),
}

/// Local embedding runs inside this process: a failure is ragstream's, not the message's.
impl From<EmbedError> for crate::error::StageError {
    fn from(error: EmbedError) -> Self {
        Self::internal(error.to_string())
    }
}

/// Keeps glibc from handing large buffers back to the OS after every tensor operation.
///
/// By default glibc serves allocations above 128 KiB with mmap and unmaps them on free, so each
/// layer of a forward pass page-faults its activations in again (25–30% of embedding time was
/// page faults when measured here). Raising the mmap and trim thresholds keeps that memory in
/// the heap for reuse: 1.66× faster at batch 8 on this machine (`cargo bench --bench figures -- embed`).
/// Call once at start-up, before threads allocate.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// What makes two loaded models interchangeable: directory, pooling, normalisation, limit.
type ModelKey = (PathBuf, Pooling, bool, usize);

/// Names a local model with the settings that shape its vectors: two vectors with the same
/// identity can be compared (the question's vector from retrieval, reused by the meaning ranker).
pub fn local_model_identity(dir: &Path, pooling: Pooling, normalize: bool, max_tokens: usize) -> String {
    format!("local:{}:{pooling:?}:{normalize}:{max_tokens}", dir.display())
}

/// Loads a local model once per process: ingestion and retrieval stages naming the same
/// directory share one copy of the weights.
pub fn shared_local_model(
    dir: &Path,
    pooling: Pooling,
    normalize: bool,
    max_tokens: usize,
) -> Result<Arc<LocalEmbedder>, ModelFileError> {
    static MODELS: LazyLock<Mutex<HashMap<ModelKey, Arc<LocalEmbedder>>>> = LazyLock::new(Mutex::default);
    let key = (dir.to_path_buf(), pooling, normalize, max_tokens);
    // Held while loading, so two stages starting at once load the weights only once.
    let mut models = MODELS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(model) = models.get(&key) {
        return Ok(model.clone());
    }
    let model = Arc::new(LocalEmbedder::load(dir, pooling, normalize, max_tokens)?);
    models.insert(key, model.clone());
    Ok(model)
}
