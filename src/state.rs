//! State shared between the messages of a pipeline (budgets, rate limits, cached answers, replay
//! records): Redis, shared by every replica (each operation one atomic command or Lua script),
//! or this process's memory. Both give the same answers to the same calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::clock::Clock;
use crate::error::StageError;

/// Adds every amount to its counter, unless one would pass its limit: then nothing changes
/// and the (1-based) index of the first counter that would is returned, with its value.
/// ARGV per key: amount, limit, ttl in ms (set when the counter is created).
const RESERVE: &str = r"
for i = 1, #KEYS do
  local amount = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if amount > 0 and current + amount > limit then
    return {i, tostring(current)}
  end
end
for i = 1, #KEYS do
  local amount = tonumber(ARGV[3 * i - 2])
  if amount ~= 0 then
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[3 * i - 2])
    if redis.call('PTTL', KEYS[i]) < 0 then
      redis.call('PEXPIRE', KEYS[i], ARGV[3 * i])
    end
  end
end
return {0, ''}
";

/// Adds signed amounts to existing counters (settling a reservation). A counter that expired
/// meanwhile (its window ended) is left alone: the new window owes nothing.
const ADJUST: &str = r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[i])
  end
end
return 0
";

/// Generic cell rate algorithm over several buckets at once, on the server's clock: the
/// request goes through when every bucket conforms, else nothing changes and the wait until it
/// would is returned (ms), with the (1-based) index of the bucket that needs the longest wait. ARGV per key: increment (ms of "theoretical arrival time" this
/// request costs: its units × the interval per unit) and tolerance (the burst, in ms).
const PACE: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local wait = 0
local slowest = 0
local next = {}
for i = 1, #KEYS do
  local increment = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  next[i] = tat + increment
  local allowed_at = next[i] - tolerance
  if allowed_at > now and allowed_at - now > wait then
    wait = allowed_at - now
    slowest = i
  end
end
if wait > 0 then return {tostring(wait), slowest} end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], tostring(next[i]), 'PX', math.ceil(next[i] - now + tonumber(ARGV[2 * i]) + 1000))
end
return {'0', 0}
";

/// Takes the claim `KEYS[1]` for `ARGV[1]` (for `ARGV[2]` ms) when it is free and nobody else
/// holds the reservation `KEYS[2]` of the next turn; a caller that finds it taken reserves the
/// next turn (for `ARGV[3]` ms) unless another already has. 1 if taken, 0 if not. Without the
/// reservation a holder with more work re-takes the claim the moment it gives it back, and the
/// others, polling, could wait indefinitely.
const CLAIM_IN_TURN: &str = r"
local reserved = redis.call('GET', KEYS[2])
if reserved and reserved ~= ARGV[1] then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if reserved then redis.call('DEL', KEYS[2]) end
  return 1
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
return 0
";

/// Extends the expiry of `KEYS[1]` to `ARGV[2]` ms if it still holds `ARGV[1]` (its claimant's
/// token); 1 if it did, 0 if the claim was lost (expired, or taken by another).
const RENEW_CLAIM: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// Removes `KEYS[1]` if it still holds `ARGV[1]`: a claimant whose claim expired must not
/// remove the next claimant's.
const RELEASE_CLAIM: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A counter to reserve on.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    pub key: String,
    pub amount: f64,
    pub limit: f64,
    /// How long the counter lives once created (to the end of its window).
    pub ttl: Duration,
}

/// A bucket of a rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub key: String,
    /// Units this request takes × the interval per unit, in ms.
    pub increment_ms: f64,
    /// The burst allowed, in ms of interval.
    pub tolerance_ms: f64,
}

/// The shared state.
#[derive(Clone)]
pub enum StateStore {
    Redis(RedisConnection),
    Memory(Arc<Mutex<Memory>>),
}

/// The Redis client's connection manager, replaced by a fresh one after a failure: a manager
/// whose server went away can stay stuck reconnecting after the server is back (seen with a
/// restarted Redis), so every later command would time out.
#[derive(Clone)]
pub struct RedisConnection {
    client: redis::Client,
    manager: Arc<Mutex<ConnectionManager>>,
}

