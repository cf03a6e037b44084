//! `ragstream serve`: questions over HTTP for browsers and services that do not speak Kafka.
//!
//! - `POST /v1/questions` produces a question for the key's tenant and returns its id (202).
//! - `GET /v1/questions/{id}` returns its latest status and the answer once there is one.
//! - `GET /v1/questions/{id}/events` streams status steps, partial text and the answer as
//!   Server-Sent Events (`event: status|partial|answer`), from the first step on, and ends with
//!   the answer.
//!
//! Every call carries `Authorization: Bearer <key>`; a key acts for one tenant and sees only that
//! tenant's requests (another tenant's id is 404, as one that does not exist). The server follows
//! the answers, status and partials topics from their end when it starts, so it knows requests
//! asked since then, through it or any other producer; replicas each follow every message.

mod keys;
mod tracker;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

pub use keys::{key_hash, ApiKeys, KeysError};
use tracker::{Tracker, Update};

use crate::config::KafkaProperties;
use crate::contracts::{Answer, Contract, PartialAnswer, Question, QuestionOptions, StatusEvent, Task, SCHEMA_VERSION};
use crate::secrets::VaultKey;
use crate::tail::{assign_from_end, tail_config, QuestionTopics};
use crate::transport::kafka::create_producer;
use serde_inline_default::serde_inline_default;

/// The arguments of `ragstream serve`.
#[serde_inline_default]
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// Address to listen on.
    #[arg(long, env = "RAGSTREAM_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// API keys file: `keys: [{tenant: acme, sha256: <hex SHA-256 of the key>}]`.
    #[arg(long, env = "RAGSTREAM_API_KEYS")]
    pub keys: Option<PathBuf>,
    /// Vault address of the keys document (same format as the file), with `--keys-vault-path`;
    /// the token comes from `VAULT_TOKEN`.
    #[arg(long, requires = "keys_vault_path")]
    pub keys_vault_address: Option<String>,
    /// Path of the keys secret under the KV v2 mount `secret`; its field `keys` holds the document.
    #[arg(long, requires = "keys_vault_address")]
    pub keys_vault_path: Option<String>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "RAGSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[command(flatten)]
    pub topics: QuestionTopics,
    /// How long a question may wait for the broker before the request gets 503.
    #[arg(long, default_value = "10")]
    pub produce_timeout_s: u64,
    /// Requests remembered at most; the oldest are forgotten first.
    #[arg(long, default_value = "10000")]
    pub max_requests: usize,
}

impl ServeOptions {
    async fn api_keys(&self) -> anyhow::Result<ApiKeys> {
        let mut keys = ApiKeys::default();
        if let Some(path) = &self.keys {
            keys.extend(ApiKeys::from_file(path)?);
        }
        if let (Some(address), Some(path)) = (&self.keys_vault_address, &self.keys_vault_path) {
            let vault = VaultKey {
                address: address.clone(),
                mount: "secret".to_owned(),
                path: path.clone(),
                field: "keys".to_owned(),
                token_env: "VAULT_TOKEN".to_owned(),
                token_file: None,
            };
            keys.extend(ApiKeys::from_vault(&vault).await?);
        }
        if keys.is_empty() {
            return Err(KeysError::None.into());
        }
        Ok(keys)
    }

    fn kafka(&self) -> KafkaProperties {
        KafkaProperties::from([("bootstrap.servers".to_owned(), self.brokers.clone())])
    }
}

struct Api {
    keys: ApiKeys,
    producer: FutureProducer,
    questions_topic: String,
    produce_timeout: Duration,
    tracker: Tracker,
    /// The pipeline's outputs are being followed (`/readyz`).
    following: AtomicBool,
}

/// Serves until the process is stopped.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let keys = options.api_keys().await?;
    let produce_timeout = Duration::from_secs(options.produce_timeout_s.max(1));
    let producer = create_producer(
        &options.kafka(),
        &KafkaProperties::from([("message.timeout.ms".to_owned(), produce_timeout.as_millis().to_string())]),
    )
    .context("cannot create a Kafka producer")?;
    let api = Arc::new(Api {
        keys,
        producer,
        questions_topic: options.topics.questions_topic.clone(),
        produce_timeout,
        tracker: Tracker::new(options.max_requests),
        following: AtomicBool::new(false),
    });
    tokio::spawn(follow(
        api.clone(),
        options.kafka(),
        options.topics.followed(),
        options.topics.answers_topic.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    tracing::info!(listen = %options.listen, "serving questions over HTTP");
    axum::serve(listener, router(api)).await?;
    Ok(())
}

fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/v1/questions", post(ask))
        .route("/v1/questions/{id}", get(latest))
        .route("/v1/questions/{id}/events", get(events))
        .with_state(api)
}

