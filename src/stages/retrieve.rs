//! `retrieve`: finds the tenant's chunks closest to the (masked) question.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::embed::Embedder;
use super::{EmbedConfig, StageBuilder};
use crate::contracts::{AnswerDraft, AnswerStatus, RetrievedPassage, Step};
use crate::core_api::{MessageContext, Payload, Record, Stage, StageEnvironment};
use crate::error::Findings;
use crate::error::{ConfigError, StageError};
use crate::pii::PiiScope;
use crate::status;
use crate::store::{ChunkStore, SearchMode, SearchScope};
use crate::telemetry::traces::gen_ai::{self, Operation};
use crate::telemetry::traces::{self, KeyValue, SpanKind};
use serde_inline_default::serde_inline_default;

/// Searches the LanceDB chunks table of the question's tenant (the output of `mask_pii`). The
/// question is embedded with the same model as the chunks. When even the best chunk is below
/// `min_score`, the answer is `no_context` and no model is called. Passages are masked with
/// the question's placeholders, so the model sees no personal data from documents either.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveConfig {
    /// The LanceDB database the `index` stage writes (directory or object-store URI).
    pub uri: String,
    /// Object-store settings, as for `index`.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// The chunks table.
    #[serde_inline_default("chunks".to_owned())]
    pub table: String,
    /// How questions are embedded: the same settings as the `embed` stage of the documents
    /// pipeline (same model, pooling and normalisation), or scores are meaningless.
    pub embedding: EmbedConfig,
    /// Passages given to the model (a question's `options.top_k` overrides it).
    #[serde_inline_default(5)]
    pub top_k: usize,
    /// Lowest cosine similarity of the best passage for the question to be answered at all;
    /// passages below it are dropped.
    #[serde_inline_default(0.25)]
    pub min_score: f32,
    /// Rank by vector and full-text (BM25) search fused by reciprocal rank, instead of vector
    /// search alone (on the Rust books it puts the right page in the top 5 more often:
    /// `cargo bench --bench figures -- retrieval`). `min_score` still applies to the vector
    /// similarity. Until the `index` stage's upkeep has built the full-text index, search is by
    /// vector alone.
    #[serde_inline_default(true)]
    pub hybrid: bool,
    /// Mask personal data in passages with the question's placeholders (needs `mask_pii`
    /// earlier in the chain; without it passages are passed as they are).
    #[serde_inline_default(true)]
    pub mask_passages: bool,
}

/// How long a missing chunks table is remembered before the database is opened again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

impl StageBuilder for RetrieveConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        self.embedding.validate(&format!("{path}.embedding"), errors);
        errors.require_within(path, "top_k", self.top_k, 1..=100);
        // A cosine similarity.
        errors.require_within(path, "min_score", self.min_score, -1.0..=1.0);
    }

    fn needs_earlier(&self) -> Option<&'static str> {
        // The answer draft this stage reads is started by mask_pii.
        Some("mask_pii")
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        Ok(Box::new(Retrieve {
            embedder: Embedder::build(&self.embedding)?,
            config: self.clone(),
            store: Mutex::new(None),
        }))
    }
}

struct Retrieve {
    config: RetrieveConfig,
    embedder: Embedder,
    /// Opened on first use; reopened while the chunks table does not exist yet (nothing
    /// indexed), at most once per `REOPEN_AFTER`.
    store: Mutex<Option<(Arc<ChunkStore>, Instant)>>,
}

impl Retrieve {
    /// The store, opened (again) if needed; the lock is not held during searches.
    async fn store(&self) -> Result<Arc<ChunkStore>, StageError> {
        let mut store = self.store.lock().await;
        let stale = match &*store {
            None => true,
            Some((opened, at)) => opened.chunks().is_none() && at.elapsed() >= REOPEN_AFTER,
        };
        if stale {
            let opened =
                ChunkStore::open_with_options(&self.config.uri, &self.config.table, &self.config.storage_options)
                    .await?;
            *store = Some((Arc::new(opened), Instant::now()));
        }
        Ok(store.as_ref().expect("opened above").0.clone())
    }
}

impl Retrieve {
    /// The span of the question's embedding (OpenTelemetry's GenAI `embeddings` operation).
    fn embedding_span(&self) -> opentelemetry::Context {
        traces::child(SpanKind::Client, || {
            let model = self.config.embedding.recorded_model_name();
            let name = format!("{} {model}", Operation::Embeddings.name());
            let attributes = vec![
                KeyValue::new(gen_ai::OPERATION_NAME, Operation::Embeddings.name()),
                KeyValue::new(gen_ai::PROVIDER_NAME, self.config.embedding.provider_name()),
                KeyValue::new(gen_ai::REQUEST_MODEL, model),
            ];
            (name, attributes)
        })
    }

