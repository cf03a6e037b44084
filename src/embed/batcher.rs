//! Batching embedding requests across messages.
//!
//! Each message's chunks are few; the model is much faster per text in batches. Requests from
//! all concurrent messages go to one task that takes every text waiting (up to `max_batch`,
//! waiting at most `max_wait` more for others; 0 by default), embeds them together (sorted by
//! length so padding is minimal, as sentence-transformers does), and hands each request its
//! vectors. While one batch runs the next one queues, so batches fill under load and a lone
//! question is embedded at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{EmbedError, LocalEmbedder};
use crate::core_api::Worker;
use crate::telemetry::metrics::metrics;

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>;

struct Job {
    texts: Vec<String>,
    reply: Reply,
}

/// A handle to the batching task; cheap to clone.
#[derive(Clone)]
pub struct EmbedBatcher(Worker<Job>);

impl EmbedBatcher {
    /// Starts the batching task on the current tokio runtime.
    pub fn spawn(embedder: Arc<LocalEmbedder>, max_batch: usize, max_wait: Duration) -> Self {
        Self(Worker::spawn(1024, move |receiver| {
            run(embedder, receiver, max_batch.max(1), max_wait)
        }))
    }

    /// Embeds `texts`, possibly together with other requests; the vectors come back in order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.0
            .request(|reply| Job { texts, reply })
            .await
            .map_err(EmbedError::Stopped)?
    }
}

async fn run(embedder: Arc<LocalEmbedder>, mut receiver: mpsc::Receiver<Job>, max_batch: usize, max_wait: Duration) {
    while let Some(first) = receiver.recv().await {
        let mut jobs = vec![first];
        let mut waiting: usize = jobs[0].texts.len();
        let deadline = tokio::time::Instant::now() + max_wait;
        while waiting < max_batch {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(job)) => {
                    waiting += job.texts.len();
                    jobs.push(job);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let texts: Vec<String> = jobs.iter().flat_map(|job| job.texts.iter().cloned()).collect();
        let model = embedder.clone();
        // The forward pass is CPU-bound: keep it off the async workers.
        let result = tokio::task::spawn_blocking(move || embed_sorted(&model, &texts, max_batch))
            .await
            .unwrap_or(Err(EmbedError::Stopped("panicked")));
        match result {
            Ok(mut vectors) => {
                for job in jobs {
                    let rest = vectors.split_off(job.texts.len());
                    let _ = job.reply.send(Ok(std::mem::replace(&mut vectors, rest)));
                }
            }
            Err(error) => {
                for job in jobs {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Embeds in batches of `max_batch`, grouping texts of similar length, and restores the order.
fn embed_sorted(model: &LocalEmbedder, texts: &[String], max_batch: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
    let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    for batch in order.chunks(max_batch) {
        let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i].as_str()).collect();
        metrics()
            .embedding_batch_texts
            .with_label_values(&["local"])
            .observe(batch_texts.len() as f64);
        for (&index, vector) in batch.iter().zip(model.embed(&batch_texts)?) {
            vectors[index] = vector;
        }
    }
    Ok(vectors)
}

// They read the downloaded models (deploy/local/models.sh): `cargo test --lib` alone needs no
// model file; scripts/test.sh turns the feature on.
#[cfg(all(test, feature = "model-files"))]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::embed::Pooling;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_get_their_own_vectors_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
        let model = Arc::new(LocalEmbedder::load(&dir, Pooling::Mean, true, 256).expect("deploy/local/models.sh"));
        let batcher = EmbedBatcher::spawn(model.clone(), 4, Duration::from_millis(20));
        let requests: Vec<Vec<String>> = (0..6)
            .map(|r| {
                (0..r % 3 + 1)
                    .map(|i| format!("request {r} text {i} {}", "word ".repeat(r * 3)))
                    .collect()
            })
            .collect();
        let handles: Vec<_> = requests
            .iter()
            .cloned()
            .map(|texts| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.embed(texts).await })
            })
            .collect();
        for (texts, handle) in requests.iter().zip(handles) {
            let batched = handle.await.unwrap().unwrap();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let direct = model.embed(&refs).unwrap();
            assert_eq!(batched.len(), direct.len());
            for (a, b) in batched.iter().zip(&direct) {
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                assert!(dot > 0.99999, "same text, same vector whatever it was batched with");
            }
        }
        assert!(batcher.embed(Vec::new()).await.unwrap().is_empty());
    }
}
