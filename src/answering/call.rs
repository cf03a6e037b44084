//! The innermost layer: the models, asked in order with retries, circuit breakers and fallbacks
//! (streaming partial answers when a partials sink is set), and the reply judged: an answer
//! with its citations, a non-answer that the passages replace, or extracted JSON checked
//! against the question's schema with one repair attempt.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::fallback::Fallback;
use super::partial::Progress;
use super::tool_loop::LoopServices;
use super::{CallPlan, Layer, Next, Turn};
use crate::contracts::{AnswerDraft, AnswerStatus, Task};
use crate::error::StageError;
use crate::llm::{
    citation, grounding, parse_citations, price_of, provider_of, ChatMessage, ChatRequest, Completion, DeltaSink,
    ModelChain, ModelConfig, Role,
};
use crate::pii::PiiScope;
use crate::telemetry::metrics::metrics;
use crate::telemetry::traces::gen_ai::Operation;
use crate::tools::Toolbox;

/// Calls the planned models and decides the question with their reply.
pub struct CallLayer {
    pub chain: Arc<ModelChain>,
    /// The configured models (for their prices).
    pub models: Vec<ModelConfig>,
    /// Where partial answers go while a model writes; unset: no streaming.
    pub partials_sink: Option<String>,
    pub fallback: Fallback,
    /// Tools the model may call; unset: none.
    pub tools: Option<Arc<Toolbox>>,
}

#[async_trait]
impl Layer for CallLayer {
    async fn answer(&self, turn: &mut Turn<'_>, _innermost: Next<'_>) -> Result<(), StageError> {
        let Turn { draft, context, call } = turn;
        let plan = call
            .as_mut()
            .ok_or_else(|| StageError::internal("call runs before route"))?;
        let models = plan.models();
        // Partial answers are text: not for an extraction, whose answer is JSON.
        let sink = self
            .partials_sink
            .as_deref()
            .filter(|_| draft.task != Task::Extract && context.can_produce_now());
        let mut stream = Progress::new(context, sink, draft);
        let reply = match (self.tools_for(draft), stream.as_mut()) {
            (Some(toolbox), stream) => {
                let scope = context.extension::<PiiScope>();
                let gate = plan.later_turns.clone();
                let with = LoopServices {
                    scope: scope.as_deref(),
                    gate: gate.as_deref(),
                    stream,
                };
                self.call_with_tools(toolbox, draft, &plan.request, &models, with).await
            }
            (None, Some(stream)) => self.call_streaming(draft, &plan.request, stream, &models).await,
            (None, None) => self
                .turn(draft, &plan.request, None, &models)
                .await
                .map(|completion| completion.text),
        };
        // The stream ends with the reply when it is the answer, else with the answer given.
        let answered = self.decide(draft, plan, reply, &models).await?;
        if let Some(stream) = &mut stream {
            if answered {
                stream.finish().await;
            } else {
                stream.replace_with(draft).await;
            }
        }
        Ok(())
    }
}

impl CallLayer {
    /// The tools the model may call for `draft`, when it has any (questions and reports, not
    /// extraction, which must answer with JSON).
    pub(super) fn tools_for(&self, draft: &AnswerDraft) -> Option<&Toolbox> {
        self.tools.as_deref().filter(|toolbox| toolbox.serve(draft))
    }

    /// Calls the chain and records the calls on the draft; the whole completion (with any tool
    /// calls), or why none came.
    pub(super) async fn turn(
        &self,
        draft: &mut AnswerDraft,
        request: &ChatRequest,
        deltas: Option<&DeltaSink>,
        models: &[String],
    ) -> Result<Completion, String> {
        let names: Vec<&str> = models.iter().map(String::as_str).collect();
        let outcome = self.chain.complete_among(request, deltas, &names).await;
        for attempt in &outcome.attempts {
            metrics()
                .llm_attempts
                .with_label_values(&[&attempt.model, &attempt.outcome])
                .inc();
            // An attempt the breaker refused never reached the model: no request to time.
            if attempt.outcome != "circuit_open" {
                let seconds = attempt.latency_ms / 1000.0;
                metrics()
                    .llm_request_seconds
                    .with_label_values(&[&attempt.model])
                    .observe(seconds);
                let error_type = if attempt.outcome == "ok" {
                    ""
                } else {
                    attempt.outcome.as_str()
                };
                let provider = provider_of(&self.models, &attempt.model);
                metrics()
                    .gen_ai_operation_seconds
                    .with_label_values(&[Operation::Chat.name(), provider, &attempt.model, error_type])
                    .observe(seconds);
            }
        }
        draft.attempts.extend(outcome.attempts);
        let answered = outcome.result.map_err(|error| error.to_string())?;
        let usage = answered.completion.usage;
        let provider = provider_of(&self.models, &answered.model);
        for (token_type, tokens) in [("input", usage.prompt_tokens), ("output", usage.completion_tokens)] {
            metrics()
                .gen_ai_token_usage
                .with_label_values(&[Operation::Chat.name(), provider, &answered.model, token_type])
                .observe(tokens as f64);
        }
        draft.provenance.provider = Some(provider.to_owned());
        draft.provenance.usage.prompt_tokens += usage.prompt_tokens;
        draft.provenance.usage.completion_tokens += usage.completion_tokens;
        draft.provenance.cost_usd += price_of(&self.models, &answered.model).cost(usage);
        if draft.provenance.model.is_none() {
            draft.provenance.fallback_reason = answered.fallback_reason;
        }
        draft.provenance.model = Some(answered.model);
        Ok(answered.completion)
    }

