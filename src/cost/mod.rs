//! Cost and abuse control around the model calls of `generate`: budgets and rate limits per
//! tenant and user (reserved before a call, settled after, so concurrent requests cannot
//! overspend), a response cache, and a replay record per `request_id` so a redelivered
//! question is answered again without a second model call. State is shared by every replica
//! through Redis, or kept in memory when the pipeline declares a single replica.

pub mod limits;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use self::limits::{budget_lines, rate_lines, BudgetLine, LimitSet, RateLine, Refusal, Scope};
use self::store::StateStore;
use crate::clock::{self, Clock};
use crate::contracts::{AnswerDraft, AnswerStatus, Citation, TokenUsage};
use crate::error::{ConfigError, StageError};
use crate::llm::ChatMessage;
use crate::pii::holds_placeholders;
use crate::telemetry::metrics::metrics;

/// What happens to a request that would pass a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceededPolicy {
    /// Answer at once with status `budget_exceeded` or `rate_limited`, saying when it resets.
    #[default]
    Reject,
    /// Wait for a rate limit, or for a spent budget's window to reset, up to `max_delay_ms` in
    /// all (the message waits, other messages go on); a budget that resets later is rejected
    /// at once.
    Delay,
    /// A cheaper model of the tier whose estimate still fits, else the extractive answer (the
    /// best passages, no model call); `extract` questions are rejected instead.
    Downgrade,
}

/// Budgets, rate limits, response cache and replay records of a `generate` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostControlConfig {
    /// `redis://host:port[/db]`: shared by every replica. `memory`: this process only, which
    /// needs `single_replica: true` (budgets kept per process would multiply with replicas).
    pub store: String,
    /// Declares that this pipeline runs as one replica (required by `store: memory`).
    #[serde(default)]
    pub single_replica: bool,
    /// Prefix of every key, so deployments can share one Redis.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Limits of every tenant.
    #[serde(default)]
    pub tenant: LimitSet,
    /// Limits of every user (each user of each tenant).
    #[serde(default)]
    pub user: LimitSet,
    /// Tenants with their own limits instead of `tenant`'s.
    #[serde(default)]
    pub tenants: BTreeMap<String, LimitSet>,
    /// `reject`, `delay` or `downgrade`.
    #[serde(default)]
    pub on_exceeded: ExceededPolicy,
    /// `delay`: the longest one request waits, for rate limits and budget resets together.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// `delay`: how many requests may wait at once; more are rejected, so one tenant's waiting
    /// requests cannot take every in-flight slot from the others.
    #[serde(default = "default_max_waiting")]
    pub max_waiting: usize,
    /// Answers kept for identical questions (same tenant, models, task and masked prompt,
    /// passages included, so a changed document changes the key); 0: no cache.
    #[serde(default = "default_cache_ttl_s")]
    pub cache_ttl_s: u64,
    /// How long a request's outcome is kept so a redelivery re-emits it without a model call.
    #[serde(default = "default_replay_ttl_s")]
    pub replay_ttl_s: u64,
    /// Semantic cache: a question whose embedding has at least this cosine similarity to an
    /// answered one of the same tenant, task and models gets that answer, provided every
    /// passage the answer cites (at the same document version) was retrieved for this question
    /// too. Unset: exact matches only.
    #[serde(default)]
    pub semantic_threshold: Option<f32>,
}

fn default_key_prefix() -> String {
    "ragstream".to_owned()
}

fn default_max_delay_ms() -> u64 {
    30_000
}

fn default_max_waiting() -> usize {
    64
}

fn default_cache_ttl_s() -> u64 {
    24 * 3600
}

fn default_replay_ttl_s() -> u64 {
    7 * 24 * 3600
}

impl CostControlConfig {
    /// Appends the problems of this block (at `path`) to `errors`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.store == "memory" {
            if !self.single_replica {
                errors.push(ConfigError::new(
                    &format!("{path}.store"),
                    "`memory` keeps budgets per process; use redis://… or declare single_replica: true",
                ));
            }
        } else if !self.store.starts_with("redis://") && !self.store.starts_with("rediss://") {
            errors.push(ConfigError::new(
                &format!("{path}.store"),
                format!("`{}` is neither redis://host:port nor memory", self.store),
            ));
        }
        let sets = [("tenant".to_owned(), &self.tenant), ("user".to_owned(), &self.user)]
            .into_iter()
            .chain(self.tenants.iter().map(|(name, set)| (format!("tenants.{name}"), set)));
        for (set_path, set) in sets {
            for (name, limit) in set.entries() {
                if limit.is_some_and(|limit| !(limit > 0.0 && limit.is_finite())) {
                    errors.push(ConfigError::new(
                        &format!("{path}.{set_path}.{name}"),
                        "must be a positive number",
                    ));
                }
            }
        }
        if self.semantic_threshold.is_some_and(|t| !(t > 0.0 && t <= 1.0)) {
            errors.push(ConfigError::new(
                &format!("{path}.semantic_threshold"),
                "must be a cosine similarity in (0, 1]",
            ));
        }
        if self.on_exceeded == ExceededPolicy::Delay && self.max_waiting == 0 {
            errors.push(ConfigError::new(
                &format!("{path}.max_waiting"),
                "must be at least 1 with on_exceeded: delay",
            ));
        }
    }
}

