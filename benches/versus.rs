//! outbound against the Kafka Streams baseline (benches/kafka-streams/), in
//! one run, on the same broker and the same source topics (issue #15):
//!
//! 1. fills three source topics with N generated Debezium changes (the
//!    generator of tests/common/history.rs: realistic mix and sizes, replays,
//!    tombstones; configurable key skew);
//! 2. **throughput**, each system in turn from an empty state: source
//!    records/s from the first consumed (the group's first committed offset)
//!    to the last output committed (its arrival at a `read_committed` reader
//!    of both output topics); the folded outputs must equal the pure
//!    pipeline's batch result, and each other byte for byte;
//! 3. **restore**: the state directory deleted, process start to ready (all
//!    tasks restored from the changelogs), and records restored per second;
//! 4. **latency**, at a fixed rate of half the lower throughput, on fresh
//!    topics: p50/p99/p999 from the source record's timestamp to the output
//!    record being readable `read_committed` (after a warm-up);
//! 5. peak RSS (VmHWM) and CPU-seconds per million source records of the
//!    throughput run.
//!
//! Writes `<target dir>/bench/report.json` and prints a table with the ratio.
//!
//!   scripts/bench-versus.sh                       # 100 000 changes, no skew
//!   OUTBOUND_BENCH_CHANGES=300000 OUTBOUND_BENCH_SKEW=2 scripts/bench-versus.sh
//!
//! Other knobs: OUTBOUND_BENCH_LATENCY_SECS (30; 0 skips the latency phase),
//! OUTBOUND_BENCH_WARMUP_SECS (10; then on until the system keeps up, 120 s at
//! most), OUTBOUND_BENCH_PLAIN_PERCENT (20: the share
//! of backlog records written without the schema wrapper, as a connector with
//! `schemas.enable=false` writes them), KSTREAMS_JAVA_OPTS (-Xmx1g),
//! OUTBOUND_TEST_BOOTSTRAP (127.0.0.1:9092), OUTBOUND_BENCH_PROFILE (`cpu` or
//! `offcpu`: `perf record` attached to outbound's throughput run),
//! OUTBOUND_BENCH_ONLY=outbound (outbound's throughput run alone, to profile),
//! `latency` (both latency runs alone) or `latency-outbound`, at
//! OUTBOUND_BENCH_RATE records/s (6000); OUTBOUND_BENCH_LOG (outbound's
//! RUST_LOG, `info,rdkafka=warn`).
//! outbound's own `OUTBOUND_*` settings pass through to it (e.g.
//! OUTBOUND_STREAM_THREADS=2). Needs `stack/stack.sh up kafka`,
//! Java 17 and Maven (the baseline is built by benches/kafka-streams/build.sh).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a benchmark reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use common::history::{self, Generator, SourceRecord, Table};

const PARTITIONS: i32 = 4;
const SOURCE_PARTITIONS: i32 = 2;
const METRICS_ADDR: &str = "127.0.0.1:9467";
const DEADLINE: Duration = Duration::from_secs(30 * 60);
/// How long a caught-up system may keep its outputs unequal to the expected
/// ones before the bench gives up on it (and reports the difference).
const SETTLE: Duration = Duration::from_secs(90);

fn bootstrap() -> String {
    common::bootstrap()
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(f))
}

fn admin() -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .context("admin client")
}

/// Creates topics; `compacted` as outbound creates its outputs.
fn create_topics(names: &[String], partitions: i32, compacted: bool) -> anyhow::Result<()> {
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            let t = NewTopic::new(n, partitions, TopicReplication::Fixed(1));
            if compacted {
                t.set("cleanup.policy", "compact")
                    .set("delete.retention.ms", "86400000")
                    .set("min.compaction.lag.ms", "0")
            } else {
                t
            }
        })
        .collect();
    for r in block_on(admin()?.create_topics(topics.iter(), &AdminOptions::new()))?
        .context("create topics")?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

fn delete_topics(prefix: &str) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
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
    block_on(admin()?.delete_topics(&refs, &AdminOptions::new()))?.context("delete topics")?;
    Ok(())
}

