//! The `outbound` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Exactly-once stream processor: Debezium change streams from the orders,
/// warehouse and logistics databases in, a live outbound report out.
#[derive(Debug, Parser)]
#[command(name = "outbound", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the stream stages (rekey → join → details / aggregate) with
    /// exactly-once Kafka transactions and RocksDB state.
    Run(cli::run::RunArgs),
    /// Run the Elasticsearch sink alone: output topics → detail and rollup
    /// indices, idempotently (external versions = offsets).
    Sink(cli::sink::SinkArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Sink(args) => cli::sink::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("outbound: {e:#}");
            ExitCode::FAILURE
        }
    }
}
