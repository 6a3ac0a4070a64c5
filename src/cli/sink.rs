//! `outbound sink`: the Elasticsearch sink on its own (the same sink
//! `outbound run` starts when `sink.in_run` is true). Reads the same
//! configuration as `outbound run` (the `[sink]` keys and `[kafka]`'s).

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use outbound::config::ConfigArgs;
use outbound::metrics::Metrics;
use outbound::shutdown::Shutdown;

#[derive(Debug, Args)]
pub struct SinkArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(args: SinkArgs) -> anyhow::Result<()> {
    let config = args.config.load()?.config;
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let metrics = Arc::new(Metrics::new());
    let metrics_server =
        outbound::metrics::serve(&config.metrics.listen, metrics.clone(), shutdown.clone())?;
    // Alone, the sink exits on what needs an operator (another app's index,
    // a re-created topic) and rides out everything else.
    let handle = outbound::sink::spawn_with(
        config,
        metrics.clone(),
        shutdown.clone(),
        outbound::sink::OnRefusal::Exit,
    )?;
    // A sink-only process has no stream tasks: it is ready once the sink runs.
    metrics.set_ready(true);
    let result = handle
        .join()
        .map_err(|_| anyhow::anyhow!("the sink thread panicked"))?;
    shutdown.trigger();
    if let Some(server) = metrics_server {
        server.join();
    }
    result
}
