//! Budgets (tokens and cost per minute, day and month) and rate limits (requests and tokens per
//! minute), per tenant and per user: which counters and buckets a request touches, and what to
//! tell the user when one is exhausted.

use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as Span, TimeZone, Timelike, Utc};
use serde::Deserialize;

use crate::contracts::AnswerStatus;
use crate::pseudonym::user_ref;
use crate::state::{Bucket, Counter};

/// Costs are counted in micro-dollars: the counters stay well above float noise.
const MICRO: f64 = 1e6;

/// Limits for one tenant or one user. Unset: unlimited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSet {
    /// Rate limit: model requests per minute (smoothed: a burst of a second's worth).
    pub requests_per_minute: Option<f64>,
    /// Rate limit: tokens (prompt + answer) per minute.
    pub tokens_per_minute: Option<f64>,
    /// Budget: tokens per UTC day.
    pub tokens_per_day: Option<f64>,
    /// Budget: tokens per UTC calendar month.
    pub tokens_per_month: Option<f64>,
    /// Budget: dollars per minute.
    pub cost_usd_per_minute: Option<f64>,
    /// Budget: dollars per UTC day.
    pub cost_usd_per_day: Option<f64>,
    /// Budget: dollars per UTC calendar month.
    pub cost_usd_per_month: Option<f64>,
}

impl LimitSet {
    /// Every limit with its name, for validation.
    pub fn entries(&self) -> [(&'static str, Option<f64>); 7] {
        [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
            ("tokens_per_day", self.tokens_per_day),
            ("tokens_per_month", self.tokens_per_month),
            ("cost_usd_per_minute", self.cost_usd_per_minute),
            ("cost_usd_per_day", self.cost_usd_per_day),
            ("cost_usd_per_month", self.cost_usd_per_month),
        ]
    }
}

/// Whose limits.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Tenant(String),
    /// The user is kept as a pseudonym in keys (user ids are often e-mail addresses).
    User {
        tenant: String,
        user_ref: String,
    },
}

impl Scope {
    pub fn user(tenant: &str, user: &str) -> Self {
        Scope::User {
            tenant: tenant.to_owned(),
            user_ref: user_ref(tenant, user),
        }
    }

    fn key_part(&self) -> String {
        match self {
            Scope::Tenant(tenant) => format!("t:{tenant}"),
            Scope::User { tenant, user_ref } => format!("u:{tenant}:{user_ref}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Tenant(tenant) => format!("tenant {tenant}"),
            Scope::User { tenant, .. } => format!("this user of tenant {tenant}"),
        }
    }
}

/// A calendar window of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Minute,
    Day,
    Month,
}

impl Window {
    fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// The window's start and end around `now`.
    pub fn bounds(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = match self {
            Window::Minute => now.with_second(0).and_then(|t| t.with_nanosecond(0)),
            Window::Day => Utc
                .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
                .single(),
            Window::Month => Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single(),
        }
        .unwrap_or(now);
        let end = match self {
            Window::Minute => start + Span::minutes(1),
            Window::Day => start + Span::days(1),
            Window::Month => {
                let (year, month) = if now.month() == 12 {
                    (now.year() + 1, 1)
                } else {
                    (now.year(), now.month() + 1)
                };
                Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
                    .single()
                    .unwrap_or(start + Span::days(31))
            }
        };
        (start, end)
    }
}

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Tokens,
    Cost,
}

/// One budget counter touched by a request.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetLine {
    pub scope: Scope,
    pub measure: Measure,
    pub window: Window,
    /// In tokens or dollars.
    pub limit: f64,
    pub key: String,
    pub resets_at: DateTime<Utc>,
}

impl BudgetLine {
    /// The counter reserving `tokens` / `cost_usd` on this line.
    pub fn counter(&self, tokens: f64, cost_usd: f64, now: DateTime<Utc>) -> Counter {
        let (amount, limit) = self.scaled(tokens, cost_usd);
        Counter {
            key: self.key.clone(),
            amount,
            limit,
            // To the end of the window, and a minute more for clocks that disagree.
            ttl: (self.resets_at - now).to_std().unwrap_or_default() + Duration::from_secs(60),
        }
    }

    /// The signed amount that corrects a reservation of `reserved` to `actual` (tokens, cost).
    pub fn correction(&self, reserved: (f64, f64), actual: (f64, f64)) -> f64 {
        self.scaled(actual.0, actual.1).0 - self.scaled(reserved.0, reserved.1).0
    }

    /// The limit in the counter's unit (micro-dollars for cost).
    pub fn scaled_limit(&self) -> f64 {
        self.scaled(0.0, 0.0).1
    }

    fn scaled(&self, tokens: f64, cost_usd: f64) -> (f64, f64) {
        match self.measure {
            Measure::Tokens => (tokens, self.limit),
            Measure::Cost => (cost_usd * MICRO, self.limit * MICRO),
        }
    }

