//! When a schedule fires: a cron expression read in a time zone, its ticks in UTC.

use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// Why a cron expression or a time zone was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TimetableError {
    #[error("`{0}` is not a cron expression (minute hour day-of-month month day-of-week): {1}")]
    Cron(String, String),
    #[error("`{0}` is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)")]
    Zone(String),
}

/// A cron expression in a time zone: `0 8 * * MON` in `Europe/Berlin` is 07:00 UTC in winter and
/// 06:00 UTC in summer.
#[derive(Debug, Clone)]
pub struct Timetable {
    cron: Cron,
    zone: Tz,
}

impl Timetable {
    pub fn parse(cron: &str, zone: &str) -> Result<Self, TimetableError> {
        let parsed = Cron::from_str(cron).map_err(|error| TimetableError::Cron(cron.to_owned(), error.to_string()))?;
        let zone = zone.parse().map_err(|_| TimetableError::Zone(zone.to_owned()))?;
        Ok(Self { cron: parsed, zone })
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(next.with_timezone(&Utc))
    }

    /// The last tick strictly before `before`.
    pub fn previous_before(&self, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = before.with_timezone(&self.zone);
        let previous = self.cron.find_previous_occurrence(&local, false).ok()?;
        Some(previous.with_timezone(&Utc))
    }

    /// The ticks after `after` up to and including `until`, oldest first; of more than `keep`,
    /// only the newest `keep`.
    pub fn ticks_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, keep: usize) -> Vec<DateTime<Utc>> {
        let mut ticks = std::collections::VecDeque::new();
        let mut cursor = after;
        while let Some(tick) = self.next_after(cursor).filter(|tick| *tick <= until) {
            if ticks.len() == keep {
                ticks.pop_front();
            }
            ticks.push_back(tick);
            cursor = tick;
        }
        ticks.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn monday_eight_in_berlin_follows_daylight_saving_time() {
        let timetable = Timetable::parse("0 8 * * MON", "Europe/Berlin").unwrap();
        // Winter: CET is UTC+1.
        assert_eq!(
            timetable.next_after(utc("2026-12-05T12:00:00Z")),
            Some(utc("2026-12-07T07:00:00Z"))
        );
        // Summer: CEST is UTC+2.
        assert_eq!(
            timetable.next_after(utc("2026-07-01T00:00:00Z")),
            Some(utc("2026-07-06T06:00:00Z"))
        );
        assert_eq!(
            timetable.previous_before(utc("2026-12-07T07:00:00Z")),
            Some(utc("2026-11-30T07:00:00Z"))
        );
    }

    #[test]
    fn ticks_between_are_in_order_and_only_the_newest_are_kept() {
        let timetable = Timetable::parse("*/5 * * * *", "UTC").unwrap();
        let ticks = timetable.ticks_between(utc("2026-12-07T10:00:00Z"), utc("2026-12-07T10:20:00Z"), 10);
        assert_eq!(ticks.len(), 4);
        assert_eq!(ticks[0], utc("2026-12-07T10:05:00Z"));
        assert_eq!(ticks[3], utc("2026-12-07T10:20:00Z"));
        let newest = timetable.ticks_between(utc("2026-12-07T10:00:00Z"), utc("2026-12-07T10:20:00Z"), 2);
        assert_eq!(newest, vec![utc("2026-12-07T10:15:00Z"), utc("2026-12-07T10:20:00Z")]);
    }

    #[test]
    fn a_bad_expression_or_zone_is_named() {
        let error = Timetable::parse("every monday", "UTC").unwrap_err().to_string();
        assert!(error.contains("`every monday`"), "{error}");
        let error = Timetable::parse("0 8 * * MON", "Mars/Olympus").unwrap_err().to_string();
        assert!(error.contains("`Mars/Olympus`"), "{error}");
    }
}
