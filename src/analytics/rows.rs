//! One audit event as one row of the audit table, and rows as Arrow record batches.
//!
//! Column names follow the OpenTelemetry GenAI semantic conventions where one exists
//! (`gen_ai.request.model`, `gen_ai.usage.input_tokens`…); the rest are ragstream's own, named as
//! in the audit event. Every event kind shares the one table: a column that does not apply to an
//! event is null (a document event has no model, a question event no `doc_id`).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;

use super::AUDIT_TABLE;
use crate::telemetry::traces::gen_ai::Operation;

/// An audit event as a row. Serialized by field name into the columns of [`schema`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    /// The event's own id: the same for a repeat of the same step, so repeats can be dropped.
    event_id: String,
    event: String,
    /// RFC 3339 in UTC, as the event has it; a timestamp column in the table.
    occurred_at: String,
    tenant: String,
    pipeline: Option<String>,
    request_id: Option<String>,
    user_ref: Option<String>,
    user_ref_previous: Option<String>,
    task: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    /// The question with personal data replaced by placeholders.
    masked_question: Option<String>,
    #[serde(rename = "gen_ai.operation.name")]
    operation: Option<&'static str>,
    #[serde(rename = "gen_ai.provider.name")]
    provider: Option<String>,
    #[serde(rename = "gen_ai.request.model")]
    model: Option<String>,
    #[serde(rename = "gen_ai.usage.input_tokens")]
    input_tokens: Option<i64>,
    #[serde(rename = "gen_ai.usage.output_tokens")]
    output_tokens: Option<i64>,
    #[serde(rename = "gen_ai.tool.name")]
    tool: Option<String>,
    tool_outcome: Option<String>,
    cost_usd: Option<f64>,
    cached: Option<bool>,
    route: Option<String>,
    fallback_reason: Option<String>,
    model_attempts: Option<i32>,
    chunks_retrieved: Option<i32>,
    chunks_cited: Option<i32>,
    /// Personal data masked in the question, and per kind.
    pii_masked: Option<i64>,
    pii_counts: Option<BTreeMap<String, i64>>,
    /// Personal data masked in the retrieved passages.
    context_pii_masked: Option<i64>,
    invented_placeholders: Option<i32>,
    doc_id: Option<String>,
    doc_version: Option<i64>,
    chunk_count: Option<i64>,
    embedding_model: Option<String>,
    /// The stage that failed and whose fault it was (failure events).
    stage: Option<String>,
    fault: Option<String>,
    /// Milliseconds since the message was received (the event's `durations_ms.total`).
    latency_ms: Option<f64>,
    /// Milliseconds per stage.
    durations_ms: BTreeMap<String, f64>,
    source_topic: Option<String>,
    source_partition: Option<i32>,
    source_offset: Option<i64>,
}

/// Why an event cannot be a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("the audit event has no `{0}`")]
    Missing(&'static str),
    #[error("occurred_at is not an RFC 3339 time")]
    BadTime,
}

