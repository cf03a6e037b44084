//! Calling a chain of models: a per-call timeout, retries with exponential backoff and full
//! jitter that honour `Retry-After`, a bound on the total time, a circuit breaker per model,
//! and the next model of the chain when one is exhausted. Every call is recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use rand::Rng;

use super::{CallError, CallErrorKind, ChatProvider, ChatRequest, CircuitBreaker, Completion, DeltaSink};
use crate::contracts::{millis, ModelAttempt};
use crate::telemetry::traces;
use crate::telemetry::traces::gen_ai::{self, Operation};

/// How hard one model is tried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Calls per model, the first included.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; doubles per retry.
    pub initial_backoff: Duration,
    /// Largest backoff ceiling (a `Retry-After` may ask for longer, and is honoured).
    pub max_backoff: Duration,
    /// Bound on the whole chain: calls and waits of every model together.
    pub max_total: Duration,
    /// Bound on one call.
    pub call_timeout: Duration,
}

/// One model of a chain.
pub struct ChainModel {
    /// Name recorded in answers and audit events.
    pub name: String,
    /// OpenTelemetry's `gen_ai.provider.name` of the model (`openai`, `anthropic`,
    /// `ragstream.local`), for its spans.
    pub provider_name: &'static str,
    pub provider: Arc<dyn ChatProvider>,
    pub breaker: Arc<CircuitBreaker>,
}

/// A successful call.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    pub completion: Completion,
    /// The model that answered.
    pub model: String,
    /// Why the models before it did not (none for the first model).
    pub fallback_reason: Option<String>,
}

/// What came of a chain call, and every call it made.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub result: Result<Answered, CallError>,
    pub attempts: Vec<ModelAttempt>,
}

/// Models in order of preference.
pub struct ModelChain {
    models: Vec<ChainModel>,
    retry: RetryPolicy,
}

impl ModelChain {
    pub fn new(models: Vec<ChainModel>, retry: RetryPolicy) -> Self {
        Self { models, retry }
    }