impl RedisConnection {
    fn current(&self) -> ConnectionManager {
        self.manager.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `command` on the current manager; after a failure the next command gets a new
    /// manager, which connects on first use.
    async fn run<T>(
        &self,
        command: impl FnOnce(ConnectionManager) -> futures::future::BoxFuture<'static, redis::RedisResult<T>>,
    ) -> Result<T, StageError> {
        self.renewed_after(bounded(command(self.current())).await)
    }

    /// `result`, after putting a new manager (connecting on first use) in place of the current
    /// one when it is a failure.
    fn renewed_after<T>(&self, result: Result<T, StageError>) -> Result<T, StageError> {
        if result.is_err() {
            self.renew();
        }
        result
    }

    fn renew(&self) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), ConnectionManagerConfig::new()) {
            Ok(fresh) => *self.manager.lock().unwrap_or_else(|p| p.into_inner()) = fresh,
            Err(error) => tracing::warn!(%error, "state store: cannot renew the Redis connection"),
        }
    }
}

/// Values the memory store holds before it first sweeps out expired ones.
const MIN_SWEEP: usize = 1024;

/// The in-process state: values with their expiry, on a clock a test can move.
pub struct Memory {
    values: HashMap<String, (String, Option<Instant>)>,
    /// The instant and the epoch milliseconds of the first `now_ms`.
    started: Option<(Instant, f64)>,
    /// The number of values at which the next write first drops the expired ones.
    sweep_at: usize,
    clock: Arc<dyn Clock>,
}

impl Memory {
    fn get(&mut self, key: &str) -> Option<&String> {
        let now = self.clock.now();
        if self
            .values
            .get(key)
            .is_some_and(|(_, expiry)| expiry.is_some_and(|e| e <= now))
        {
            self.values.remove(key);
        }
        self.values.get(key).map(|(value, _)| value)
    }

    fn number(&mut self, key: &str) -> f64 {
        self.get(key).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }

    fn set(&mut self, key: &str, value: String, ttl: Option<Duration>) {
        let now = self.clock.now();
        // Expired values are otherwise only dropped when read again, and most never are (a
        // replay record whose request is not redelivered): sweep them whenever the map has
        // doubled, which keeps the cost per write constant.
        if self.values.len() >= self.sweep_at {
            self.values
                .retain(|_, (_, expiry)| expiry.is_none_or(|expiry| expiry > now));
            self.sweep_at = (self.values.len() * 2).max(MIN_SWEEP);
        }
        self.values.insert(key.to_owned(), (value, ttl.map(|ttl| now + ttl)));
    }

    /// Milliseconds since the epoch (the memory store's "server time"): the time of day when
    /// first asked, then the monotonic clock, so a jump of the wall clock cannot move it back.
    fn now_ms(&mut self) -> f64 {
        let clock = &self.clock;
        let (instant, epoch_ms) = *self.started.get_or_insert_with(|| {
            let epoch = clock.wall().duration_since(UNIX_EPOCH).unwrap_or_default();
            (clock.now(), epoch.as_secs_f64() * 1000.0)
        });
        epoch_ms + (self.clock.now() - instant).as_secs_f64() * 1000.0
    }
}

/// Why `url` names no store (`redis://…`, `rediss://…` or `memory`), if it does not.
pub fn check_url(url: &str) -> Result<(), String> {
    if url == "memory" || url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(())
    } else {
        Err(format!("`{}` is neither redis://host:port nor memory", redacted(url)))
    }
}

/// `url` with its password (`redis://:PASSWORD@host`, `redis://user:PASSWORD@host`) replaced by
/// `***`, for errors and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) if authority[..at].contains(':') => {
            let user = authority[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Longest a Redis command may take, reconnecting included. The client bounds a reply on a live
/// connection (500 ms), but a request made while it reconnects to a server that is gone waits for
/// the reconnection, which can take indefinitely: without this bound a Redis outage would hold
/// every question instead of letting `on_store_unavailable` decide.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// `command` with [`COMMAND_TIMEOUT`]; a Redis error or the timeout is the store being unavailable.
async fn bounded<T>(command: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, StageError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StageError::external(format!(
            "state store (Redis): no reply within {} ms",
            COMMAND_TIMEOUT.as_millis()
        ))),
    }
}

/// Runs one Redis command.
async fn query<T: redis::FromRedisValue + Send + 'static>(
    connection: &RedisConnection,
    command: &redis::Cmd,
) -> Result<T, StageError> {
    let command = command.clone();
    connection
        .run(move |mut manager| Box::pin(async move { command.query_async(&mut manager).await }))
        .await
}

