//! `outbound run`: the stream stages. Every configuration key is a flag here
//! (flags beat `OUTBOUND_*` environment variables, which beat the TOML file).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use outbound::config::Config;
use outbound::engine::{self, Topics};
use outbound::metrics::Metrics;
use outbound::shutdown::Shutdown;
use serde_json::{Map, Value};

#[derive(Debug, Args)]
#[command(
    after_help = "Every key can also be set in the TOML file given by --config \
(e.g. `[kafka]\\nbootstrap_servers = \"...\"`) or by an environment variable: \
OUTBOUND_ + the key in capitals with `.` written `__` (e.g. OUTBOUND_KAFKA__PARTITIONS=8). \
Precedence: flags > environment > file > defaults."
)]
pub struct RunArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `app_id`: consumer group and prefix of every internal and output topic [default: outbound]
    #[arg(long)]
    pub app_id: Option<String>,
    /// `instance_id`: unique per instance, stable across restarts; transactional id = <app_id>-<instance_id> [default: 0]
    #[arg(long)]
    pub instance_id: Option<String>,
    /// `stream_threads`: stream threads of this instance, each with its own consumer, producer and tasks [default: 1]
    #[arg(long)]
    pub stream_threads: Option<usize>,
    /// `shutdown_deadline_ms`: how long SIGTERM may take before the process exits [default: 30000]
    #[arg(long)]
    pub shutdown_deadline_ms: Option<u64>,
    /// `kafka.bootstrap_servers` [default: 127.0.0.1:9092]
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// `kafka.partitions`: partitions of internal, changelog and output topics; fixed per app id [default: 4]
    #[arg(long)]
    pub partitions: Option<i32>,
    /// `kafka.replication_factor` of the topics outbound creates [default: 1]
    #[arg(long)]
    pub replication_factor: Option<i32>,
    /// `kafka.commit_interval_ms`: how often outputs, changelogs and offsets commit together [default: 100]
    #[arg(long)]
    pub commit_interval_ms: Option<u64>,
    /// `kafka.transaction_timeout_ms`: bounds how long a crashed instance's open transaction blocks readers [default: 10000]
    #[arg(long)]
    pub transaction_timeout_ms: Option<u64>,
    /// `kafka.purge_interval_ms`: how often committed records are deleted from the repartition topics; 0 = never [default: 30000]
    #[arg(long)]
    pub purge_interval_ms: Option<u64>,
    /// `source.topic_prefix`: Debezium's topic.prefix [default: outbound]
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// `source.orders_table` as <database>.<table> [default: orders.order_demo]
    #[arg(long)]
    pub orders_table: Option<String>,
    /// `source.items_table` as <database>.<table> [default: wms.wms_demo]
    #[arg(long)]
    pub items_table: Option<String>,
    /// `source.shipments_table` as <database>.<table> [default: logistics.logistics_demo]
    #[arg(long)]
    pub shipments_table: Option<String>,
    /// `source.extra_item_topics`: topics of further warehouse databases' item tables (repeatable)
    #[arg(long = "extra-item-topic")]
    pub extra_item_topics: Vec<String>,
    /// `source.business_time_zone`: IANA zone of ship_day [default: UTC]
    #[arg(long)]
    pub business_time_zone: Option<String>,
    /// `source.warehouse_rule`: column_else_source_db or source_db [default: column_else_source_db]
    #[arg(long)]
    pub warehouse_rule: Option<String>,
    /// `state.dir`: where task stores live [default: state]
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// `state.block_cache_mb`: RocksDB block cache shared by all tasks [default: 128]
    #[arg(long)]
    pub block_cache_mb: Option<usize>,
    /// `state.write_buffer_mb`: RocksDB memtables shared by all tasks [default: 64]
    #[arg(long)]
    pub write_buffer_mb: Option<usize>,
    /// `state.restore_batch`: changelog records per restore write batch [default: 10000]
    #[arg(long)]
    pub restore_batch: Option<usize>,
    /// `state.cleanup_delay_ms`: how long the state of a task no longer owned is kept [default: 600000]
    #[arg(long)]
    pub state_cleanup_delay_ms: Option<u64>,
    /// `metrics.listen`: address of /metrics, /healthz, /readyz; empty disables [default: 127.0.0.1:9464]
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

impl RunArgs {
    /// The flags given, as a partial configuration.
    fn overrides(&self) -> Value {
        let mut root = Map::new();
        let mut set = |section: Option<&str>, key: &str, v: Option<Value>| {
            let Some(v) = v else { return };
            match section {
                None => {
                    root.insert(key.into(), v);
                }
                Some(s) => {
                    let entry = root.entry(s).or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(m) = entry {
                        m.insert(key.into(), v);
                    }
                }
            }
        };
        let s = |v: &Option<String>| v.clone().map(Value::from);
        set(None, "app_id", s(&self.app_id));
        set(None, "instance_id", s(&self.instance_id));
        set(None, "stream_threads", self.stream_threads.map(Value::from));
        set(
            None,
            "shutdown_deadline_ms",
            self.shutdown_deadline_ms.map(Value::from),
        );
        set(
            Some("kafka"),
            "bootstrap_servers",
            s(&self.bootstrap_servers),
        );
        set(
            Some("kafka"),
            "partitions",
            self.partitions.map(Value::from),
        );
        set(
            Some("kafka"),
            "replication_factor",
            self.replication_factor.map(Value::from),
        );
        set(
            Some("kafka"),
            "commit_interval_ms",
            self.commit_interval_ms.map(Value::from),
        );
        set(
            Some("kafka"),
            "transaction_timeout_ms",
            self.transaction_timeout_ms.map(Value::from),
        );
        set(
            Some("kafka"),
            "purge_interval_ms",
            self.purge_interval_ms.map(Value::from),
        );
        set(Some("source"), "topic_prefix", s(&self.topic_prefix));
        set(Some("source"), "orders_table", s(&self.orders_table));
        set(Some("source"), "items_table", s(&self.items_table));
        set(Some("source"), "shipments_table", s(&self.shipments_table));
        if !self.extra_item_topics.is_empty() {
            set(
                Some("source"),
                "extra_item_topics",
                Some(Value::from(self.extra_item_topics.clone())),
            );
        }
        set(
            Some("source"),
            "business_time_zone",
            s(&self.business_time_zone),
        );
        set(Some("source"), "warehouse_rule", s(&self.warehouse_rule));
        set(
            Some("state"),
            "dir",
            self.state_dir
                .as_ref()
                .map(|p| Value::from(p.display().to_string())),
        );
        set(
            Some("state"),
            "block_cache_mb",
            self.block_cache_mb.map(Value::from),
        );
        set(
            Some("state"),
            "write_buffer_mb",
            self.write_buffer_mb.map(Value::from),
        );
        set(
            Some("state"),
            "restore_batch",
            self.restore_batch.map(Value::from),
        );
        set(
            Some("state"),
            "cleanup_delay_ms",
            self.state_cleanup_delay_ms.map(Value::from),
        );
        set(Some("metrics"), "listen", s(&self.metrics_listen));
        Value::Object(root)
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), &args.overrides())?;
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
    if let Some(sink) = sink {
        sink.join()
            .map_err(|_| anyhow::anyhow!("the sink thread panicked"))??;
    }
    if let Some(server) = metrics_server {
        server.join();
    }
    result
}