    /// Tokens `text` takes for the model of the chain that needs the most: a prompt trimmed
    /// to that fits whichever model answers. Models whose tokenizer is unknown here count by
    /// [`estimate_tokens`](super::estimate_tokens).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.models
            .iter()
            .map(|model| {
                model
                    .provider
                    .count_tokens(text)
                    .unwrap_or_else(|| super::estimate_tokens(text))
            })
            .max()
            .unwrap_or_else(|| super::estimate_tokens(text))
    }

    /// Tokens `text` takes for the model named `name` (its tokenizer, else the estimate).
    pub fn count_tokens_for(&self, name: &str, text: &str) -> usize {
        self.models
            .iter()
            .find(|model| model.name == name)
            .and_then(|model| model.provider.count_tokens(text))
            .unwrap_or_else(|| super::estimate_tokens(text))
    }

    /// Names of the models, in order.
    pub fn model_names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }

    /// Asks the models in order until one answers. A rejected request (400, 401, 403…) fails
    /// at once: the next model would most likely reject the same request, and a configuration
    /// error should be seen, not papered over.
    pub async fn complete(&self, request: &ChatRequest) -> CallOutcome {
        self.complete_streaming(request, None).await
    }

    /// [`complete`](Self::complete), streaming each attempt's text to `deltas` (each attempt
    /// announced first: what an earlier attempt streamed is void).
    pub async fn complete_streaming(&self, request: &ChatRequest, deltas: Option<&DeltaSink>) -> CallOutcome {
        let all: Vec<&str> = self.model_names();
        self.complete_among(request, deltas, &all).await
    }

    /// Like [`complete_streaming`](Self::complete_streaming), asking only the models named in
    /// `names`, in that order (a tier, or what a budget still allows).
    pub async fn complete_among(
        &self,
        request: &ChatRequest,
        deltas: Option<&DeltaSink>,
        names: &[&str],
    ) -> CallOutcome {
        let deadline = Instant::now() + self.retry.max_total;
        let mut attempts = Vec::new();
        let mut passed_over = Vec::new();
        let mut last_error = CallError::new(CallErrorKind::Local, "no model configured");
        let chosen = names
            .iter()
            .filter_map(|name| self.models.iter().find(|model| model.name == *name));
        for model in chosen {
            match self.try_model(model, request, deltas, deadline, &mut attempts).await {
                Ok(completion) => {
                    return CallOutcome {
                        result: Ok(Answered {
                            completion,
                            model: model.name.clone(),
                            fallback_reason: (!passed_over.is_empty()).then(|| passed_over.join("; ")),
                        }),
                        attempts,
                    }
                }
                Err(error) if error.kind == CallErrorKind::Rejected => {
                    return CallOutcome {
                        result: Err(error),
                        attempts,
                    }
                }
                Err(error) => {
                    passed_over.push(format!("{} failed ({})", model.name, error.kind.as_str()));
                    last_error = error;
                }
            }
        }
        CallOutcome {
            result: Err(last_error),
            attempts,
        }
    }

    async fn try_model(
        &self,
        model: &ChainModel,
        request: &ChatRequest,
        deltas: Option<&DeltaSink>,
        deadline: Instant,
        attempts: &mut Vec<ModelAttempt>,
    ) -> Result<Completion, CallError> {
        let mut waited = Duration::ZERO;
        for attempt in 1..=self.retry.max_attempts.max(1) {
            let mut record = |outcome: &str, status: Option<u16>, latency: Duration| {
                attempts.push(ModelAttempt {
                    model: model.name.clone(),
                    attempt,
                    outcome: outcome.to_owned(),
                    status,
                    waited_ms: millis(waited),
                    latency_ms: millis(latency),
                })
            };
            if !model.breaker.allow() {
                record(CallErrorKind::CircuitOpen.as_str(), None, Duration::ZERO);
                return Err(CallError::new(
                    CallErrorKind::CircuitOpen,
                    format!("circuit of {} is open after repeated failures", model.name),
                ));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let started = Instant::now();
            if let Some(deltas) = deltas {
                deltas.attempt(&model.name, attempt);
            }
            let call = async {
                match deltas.filter(|deltas| deltas.streams_text()) {
                    Some(deltas) => model.provider.stream(request, deltas).await,
                    None => model.provider.complete(request).await,
                }
            };
            let span = call_span(model, request, attempt);
            let bounded = tokio::time::timeout(remaining.min(self.retry.call_timeout), call);
            let result = match traces::within(span.clone(), bounded).await {
                Ok(result) => result,
                Err(_) => Err(CallError::new(
                    CallErrorKind::Timeout,
                    format!(
                        "no answer within {} ms",
                        remaining.min(self.retry.call_timeout).as_millis()
                    ),
                )),
            };
            finish_call_span(&span, &result);
            let latency = started.elapsed();
            let error = match result {
                Ok(completion) => {
                    model.breaker.record_success();
                    record("ok", None, latency);
                    return Ok(completion);
                }
                Err(error) => error,
            };
            record(error.kind.as_str(), error.status, latency);
            if !error.is_retryable() {
                // The service answered (a rejection) or the failure is local: it says nothing
                // about the provider being unavailable.
                if error.kind == CallErrorKind::Rejected {
                    model.breaker.record_success();
                }
                return Err(error);
            }
            // A circuit this failure opened ends the model's turn: retrying would only be
            // refused, and the failure itself says more than "circuit open".
            if model.breaker.record_failure() || attempt == self.retry.max_attempts {
                return Err(error);
            }
            let delay = self.backoff(attempt).max(error.retry_after.unwrap_or_default());
            if Instant::now() + delay >= deadline {
                // Waiting as asked would overrun the bound: give the next model the time left.
                return Err(error);
            }
            if let Some(deltas) = deltas {
                deltas.retrying(error.to_string(), delay);
            }
            tokio::time::sleep(delay).await;
            waited = delay;
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Full jitter: uniform between zero and the exponential ceiling, so retries of many
    /// questions spread out instead of arriving together.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry
            .initial_backoff
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.retry.max_backoff);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }
}

