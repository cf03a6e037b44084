//! The audit table: audit events as Parquet files that analysts query with SQL
//! (`ragstream sql`, DuckDB, pandas, Spark) instead of writing a consumer of the audit topic;
//! beside it, optionally, the answers table.
//!
//! The `audit_table` stage writes them ([`writer`]), partitioned by UTC date (and tenant), to a
//! directory or an object store ([`location`]), with column names after the OpenTelemetry GenAI
//! semantic conventions ([`rows`], [`answers`]); [`query`] serves SQL over them with DataFusion.

pub mod answers;
pub mod cli;
pub mod location;
pub mod query;
pub mod rows;
pub mod writer;

/// The audit table's directory under the location.
pub const AUDIT_TABLE: &str = "audit_events";
/// The answers table's directory under the location.
pub const ANSWERS_TABLE: &str = "answers";
