//! `outbound sink`: the Elasticsearch sink on its own (the same sink
//! `outbound run` starts when `sink.in_run` is true). Reads the same
//! configuration as `outbound run`; the flags below override the keys that
//! matter to the sink.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use outbound::config::Config;
use outbound::metrics::Metrics;
use outbound::shutdown::Shutdown;
use serde_json::{Map, Value};

#[derive(Debug, Args)]
#[command(
    after_help = "Every key can also be set in the TOML file given by --config \
(section [sink]) or as OUTBOUND_SINK__<KEY> (e.g. OUTBOUND_SINK__URL=http://es:9200). \
Precedence: flags > environment > file > defaults."
)]
pub struct SinkArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `app_id`: the sink reads <app_id>-details and <app_id>-rollups in group <app_id>-sink [default: outbound]
    #[arg(long)]
    pub app_id: Option<String>,
    /// `kafka.bootstrap_servers` [default: 127.0.0.1:9092]
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// `sink.url`: the Elasticsearch-API node [default: http://127.0.0.1:9200]
    #[arg(long)]
    pub url: Option<String>,
    /// `sink.index_prefix`: prefix of every index, alias and template [default: <app_id>-, none for app id outbound]
    #[arg(long)]
    pub index_prefix: Option<String>,
    /// `sink.batch_max_docs` [default: 5000]
    #[arg(long)]
    pub batch_max_docs: Option<usize>,
    /// `sink.batch_max_bytes` [default: 5242880]
    #[arg(long)]
    pub batch_max_bytes: Option<usize>,
    /// `sink.batch_timeout_ms` [default: 200]
    #[arg(long)]
    pub batch_timeout_ms: Option<u64>,
    /// `sink.max_in_flight_requests` [default: 2]
    #[arg(long)]
    pub max_in_flight_requests: Option<usize>,
    /// `sink.max_in_flight_bytes`: consumption pauses at this much unacknowledged data [default: 67108864]
    #[arg(long)]
    pub max_in_flight_bytes: Option<usize>,
    /// `sink.retry_max_attempts`: 0 = retry until Elasticsearch answers [default: 0]
    #[arg(long)]
    pub retry_max_attempts: Option<u32>,
    /// `sink.dlq_topic` [default: <app_id>-sink-dlq]
    #[arg(long)]
    pub dlq_topic: Option<String>,
}

impl SinkArgs {
    /// The flags given, as a partial configuration.
    pub fn overrides(&self) -> Value {
        let mut root = Map::new();
        let mut sink = Map::new();
        if let Some(v) = &self.app_id {
            root.insert("app_id".into(), v.clone().into());
        }
        if let Some(v) = &self.bootstrap_servers {
            let mut kafka = Map::new();
            kafka.insert("bootstrap_servers".into(), v.clone().into());
            root.insert("kafka".into(), kafka.into());
        }
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                sink.insert(k.into(), v);
            }
        };
        set("url", self.url.clone().map(Value::from));
        set("index_prefix", self.index_prefix.clone().map(Value::from));
        set("batch_max_docs", self.batch_max_docs.map(Value::from));
        set("batch_max_bytes", self.batch_max_bytes.map(Value::from));
        set("batch_timeout_ms", self.batch_timeout_ms.map(Value::from));
        set(
            "max_in_flight_requests",
            self.max_in_flight_requests.map(Value::from),
        );
        set(
            "max_in_flight_bytes",
            self.max_in_flight_bytes.map(Value::from),
        );
        set(
            "retry_max_attempts",
            self.retry_max_attempts.map(Value::from),
        );
        set("dlq_topic", self.dlq_topic.clone().map(Value::from));
        if !sink.is_empty() {
            root.insert("sink".into(), sink.into());
        }
        Value::Object(root)
    }
}

pub fn run(args: SinkArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), &args.overrides())?;
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