fn producer(linger_ms: &str) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms)
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("producer")
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    r: &SourceRecord,
    value: Option<&[u8]>,
    timestamp: Option<i64>,
) {
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(&r.key);
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    if let Some(ts) = timestamp {
        rec = rec.timestamp(ts);
    }
    while let Err((_, back)) = producer.send(rec) {
        rec = back;
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn source_topics(prefix: &str) -> Vec<String> {
    Table::ALL
        .iter()
        .map(|t| common::topic_of(prefix, *t))
        .collect()
}

/// Every partition of `topics` with its end offset (log end: the source
/// topics are not transactional, so a caught-up group has committed it).
fn end_offsets(topics: &[String], partitions: i32) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()?;
    let mut out = Vec::new();
    for t in topics {
        for p in 0..partitions {
            let (_, high) = consumer.fetch_watermarks(t, p, Duration::from_secs(10))?;
            out.push((t.clone(), p, high));
        }
    }
    Ok(out)
}

/// The committed offsets of `group` on the given partitions (-1: none yet).
struct GroupOffsets {
    consumer: BaseConsumer,
    tpl: TopicPartitionList,
}

impl GroupOffsets {
    fn new(group: &str, partitions: &[(String, i32, i64)]) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for (t, p, _) in partitions {
            tpl.add_partition(t, *p);
        }
        Ok(Self { consumer, tpl })
    }

    fn committed(&self) -> anyhow::Result<Vec<i64>> {
        let c = self
            .consumer
            .committed_offsets(self.tpl.clone(), Duration::from_secs(5))?;
        Ok(c.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------
// The output reader

/// What a `read_committed` reader of the two output topics has seen.
#[derive(Default)]
struct Fold {
    /// (topic index, key) → latest value; tombstones remove.
    latest: BTreeMap<(usize, Vec<u8>), Vec<u8>>,
    records: u64,
    last_arrival: Option<Instant>,
    /// Milliseconds from each record's timestamp to its arrival, for records
    /// whose timestamp is at least `latency_from`.
    latencies: Vec<i64>,
    /// The same, per output topic (details, rollups).
    latencies_by_topic: [Vec<i64>; 2],
}

struct Reader {
    fold: Arc<Mutex<Fold>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Reader {
    /// Reads every partition of `topics` from the start. Latencies are kept
    /// for records stamped at or after `latency_from` (epoch ms).
    fn start(topics: [String; 2], latency_from: Option<i64>) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", common::unique("versus-reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.max.bytes", "52428800")
            .create()
            .context("output reader")?;
        let mut tpl = TopicPartitionList::new();
        for t in &topics {
            for p in 0..PARTITIONS {
                tpl.add_partition_offset(t, p, Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        let fold = Arc::new(Mutex::new(Fold::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (fold.clone(), stop.clone());
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            while !s.load(Ordering::Relaxed) {
                let Some(m) = consumer.poll(Duration::from_millis(20)) else {
                    continue;
                };
                let m = m.map_err(|e| anyhow::anyhow!("reading the outputs: {e}"))?;
                let (now, now_ms) = (Instant::now(), epoch_ms());
                let topic = usize::from(m.topic() != topics[0]);
                let key = m.key().unwrap_or_default().to_vec();
                let mut fold = f.lock().map_err(|_| anyhow::anyhow!("fold poisoned"))?;
                fold.records += 1;
                fold.last_arrival = Some(now);
                if let (Some(from), Some(ts)) = (latency_from, m.timestamp().to_millis()) {
                    if ts >= from {
                        fold.latencies.push(now_ms - ts);
                        fold.latencies_by_topic[topic].push(now_ms - ts);
                    }
                }
                match m.payload() {
                    Some(v) => {
                        fold.latest.insert((topic, key), v.to_vec());
                    }
                    None => {
                        fold.latest.remove(&(topic, key));
                    }
                }
            }
            Ok(())
        });
        Ok(Self {
            fold,
            stop,
            thread: Some(thread),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Fold) -> T) -> anyhow::Result<T> {
        let fold = self
            .fold
            .lock()
            .map_err(|_| anyhow::anyhow!("fold poisoned"))?;
        Ok(f(&fold))
    }

    fn finish(mut self) -> anyhow::Result<Fold> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("output reader panicked"))??;
        }
        let fold = std::mem::take(
            &mut *self
                .fold
                .lock()
                .map_err(|_| anyhow::anyhow!("fold poisoned"))?,
        );
        Ok(fold)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Expected outputs, (topic index, key) → JSON.
type Expected = BTreeMap<(usize, Vec<u8>), Value>;

fn expected_outputs(history: &history::History, prefix: &str) -> Expected {
    let (details, rollups) = common::expected(history, prefix);
    let mut out = Expected::new();
    for (k, v) in details {
        out.insert((0, k.into_bytes()), v);
    }
    for (k, v) in rollups {
        out.insert((1, k.into_bytes()), v);
    }
    out
}

/// How a fold differs from the expected outputs; `None` when equal.
fn difference(fold: &Fold, want: &Expected) -> Option<String> {
    let mut missing = 0usize;
    let mut differ: Vec<String> = Vec::new();
    let mut n_differ = 0usize;
    for (k, w) in want {
        match fold.latest.get(k) {
            None => missing += 1,
            Some(got) => {
                if serde_json::from_slice::<Value>(got).ok().as_ref() != Some(w) {
                    n_differ += 1;
                    if differ.len() < 3 {
                        differ.push(format!(
                            "{}: want {w}, got {}",
                            String::from_utf8_lossy(&k.1),
                            String::from_utf8_lossy(got)
                        ));
                    }
                }
            }
        }
    }
    let extra: Vec<String> = fold
        .latest
        .keys()
        .filter(|k| !want.contains_key(*k))
        .map(|k| String::from_utf8_lossy(&k.1).into_owned())
        .collect();
    if missing == 0 && n_differ == 0 && extra.is_empty() {
        return None;
    }
    Some(format!(
        "{missing} missing, {} extra (e.g. {:?}), {n_differ} different: {}",
        extra.len(),
        extra.iter().take(3).collect::<Vec<_>>(),
        differ.join("; ")
    ))
}

// ---------------------------------------------------------------------------
// The two systems as child processes

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Outbound,
    KafkaStreams,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Outbound => "outbound",
            System::KafkaStreams => "kstreams",
        }
    }
}

/// What the Kafka Streams app prints about itself (its `KSTREAMS ...` lines).
#[derive(Default)]
struct KsEvents {
    state: String,
    restored_partitions: u64,
    restored_records: u64,
}

struct Proc {
    system: System,
    child: Child,
    log: PathBuf,
    events: Arc<Mutex<KsEvents>>,
    started: Instant,
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

impl Proc {
    fn spawn(
        system: System,
        classpath: &str,
        app: &str,
        prefix: &str,
        state: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)?;
        let started = Instant::now();
        let events = Arc::new(Mutex::new(KsEvents::default()));
        let child = match system {
            System::Outbound => Command::new(env!("CARGO_BIN_EXE_outbound"))
                .args(["run", "--app-id", app, "--instance-id", "bench"])
                .args(["--topic-prefix", prefix])
                .args(["--partitions", &PARTITIONS.to_string()])
                .args(["--metrics-listen", METRICS_ADDR])
                .arg("--state-dir")
                .arg(state)
                .env("OUTBOUND_KAFKA__BOOTSTRAP_SERVERS", bootstrap())
                .env("OUTBOUND_SINK__IN_RUN", "false")
                .env(
                    "RUST_LOG",
                    std::env::var("OUTBOUND_BENCH_LOG")
                        .unwrap_or_else(|_| "info,rdkafka=warn".into()),
                )
                .env("NO_COLOR", "1")
                .stdout(Stdio::from(file.try_clone()?))
                .stderr(Stdio::from(file))
                .spawn()
                .context("starting outbound run")?,
            System::KafkaStreams => {
                let opts = std::env::var("KSTREAMS_JAVA_OPTS").unwrap_or_else(|_| "-Xmx1g".into());
                let mut child = Command::new("java")
                    .args(opts.split_whitespace())
                    .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
                    .args(["-cp", classpath, "dev.outbound.kstreams.App"])
                    .args(["--app-id", app, "--bootstrap", &bootstrap()])
                    .args(["--topic-prefix", prefix])
                    .args(["--partitions", &PARTITIONS.to_string()])
                    .arg("--state-dir")
                    .arg(state)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::from(file.try_clone()?))
                    .spawn()
                    .context("starting the Kafka Streams baseline (java)")?;
                let stdout = child.stdout.take().context("java stdout")?;
                let ev = events.clone();
                let mut file = file;
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let _ = writeln!(file, "{line}");
                        let words: Vec<&str> = line.split_whitespace().collect();
                        let Ok(mut e) = ev.lock() else { break };
                        match words.as_slice() {
                            ["KSTREAMS", "state", s, _] => e.state = (*s).to_owned(),
                            ["KSTREAMS", "restored", _, _, n, _] => {
                                e.restored_partitions += 1;
                                e.restored_records += n.parse::<u64>().unwrap_or(0);
                            }
                            _ => {}
                        }
                    }
                });
                child
            }
        };
        Ok(Self {
            system,
            child,
            log,
            events,
            started,
        })
    }

    fn check_alive(&mut self, what: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}) while {what}; log {}",
                self.system.name(),
                self.log.display()
            );
        }
        Ok(())
    }

    /// Ready to process: every assigned task restored.
    fn ready(&self, restores: u64) -> bool {
        match self.system {
            System::Outbound => ureq::get(&format!("http://{METRICS_ADDR}/readyz"))
                .call()
                .is_ok_and(|r| r.status() == 200),
            System::KafkaStreams => self
                .events
                .lock()
                .is_ok_and(|e| e.state == "RUNNING" && e.restored_partitions >= restores),
        }
    }

    fn restored_records(&self) -> f64 {
        match self.system {
            System::Outbound => scrape_sum("outbound_restored_records_total"),
            System::KafkaStreams => self
                .events
                .lock()
                .map_or(0.0, |e| e.restored_records as f64),
        }
    }

    fn wait_ready(&mut self, restores: u64) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.check_alive("starting")?;
            if self.ready(restores) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("{} not ready within {DEADLINE:?}", self.system.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// User plus system CPU seconds of the process so far (all threads).
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Ok(ticks / clock_ticks())
    }

    /// CPU seconds per thread name (threads of one name summed), busiest first.
    fn thread_cpu(&self) -> anyhow::Result<Vec<(String, f64)>> {
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        let ticks = clock_ticks();
        for entry in std::fs::read_dir(format!("/proc/{}/task", self.child.id()))? {
            let Ok(stat) = std::fs::read_to_string(entry?.path().join("stat")) else {
                continue;
            };
            let name = stat
                .split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map_or("?", |(n, _)| n);
            // Number suffixes (rdk:broker3, kafka-producer-network-thread | x) grouped.
            let name: String = name
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .to_owned();
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
                + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            *by_name.entry(name).or_default() += t / ticks;
        }
        let mut v: Vec<(String, f64)> = by_name.into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(v)
    }

    /// Peak resident set size (VmHWM), MiB.
    fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Ok(kb / 1024.0)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.try_wait()? {
                // The JVM exits 143 on SIGTERM after its shutdown hooks ran.
                if !status.success() && status.code() != Some(143) {
                    bail!(
                        "{} exited with {status}; log {}",
                        self.system.name(),
                        self.log.display()
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not stop within 90 s", self.system.name());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `perf record` attached to outbound's throughput run, when
/// OUTBOUND_BENCH_PROFILE asks: `cpu` (on-CPU call graphs) or `offcpu`
/// (scheduler switches with their call graphs: where threads wait).
/// Writes `<target dir>/bench/perf-<kind>.data` for `perf report`.
struct Profiler {
    child: Child,
}

impl Profiler {
    fn attach(system: System, pid: u32) -> anyhow::Result<Option<Self>> {
        let Ok(kind) = std::env::var("OUTBOUND_BENCH_PROFILE") else {
            return Ok(None);
        };
        if system != System::Outbound {
            return Ok(None);
        }
        let out = bench_dir()?.join(format!("perf-{kind}.data"));
        let mut cmd = Command::new("perf");
        cmd.arg("record").arg("-o").arg(&out);
        match kind.as_str() {
            "cpu" => cmd.args(["-F", "499", "--call-graph", "dwarf,16384"]),
            "offcpu" => cmd.args(["-e", "sched:sched_switch", "--call-graph", "dwarf,16384"]),
            other => bail!("OUTBOUND_BENCH_PROFILE={other:?}: expected cpu or offcpu"),
        };
        let child = cmd
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record (Debian: linux-perf)")?;
        println!("profiling outbound ({kind}) into {}", out.display());
        Ok(Some(Self { child }))
    }

    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

fn bench_dir() -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let out = target.join("bench");
    std::fs::create_dir_all(&out)?;
    Ok(out)
}

fn scrape_sum(name: &str) -> f64 {
    let Ok(mut resp) = ureq::get(&format!("http://{METRICS_ADDR}/metrics")).call() else {
        return 0.0;
    };
    let Ok(text) = resp.body_mut().read_to_string() else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------
// The phases

struct Throughput {
    records_per_s: f64,
    processing_s: f64,
    startup_s: f64,
    cpu_s: f64,
    peak_rss_mib: f64,
    outputs: u64,
    fold: Fold,
    mismatch: Option<String>,
}

fn output_topics(app: &str) -> [String; 2] {
    [format!("{app}-details"), format!("{app}-rollups")]
}

fn create_outputs(app: &str) -> anyhow::Result<()> {
    create_topics(&output_topics(app), PARTITIONS, true)?;
    create_topics(&[format!("{app}-dlq")], PARTITIONS, false)
}

fn throughput(
    system: System,
    cp: &str,
    prefix: &str,
    app: &str,
    state: &Path,
    dir: &Path,
    want: &Expected,
) -> anyhow::Result<Throughput> {
    let ends = end_offsets(&source_topics(prefix), SOURCE_PARTITIONS)?;
    let total: i64 = ends.iter().map(|e| e.2).sum();
    create_outputs(app)?;
    let reader = Reader::start(output_topics(app), None)?;
    let group = GroupOffsets::new(app, &ends)?;
    let mut proc = Proc::spawn(
        system,
        cp,
        app,
        prefix,
        state,
        dir.join(format!("{}-throughput.log", system.name())),
    )?;
    let profiler = Profiler::attach(system, proc.child.id())?;
    let deadline = Instant::now() + DEADLINE;
    let mut first: Option<Instant> = None;
    let mut caught_up: Option<Instant> = None;
    let mismatch = loop {
        proc.check_alive("processing the backlog")?;
        if Instant::now() > deadline {
            bail!(
                "{}: backlog not processed within {DEADLINE:?}",
                system.name()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
        let Ok(committed) = group.committed() else {
            continue;
        };
        if first.is_none() && committed.iter().any(|o| *o > 0) {
            first = Some(Instant::now());
        }
        let done = committed.iter().zip(&ends).all(|(c, e)| *c >= e.2);
        if !done {
            continue;
        }
        let since = *caught_up.get_or_insert_with(Instant::now);
        let quiet = reader.with(|f| {
            f.last_arrival
                .is_some_and(|t| t.elapsed() > Duration::from_millis(500))
        })?;
        if !quiet {
            continue;
        }
        let diff = reader.with(|f| {
            if f.latest.len() == want.len() {
                difference(f, want)
            } else {
                Some(format!(
                    "{} output keys, {} expected",
                    f.latest.len(),
                    want.len()
                ))
            }
        })?;
        match diff {
            None => break None,
            Some(d) if since.elapsed() > SETTLE => break Some(d),
            Some(_) => {}
        }
    };
    let cpu_s = proc.cpu_seconds()?;
    let peak_rss_mib = proc.peak_rss_mib()?;
    let threads = proc.thread_cpu()?;
    if system == System::Outbound {
        // Where the loop's time goes: commits (flush + EndTxn) against the whole run.
        let (n, secs) = (
            scrape_sum("outbound_transaction_commit_seconds_count"),
            scrape_sum("outbound_transaction_commit_seconds_sum"),
        );
        println!(
            "outbound: {n:.0} transactions, {secs:.2} s committing ({:.1} ms each)",
            1000.0 * secs / n.max(1.0)
        );
    }
    if let Some(p) = profiler {
        p.stop()?;
    }
    let spawned = proc.started;
    proc.stop()?;
    let fold = reader.finish()?;
    let (Some(first), Some(last)) = (first, fold.last_arrival) else {
        bail!("{}: no record consumed or no output", system.name());
    };
    let processing = last.saturating_duration_since(first);
    println!(
        "{}: {:.1} CPU-s over {:.1} s of processing ({:.0}% of one core); busiest threads: {}",
        system.name(),
        cpu_s,
        processing.as_secs_f64(),
        100.0 * cpu_s / processing.as_secs_f64().max(1e-9),
        threads
            .iter()
            .take(6)
            .map(|(name, s)| format!("{name} {s:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Throughput {
        records_per_s: total as f64 / processing.as_secs_f64().max(1e-9),
        processing_s: processing.as_secs_f64(),
        startup_s: first.saturating_duration_since(spawned).as_secs_f64(),
        cpu_s,
        peak_rss_mib,
        outputs: fold.records,
        fold,
        mismatch,
    })
}

struct Restore {
    seconds: f64,
    records: f64,
    peak_rss_mib: f64,
}

fn restore(
    system: System,
    cp: &str,
    prefix: &str,
    app: &str,
    state: &Path,
    dir: &Path,
) -> anyhow::Result<Restore> {
    let changelogs: Vec<String> = ["join", "details", "aggregate"]
        .iter()
        .map(|s| format!("{app}-{s}-changelog"))
        .collect();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()?;
    let mut restores = 0u64;
    for t in &changelogs {
        for p in 0..PARTITIONS {
            let (low, high) = consumer.fetch_watermarks(t, p, Duration::from_secs(10))?;
            restores += u64::from(high > low);
        }
    }
    std::fs::remove_dir_all(state).context("deleting the state directory")?;
    let mut proc = Proc::spawn(
        system,
        cp,
        app,
        prefix,
        state,
        dir.join(format!("{}-restore.log", system.name())),
    )?;
    let ready = proc.wait_ready(restores)?;
    let out = Restore {
        seconds: ready.duration_since(proc.started).as_secs_f64(),
        records: proc.restored_records(),
        peak_rss_mib: proc.peak_rss_mib()?,
    };
    proc.stop()?;
    Ok(out)
}

/// The byte range of the digits of `"source":{…"ts_ms":<digits>` in a rendered record.
fn source_ts_digits(value: &[u8]) -> Option<(usize, usize)> {
    let find = |hay: &[u8], from: usize, needle: &[u8]| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let source = find(value, 0, b"\"source\":{")?;
    let at = find(value, source, b"\"ts_ms\":")? + 8;
    let len = value[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    Some((at, at + len))
}

struct Latency {
    rate: f64,
    warmup_s: f64,
    sent: usize,
    samples: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

fn percentile(sorted: &[i64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64
}

#[allow(clippy::too_many_arguments)]
fn latency(
    system: System,
    cp: &str,
    run: &str,
    state_root: &Path,
    logs: &Path,
    records: &[SourceRecord],
    rate: f64,
    warmup: usize,
) -> anyhow::Result<Latency> {
    let prefix = format!("{run}-lat-{}", system.name());
    let app = format!("{prefix}-app");
    create_topics(&source_topics(&prefix), SOURCE_PARTITIONS, false)?;
    create_outputs(&app)?;
    let state = state_root.join(format!("{}-latency-state", system.name()));
    let mut proc = Proc::spawn(
        system,
        cp,
        &app,
        &prefix,
        &state,
        logs.join(format!("{}-latency.log", system.name())),
    )?;
    proc.wait_ready(0)?;
    let producer = producer("1")?;
    let sources = source_topics(&prefix);
    let group = GroupOffsets::new(&app, &end_offsets(&sources, SOURCE_PARTITIONS)?)?;
    // Warm-up: at least `warmup` records, and on until the system keeps up
    // (less than a second of input not yet committed) or for 120 s at most;
    // past `warmup` it replays the warm-up records. Then `measured` records.
    let measured = &records[warmup.min(records.len())..];
    let start = Instant::now();
    let mut sent = 0usize;
    let mut last_check = Instant::now();
    let send_one = |r: &SourceRecord, sent: &mut usize| -> anyhow::Result<()> {
        let due = start + Duration::from_secs_f64(*sent as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let ts = epoch_ms();
        let value = r.value.as_ref().map(|v| {
            let mut v = v.clone();
            if let Some((a, b)) = source_ts_digits(&v) {
                v.splice(a..b, ts.to_string().into_bytes());
            }
            v
        });
        send(
            &producer,
            &common::topic_of(&prefix, r.table),
            r,
            value.as_deref(),
            Some(ts),
        );
        *sent += 1;
        Ok(())
    };
    let mut warmed = 0usize;
    loop {
        let r = &records[warmed % warmup.max(1)];
        send_one(r, &mut sent)?;
        warmed += 1;
        if warmed.is_multiple_of(1000) {
            proc.check_alive("warming up")?;
        }
        if warmed < warmup || last_check.elapsed() < Duration::from_millis(500) {
            continue;
        }
        last_check = Instant::now();
        let ends = end_offsets(&sources, SOURCE_PARTITIONS)?;
        let lag: i64 = group
            .committed()
            .map(|c| c.iter().zip(&ends).map(|(c, e)| e.2 - c.max(&0)).sum())
            .unwrap_or(i64::MAX);
        if (lag as f64) < rate || start.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let warmup_s = start.elapsed().as_secs_f64();
    // Records stamped from now on are measured.
    let from = epoch_ms();
    let reader = Reader::start(output_topics(&app), Some(from))?;
    let measure_start = Instant::now();
    let sent_before = sent;
    for (i, r) in measured.iter().enumerate() {
        send_one(r, &mut sent)?;
        if i % 1000 == 0 {
            proc.check_alive("processing at a fixed rate")?;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    let sent_for = measure_start.elapsed();
    let ends = end_offsets(&sources, SOURCE_PARTITIONS)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        proc.check_alive("draining")?;
        let done = group
            .committed()
            .is_ok_and(|c| c.iter().zip(&ends).all(|(c, e)| *c >= e.2));
        // Committed sources are not yet outputs: the later stages may still
        // be at work. No output for 5 s after that is taken as drained.
        let quiet = reader.with(|f| {
            f.last_arrival
                .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
        })?;
        if done && quiet {
            break;
        }
        if Instant::now() > deadline {
            bail!("{}: latency run did not drain within 300 s", system.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    proc.stop()?;
    let fold = reader.finish()?;
    let mut lat = fold.latencies;
    lat.sort_unstable();
    for (name, mut l) in ["details", "rollups"]
        .into_iter()
        .zip(fold.latencies_by_topic)
    {
        l.sort_unstable();
        println!(
            "{}: {name} latency p50/p99/p999 {:.0}/{:.0}/{:.0} ms ({} records)",
            system.name(),
            percentile(&l, 0.50),
            percentile(&l, 0.99),
            percentile(&l, 0.999),
            l.len()
        );
    }
    Ok(Latency {
        rate: (sent - sent_before) as f64 / sent_for.as_secs_f64().max(1e-9),
        sent: sent - sent_before,
        warmup_s,
        samples: lat.len(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        p999: percentile(&lat, 0.999),
        max: lat.last().copied().unwrap_or_default() as f64,
    })
}

/// The source records of a latency run: enough for the warm-up and the
/// measured seconds at `rate`.
fn latency_records(
    run: &str,
    skew: f64,
    rate: f64,
    warmup_secs: f64,
    latency_secs: f64,
) -> Vec<SourceRecord> {
    let n = ((warmup_secs + latency_secs) * rate).ceil() as usize;
    // Every change renders at least one record: n changes are enough.
    let mut g = Generator::new(7, &format!("{run}-lat"), (n / 12).max(100) as u64).with_skew(skew);
    for _ in 0..n {
        g.step();
    }
    let mut records = g.finish().records;
    records.truncate(n);
    records
}

/// The envelope of a `{"schema":…,"payload":…}` record, alone.
fn without_schema(value: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(value).ok()?;
    serde_json::to_vec(v.get("payload")?).ok()
}

/// The Kafka Streams baseline's classpath, building it when needed.
fn build_baseline() -> anyhow::Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/kafka-streams/build.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed", script.display());
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

fn main() -> anyhow::Result<()> {
    let changes: usize = env_num("OUTBOUND_BENCH_CHANGES", 100_000)?;
    let skew: f64 = env_num("OUTBOUND_BENCH_SKEW", 0.0)?;
    let latency_secs: f64 = env_num("OUTBOUND_BENCH_LATENCY_SECS", 30.0)?;
    let warmup_secs: f64 = env_num("OUTBOUND_BENCH_WARMUP_SECS", 10.0)?;
    let plain_percent: usize = env_num("OUTBOUND_BENCH_PLAIN_PERCENT", 20)?;
    let cp = build_baseline()?;
    let run = common::unique("versus");
    // State directories in a temporary directory; the processes' logs kept.
    let state_dirs = tempfile::tempdir()?;
    let dir = state_dirs.path();
    let logs = bench_dir()?.join(format!("logs-{run}"));
    std::fs::create_dir_all(&logs)?;

    // A latency run alone (OUTBOUND_BENCH_ONLY=latency, or latency-outbound
    // for outbound alone) at OUTBOUND_BENCH_RATE records/s: to try settings.
    if let Some(which) = std::env::var("OUTBOUND_BENCH_ONLY")
        .ok()
        .filter(|o| o.starts_with("latency"))
    {
        let rate: f64 = env_num("OUTBOUND_BENCH_RATE", 6000.0)?;
        let systems: &[System] = if which == "latency-outbound" {
            &[System::Outbound]
        } else {
            &[System::Outbound, System::KafkaStreams]
        };
        let records = latency_records(&run, skew, rate, warmup_secs, latency_secs);
        for &system in systems {
            let l = latency(
                system,
                &cp,
                &run,
                dir,
                &logs,
                &records,
                rate,
                (warmup_secs * rate) as usize,
            )?;
            println!(
                "{}: latency at {:.0} records/s: p50/p99/p999/max {:.0}/{:.0}/{:.0}/{:.0} ms",
                system.name(),
                l.rate,
                l.p50,
                l.p99,
                l.p999,
                l.max
            );
        }
        delete_topics(&run)?;
        return Ok(());
    }

    // The backlog both systems process.
    let orders = (changes / 12).max(100) as u64;
    let mut g = Generator::new(42, &run, orders).with_skew(skew);
    for _ in 0..changes {
        g.step();
    }
    let history = g.finish();
    let sources = source_topics(&run);
    create_topics(&sources, SOURCE_PARTITIONS, false)?;
    let loader = producer("5")?;
    for (i, r) in history.records.iter().enumerate() {
        // Some records as a connector with `schemas.enable=false` writes
        // them: the bare envelope, typed by the decoders' heuristics.
        let plain = (plain_percent > 0 && (i * 37) % 100 < plain_percent)
            .then(|| r.value.as_deref().and_then(without_schema))
            .flatten();
        send(
            &loader,
            &common::topic_of(&run, r.table),
            r,
            plain.as_deref().or(r.value.as_deref()),
            None,
        );
    }
    loader.flush(Duration::from_secs(120))?;
    let source_records = history.records.len();
    let bytes: usize = history
        .records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Vec::len))
        .sum();
    let want = expected_outputs(&history, &run);
    println!(
        "versus: {changes} changes = {source_records} source records ({:.1} MiB), {orders} order ids, skew {skew}, in {run}.*; {} expected output keys",
        bytes as f64 / f64::from(1 << 20),
        want.len()
    );

    let mut results = BTreeMap::new();
    for system in [System::Outbound, System::KafkaStreams] {
        let app = format!("{run}-{}", system.name());
        let state = dir.join(format!("{}-state", system.name()));
        println!("{}: throughput…", system.name());
        let t = throughput(system, &cp, &run, &app, &state, &logs, &want)?;
        if let Some(m) = &t.mismatch {
            println!("{}: OUTPUTS DIFFER from the expected: {m}", system.name());
        }
        if std::env::var("OUTBOUND_BENCH_ONLY").is_ok_and(|o| o == "outbound") {
            // A profiling run: outbound's throughput alone.
            println!(
                "outbound alone: {:.0} source records/s, {:.2} s, {:.1} CPU-s, peak RSS {:.0} MiB",
                t.records_per_s, t.processing_s, t.cpu_s, t.peak_rss_mib
            );
            delete_topics(&run)?;
            return Ok(());
        }
        println!("{}: restore…", system.name());
        let r = restore(system, &cp, &run, &app, &state, &logs)?;
        results.insert(system.name(), (t, r));
    }
    let (ob, ks) = (&results["outbound"], &results["kstreams"]);
    // Record for record: the two folded output topics, byte for byte.
    let same_bytes = ob.0.fold.latest == ks.0.fold.latest;
    let byte_diffs =
        ob.0.fold
            .latest
            .iter()
            .filter(|(k, v)| ks.0.fold.latest.get(*k) != Some(*v))
            .count()
            + ks.0
                .fold
                .latest
                .keys()
                .filter(|k| !ob.0.fold.latest.contains_key(*k))
                .count();

    let mut lat = BTreeMap::new();
    let rate = 0.5 * ob.0.records_per_s.min(ks.0.records_per_s);
    if latency_secs > 0.0 {
        let warmup = (warmup_secs * rate) as usize;
        let records = latency_records(&run, skew, rate, warmup_secs, latency_secs);
        for system in [System::Outbound, System::KafkaStreams] {
            println!(
                "{}: latency at {rate:.0} records/s for {latency_secs} s (after a warm-up of {warmup_secs} s or more)…",
                system.name()
            );
            lat.insert(
                system.name(),
                latency(system, &cp, &run, dir, &logs, &records, rate, warmup)?,
            );
        }
    }

    // The report.
    let per_million = |t: &Throughput| t.cpu_s / source_records as f64 * 1e6;
    let side = |t: &Throughput, r: &Restore, l: Option<&Latency>| {
        json!({
            "throughput_records_per_s": t.records_per_s,
            "processing_s": t.processing_s,
            "startup_s": t.startup_s,
            "output_records": t.outputs,
            "outputs_equal_expected": t.mismatch.is_none(),
            "outputs_difference": t.mismatch,
            "cpu_s": t.cpu_s,
            "cpu_s_per_million_records": per_million(t),
            "peak_rss_mib": t.peak_rss_mib,
            "restore_s": r.seconds,
            "restored_records": r.records,
            "restore_records_per_s": r.records / r.seconds.max(1e-9),
            "restore_peak_rss_mib": r.peak_rss_mib,
            "latency": l.map(|l| json!({
                "rate_records_per_s": l.rate, "sent": l.sent, "samples": l.samples,
                "warmup_s": l.warmup_s,
                "p50_ms": l.p50, "p99_ms": l.p99, "p999_ms": l.p999, "max_ms": l.max,
            })),
        })
    };
    let report = json!({
        "changes": changes,
        "source_records": source_records,
        "source_mib": bytes as f64 / f64::from(1 << 20),
        "order_ids": orders,
        "skew": skew,
        "partitions": PARTITIONS,
        "source_partitions": SOURCE_PARTITIONS,
        "latency_rate_records_per_s": rate,
        "outputs_equal_byte_for_byte": same_bytes,
        "output_keys_differing": byte_diffs,
        "outbound": side(&ob.0, &ob.1, lat.get("outbound")),
        "kstreams": side(&ks.0, &ks.1, lat.get("kstreams")),
    });
    let path = bench_dir()?.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;

    println!();
    println!(
        "{changes} changes, {source_records} source records, skew {skew}; outputs {} ({} keys differ)",
        if same_bytes {
            "equal byte for byte"
        } else {
            "DIFFER"
        },
        byte_diffs
    );
    println!();
    println!("| measure | outbound | Kafka Streams | outbound ÷ Kafka Streams |");
    println!("|---|---|---|---|");
    let row = |name: &str, a: f64, b: f64, digits: usize| {
        println!(
            "| {name} | {a:.digits$} | {b:.digits$} | {:.2} |",
            ratio(a, b)
        );
    };
    row(
        "throughput, source records/s (higher is better)",
        ob.0.records_per_s,
        ks.0.records_per_s,
        0,
    );
    row(
        "backlog processing, s",
        ob.0.processing_s,
        ks.0.processing_s,
        2,
    );
    row(
        "start-up to first commit, s",
        ob.0.startup_s,
        ks.0.startup_s,
        2,
    );
    if let (Some(a), Some(b)) = (lat.get("outbound"), lat.get("kstreams")) {
        row("latency p50, ms (lower is better)", a.p50, b.p50, 0);
        row("latency p99, ms", a.p99, b.p99, 0);
        row("latency p999, ms", a.p999, b.p999, 0);
    }
    row(
        "restore, s to ready (lower is better)",
        ob.1.seconds,
        ks.1.seconds,
        2,
    );
    row(
        "restore, records/s",
        ob.1.records / ob.1.seconds,
        ks.1.records / ks.1.seconds,
        0,
    );
    row(
        "peak RSS, MiB (lower is better)",
        ob.0.peak_rss_mib,
        ks.0.peak_rss_mib,
        0,
    );
    row(
        "CPU-seconds per million source records",
        per_million(&ob.0),
        per_million(&ks.0),
        2,
    );
    println!();
    println!("report: {}; logs: {}", path.display(), logs.display());

    delete_topics(&run)?;
    if ob.0.mismatch.is_some() || ks.0.mismatch.is_some() || !same_bytes {
        bail!("the outputs differ: see above and {}", path.display());
    }
    Ok(())
}
