//! Helpers for integration tests against the real local stack (brought up by
//! `stack/stack.sh up`): topics, producing histories, folding output topics
//! read_committed, computing the expected result with the pure pipeline, and
//! running the `outbound` binary as a child process that can be killed.
#![allow(dead_code)]

pub mod engine;
pub mod history;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outbound_pipeline::config::PipelineConfig;
use outbound_pipeline::join::DetailChange;
use outbound_pipeline::store::MemStore;
use outbound_pipeline::{aggregate, decode, join, rekey, resolve};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

use history::{History, SourceRecord, Table};

pub fn bootstrap() -> String {
    std::env::var("OUTBOUND_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name unique to this test run, so reruns on the same stack never collide.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

pub fn topic_of(prefix: &str, table: Table) -> String {
    format!("{prefix}.{}.{}", table.db(), table.name())
}

pub fn pipeline_config(prefix: &str) -> PipelineConfig {
    PipelineConfig {
        topic_prefix: prefix.to_owned(),
        ..PipelineConfig::default()
    }
}

/// A client configuration for the local stack's plain broker.
pub fn plain_client() -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", bootstrap());
    cc
}

/// Creates the three source topics (as Debezium would, keyed by primary key).
pub fn create_source_topics(prefix: &str, partitions: i32) {
    create_source_topics_with(&plain_client(), prefix, partitions)
}

/// [`create_source_topics`] on the cluster `base` connects to.
pub fn create_source_topics_with(base: &ClientConfig, prefix: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = base.create().expect("admin client");
    let names: Vec<String> = Table::ALL.iter().map(|t| topic_of(prefix, *t)).collect();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt
        .block_on(admin.create_topics(topics.iter(), &AdminOptions::new()))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

pub fn producer() -> ThreadedProducer<DefaultProducerContext> {
    producer_with(&plain_client())
}

/// [`producer`] on the cluster `base` connects to.
pub fn producer_with(base: &ClientConfig) -> ThreadedProducer<DefaultProducerContext> {
    base.clone()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces records in order (per key, as Debezium does: same key, same partition).
pub fn produce(
    producer: &ThreadedProducer<DefaultProducerContext>,
    prefix: &str,
    records: &[SourceRecord],
) {
    for r in records {
        let topic = topic_of(prefix, r.table);
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic).key(&r.key);
        if let Some(v) = &r.value {
            rec = rec.payload(v);
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// Produces records, each to the partition given beside it (or by key).
pub fn produce_to(
    producer: &ThreadedProducer<DefaultProducerContext>,
    prefix: &str,
    records: &[(SourceRecord, Option<i32>)],
) {
    for (r, partition) in records {
        let topic = topic_of(prefix, r.table);
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic).key(&r.key);
        if let Some(p) = partition {
            rec = rec.partition(*p);
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v);
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// Deletes every topic whose name starts with `prefix` (a test's own), and
/// waits until the broker no longer lists them.
pub fn delete_topics_with_prefix(prefix: &str) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(admin.delete_topics(&refs, &AdminOptions::new()))
        .map_err(|e| e.to_string())?;
    wait_for(
        "deleted topics to disappear",
        Duration::from_secs(60),
        || {
            let md = consumer
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let left = md
                .topics()
                .iter()
                .filter(|t| names.iter().any(|n| n == t.name()))
                .count();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} topics still listed"))
            }
        },
    );
    Ok(())
}

/// Creates `name` with `partitions` and the given topic configs.
pub fn create_topic(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let topic = configs.iter().fold(
        NewTopic::new(name, partitions, TopicReplication::Fixed(1)),
        |t, (k, v)| t.set(k, v),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for r in rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topic")
    {
        r.expect("topic created");
    }
}

/// The committed offsets of `group` on every partition of `topics`,
/// against their ends: `Ok` when the group has consumed everything.
pub fn group_caught_up(group: &str, topics: &[String]) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            tpl.add_partition(topic, p.id());
            ends.insert((topic.clone(), p.id()), high);
        }
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut behind = Vec::new();
    for e in committed.elements() {
        let end = ends[&(e.topic().to_owned(), e.partition())];
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        if at < end {
            behind.push(format!("{}[{}] at {at} of {end}", e.topic(), e.partition()));
        }
    }
    if behind.is_empty() {
        Ok(())
    } else {
        Err(format!("behind: {}", behind.join(", ")))
    }
}

/// The latest committed value of every key of `topic` (tombstones remove).
/// Broker errors (a topic just created, a leader not yet elected) are
/// returned, not panicked on: callers poll with [`wait_for`].
pub fn fold_topic(topic: &str) -> Result<BTreeMap<String, Value>, String> {
    fold_topic_with(&plain_client(), topic)
}

/// [`fold_topic`] on the cluster `base` connects to.
pub fn fold_topic_with(
    base: &ClientConfig,
    topic: &str,
) -> Result<BTreeMap<String, Value>, String> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", unique("fold"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| format!("fold consumer: {e}"))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .map_err(|e| format!("watermarks of {topic}[{p}]: {e}"))?;
        if high > low {
            tpl.add_partition_offset(topic, *p, Offset::Offset(low))
                .map_err(|e| format!("{topic}[{p}]: {e}"))?;
            ends.insert(*p, high);
        }
    }
    let mut out = BTreeMap::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("assign {topic}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done: BTreeMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    while done.values().any(|d| !d) {
        if Instant::now() >= deadline {
            return Err(format!("{topic} not read to its end within 60 s"));
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            match m.payload() {
                Some(v) => {
                    let value = serde_json::from_slice(v).map_err(|e| {
                        format!("{topic}[{}]@{}: not JSON: {e}", m.partition(), m.offset())
                    })?;
                    out.insert(key, value);
                }
                None => {
                    out.remove(&key);
                }
            }
        }
        // read_committed skips aborted records and markers: judge by position.
        if let Ok(pos) = consumer.position() {
            for e in pos.elements() {
                if let (Offset::Offset(o), Some(end)) = (e.offset(), ends.get(&e.partition())) {
                    if o >= *end {
                        done.insert(e.partition(), true);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Detail and rollup outputs the pipeline core computes over the final table
/// contents (one partition, in-memory state): what the engine must equal.
pub fn expected(
    history: &History,
    prefix: &str,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let config = pipeline_config(prefix);
    let (mut join_state, mut resolve_state, mut counters) =
        (MemStore::new(), MemStore::new(), MemStore::new());
    let mut details = BTreeMap::new();
    let mut rollups = BTreeMap::new();
    for (offset, r) in history::snapshot_records(history, prefix)
        .iter()
        .enumerate()
    {
        let topic = topic_of(prefix, r.table);
        let Some(event) = decode::decode_change(&config, &topic, Some(&r.key), r.value.as_deref())
            .expect("decodes")
        else {
            continue;
        };
        for (_, change) in rekey::rekey(&event, offset as i64) {
            let out = join::apply(&config, &mut join_state, &change).expect("join");
            for d in out.details {
                if let Some(accepted) = resolve::apply(&mut resolve_state, &d).expect("resolve") {
                    match accepted {
                        DetailChange::Upsert { id, doc, .. } => {
                            details.insert(id, serde_json::to_value(doc).expect("json"));
                        }
                        DetailChange::Delete { id, .. } => {
                            details.remove(&id);
                        }
                    }
                }
            }
            for delta in out.deltas {
                match aggregate::apply(&mut counters, &delta).expect("aggregate") {
                    aggregate::RollupChange::Upsert { rollup, id, doc } => {
                        rollups.insert(
                            format!("{}/{id}", rollup.as_str()),
                            serde_json::to_value(doc).expect("json"),
                        );
                    }
                    aggregate::RollupChange::Delete { rollup, id } => {
                        rollups.remove(&format!("{}/{id}", rollup.as_str()));
                    }
                }
            }
        }
    }
    (details, rollups)
}

/// Polls `check` until it returns `Ok`, or fails with its last error.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(200);
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {e}")
            }
            Err(_) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Describes how two folded outputs differ (for assertion messages).
pub fn diff(want: &BTreeMap<String, Value>, got: &BTreeMap<String, Value>) -> Result<(), String> {
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let differ: Vec<&String> = want
        .keys()
        .filter(|k| got.get(*k).is_some_and(|g| g != &want[*k]))
        .collect();
    if missing.is_empty() && extra.is_empty() && differ.is_empty() {
        return Ok(());
    }
    let first = differ
        .first()
        .map(|k| format!("\n  {k}: want {}\n  {k}: got  {}", want[*k], got[*k]))
        .unwrap_or_default();
    Err(format!(
        "{} missing (e.g. {:?}), {} extra (e.g. {:?}), {} different{first}",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(3).collect::<Vec<_>>(),
        differ.len()
    ))
}

/// An `outbound run` child process.
pub struct Outbound {
    pub child: Child,
    pub log: PathBuf,
}

pub struct RunSpec<'a> {
    pub app_id: &'a str,
    pub instance: &'a str,
    pub prefix: &'a str,
    pub state_dir: &'a Path,
    pub log_dir: &'a Path,
    pub partitions: i32,
}

impl Outbound {
    /// Starts `outbound run` with the engine only (the in-process sink off).
    pub fn start(spec: &RunSpec<'_>, generation: usize) -> Self {
        Self::start_with_env(spec, generation, &[])
    }

    /// Starts `outbound run` with further environment variables, set after
    /// the defaults so they override them (e.g. `OUTBOUND_SINK__IN_RUN=true`).
    pub fn start_with_env(spec: &RunSpec<'_>, generation: usize, env: &[(&str, &str)]) -> Self {
        Self::start_with(spec, generation, env, &[])
    }

    /// [`Outbound::start_with_env`] with further flags, after the defaults
    /// (a repeated flag's last value wins).
    pub fn start_with(
        spec: &RunSpec<'_>,
        generation: usize,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        std::fs::create_dir_all(spec.log_dir).expect("log dir");
        let log = spec
            .log_dir
            .join(format!("{}-{generation}.log", spec.instance));
        let file = std::fs::File::create(&log).expect("log file");
        // Off unless the caller observes the process (any free port) or asks
        // for an address.
        let metrics = if env.iter().any(|(k, _)| *k == OBSERVED) {
            "127.0.0.1:0"
        } else {
            env.iter()
                .find(|(k, _)| *k == "OUTBOUND_METRICS__LISTEN")
                .map_or("", |(_, v)| v)
        };
        let child = Command::new(outbound_bin())
            .args([
                "run",
                "--app-id",
                spec.app_id,
                "--instance-id",
                spec.instance,
                "--topic-prefix",
                spec.prefix,
            ])
            .args([
                "--partitions",
                &spec.partitions.to_string(),
                "--metrics-listen",
                metrics,
            ])
            .arg("--state-dir")
            .arg(spec.state_dir)
            .args(args)
            .env("OUTBOUND_KAFKA__BOOTSTRAP_SERVERS", bootstrap())
            .env("OUTBOUND_SINK__IN_RUN", "false")
            // Purge the repartition topics often enough for tests to see it.
            .env("OUTBOUND_KAFKA__PURGE_INTERVAL_MS", "1000")
            // OUTBOUND_TEST_RUST_LOG: more detail when a test is being looked into.
            .env(
                "RUST_LOG",
                std::env::var("OUTBOUND_TEST_RUST_LOG")
                    .unwrap_or_else(|_| "info,rdkafka=warn".into()),
            )
            .env("NO_COLOR", "1")
            .envs(env.iter().copied().filter(|(k, _)| *k != OBSERVED))
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("outbound binary starts");
        Self { child, log }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "outbound did not stop within 60 s of SIGTERM; log {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and assert a clean exit, with the log's tail if not.
    pub fn stop_cleanly(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "clean exit on SIGTERM: {status}; log:\n{}",
            self.log_tail(40)
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, for failure messages (the log's
    /// temporary directory is gone once the test unwinds).
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts `outbound run` with its metrics endpoint on a free port
    /// (see [`Outbound::http`]), and further environment variables.
    pub fn start_observed(spec: &RunSpec<'_>, generation: usize, env: &[(&str, &str)]) -> Self {
        let mut env = env.to_vec();
        env.push((OBSERVED, "1"));
        Self::start_with_env(spec, generation, &env)
    }

    /// The metrics endpoint's address, once the process has logged it.
    pub fn metrics_addr(&self) -> Option<String> {
        let log = self.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("metrics endpoint listening"))?;
        let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
        Some(addr.to_owned())
    }

    /// GET `path` of the process's metrics endpoint: (status, body).
    pub fn http(&self, path: &str) -> Result<(u16, String), String> {
        let addr = self
            .metrics_addr()
            .ok_or_else(|| "the metrics endpoint is not up yet".to_owned())?;
        http_get(&addr, path)
    }

    /// Waits until `/readyz` answers 200: every assigned task running.
    pub fn wait_ready(&self, timeout: Duration) {
        wait_for(
            "the instance to be ready (/readyz)",
            timeout,
            || match self.http("/readyz") {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => Err(format!("{status} {body}")),
                Err(e) => Err(e),
            },
        );
    }

    /// The value of one sample of `/metrics` (summed over label sets that
    /// contain every one of `labels`, e.g. `stage="join"`).
    pub fn metric(&self, name: &str, labels: &[&str]) -> Result<f64, String> {
        let (_, body) = self.http("/metrics")?;
        let mut sum = None;
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').ok_or("malformed line")?;
            let metric = series.split('{').next().unwrap_or(series);
            if metric == name && labels.iter().all(|l| series.contains(l)) {
                let v: f64 = value.parse().map_err(|e| format!("{line}: {e}"))?;
                *sum.get_or_insert(0.0) += v;
            }
        }
        sum.ok_or_else(|| format!("no sample of {name} {labels:?}"))
    }

    /// CPU time the process has used so far (user + system, every thread).
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.child.id())
    }

    /// CPU time each live thread has used so far (see `thread_cpu_times_of`).
    pub fn thread_cpu_times(&self) -> BTreeMap<u32, (String, Duration)> {
        thread_cpu_times_of(self.child.id())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Marks a start that serves the metrics endpoint (not passed on).
const OBSERVED: &str = "__OUTBOUND_TEST_OBSERVED";

/// CPU time process `pid` has used so far (user + system, every thread),
/// from `/proc/<pid>/stat`.
pub fn cpu_time_of(pid: u32) -> Duration {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    stat_cpu(&stat).1
}

/// CPU time each live thread of process `pid` has used so far, by thread
/// id, with its name (`/proc/<pid>/task/*/stat`): which thread spent it.
pub fn thread_cpu_times_of(pid: u32) -> BTreeMap<u32, (String, Duration)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            Some((tid, stat_cpu(&stat)))
        })
        .collect()
}

/// (name, user + system CPU) of one `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> (String, Duration) {
    let name = stat
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map_or_else(String::new, |(name, _)| name.to_owned());
    // Fields after the command (which may hold spaces) start past its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at
    // field 3.
    let ticks: u64 = [11, 12]
        .iter()
        .map(|i| {
            fields
                .get(*i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    (name, Duration::from_millis(ticks * 1000 / clock_ticks()))
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), once.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// The `outbound` binary the tests run: this build's, or the one named by
/// `OUTBOUND_TEST_BIN` (to run the tests against another build, e.g. the
/// one before a fix).
pub fn outbound_bin() -> PathBuf {
    std::env::var_os("OUTBOUND_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_outbound")))
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}

/// Brings up one of the local stack's optional components (`stack/stack.sh
/// up NAME`, idempotent) and returns its directory under the stack dir and
/// the variables of its `credentials.env`.
pub fn stack_component(name: &str) -> (PathBuf, BTreeMap<String, String>) {
    // The tests of one binary run on threads: two `up`s of one component
    // at once would both start it.
    static UP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _up = UP.lock().unwrap_or_else(|e| e.into_inner());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stack_dir = std::env::var_os("OUTBOUND_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".stack"));
    let out = Command::new(repo.join("stack/stack.sh"))
        .args(["up", name])
        .env("OUTBOUND_STACK_DIR", &stack_dir)
        .output()
        .expect("stack/stack.sh runs");
    assert!(
        out.status.success(),
        "stack/stack.sh up {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = stack_dir.join(name);
    let text = std::fs::read_to_string(dir.join("credentials.env"))
        .unwrap_or_else(|e| panic!("{name}/credentials.env: {e}"));
    let vars = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (dir, vars)
}

/// The tests that each run instances under load: run concurrently on a
/// two-core machine beside the stack, they starve each other (and the
/// broker) past their deadlines. Each holds this for its whole run. A mutex
/// orders the tests of one binary; a lock file orders them across binaries,
/// which scripts/run-tests.py runs several at a time. The lock file is the
/// stack's (`OUTBOUND_STACK_DIR`, which run-tests sets for a binary on a
/// private stack; the target dir for the shared one): what such tests starve
/// is the broker they share.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct OneAtATime {
    _file: std::fs::File,
    _guard: std::sync::MutexGuard<'static, ()>,
}

pub fn one_at_a_time() -> OneAtATime {
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = std::env::var_os("OUTBOUND_STACK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("creating the lock directory {}: {e}", dir.display()));
    let path = dir.join("one-at-a-time.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening the lock file {}: {e}", path.display()));
    // Released when the file is closed, also if the test process dies.
    file.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    OneAtATime {
        _file: file,
        _guard: guard,
    }
}

/// GET `http://{addr}{path}`: (status, body), any status.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut resp = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading {path}: {e}"))?;
    Ok((status, body))
}
