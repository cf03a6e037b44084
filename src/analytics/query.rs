//! SQL over the audit table (and the answers table) with DataFusion (`ragstream sql`).
//!
//! The files are read into memory (an audit table of a few million events fits), repeats of a
//! row (the same `event_id` or answer `request_id`, written again after a redelivery) are
//! dropped, keeping the copy written first, and these tables are registered:
//!
//! - `audit_events`: one row per event (see [`super::rows`] for the columns);
//! - `audit_events_raw`: every row of every file, repeats included;
//! - `stage_durations`: one row per event and stage (`event_id`, `event`, `tenant`,
//!   `occurred_at`, `stage`, `ms`), from `durations_ms`;
//! - `answers` and `answers_raw`: the same for the answers table (see [`super::answers`]),
//!   empty when no pipeline writes one.
//!
//! `--since` keeps rows at or after a time: whole days of files are skipped by their `date=`
//! partition, the rest by `occurred_at` (`created_at` for answers).

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray};
use chrono::{DateTime, Duration as Span, NaiveDate, Utc};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::answers::AnswerRow;
use super::location::{LocationError, TableLocation};
use super::rows::{AuditRow, TableRow};
use crate::store::column;

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error("{file} is not a readable Parquet file of the {table} table: {reason}")]
    UnreadableFile {
        file: String,
        table: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Sql(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("--since `{0}`: expected a span (30m, 24h, 7d), a date (2026-12-01) or an RFC 3339 time")]
    Since(String),
}

/// The built-in reports (`ragstream sql --report NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Report {
    /// Questions, tokens and cost per tenant, model and provider.
    SpendByTenantModel,
    /// How often the response cache answered, per tenant.
    CacheHitRate,
    /// Questions no passage answered (`no_context`), newest first, with the masked question.
    NoContextQuestions,
    /// Stages by their 95th-percentile time.
    SlowestStages,
}

impl Report {
    /// The report's query.
    pub fn sql(self) -> &'static str {
        match self {
            Report::SpendByTenantModel => {
                r#"SELECT tenant, coalesce("gen_ai.request.model", '(no model)') AS model,
       coalesce("gen_ai.provider.name", '') AS provider, count(*) AS questions,
       coalesce(sum("gen_ai.usage.input_tokens"), 0) AS input_tokens,
       coalesce(sum("gen_ai.usage.output_tokens"), 0) AS output_tokens,
       round(coalesce(sum(cost_usd), 0), 6) AS cost_usd
FROM audit_events WHERE event = 'question_answered'
GROUP BY 1, 2, 3 ORDER BY cost_usd DESC, tenant, model"#
            }
            Report::CacheHitRate => {
                r#"SELECT tenant, count(*) AS questions,
       sum(CASE WHEN cached THEN 1 ELSE 0 END) AS cache_hits,
       round(100.0 * sum(CASE WHEN cached THEN 1 ELSE 0 END) / count(*), 1) AS hit_rate_pct
FROM audit_events WHERE event = 'question_answered'
GROUP BY tenant ORDER BY tenant"#
            }
            Report::NoContextQuestions => {
                r#"SELECT occurred_at, tenant, request_id, user_ref, masked_question
FROM audit_events WHERE event = 'question_answered' AND status = 'no_context'
ORDER BY occurred_at DESC, tenant, request_id"#
            }
            Report::SlowestStages => {
                r#"SELECT stage, count(*) AS events, round(avg(ms), 2) AS mean_ms,
       round(approx_percentile_cont(ms, 0.5), 2) AS p50_ms,
       round(approx_percentile_cont(ms, 0.95), 2) AS p95_ms, round(max(ms), 2) AS max_ms
FROM stage_durations WHERE stage <> 'total'
GROUP BY stage ORDER BY p95_ms DESC, stage"#
            }
        }
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row.
    Json,
}

/// `--since`: a span back from `now` (`30m`, `24h`, `7d`), a date (midnight UTC) or a time.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, QueryError> {
    let bad = || QueryError::Since(text.to_owned());
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc());
    }
    let split = text.char_indices().last().map(|(at, _)| at).ok_or_else(bad)?;
    let (count, unit) = text.split_at(split);
    let count: i64 = count.parse().map_err(|_| bad())?;
    let span = match unit {
        "m" => Span::try_minutes(count),
        "h" => Span::try_hours(count),
        "d" => Span::try_days(count),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(now - span)
}

