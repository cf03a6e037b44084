//! Time as a dependency: code that decides by elapsed time (circuit breakers, budget windows,
//! the in-memory store's expiry) reads it from a [`Clock`] and waits through it, so a test moves
//! time forward instead of sleeping for it to pass.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A wait on a clock.
pub type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the current instant comes from.
pub trait Clock: Debug + Send + Sync {
    /// The current instant (monotonic).
    fn now(&self) -> Instant;
    /// The current time of day, for windows that follow the calendar (a budget's minute or day).
    fn wall(&self) -> SystemTime;
    /// Waits until `by` has passed on this clock.
    fn sleep(&self, by: Duration) -> Wait;
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, by: Duration) -> Wait {
        Box::pin(tokio::time::sleep(by))
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that only moves when told to, or when something waits on it (tests): a wait moves it
/// forward at once. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<(Instant, SystemTime)>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self(Arc::new(Mutex::new((Instant::now(), SystemTime::now()))))
    }
}

impl ManualClock {
    /// A clock whose time of day starts at `wall`.
    pub fn at(wall: SystemTime) -> Self {
        Self(Arc::new(Mutex::new((Instant::now(), wall))))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut time = self.0.lock().unwrap_or_else(|p| p.into_inner());
        time.0 += by;
        time.1 += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    fn wall(&self) -> SystemTime {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    fn sleep(&self, by: Duration) -> Wait {
        self.advance(by);
        Box::pin(std::future::ready(()))
    }
}
