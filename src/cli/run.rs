//! `outbound run`: the stream stages. Every configuration key is a flag here
//! (flags beat `OUTBOUND_*` environment variables, which beat the TOML file).

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use outbound::config::ConfigArgs;
use outbound::engine::{self, Topics};
use outbound::metrics::Metrics;
use outbound::shutdown::Shutdown;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.config.load()?.config;
    let pipeline = config.pipeline()?;
    let shutdown = Shutdown::with_deadline(std::time::Duration::from_millis(
        config.shutdown_deadline_ms,
    ));
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let metrics = Arc::new(Metrics::new());
    // /metrics, /healthz, /readyz until shutdown.
    let metrics_server =
        outbound::metrics::serve(&config.metrics.listen, metrics.clone(), shutdown.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let topics = Topics::new(&config, pipeline.topics());
    runtime.block_on(engine::ensure_topics(&config, &topics))?;
    // The Elasticsearch sink, as its own task and consumer group (sink.in_run).
    let sink = match config.sink.in_run {
        true => Some(outbound::sink::spawn(
            config.clone(),
            metrics.clone(),
            shutdown.clone(),
        )?),
        false => None,
    };
    let result = engine::run(config, pipeline, metrics.clone(), shutdown.clone());
    if let Err(e) = &result {
        // Not ready, not live: an orchestrator restarts the process even
        // while the rest of it (the sink) winds down.
        metrics.set_ready(false);
        metrics.liveness.fail("stream", &format!("{e:#}"));
    }
    shutdown.trigger();
    // Where a slow stop waits shows in the log.
    tracing::info!("stream stages stopped");
    if let Some(sink) = sink {
        sink.join()
            .map_err(|_| anyhow::anyhow!("the sink thread panicked"))??;
        tracing::info!("sink stopped");
    }
    if let Some(server) = metrics_server {
        server.join();
    }
    result
}