/// What a model call is expected to take, before it is made.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Name of the model in the chain.
    pub model: String,
    /// Prompt tokens plus the answer's bound.
    pub tokens: f64,
    pub cost_usd: f64,
}

/// Capacity taken for a call, to settle with what it really used.
#[derive(Debug)]
pub struct Reservation {
    budgets: Vec<BudgetLine>,
    rates: Vec<RateLine>,
    tokens: f64,
    cost_usd: f64,
}

/// Whether and how a call may go ahead.
#[derive(Debug)]
pub enum Admission {
    /// Call `estimates[index]`'s model (and those after it in the tier); settle afterwards.
    Admitted {
        index: usize,
        reservation: Reservation,
        /// Set when a limit moved the call to a cheaper model: why.
        downgraded: Option<String>,
    },
    /// No call: answer with the refusal, or (`extractive`) with the best passages.
    Refused { refusal: Refusal, extractive: bool },
}

/// An outcome kept for a replay or the cache: what the answer needs, placeholders still in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredOutcome {
    pub status: AnswerStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    #[serde(default)]
    pub citations: Vec<Citation>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub fallback_reason: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub usage: TokenUsage,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub cached: bool,
    /// For a replay record: the digest of the masked question it answered, so a request id
    /// reused for another question is refused instead of served this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_sha256: Option<String>,
}

impl StoredOutcome {
    /// The outcome of a decided draft.
    pub fn of(draft: &AnswerDraft) -> Option<Self> {
        Some(Self {
            status: draft.status?,
            reason: draft.reason.clone(),
            answer: draft.answer.clone(),
            data: draft.data.clone(),
            citations: draft.citations.clone(),
            model: draft.model.clone(),
            fallback_reason: draft.fallback_reason.clone(),
            route: draft.route.clone(),
            usage: draft.usage,
            cost_usd: draft.cost_usd,
            cached: draft.cached,
            question_sha256: None,
        })
    }

    /// The outcome for a request id already answered for a different question: `failed`, no
    /// model call, nothing charged.
    fn request_id_reused(request_id: &str) -> Self {
        Self {
            status: AnswerStatus::Failed,
            reason: Some(format!(
                "request_id `{request_id}` was already answered for a different question; a new question needs a new request_id"
            )),
            answer: None,
            data: None,
            citations: Vec::new(),
            model: None,
            fallback_reason: None,
            route: None,
            usage: TokenUsage::default(),
            cost_usd: 0.0,
            cached: false,
            question_sha256: None,
        }
    }

    /// Whether the answer (or extracted data) holds personal-data placeholders.
    pub fn holds_placeholders(&self) -> bool {
        self.answer.as_deref().is_some_and(holds_placeholders)
            || self
                .data
                .as_ref()
                .is_some_and(|data| holds_placeholders(&data.to_string()))
    }

    /// Decides `draft` with this outcome.
    pub fn apply(self, draft: &mut AnswerDraft) {
        draft.answer = self.answer;
        draft.data = self.data;
        draft.citations = self.citations;
        draft.model = self.model;
        draft.fallback_reason = self.fallback_reason;
        draft.route = self.route;
        draft.usage = self.usage;
        draft.cost_usd = self.cost_usd;
        draft.cached = self.cached;
        draft.decide(self.status, self.reason);
    }
}

/// Answered questions kept per list of the semantic cache (the most recent).
const MAX_SIMILAR_QUESTIONS: usize = 32;

/// An answered question in a semantic-cache list.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimilarQuestion {
    /// Its exact cache key.
    key: String,
    /// Its embedding.
    vector: Vec<f32>,
    /// The chunks its answer rests on: those it cites, or every passage it was given when it
    /// cites none. Chunk ids carry the document version, so a changed document never matches.
    #[serde(default)]
    rests_on: Vec<String>,
}

