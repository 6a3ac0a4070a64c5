//! The process's Prometheus metrics, named by Prometheus conventions
//! (`outbound_` prefix, base units, `_total` counters) with labels bounded in
//! cardinality (stage, partition of a fixed partition count, reason enums).
//! Every component records into one [`Metrics`]; `/metrics` renders it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

mod http;
mod kafka;

pub use http::{serve, Liveness, MetricsServer, STALL_AFTER};
pub use kafka::ConsumerLag;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    /// Records consumed, by stage (rekey, join, details, aggregate) and partition.
    pub records_in: IntCounterVec,
    /// Records produced, by output (rekey, detail-changes, rollup-deltas, details, rollups, dlq).
    pub records_out: IntCounterVec,
    /// Records sent to the dead-letter topic, by reason.
    pub dead_letters: IntCounterVec,
    /// Records skipped on purpose (tombstones), by reason.
    pub skipped: IntCounterVec,
    /// Data-quality entries on detail documents, by field.
    pub data_quality: IntCounterVec,
    pub transactions: IntCounterVec,
    pub commit_seconds: Histogram,
    pub processing_seconds: HistogramVec,
    /// Source change (Debezium `ts_ms`) to output committed.
    pub end_to_end_seconds: HistogramVec,
    pub rebalances: IntCounterVec,
    /// Stream tasks by stage and state (created, restoring, running, suspended).
    pub tasks: IntGaugeVec,
    /// Tasks closed, by stage and how (clean: at a commit; dirty: lost or after a failure).
    pub task_closes: IntCounterVec,
    /// Records the record collector did not send because a later one to
    /// the same key superseded them (or summed them), by output.
    pub records_coalesced: IntCounterVec,
    /// Records fetched again below an offset this instance had committed
    /// (and skipped), by stage.
    pub records_refetched: IntCounterVec,
    pub state_keys: IntGaugeVec,
    pub state_bytes: IntGaugeVec,
    pub state_rebuilds: IntCounterVec,
    pub restored_records: IntCounterVec,
    pub restore_remaining: IntGaugeVec,
    pub ready: IntGauge,
    /// The Elasticsearch sink's metrics.
    pub sink: SinkMetrics,
    /// `outbound_consumer_lag_records{topic,partition}`, from librdkafka statistics.
    pub consumer_lag: ConsumerLag,
    /// Loop heartbeats: `/healthz` and `outbound_loop_heartbeat_timestamp_seconds`.
    pub liveness: Liveness,
    ready_flag: AtomicBool,
    /// What each stream thread last reported of its tasks.
    threads: Mutex<BTreeMap<&'static str, ThreadStatus>>,
}

