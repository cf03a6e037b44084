//! A tool on the bus: each call is produced to the tool's request topic, keyed by a correlation
//! id, and its reply is read from the reply topic by one listener per reply topic, which hands
//! every reply to the call waiting for its correlation id.
//!
//! The listener reads every partition of the reply topic from the end it found at start-up (no
//! consumer group: each replica sees all replies and takes its own), so a reply can never be
//! missed between producing a call and starting to read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::config::KafkaToolConfig;
use super::http::ToolError;
use crate::error::StageError;
use crate::tail::{assign_from_end, tail_config};

/// How long start-up waits for the broker to describe a topic.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The header (and JSON field) carrying a call's correlation id.
const CORRELATION_ID: &str = "correlation_id";

/// What a tool replied: its result, or why it has none.
#[derive(Debug, Clone, Deserialize)]
struct Reply {
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

/// Calls waiting for their replies, by correlation id (a question redelivered to this process
/// while its first delivery still waits makes two waiters for one id).
type Waiting = Arc<Mutex<HashMap<String, Vec<oneshot::Sender<Reply>>>>>;

/// Reads one reply topic and hands each reply to the calls waiting for it.
pub struct ReplyListener {
    waiting: Waiting,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReplyListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Kafka clients the tools on the bus share: one producer, one listener per reply topic.
pub struct KafkaTools {
    producer: FutureProducer,
    listeners: BTreeMap<String, ReplyListener>,
}

impl KafkaTools {
    /// Connects to the bus with the topology's shared client properties, checks that every
    /// tool's topics exist and starts reading the reply topics.
    pub async fn connect<'a>(
        properties: &BTreeMap<String, String>,
        tools: impl IntoIterator<Item = &'a KafkaToolConfig>,
    ) -> Result<Self, StageError> {
        let client = |overrides: &[(&str, &str)]| {
            let mut config = ClientConfig::new();
            for (key, value) in properties {
                config.set(key, value);
            }
            for (key, value) in overrides {
                config.set(*key, *value);
            }
            config
        };
        let producer: FutureProducer = client(&[("enable.idempotence", "true")])
            .create()
            .map_err(|error| StageError::external(format!("tools: cannot create a Kafka producer: {error}")))?;
        let mut listeners = BTreeMap::new();
        for tool in tools {
            check_topic(&producer, &tool.request_topic).await?;
            if listeners.contains_key(&tool.reply_topic) {
                continue;
            }
            let consumer: StreamConsumer = tail_config(properties, "tool-replies")
                .create()
                .map_err(|error| StageError::external(format!("tools: cannot create a Kafka consumer: {error}")))?;
            let listener = ReplyListener::start(consumer, &tool.reply_topic).await?;
            listeners.insert(tool.reply_topic.clone(), listener);
        }
        Ok(Self { producer, listeners })
    }

    /// Produces the call and waits for its reply, at most `config.timeout_ms`.
    pub async fn call(
        &self,
        config: &KafkaToolConfig,
        call: &KafkaCall<'_>,
        arguments: &Value,
    ) -> Result<String, ToolError> {
        let listener = self
            .listeners
            .get(&config.reply_topic)
            .ok_or_else(|| ToolError::Failed(format!("no listener on `{}`", config.reply_topic)))?;
        let timeout = Duration::from_millis(config.timeout_ms);
        // Waiting before producing: a fast tool's reply finds its waiter.
        let reply = listener.wait_for(call.correlation_id);
        let body = json!({
            "correlation_id": call.correlation_id,
            "reply_topic": config.reply_topic,
            "tool": call.tool,
            "arguments": arguments,
            "tenant": call.tenant,
            "request_id": call.request_id,
        })
        .to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: CORRELATION_ID,
                value: Some(call.correlation_id),
            })
            .insert(Header {
                key: "reply_topic",
                value: Some(config.reply_topic.as_str()),
            });
        let record = FutureRecord::to(&config.request_topic)
            .key(call.correlation_id)
            .payload(&body)
            .headers(headers);
        let answered = async {
            self.producer.send(record, timeout).await.map_err(|(error, _)| {
                ToolError::Failed(format!(
                    "cannot produce the call to `{}`: {error}",
                    config.request_topic
                ))
            })?;
            reply
                .await
                .map_err(|_| ToolError::Failed("the reply listener stopped".to_owned()))
        };
        let reply = match tokio::time::timeout(timeout, answered).await {
            Ok(reply) => reply,
            Err(_) => Err(ToolError::Timeout),
        };
        listener.forget(call.correlation_id);
        let reply = reply?;
        match (reply.result, reply.error) {
            (_, Some(error)) => Err(ToolError::Failed(format!("the tool replied with an error: {error}"))),
            (Some(Value::String(text)), None) => Ok(text),
            (Some(result), None) => Ok(result.to_string()),
            (None, None) => Err(ToolError::Failed(
                "the tool's reply has neither `result` nor `error`".to_owned(),
            )),
        }
    }
}