/// The chunks an answer rests on (see `SimilarQuestion::rests_on`), most relevant first.
fn rests_on(draft: &AnswerDraft) -> Vec<String> {
    let cited: Vec<String> = draft
        .passages
        .iter()
        .map(|p| &p.chunk_id)
        .filter(|id| draft.citations.iter().any(|c| &c.chunk_id == *id))
        .cloned()
        .collect();
    if cited.is_empty() {
        draft.passages.iter().map(|p| p.chunk_id.clone()).collect()
    } else {
        cited
    }
}

/// The digest of a draft's task and masked question (no personal data in it).
fn question_digest(draft: &AnswerDraft) -> String {
    let mut digest = Sha256::new();
    digest.update(format!("{:?}\n", draft.task));
    digest.update(draft.question.as_bytes());
    hex(digest)
}

/// The digest as lower-case hex.
fn hex(digest: Sha256) -> String {
    digest.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Cosine similarity; 0 for vectors of different length or zero norm.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator == 0.0 {
        0.0
    } else {
        dot / denominator
    }
}

/// The cost controls of one `generate` stage, connected to their store.
pub struct CostControls {
    config: CostControlConfig,
    store: StateStore,
    waiting: Arc<Semaphore>,
    /// Budget windows follow its time of day; waits for a window or a rate pass on it.
    clock: Arc<dyn Clock>,
}

impl CostControls {
    /// Connects to the configured store, on the system clock.
    pub async fn connect(config: &CostControlConfig) -> Result<Self, StageError> {
        Self::with_clock(config, clock::system()).await
    }

    /// Connects to the configured store, reading time from `clock`.
    pub async fn with_clock(config: &CostControlConfig, clock: Arc<dyn Clock>) -> Result<Self, StageError> {
        Ok(Self {
            store: StateStore::connect(&config.store, clock.clone()).await?,
            waiting: Arc::new(Semaphore::new(config.max_waiting.max(1))),
            config: config.clone(),
            clock,
        })
    }