/// One stream thread's tasks, as it reports them.
#[derive(Debug, Clone, Default)]
pub struct ThreadStatus {
    /// Partitions assigned to the thread.
    pub assigned: usize,
    /// Tasks not running, e.g. `join-3 restoring`.
    pub not_running: Vec<String>,
    /// (stage, state, count) of its tasks.
    pub tasks: Vec<(&'static str, &'static str, usize)>,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn float_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new(
                "outbound_build_info",
                "Build of the running outbound binary (always 1).",
            ),
            &["version"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(build.clone()))
            .expect("metric registered once");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "outbound_transaction_commit_seconds",
                "Time to flush, send offsets and commit one transaction.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(commit_seconds.clone()))
            .expect("metric registered once");
        let processing_seconds = HistogramVec::new(
            HistogramOpts::new(
                "outbound_processing_seconds",
                "Time to process one record, by stage.",
            )
            .buckets(vec![
                1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1,
            ]),
            &["stage"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(processing_seconds.clone()))
            .expect("metric registered once");
        let end_to_end_seconds = HistogramVec::new(
            HistogramOpts::new(
                "outbound_end_to_end_seconds",
                "From the source change (Debezium ts_ms) to its output being committed (output) or acknowledged by Elasticsearch (sink).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["at"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(end_to_end_seconds.clone()))
            .expect("metric registered once");
        let ready = IntGauge::new(
            "outbound_ready",
            "1 when every assigned task is running (not restoring).",
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(ready.clone()))
            .expect("metric registered once");
        let metrics = Self {
            records_in: counter(
                &registry,
                "outbound_records_in_total",
                "Records consumed, by stage and partition.",
                &["stage", "partition"],
            ),
            records_out: counter(
                &registry,
                "outbound_records_out_total",
                "Records produced, by output.",
                &["output"],
            ),
            dead_letters: counter(
                &registry,
                "outbound_dead_letters_total",
                "Records sent to the dead-letter topic, by reason.",
                &["reason"],
            ),
            skipped: counter(
                &registry,
                "outbound_records_skipped_total",
                "Records skipped on purpose, by reason.",
                &["reason"],
            ),
            data_quality: counter(
                &registry,
                "outbound_data_quality_issues_total",
                "Unparseable source values turned into null with a data_quality entry, by field.",
                &["field"],
            ),
            transactions: counter(
                &registry,
                "outbound_transactions_total",
                "Kafka transactions, by outcome (committed, aborted).",
                &["outcome"],
            ),
            rebalances: counter(
                &registry,
                "outbound_rebalances_total",
                "Consumer group rebalance events, by kind.",
                &["kind"],
            ),
            tasks: gauge(
                &registry,
                "outbound_tasks",
                "Stream tasks of this instance, by stage and status (created, restoring, running, suspended).",
                &["stage", "status"],
            ),
            task_closes: counter(
                &registry,
                "outbound_task_closes_total",
                "Stream tasks closed, by stage and how (clean, dirty).",
                &["stage", "how"],
            ),
            records_coalesced: counter(
                &registry,
                "outbound_records_coalesced_total",
                "Records not sent because a later record to the same key superseded or was summed with them, by output.",
                &["output"],
            ),
            records_refetched: counter(
                &registry,
                "outbound_records_refetched_total",
                "Records fetched again below an offset this instance had already committed, and skipped, by input stage.",
                &["stage"],
            ),
            state_keys: gauge(
                &registry,
                "outbound_state_keys",
                "Estimated keys in the state stores, by stage.",
                &["stage"],
            ),
            state_bytes: gauge(
                &registry,
                "outbound_state_bytes",
                "Estimated live bytes of the state stores, by stage.",
                &["stage"],
            ),
            state_rebuilds: counter(
                &registry,
                "outbound_state_rebuilds_total",
                "Local state directories found untrustworthy and rebuilt, by stage.",
                &["stage"],
            ),
            restored_records: counter(
                &registry,
                "outbound_restored_records_total",
                "Changelog records restored into state stores, by stage.",
                &["stage"],
            ),
            restore_remaining: gauge(
                &registry,
                "outbound_restore_remaining_records",
                "Changelog records still to restore, by stage.",
                &["stage"],
            ),
            commit_seconds,
            processing_seconds,
            end_to_end_seconds,
            ready,
            sink: SinkMetrics::new(&registry),
            consumer_lag: ConsumerLag::new(&registry),
            liveness: Liveness::new(&registry),
            ready_flag: AtomicBool::new(false),
            threads: Mutex::new(BTreeMap::new()),
            registry,
        };
        metrics.init_known_series();
        metrics
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready_flag.store(ready, Ordering::SeqCst);
        self.ready.set(i64::from(ready));
    }

    pub fn is_ready(&self) -> bool {
        self.ready_flag.load(Ordering::SeqCst)
    }

    /// A stream thread's tasks: updates `outbound_tasks` and readiness
    /// (ready when the instance holds partitions and every task runs).
    pub fn report_thread(&self, thread: &'static str, status: ThreadStatus) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.insert(thread, status);
        let mut totals: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for t in threads.values() {
            for (stage, state, n) in &t.tasks {
                *totals.entry((stage, state)).or_insert(0) += n;
            }
        }
        for ((stage, state), n) in totals {
            self.tasks.with_label_values(&[stage, state]).set(n as i64);
        }
        let assigned: usize = threads.values().map(|t| t.assigned).sum();
        let ready = assigned > 0 && threads.values().all(|t| t.not_running.is_empty());
        self.set_ready(ready);
    }

    /// Why the instance is not ready, for `/readyz`.
    pub fn readiness(&self) -> String {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let assigned: usize = threads.values().map(|t| t.assigned).sum();
        if assigned == 0 {
            return "no partition assigned yet".into();
        }
        let waiting: Vec<&String> = threads.values().flat_map(|t| &t.not_running).collect();
        if waiting.is_empty() {
            let running: usize = threads
                .values()
                .flat_map(|t| &t.tasks)
                .filter(|(_, s, _)| *s == "running")
                .map(|(_, _, n)| n)
                .sum();
            return format!("{assigned} partitions assigned, {running} tasks running");
        }
        let shown: Vec<String> = waiting.iter().take(20).map(|s| s.to_string()).collect();
        format!(
            "{} tasks not running: {}{}",
            waiting.len(),
            shown.join(", "),
            if waiting.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The Elasticsearch sink's metrics (`outbound_sink_*`); its end-to-end
/// latency is `outbound_end_to_end_seconds{at="sink"}`.
pub struct SinkMetrics {
    /// Records consumed from the output topics, by topic kind (details, rollups).
    pub records_in: IntCounterVec,
    /// One bulk request's round trip, whatever its outcome.
    pub bulk_seconds: Histogram,
    /// Bulk requests by outcome (ok, retry, fatal).
    pub requests: IntCounterVec,
    /// Bulk items by result: created, updated, deleted, not_found, conflict
    /// (a newer version is indexed: success), rejected (dead-lettered).
    pub items: IntCounterVec,
    /// Retries, by reason: connection, status_429, status_5xx, protocol,
    /// item_429, item_5xx, index_missing, blocked (not the documents' fault:
    /// a block, privileges, a closed index), too_large (a 413, split).
    pub retries: IntCounterVec,
    /// Documents sent to the sink's dead-letter topic, by error type.
    pub rejections: IntCounterVec,
    /// Bytes consumed and not yet acknowledged by Elasticsearch.
    pub in_flight_bytes: IntGauge,
    /// 1 while consumption is paused because in-flight memory is full.
    pub paused: IntGauge,
    /// Offsets committed, after Elasticsearch acknowledged every item before them.
    pub commits: IntCounterVec,
    /// Restarts of the sink loop (from the committed offsets), by reason:
    /// transient, refused (needs an operator), stale (a batch outlived
    /// `sink.retry_window_ms`).
    pub restarts: IntCounterVec,
    /// Age of the oldest record not yet acknowledged, per output partition
    /// (an upper bound, see `sink/lag.rs`).
    pub lag_seconds: GaugeVec,
    /// `delete.retention.ms` of each output topic, in seconds: a sink lagging
    /// longer misses deletes (compaction drops their tombstones).
    pub delete_retention_seconds: GaugeVec,
    /// `/healthz/sink` and `outbound_sink_up`.
    pub health: crate::sink::health::SinkHealth,
}

impl SinkMetrics {
    fn new(registry: &Registry) -> Self {
        let bulk_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "outbound_sink_bulk_seconds",
                "Round trip of one bulk request to Elasticsearch.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(bulk_seconds.clone()))
            .expect("metric registered once");
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        Self {
            records_in: counter(
                registry,
                "outbound_sink_records_in_total",
                "Records the sink consumed, by output (details, rollups).",
                &["output"],
            ),
            bulk_seconds,
            requests: counter(
                registry,
                "outbound_sink_requests_total",
                "Bulk requests, by outcome (ok, retry, fatal).",
                &["outcome"],
            ),
            items: counter(
                registry,
                "outbound_sink_items_total",
                "Bulk items by result (created, updated, deleted, not_found, conflict, rejected).",
                &["result"],
            ),
            retries: counter(
                registry,
                "outbound_sink_retries_total",
                "Bulk requests or items sent again, by reason.",
                &["reason"],
            ),
            rejections: counter(
                registry,
                "outbound_sink_rejections_total",
                "Documents sent to the sink's dead-letter topic, by error type.",
                &["error_type"],
            ),
            in_flight_bytes: int_gauge(
                "outbound_sink_in_flight_bytes",
                "Bytes consumed by the sink and not yet acknowledged by Elasticsearch.",
            ),
            paused: int_gauge(
                "outbound_sink_paused",
                "1 while the sink has paused consumption because in-flight memory is full.",
            ),
            commits: counter(
                registry,
                "outbound_sink_commits_total",
                "Offset commits of the sink's consumer group, by outcome.",
                &["outcome"],
            ),
            restarts: counter(
                registry,
                "outbound_sink_restarts_total",
                "Restarts of the sink from its committed offsets, by reason (transient, refused, stale).",
                &["reason"],
            ),
            lag_seconds: float_gauge(
                registry,
                "outbound_sink_lag_seconds",
                "Age of the oldest output record the sink has not had acknowledged, per partition (upper bound).",
                &["topic", "partition"],
            ),
            delete_retention_seconds: float_gauge(
                registry,
                "outbound_sink_delete_retention_seconds",
                "delete.retention.ms of each output topic the sink reads, in seconds.",
                &["topic"],
            ),
            // Registered once a sink starts in the process (a process
            // without one has no such series, rather than a 0 that alerts).
            health: crate::sink::health::SinkHealth::new(
                registry,
                IntGauge::new(
                    "outbound_sink_up",
                    "1 while the Elasticsearch sink runs and its requests succeed (see /healthz/sink).",
                )
                .expect("valid metric definition"),
            ),
        }
    }
}

impl Metrics {
    /// Creates the series of every known label value at zero, so that rare
    /// events (aborts, dead letters, rebuilds, retries) have a series from the
    /// start: `rate()` and `increase()` over them read 0 instead of nothing,
    /// and dashboards and alerts never look at a missing metric
    /// (<https://prometheus.io/docs/practices/instrumentation/#avoid-missing-metrics>).
    /// Label values only known at run time (partitions, fields, error types)
    /// appear when first recorded.
    fn init_known_series(&self) {
        const STAGES: [&str; 3] = ["join", "details", "aggregate"];
        for outcome in ["committed", "aborted"] {
            self.transactions.with_label_values(&[outcome]);
        }
        for kind in ["assign", "revoke", "lost"] {
            self.rebalances.with_label_values(&[kind]);
        }
        for stage in STAGES {
            for state in ["created", "restoring", "running", "suspended"] {
                self.tasks.with_label_values(&[stage, state]);
            }
            for how in ["clean", "dirty"] {
                self.task_closes.with_label_values(&[stage, how]);
            }
        }
        for at in ["output", "sink"] {
            self.end_to_end_seconds.with_label_values(&[at]);
        }
        for stage in ["rekey", "join", "details", "aggregate"] {
            self.processing_seconds.with_label_values(&[stage]);
        }
        for reason in [
            "undecodable_change_event",
            "unencodable_change",
            "undecodable_internal_record",
            "record_too_large",
        ] {
            self.dead_letters.with_label_values(&[reason]);
        }
        for reason in ["tombstone", "stale_detail_version"] {
            self.skipped.with_label_values(&[reason]);
        }
        for stage in STAGES {
            self.state_rebuilds.with_label_values(&[stage]);
            self.records_refetched.with_label_values(&[stage]);
            self.restored_records.with_label_values(&[stage]);
            self.restore_remaining.with_label_values(&[stage]);
        }
        for outcome in ["ok", "retry", "fatal"] {
            self.sink.requests.with_label_values(&[outcome]);
        }
        for outcome in ["ok", "failed"] {
            self.sink.commits.with_label_values(&[outcome]);
        }
        for reason in [
            "connection",
            "status_429",
            "status_5xx",
            "protocol",
            "item_429",
            "item_5xx",
            "index_missing",
            "blocked",
            "too_large",
        ] {
            self.sink.retries.with_label_values(&[reason]);
        }
        for result in [
            "created",
            "updated",
            "deleted",
            "not_found",
            "conflict",
            "rejected",
        ] {
            self.sink.items.with_label_values(&[result]);
        }
        for reason in ["transient", "refused", "stale"] {
            self.sink.restarts.with_label_values(&[reason]);
        }
    }
}
