//! A circuit breaker per model: after a run of failures the model is not called for a while,
//! so questions go straight to the fallback instead of each waiting out its own retries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::{self, Clock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls go through; `failures` in a row so far.
    Closed { failures: u32 },
    /// No calls until `until`.
    Open { until: Instant },
    /// One trial call is in flight; its outcome closes or re-opens the circuit.
    HalfOpen,
}

/// Closed → open after `failure_threshold` consecutive failures; open → half-open after
/// `open_for`; a successful trial closes it, a failed one opens it again.
#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

impl CircuitBreaker {
    /// A closed breaker on the system clock.
    pub fn new(failure_threshold: u32, open_for: Duration) -> Self {
        Self::with_clock(failure_threshold, open_for, clock::system())
    }

    /// A closed breaker that reads the time from `clock`.
    pub fn with_clock(failure_threshold: u32, open_for: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
            clock,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go through now. In the half-open state only the first caller gets
    /// through (the trial); the others are refused until it reports.
    pub fn allow(&self) -> bool {
        let mut state = self.state();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if self.clock.now() >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// Reports a successful call.
    pub fn record_success(&self) {
        *self.state() = State::Closed { failures: 0 };
    }

    /// Reports a failed call (only failures that say something about the model's health:
    /// rate limits, server errors, timeouts, broken connections, unreadable answers). Returns
    /// whether the circuit is open now.
    pub fn record_failure(&self) -> bool {
        let mut state = self.state();
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.failure_threshold => {
                State::Closed { failures: failures + 1 }
            }
            _ => State::Open {
                until: self.clock.now() + self.open_for,
            },
        };
        matches!(*state, State::Open { .. })
    }

    /// Whether the circuit is open (calls refused) right now.
    pub fn is_open(&self) -> bool {
        matches!(*self.state(), State::Open { until } if self.clock.now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn opens_after_the_threshold_and_recovers_through_one_trial() {
        let clock = ManualClock::default();
        let breaker = CircuitBreaker::with_clock(3, Duration::from_secs(30), Arc::new(clock.clone()));
        for _ in 0..2 {
            assert!(breaker.allow());
            breaker.record_failure();
        }
        assert!(!breaker.is_open());
        breaker.record_success();
        for _ in 0..3 {
            assert!(breaker.allow());
            breaker.record_failure();
        }
        assert!(breaker.is_open());
        assert!(!breaker.allow());
        clock.advance(Duration::from_secs(29));
        assert!(!breaker.allow(), "still open");
        clock.advance(Duration::from_secs(1));
        assert!(breaker.allow(), "the trial call");
        assert!(!breaker.allow(), "only one trial at a time");
        breaker.record_failure();
        assert!(breaker.is_open());
        clock.advance(Duration::from_secs(30));
        assert!(breaker.allow());
        breaker.record_success();
        assert!(breaker.allow() && breaker.allow());
    }
}
