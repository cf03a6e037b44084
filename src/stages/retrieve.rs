//! `retrieve`: finds the tenant's chunks closest to the (masked) question.

use std::collections::{BTreeMap, HashMap};
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
use crate::store::{ChunkStore, SearchHit, SearchMode, SearchScope};

/// Searches the LanceDB chunks table of the question's tenant (the output of `mask_pii`). The
/// question is embedded with the same model as the chunks. When even the best chunk is below
/// `min_score`, the answer is `no_context` and no model is called. Passages are masked with
/// the question's placeholders, so the model sees no personal data from documents either.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveConfig {
    /// The LanceDB database the `index` stage writes (directory or object-store URI).
    pub uri: String,
    /// Object-store settings, as for `index`.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// The chunks table.
    #[serde(default = "default_table")]
    pub table: String,
    /// How questions are embedded: the same settings as the `embed` stage of the documents
    /// pipeline (same model, pooling and normalisation), or scores are meaningless.
    pub embedding: EmbedConfig,
    /// Passages given to the model (a question's `options.top_k` overrides it).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Lowest cosine similarity of the best passage for the question to be answered at all;
    /// passages below it are dropped.
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// Rank by vector and full-text (BM25) search fused by reciprocal rank, instead of vector
    /// search alone. `min_score` still applies to the vector similarity.
    #[serde(default)]
    pub hybrid: bool,
    /// Mask personal data in passages with the question's placeholders (needs `mask_pii`
    /// earlier in the chain; without it passages are passed as they are).
    #[serde(default = "default_true")]
    pub mask_passages: bool,
}

fn default_table() -> String {
    "chunks".to_owned()
}

fn default_top_k() -> usize {
    5
}

fn default_min_score() -> f32 {
    0.25
}

fn default_true() -> bool {
    true
}

/// Passages whose vector similarity hybrid search knows: those it may rank into the top `top_k`.
const HYBRID_POOL: usize = 32;

/// How long a missing chunks table is remembered before the database is opened again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

impl StageBuilder for RetrieveConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        self.embedding.validate(&format!("{path}.embedding"), errors);
        if !(1..=100).contains(&self.top_k) {
            errors.report(path, "top_k", format!("must be between 1 and 100, got {}", self.top_k));
        }
        if !(-1.0..=1.0).contains(&self.min_score) {
            errors.report(
                path,
                "min_score",
                format!("is a cosine similarity, between -1 and 1, got {}", self.min_score),
            );
        }
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

    async fn search(
        &self,
        scope: SearchScope<'_>,
        question: &str,
        vector: &[f32],
        limit: usize,
    ) -> Result<Vec<SearchHit>, StageError> {
        let store = self.store().await?;
        if !self.config.hybrid {
            let mut hits = store
                .search_in(scope, question, vector, limit, SearchMode::Vector)
                .await?;
            hits.retain(|hit| hit.score >= self.config.min_score);
            return Ok(hits);
        }
        // Vector similarities of a wider pool than `limit`: a passage full-text search ranks high
        // but vector search ranked just below `limit` (the exact term of the question, `SEV1`,
        // `Riverton`) must still be known to be relevant, or fusing could not bring it in.
        let pool = store
            .search_in(scope, question, vector, limit.max(HYBRID_POOL), SearchMode::Vector)
            .await?;
        let similarity: HashMap<String, f32> = pool
            .iter()
            .filter(|hit| hit.score >= self.config.min_score)
            .map(|hit| (hit.chunk_id.clone(), hit.score))
            .collect();
        if similarity.is_empty() {
            return Ok(Vec::new());
        }
        // Rank by the fused score, but keep the vector similarity as the passage's score (it is
        // what min_score means) and drop what vector search found irrelevant.
        let fused = store
            .search_in(scope, question, vector, limit, SearchMode::Hybrid)
            .await?;
        Ok(fused
            .into_iter()
            .filter_map(|hit| {
                similarity
                    .get(&hit.chunk_id)
                    .map(|score| SearchHit { score: *score, ..hit })
            })
            .collect())
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
            let vector = self
                .embedder
                .vectors(vec![draft.question.clone()])
                .await?
                .pop()
                .ok_or_else(|| StageError::internal("the embedder returned no vector"))?;
            let since = draft.options.as_ref().and_then(|o| o.changed_since.as_deref());
            let scope = SearchScope {
                tenant: &draft.tenant,
                indexed_since: since.map(parse_since).transpose()?,
            };
            let hits = self.search(scope, &draft.question, &vector, limit).await?;
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