/// Reads the pipeline's outputs into the tracker, starting again when the broker is away.
async fn follow(api: Arc<Api>, kafka: KafkaProperties, topics: Vec<String>, answers_topic: String) {
    loop {
        match start_following(&kafka, &topics).await {
            Ok(consumer) => {
                api.following.store(true, Ordering::Release);
                read_updates(&api, &consumer, &answers_topic).await
            }
            Err(error) => {
                tracing::warn!(%error, "cannot follow the answers yet; trying again in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn start_following(kafka: &KafkaProperties, topics: &[String]) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = tail_config(kafka, "serve").create()?;
    let topics = topics.to_vec();
    // librdkafka's metadata and offset calls block.
    tokio::task::spawn_blocking(move || assign_from_end(&consumer, &topics).map(|()| consumer))
        .await?
        .map_err(Into::into)
}

async fn read_updates(api: &Api, consumer: &StreamConsumer, answers_topic: &str) {
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "cannot read the pipeline's outputs");
                continue;
            }
        };
        let payload = message.payload().unwrap_or_default();
        let update = if message.topic() == answers_topic {
            serde_json::from_slice::<Answer>(payload).map(|a| Update::Answer(Box::new(a)))
        } else {
            // Status events and partial answers share no required field set: try both.
            serde_json::from_slice::<StatusEvent>(payload)
                .map(Update::Status)
                .or_else(|_| serde_json::from_slice::<PartialAnswer>(payload).map(Update::Partial))
        };
        match update {
            Ok(update) => api.tracker.apply(update),
            Err(error) => tracing::warn!(topic = message.topic(), offset = message.offset(), %error,
                "a message the API cannot read was passed over"),
        }
    }
}

/// Ready once the answers are followed: a question asked before could not be followed.
async fn ready(State(api): State<Arc<Api>>) -> StatusCode {
    if api.following.load(Ordering::Acquire) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// An error as the API returns it: a status and `{"error": reason}`.
struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    fn not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no question `{id}` for this key"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.reason }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl Api {
    /// The tenant the request's key acts for.
    fn tenant(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "an API key is needed: Authorization: Bearer <key>",
                )
            })?;
        self.keys
            .tenant_of(key.trim())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "the API key is not known"))
    }
}

/// The body of `POST /v1/questions`.
#[serde_inline_default]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AskBody {
    question: String,
    /// Who asks (per-user limits and the audit pseudonym).
    #[serde_inline_default("api".to_owned())]
    user: String,
    #[serde_inline_default(Task::Qa)]
    task: Task,
    /// The caller's own id, so that a retried POST is the same question (answered once).
    request_id: Option<String>,
    options: Option<QuestionOptions>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

/// A request id no other question has: time plus randomness.
fn new_request_id() -> String {
    format!(
        "api-{}-{:016x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3f"),
        rand::random::<u64>()
    )
}

async fn ask(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let tenant = api.tenant(&headers)?;
    let deserializer = &mut serde_json::Deserializer::from_slice(&body);
    let body: AskBody = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let at = error.path().to_string();
        let reason = error.into_inner();
        let reason = if at == "." {
            reason.to_string()
        } else {
            format!("{at}: {reason}")
        };
        ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not a question: {reason}"))
    })?;
    let request_id = body.request_id.unwrap_or_else(new_request_id);
    let question = Question {
        schema_version: SCHEMA_VERSION,
        request_id: request_id.clone(),
        tenant: tenant.clone(),
        user: body.user,
        question: body.question,
        task: body.task,
        options: body.options,
        metadata: body.metadata,
    };
    let value =
        serde_json::to_value(&question).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Contract::questions()
        .validate(&value)
        .map_err(|reason| ApiError::new(StatusCode::BAD_REQUEST, reason))?;
    // Followed before it is produced, so no step can be missed.
    api.tracker.expect(&tenant, &request_id);
    let payload = value.to_string();
    let record = FutureRecord::to(&api.questions_topic)
        .key(&request_id)
        .payload(&payload);
    if let Err((error, _)) = api.producer.send(record, api.produce_timeout).await {
        api.tracker.forget_if_silent(&tenant, &request_id);
        tracing::warn!(%error, %request_id, "a question could not be produced");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the question could not be queued within {} s (the broker is unavailable); send it again",
                api.produce_timeout.as_secs()
            ),
        ));
    }
    let links = json!({
        "request_id": request_id,
        "status_url": format!("/v1/questions/{request_id}"),
        "events_url": format!("/v1/questions/{request_id}/events"),
    });
    Ok((StatusCode::ACCEPTED, Json(links)).into_response())
}

async fn latest(State(api): State<Arc<Api>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let tenant = api.tenant(&headers)?;
    let snapshot = api
        .tracker
        .snapshot(&tenant, &id)
        .ok_or_else(|| ApiError::not_found(&id))?;
    Ok(Json(snapshot).into_response())
}

async fn events(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tenant = api.tenant(&headers)?;
    let following = api
        .tracker
        .follow(&tenant, &id)
        .ok_or_else(|| ApiError::not_found(&id))?;
    let past: std::collections::VecDeque<Update> = following.so_far.into();
    let state = (past, following.next, following.answered, false);
    let stream = futures::stream::unfold(state, |(mut past, mut next, answered, done)| async move {
        if done {
            return None;
        }
        let update = match past.pop_front() {
            Some(update) => update,
            // Everything up to the answer was in the past: nothing more comes.
            None if answered => return None,
            None => loop {
                match next.recv().await {
                    Ok(update) => break update,
                    // A follower that fell behind misses partial text, not the answer.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            },
        };
        let last = matches!(update, Update::Answer(_));
        let event = Event::default()
            .event(update.kind())
            .json_data(&update)
            .unwrap_or_else(|_| Event::default().event("error").data("unserializable update"));
        Some((Ok(event), (past, next, answered, last)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
