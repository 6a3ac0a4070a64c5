//! Logging for every subcommand: `tracing` to stderr (stdout is for what a
//! command prints: tables, JSON), filtered by `RUST_LOG`. Text with colours
//! only on a terminal (and never with `NO_COLOR`), or one JSON object per
//! line for log pipelines (`--log-format json`).

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; coloured on a terminal.
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (a full disk) is lost, never
        // reported with `eprintln!`, which panics when stderr fails too.
        .log_internal_errors(false);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init()
        }
    }
}