/// The day of a file's `date=YYYY-MM-DD` partition, if its path has one.
fn partition_date(file: &str) -> Option<NaiveDate> {
    let part = file.split('/').find_map(|part| part.strip_prefix("date="))?;
    NaiveDate::parse_from_str(part, "%Y-%m-%d").ok()
}

/// Every row of the files of `Row`'s table (of the days from `since` on), in file-name order.
async fn read_rows<Row: TableRow>(
    location: &TableLocation,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<RecordBatch>, QueryError> {
    let first_day = since.map(|time| time.date_naive());
    let mut batches = Vec::new();
    for file in location.parquet_files(Row::TABLE).await? {
        if first_day.is_some_and(|first| partition_date(&file).is_some_and(|day| day < first)) {
            continue;
        }
        let bytes = location.read(&file).await?;
        let unreadable = |reason: String| QueryError::UnreadableFile {
            file: file.clone(),
            table: Row::TABLE,
            reason,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|builder| builder.build())
            .map_err(|error| unreadable(error.to_string()))?;
        for batch in reader {
            batches.push(batch.map_err(|error| unreadable(error.to_string()))?);
        }
    }
    Ok(batches)
}

/// `batches` of `Row`'s table without the rows before `since` and, with `unique`, without the
/// repeats of an id seen earlier.
fn keep<Row: TableRow>(
    batches: &[RecordBatch],
    since: Option<DateTime<Utc>>,
    unique: bool,
) -> Result<Vec<RecordBatch>, QueryError> {
    let since_ms = since.map(|time| time.timestamp_millis());
    let mut seen: HashSet<String> = HashSet::new();
    let mut kept = Vec::new();
    for batch in batches {
        let ids = column::<StringArray>(batch, Row::ID_COLUMN)?;
        let times = column::<TimestampMillisecondArray>(batch, Row::TIME_COLUMN)?;
        let mask: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                let recent = since_ms.is_none_or(|since| times.value(row) >= since);
                Some(recent && (!unique || seen.insert(ids.value(row).to_owned())))
            })
            .collect();
        kept.push(filter_record_batch(batch, &mask)?);
    }
    Ok(kept)
}

/// Registers `Row`'s table (repeats dropped) and its `_raw` twin in `context`.
async fn register<Row: TableRow>(
    context: &SessionContext,
    location: &TableLocation,
    since: Option<DateTime<Utc>>,
) -> Result<(), QueryError> {
    let rows = read_rows::<Row>(location, since).await?;
    let table = |batches: Vec<RecordBatch>| MemTable::try_new(Row::schema(), vec![batches]).map(Arc::new);
    context.register_table(Row::TABLE, table(keep::<Row>(&rows, since, true)?)?)?;
    context.register_table(format!("{}_raw", Row::TABLE), table(keep::<Row>(&rows, since, false)?)?)?;
    Ok(())
}

/// A DataFusion session with the tables registered (see the module docs).
pub async fn session(location: &TableLocation, since: Option<DateTime<Utc>>) -> Result<SessionContext, QueryError> {
    let context = SessionContext::new();
    register::<AuditRow>(&context, location, since).await?;
    register::<AnswerRow>(&context, location, since).await?;
    context
        .sql(
            "CREATE VIEW stage_durations AS \
             SELECT event_id, event, tenant, occurred_at, entry['key'] AS stage, entry['value'] AS ms \
             FROM (SELECT event_id, event, tenant, occurred_at, unnest(map_entries(durations_ms)) AS entry \
                   FROM audit_events)",
        )
        .await?;
    Ok(context)
}

/// Runs `sql` in `context`. A result without rows is one empty batch, so it still has its columns.
pub async fn run(context: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let frame = context.sql(sql).await?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await?;
    if batches.iter().all(|batch| batch.num_rows() == 0) {
        return Ok(vec![RecordBatch::new_empty(schema)]);
    }
    Ok(batches)
}

