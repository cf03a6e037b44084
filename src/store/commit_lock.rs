//! One writer at a time on a table shared by replicas.
//!
//! A batch decides what to write from the recorded document versions, then commits. LanceDB
//! makes each commit atomic (a conditional PUT on object stores, a rename on a local directory)
//! and retries a conflicting `merge_insert` against the newer table, but the retried merge
//! still writes what was decided from the older versions: a replica applying version 2 of a
//! document would replace the version 3 another replica committed a moment before. So replicas
//! writing one table take turns, through a lease in Redis held for the whole batch (the version
//! check and both commits) and for upkeep. Upkeep's commits race too: compaction rewrites the
//! rows a batch replaces, and two replicas building the vector index at once left an index that
//! made LanceDB panic on the next upkeep (seen in `tests/integration/concurrent_writers.rs`).
//!
//! The lease is renewed while it is held, so a slow batch keeps it; a replica that dies holding
//! it frees it when the lease runs out. What the lease cannot cover: a replica cut off from
//! Redis for longer than [`LEASE`] that can still write to the table; its renewal fails, and it
//! stops before its next commit, but not during one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::system;
use crate::error::StageError;
use crate::state::{redacted, StateStore};

/// How long a turn lasts without renewal: far longer than a batch's commits take, short enough
/// that a dead replica's turn passes quickly.
const LEASE: Duration = Duration::from_secs(30);
/// How often a holder renews its turn: three chances before the lease runs out.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for a turn before the batch fails (and the pipeline retries it). Turns go round
/// (see [`StateStore::claim_in_turn`]), so this is reached only when the holders are stuck.
const LONGEST_WAIT: Duration = Duration::from_secs(120);
/// How long a waiting replica keeps the next turn reserved without asking again: far longer
/// than its pauses between asking, so a replica that dies waiting blocks the others briefly.
const RESERVATION: Duration = Duration::from_secs(2);
/// Shortest and longest pause between attempts to take a turn.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

/// The lease of one table, in the state store at `url`.
#[derive(Clone)]
pub struct CommitLock {
    store: StateStore,
    key: String,
    /// For errors: the store's URL without its password.
    shown: String,
}

impl std::fmt::Debug for CommitLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitLock")
            .field("store", &self.shown)
            .field("key", &self.key)
            .finish()
    }
}

impl CommitLock {
    /// The lease for the table `table` at `uri`, kept in the state store at `url` (`redis://…`;
    /// `memory` only serialises this process, for tests).
    pub async fn connect(url: &str, uri: &str, table: &str) -> Result<Self, StageError> {
        Ok(Self {
            store: StateStore::connect(url, system()).await?,
            key: format!("ragstream:commit-lock:{uri}#{table}"),
            shown: redacted(url),
        })
    }

    /// Waits for this replica's turn, then holds it (renewed in the background) until
    /// [`Turn::end`].
    pub async fn take(&self) -> Result<Turn, StageError> {
        let token = format!("{:032x}", rand::random::<u128>());
        let give_up = tokio::time::Instant::now() + LONGEST_WAIT;
        let mut pause = FIRST_PAUSE;
        let queue = format!("{}:next", self.key);
        while !self
            .store
            .claim_in_turn(&self.key, &queue, &token, LEASE, RESERVATION)
            .await?
        {
            if tokio::time::Instant::now() + pause > give_up {
                return Err(StageError::external(format!(
                    "index commit lock ({}): another replica held the table for more than {} s",
                    self.shown,
                    LONGEST_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewal = tokio::spawn(renew(self.clone(), token.clone(), lost.clone()));
        Ok(Turn {
            lock: self.clone(),
            token,
            lost,
            renewal,
        })
    }
}

/// Renews the turn until it is ended (the task is aborted) or lost.
async fn renew(lock: CommitLock, token: String, lost: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        // A failed renewal is retried at the next tick while the lease may still run; once it
        // has run out the turn may be another's, so it is reported lost.
        match lock.store.renew_claim(&lock.key, &token, LEASE).await {
            Ok(true) => {}
            Ok(false) => {
                lost.store(true, Ordering::SeqCst);
                tracing::warn!(lock = %lock.shown, "index commit lock: this replica's turn ran out");
                return;
            }
            Err(error) => tracing::warn!(%error, "index commit lock: cannot renew this replica's turn"),
        }
    }
}

/// This replica's turn to write a table.
pub struct Turn {
    lock: CommitLock,
    token: String,
    lost: Arc<AtomicBool>,
    renewal: JoinHandle<()>,
}

impl Turn {
    /// An error if the turn ran out (another replica may be writing): checked before each
    /// commit, so a replica cut off from Redis stops writing.
    pub fn check(&self) -> Result<(), StageError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(StageError::external(
                "index commit lock: this replica's turn ran out before its commit",
            ));
        }
        Ok(())
    }

    /// Ends the turn; the next replica may write.
    pub async fn end(self) {
        self.renewal.abort();
        if let Err(error) = self.lock.store.release_claim(&self.lock.key, &self.token).await {
            // It runs out by itself within the lease.
            tracing::warn!(%error, "index commit lock: cannot end this replica's turn");
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // A turn dropped without `end` (a cancelled batch) stops renewing and runs out.
        self.renewal.abort();
    }
}
