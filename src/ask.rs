//! `ragstream ask`: produce one question and wait for its answer, as a service would.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

use crate::config::KafkaProperties;
use crate::contracts::{Answer, PartialAnswer, Question, QuestionOptions, StatusEvent, Step, Task, SCHEMA_VERSION};
use crate::tail::{assign_from_end, tail_config, QuestionTopics};
use crate::transport::kafka::create_producer;

/// What to ask and where: the arguments of `ragstream ask`.
#[derive(Debug, Clone, clap::Args)]
pub struct AskOptions {
    /// The question.
    pub question: String,
    /// Tenant whose documents ground the answer.
    #[arg(long)]
    pub tenant: String,
    /// Who asks (for per-user limits and the audit pseudonym).
    #[arg(long, default_value = "cli")]
    pub user: String,
    /// qa, summarize, extract or report.
    #[arg(long, default_value = "qa", value_parser = parse_task)]
    pub task: Task,
    /// Passages to retrieve (default: the retrieve stage's top_k).
    #[arg(long)]
    pub top_k: Option<u32>,
    #[command(flatten)]
    pub topics: QuestionTopics,
    /// Print the answer message as JSON instead of text (and status events as JSON lines).
    #[arg(long)]
    pub json: bool,
    /// Kafka bootstrap servers.
    #[arg(
        long = "brokers",
        env = "RAGSTREAM_BROKERS",
        default_value = "127.0.0.1:9092",
        value_parser = bootstrap_servers
    )]
    pub kafka: KafkaProperties,
    /// Seconds to wait for the answer.
    #[arg(long, default_value = "120", value_parser = seconds)]
    pub timeout: Duration,
}

fn parse_task(value: &str) -> Result<Task, String> {
    serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .map_err(|_| format!("`{value}` is not a task (qa, summarize, extract, report)"))
}

fn bootstrap_servers(value: &str) -> Result<KafkaProperties, String> {
    Ok(KafkaProperties::from([(
        "bootstrap.servers".to_owned(),
        value.to_owned(),
    )]))
}

fn seconds(value: &str) -> Result<Duration, String> {
    value
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| format!("`{value}` is not a whole number of seconds"))
}

/// A request id no other question has: time plus randomness.
fn new_request_id() -> String {
    format!(
        "ask-{}-{:08x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3f"),
        rand::random::<u32>()
    )
}

/// A consumer positioned at the current end of every partition of `topics`, so it sees the
/// answer to a question produced afterwards and little before it.
fn answers_consumer(kafka: &KafkaProperties, topics: &[String]) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = tail_config(kafka, "ask")
        .create()
        .context("cannot create a Kafka consumer")?;
    assign_from_end(&consumer, topics)?;
    Ok(consumer)
}

/// An answer, and whether its text was printed already while it was written.
#[derive(Debug, Clone)]
pub struct Asked {
    pub answer: Answer,
    pub streamed: bool,
}

/// Produces the question and waits for the answer with its request id.
pub async fn ask(options: &AskOptions) -> anyhow::Result<Asked> {
    let request_id = new_request_id();
    let question = Question {
        schema_version: SCHEMA_VERSION,
        request_id: request_id.clone(),
        tenant: options.tenant.clone(),
        user: options.user.clone(),
        question: options.question.clone(),
        task: options.task,
        options: options.top_k.map(|top_k| QuestionOptions {
            top_k: Some(top_k),
            ..Default::default()
        }),
        metadata: Default::default(),
    };
    let consumer = answers_consumer(&options.kafka, &options.topics.followed())?;
    let producer =
        create_producer(&options.kafka, &KafkaProperties::new()).context("cannot create a Kafka producer")?;
    let payload = serde_json::to_vec(&question)?;
    producer
        .send(
            FutureRecord::to(&options.topics.questions_topic)
                .key(&request_id)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| {
            anyhow!(
                "cannot produce the question to `{}`: {error}",
                options.topics.questions_topic
            )
        })?;
    let topics = options.topics.clone();
    let status = StatusPrinter::new(options.json);
    let timeout = options.timeout;
    tokio::task::spawn_blocking(move || wait_for_answer(&consumer, &request_id, &topics, status, timeout)).await?
}

/// Prints partial answers as they come: the text of the current attempt, and a note when a
/// failed attempt's text is superseded.
#[derive(Default)]
struct PartialPrinter {
    attempt: Option<(String, u32)>,
    printed: bool,
    /// The current attempt's text so far.
    text: String,
}

impl PartialPrinter {
    fn print(&mut self, partial: PartialAnswer) {
        use std::io::Write as _;
        let attempt = (partial.model.clone(), partial.attempt);
        if self.attempt.as_ref() != Some(&attempt) {
            if self.printed {
                println!(
                    "\n[that attempt failed; {} attempt {} starts over]",
                    partial.model, partial.attempt
                );
            }
            self.attempt = Some(attempt);
            self.text.clear();
        }
        if let Some(tool) = &partial.calling {
            // Not part of the answer's text: a note of what the answer waits for.
            println!("{}[calling {tool}…]", if self.text.is_empty() { "" } else { "\n" });
            self.printed = true;
        }
        self.text.push_str(&partial.delta);
        print!("{}", partial.delta);
        self.printed |= !partial.delta.is_empty();
        let _ = std::io::stdout().flush();
    }
}