/// A TTL in whole milliseconds, at least one (Redis refuses zero).
fn ttl_millis(ttl: Duration) -> u64 {
    ttl.as_millis().max(1) as u64
}

/// Runs the Lua script `source` on Redis with the keys and arguments `bind` adds; one round
/// trip, atomic on the server.
async fn run_script<T: redis::FromRedisValue>(
    connection: &RedisConnection,
    source: &str,
    bind: impl FnOnce(&mut redis::ScriptInvocation<'_>),
) -> Result<T, StageError> {
    let script = redis::Script::new(source);
    let mut invocation = script.prepare_invoke();
    bind(&mut invocation);
    let mut manager = connection.current();
    connection.renewed_after(bounded(invocation.invoke_async(&mut manager)).await)
}

fn unavailable(error: redis::RedisError) -> StageError {
    // The store being down is a dependency failing: the pipeline's retry policy applies.
    StageError::external(format!("state store (Redis): {error}"))
}

impl StateStore {
    /// Connects to `redis://…`, or makes an in-memory store for `memory` whose expiry and
    /// server time follow `clock` (Redis keeps its own).
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StageError> {
        if url == "memory" {
            return Ok(StateStore::Memory(Arc::new(Mutex::new(Memory {
                values: HashMap::new(),
                started: None,
                sweep_at: MIN_SWEEP,
                clock,
            }))));
        }
        let client = redis::Client::open(url)
            .map_err(|error| StageError::internal(format!("state store URL `{}`: {error}", redacted(url))))?;
        let manager = client.get_connection_manager().await.map_err(unavailable)?;
        Ok(StateStore::Redis(RedisConnection {
            client,
            manager: Arc::new(Mutex::new(manager)),
        }))
    }

    /// The value at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<String>, StageError> {
        match self {
            StateStore::Redis(manager) => query(manager, redis::cmd("GET").arg(key)).await,
            StateStore::Memory(memory) => Ok(lock(memory).get(key).cloned()),
        }
    }

    /// Sets `key` to `value` for `ttl`.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StageError> {
        match self {
            StateStore::Redis(manager) => {
                query(
                    manager,
                    redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl_millis(ttl)),
                )
                .await
            }
            StateStore::Memory(memory) => {
                lock(memory).set(key, value.to_owned(), Some(ttl));
                Ok(())
            }
        }
    }

    /// Sets `key` to `value` for `ttl` only if `key` holds nothing: whether this call took it.
    /// Of replicas racing for the same key exactly one wins.
    pub async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StageError> {
        match self {
            StateStore::Redis(manager) => {
                let mut set_if_absent = redis::cmd("SET");
                set_if_absent
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_millis(ttl));
                let reply: Option<String> = query(manager, &set_if_absent).await?;
                Ok(reply.is_some())
            }
            StateStore::Memory(memory) => {
                let mut memory = lock(memory);
                if memory.get(key).is_some() {
                    return Ok(false);
                }
                memory.set(key, value.to_owned(), Some(ttl));
                Ok(true)
            }
        }
    }

    /// Like [`StateStore::claim`], but fair among claimants that keep asking: a caller that
    /// finds `key` taken reserves the next turn at `queue` for `reservation` (renewed by every
    /// call of its), and until it takes it or its reservation runs out nobody else takes `key`.
    pub async fn claim_in_turn(
        &self,
        key: &str,
        queue: &str,
        value: &str,
        ttl: Duration,
        reservation: Duration,
    ) -> Result<bool, StageError> {
        match self {
            StateStore::Redis(manager) => {
                let taken: i64 = run_script(manager, CLAIM_IN_TURN, |invocation| {
                    invocation
                        .key(key)
                        .key(queue)
                        .arg(value)
                        .arg(ttl_millis(ttl))
                        .arg(ttl_millis(reservation));
                })
                .await?;
                Ok(taken == 1)
            }
            StateStore::Memory(memory) => {
                let mut memory = lock(memory);
                let reserved = memory.get(queue).cloned();
                if reserved.as_deref().is_some_and(|holder| holder != value) {
                    return Ok(false);
                }
                if memory.get(key).is_none() {
                    memory.set(key, value.to_owned(), Some(ttl));
                    memory.values.remove(queue);
                    return Ok(true);
                }
                memory.set(queue, value.to_owned(), Some(reservation));
                Ok(false)
            }
        }
    }

    /// Extends a claim taken with [`StateStore::claim`] to `ttl` from now, if `key` still holds
    /// `value`: whether the claim is still this caller's.
    pub async fn renew_claim(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StageError> {
        match self {
            StateStore::Redis(manager) => {
                let renewed: i64 = run_script(manager, RENEW_CLAIM, |invocation| {
                    invocation.key(key).arg(value).arg(ttl_millis(ttl));
                })
                .await?;
                Ok(renewed == 1)
            }
            StateStore::Memory(memory) => {
                let mut memory = lock(memory);
                if memory.get(key).map(String::as_str) != Some(value) {
                    return Ok(false);
                }
                memory.set(key, value.to_owned(), Some(ttl));
                Ok(true)
            }
        }
    }

    /// Gives up a claim, if `key` still holds `value` (else it is another's now, and stays).
    pub async fn release_claim(&self, key: &str, value: &str) -> Result<(), StageError> {
        match self {
            StateStore::Redis(manager) => {
                run_script::<i64>(manager, RELEASE_CLAIM, |invocation| {
                    invocation.key(key).arg(value);
                })
                .await?;
            }
            StateStore::Memory(memory) => {
                let mut memory = lock(memory);
                if memory.get(key).map(String::as_str) == Some(value) {
                    memory.values.remove(key);
                }
            }
        }
        Ok(())
    }

    /// Removes `key`.
    pub async fn remove(&self, key: &str) -> Result<(), StageError> {
        match self {
            StateStore::Redis(manager) => query(manager, redis::cmd("DEL").arg(key)).await,
            StateStore::Memory(memory) => {
                lock(memory).values.remove(key);
                Ok(())
            }
        }
    }

    /// The value at `key` read as JSON; `None` when it is missing or unreadable (a value written
    /// by an older version is treated as absent, not as an error).
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StageError> {
        Ok(self.get(key).await?.and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// Sets `key` to `value` as JSON for `ttl`.
    pub async fn set_json<T: serde::Serialize>(&self, key: &str, value: &T, ttl: Duration) -> Result<(), StageError> {
        let text = serde_json::to_string(value)
            .map_err(|error| StageError::internal(format!("cannot serialize the value of {key}: {error}")))?;
        self.set(key, &text, ttl).await
    }

    /// Reserves every counter's amount at once; `Err(index)` names the first counter whose
    /// limit the reservation would pass (nothing was reserved then).
    pub async fn reserve(&self, counters: &[Counter]) -> Result<Result<(), usize>, StageError> {
        if counters.is_empty() {
            return Ok(Ok(()));
        }
        let (index, _current): (usize, String) = match self {
            StateStore::Redis(manager) => {
                run_script(manager, RESERVE, |invocation| {
                    for counter in counters {
                        invocation
                            .key(&counter.key)
                            .arg(counter.amount)
                            .arg(counter.limit)
                            .arg(ttl_millis(counter.ttl));
                    }
                })
                .await?
            }
            StateStore::Memory(memory) => {
                let mut memory = lock(memory);
                let over = counters.iter().position(|c| {
                    let current = memory.number(&c.key);
                    c.amount > 0.0 && current + c.amount > c.limit
                });
                match over {
                    Some(i) => (i + 1, String::new()),
                    None => {
                        for c in counters.iter().filter(|c| c.amount != 0.0) {
                            let exists = memory.get(&c.key).is_some();
                            let value = memory.number(&c.key) + c.amount;
                            let ttl = if exists {
                                memory.values.get(&c.key).and_then(|(_, e)| *e)
                            } else {
                                Some(memory.clock.now() + c.ttl)
                            };
                            memory.values.insert(c.key.clone(), (value.to_string(), ttl));
                        }
                        (0, String::new())
                    }
                }
            }
        };
        Ok(if index == 0 { Ok(()) } else { Err(index - 1) })
    }

    /// Adds signed amounts to counters that still exist (settling a reservation).
    pub async fn adjust(&self, deltas: &[(String, f64)]) -> Result<(), StageError> {
        let deltas: Vec<&(String, f64)> = deltas.iter().filter(|(_, d)| *d != 0.0).collect();
        if deltas.is_empty() {
            return Ok(());
        }
        match self {
            StateStore::Redis(manager) => {
                run_script::<i64>(manager, ADJUST, |invocation| {
                    for (key, delta) in &deltas {
                        invocation.key(key).arg(*delta);
                    }
                })
                .await?;
            }
            StateStore::Memory(memory) => {
                let mut memory = lock(memory);
                for (key, delta) in deltas {
                    if memory.get(key).is_some() {
                        let value = memory.number(key) + delta;
                        if let Some(entry) = memory.values.get_mut(key) {
                            entry.0 = value.to_string();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes a slot of every bucket (`None`), or says how long to wait before one is free for
    /// all, and which bucket needs that long.
    pub async fn pace(&self, buckets: &[Bucket]) -> Result<Option<(Duration, usize)>, StageError> {
        if buckets.is_empty() {
            return Ok(None);
        }
        let (wait_ms, slowest): (f64, usize) = match self {
            StateStore::Redis(manager) => {
                let (wait, slowest): (String, usize) = run_script(manager, PACE, |invocation| {
                    for bucket in buckets {
                        invocation
                            .key(&bucket.key)
                            .arg(bucket.increment_ms)
                            .arg(bucket.tolerance_ms);
                    }
                })
                .await?;
                (wait.parse().unwrap_or(0.0), slowest.saturating_sub(1))
            }
            StateStore::Memory(memory) => {
                let mut memory = lock(memory);
                let now = memory.now_ms();
                let next: Vec<f64> = buckets
                    .iter()
                    .map(|b| memory.number(&b.key).max(now) + b.increment_ms)
                    .collect();
                let (slowest, wait) = buckets
                    .iter()
                    .zip(&next)
                    .map(|(b, next)| next - b.tolerance_ms - now)
                    .enumerate()
                    .fold((0, 0.0), |best, (i, wait)| if wait > best.1 { (i, wait) } else { best });
                if wait <= 0.0 {
                    for (bucket, next) in buckets.iter().zip(next) {
                        let ttl = Duration::from_millis((next - now + bucket.tolerance_ms + 1000.0) as u64);
                        memory.set(&bucket.key, next.to_string(), Some(ttl));
                    }
                }
                (wait.max(0.0), slowest)
            }
        };
        // Rounded up to the next whole microsecond and one more: the server time is a float of
        // epoch milliseconds (a resolution of about 0.25 µs), and a caller that waits exactly
        // this long must not be told to wait a few nanoseconds more.
        Ok((wait_ms > 0.0).then(|| (Duration::from_micros((wait_ms * 1000.0).ceil() as u64 + 1), slowest)))
    }
}

fn lock(memory: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
    memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_store_url_never_shows_its_password() {
        assert_eq!(redacted("redis://:s3cret@cache:6379/0"), "redis://:***@cache:6379/0");
        assert_eq!(
            redacted("rediss://app:s3cret@cache:6380"),
            "rediss://app:***@cache:6380"
        );
        assert_eq!(redacted("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redacted("memory"), "memory");
        let error = check_url("http://:s3cret@cache:6379").unwrap_err();
        assert!(
            !error.contains("s3cret") && error.contains("http://:***@cache:6379"),
            "{error}"
        );
    }

    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn the_memory_store_drops_expired_values_it_is_never_asked_for_again() {
        let clock = ManualClock::default();
        let store = StateStore::connect("memory", Arc::new(clock.clone())).await.unwrap();
        let StateStore::Memory(memory) = &store else {
            panic!("`memory` makes a memory store");
        };
        // Up to the first sweep's size: nothing has expired yet.
        for i in 0..MIN_SWEEP - 1 {
            store
                .set(&format!("old{i}"), "x", Duration::from_secs(1))
                .await
                .unwrap();
        }
        store.set("kept", "y", Duration::from_secs(60)).await.unwrap();
        assert_eq!(lock(memory).values.len(), MIN_SWEEP);
        clock.advance(Duration::from_secs(2));
        store.set("new", "z", Duration::from_secs(60)).await.unwrap();
        assert_eq!(lock(memory).values.len(), 2, "only the unexpired values stay");
        assert_eq!(store.get("kept").await.unwrap().as_deref(), Some("y"));
        assert_eq!(store.get("old0").await.unwrap(), None);
    }
}
