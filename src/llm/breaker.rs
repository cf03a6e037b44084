//! A circuit breaker per model: after a run of failures the model is not called for a while,
//! so questions go straight to the fallback instead of each waiting out its own retries.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
}

impl CircuitBreaker {
    pub fn new(failure_threshold: u32, open_for: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
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
            State::Open { until } if Instant::now() >= until => {
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
                until: Instant::now() + self.open_for,
            },
        };
        matches!(*state, State::Open { .. })
    }

    /// Whether the circuit is open (calls refused) right now.
    pub fn is_open(&self) -> bool {
        matches!(*self.state(), State::Open { until } if Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_recovers_through_one_trial() {
        let breaker = CircuitBreaker::new(3, Duration::from_millis(50));
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
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow(), "the trial call");
        assert!(!breaker.allow(), "only one trial at a time");
        breaker.record_failure();
        assert!(breaker.is_open());
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allow());
        breaker.record_success();
        assert!(breaker.allow() && breaker.allow());
    }
}