    /// The time of day on the clock.
    fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from(self.clock.wall())
    }

    fn replay_key(&self, draft: &AnswerDraft) -> String {
        format!(
            "{}:answer:{}:{}",
            self.config.key_prefix, draft.tenant, draft.request_id
        )
    }

    /// The outcome already given to this request, if it was answered before (a redelivery).
    pub async fn replayed(&self, draft: &AnswerDraft) -> Result<Option<StoredOutcome>, StageError> {
        if self.config.replay_ttl_s == 0 {
            return Ok(None);
        }
        let stored = self.load(&self.replay_key(draft)).await?;
        Ok(stored.map(|stored| match &stored.question_sha256 {
            Some(digest) if *digest != question_digest(draft) => StoredOutcome::request_id_reused(&draft.request_id),
            _ => stored,
        }))
    }

    /// Records the decided outcome of `draft` for replays: before the answer is emitted. A
    /// refusal by a limit is not recorded: it cost nothing, so deciding again cannot pay twice,
    /// and the same request sent again once the limit has reset deserves an answer.
    pub async fn remember(&self, draft: &AnswerDraft) -> Result<(), StageError> {
        let refused = matches!(
            draft.status,
            Some(AnswerStatus::RateLimited | AnswerStatus::BudgetExceeded)
        );
        let Some(mut outcome) = StoredOutcome::of(draft).filter(|_| self.config.replay_ttl_s > 0 && !refused) else {
            return Ok(());
        };
        outcome.question_sha256 = Some(question_digest(draft));
        self.store_outcome(&self.replay_key(draft), &outcome, self.config.replay_ttl_s)
            .await
    }

    /// The cache key of a call: tenant, task, the models that may answer, and the masked
    /// messages (question and passages) with case and spacing normalized. `None` without cache.
    pub fn cache_key(&self, draft: &AnswerDraft, models: &[String], messages: &[ChatMessage]) -> Option<String> {
        if self.config.cache_ttl_s == 0 {
            return None;
        }
        let mut digest = Sha256::new();
        digest.update(format!("{:?}", draft.task));
        for model in models {
            digest.update([0]);
            digest.update(model.as_bytes());
        }
        for message in messages {
            digest.update([1]);
            digest.update(format!("{:?}", message.role));
            let normalized: Vec<String> = message.content.split_whitespace().map(str::to_lowercase).collect();
            digest.update(normalized.join(" "));
        }
        let hash = hex(digest);
        Some(format!("{}:cache:{}:{hash}", self.config.key_prefix, draft.tenant))
    }

    /// The cached answer for this call: under its exact `key`, else (with a
    /// `semantic_threshold`) the answer to a similar question that rests on passages this one
    /// retrieved too.
    /// Counted as a hit or a miss.
    pub async fn cached(
        &self,
        key: &str,
        draft: &AnswerDraft,
        models: &[String],
    ) -> Result<Option<StoredOutcome>, StageError> {
        let mut found = self.load(key).await?.map(|outcome| (outcome, "cache hit".to_owned()));
        if found.is_none() {
            if let Some((similar, similarity)) = self.similar(draft, models).await? {
                // A placeholder means what the vault of the request that produced the answer
                // says; this request numbers its personal data differently, so restoring it
                // here would put the wrong person or address in the answer. (Answers listed
                // before this rule may still hold some.)
                found = self
                    .load(&similar)
                    .await?
                    .filter(|outcome| !outcome.holds_placeholders())
                    .map(|outcome| (outcome, format!("semantic cache hit (similarity {similarity:.3})")));
            }
        }
        let label = if found.is_some() { "hit" } else { "miss" };
        metrics().cache_lookups.with_label_values(&[label]).inc();
        Ok(found.map(|(outcome, route)| StoredOutcome {
            usage: TokenUsage::default(),
            cost_usd: 0.0,
            cached: true,
            route: Some(route),
            ..outcome
        }))
    }

    async fn load(&self, key: &str) -> Result<Option<StoredOutcome>, StageError> {
        let stored = self.store.get(key).await?;
        Ok(stored.and_then(|text| serde_json::from_str(&text).ok()))
    }

    async fn store_outcome(&self, key: &str, outcome: &StoredOutcome, ttl_s: u64) -> Result<(), StageError> {
        let text = serde_json::to_string(outcome)
            .map_err(|error| StageError::internal(format!("cannot serialize an outcome: {error}")))?;
        self.store.set(key, &text, Duration::from_secs(ttl_s)).await
    }

    /// Where answered questions resting on `chunk` are listed for the semantic cache: per
    /// tenant, task, models and chunk. An answer is listed under the most relevant chunk it
    /// rests on; a question looks in the lists of every passage it retrieved, so a paraphrase
    /// that ranks the passages differently, or retrieves some others, still finds it.
    fn similar_list_key(&self, draft: &AnswerDraft, models: &[String], chunk: &str) -> String {
        let mut digest = Sha256::new();
        digest.update(draft.task.as_str());
        for model in models {
            digest.update([0]);
            digest.update(model.as_bytes());
        }
        digest.update([1]);
        digest.update(chunk.as_bytes());
        let hash = hex(digest);
        format!("{}:similar:{}:{hash}", self.config.key_prefix, draft.tenant)
    }

    /// The cache key of the most similar answered question above the threshold whose answer
    /// rests only on passages this question retrieved too, if any.
    async fn similar(&self, draft: &AnswerDraft, models: &[String]) -> Result<Option<(String, f32)>, StageError> {
        let Some(threshold) = self.config.semantic_threshold else {
            return Ok(None);
        };
        if draft.question_vector.is_empty() {
            return Ok(None);
        }
        let retrieved: Vec<&str> = draft.passages.iter().map(|p| p.chunk_id.as_str()).collect();
        let mut best: Option<(String, f32)> = None;
        for chunk in &retrieved {
            let list = self.similar_list_key(draft, models, chunk);
            for entry in self.similar_questions(&list).await? {
                let similarity = cosine(&entry.vector, &draft.question_vector);
                let grounded = !entry.rests_on.is_empty()
                    && entry.rests_on.iter().all(|needed| retrieved.contains(&needed.as_str()));
                if grounded && similarity >= threshold && best.as_ref().is_none_or(|(_, b)| similarity > *b) {
                    best = Some((entry.key, similarity));
                }
            }
        }
        Ok(best)
    }

    /// The answered questions listed under `list` (none if it is missing or unreadable).
    async fn similar_questions(&self, list: &str) -> Result<Vec<SimilarQuestion>, StageError> {
        let stored = self.store.get(list).await?;
        Ok(stored
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default())
    }

    /// Keeps a model's answer for identical (and, with a threshold, similar) questions.
    pub async fn cache(&self, key: &str, draft: &AnswerDraft, models: &[String]) -> Result<(), StageError> {
        let Some(outcome) = StoredOutcome::of(draft) else {
            return Ok(());
        };
        self.store_outcome(key, &outcome, self.config.cache_ttl_s).await?;
        // An answer with placeholders is served only for the exact same masked prompt, whose
        // placeholders are numbered the same way (see `cached`).
        if self.config.semantic_threshold.is_none() || draft.question_vector.is_empty() || outcome.holds_placeholders()
        {
            return Ok(());
        }
        let rests_on = rests_on(draft);
        let Some(anchor) = rests_on.first() else {
            return Ok(());
        };
        let ttl = Duration::from_secs(self.config.cache_ttl_s);
        let list = self.similar_list_key(draft, models, anchor);
        // Read, append, write back: two replicas adding at once may drop one entry, which
        // only costs a future hit.
        let mut entries = self.similar_questions(&list).await?;
        entries.retain(|entry| entry.key != key);
        entries.push(SimilarQuestion {
            key: key.to_owned(),
            vector: draft.question_vector.clone(),
            rests_on,
        });
        let excess = entries.len().saturating_sub(MAX_SIMILAR_QUESTIONS);
        entries.drain(..excess);
        let text = serde_json::to_string(&entries)
            .map_err(|error| StageError::internal(format!("cannot serialize the similar questions: {error}")))?;
        self.store.set(&list, &text, ttl).await
    }

    fn scopes(&self, draft: &AnswerDraft) -> [(Scope, &LimitSet); 2] {
        let tenant_limits = self.config.tenants.get(&draft.tenant).unwrap_or(&self.config.tenant);
        [
            (Scope::Tenant(draft.tenant.clone()), tenant_limits),
            (Scope::user(&draft.tenant, &draft.user), &self.config.user),
        ]
    }

    /// Admits the call of the first estimate whose model fits every limit (the later ones only
    /// with `downgrade`), reserving its tokens and cost; refuses otherwise.
    pub async fn admit(&self, draft: &AnswerDraft, estimates: &[Estimate]) -> Result<Admission, StageError> {
        let mut first_refusal = None;
        for (index, estimate) in estimates.iter().enumerate() {
            // Only a cheaper model can help once one did not fit.
            if index > 0 && estimate.cost_usd >= estimates[0].cost_usd && estimate.tokens >= estimates[0].tokens {
                continue;
            }
            match self.admit_one(draft, estimate).await? {
                Ok(reservation) => {
                    let downgraded = first_refusal
                        .as_ref()
                        .map(|refusal: &Refusal| format!("downgraded to {}: {}", estimate.model, refusal.reason));
                    let outcome = if downgraded.is_some() { "downgraded" } else { "admitted" };
                    metrics().budget_decisions.with_label_values(&[outcome]).inc();
                    return Ok(Admission::Admitted {
                        index,
                        reservation,
                        downgraded,
                    });
                }
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                    if self.config.on_exceeded != ExceededPolicy::Downgrade {
                        break;
                    }
                }
            }
        }
        let refusal = first_refusal.unwrap_or_else(|| Refusal {
            status: AnswerStatus::Failed,
            reason: "no model to call".to_owned(),
        });
        let extractive = self.config.on_exceeded == ExceededPolicy::Downgrade;
        let outcome = if extractive {
            "downgraded"
        } else {
            refusal.status.as_str()
        };
        metrics().budget_decisions.with_label_values(&[outcome]).inc();
        Ok(Admission::Refused { refusal, extractive })
    }

    async fn admit_one(
        &self,
        draft: &AnswerDraft,
        estimate: &Estimate,
    ) -> Result<Result<Reservation, Refusal>, StageError> {
        let scopes = self.scopes(draft);
        let prefix = &self.config.key_prefix;
        let rates: Vec<RateLine> = scopes
            .iter()
            .flat_map(|(scope, limits)| rate_lines(prefix, scope, limits))
            .collect();
        let buckets: Vec<_> = rates.iter().map(|line| line.bucket(estimate.tokens)).collect();
        let mut delay = DelayAllowance::new(self);
        loop {
            while let Some((wait, slowest)) = self.store.pace(&buckets).await? {
                if !delay.may_wait(wait) {
                    return Ok(Err(Refusal {
                        status: AnswerStatus::RateLimited,
                        reason: rates[slowest].exceeded(wait),
                    }));
                }
                self.clock.sleep(wait).await;
            }
            // Budget windows are read after any wait: a wait may have crossed into a new one.
            let now = self.now();
            let budgets: Vec<BudgetLine> = scopes
                .iter()
                .flat_map(|(scope, limits)| budget_lines(prefix, scope, limits, now))
                .collect();
            let counters: Vec<_> = budgets
                .iter()
                .map(|line| line.counter(estimate.tokens, estimate.cost_usd, now))
                .collect();
            let Err(index) = self.store.reserve(&counters).await? else {
                return Ok(Ok(Reservation {
                    budgets,
                    rates,
                    tokens: estimate.tokens,
                    cost_usd: estimate.cost_usd,
                }));
            };
            // The request does not happen now: give back the rate-limit slots it took.
            let refunds: Vec<(String, f64)> = rates
                .iter()
                .zip(&buckets)
                .map(|(line, bucket)| (line.key.clone(), -bucket.increment_ms))
                .collect();
            self.store.adjust(&refunds).await?;
            // A spent per-minute budget resets within the allowed delay; a day's does not, and
            // is refused at once rather than held until the delay runs out.
            let until_reset = (budgets[index].resets_at - self.now()).to_std().unwrap_or_default() + RESET_MARGIN;
            if !delay.may_wait(until_reset) {
                return Ok(Err(Refusal {
                    status: AnswerStatus::BudgetExceeded,
                    reason: budgets[index].exceeded(),
                }));
            }
            self.clock.sleep(until_reset).await;
        }
    }

    /// Settles a reservation with what the call used (nothing, if it failed), and updates the
    /// remaining-budget gauge of the tenant.
    pub async fn settle(&self, draft: &AnswerDraft, reservation: Reservation) -> Result<(), StageError> {
        let used_tokens = (draft.usage.prompt_tokens + draft.usage.completion_tokens) as f64;
        let actual = (used_tokens, draft.cost_usd);
        let reserved = (reservation.tokens, reservation.cost_usd);
        let mut corrections: Vec<(String, f64)> = reservation
            .budgets
            .iter()
            .map(|line| (line.key.clone(), line.correction(reserved, actual)))
            .collect();
        corrections.extend(
            reservation
                .rates
                .iter()
                .map(|line| (line.key.clone(), line.correction(reservation.tokens, used_tokens))),
        );
        self.store.adjust(&corrections).await?;
        // The tenant's tightest budget: what fraction of it is left.
        let mut remaining: Option<f64> = None;
        for line in reservation
            .budgets
            .iter()
            .filter(|l| matches!(l.scope, Scope::Tenant(_)))
        {
            let used: f64 = self
                .store
                .get(&line.key)
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            let limit = line.scaled_limit();
            let left = (1.0 - used / limit).clamp(0.0, 1.0);
            remaining = Some(remaining.map_or(left, |r: f64| r.min(left)));
        }
        if let Some(left) = remaining {
            metrics()
                .budget_remaining_ratio
                .with_label_values(&[&draft.tenant])
                .set(left);
        }
        Ok(())
    }
}