impl AuditRow {
    /// The row of an audit event (any kind; unknown kinds keep the columns every event has).
    pub fn from_event(event: &Value) -> Result<Self, RowError> {
        let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
        let whole = |key: &str| event.get(key).and_then(Value::as_i64);
        let required = |key: &'static str| text(key).ok_or(RowError::Missing(key));
        let kind = required("event")?;
        let occurred_at = required("occurred_at")?;
        DateTime::parse_from_rfc3339(&occurred_at).map_err(|_| RowError::BadTime)?;
        let counts = |key: &str| -> Option<BTreeMap<String, i64>> {
            let object = event.get(key)?.as_object()?;
            Some(
                object
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
                    .collect(),
            )
        };
        let pii_counts = counts("pii_counts");
        let chunks = event.get("chunks").and_then(Value::as_array);
        let durations_ms: BTreeMap<String, f64> = event
            .get("durations_ms")
            .and_then(Value::as_object)
            .map(|object| {
                object
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let source = event.get("source");
        let model = text("model");
        let operation = match kind.as_str() {
            "question_answered" if event.get("provider").is_some() => Some(Operation::Chat.name()),
            "tool_called" => Some(Operation::ExecuteTool.name()),
            _ => None,
        };
        let usage = |key: &str| event.pointer(&format!("/usage/{key}")).and_then(Value::as_i64);
        Ok(Self {
            event_id: required("event_id")?,
            tenant: required("tenant")?,
            pipeline: text("pipeline"),
            request_id: text("request_id"),
            user_ref: text("user_ref"),
            user_ref_previous: text("user_ref_previous"),
            task: text("task"),
            status: text("status"),
            reason: text("reason"),
            masked_question: text("masked_question"),
            operation,
            provider: text("provider"),
            input_tokens: model.as_ref().and(usage("prompt_tokens")),
            output_tokens: model.as_ref().and(usage("completion_tokens")),
            model,
            tool: text("tool"),
            tool_outcome: (kind == "tool_called").then(|| text("outcome")).flatten(),
            cost_usd: event.get("cost_usd").and_then(Value::as_f64),
            cached: event.get("cached").and_then(Value::as_bool),
            route: text("route"),
            fallback_reason: text("fallback_reason"),
            model_attempts: event.get("attempts").and_then(Value::as_array).map(|a| a.len() as i32),
            chunks_retrieved: chunks.map(|c| c.len() as i32),
            chunks_cited: chunks.map(|c| c.iter().filter(|chunk| chunk["cited"] == true).count() as i32),
            pii_masked: pii_counts.as_ref().map(|counts| counts.values().sum()),
            pii_counts,
            context_pii_masked: counts("context_pii_counts").map(|counts| counts.values().sum()),
            invented_placeholders: whole("invented_placeholders").map(|n| n as i32),
            doc_id: text("doc_id"),
            doc_version: whole("version"),
            chunk_count: whole("chunk_count"),
            embedding_model: text("embedding_model"),
            stage: text("stage"),
            fault: text("fault"),
            latency_ms: durations_ms.get("total").copied(),
            durations_ms,
            source_topic: source.and_then(|s| s["topic"].as_str()).map(str::to_owned),
            source_partition: source.and_then(|s| s["partition"].as_i64()).map(|p| p as i32),
            source_offset: source.and_then(|s| s["offset"].as_i64()),
            event: kind,
            occurred_at,
        })
    }
}

/// A row of one of the tables: what the writer needs to place and encode it, and what
/// `ragstream sql` needs to drop its repeats.
pub trait TableRow: Serialize + Send + Sync + 'static {
    /// The table's directory under the location, and its name in SQL.
    const TABLE: &'static str;
    /// The column that names a row: a repeat written after a redelivery has the same value.
    const ID_COLUMN: &'static str;
    /// The row's time (a UTC timestamp column): `--since` filters on it.
    const TIME_COLUMN: &'static str;
    /// The table's columns, in file order.
    fn schema() -> SchemaRef;
    /// The tenant the row belongs to.
    fn tenant(&self) -> &str;
    /// The UTC day of the row: its partition.
    fn date(&self) -> NaiveDate;
}

impl TableRow for AuditRow {
    const TABLE: &'static str = AUDIT_TABLE;
    const ID_COLUMN: &'static str = "event_id";
    const TIME_COLUMN: &'static str = "occurred_at";

    fn schema() -> SchemaRef {
        schema()
    }

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn date(&self) -> NaiveDate {
        utc_day(&self.occurred_at)
    }
}

/// The UTC day of an RFC 3339 time (checked when the row was made).
pub(super) fn utc_day(time: &str) -> NaiveDate {
    DateTime::parse_from_rfc3339(time)
        .map(|time| time.with_timezone(&Utc).date_naive())
        .unwrap_or_default()
}

pub(super) fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

pub(super) fn map_of(name: &str, values: DataType) -> Field {
    let entries = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", values, true),
    ]);
    Field::new(
        name,
        DataType::Map(Arc::new(Field::new("entries", DataType::Struct(entries), false)), false),
        true,
    )
}

/// The columns of the audit table, in file order.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        use DataType::{Boolean, Float64, Int32, Int64};
        let number = |name: &str, kind: DataType| Field::new(name, kind, true);
        Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("event", DataType::Utf8, false),
            Field::new(
                "occurred_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("tenant", DataType::Utf8, false),
            text("pipeline"),
            text("request_id"),
            text("user_ref"),
            text("user_ref_previous"),
            text("task"),
            text("status"),
            text("reason"),
            text("masked_question"),
            text("gen_ai.operation.name"),
            text("gen_ai.provider.name"),
            text("gen_ai.request.model"),
            number("gen_ai.usage.input_tokens", Int64),
            number("gen_ai.usage.output_tokens", Int64),
            text("gen_ai.tool.name"),
            text("tool_outcome"),
            number("cost_usd", Float64),
            number("cached", Boolean),
            text("route"),
            text("fallback_reason"),
            number("model_attempts", Int32),
            number("chunks_retrieved", Int32),
            number("chunks_cited", Int32),
            number("pii_masked", Int64),
            map_of("pii_counts", Int64),
            number("context_pii_masked", Int64),
            number("invented_placeholders", Int32),
            text("doc_id"),
            number("doc_version", Int64),
            number("chunk_count", Int64),
            text("embedding_model"),
            text("stage"),
            text("fault"),
            number("latency_ms", Float64),
            map_of("durations_ms", Float64),
            text("source_topic"),
            number("source_partition", Int32),
            number("source_offset", Int64),
        ]))
    });
    SCHEMA.clone()
}

/// `rows` as one record batch of their table's schema.
pub fn to_batch<Row: TableRow>(rows: &[Row]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(Row::schema()).build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Row::schema())))
}

#[cfg(test)]
mod tests {
    use arrow_array::{Array, Float64Array, Int64Array, MapArray, StringArray, TimestampMillisecondArray};
    use serde_json::json;

