//! Batching table rows (audit events, answers) into Parquet files.
//!
//! Every message of the pipeline hands its row to one task, which gathers rows until
//! `max_rows` wait or the oldest has waited `max_wait` (or the pipeline drains), writes one
//! file per partition, and only then answers the messages whose rows are in it: a message's
//! offset is committed after its row is in a whole file, never before. A failed write answers
//! those messages with an external error, so the pipeline retries them (a file is written whole
//! or not at all, so a retry never meets half of one).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Deserialize;
use serde_inline_default::serde_inline_default;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::location::TableLocation;
use super::rows::{to_batch, TableRow};
use crate::clock::Clock;
use crate::core_api::Worker;
use crate::error::{ConfigError, Findings, StageError};
use crate::telemetry::metrics::metrics;

type Reply = oneshot::Sender<Result<(), StageError>>;

enum Command<Row> {
    Write {
        row: Box<Row>,
        reply: Reply,
    },
    /// Write what waits now, and from now on every row as it comes (the pipeline is draining:
    /// the messages still in flight must finish before its deadline).
    Flush {
        done: oneshot::Sender<()>,
    },
}

/// When the writer cuts a file (`audit_table.flush`).
#[serde_inline_default]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushPolicy {
    /// Most rows in one file: a file is cut when this many wait. Rows only wait while their
    /// messages are in flight, so the pipeline's `max_in_flight` must be at least this for files
    /// this large.
    #[serde_inline_default(2000)]
    pub max_rows: usize,
    /// Longest a row waits for its file.
    #[serde_inline_default(10_000)]
    pub max_wait_ms: u64,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

impl FlushPolicy {
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        errors.require_within(path, "max_rows", self.max_rows, 1..=10_000);
        errors.require_nonzero(path, "max_wait_ms", self.max_wait_ms);
    }
}

/// A handle to the writing task of one table; cheap to clone.
pub struct TableWriter<Row>(Worker<Command<Row>>);

impl<Row> Clone for TableWriter<Row> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<Row: TableRow> TableWriter<Row> {
    /// Starts the writing task on the current runtime; `by_tenant`: partitions `date=…/tenant=…/`
    /// instead of `date=…/`.
    pub fn spawn(location: TableLocation, flush: FlushPolicy, by_tenant: bool, clock: Arc<dyn Clock>) -> Self {
        let layout = Layout { location, by_tenant };
        Self(Worker::spawn(4096, move |receiver| run(layout, receiver, flush, clock)))
    }

    /// Returns once `row` is in a file written whole.
    pub async fn write(&self, row: Row) -> Result<(), StageError> {
        let row = Box::new(row);
        self.0
            .request(|reply| Command::Write { row, reply })
            .await
            .map_err(|gone| StageError::internal(format!("the {} table writer {gone}", Row::TABLE)))?
    }

    /// Writes the rows waiting now, and from then on each row without waiting for more.
    pub async fn flush(&self) {
        let _ = self.0.request(|done| Command::Flush { done }).await;
    }
}

/// Where files go and how they are partitioned.
struct Layout {
    location: TableLocation,
    by_tenant: bool,
}

async fn run<Row: TableRow>(
    layout: Layout,
    mut commands: mpsc::Receiver<Command<Row>>,
    flush: FlushPolicy,
    clock: Arc<dyn Clock>,
) {
    let mut max_wait = Duration::from_millis(flush.max_wait_ms);
    let mut waiting: Vec<(Row, Reply)> = Vec::new();
    let mut due: Option<Instant> = None;
    loop {
        let command = match due {
            // Whatever is queued already goes in before the deadline is looked at.
            Some(deadline) => tokio::select! {
                biased;
                command = commands.recv() => command,
                _ = clock.sleep(deadline.saturating_duration_since(clock.now())) => {
                    write_files(&layout, std::mem::take(&mut waiting)).await;
                    due = None;
                    continue;
                }
            },
            None => commands.recv().await,
        };
        let closed = command.is_none();
        match command {
            Some(Command::Write { row, reply }) => {
                waiting.push((*row, reply));
                if waiting.len() < flush.max_rows {
                    if waiting.len() == 1 {
                        due = Some(clock.now() + max_wait);
                    }
                    continue;
                }
            }
            Some(Command::Flush { done }) => {
                write_files(&layout, std::mem::take(&mut waiting)).await;
                max_wait = Duration::ZERO;
                let _ = done.send(());
            }
            None => {}
        }
        // A flush happened above, or is due now (full, or the channel closed).
        write_files(&layout, std::mem::take(&mut waiting)).await;
        due = None;
        if closed {
            return;
        }
    }
}

/// The directory of a row's partition, under the table.
fn partition_of<Row: TableRow>(row: &Row, by_tenant: bool) -> String {
    let date = row.date().format("%Y-%m-%d");
    if by_tenant {
        // The contracts allow tenants of these characters only; anything else (an event from
        // elsewhere) must not reach the path as a separator: the tenant column is the truth.
        let tenant: String = row
            .tenant()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}/date={date}/tenant={tenant}", Row::TABLE)
    } else {
        format!("{}/date={date}", Row::TABLE)
    }
}

