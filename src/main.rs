//! The `outbound` command line.

use clap::Parser;

/// Exactly-once stream processor: Debezium change streams from the orders,
/// warehouse and logistics databases in, a live outbound report out.
#[derive(Debug, Parser)]
#[command(name = "outbound", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let _cli = Cli::parse();
    Ok(())
}
