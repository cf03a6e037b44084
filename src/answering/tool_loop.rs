//! The tool loop of the call layer: while the model calls tools, run them (a turn's calls at
//! once) and hand their results back, within the bounds of [`ToolLimits`]: turns, failures in a
//! row, and one deadline for the whole loop. Every turn after the first is admitted by the
//! budgets and rate limits before it is made, like the first.

use futures::future::join_all;

use super::admission::TurnGate;
use super::call::CallLayer;
use super::partial::Progress;
use super::route::estimate;
use crate::contracts::{AnswerDraft, ToolUse};
use crate::llm::{ChatMessage, ChatRequest};
use crate::pii::PiiScope;
use crate::tools::{CallSite, Toolbox};

/// What the tool loop works with besides the question: the request's personal-data vault, the
/// budgets' gate for later turns, and the partial-answer stream, each when there is one.
pub(super) struct LoopServices<'s, 'c> {
    pub scope: Option<&'s PiiScope>,
    pub gate: Option<&'s TurnGate>,
    /// Each turn's text and the tools it calls are streamed here as they come.
    pub stream: Option<&'s mut Progress<'c>>,
}

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
        with: LoopServices<'_, '_>,
    ) -> Result<String, String> {
        let LoopServices {
            scope,
            gate,
            mut stream,
        } = with;
        let limits = toolbox.limits;
        let (tenant, request_id, task) = (draft.tenant.clone(), draft.request_id.clone(), draft.task);
        let mut request = request.clone();
        request.tools = toolbox.specs_for(&tenant, task);
        let turns = async {
            let mut failures_in_row = 0;
            for iteration in 0..limits.max_iterations {
                if let (Some(gate), Some(model), true) = (gate, models.first(), iteration > 0) {
                    let estimate = estimate(&self.chain, &self.models, model, &request);
                    if let Err(refusal) = gate.admit(draft, &estimate).await.map_err(|e| e.reason)? {
                        return Err(format!(
                            "turn {} of the tool loop was not admitted: {}",
                            iteration + 1,
                            refusal.reason
                        ));
                    }
                }
                let completion = match stream.as_deref_mut() {
                    Some(stream) => {
                        let (deltas, receiver) = stream.sink();
                        let (asking, request) = (&mut *draft, &request);
                        let call = async move {
                            let completion = self.turn(asking, request, Some(&deltas), models).await;
                            drop(deltas); // ends the forwarding below
                            completion
                        };
                        tokio::join!(call, stream.forward(receiver)).0?
                    }
                    None => self.turn(draft, &request, None, models).await?,
                };
                if completion.tool_calls.is_empty() {
                    return Ok(completion.text);
                }
                let calls = completion.tool_calls;
                let sites: Vec<CallSite<'_>> = (0..calls.len())
                    .map(|index| CallSite {
                        tenant: &tenant,
                        task,
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
