//! What `ragstream serve` knows of each request: its updates so far (status events, partial
//! text, the answer), and a channel to whoever follows it live. Requests are kept per tenant, so
//! a key of one tenant never finds another tenant's request, and the oldest are forgotten once
//! more than the configured number are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::contracts::{Answer, PartialAnswer, StatusEvent};

/// Updates of one request kept for late followers; beyond it the oldest partial texts go first.
const MAX_HISTORY: usize = 4096;
/// Updates a live follower may fall behind before it misses some.
const LIVE_BUFFER: usize = 1024;

/// One thing that happened to a request, as read from the pipeline's topics.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Update {
    Status(StatusEvent),
    Partial(PartialAnswer),
    Answer(Box<Answer>),
}

impl Update {
    /// The name of the Server-Sent Event carrying it.
    pub fn kind(&self) -> &'static str {
        match self {
            Update::Status(_) => "status",
            Update::Partial(_) => "partial",
            Update::Answer(_) => "answer",
        }
    }

    fn owner(&self) -> (&str, &str) {
        match self {
            Update::Status(event) => (&event.tenant, &event.request_id),
            Update::Partial(partial) => (&partial.tenant, &partial.request_id),
            Update::Answer(answer) => (&answer.tenant, &answer.request_id),
        }
    }
}

/// What a request looks like now: its latest status and its answer, once there is one.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub request_id: String,
    pub status: Option<StatusEvent>,
    pub answer: Option<Answer>,
}

/// Everything so far plus what comes next, without a gap between the two.
pub struct Following {
    pub so_far: Vec<Update>,
    pub next: broadcast::Receiver<Update>,
    pub answered: bool,
}

struct Tracked {
    history: VecDeque<Update>,
    status: Option<StatusEvent>,
    answer: Option<Answer>,
    live: broadcast::Sender<Update>,
}

impl Tracked {
    fn new() -> Self {
        Self {
            history: VecDeque::new(),
            status: None,
            answer: None,
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }
}

type RequestKey = (String, String);

#[derive(Default)]
struct Requests {
    by_key: HashMap<RequestKey, Tracked>,
    /// Keys in the order they were first seen, for forgetting the oldest.
    order: VecDeque<RequestKey>,
}

/// The requests `serve` follows.
pub struct Tracker {
    requests: Mutex<Requests>,
    capacity: usize,
}

impl Tracker {
    /// A tracker keeping at most `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        Self {
            requests: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts following `request_id` of `tenant` (a question just accepted), if not yet.
    pub fn expect(&self, tenant: &str, request_id: &str) {
        let mut requests = self.lock();
        Self::entry(&mut requests, self.capacity, (tenant.to_owned(), request_id.to_owned()));
    }

    /// Forgets a request that could not be produced, unless something was heard of it.
    pub fn forget_if_silent(&self, tenant: &str, request_id: &str) {
        let mut requests = self.lock();
        let key = (tenant.to_owned(), request_id.to_owned());
        if requests.by_key.get(&key).is_some_and(|t| t.history.is_empty()) {
            requests.by_key.remove(&key);
            requests.order.retain(|k| *k != key);
        }
    }

    fn entry(requests: &mut Requests, capacity: usize, key: RequestKey) -> &mut Tracked {
        if !requests.by_key.contains_key(&key) {
            while requests.by_key.len() >= capacity {
                let Some(oldest) = requests.order.pop_front() else {
                    break;
                };
                requests.by_key.remove(&oldest);
            }
            requests.order.push_back(key.clone());
            requests.by_key.insert(key.clone(), Tracked::new());
        }
        requests.by_key.get_mut(&key).expect("inserted above")
    }

    /// Records `update` and passes it to live followers.
    pub fn apply(&self, update: Update) {
        let (tenant, request_id) = update.owner();
        let key = (tenant.to_owned(), request_id.to_owned());
        let mut requests = self.lock();
        let tracked = Self::entry(&mut requests, self.capacity, key);
        match &update {
            Update::Status(event) => {
                // A redelivery starts its steps again at 0: the newest delivery's step counts.
                let newer = tracked
                    .status
                    .as_ref()
                    .is_none_or(|seen| event.seq >= seen.seq || event.seq == 0);
                if newer {
                    tracked.status = Some(event.clone());
                }
            }
            Update::Answer(answer) => tracked.answer = Some((**answer).clone()),
            Update::Partial(_) => {}
        }
        if tracked.history.len() >= MAX_HISTORY {
            if let Some(at) = tracked.history.iter().position(|u| matches!(u, Update::Partial(_))) {
                tracked.history.remove(at);
            } else {
                tracked.history.pop_front();
            }
        }
        tracked.history.push_back(update.clone());
        // No follower is not an error.
        let _ = tracked.live.send(update);
    }

    /// The request's latest status and answer, if `tenant` has such a request.
    pub fn snapshot(&self, tenant: &str, request_id: &str) -> Option<Snapshot> {
        let requests = self.lock();
        let tracked = requests.by_key.get(&(tenant.to_owned(), request_id.to_owned()))?;
        Some(Snapshot {
            request_id: request_id.to_owned(),
            status: tracked.status.clone(),
            answer: tracked.answer.clone(),
        })
    }

    /// The request's updates so far and a receiver of the next ones, if `tenant` has it.
    pub fn follow(&self, tenant: &str, request_id: &str) -> Option<Following> {
        let requests = self.lock();
        let tracked = requests.by_key.get(&(tenant.to_owned(), request_id.to_owned()))?;
        Some(Following {
            so_far: tracked.history.iter().cloned().collect(),
            next: tracked.live.subscribe(),
            answered: tracked.answer.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{AnswerDraft, Step, Task};

    fn status(tenant: &str, id: &str, seq: u64, step: Step) -> Update {
        Update::Status(StatusEvent {
            schema_version: 1,
            request_id: id.into(),
            tenant: tenant.into(),
            seq,
            step,
            at: String::new(),
            elapsed_ms: 0.0,
        })
    }

    #[tokio::test]
    async fn a_follower_gets_the_past_then_the_live_updates_and_other_tenants_nothing() {
        let tracker = Tracker::new(10);
        tracker.expect("acme", "q1");
        tracker.apply(status("acme", "q1", 0, Step::Received));
        let mut following = tracker.follow("acme", "q1").unwrap();
        assert_eq!(following.so_far.len(), 1);
        assert!(!following.answered);
        assert!(tracker.follow("globex", "q1").is_none());
        assert!(tracker.snapshot("globex", "q1").is_none());

        let answer = AnswerDraft::new("acme", "q1", "u", Task::Qa, "q?").into_answer(1.0);
        tracker.apply(Update::Answer(Box::new(answer)));
        assert!(matches!(following.next.recv().await.unwrap(), Update::Answer(_)));
        let snapshot = tracker.snapshot("acme", "q1").unwrap();
        assert_eq!(snapshot.status.unwrap().step, Step::Received);
        assert!(snapshot.answer.is_some());
    }

    #[test]
    fn the_oldest_requests_are_forgotten_beyond_capacity() {
        let tracker = Tracker::new(2);
        for id in ["a", "b", "c"] {
            tracker.apply(status("acme", id, 0, Step::Received));
        }
        assert!(tracker.snapshot("acme", "a").is_none());
        assert!(tracker.snapshot("acme", "c").is_some());
        tracker.expect("acme", "d");
        tracker.forget_if_silent("acme", "d");
        assert!(tracker.snapshot("acme", "d").is_none());
        assert!(tracker.snapshot("acme", "c").is_some());
    }
}
