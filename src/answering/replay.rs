//! Replay records: the outcome each request got, kept so that a redelivered question (after a
//! crash or a rebalance, before its offset was committed) is answered again without a second
//! model call or a second charge. Each record carries a digest of the masked question it
//! answered, so a request id reused for another question gets `failed` instead of the old
//! answer. Independent of cost control: on whenever `ttl_s` is above 0.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{store_unavailable, store_write_lost, Layer, Next, Turn};
use crate::clock::Clock;
use crate::contracts::{AnswerDraft, AnswerStatus, StoredOutcome};
use crate::cost::StoreUnavailablePolicy;
use crate::error::Findings;
use crate::error::{ConfigError, StageError};
use crate::state::{self, StateStore};
use crate::telemetry::metrics::metrics;
use crate::tools::ToolRecords;

/// Where and how long a `generate` stage keeps the outcome of each request.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayConfig {
    /// `redis://host:port[/db]`, shared by every replica, or `memory` (this process only: a
    /// question redelivered to another replica is answered again). Unset: the `cost_control`
    /// store when there is one, else `memory`.
    pub store: Option<String>,
    /// Prefix of every key. Unset: `cost_control.key_prefix`, else `ragstream`.
    pub key_prefix: Option<String>,
    /// How long a request's outcome is kept; 0: no replay records (a redelivered question is
    /// answered, and paid for, again).
    pub ttl_s: u64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            store: None,
            key_prefix: None,
            ttl_s: 7 * 24 * 3600,
        }
    }
}

impl ReplayConfig {
    /// Appends the problems of this block (at `path`) to `errors`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if let Err(problem) = self.store.as_deref().map_or(Ok(()), state::check_url) {
            errors.report(path, "store", problem);
        }
    }
}

/// Answers a redelivered request with its recorded outcome; records every other outcome.
pub struct ReplayLayer {
    store: StateStore,
    key_prefix: String,
    ttl: Duration,
    /// What a question meets while the store does not answer: the cost-control policy when the
    /// store is cost control's, else `retry`.
    on_unavailable: StoreUnavailablePolicy,
}

impl ReplayLayer {
    /// Connects to the configured store; `shared` is the cost-control store and key prefix,
    /// used where the replay block sets none.
    pub async fn connect(
        config: &ReplayConfig,
        shared: Option<(&str, &str, StoreUnavailablePolicy)>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StageError> {
        let on_unavailable = match (shared, &config.store) {
            (Some((_, _, policy)), None) => policy,
            _ => StoreUnavailablePolicy::Retry,
        };
        let url = config
            .store
            .as_deref()
            .or(shared.map(|(url, _, _)| url))
            .unwrap_or("memory");
        let key_prefix = config
            .key_prefix
            .as_deref()
            .or(shared.map(|(_, prefix, _)| prefix))
            .unwrap_or("ragstream");
        Ok(Self {
            store: StateStore::connect(url, clock).await?,
            key_prefix: key_prefix.to_owned(),
            ttl: Duration::from_secs(config.ttl_s),
            on_unavailable,
        })
    }

    /// Records of tool results in the same store, kept as long as the outcomes.
    pub fn tool_records(&self) -> ToolRecords {
        ToolRecords::new(self.store.clone(), &self.key_prefix, self.ttl)
    }

    fn key(&self, draft: &AnswerDraft) -> String {
        format!("{}:answer:{}:{}", self.key_prefix, draft.tenant, draft.request_id)
    }

    /// The outcome already given to this request, if it was answered before (a redelivery).
    pub async fn replayed(&self, draft: &AnswerDraft) -> Result<Option<StoredOutcome>, StageError> {
        let Some(stored) = self.store.get_json::<StoredOutcome>(&self.key(draft)).await? else {
            return Ok(None);
        };
        Ok(Some(match &stored.question_sha256 {
            Some(digest) if *digest != question_digest(draft) => StoredOutcome::request_id_reused(&draft.request_id),
            _ => stored,
        }))
    }

    /// Records the decided outcome of `draft`: before the answer is emitted. A refusal by a
    /// limit is not recorded: it cost nothing, so deciding again cannot pay twice, and the same
    /// request sent again once the limit has reset deserves an answer.
    pub async fn remember(&self, draft: &AnswerDraft) -> Result<(), StageError> {
        let refused = matches!(
            draft.status,
            Some(AnswerStatus::RateLimited | AnswerStatus::BudgetExceeded)
        );
        let Some(mut outcome) = StoredOutcome::of(draft).filter(|_| !refused) else {
            return Ok(());
        };
        outcome.question_sha256 = Some(question_digest(draft));
        self.store.set_json(&self.key(draft), &outcome, self.ttl).await
    }
}

#[async_trait]
impl Layer for ReplayLayer {
    async fn answer(&self, turn: &mut Turn<'_>, next: Next<'_>) -> Result<(), StageError> {
        match self.replayed(turn.draft).await {
            Ok(Some(stored)) => {
                metrics().replays.inc();
                stored.apply(turn.draft);
                return Ok(());
            }
            Ok(None) => {}
            // Open or closed alike: no record to replay; admission decides what the question gets.
            Err(error) => {
                store_unavailable("replay", self.on_unavailable, error)?;
            }
        }
        next.answer(turn).await?;
        store_write_lost("replay", self.remember(turn.draft).await);
        Ok(())
    }
}

/// The digest of a draft's task and masked question (no personal data in it).
fn question_digest(draft: &AnswerDraft) -> String {
    let mut digest = Sha256::new();
    digest.update(format!("{:?}\n", draft.task));
    digest.update(draft.question.as_bytes());
    format!("{:x}", digest.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::system;
    use crate::contracts::Task;

    /// Replay records in this process's memory, as a stage without cost control keeps them.
    async fn replays() -> ReplayLayer {
        ReplayLayer::connect(&ReplayConfig::default(), None, system())
            .await
            .unwrap()
    }

    fn draft() -> AnswerDraft {
        AnswerDraft::failed("acme", "r-1", "u-1", Task::Qa, "What is the refund policy?", "")
    }

    #[tokio::test]
    async fn a_refusal_is_not_replayed_but_an_answer_is() {
        let replays = replays().await;
        let mut refused = draft();
        refused.request_id = "refused".to_owned();
        refused.status = Some(AnswerStatus::RateLimited);
        replays.remember(&refused).await.unwrap();
        assert!(replays.replayed(&refused).await.unwrap().is_none());
        let failed = draft();
        replays.remember(&failed).await.unwrap();
        let stored = replays
            .replayed(&failed)
            .await
            .unwrap()
            .expect("a decided outcome is replayed");
        assert_eq!(stored.status, AnswerStatus::Failed);
    }

    #[tokio::test]
    async fn a_request_id_reused_for_another_question_is_refused_not_served_the_old_answer() {
        let replays = replays().await;
        let mut answered = draft();
        answered.answer = Some("Refunds take 5 days. [1]".to_owned());
        answered.status = Some(AnswerStatus::Ok);
        replays.remember(&answered).await.unwrap();
        let redelivered = replays.replayed(&draft()).await.unwrap().expect("replayed");
        assert_eq!(redelivered.answer.as_deref(), Some("Refunds take 5 days. [1]"));
        let mut other = draft();
        other.question = "How long is parental leave?".to_owned();
        let refused = replays.replayed(&other).await.unwrap().expect("an outcome");
        assert_eq!(refused.status, AnswerStatus::Failed);
        assert_eq!(refused.answer, None);
        assert!(refused.provenance.reason.unwrap().contains("different question"));
    }
}