/// The span of one call to `model` (OpenTelemetry's GenAI client span: `chat {model}`).
fn call_span(model: &ChainModel, request: &ChatRequest, attempt: u32) -> opentelemetry::Context {
    let span = traces::child(SpanKind::Client, || {
        let name = format!("{} {}", Operation::Chat.name(), model.name);
        let attributes = vec![
            KeyValue::new(gen_ai::OPERATION_NAME, Operation::Chat.name()),
            KeyValue::new(gen_ai::PROVIDER_NAME, model.provider_name),
            KeyValue::new(gen_ai::REQUEST_MODEL, model.name.clone()),
            KeyValue::new("gen_ai.request.max_tokens", i64::from(request.max_output_tokens)),
            KeyValue::new("gen_ai.request.temperature", f64::from(request.temperature)),
            KeyValue::new("ragstream.model.attempt", i64::from(attempt)),
        ];
        (name, attributes)
    });
    // The prompt as sent: the question and passages already masked by `mask_pii`.
    traces::annotate_content(&span, "gen_ai.input.messages", || {
        serde_json::to_string(&request.messages).unwrap_or_default()
    });
    span
}

fn finish_call_span(span: &opentelemetry::Context, result: &Result<Completion, CallError>) {
    match result {
        Ok(completion) => {
            let usage = completion.usage;
            traces::annotate(
                span,
                KeyValue::new("gen_ai.usage.input_tokens", usage.prompt_tokens as i64),
            );
            traces::annotate(
                span,
                KeyValue::new("gen_ai.usage.output_tokens", usage.completion_tokens as i64),
            );
            if let Some(reason) = &completion.finish_reason {
                traces::annotate(
                    span,
                    KeyValue::new(
                        "gen_ai.response.finish_reasons",
                        opentelemetry::Value::Array(vec![opentelemetry::StringValue::from(reason.clone())].into()),
                    ),
                );
            }
            // The reply as written: placeholders, before `restore_pii` puts real values back.
            traces::annotate_content(span, "gen_ai.output.messages", || {
                serde_json::json!([{
                    "role": "assistant",
                    "content": completion.text,
                    "tool_calls": completion.tool_calls,
                }])
                .to_string()
            });
            traces::finish(span, Ok(()));
        }
        Err(error) => {
            if let Some(status) = error.status {
                traces::annotate(span, KeyValue::new("http.response.status_code", i64::from(status)));
            }
            traces::finish(span, Err((error.kind.as_str(), "the model call failed")));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::llm::Usage;

    /// Answers from a script of results; `Ok` texts, errors by kind.
    struct Scripted {
        script: Mutex<VecDeque<Result<&'static str, CallError>>>,
        calls: Mutex<Vec<Instant>>,
    }

    impl Scripted {
        fn new(script: Vec<Result<&'static str, CallError>>) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(script.into()),
                calls: Mutex::default(),
            })
        }
    }

    #[async_trait]
    impl ChatProvider for Scripted {
        async fn complete(&self, _request: &ChatRequest) -> Result<Completion, CallError> {
            self.calls.lock().unwrap().push(Instant::now());
            let next = self.script.lock().unwrap().pop_front().unwrap_or(Ok("default"));
            next.map(|text| Completion {
                tool_calls: Vec::new(),
                text: text.to_owned(),
                usage: Usage::default(),
                finish_reason: None,
            })
        }
    }

    fn error(kind: CallErrorKind, retry_after: Option<u64>) -> CallError {
        CallError {
            retry_after: retry_after.map(Duration::from_millis),
            ..CallError::new(kind, "scripted")
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            max_total: Duration::from_secs(5),
            call_timeout: Duration::from_secs(1),
        }
    }

    fn chain(providers: Vec<(&str, Arc<Scripted>)>, retry: RetryPolicy) -> ModelChain {
        let models = providers
            .into_iter()
            .map(|(name, provider)| ChainModel {
                name: name.to_owned(),
                provider_name: "openai",
                provider,
                breaker: Arc::new(CircuitBreaker::new(2, Duration::from_secs(60))),
            })
            .collect();
        ModelChain::new(models, retry)
    }

    fn request() -> ChatRequest {
        ChatRequest::new(Vec::new(), 1)
    }

    #[tokio::test]
    async fn retries_transient_failures_and_honours_retry_after() {
        let primary = Scripted::new(vec![Err(error(CallErrorKind::RateLimited, Some(200))), Ok("fine")]);
        let outcome = chain(vec![("a", primary.clone())], policy()).complete(&request()).await;
        let answered = outcome.result.unwrap();
        assert_eq!(
            (answered.completion.text.as_str(), answered.model.as_str()),
            ("fine", "a")
        );
        assert_eq!(answered.fallback_reason, None);
        let outcomes: Vec<_> = outcome.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["rate_limited", "ok"]);
        let calls = primary.calls.lock().unwrap();
        assert!(
            calls[1] - calls[0] >= Duration::from_millis(200),
            "Retry-After honoured"
        );
        assert_eq!(outcome.attempts[1].waited_ms, 200.0);
    }

    #[tokio::test]
    async fn a_rejection_fails_fast_without_fallback() {
        let primary = Scripted::new(vec![Err(error(CallErrorKind::Rejected, None))]);
        let fallback = Scripted::new(vec![]);
        let outcome = chain(vec![("a", primary), ("b", fallback.clone())], policy())
            .complete(&request())
            .await;
        assert_eq!(outcome.result.unwrap_err().kind, CallErrorKind::Rejected);
        assert_eq!(outcome.attempts.len(), 1);
        assert!(fallback.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn exhausted_model_falls_back_and_its_circuit_opens() {
        let primary = Scripted::new(vec![
            Err(error(CallErrorKind::Server, None)),
            Err(error(CallErrorKind::Timeout, None)),
        ]);
        let fallback = Scripted::new(vec![Ok("from b"), Ok("from b again")]);
        let chain = chain(vec![("a", primary.clone()), ("b", fallback)], policy());
        let first = chain.complete(&request()).await;
        let answered = first.result.unwrap();
        assert_eq!(answered.model, "b");
        assert_eq!(answered.fallback_reason.as_deref(), Some("a failed (timeout)"));
        // Two failures opened a's circuit: the next question skips it without calling it.
        let second = chain.complete(&request()).await;
        assert_eq!(
            second.result.unwrap().fallback_reason.as_deref(),
            Some("a failed (circuit_open)")
        );
        assert_eq!(second.attempts[0].outcome, "circuit_open");
        assert_eq!(primary.calls.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_total_bound_stops_retries() {
        let retry = RetryPolicy {
            max_attempts: 10,
            max_total: Duration::from_millis(300),
            ..policy()
        };
        let primary = Scripted::new(vec![
            Err(error(CallErrorKind::RateLimited, Some(100))),
            Err(error(CallErrorKind::RateLimited, Some(100))),
            Err(error(CallErrorKind::RateLimited, Some(100))),
            Err(error(CallErrorKind::RateLimited, Some(100))),
        ]);
        let outcome = chain(vec![("a", primary)], retry).complete(&request()).await;
        assert_eq!(outcome.result.unwrap_err().kind, CallErrorKind::RateLimited);
        // 100 ms waits in a 300 ms bound: at most three calls, not ten.
        assert!(outcome.attempts.len() <= 3, "{:?}", outcome.attempts);
    }

    /// Asks model `a` (answering "fine" in the end) with `sink` following: the events it saw.
    async fn answer_followed_by(
        model: Arc<Scripted>,
        (sink, mut receiver): (DeltaSink, tokio::sync::mpsc::UnboundedReceiver<crate::llm::StreamEvent>),
    ) -> Vec<crate::llm::StreamEvent> {
        let outcome = chain(vec![("a", model)], policy())
            .complete_streaming(&request(), Some(&sink))
            .await;
        drop(sink);
        assert_eq!(outcome.result.unwrap().completion.text, "fine");
        let mut events = Vec::new();
        while let Some(event) = receiver.recv().await {
            events.push(event);
        }
        events
    }

    #[tokio::test]
    async fn streaming_announces_every_attempt_before_its_text() {
        let primary = Scripted::new(vec![Err(error(CallErrorKind::Server, None)), Ok("fine")]);
        let events = answer_followed_by(primary, DeltaSink::channel()).await;
        use crate::llm::StreamEvent;
        let attempt = |n| StreamEvent::Attempt {
            model: "a".into(),
            attempt: n,
        };
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events[0], attempt(1));
        assert!(
            matches!(&events[1], StreamEvent::Retrying { reason, .. } if reason.starts_with("server")),
            "{events:?}"
        );
        assert_eq!(events[2..], [attempt(2), StreamEvent::Text("fine".into())]);
    }

    #[tokio::test]
    async fn an_observer_follows_attempts_without_streaming_text() {
        let events = answer_followed_by(Scripted::new(vec![Ok("fine")]), DeltaSink::observer()).await;
        assert_eq!(
            events,
            [crate::llm::StreamEvent::Attempt {
                model: "a".into(),
                attempt: 1
            }]
        );
    }
}
