//! The `ragstream` command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ragstream::analytics::cli::{sql, SqlOptions};
use ragstream::ask::{ask, render, render_footer, AskOptions, Asked};
use ragstream::config::{load_file, KafkaProperties, Topology};
use ragstream::contracts::AnswerStatus;
use ragstream::engine::{run_topology, Shutdown};
use ragstream::ingest::{ingest, IngestOptions};
use ragstream::pseudonym;
use ragstream::serve::ServeOptions;
use ragstream::telemetry::{init_logging, traces, LogFormat, Verbosity};
use ragstream::transport::kafka::create_topics;

/// Event-driven stream processor that brings LLMs into Kafka-based systems.
#[derive(Debug, Parser)]
#[command(name = "ragstream", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "RAGSTREAM_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipelines of a topology until SIGTERM/SIGINT.
    Run {
        /// Topology file (YAML, `version: 1`).
        #[arg(long, short)]
        topology: PathBuf,
    },
    /// Check a topology file and report every error in it.
    Validate {
        /// Topology file to check.
        topology: PathBuf,
    },
    /// Load files and folders (.md, .txt, .html) onto the documents topic, one document per file.
    Ingest {
        /// Files and folders to load; folders are walked recursively. A file's document id is its
        /// path as given here, its version its modification time (so unchanged files are skipped).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Tenant that owns the documents.
        #[arg(long)]
        tenant: String,
        /// Topic to produce to.
        #[arg(long, default_value = "documents")]
        topic: String,
        /// Kafka bootstrap servers.
        #[arg(long, env = "RAGSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Extra librdkafka producer property, `key=value` (repeatable), e.g. `-X security.protocol=ssl`.
        #[arg(short = 'X', value_name = "KEY=VALUE")]
        kafka_property: Vec<String>,
        /// Version for every document, instead of each file's modification time in milliseconds.
        #[arg(long = "doc-version")]
        doc_version: Option<u64>,
    },
    /// Search the chunk index of one tenant (what retrieval will see), printing the best chunks.
    Search {
        /// The query text.
        query: String,
        /// Tenant whose chunks to search; other tenants' chunks are never returned.
        #[arg(long)]
        tenant: String,
        /// LanceDB database: directory or object-store URI (the index stage's `uri`).
        #[arg(long, env = "RAGSTREAM_LANCEDB", default_value = "data/lancedb")]
        index: String,
        /// Chunks table name (the index stage's `table`).
        #[arg(long, default_value = "chunks")]
        table: String,
        /// Embedding model directory; must be the model that embedded the chunks.
        #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
        model_dir: PathBuf,
        /// How many chunks to show.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Combine vector and full-text (BM25) search.
        #[arg(long)]
        hybrid: bool,
    },
    /// Ask a question through the running pipelines: produce it, wait for its answer, print it
    /// with its sources. Exits 0 for `ok`, `extractive` and `no_context`, 1 otherwise.
    Ask {
        #[command(flatten)]
        options: AskOptions,
    },
    /// Serve questions over HTTP: POST a question, read its status and answer, or follow it as
    /// Server-Sent Events; API keys per tenant (`--keys`).
    Serve {
        #[command(flatten)]
        options: ServeOptions,
    },
    /// SQL over the audit table that the `audit_table` stage writes: a query, or a built-in
    /// report (`--report spend-by-tenant-model`, `cache-hit-rate`, `no-context-questions`,
    /// `slowest-stages`), as a table, CSV or JSON lines.
    Sql {
        #[command(flatten)]
        options: SqlOptions,
    },
    /// Manage the topics a topology uses.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Try the personal-data detector of `mask_pii` (default settings) on your own text.
    Pii {
        #[command(subcommand)]
        command: PiiCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PiiCommand {
    /// Print the text with its personal data replaced by placeholders, as the model would see it.
    Mask {
        /// The text; without it, standard input is masked.
        text: Option<String>,
    },
    /// Score the detector on a labeled set (JSON lines: `{"text", "entities": [{"type",
    /// "value", "start"?, "end"?}]}`): precision, recall and F2 per kind, values left unmasked,
    /// texts without personal data that were changed, throughput.
    Evaluate {
        /// Labeled set (JSON lines).
        file: PathBuf,
        /// Also list every miss and false detection.
        #[arg(long)]
        mistakes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create every source, sink and dead-letter topic of a topology that does not exist yet.
    Create {
        /// Topology file whose topics to create.
        #[arg(long, short)]
        topology: PathBuf,
        /// Partitions per topic (default: the topology's `topic_defaults.partitions`).
        #[arg(long)]
        partitions: Option<i32>,
    },
}

/// Exit code for an invalid topology or command line, as opposed to a runtime failure (1).
const EXIT_INVALID_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    ragstream::embed::tune_allocator();
    let verbosity = match cli.command {
        Command::Run { .. } => Verbosity::Service,
        _ => Verbosity::Command,
    };
    init_logging(cli.log_format, verbosity);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(dispatch(cli.command));
    // Dropping the runtime would wait for every blocking task, and a librdkafka call stuck on a
    // broker that went away (an offset commit) would then hold the exit forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Validate { topology } => match load_file(&topology) {
            Ok(parsed) => {
                println!("{}: ok ({} pipelines)", topology.display(), parsed.pipelines.len());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::from(EXIT_INVALID_INPUT)
            }
        },
        Command::Run { topology } => {
            let Some(parsed) = load_or_report(&topology) else {
                return ExitCode::from(EXIT_INVALID_INPUT);
            };
            // Before any message is read: every pseudonym of this process is made with these keys.
            match parsed.pseudonyms.load().await {
                Ok(keys) => {
                    pseudonym::install(keys);
                }
                Err(error) => {
                    eprintln!("error: {}", error.reason);
                    return ExitCode::FAILURE;
                }
            }
            let shutdown = Shutdown::new();
            if let Err(error) = shutdown.listen_for_signals() {
                eprintln!("error: cannot install signal handlers: {error}");
                return ExitCode::FAILURE;
            }
            let exported_traces = match parsed.telemetry.traces.as_ref().map(traces::install).transpose() {
                Ok(exported) => exported,
                Err(reason) => {
                    eprintln!("error: {reason}");
                    return ExitCode::FAILURE;
                }
            };
            let ran = run_topology(parsed, shutdown).await;
            if let Some(exported) = exported_traces {
                exported.shutdown().await;
            }
            match ran {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ingest {
            paths,
            tenant,
            topic,
            brokers,
            kafka_property,
            doc_version,
        } => {
            let mut kafka = KafkaProperties::from([("bootstrap.servers".to_owned(), brokers)]);
            for property in kafka_property {
                let Some((key, value)) = property.split_once('=') else {
                    eprintln!("error: -X {property}: expected KEY=VALUE");
                    return ExitCode::from(EXIT_INVALID_INPUT);
                };
                kafka.insert(key.trim().to_owned(), value.trim().to_owned());
            }
            let options = IngestOptions {
                paths,
                tenant,
                topic,
                kafka,
                version: doc_version,
                progress: std::io::stderr().is_terminal(),
            };
            run_ingest(&options).await
        }
        Command::Search {
            query,
            tenant,
            index,
            table,
            model_dir,
            top_k,
            hybrid,
        } => match search(&query, &tenant, &index, &table, &model_dir, top_k, hybrid).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Ask { options } => {
            match ask(&options).await {
                Ok(Asked { answer, streamed }) => {
                    if options.json {
                        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
                    } else if streamed && answer.answer.is_some() {
                        // The text is on screen already.
                        print!("{}", render_footer(&answer));
                    } else {
                        print!("{}", render(&answer));
                    }
                    match answer.status {
                        AnswerStatus::Ok | AnswerStatus::Extractive | AnswerStatus::NoContext => ExitCode::SUCCESS,
                        _ => ExitCode::FAILURE,
                    }
                }
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Sql { options } => match sql(&options).await {
            Ok(printed) => {
                print!("{printed}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { options } => match ragstream::serve::serve(options).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Pii { command } => run_pii(command),
        Command::Topics {
            command: TopicsCommand::Create { topology, partitions },
        } => {
            let Some(parsed) = load_or_report(&topology) else {
                return ExitCode::from(EXIT_INVALID_INPUT);
            };
            match create_topology_topics(&parsed, partitions).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_pii(command: PiiCommand) -> ExitCode {
    use ragstream::pii::{evaluation, Detector, PiiScope};
    let detector = std::sync::Arc::new(Detector::default());
    match command {
        PiiCommand::Mask { text } => {
            let text = match text {
                Some(text) => text,
                None => match std::io::read_to_string(std::io::stdin()) {
                    Ok(text) => text,
                    Err(error) => {
                        eprintln!("error: cannot read standard input: {error}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            let (masked, counts) = PiiScope::new(detector).mask(&text);
            println!("{masked}");
            let counts: Vec<String> = counts.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
            eprintln!(
                "masked: {}",
                if counts.is_empty() {
                    "nothing".to_owned()
                } else {
                    counts.join(", ")
                }
            );
            ExitCode::SUCCESS
        }
        PiiCommand::Evaluate { file, mistakes } => {
            let records = match std::fs::read_to_string(&file)
                .map_err(|error| error.to_string())
                .and_then(|text| evaluation::read_labeled(&text))
            {
                Ok(records) => records,
                Err(error) => {
                    eprintln!("error: {}: {error}", file.display());
                    return ExitCode::from(EXIT_INVALID_INPUT);
                }
            };
            let report = evaluation::evaluate(&detector, &records);
            print!("{report}");
            if mistakes {
                for mistake in &report.mistakes {
                    println!("  {mistake}");
                }
            }
            let (characters, seconds) = evaluation::throughput(&detector, &records, std::time::Duration::from_secs(1));
            println!(
                "throughput, one thread: {:.2} M chars/s",
                characters as f64 / seconds / 1e6
            );
            ExitCode::SUCCESS
        }
    }
}

async fn run_ingest(options: &IngestOptions) -> ExitCode {
    let report = match ingest(options).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    for failure in &report.failures {
        eprintln!("error: {}: {}", failure.path.display(), failure.reason);
    }
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "ingested {} files ({:.1} KB of text) to `{}` for tenant `{}` in {seconds:.1} s ({:.0} files/s); {} failed, {} skipped (unsupported type)",
        report.ingested,
        report.bytes as f64 / 1024.0,
        options.topic,
        options.tenant,
        report.ingested as f64 / seconds.max(1e-3),
        report.failures.len(),
        report.skipped,
    );
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn search(
    query: &str,
    tenant: &str,
    index: &str,
    table: &str,
    model_dir: &Path,
    top_k: usize,
    hybrid: bool,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use ragstream::store::{ChunkStore, SearchMode};
    let model = ragstream::embed::LocalEmbedder::load(model_dir, ragstream::embed::Pooling::Mean, true, 256)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let vector = model
        .embed(&[query])
        .map_err(|error| anyhow::anyhow!("{error}"))?
        .remove(0);
    let store = ChunkStore::open(index, table)
        .await
        .with_context(|| format!("cannot open the index at {index}"))?;
    let mode = if hybrid { SearchMode::Hybrid } else { SearchMode::Vector };
    let hits = store.search(tenant, query, &vector, top_k, mode).await?;
    if hits.is_empty() {
        println!("no chunks for tenant `{tenant}` in {index}");
    }
    for hit in hits {
        let preview: String = hit.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let preview: String = preview.chars().take(220).collect();
        println!(
            "{:.3}  {}  [{}]\n       {preview}…",
            hit.score, hit.chunk_id, hit.context
        );
    }
    Ok(())
}

fn load_or_report(path: &Path) -> Option<Topology> {
    match load_file(path) {
        Ok(topology) => Some(topology),
        Err(errors) => {
            eprint!("{errors}");
            None
        }
    }
}

async fn create_topology_topics(topology: &Topology, partitions: Option<i32>) -> anyhow::Result<()> {
    let mut topics: Vec<String> = Vec::new();
    for pipeline in &topology.pipelines {
        topics.push(pipeline.source.topic.clone());
        topics.extend(pipeline.sinks.iter().map(|sink| sink.topic.clone()));
        topics.push(pipeline.dead_letter.topic.clone());
    }
    topics.sort();
    topics.dedup();
    let partitions = partitions.unwrap_or(topology.topic_defaults.partitions);
    let created = create_topics(
        &topology.kafka,
        &topics,
        partitions,
        topology.topic_defaults.replication_factor,
    )
    .await?;
    for topic in &topics {
        let state = if created.contains(topic) { "created" } else { "exists" };
        println!("{topic}: {state}");
    }
    Ok(())
}
