//! The `outbound` command line.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Exactly-once stream processor: Debezium change streams from the orders,
/// warehouse and logistics databases in, a live outbound report out.
#[derive(Debug, Parser)]
#[command(name = "outbound", version, about, long_about = None)]
struct Cli {
    /// Log lines as text (coloured only on a terminal) or JSON, on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "OUTBOUND_LOG_FORMAT"
    )]
    log_format: cli::logging::LogFormat,
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
    /// Compare the detail and rollup indices with a batch computation over
    /// the source tables (sql/reconcile/); exit 0 only when they are equal.
    Reconcile(cli::reconcile::ReconcileArgs),
    /// Write realistic, seeded traffic into the source databases (orders,
    /// items, shipments; updates, moves, deletes, rollbacks, messy values).
    Loadgen(cli::loadgen::LoadgenArgs),
    /// Build a new generation of every index from the output topics and
    /// swap it in with one alias change, without downtime (also applies a
    /// template or `sink.index_version` change).
    RebuildIndices(cli::rebuild::RebuildArgs),
    /// The sink's dead-letter topic: `outbound dlq replay --from <topic>`.
    Dlq(cli::dlq::DlqArgs),
    /// Per task and per sink partition: owner, state, lag, commit and
    /// acknowledgement ages.
    Status(cli::status::StatusArgs),
    /// Delete the app id's internal topics, changelogs, group offsets and
    /// local state (refused while instances run).
    Reset(cli::reset::ResetArgs),
    /// Check the configuration, or print an annotated example of it.
    Config(cli::config::ConfigCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    cli::logging::init(log_format);
    let result = match cli.command {
        Command::Reconcile(args) => return cli::reconcile::main(args),
        Command::Run(args) => cli::run::run(args),
        Command::Sink(args) => cli::sink::run(args),
        Command::Loadgen(args) => cli::loadgen::run(args),
        Command::RebuildIndices(args) => cli::rebuild::run(args),
        Command::Dlq(args) => cli::dlq::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Reset(args) => cli::reset::run(args),
        Command::Config(cmd) => cli::config::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logs and this message share stderr: say it once, in the
            // format a log pipeline expects.
            match log_format {
                cli::logging::LogFormat::Json => tracing::error!("{e:#}"),
                cli::logging::LogFormat::Text => {
                    // A stderr that refuses it (a full disk) must not turn
                    // the exit code into a panic's.
                    let _ = writeln!(std::io::stderr(), "outbound: {e:#}");
                }
            }
            ExitCode::FAILURE
        }
    }
}
