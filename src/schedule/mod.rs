//! Scheduled questions (`schedules`): a report or summary a tenant wants every Monday at 08:00
//! in its time zone, produced onto the questions topic like any other question.
//!
//! Exactly one question per tick, across replicas and restarts:
//! - every replica evaluates every schedule; for each due tick it tries to claim
//!   `{prefix}:schedule:{name}:tick:{tick}` in the shared store (`SET NX`), and only the replica
//!   that took the claim produces the question;
//! - the question's request id is `schedule-{name}-{tick}`, so even a question produced twice
//!   (a claim that expired during a partition) is answered once by the replay records;
//! - the newest tick evaluated is kept at `{prefix}:schedule:{name}:last`, so a replica that
//!   starts after downtime knows which ticks were missed, and `missed` says what becomes of them.

mod config;
mod timetable;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

pub use config::{MissedTicks, ScheduleConfig, SchedulesConfig};
pub use timetable::{Timetable, TimetableError};

use crate::clock::Clock;
use crate::contracts::{Contract, Question, SCHEMA_VERSION};
use crate::error::StageError;
use crate::state::StateStore;

/// How long a claim on a tick and the last evaluated tick are kept.
const KEEP_STATE: Duration = Duration::from_secs(400 * 24 * 3600);
/// Longest wait between two looks at the timetable (a store that was away is tried again).
const MAX_NAP: Duration = Duration::from_secs(60);

/// A question a schedule produced for one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Produced {
    pub schedule: String,
    pub tick: DateTime<Utc>,
    pub request_id: String,
}

struct Job {
    config: ScheduleConfig,
    timetable: Timetable,
}

/// Runs the schedules of a topology.
pub struct Scheduler {
    jobs: Vec<Job>,
    store: StateStore,
    prefix: String,
    producer: FutureProducer,
    clock: Arc<dyn Clock>,
    /// Names this replica in its claims (for an operator reading the store).
    replica: String,
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Scheduler {
    /// Connects to the schedules' store; `producer` sends the questions.
    pub async fn connect(
        config: &SchedulesConfig,
        producer: FutureProducer,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StageError> {
        let mut jobs = Vec::new();
        for job in &config.jobs {
            let timetable = Timetable::parse(&job.cron, &job.time_zone)
                .map_err(|error| StageError::internal(format!("schedule `{}`: {error}", job.name)))?;
            jobs.push(Job {
                config: job.clone(),
                timetable,
            });
        }
        Ok(Self {
            jobs,
            store: StateStore::connect(&config.store, clock.clone()).await?,
            prefix: config.key_prefix.clone(),
            producer,
            clock,
            replica: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
        })
    }

    /// Looks at the timetable until `shutdown`: produces what is due, then waits for the next
    /// tick (at most a minute, so a store that was away is soon tried again).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let now: DateTime<Utc> = self.clock.wall().into();
            if let Err(error) = self.run_due(now).await {
                tracing::warn!(reason = %error.reason, "schedules: cannot produce what is due; trying again");
            }
            let next = self.jobs.iter().filter_map(|job| job.timetable.next_after(now)).min();
            let nap = next
                .and_then(|next| (next - now).to_std().ok())
                .map_or(MAX_NAP, |until| until.min(MAX_NAP));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.clock.sleep(nap) => {}
            }
        }
    }

    /// Produces every question due at `now` that no replica produced yet.
    pub async fn run_due(&self, now: DateTime<Utc>) -> Result<Vec<Produced>, StageError> {
        let mut produced = Vec::new();
        for job in &self.jobs {
            produced.extend(self.run_job(job, now).await?);
        }
        Ok(produced)
    }

    fn key(&self, job: &Job, what: &str) -> String {
        format!("{}:schedule:{}:{what}", self.prefix, job.config.name)
    }

    async fn run_job(&self, job: &Job, now: DateTime<Utc>) -> Result<Vec<Produced>, StageError> {
        let last_key = self.key(job, "last");
        let last = self
            .store
            .get(&last_key)
            .await?
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
            .map(DateTime::<Utc>::from);
        let Some(last) = last else {
            // First sight of this schedule: nothing is owed for the time before it existed.
            self.store.claim(&last_key, &rfc3339(now), KEEP_STATE).await?;
            return Ok(Vec::new());
        };
        let keep = match job.config.missed {
            MissedTicks::Skip => 1,
            MissedTicks::CatchUp => job.config.max_catch_up,
        };
        let due = job.timetable.ticks_between(last, now, keep);
        let Some(&newest) = due.last() else {
            return Ok(Vec::new());
        };
        let grace = chrono::Duration::seconds(job.config.grace_s as i64);
        let mut produced = Vec::new();
        for tick in due {
            if job.config.missed == MissedTicks::Skip && now - tick > grace {
                tracing::info!(schedule = %job.config.name, tick = %rfc3339(tick), "schedules: a missed tick is skipped");
                continue;
            }
            let claim = self.key(job, &format!("tick:{}", rfc3339(tick)));
            if !self.store.claim(&claim, &self.replica, KEEP_STATE).await? {
                continue;
            }
            match self.produce(job, tick).await {
                Ok(request_id) => produced.push(Produced {
                    schedule: job.config.name.clone(),
                    tick,
                    request_id,
                }),
                Err(error) => {
                    // Another look (here or on another replica) may produce it.
                    self.store.remove(&claim).await?;
                    return Err(error);
                }
            }
        }
        if newest > last {
            self.store.set(&last_key, &rfc3339(newest), KEEP_STATE).await?;
        }
        Ok(produced)
    }

    /// The question of `tick`, produced to the schedule's topic; its request id.
    async fn produce(&self, job: &Job, tick: DateTime<Utc>) -> Result<String, StageError> {
        let config = &job.config;
        let since = job.timetable.previous_before(tick).unwrap_or(tick);
        let zone: chrono_tz::Tz = config.time_zone.parse().unwrap_or(chrono_tz::UTC);
        let local = |time: DateTime<Utc>| time.with_timezone(&zone).to_rfc3339_opts(SecondsFormat::Secs, true);
        let request_id = format!("schedule-{}-{}", config.name, tick.format("%Y%m%dT%H%M%SZ"));
        let mut options = config.options.clone().unwrap_or_default();
        options.changed_since = Some(rfc3339(since));
        let mut metadata = config.metadata.clone();
        metadata.insert("schedule".to_owned(), config.name.clone());
        metadata.insert("tick".to_owned(), rfc3339(tick));
        metadata.insert("since".to_owned(), rfc3339(since));
        let question = Question {
            schema_version: SCHEMA_VERSION,
            request_id: request_id.clone(),
            tenant: config.tenant.clone(),
            user: config.user.clone(),
            question: config
                .question
                .replace("{since}", &local(since))
                .replace("{tick}", &local(tick)),
            task: config.task,
            options: Some(options),
            metadata,
        };
        let value = serde_json::to_value(&question)
            .map_err(|error| StageError::internal(format!("schedule `{}`: {error}", config.name)))?;
        Contract::questions().validate(&value).map_err(|reason| {
            StageError::internal(format!(
                "schedule `{}` makes an invalid question: {reason}",
                config.name
            ))
        })?;
        let payload = value.to_string();
        self.producer
            .send(
                FutureRecord::to(&config.topic).key(&request_id).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| {
                StageError::external(format!(
                    "schedule `{}`: cannot produce to `{}`: {error}",
                    config.name, config.topic
                ))
            })?;
        tracing::info!(schedule = %config.name, tick = %rfc3339(tick), %request_id, "schedules: question produced");
        Ok(request_id)
    }
}
