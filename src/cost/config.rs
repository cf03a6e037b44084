//! The `cost_control` block of a `generate` stage.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::limits::LimitSet;
use crate::error::ConfigError;
use crate::error::Findings;
use crate::state;
use serde_inline_default::serde_inline_default;

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

/// What a question meets while the store (Redis) does not answer (each command gives up after
/// the client's response timeout, 500 ms, so nothing waits on a dead server).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreUnavailablePolicy {
    /// The `generate` stage fails with an external error: the pipeline's `retry` policy applies
    /// (backoff between attempts), then the question is dead-lettered with a `failed` answer.
    #[default]
    Retry,
    /// Fail open: answered without budgets, rate limits, the response cache or replay records;
    /// what those calls use is not counted in the budgets afterwards.
    Open,
    /// Fail closed: answered at once with status `failed` (the reason says why); no model call.
    Closed,
}

impl StoreUnavailablePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreUnavailablePolicy::Retry => "retry",
            StoreUnavailablePolicy::Open => "open",
            StoreUnavailablePolicy::Closed => "closed",
        }
    }
}

/// Budgets, rate limits and the response cache of a `generate` stage.
#[serde_inline_default]
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
    #[serde_inline_default("ragstream".to_owned())]
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
    #[serde_inline_default(30_000)]
    pub max_delay_ms: u64,
    /// `delay`: how many requests may wait at once; more are rejected, so one tenant's waiting
    /// requests cannot take every in-flight slot from the others.
    #[serde_inline_default(64)]
    pub max_waiting: usize,
    /// Answers kept for identical questions (same tenant, models, task and masked prompt,
    /// passages included, so a changed document changes the key); 0: no cache.
    #[serde_inline_default(24 * 3600)]
    pub cache_ttl_s: u64,
    /// Semantic cache: a question whose embedding has at least this cosine similarity to an
    /// answered one of the same tenant, task and models gets that answer, provided every
    /// passage the answer cites (at the same document version) was retrieved for this question
    /// too. Unset: exact matches only.
    pub semantic_threshold: Option<f32>,
    /// While the store does not answer: `retry` (the pipeline's retries, then the dead-letter
    /// topic), `open` (answer without budgets, limits and cache) or `closed` (answer `failed`).
    #[serde(default)]
    pub on_store_unavailable: StoreUnavailablePolicy,
}

impl CostControlConfig {
    /// Appends the problems of this block (at `path`) to `errors`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if let Err(problem) = state::check_url(&self.store) {
            errors.report(path, "store", problem);
        } else if self.store == "memory" && !self.single_replica {
            errors.report(
                path,
                "store",
                "`memory` keeps budgets per process; use redis://… or declare single_replica: true",
            );
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
            errors.report(path, "semantic_threshold", "must be a cosine similarity in (0, 1]");
        }
        if self.on_exceeded == ExceededPolicy::Delay && self.max_waiting == 0 {
            errors.report(path, "max_waiting", "must be at least 1 with on_exceeded: delay");
        }
    }
}
