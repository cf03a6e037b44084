//! One answer as one row of the answers table (`answers/`), beside the audit table.
//!
//! The answers topic holds what users read, personal values restored; the table keeps the
//! analyst's view of it: status, model, tokens, cost, latency and what was cited, with the user as
//! the keyed pseudonym of the audit events (`user_ref`, so the two tables join), and the answer's
//! text only when the stage is told to keep it (`answer_text: true`).

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate};
use serde::Serialize;

use super::rows::{text, utc_day, RowError, TableRow};
use super::ANSWERS_TABLE;
use crate::contracts::Answer;

/// An answer as a row; serialized by field name into the columns of [`TableRow::schema`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerRow {
    request_id: String,
    /// RFC 3339 in UTC, as the answer has it; a timestamp column in the table.
    created_at: String,
    tenant: String,
    user_ref: String,
    task: String,
    status: String,
    reason: Option<String>,
    #[serde(rename = "gen_ai.provider.name")]
    provider: Option<String>,
    #[serde(rename = "gen_ai.request.model")]
    model: Option<String>,
    #[serde(rename = "gen_ai.usage.input_tokens")]
    input_tokens: i64,
    #[serde(rename = "gen_ai.usage.output_tokens")]
    output_tokens: i64,
    cost_usd: f64,
    cached: bool,
    route: Option<String>,
    fallback_reason: Option<String>,
    latency_ms: f64,
    citations: i32,
    /// The cited documents, in citation order.
    cited_doc_ids: Vec<String>,
    /// The answer's text (personal values restored) and extracted data as JSON: only when the
    /// stage keeps them.
    answer: Option<String>,
    data: Option<String>,
}

impl AnswerRow {
    /// The row of `answer`, its user already pseudonymised as `user_ref`; `with_text`: keep the
    /// answer's text and data (which hold the personal values the question had).
    pub fn from_answer(answer: &Answer, user_ref: String, with_text: bool) -> Result<Self, RowError> {
        DateTime::parse_from_rfc3339(&answer.created_at).map_err(|_| RowError::BadTime)?;
        let provenance = &answer.provenance;
        Ok(Self {
            request_id: answer.request_id.clone(),
            created_at: answer.created_at.clone(),
            tenant: answer.tenant.clone(),
            user_ref,
            task: answer.task.as_str().to_owned(),
            status: answer.status.as_str().to_owned(),
            reason: provenance.reason.clone(),
            provider: provenance.provider.clone(),
            model: provenance.model.clone(),
            input_tokens: provenance.usage.prompt_tokens as i64,
            output_tokens: provenance.usage.completion_tokens as i64,
            cost_usd: provenance.cost_usd,
            cached: provenance.cached,
            route: provenance.route.clone(),
            fallback_reason: provenance.fallback_reason.clone(),
            latency_ms: answer.latency_ms,
            citations: answer.citations.len() as i32,
            cited_doc_ids: answer.citations.iter().map(|c| c.doc_id.clone()).collect(),
            answer: answer.answer.clone().filter(|_| with_text),
            data: answer.data.as_ref().filter(|_| with_text).map(ToString::to_string),
        })
    }
}

impl TableRow for AnswerRow {
    const TABLE: &'static str = ANSWERS_TABLE;
    const ID_COLUMN: &'static str = "request_id";
    const TIME_COLUMN: &'static str = "created_at";

    fn schema() -> SchemaRef {
        static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
            use DataType::{Boolean, Float64, Int32, Int64, Utf8};
            let required = |name: &str, kind: DataType| Field::new(name, kind, false);
            Arc::new(Schema::new(vec![
                required("request_id", Utf8),
                required(
                    "created_at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                ),
                required("tenant", Utf8),
                required("user_ref", Utf8),
                required("task", Utf8),
                required("status", Utf8),
                text("reason"),
                text("gen_ai.provider.name"),
                text("gen_ai.request.model"),
                required("gen_ai.usage.input_tokens", Int64),
                required("gen_ai.usage.output_tokens", Int64),
                required("cost_usd", Float64),
                required("cached", Boolean),
                text("route"),
                text("fallback_reason"),
                required("latency_ms", Float64),
                required("citations", Int32),
                required(
                    "cited_doc_ids",
                    DataType::List(Arc::new(Field::new("item", Utf8, false))),
                ),
                text("answer"),
                text("data"),
            ]))
        });
        SCHEMA.clone()
    }

    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn date(&self) -> NaiveDate {
        utc_day(&self.created_at)
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::{Array, Int64Array, ListArray, StringArray};
    use serde_json::json;

    use super::*;
    use crate::analytics::rows::to_batch;

    pub(crate) fn answer(request_id: &str, tenant: &str, at: &str) -> Answer {
        serde_json::from_value(json!({
            "schema_version": 1, "request_id": request_id, "tenant": tenant, "user": "ada@example.org",
            "task": "qa", "status": "ok", "answer": "Ada's parcel left on Monday [1].",
            "citations": [{"index": 1, "doc_id": "shipping", "chunk_id": "shipping:1:0", "score": 0.8}],
            "model": "small", "provider": "openai", "usage": {"prompt_tokens": 120, "completion_tokens": 30},
            "cost_usd": 0.0042, "cached": false, "latency_ms": 830.5, "created_at": at
        }))
        .unwrap()
    }

    #[test]
    fn an_answer_keeps_its_figures_and_not_its_text_or_user_unless_asked() {
        let answered = answer("r1", "acme", "2026-12-07T10:11:12.345Z");
        let row = AnswerRow::from_answer(&answered, "0011aabb".to_owned(), false).unwrap();
        assert_eq!(row.date(), NaiveDate::from_ymd_opt(2026, 12, 7).unwrap());
        assert_eq!((row.input_tokens, row.output_tokens, row.citations), (120, 30, 1));
        assert_eq!((row.task.as_str(), row.status.as_str()), ("qa", "ok"));
        assert_eq!(row.answer, None);
        let batch = to_batch(&[row]).unwrap();
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        assert!(column("answer").is_null(0));
        let users = column("user_ref");
        assert_eq!(
            users.as_any().downcast_ref::<StringArray>().unwrap().value(0),
            "0011aabb"
        );
        let tokens = column("gen_ai.usage.input_tokens");
        assert_eq!(tokens.as_any().downcast_ref::<Int64Array>().unwrap().value(0), 120);
        let cited = column("cited_doc_ids");
        let cited = cited.as_any().downcast_ref::<ListArray>().unwrap().value(0);
        assert_eq!(
            cited.as_any().downcast_ref::<StringArray>().unwrap().value(0),
            "shipping"
        );
        let serialized = serde_json::to_string(&AnswerRow::from_answer(&answered, "0011aabb".into(), false).unwrap());
        assert!(
            !serialized.unwrap().contains("ada@example.org"),
            "the user is a pseudonym"
        );

        let kept = AnswerRow::from_answer(&answered, "0011aabb".to_owned(), true).unwrap();
        assert_eq!(kept.answer.as_deref(), Some("Ada's parcel left on Monday [1]."));
        assert_eq!(to_batch(&[kept]).unwrap().num_rows(), 1);
    }

    #[test]
    fn an_answer_without_a_time_is_refused() {
        let mut answered = answer("r1", "acme", "2026-12-07T10:11:12Z");
        answered.created_at = "today".to_owned();
        assert_eq!(
            AnswerRow::from_answer(&answered, String::new(), false),
            Err(RowError::BadTime)
        );
    }
}
