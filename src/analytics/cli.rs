//! `ragstream sql`: a query or a built-in report over the audit table, printed.

use std::collections::BTreeMap;

use super::location::TableLocation;
use super::query::{parse_since, render, run, session, OutputFormat, QueryError, Report};

/// What `ragstream sql` runs and where.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["query", "report"])))]
pub struct SqlOptions {
    /// The query. Tables: `audit_events` (one row per event), `audit_events_raw` (repeats after
    /// a redelivery too) and `stage_durations` (event, stage, ms). Quote the GenAI columns:
    /// `"gen_ai.usage.input_tokens"`.
    pub query: Option<String>,
    /// A built-in report instead of a query.
    #[arg(long, value_enum)]
    pub report: Option<Report>,
    /// Only events at or after this: a span back from now (`30m`, `24h`, `7d`), a date
    /// (`2026-12-01`, midnight UTC) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Where the audit table is: the `audit_table` stage's `uri` (a directory or `s3://…`).
    #[arg(long, env = "RAGSTREAM_AUDIT_TABLE", default_value = "data/audit")]
    pub table: String,
    /// An object-store setting, `key=value` (repeatable): the stage's `storage_options`.
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = key_value)]
    pub storage_options: Vec<(String, String)>,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not key=value"))
}

/// The result of the query or report of `options`, printed as asked.
pub async fn sql(options: &SqlOptions) -> Result<String, QueryError> {
    let since = options
        .since
        .as_deref()
        .map(|text| parse_since(text, chrono::Utc::now()))
        .transpose()?;
    let storage_options: BTreeMap<String, String> = options.storage_options.iter().cloned().collect();
    let location = TableLocation::open(&options.table, &storage_options)?;
    let context = session(&location, since).await?;
    let query = match (options.report, &options.query) {
        (Some(report), _) => report.sql(),
        (None, Some(query)) => query.as_str(),
        (None, None) => unreachable!("clap requires a query or a report"),
    };
    render(&run(&context, query).await?, options.format)
}
