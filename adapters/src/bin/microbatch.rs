//! `microbatch`: one binary, one subcommand per service, so one image serves every deployment.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use microbatch_adapters::commands;
use microbatch_adapters::config::Config;

/// mimalloc instead of the system allocator: the producer's request path allocates per event and
/// glibc's malloc (free-list consolidation, per-thread arenas that keep freed memory) cost ~12 % of
/// its CPU under load and inflated the consumer's RSS; see docs/PERFORMANCE.md. Without the
/// `mimalloc` feature (on by default) the system allocator is used, which heap profilers hook.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Webhooks and events into a warehouse, in micro-batches.
///
/// With no configuration at all, everything runs embedded: a SQLite stream, a local directory of
/// objects, a SQLite queue and a SQLite warehouse under ./microbatch-data. Try `microbatch demo`.
#[derive(Debug, Parser)]
#[command(name = "microbatch", version, about, long_about)]
struct Cli {
    /// A TOML configuration file; every setting can also be set as MICROBATCH_<SECTION>__<KEY>.
    #[arg(long, short, global = true, env = "MICROBATCH_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the producer, the consumer and the importer in one process.
    Run,
    /// Run the HTTP producer: POST /v1/events and /v1/webhooks/{source} into the stream.
    Produce,
    /// Run the consumer: stream → per-table CSV batches in the object store.
    Consume,
    /// Run the importer: notifications → idempotent loads into the warehouse.
    Import,
    /// Run the whole pipeline on a temporary directory, send it a realistic mixed workload over
    /// HTTP, wait until every event is queryable, and print per-table row counts and freshness.
    Demo {
        /// How many events to send.
        #[arg(long, default_value_t = 2000)]
        events: usize,
        /// Keep running after the report (Ctrl-C stops), to try the API by hand.
        #[arg(long)]
        serve: bool,
    },
    /// Create or update the warehouse's tables for the catalog, then exit.
    Migrate,
    /// Validate the configuration and the catalog, probe every configured port (the Kinesis
    /// stream, the S3 bucket, the SQS queues and their redrive policy, the DynamoDB lease table),
    /// and compare the catalog with the warehouse.
    Check {
        /// Also prove the warehouse end to end: on Redshift, COPY a one-row object from the bucket
        /// into a scratch table with the COPY role, drop it, and report what one COPY and commit
        /// cost (the number docs/AWS.md's freshness model starts from).
        #[arg(long)]
        warehouse: bool,
    },
    /// The dead-letter queue: what is in it and why, and moving it back once fixed.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Every dead letter: its age, receive count, reason code, batch keys and reason.
    List,
    /// Move dead letters back to the load queue (idempotent: a loaded batch loads only once).
    Replay {
        /// Every dead letter.
        #[arg(long, conflicts_with = "key")]
        all: bool,
        /// The dead letters announcing this batch key (repeatable).
        #[arg(long)]
        key: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    microbatch_adapters::runtime::disable_transparent_huge_pages();
    let cli = Cli::parse();
    // The processes holding the consumer's buffers give freed memory back at once (its budget is
    // about RSS); the producer alone keeps the allocator's delay, which saves it 10-15 % of CPU.
    #[cfg(feature = "mimalloc")]
    if !matches!(cli.command, Command::Produce) {
        microbatch_adapters::runtime::purge_freed_memory_promptly();
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("microbatch: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // The demo's output is its report: keep the logs to warnings unless asked otherwise.
    let filter = match cli.command {
        Command::Demo { .. } if config.log.filter == "info" => "warn",
        _ => config.log.filter.as_str(),
    };
    microbatch_adapters::telemetry::init_tracing(config.log.format, filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("microbatch: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run => commands::run(config).await,
            Command::Produce => commands::produce(config).await,
            Command::Consume => commands::consume(config).await,
            Command::Import => commands::import(config).await,
            Command::Demo { events, serve } => commands::demo(config, events, serve).await,
            Command::Migrate => commands::migrate(config).await,
            Command::Check { warehouse } => commands::check(config, warehouse).await,
            Command::Dlq {
                command: DlqCommand::List,
            } => commands::dlq_list(config).await,
            Command::Dlq {
                command: DlqCommand::Replay { all, key },
            } => commands::dlq_replay(config, all, key).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("microbatch: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
