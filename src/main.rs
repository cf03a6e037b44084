//! The `ragstream` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ragstream::config::{load_file, Topology};
use ragstream::engine::{run_topology, Shutdown};
use ragstream::telemetry::{init_logging, LogFormat};
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
    /// Manage the topics a topology uses.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
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
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli.command))
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
            let shutdown = Shutdown::new();
            if let Err(error) = shutdown.listen_for_signals() {
                eprintln!("error: cannot install signal handlers: {error}");
                return ExitCode::FAILURE;
            }
            match run_topology(parsed, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
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