/// Shows status events: one line rewritten in place on a terminal, JSON lines with `--json`,
/// nothing when stderr is not a terminal (a script reads the answer, not the progress).
struct StatusPrinter {
    json: bool,
    live: bool,
    /// A progress line is on screen and must be cleared before other output.
    shown: bool,
}

impl StatusPrinter {
    fn new(json: bool) -> Self {
        use std::io::IsTerminal as _;
        Self {
            json,
            live: !json && std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn print(&mut self, event: &StatusEvent, raw: &[u8]) {
        use std::io::Write as _;
        if self.json {
            println!("{}", String::from_utf8_lossy(raw));
        } else if self.live {
            eprint!(
                "\r\x1b[2K[{:>6.1} s] {}",
                event.elapsed_ms / 1000.0,
                describe(&event.step)
            );
            let _ = std::io::stderr().flush();
            self.shown = true;
        }
    }

    /// Clears the progress line and shows no more.
    fn stop_live(&mut self) {
        self.clear();
        self.live = false;
    }

    /// Clears the progress line before the answer is printed.
    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }
}

/// A step as a person reads it.
pub fn describe(step: &Step) -> String {
    match step {
        Step::Received => "received".to_owned(),
        Step::Queued { wait_ms } => format!("queued behind a limit for {:.1} s", wait_ms / 1000.0),
        Step::Retrieving => "searching the documents".to_owned(),
        Step::Generating { model, attempt } => format!("asking {model} (attempt {attempt})"),
        Step::Retrying {
            model,
            reason,
            backoff_ms,
            ..
        } => format!("{model} failed ({reason}); retrying in {:.1} s", backoff_ms / 1000.0),
        Step::CallingTool { tool } => format!("calling {tool}"),
        Step::Answered { status } => format!("answered ({})", status.as_str()),
        Step::Failed { status, .. } | Step::Refused { status, .. } => status.as_str().replace('_', " "),
    }
}

fn wait_for_answer(
    consumer: &BaseConsumer,
    request_id: &str,
    topics: &QuestionTopics,
    mut status: StatusPrinter,
    timeout: Duration,
) -> anyhow::Result<Asked> {
    let topic = topics.answers_topic.as_str();
    let deadline = std::time::Instant::now() + timeout;
    let mut partials = PartialPrinter::default();
    while std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.with_context(|| format!("cannot read `{topic}`"))?;
        if message.key() != Some(request_id.as_bytes()) {
            continue;
        }
        let payload = message.payload().unwrap_or_default();
        if Some(message.topic()) == topics.status_topic.as_deref() {
            // Progress only: an unreadable event is skipped.
            if let Ok(event) = serde_json::from_slice::<StatusEvent>(payload) {
                status.print(&event, payload);
            }
            continue;
        }
        if message.topic() != topic {
            // From the first partial on, the text shows the progress: a live line would
            // overwrite it.
            status.stop_live();
            // A partial answer: progress only, so an unreadable one is skipped.
            if let Ok(partial) = serde_json::from_slice::<PartialAnswer>(payload) {
                partials.print(partial);
            }
            continue;
        }
        status.clear();
        if partials.printed {
            println!("\n");
        }
        let answer: Answer =
            serde_json::from_slice(payload).with_context(|| format!("the answer on `{topic}` is not readable"))?;
        // A streamed reply that was not used (not an answer, so the passages answered) is not
        // the answer on screen: the answer is printed after it.
        let streamed = partials.printed && answer.answer.as_deref().map(str::trim) == Some(partials.text.trim());
        if partials.printed && !streamed {
            println!("[that reply was not used]\n");
        }
        return Ok(Asked { answer, streamed });
    }
    bail!(
        "no answer for request {request_id} on `{topic}` within {} s (is `ragstream run` running with an answering pipeline?)",
        timeout.as_secs()
    )
}

/// The answer as a person reads it: text, then the sources it cites.
pub fn render(answer: &Answer) -> String {
    let mut out = String::new();
    match &answer.answer {
        Some(text) => out.push_str(text.trim()),
        None => out.push_str(&format!(
            "[{}] {}",
            answer.status.as_str(),
            answer.provenance.reason.as_deref().unwrap_or("no answer")
        )),
    }
    out.push('\n');
    out.push_str(&render_footer(answer));
    out
}

/// The sources an answer cites and its status line (what follows a streamed answer's text).
pub fn render_footer(answer: &Answer) -> String {
    let mut out = String::new();
    if !answer.citations.is_empty() {
        out.push_str("\nSources:\n");
        for citation in &answer.citations {
            out.push_str(&format!(
                "  [{}] {}{} (chunk {}, similarity {:.2})\n",
                citation.index,
                citation.doc_id,
                citation.title.as_deref().map(|t| format!(" — {t}")).unwrap_or_default(),
                citation.chunk_id,
                citation.score
            ));
        }
    }
    let model = answer.provenance.model.as_deref().unwrap_or("none");
    out.push_str(&format!(
        "\nstatus {} · model {model}{} · {} + {} tokens · ${:.6} · {:.0} ms\n",
        answer.status.as_str(),
        answer
            .provenance
            .fallback_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        answer.provenance.usage.prompt_tokens,
        answer.provenance.usage.completion_tokens,
        answer.provenance.cost_usd,
        answer.latency_ms
    ));
    out
}