/// Past a budget window's end before a delayed request tries again, so that replicas whose
/// clocks are slightly behind Redis' view of the window have moved on too.
const RESET_MARGIN: Duration = Duration::from_millis(50);

/// How much longer one request may wait under `on_exceeded: delay`, and its place among the
/// `max_waiting` requests allowed to wait at once (held for the whole admission).
struct DelayAllowance<'a> {
    control: &'a CostControls,
    waited: Duration,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<'a> DelayAllowance<'a> {
    fn new(control: &'a CostControls) -> Self {
        Self {
            control,
            waited: Duration::ZERO,
            permit: None,
        }
    }

    /// Whether the request may wait `wait` more; if so, counts it as waited.
    fn may_wait(&mut self, wait: Duration) -> bool {
        let config = &self.control.config;
        if config.on_exceeded != ExceededPolicy::Delay
            || self.waited + wait > Duration::from_millis(config.max_delay_ms)
        {
            return false;
        }
        if self.permit.is_none() {
            self.permit = self.control.waiting.clone().try_acquire_owned().ok();
            if self.permit.is_none() {
                return false;
            }
            metrics().budget_decisions.with_label_values(&["delayed"]).inc();
        }
        self.waited += wait;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::contracts::Task;

    async fn controls(yaml: &str) -> CostControls {
        let config: CostControlConfig = serde_yaml::from_str(yaml).unwrap();
        CostControls::connect(&config).await.unwrap()
    }

    fn draft() -> AnswerDraft {
        AnswerDraft::failed("acme", "r-1", "u-1", Task::Qa, "What is the refund policy?", "")
    }

    fn dollar() -> Vec<Estimate> {
        vec![Estimate {
            model: "primary".to_owned(),
            tokens: 100.0,
            cost_usd: 1.0,
        }]
    }

    fn reservation(admission: Admission) -> Reservation {
        match admission {
            Admission::Admitted { reservation, .. } => reservation,
            Admission::Refused { refusal, .. } => panic!("refused: {}", refusal.reason),
        }
    }

    /// `delay` holds a request whose per-minute budget is spent until the next minute, and
    /// admits it there. The wait passes on a manual clock: the test takes no real minute.
    #[tokio::test]
    async fn delay_waits_for_a_spent_per_minute_budget_to_reset() {
        let config: CostControlConfig = serde_yaml::from_str(
            "{ store: memory, single_replica: true, on_exceeded: delay, max_delay_ms: 65000, \
             tenant: { cost_usd_per_minute: 1.0 } }",
        )
        .unwrap();
        let clock = ManualClock::default();
        let controls = CostControls::with_clock(&config, Arc::new(clock.clone()))
            .await
            .unwrap();
        let started = clock.now();
        let first = reservation(controls.admit(&draft(), &dollar()).await.unwrap());
        let second = reservation(controls.admit(&draft(), &dollar()).await.unwrap());
        assert!(
            second.budgets[0].resets_at > first.budgets[0].resets_at,
            "the second request was admitted in a later window"
        );
        assert_ne!(second.budgets[0].key, first.budgets[0].key);
        // It waited for the window to end (and the margin for clocks that disagree), no longer.
        let waited = clock.now() - started;
        assert!(DateTime::<Utc>::from(clock.wall()) >= first.budgets[0].resets_at);
        assert!(waited <= Duration::from_secs(60) + RESET_MARGIN, "{waited:?}");
    }

    /// A per-day budget does not reset within `max_delay_ms`: refused without waiting for it.
    #[tokio::test]
    async fn delay_refuses_a_budget_that_resets_after_the_longest_delay() {
        let controls = controls(
            "{ store: memory, single_replica: true, on_exceeded: delay, max_delay_ms: 600000, \
             tenant: { cost_usd_per_day: 1.0 } }",
        )
        .await;
        reservation(controls.admit(&draft(), &dollar()).await.unwrap());
        let refused = controls.admit(&draft(), &dollar()).await.unwrap();
        let Admission::Refused { refusal, extractive } = refused else {
            panic!("admitted over the budget");
        };
        assert_eq!(refusal.status, AnswerStatus::BudgetExceeded);
        assert!(!extractive);
        assert!(refusal.reason.contains("per-day budget of $1.00"), "{}", refusal.reason);
    }

    #[tokio::test]
    async fn a_refusal_is_not_replayed_but_an_answer_is() {
        let controls = controls("{ store: memory, single_replica: true }").await;
        let mut refused = draft();
        refused.request_id = "refused".to_owned();
        refused.status = Some(AnswerStatus::RateLimited);
        controls.remember(&refused).await.unwrap();
        assert!(controls.replayed(&refused).await.unwrap().is_none());
        let failed = draft();
        controls.remember(&failed).await.unwrap();
        let stored = controls
            .replayed(&failed)
            .await
            .unwrap()
            .expect("a decided outcome is replayed");
        assert_eq!(stored.status, AnswerStatus::Failed);
    }

    #[tokio::test]
    async fn a_request_id_reused_for_another_question_is_refused_not_served_the_old_answer() {
        let controls = controls("{ store: memory, single_replica: true }").await;
        let mut answered = draft();
        answered.answer = Some("Refunds take 5 days. [1]".to_owned());
        answered.status = Some(AnswerStatus::Ok);
        controls.remember(&answered).await.unwrap();
        let redelivered = controls.replayed(&draft()).await.unwrap().expect("replayed");
        assert_eq!(redelivered.answer.as_deref(), Some("Refunds take 5 days. [1]"));
        let mut other = draft();
        other.question = "How long is parental leave?".to_owned();
        let refused = controls.replayed(&other).await.unwrap().expect("an outcome");
        assert_eq!(refused.status, AnswerStatus::Failed);
        assert_eq!(refused.answer, None);
        assert!(refused.reason.unwrap().contains("different question"));
    }

    fn passage(chunk_id: &str) -> crate::contracts::RetrievedPassage {
        crate::contracts::RetrievedPassage {
            chunk_id: chunk_id.to_owned(),
            doc_id: chunk_id.split(':').next().unwrap().to_owned(),
            title: None,
            text: format!("text of {chunk_id}"),
            score: 0.8,
        }
    }

    /// A question with `vector` that retrieved `chunks`.
    fn asking(question: &str, vector: [f32; 2], chunks: &[&str]) -> AnswerDraft {
        let mut draft = AnswerDraft::failed("acme", "r-1", "u-1", Task::Qa, question, "");
        draft.status = None;
        draft.question_vector = vector.to_vec();
        draft.passages = chunks.iter().map(|c| passage(c)).collect();
        draft
    }

    /// A similar question reuses an answer when every passage the answer cites was retrieved
    /// again, however the others differ; not when a cited passage is missing or changed, and
    /// not when the question is not similar enough.
    #[tokio::test]
    async fn the_semantic_cache_reuses_an_answer_whose_cited_passages_were_retrieved_again() {
        let controls = controls("{ store: memory, single_replica: true, semantic_threshold: 0.9 }").await;
        let models = vec!["primary".to_owned()];
        let mut answered = asking(
            "How many leave days?",
            [1.0, 0.0],
            &["leave:1:0", "pay:1:2", "travel:1:1"],
        );
        answered.answer = Some("27 days [1].".to_owned());
        answered.citations = vec![Citation {
            index: 1,
            doc_id: "leave".to_owned(),
            chunk_id: "leave:1:0".to_owned(),
            title: None,
            score: 0.8,
        }];
        answered.decide(AnswerStatus::Ok, None);
        let key = |draft: &AnswerDraft| {
            let messages = [ChatMessage::new(crate::llm::Role::User, draft.question.clone())];
            controls.cache_key(draft, &models, &messages).unwrap()
        };
        controls.cache(&key(&answered), &answered, &models).await.unwrap();

        // Other words, other passages beside the cited one, in another order.
        let paraphrase = asking("leave days per year", [0.95, 0.312], &["benefits:1:4", "leave:1:0"]);
        let hit = controls.cached(&key(&paraphrase), &paraphrase, &models).await.unwrap();
        let hit = hit.expect("the cited passage was retrieved again");
        assert_eq!(hit.answer.as_deref(), Some("27 days [1]."));
        assert!(hit.cached && hit.route.unwrap().starts_with("semantic cache hit"));

        let cited_missing = asking("leave days per year", [0.95, 0.312], &["pay:1:2", "travel:1:1"]);
        let changed = asking("leave days per year", [0.95, 0.312], &["leave:2:0", "pay:1:2"]);
        let unlike = asking("parking rules", [0.6, 0.8], &["leave:1:0", "pay:1:2"]);
        for (what, draft) in [
            ("a cited passage not retrieved", cited_missing),
            ("the cited document changed", changed),
            ("a dissimilar question", unlike),
        ] {
            let found = controls.cached(&key(&draft), &draft, &models).await.unwrap();
            assert!(found.is_none(), "{what}: {found:?}");
        }
    }

    /// An answer with placeholders is numbered by the vault of the request that produced it:
    /// the same masked prompt (numbered the same way) may reuse it, a similar one may not.
    #[tokio::test]
    async fn an_answer_with_placeholders_is_not_served_to_a_similar_question() {
        let controls = controls("{ store: memory, single_replica: true, semantic_threshold: 0.9 }").await;
        let models = vec!["primary".to_owned()];
        let mut answered = asking("Who approves [PERSON_1]'s leave?", [1.0, 0.0], &["leave:1:0"]);
        answered.answer = Some("[PERSON_2] approves it [1].".to_owned());
        answered.decide(AnswerStatus::Ok, None);
        let key = |draft: &AnswerDraft| {
            let messages = [ChatMessage::new(crate::llm::Role::User, draft.question.clone())];
            controls.cache_key(draft, &models, &messages).unwrap()
        };
        controls.cache(&key(&answered), &answered, &models).await.unwrap();

        let same = asking("Who approves [PERSON_1]'s leave?", [1.0, 0.0], &["leave:1:0"]);
        let exact = controls.cached(&key(&same), &same, &models).await.unwrap();
        assert_eq!(exact.unwrap().route.as_deref(), Some("cache hit"));
        let paraphrase = asking("[PERSON_1] wants leave: who signs?", [0.99, 0.1], &["leave:1:0"]);
        let found = controls.cached(&key(&paraphrase), &paraphrase, &models).await.unwrap();
        assert!(found.is_none(), "{found:?}");
    }

    /// With `reject`, a spent per-minute budget is refused even though it resets soon.
    #[tokio::test]
    async fn reject_does_not_wait_for_a_reset() {
        let controls = controls("{ store: memory, single_replica: true, tenant: { cost_usd_per_minute: 1.0 } }").await;
        reservation(controls.admit(&draft(), &dollar()).await.unwrap());
        let refused = controls.admit(&draft(), &dollar()).await.unwrap();
        assert!(matches!(
            refused,
            Admission::Refused {
                refusal: Refusal {
                    status: AnswerStatus::BudgetExceeded,
                    ..
                },
                ..
            }
        ));
    }
}