    /// The span of the search of the chunks table for `tenant`'s passages.
    fn retrieval_span(&self, tenant: &str, mode: SearchMode, limit: usize) -> opentelemetry::Context {
        traces::child(SpanKind::Client, || {
            let name = format!("{} {}", Operation::Retrieval.name(), self.config.table);
            let attributes = vec![
                KeyValue::new(gen_ai::OPERATION_NAME, Operation::Retrieval.name()),
                KeyValue::new("gen_ai.data_source.id", self.config.table.clone()),
                KeyValue::new("db.system.name", "lancedb"),
                KeyValue::new("ragstream.tenant", tenant.to_owned()),
                KeyValue::new("ragstream.retrieval.hybrid", mode == SearchMode::Hybrid),
                KeyValue::new("ragstream.retrieval.top_k", limit as i64),
            ];
            (name, attributes)
        })
    }
}

/// `options.changed_since` as a time (the questions contract checked its form).
fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, StageError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&chrono::Utc))
        .map_err(|error| StageError::input(format!("options.changed_since is not an RFC 3339 time: {error}")))
}

#[async_trait]
impl Stage for Retrieve {
    async fn start(&self, _environment: &StageEnvironment) -> Result<(), StageError> {
        self.embedder.start().await
    }

    async fn process(&self, record: Record, context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let mut draft: AnswerDraft = record.payload.typed("an answer draft (put mask_pii first)")?;
        if !draft.is_decided() {
            status::report(context, Step::Retrieving);
            let limit = draft
                .options
                .as_ref()
                .and_then(|o| o.top_k)
                .map_or(self.config.top_k, |k| k as usize);
            let vector = traces::traced(
                self.embedding_span(),
                self.embedder.vectors(vec![draft.question.clone()]),
            )
            .await?
            .pop()
            .ok_or_else(|| StageError::internal("the embedder returned no vector"))?;
            let since = draft.options.as_ref().and_then(|o| o.changed_since.as_deref());
            let scope = SearchScope {
                tenant: &draft.tenant,
                indexed_since: since.map(parse_since).transpose()?,
            };
            let mode = if self.config.hybrid {
                SearchMode::Hybrid
            } else {
                SearchMode::Vector
            };
            let search = self.retrieval_span(&draft.tenant, mode, limit);
            let store = self.store().await?;
            let hits = traces::traced(search.clone(), async {
                let hits = store
                    .passages(scope, &draft.question, &vector, limit, mode, self.config.min_score)
                    .await?;
                // Before the span ends: attributes set later are dropped.
                traces::annotate(
                    &search,
                    KeyValue::new("ragstream.retrieval.passages", hits.len() as i64),
                );
                if let Some(best) = hits.first() {
                    traces::annotate(
                        &search,
                        KeyValue::new("ragstream.retrieval.best_score", f64::from(best.score)),
                    );
                }
                Ok::<_, StageError>(hits)
            })
            .await?;
            // Kept for the semantic response cache and the meaning ranker of `generate`; never
            // emitted.
            draft.question_vector = vector;
            draft.question_vector_model = Some(self.embedder.identity());
            let scope = context.extension::<PiiScope>().filter(|_| self.config.mask_passages);
            let mut context_counts: BTreeMap<String, u32> = BTreeMap::new();
            draft.passages = hits
                .into_iter()
                .map(|hit| {
                    // The chunk text already starts with its section's headings.
                    let text = match &scope {
                        Some(scope) => {
                            let (masked, counts) = scope.mask(&hit.text);
                            for (kind, n) in counts {
                                *context_counts.entry(kind.label().to_owned()).or_default() += n;
                            }
                            masked
                        }
                        None => hit.text,
                    };
                    RetrievedPassage {
                        chunk_id: hit.chunk_id,
                        doc_id: hit.doc_id,
                        title: hit.title,
                        text,
                        score: hit.score,
                    }
                })
                .collect();
            draft.context_pii_counts = context_counts;
            if draft.passages.is_empty() {
                draft.decide(
                    AnswerStatus::NoContext,
                    Some(format!(
                        "no passage of the tenant's documents has a similarity of at least {} to the question",
                        self.config.min_score
                    )),
                );
            }
        }
        let payload = Payload::holding(&draft, "the answer draft")?;
        Ok(vec![Record { payload, ..record }])
    }
}
