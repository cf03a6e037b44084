//! The shared state store (budgets, rate limits, replay records and the cache live in it): the
//! in-memory store and Redis answer the same calls the same way.

use std::sync::Arc;
use std::time::Duration;

use ragstream::clock::{system, ManualClock};
use ragstream::state::{Bucket, Counter, StateStore};

fn counter(key: &str, amount: f64, limit: f64) -> Counter {
    Counter {
        key: key.to_owned(),
        amount,
        limit,
        ttl: Duration::from_secs(60),
    }
}

/// The same calls against the memory store (on a manual clock) and Redis (`RAGSTREAM_REDIS`,
/// default loopback, where `deploy/local/redis.sh start` puts one) give the same answers.
async fn stores() -> Vec<(StateStore, Option<ManualClock>)> {
    let redis = std::env::var("RAGSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let clock = ManualClock::default();
    vec![
        (
            StateStore::connect("memory", Arc::new(clock.clone())).await.unwrap(),
            Some(clock),
        ),
        (StateStore::connect(&redis, system()).await.unwrap(), None),
    ]
}

/// Lets `by` pass: the memory store's clock moves at once; Redis keeps its own time, so a test
/// against it waits (its expiry and pacing are the server's, not ours to move).
async fn time_passes(clock: &Option<ManualClock>, by: Duration) {
    match clock {
        Some(clock) => clock.advance(by),
        None => tokio::time::sleep(by).await,
    }
}

fn unique(name: &str) -> String {
    format!("ragstream-test:{name}:{:x}", rand::random::<u64>())
}

#[tokio::test]
async fn a_reservation_is_all_or_nothing_and_settles() {
    for (store, _) in stores().await {
        let (day, minute) = (unique("day"), unique("minute"));
        let both = |amount| vec![counter(&day, amount, 10.0), counter(&minute, amount, 4.0)];
        assert_eq!(store.reserve(&both(3.0)).await.unwrap(), Ok(()));
        // The second counter would pass its limit: nothing is taken from either.
        assert_eq!(store.reserve(&both(3.0)).await.unwrap(), Err(1));
        assert_eq!(store.get(&day).await.unwrap().unwrap().parse::<f64>().unwrap(), 3.0);
        // Settling gives back what the call did not use.
        store
            .adjust(&[(day.clone(), -2.0), (minute.clone(), -2.0)])
            .await
            .unwrap();
        assert_eq!(store.reserve(&both(3.0)).await.unwrap(), Ok(()));
        assert_eq!(store.get(&minute).await.unwrap().unwrap().parse::<f64>().unwrap(), 4.0);
    }
}

#[tokio::test]
async fn pacing_lets_the_burst_through_then_asks_to_wait_one_interval() {
    for (store, clock) in stores().await {
        let key = unique("rate");
        // 10 per second, a burst of 2.
        let bucket = Bucket {
            key: key.clone(),
            increment_ms: 100.0,
            tolerance_ms: 200.0,
        };
        let buckets = vec![bucket];
        assert_eq!(store.pace(&buckets).await.unwrap(), None);
        assert_eq!(store.pace(&buckets).await.unwrap(), None);
        let (wait, slowest) = store.pace(&buckets).await.unwrap().expect("a wait");
        assert_eq!(slowest, 0);
        // One interval at most (rounded up by a microsecond past the store clock's resolution).
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_micros(100_001),
            "{wait:?}"
        );
        time_passes(&clock, wait).await;
        assert_eq!(store.pace(&buckets).await.unwrap(), None);
    }
}

#[tokio::test]
async fn values_expire() {
    for (store, clock) in stores().await {
        let key = unique("value");
        store.set(&key, "x", Duration::from_millis(50)).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().as_deref(), Some("x"));
        time_passes(&clock, Duration::from_millis(120)).await;
        assert_eq!(store.get(&key).await.unwrap(), None);
    }
}

#[tokio::test]
async fn a_claim_is_renewed_and_released_only_by_its_holder() {
    for (store, clock) in stores().await {
        let key = unique("claim");
        let lease = Duration::from_millis(300);
        assert!(store.claim(&key, "first", lease).await.unwrap());
        assert!(!store.claim(&key, "second", lease).await.unwrap(), "held");
        // Another's token neither renews nor removes the claim.
        assert!(!store.renew_claim(&key, "second", lease).await.unwrap());
        store.release_claim(&key, "second").await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().as_deref(), Some("first"));
        // Renewed for longer than the first lease: still held after that lease.
        assert!(store.renew_claim(&key, "first", lease * 4).await.unwrap());
        time_passes(&clock, lease * 2).await;
        assert!(!store.claim(&key, "second", lease).await.unwrap(), "renewed");
        store.release_claim(&key, "first").await.unwrap();
        // Once released, the next claimant takes it; the old holder's renewal fails.
        assert!(store.claim(&key, "second", lease).await.unwrap());
        assert!(!store.renew_claim(&key, "first", lease).await.unwrap());
        store.release_claim(&key, "second").await.unwrap();
    }
}

#[tokio::test]
async fn a_claimant_that_waits_gets_the_next_turn() {
    for (store, _) in stores().await {
        let (key, queue) = (unique("turn"), unique("turn-next"));
        let (lease, reservation) = (Duration::from_secs(30), Duration::from_secs(30));
        let take = |who: &'static str| store.claim_in_turn(&key, &queue, who, lease, reservation);
        assert!(take("busy").await.unwrap());
        // Taken: the waiter reserves the next turn.
        assert!(!take("waiter").await.unwrap());
        store.release_claim(&key, "busy").await.unwrap();
        // The busy one, back at once with more work, does not take it from the waiter; nor does
        // a third.
        assert!(!take("busy").await.unwrap());
        assert!(!take("third").await.unwrap());
        assert!(take("waiter").await.unwrap());
        // The reservation went with the turn: the next to ask reserves again.
        assert!(!take("third").await.unwrap());
        store.release_claim(&key, "waiter").await.unwrap();
        assert!(!take("busy").await.unwrap(), "the third reserved it");
        assert!(take("third").await.unwrap());
        store.release_claim(&key, "third").await.unwrap();
    }
}
