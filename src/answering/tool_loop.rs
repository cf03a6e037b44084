//! The tool loop of the call layer: while the model calls tools, run them (a turn's calls at
//! once) and hand their results back, within the bounds of [`ToolLimits`]: turns, failures in a
//! row, and one deadline for the whole loop.

use futures::future::join_all;

use super::call::CallLayer;
use crate::contracts::{AnswerDraft, ToolUse};
use crate::llm::{ChatMessage, ChatRequest};
use crate::pii::PiiScope;
use crate::tools::{CallSite, Toolbox};

impl CallLayer {
    /// Asks the models with `toolbox`'s tools for the draft's tenant until one answers without
    /// calling a tool: the answer's text, or why there is none. Every turn is recorded on the
    /// draft like a call without tools (attempts, tokens, cost), every tool call in
    /// `draft.tool_calls`.
    pub(super) async fn call_with_tools(
        &self,
        toolbox: &Toolbox,
        draft: &mut AnswerDraft,
        request: &ChatRequest,
        models: &[String],
        scope: Option<&PiiScope>,
    ) -> Result<String, String> {
        let limits = toolbox.limits;
        let (tenant, request_id) = (draft.tenant.clone(), draft.request_id.clone());
        let mut request = request.clone();
        request.tools = toolbox.specs_for(&tenant);
        let turns = async {
            let mut failures_in_row = 0;
            for iteration in 0..limits.max_iterations {
                let completion = self.turn(draft, &request, None, models).await?;
                if completion.tool_calls.is_empty() {
                    return Ok(completion.text);
                }
                let calls = completion.tool_calls;
                let sites: Vec<CallSite<'_>> = (0..calls.len())
                    .map(|index| CallSite {
                        tenant: &tenant,
                        request_id: &request_id,
                        iteration,
                        index,
                    })
                    .collect();
                let outcomes = join_all(
                    calls
                        .iter()
                        .zip(&sites)
                        .map(|(call, site)| toolbox.run(call, site, scope)),
                )
                .await;
                request
                    .messages
                    .push(ChatMessage::calling(completion.text, calls.clone()));
                let mut last_failure = None;
                for ((call, site), outcome) in calls.iter().zip(&sites).zip(outcomes) {
                    request
                        .messages
                        .push(ChatMessage::tool_result(&call.id, &outcome.content));
                    if outcome.is_ok() {
                        failures_in_row = 0;
                    } else {
                        failures_in_row += 1;
                        last_failure = Some(format!("{}: {}", outcome.tool, outcome.content));
                    }
                    draft.tool_calls.push(ToolUse {
                        iteration: site.iteration,
                        index: site.index as u32,
                        tool: outcome.tool,
                        masked_arguments: outcome.masked_arguments,
                        masked_result: outcome.content,
                        outcome: outcome.outcome.to_owned(),
                        latency_ms: outcome.latency_ms,
                        replayed: outcome.replayed,
                    });
                }
                if failures_in_row >= limits.max_consecutive_failures {
                    return Err(format!(
                        "{failures_in_row} tool calls in a row failed (max_consecutive_failures); the last: {}",
                        last_failure.unwrap_or_default()
                    ));
                }
            }
            Err(format!(
                "the model was still calling tools after {} turns (max_iterations)",
                limits.max_iterations
            ))
        };
        match tokio::time::timeout(limits.deadline, turns).await {
            Ok(reply) => reply,
            Err(_) => Err(format!(
                "the tool loop did not finish within {} ms (deadline_ms)",
                limits.deadline.as_millis()
            )),
        }
    }
}