    /// [`call`](Self::call) followed by `stream`: its attempts, and its text as it comes when
    /// partial answers are streamed.
    async fn call_streaming(
        &self,
        draft: &mut AnswerDraft,
        request: &ChatRequest,
        stream: &mut Progress<'_>,
        models: &[String],
    ) -> Result<String, String> {
        let (deltas, receiver) = stream.sink();
        let call = async move {
            let reply = self
                .turn(draft, request, Some(&deltas), models)
                .await
                .map(|completion| completion.text);
            drop(deltas); // ends the forwarding below
            reply
        };
        let (reply, ()) = tokio::join!(call, stream.forward(receiver));
        reply
    }

    /// Decides `draft` with the models' reply; whether the reply itself is the answer.
    async fn decide(
        &self,
        draft: &mut AnswerDraft,
        plan: &CallPlan,
        reply: Result<String, String>,
        models: &[String],
    ) -> Result<bool, StageError> {
        let reply = match reply {
            Ok(reply) => reply,
            Err(reason) => {
                self.fallback.no_model_answered(draft, &reason).await?;
                return Ok(false);
            }
        };
        if draft.task == Task::Extract {
            self.decide_extract(draft, plan, reply, models).await;
            return Ok(false);
        }
        // What the answer may rest on: the passages, and what the tools returned.
        let mut passages: Vec<&str> = plan.prompt.passages.iter().map(|p| p.text.as_str()).collect();
        let tool_results: Vec<String> = draft.tool_calls.iter().map(|c| c.masked_result.clone()).collect();
        passages.extend(tool_results.iter().map(String::as_str));
        if let Some(non_answer) = grounding::judge(&reply, &draft.question, &passages) {
            self.fallback.not_an_answer(draft, reply, &non_answer).await?;
            return Ok(false);
        }
        draft.citations = parse_citations(&reply, &plan.prompt.passages);
        if draft.citations.is_empty() {
            // The model cited nothing: its sources are the passages it took its words from,
            // unless it took them from a tool's result first (an order's status rests on the
            // order service, not on a document sharing the word "order").
            let support = grounding::supporting_passages(&reply, &passages);
            let from_tool = support.first().is_some_and(|i| *i >= plan.prompt.passages.len());
            draft.citations = support
                .into_iter()
                .filter(|i| *i < plan.prompt.passages.len() && !from_tool)
                .map(|i| citation(i + 1, &plan.prompt.passages[i]))
                .collect();
        }
        draft.answer = Some(reply);
        draft.decide(AnswerStatus::Ok, None);
        Ok(true)
    }

    /// An extract reply must be JSON valid against the question's schema; one repair attempt.
    async fn decide_extract(&self, draft: &mut AnswerDraft, plan: &CallPlan, reply: String, models: &[String]) {
        let schema = draft.options.as_ref().and_then(|o| o.extract_schema.clone());
        let schema = schema.as_ref();
        let checked = match check_extract(&reply, schema) {
            Ok(value) => Ok(value),
            Err(problem) => {
                let mut request = plan.request.clone();
                request.messages.push(ChatMessage::new(Role::Assistant, reply));
                request.messages.push(ChatMessage::new(
                    Role::User,
                    format!("That reply is not valid: {problem}. Reply with only the corrected JSON object."),
                ));
                match self
                    .turn(draft, &request, None, models)
                    .await
                    .map(|completion| completion.text)
                {
                    Ok(repaired) => check_extract(&repaired, schema),
                    Err(reason) => Err(reason),
                }
            }
        };
        match checked {
            Ok(value) => {
                draft.citations = plan
                    .prompt
                    .passages
                    .iter()
                    .enumerate()
                    .map(|(i, p)| citation(i + 1, p))
                    .collect();
                draft.answer = Some(value.to_string());
                draft.data = Some(value);
                draft.decide(AnswerStatus::Ok, None);
            }
            Err(problem) => draft.decide(
                AnswerStatus::Failed,
                Some(format!("the answer is not valid against the extract schema: {problem}")),
            ),
        }
    }
}

/// The JSON object in a model's reply: the whole reply, or the part inside a code fence or
/// between the first `{` and the last `}` (small models like to add words around it).
fn json_in(reply: &str) -> Option<Value> {
    let trimmed = reply.trim();
    if let Ok(value) = serde_json::from_str(trimmed) {
        return Some(value);
    }
    let start = trimmed.find('{')?;
    let end = trimmed.rfind('}')?;
    serde_json::from_str(trimmed.get(start..=end)?).ok()
}

/// Checks an extract reply: the JSON it holds, or every way it breaks `schema`.
fn check_extract(reply: &str, schema: Option<&Value>) -> Result<Value, String> {
    let value = json_in(reply).ok_or_else(|| "the reply is not a JSON object".to_owned())?;
    let Some(schema) = schema else {
        return Ok(value);
    };
    let validator = jsonschema::validator_for(schema).map_err(|e| format!("the extract schema is invalid: {e}"))?;
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .map(|error| {
            let at = error.instance_path().to_string();
            format!("{}: {error}", if at.is_empty() { "/" } else { &at })
        })
        .collect();
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_replies_are_checked_against_the_schema() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["price"],
            "properties": {"price": {"type": "number"}}
        });
        assert_eq!(
            check_extract("Sure! ```json\n{\"price\": 12.5}\n```", Some(&schema)).unwrap(),
            serde_json::json!({"price": 12.5})
        );
        let problem = check_extract(r#"{"price": "cheap"}"#, Some(&schema)).unwrap_err();
        assert!(problem.starts_with("/price: "), "{problem}");
        assert_eq!(
            check_extract("no json here", Some(&schema)).unwrap_err(),
            "the reply is not a JSON object"
        );
    }
}