    use super::*;

    fn question_event() -> Value {
        json!({
            "schema_version": 1, "event_id": "acme/r1:question_answered", "event": "question_answered",
            "occurred_at": "2026-12-07T10:11:12.345Z", "pipeline": "questions", "tenant": "acme",
            "request_id": "r1", "user_ref": "0011223344556677", "task": "qa", "status": "ok",
            "masked_question": "Where does [PERSON_1] live?",
            "chunks": [{"chunk_id": "a:1:0", "doc_id": "a", "score": 0.8, "cited": true},
                       {"chunk_id": "b:1:0", "doc_id": "b", "score": 0.5, "cited": false}],
            "model": "small", "provider": "openai", "route": "tier cheap (requested)",
            "usage": {"prompt_tokens": 120, "completion_tokens": 30}, "cost_usd": 0.0042, "cached": false,
            "attempts": [{"model": "small", "attempt": 1, "outcome": "ok", "waited_ms": 0.0, "latency_ms": 812.0}],
            "pii_counts": {"PERSON": 1}, "context_pii_counts": {"EMAIL": 2, "PHONE": 1},
            "invented_placeholders": 0,
            "durations_ms": {"retrieve": 12.5, "generate": 812.0, "total": 830.25},
            "source": {"topic": "questions", "partition": 2, "offset": 41}
        })
    }

    #[test]
    fn a_question_event_fills_the_gen_ai_columns_and_ours() {
        let row = AuditRow::from_event(&question_event()).unwrap();
        assert_eq!(row.operation, Some("chat"));
        assert_eq!(row.model.as_deref(), Some("small"));
        assert_eq!((row.input_tokens, row.output_tokens), (Some(120), Some(30)));
        assert_eq!((row.chunks_retrieved, row.chunks_cited), (Some(2), Some(1)));
        assert_eq!((row.pii_masked, row.context_pii_masked), (Some(1), Some(3)));
        assert_eq!(row.latency_ms, Some(830.25));
        assert_eq!(row.date(), NaiveDate::from_ymd_opt(2026, 12, 7).unwrap());

        let batch = to_batch(&[row]).unwrap();
        assert_eq!(batch.num_rows(), 1);
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        let tokens = column("gen_ai.usage.input_tokens");
        assert_eq!(tokens.as_any().downcast_ref::<Int64Array>().unwrap().value(0), 120);
        let model = column("gen_ai.request.model");
        assert_eq!(model.as_any().downcast_ref::<StringArray>().unwrap().value(0), "small");
        let at = column("occurred_at");
        let at = at.as_any().downcast_ref::<TimestampMillisecondArray>().unwrap();
        assert_eq!(at.value(0), 1_796_638_272_345);
        let durations = column("durations_ms");
        let durations = durations.as_any().downcast_ref::<MapArray>().unwrap();
        let values = durations.value(0);
        let stages = values.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let millis = values.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(stages.value(0), "generate");
        assert_eq!(millis.value(2), 830.25);
        assert!(column("doc_id").is_null(0));
    }

    #[test]
    fn document_and_tool_events_share_the_table_and_a_broken_event_says_what_is_missing() {
        let document = json!({
            "event_id": "acme/a.md:3:document_indexed", "event": "document_indexed",
            "occurred_at": "2026-12-07T00:00:00.000Z", "pipeline": "documents", "tenant": "acme",
            "doc_id": "a.md", "version": 3, "chunk_count": 12, "embedding_model": "all-MiniLM-L6-v2",
            "durations_ms": {"total": 40.0}, "source": {"topic": "documents", "partition": 0, "offset": 7}
        });
        let row = AuditRow::from_event(&document).unwrap();
        assert_eq!((row.doc_version, row.chunk_count), (Some(3), Some(12)));
        assert_eq!(
            (row.operation, row.model.as_deref(), row.input_tokens),
            (None, None, None)
        );
        let tool = json!({
            "event_id": "acme/r1:tool_called:0:0", "event": "tool_called", "occurred_at": "2026-12-07T00:00:01Z",
            "tenant": "acme", "request_id": "r1", "tool": "order_status", "outcome": "ok", "latency_ms": 3.0,
            "durations_ms": {}
        });
        let row = AuditRow::from_event(&tool).unwrap();
        assert_eq!(row.operation, Some("execute_tool"));
        assert_eq!(row.tool.as_deref(), Some("order_status"));
        assert_eq!(row.tool_outcome.as_deref(), Some("ok"));
        assert_eq!(to_batch(&[row]).unwrap().num_rows(), 1);

        let mut broken = question_event();
        broken.as_object_mut().unwrap().remove("tenant");
        assert_eq!(AuditRow::from_event(&broken), Err(RowError::Missing("tenant")));
        broken["tenant"] = json!("acme");
        broken["occurred_at"] = json!("yesterday");
        assert_eq!(AuditRow::from_event(&broken), Err(RowError::BadTime));
    }
}