/// One file per partition; each row's message hears how its file went.
async fn write_files<Row: TableRow>(layout: &Layout, waiting: Vec<(Row, Reply)>) {
    if waiting.is_empty() {
        return;
    }
    let mut partitions: BTreeMap<String, Vec<(Row, Reply)>> = BTreeMap::new();
    for (row, reply) in waiting {
        partitions
            .entry(partition_of(&row, layout.by_tenant))
            .or_default()
            .push((row, reply));
    }
    for (partition, entries) in partitions {
        let (rows, replies): (Vec<Row>, Vec<Reply>) = entries.into_iter().unzip();
        let started = Instant::now();
        let result = write_file(&layout.location, &partition, &rows).await;
        let m = metrics();
        match &result {
            Ok(()) => {
                m.audit_table_rows.inc_by(rows.len() as u64);
                m.audit_table_files.with_label_values(&["ok"]).inc();
                m.audit_table_write_seconds.observe(started.elapsed().as_secs_f64());
            }
            Err(error) => {
                warn!(partition, rows = rows.len(), %error, "table file not written; its messages are retried");
                m.audit_table_files.with_label_values(&["failed"]).inc();
            }
        }
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
}

async fn write_file<Row: TableRow>(location: &TableLocation, partition: &str, rows: &[Row]) -> Result<(), StageError> {
    let encode =
        |error: String| StageError::internal(format!("cannot encode the {} rows as Parquet: {error}", Row::TABLE));
    let batch = to_batch(rows).map_err(|error| encode(error.to_string()))?;
    let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, Row::schema(), Some(properties))
        .map_err(|error| encode(error.to_string()))?;
    writer.write(&batch).map_err(|error| encode(error.to_string()))?;
    writer.close().map_err(|error| encode(error.to_string()))?;
    // Names sort in the order files were written, which `ragstream sql` relies on to keep the
    // first copy of a repeated row.
    let name = format!(
        "{partition}/part-{:013}-{:016x}.parquet",
        chrono::Utc::now().timestamp_millis(),
        rand::random::<u64>()
    );
    location
        .put(&name, buffer)
        .await
        .map_err(|error| StageError::external(format!("cannot write {name} to {}: {error}", location.uri())))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;

    use serde_json::json;

    use super::*;
    use crate::analytics::rows::AuditRow;
    use crate::analytics::AUDIT_TABLE;

    fn row(tenant: &str, id: usize, at: &str) -> AuditRow {
        AuditRow::from_event(&json!({
            "event_id": format!("{tenant}/r{id}:question_answered"), "event": "question_answered",
            "occurred_at": at, "tenant": tenant, "request_id": format!("r{id}"), "durations_ms": {"total": 1.0}
        }))
        .unwrap()
    }

    fn flush(max_rows: usize, max_wait_s: u64) -> FlushPolicy {
        FlushPolicy {
            max_rows,
            max_wait_ms: max_wait_s * 1000,
        }
    }

    async fn files(location: &TableLocation) -> Vec<String> {
        location.parquet_files(AUDIT_TABLE).await.unwrap()
    }

    /// A clock that moves to a deadline as soon as the writer waits for it.
    fn manual() -> Arc<dyn Clock> {
        Arc::new(crate::clock::ManualClock::default())
    }

    #[tokio::test]
    async fn rows_wait_for_a_full_file_or_the_deadline_and_are_answered_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::open(dir.path().to_str().unwrap(), &Map::new()).unwrap();
        let writer = TableWriter::spawn(location.clone(), flush(3, 60), false, manual());
        let at = "2026-12-07T10:00:00Z";
        let (a, b) = tokio::join!(writer.write(row("acme", 1, at)), writer.write(row("acme", 2, at)));
        // The clock reaches the 60 s deadline once both rows wait: they are written together,
        // in one file, and only then answered.
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(files(&location).await.len(), 1);
        let (c, d, e) = tokio::join!(
            writer.write(row("acme", 3, at)),
            writer.write(row("globex", 4, at)),
            writer.write(row("acme", 5, "2026-12-08T00:00:01Z"))
        );
        assert!(c.is_ok() && d.is_ok() && e.is_ok());
        // Full at three rows: one file per day.
        let written = files(&location).await;
        assert_eq!(written.len(), 3, "{written:?}");
        assert_eq!(written.iter().filter(|f| f.contains("date=2026-12-08/")).count(), 1);
    }

    #[tokio::test]
    async fn a_drain_writes_what_waits_and_tenants_can_have_partitions_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::open(dir.path().to_str().unwrap(), &Map::new()).unwrap();
        let writer = TableWriter::spawn(location.clone(), flush(100, 3600), true, crate::clock::system());
        let at = "2026-12-07T10:00:00Z";
        let pending = tokio::spawn({
            let writer = writer.clone();
            async move { tokio::join!(writer.write(row("acme", 1, at)), writer.write(row("a b/c", 2, at))) }
        });
        // Nothing else could write them within the test: the deadline is an hour away.
        let flushed = async {
            while !pending.is_finished() {
                tokio::task::yield_now().await;
                writer.flush().await;
            }
            pending.await.unwrap()
        };
        let (a, b) = tokio::time::timeout(Duration::from_secs(30), flushed)
            .await
            .expect("the flush wrote the waiting rows");
        assert!(a.is_ok() && b.is_ok());
        let written = files(&location).await;
        assert_eq!(written.len(), 2, "{written:?}");
        assert!(written
            .iter()
            .any(|f| f.starts_with("audit_events/date=2026-12-07/tenant=acme/")));
        assert!(
            written.iter().any(|f| f.contains("/tenant=a_b_c/")),
            "a tenant never adds a directory: {written:?}"
        );
    }

    #[tokio::test]
    async fn a_write_that_fails_is_an_external_error_for_every_row_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("table");
        let location = TableLocation::open(root.to_str().unwrap(), &Map::new()).unwrap();
        // A file where the partition's directory would go: the write cannot succeed.
        std::fs::write(root.join(AUDIT_TABLE), b"in the way").unwrap();
        let writer = TableWriter::spawn(location, flush(1, 60), false, manual());
        let error = writer.write(row("acme", 1, "2026-12-07T10:00:00Z")).await.unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert!(
            error.reason.contains("cannot write audit_events/date=2026-12-07/part-"),
            "{error}"
        );
    }
}