/// One call as it goes on the bus.
pub struct KafkaCall<'a> {
    pub correlation_id: &'a str,
    pub tool: &'a str,
    pub tenant: &'a str,
    pub request_id: &'a str,
}

impl ReplyListener {
    /// Assigns every partition of `topic` from its current end and starts reading.
    async fn start(consumer: StreamConsumer, topic: &str) -> Result<Self, StageError> {
        let consumer = Arc::new(consumer);
        let reader = consumer.clone();
        let name = topic.to_owned();
        // librdkafka's metadata and offset calls block.
        tokio::task::spawn_blocking(move || assign_from_end(&*reader, &[&name]))
            .await
            .map_err(|error| StageError::internal(format!("tools: assigning `{topic}` panicked: {error}")))?
            .map_err(|error| StageError::external(format!("tools: reply topic: {error}")))?;
        let waiting = Waiting::default();
        let task = tokio::spawn(listen(consumer, topic.to_owned(), waiting.clone()));
        Ok(Self { waiting, task })
    }

    fn wait_for(&self, correlation_id: &str) -> oneshot::Receiver<Reply> {
        let (sender, receiver) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(correlation_id.to_owned())
            .or_default()
            .push(sender);
        receiver
    }

    /// Drops the waiters of `correlation_id` whose calls ended (answered or given up).
    fn forget(&self, correlation_id: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(senders) = waiting.get_mut(correlation_id) {
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                waiting.remove(correlation_id);
            }
        }
    }
}

/// Fails start-up when `topic` does not exist: a call to it could only time out.
async fn check_topic(producer: &FutureProducer, topic: &str) -> Result<(), StageError> {
    let producer = producer.clone();
    let name = topic.to_owned();
    let exists = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&name), METADATA_TIMEOUT)
            .map(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
            })
    })
    .await
    .map_err(|error| StageError::internal(format!("tools: reading metadata panicked: {error}")))?
    .map_err(|error| StageError::external(format!("tools: cannot read the metadata of `{topic}`: {error}")))?;
    if exists {
        Ok(())
    } else {
        Err(StageError::external(format!(
            "tools: the request topic `{topic}` does not exist (create it, e.g. with `ragstream topics create`)"
        )))
    }
}

async fn listen(consumer: Arc<StreamConsumer>, topic: String, waiting: Waiting) {
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%topic, %error, "cannot read tool replies");
                continue;
            }
        };
        let reply: Reply = match message.payload().map(serde_json::from_slice) {
            Some(Ok(reply)) => reply,
            _ => {
                tracing::warn!(%topic, offset = message.offset(), "a tool reply that is not JSON was passed over");
                continue;
            }
        };
        let header = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == CORRELATION_ID)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok().map(str::to_owned))
        });
        let Some(correlation_id) = header.or_else(|| reply.correlation_id.clone()) else {
            tracing::warn!(%topic, offset = message.offset(), "a tool reply without a correlation id was passed over");
            continue;
        };
        let senders = waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&correlation_id);
        // Nobody waiting: another replica's call, or one that already timed out.
        for sender in senders.into_iter().flatten() {
            let _ = sender.send(reply.clone());
        }
    }
}