/// `batches` printed as `format`.
pub fn render(batches: &[RecordBatch], format: OutputFormat) -> Result<String, QueryError> {
    match format {
        OutputFormat::Table => Ok(format!(
            "{}\n",
            datafusion::arrow::util::pretty::pretty_format_batches(batches)?
        )),
        OutputFormat::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            Ok(String::from_utf8_lossy(&writer.into_inner()).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::analytics::rows::AuditRow;
    use crate::analytics::writer::{FlushPolicy, TableWriter};

    fn answered(tenant: &str, id: usize, model: Option<&str>, status: &str, cached: bool, at: &str) -> AuditRow {
        let mut event = json!({
            "event_id": format!("{tenant}/r{id}:question_answered"), "event": "question_answered",
            "occurred_at": at, "tenant": tenant, "request_id": format!("r{id}"), "status": status,
            "masked_question": format!("question {id} about [PERSON_1]"), "cached": cached,
            "usage": {"prompt_tokens": 100, "completion_tokens": 10}, "cost_usd": 0.5,
            "durations_ms": {"retrieve": 2.0 + id as f64, "generate": 50.0, "total": 60.0}
        });
        if let Some(model) = model {
            event["model"] = json!(model);
            event["provider"] = json!("openai");
        } else {
            event["cost_usd"] = json!(0.0);
        }
        AuditRow::from_event(&event).unwrap()
    }

    /// A table written by the writer: two files, the second repeating one event of the first.
    async fn table() -> (tempfile::TempDir, TableLocation) {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::open(dir.path().to_str().unwrap(), &BTreeMap::new()).unwrap();
        let flush = FlushPolicy {
            max_rows: 3,
            max_wait_ms: 3_600_000,
        };
        let writer = TableWriter::spawn(location.clone(), flush, false, crate::clock::system());
        let day = "2026-12-06T09:00:00Z";
        let next = "2026-12-07T09:00:00Z";
        let (a, b, c) = tokio::join!(
            writer.write(answered("acme", 1, Some("small"), "ok", false, day)),
            writer.write(answered("acme", 2, Some("small"), "ok", true, next)),
            writer.write(answered("globex", 3, None, "no_context", false, next)),
        );
        a.and(b).and(c).unwrap();
        let (d, e, f) = tokio::join!(
            writer.write(answered("acme", 2, Some("small"), "ok", true, next)),
            writer.write(answered("globex", 4, Some("large"), "ok", false, next)),
            writer.write(answered("globex", 5, Some("large"), "ok", false, next)),
        );
        d.and(e).and(f).unwrap();
        (dir, location)
    }

    /// The result of `sql` as CSV.
    async fn csv(context: &SessionContext, sql: &str) -> String {
        render(&run(context, sql).await.unwrap(), OutputFormat::Csv).unwrap()
    }

    #[tokio::test]
    async fn repeats_are_dropped_and_the_reports_add_up() {
        let (_dir, location) = table().await;
        let context = session(&location, None).await.unwrap();
        assert_eq!(csv(&context, "SELECT count(*) AS n FROM audit_events").await, "n\n5\n");
        assert_eq!(
            csv(&context, "SELECT count(*) AS n FROM audit_events_raw").await,
            "n\n6\n"
        );
        assert_eq!(
            csv(&context, Report::SpendByTenantModel.sql()).await,
            "tenant,model,provider,questions,input_tokens,output_tokens,cost_usd\n\
             acme,small,openai,2,200,20,1.0\n\
             globex,large,openai,2,200,20,1.0\n\
             globex,(no model),,1,0,0,0.0\n"
        );
        assert_eq!(
            csv(&context, Report::CacheHitRate.sql()).await,
            "tenant,questions,cache_hits,hit_rate_pct\nacme,2,1,50.0\nglobex,3,0,0.0\n"
        );
        let no_context = render(
            &run(&context, Report::NoContextQuestions.sql()).await.unwrap(),
            OutputFormat::Json,
        )
        .unwrap();
        assert!(
            no_context.contains(r#""masked_question":"question 3 about [PERSON_1]""#),
            "{no_context}"
        );
        assert_eq!(no_context.lines().count(), 1);
        let stages = csv(&context, Report::SlowestStages.sql()).await;
        let lines: Vec<&str> = stages.lines().collect();
        assert_eq!(lines[0], "stage,events,mean_ms,p50_ms,p95_ms,max_ms");
        assert!(lines[1].starts_with("generate,5,50.0,"), "{stages}");
        assert!(lines[2].starts_with("retrieve,5,"), "{stages}");
        let table = render(
            &run(&context, Report::CacheHitRate.sql()).await.unwrap(),
            OutputFormat::Table,
        )
        .unwrap();
        assert!(
            table.contains("| acme   | 2         | 1          | 50.0         |"),
            "{table}"
        );
    }

    #[tokio::test]
    async fn since_keeps_the_recent_days_and_a_broken_file_is_named() {
        let (dir, location) = table().await;
        let since = parse_since("2026-12-07", Utc::now()).unwrap();
        let context = session(&location, Some(since)).await.unwrap();
        assert_eq!(csv(&context, "SELECT count(*) AS n FROM audit_events").await, "n\n4\n");
        // No rows: still the columns.
        let none = "SELECT tenant, request_id FROM audit_events WHERE tenant = 'nobody'";
        assert_eq!(csv(&context, none).await, "tenant,request_id\n");
        let table = render(&run(&context, none).await.unwrap(), OutputFormat::Table).unwrap();
        assert!(
            table.contains("| tenant | request_id |") && table.ends_with("+\n"),
            "{table}"
        );

        let broken = dir
            .path()
            .join("audit_events/date=2026-12-07/part-9999999999999-0.parquet");
        std::fs::write(&broken, b"PAR1 not really").unwrap();
        let Err(error) = session(&location, None).await else {
            panic!("a broken file was read")
        };
        assert!(
            error
                .to_string()
                .contains("part-9999999999999-0.parquet is not a readable Parquet file"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_answers_table_drops_repeats_by_request_id_and_joins_the_audit_events() {
        let (_dir, location) = table().await;
        let answer = |tenant: &str, id: usize, tokens: u64| {
            let answer: crate::contracts::Answer = serde_json::from_value(json!({
                "schema_version": 1, "request_id": format!("r{id}"), "tenant": tenant, "user": "u",
                "task": "qa", "status": "ok", "answer": "text", "citations": [],
                "model": "small", "provider": "openai",
                "usage": {"prompt_tokens": tokens, "completion_tokens": 1}, "cost_usd": 0.5,
                "latency_ms": 60.0, "created_at": "2026-12-07T09:00:01Z"
            }))
            .unwrap();
            AnswerRow::from_answer(&answer, "ref".to_owned(), false).unwrap()
        };
        let flush = FlushPolicy {
            max_rows: 2,
            max_wait_ms: 3_600_000,
        };
        let writer = TableWriter::spawn(location.clone(), flush, false, crate::clock::system());
        let (a, b) = tokio::join!(
            writer.write(answer("acme", 1, 100)),
            writer.write(answer("acme", 2, 100))
        );
        a.and(b).unwrap();
        // Answered again after a redelivery: the first copy stays.
        let (c, d) = tokio::join!(
            writer.write(answer("acme", 2, 999)),
            writer.write(answer("globex", 4, 100))
        );
        c.and(d).unwrap();
        let context = session(&location, None).await.unwrap();
        assert_eq!(csv(&context, "SELECT count(*) AS n FROM answers_raw").await, "n\n4\n");
        assert_eq!(
            csv(
                &context,
                "SELECT count(*) AS n, sum(\"gen_ai.usage.input_tokens\") AS tokens FROM answers"
            )
            .await,
            "n,tokens\n3,300\n"
        );
        let joined = "SELECT a.request_id, e.event FROM answers a \
                      JOIN audit_events e ON a.tenant = e.tenant AND a.request_id = e.request_id \
                      ORDER BY a.request_id";
        assert_eq!(
            csv(&context, joined).await,
            "request_id,event\nr1,question_answered\nr2,question_answered\nr4,question_answered\n"
        );
        let since = parse_since("2026-12-08", Utc::now()).unwrap();
        let later = session(&location, Some(since)).await.unwrap();
        assert_eq!(csv(&later, "SELECT count(*) AS n FROM answers").await, "n\n0\n");
    }

    #[test]
    fn since_reads_spans_dates_and_times() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |text: &str| parse_since(text, now).unwrap().to_rfc3339();
        assert_eq!(at("30m"), "2026-12-07T11:30:00+00:00");
        assert_eq!(at("24h"), "2026-12-06T12:00:00+00:00");
        assert_eq!(at("7d"), "2026-11-30T12:00:00+00:00");
        assert_eq!(at("2026-12-01"), "2026-12-01T00:00:00+00:00");
        assert_eq!(at("2026-12-01T08:00:00+01:00"), "2026-12-01T07:00:00+00:00");
        for bad in ["", "7w", "d", "yesterday", "7é"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