    /// What the user is told when this line is exhausted.
    pub fn exceeded(&self) -> String {
        let amount = match self.measure {
            Measure::Tokens => format!("{} tokens", self.limit),
            Measure::Cost => format!("${:.2}", self.limit),
        };
        format!(
            "the per-{} budget of {} for {} is spent; it resets at {}",
            self.window.name(),
            amount,
            self.scope.describe(),
            self.resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// The budget lines of `limits` for `scope` at `now`.
pub fn budget_lines(prefix: &str, scope: &Scope, limits: &LimitSet, now: DateTime<Utc>) -> Vec<BudgetLine> {
    let candidates = [
        (Measure::Tokens, Window::Day, limits.tokens_per_day),
        (Measure::Tokens, Window::Month, limits.tokens_per_month),
        (Measure::Cost, Window::Minute, limits.cost_usd_per_minute),
        (Measure::Cost, Window::Day, limits.cost_usd_per_day),
        (Measure::Cost, Window::Month, limits.cost_usd_per_month),
    ];
    candidates
        .into_iter()
        .filter_map(|(measure, window, limit)| {
            let limit = limit?;
            let (start, resets_at) = window.bounds(now);
            let measure_name = match measure {
                Measure::Tokens => "tokens",
                Measure::Cost => "cost",
            };
            Some(BudgetLine {
                key: format!(
                    "{prefix}:budget:{}:{measure_name}:{}:{}",
                    scope.key_part(),
                    window.name(),
                    start.timestamp()
                ),
                scope: scope.clone(),
                measure,
                window,
                limit,
                resets_at,
            })
        })
        .collect()
}

/// One rate limit touched by a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLine {
    pub scope: Scope,
    /// `requests` or `tokens`.
    pub unit: &'static str,
    pub per_minute: f64,
    pub key: String,
}

impl RateLine {
    /// The bucket this request (of `tokens`) takes a slot of. The burst is a second's worth of
    /// the rate (at least one request, or this request's tokens).
    pub fn bucket(&self, tokens: f64) -> Bucket {
        let interval_ms = 60_000.0 / self.per_minute;
        let units = if self.unit == "tokens" { tokens } else { 1.0 };
        let burst_units = (self.per_minute / 60.0).max(1.0);
        Bucket {
            key: self.key.clone(),
            increment_ms: units * interval_ms,
            tolerance_ms: burst_units * interval_ms,
        }
    }

    /// The correction of a token bucket once the actual tokens are known (ms of its clock).
    pub fn correction(&self, reserved_tokens: f64, actual_tokens: f64) -> f64 {
        if self.unit == "tokens" {
            (actual_tokens - reserved_tokens) * 60_000.0 / self.per_minute
        } else {
            0.0
        }
    }

    /// What the user is told when this limit holds a request back for `wait`.
    pub fn exceeded(&self, wait: Duration) -> String {
        format!(
            "the rate limit of {} {} per minute for {} is reached; retry in {:.1} s",
            self.per_minute,
            self.unit,
            self.scope.describe(),
            wait.as_secs_f64()
        )
    }
}

/// The rate limits of `limits` for `scope`.
pub fn rate_lines(prefix: &str, scope: &Scope, limits: &LimitSet) -> Vec<RateLine> {
    [
        ("requests", limits.requests_per_minute),
        ("tokens", limits.tokens_per_minute),
    ]
    .into_iter()
    .filter_map(|(unit, per_minute)| {
        Some(RateLine {
            scope: scope.clone(),
            unit,
            per_minute: per_minute?,
            key: format!("{prefix}:rate:{}:{unit}", scope.key_part()),
        })
    })
    .collect()
}

/// Why a request cannot go ahead.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// `budget_exceeded` or `rate_limited`.
    pub status: AnswerStatus,
    /// For the answer's `reason`: which limit, and when it resets.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn windows_are_calendar_windows_in_utc() {
        let now = at("2026-12-31T23:59:30.5Z");
        assert_eq!(
            Window::Minute.bounds(now),
            (at("2026-12-31T23:59:00Z"), at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            Window::Day.bounds(now),
            (at("2026-12-31T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            Window::Month.bounds(now),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn budget_lines_name_the_window_and_say_when_it_resets() {
        let limits = LimitSet {
            cost_usd_per_day: Some(50.0),
            tokens_per_month: Some(1e6),
            ..LimitSet::default()
        };
        let now = at("2026-11-27T10:00:00Z");
        let lines = budget_lines("rs", &Scope::Tenant("acme".into()), &limits, now);
        assert_eq!(lines.len(), 2);
        let day = lines.iter().find(|l| l.measure == Measure::Cost).unwrap();
        assert_eq!(
            day.key,
            format!("rs:budget:t:acme:cost:day:{}", at("2026-11-27T00:00:00Z").timestamp())
        );
        assert_eq!(
            day.exceeded(),
            "the per-day budget of $50.00 for tenant acme is spent; it resets at 2026-11-28T00:00:00Z"
        );
        let counter = day.counter(1000.0, 0.25, now);
        assert_eq!((counter.amount, counter.limit), (250_000.0, 50_000_000.0));
        assert_eq!(counter.ttl, Duration::from_secs(14 * 3600 + 60));
        assert_eq!(day.correction((1000.0, 0.25), (400.0, 0.1)), -150_000.0);
    }

    #[test]
    fn user_keys_never_hold_the_user_id() {
        let lines = rate_lines(
            "rs",
            &Scope::user("acme", "jane@example.com"),
            &LimitSet {
                requests_per_minute: Some(20.0),
                ..LimitSet::default()
            },
        );
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].key.contains("jane"), "{}", lines[0].key);
        let bucket = lines[0].bucket(500.0);
        assert_eq!((bucket.increment_ms, bucket.tolerance_ms), (3000.0, 3000.0));
    }
}
