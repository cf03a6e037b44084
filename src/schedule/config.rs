//! Schedule settings: the top-level `schedules` section of a topology.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::timetable::Timetable;
use crate::contracts::{QuestionOptions, Task};
use crate::error::{is_plain_name, ConfigError, Findings};
use crate::state;
use serde_inline_default::serde_inline_default;

/// Questions produced on a timetable. Every replica runs the timetable; a claim per tick in the
/// shared store lets exactly one of them produce each tick's question.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulesConfig {
    /// `redis://host:port[/db]`, shared by every replica, or `memory` (a single replica: claims
    /// and the last tick are lost with the process).
    pub store: String,
    /// Prefix of the store's keys.
    #[serde_inline_default("ragstream".to_owned())]
    pub key_prefix: String,
    /// The schedules.
    pub jobs: Vec<ScheduleConfig>,
}

/// What happens to ticks that passed while no replica ran (or that are later than `grace_s`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedTicks {
    /// Dropped: only a tick at most `grace_s` late is produced.
    #[default]
    Skip,
    /// Produced late, oldest first, at most `max_catch_up` (the newest of them).
    CatchUp,
}

/// One schedule: when, and the question it produces.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Names the schedule in request ids (`schedule-{name}-{tick}`), keys, logs and metadata.
    pub name: String,
    /// Five fields: minute hour day-of-month month day-of-week, e.g. `0 8 * * MON`.
    pub cron: String,
    /// The IANA time zone the expression is read in.
    #[serde_inline_default("UTC".to_owned())]
    pub time_zone: String,
    /// Topic the question is produced to (the questions pipeline's source).
    pub topic: String,
    pub tenant: String,
    /// The `user` of the question (per-user limits, the audit pseudonym).
    #[serde_inline_default("scheduler".to_owned())]
    pub user: String,
    #[serde_inline_default(Task::Summarize)]
    pub task: Task,
    /// The question; `{since}` and `{tick}` are replaced by the previous and this tick (RFC 3339
    /// in the schedule's time zone).
    pub question: String,
    /// The question's options; `changed_since` is set to the previous tick, so retrieval only
    /// sees documents indexed since the last run.
    pub options: Option<QuestionOptions>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub missed: MissedTicks,
    /// With `missed: catch_up`, the most ticks produced at once after downtime.
    #[serde_inline_default(10)]
    pub max_catch_up: usize,
    /// A tick produced this many seconds late still counts as on time.
    #[serde_inline_default(60)]
    pub grace_s: u64,
}

impl SchedulesConfig {
    /// Appends every problem of the section (at `path`) to `errors`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if let Err(reason) = state::check_url(&self.store) {
            errors.report(path, "store", reason);
        }
        let mut names = BTreeSet::new();
        for (index, job) in self.jobs.iter().enumerate() {
            let at = format!("{path}.jobs[{index}]");
            if !is_plain_name(&job.name) {
                errors.require_name(&at, "name", &job.name);
            } else if !names.insert(job.name.as_str()) {
                errors.report(&at, "name", format!("`{}` is used by an earlier schedule", job.name));
            }
            if let Err(error) = Timetable::parse(&job.cron, "UTC") {
                errors.report(&at, "cron", error.to_string());
            }
            if let Err(error) = Timetable::parse("* * * * *", &job.time_zone) {
                errors.report(&at, "time_zone", error.to_string());
            }
            for (field, value) in [
                ("topic", &job.topic),
                ("tenant", &job.tenant),
                ("question", &job.question),
            ] {
                if value.trim().is_empty() {
                    errors.report(&at, field, "must not be empty");
                }
            }
            errors.require_nonzero(&at, "max_catch_up", job.max_catch_up);
        }
    }
}
