//! Engine throughput with exactly-once on (one instance) and restore rate,
//! each beside a baseline measured in the same run against the same broker:
//!
//! - **throughput**: a generated Debezium history (three source topics) is
//!   loaded first, then one `outbound run` processes the backlog through all
//!   four stages (rekey, join, details, aggregate: four transactional hops
//!   with changelog writes). Baseline: a bare `read_committed` consume →
//!   produce copy of the same source records to one topic, no transactions,
//!   no state — what one hop costs on this broker.
//! - **restore**: the instance is stopped, its state directory deleted and
//!   a fresh instance restores every task from the changelogs. Baseline: a
//!   plain `read_committed` consumer reading the same changelog partitions.
//!
//!   cargo bench --bench engine                          # 100 000 changes
//!   OUTBOUND_BENCH_CHANGES=300000 cargo bench --bench engine
//!
//! With `OUTBOUND_BENCH_BEFORE_BIN=<an earlier build's outbound>`, that build
//! is measured first, on the same source topics (an app of its own), and a
//! second table compares the two: `scripts/bench-engine.sh --before REV`
//! builds REV and runs this (issue #13: the engine redesign no slower than
//! the engine it replaced).
//!
//! Progress is read from the instance's own /metrics (records in per stage
//! against records out of the stage before), so the clock stops when the
//! last stage has consumed everything upstream produced. Needs
//! `stack/stack.sh up kafka`.
#![allow(clippy::print_stdout)] // a benchmark reports on stdout

#[path = "../tests/common/history.rs"]
#[allow(dead_code)] // the tests use more of the generator than the bench
mod history;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
const SOURCE_PARTITIONS: i32 = 2;
const METRICS_ADDR: &str = "127.0.0.1:9465";
const DEADLINE: Duration = Duration::from_secs(30 * 60);

fn bootstrap() -> String {
    std::env::var("OUTBOUND_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn topic_of(prefix: &str, table: history::Table) -> String {
    format!("{prefix}.{}.{}", table.db(), table.name())
}

fn admin() -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .context("admin client")
}

fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(f))
}

fn create_topics(names: &[String], partitions: i32) -> anyhow::Result<()> {
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in block_on(admin()?.create_topics(topics.iter(), &AdminOptions::new()))?
        .context("create topics")?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

/// Deletes every topic whose name starts with `prefix` (the bench's own).
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
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    block_on(admin()?.delete_topics(&refs, &AdminOptions::new()))?.context("delete topics")?;
    Ok(())
}

fn producer() -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("producer")
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    value: Option<&[u8]>,
) {
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key);
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    while let Err((_, back)) = producer.send(rec) {
        rec = back;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// End offset per topic partition.
type Ends = BTreeMap<(String, i32), i64>;

/// A `read_committed` consumer assigned to every partition of `topics`
/// from the beginning, with the end offset of each.
fn reader(topics: &[String]) -> anyhow::Result<(BaseConsumer, Ends)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("bench-reader-{}", nanos()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.max.bytes", "52428800")
        // As the engine's restore consumer: no 500 ms long polls on
        // partitions already read to their end.
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("reader")?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
                ends.insert((topic.clone(), p.id()), high);
            }
        }
    }
    consumer.assign(&tpl)?;
    Ok((consumer, ends))
}

/// Reads `topics` to their end, handing each record to `each`; returns the
/// number of records and the time from the first record to the last.
fn read_all(
    topics: &[String],
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> anyhow::Result<(u64, Duration)> {
    let (consumer, ends) = reader(topics)?;
    let mut done: BTreeMap<(String, i32), bool> = ends.keys().map(|k| (k.clone(), false)).collect();
    let (mut n, mut first, deadline) = (0u64, None, Instant::now() + DEADLINE);
    while done.values().any(|d| !d) {
        if Instant::now() > deadline {
            bail!("reading {topics:?} did not finish within {DEADLINE:?}");
        }
        let polled = consumer.poll(Duration::from_millis(100));
        if let Some(m) = &polled {
            let m = m.as_ref().map_err(|e| anyhow::anyhow!("reading: {e}"))?;
            first.get_or_insert_with(Instant::now);
            n += 1;
            each(m);
        }
        // read_committed skips markers and aborted records: judge by
        // position, now and then (it is not free; the loop must not be
        // slower than what it measures).
        if polled.is_some() && n % 1024 != 0 {
            continue;
        }
        for e in consumer.position()?.elements() {
            if let Offset::Offset(o) = e.offset() {
                if o >= ends[&(e.topic().to_owned(), e.partition())] {
                    done.insert((e.topic().to_owned(), e.partition()), true);
                }
            }
        }
    }
    Ok((n, first.map_or(Duration::ZERO, |f| f.elapsed())))
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One `outbound run` child with metrics on [`METRICS_ADDR`].
struct Instance {
    child: Child,
    log: std::path::PathBuf,
}

impl Instance {
    fn start(
        bin: &Path,
        app: &str,
        prefix: &str,
        state: &Path,
        log: std::path::PathBuf,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args([
                "run",
                "--app-id",
                app,
                "--instance-id",
                "bench",
                "--topic-prefix",
                prefix,
            ])
            .args(["--partitions", &PARTITIONS.to_string()])
            .args(["--metrics-listen", METRICS_ADDR])
            .arg("--state-dir")
            .arg(state)
            .env("OUTBOUND_KAFKA__BOOTSTRAP_SERVERS", bootstrap())
            .env("OUTBOUND_SINK__IN_RUN", "false")
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("starting {} run", bin.display()))?;
        Ok(Self { child, log })
    }

    /// Polls /metrics until `done` says so; returns the elapsed time and
    /// the time the first rekey record was counted.
    fn wait(
        &mut self,
        what: &str,
        done: impl Fn(&Metrics) -> bool,
    ) -> anyhow::Result<(Instant, Metrics)> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "outbound exited ({status}) while {what}; log {}",
                    self.log.display()
                );
            }
            if let Ok(m) = Metrics::scrape() {
                if done(&m) {
                    return Ok((Instant::now(), m));
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not done within {DEADLINE:?}; log {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("outbound exited with {status}; log {}", self.log.display());
        }
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One scrape of the instance's counters, summed over their other labels.
struct Metrics(String);

impl Metrics {
    fn scrape() -> anyhow::Result<Self> {
        let text = ureq::get(&format!("http://{METRICS_ADDR}/metrics"))
            .call()?
            .body_mut()
            .read_to_string()?;
        Ok(Self(text))
    }

    fn sum(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let want = label.map(|(k, v)| format!("{k}=\"{v}\""));
        self.0
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| want.as_ref().is_none_or(|w| l.contains(w.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn stage_in(&self, stage: &str) -> f64 {
        self.sum("outbound_records_in_total", Some(("stage", stage)))
    }

    fn out(&self, output: &str) -> f64 {
        self.sum("outbound_records_out_total", Some(("output", output)))
    }

    /// Every stage has consumed what the stage before it produced.
    fn drained(&self, sources: f64) -> bool {
        self.stage_in("rekey") >= sources
            && self.out("rekey") > 0.0
            && self.stage_in("join") >= self.out("rekey")
            && self.stage_in("details") >= self.out("detail-changes")
            && self.stage_in("aggregate") >= self.out("rollup-deltas")
    }

    fn tasks(&self, status: &str) -> f64 {
        self.sum("outbound_tasks", Some(("status", status)))
    }
}

/// Time from the first "restoring" log line to the last "restore complete".
fn restore_span(log: &str) -> Option<Duration> {
    let at =
        |line: &str| chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next()?).ok();
    let first = log
        .lines()
        .find(|l| l.contains(" restoring changelog="))
        .and_then(at)?;
    let last = log
        .lines()
        .filter(|l| l.contains("restore complete"))
        .filter_map(at)
        .max()?;
    (last - first).to_std().ok()
}

fn rate(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let changes: usize = std::env::var("OUTBOUND_BENCH_CHANGES")
        .ok()
        .map(|v| v.parse().context("OUTBOUND_BENCH_CHANGES must be a number"))
        .transpose()?
        .unwrap_or(100_000);
    let prefix = format!(
        "bench-engine-{}-{}",
        std::process::id(),
        nanos() % 1_000_000_000
    );
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();

    let history = history::generate(42, &prefix, (changes / 12).max(100) as u64, changes);
    let sources: Vec<String> = history::Table::ALL
        .iter()
        .map(|t| topic_of(&prefix, *t))
        .collect();
    create_topics(&sources, SOURCE_PARTITIONS)?;
    let copy_topic = format!("{prefix}-copy");
    create_topics(std::slice::from_ref(&copy_topic), PARTITIONS)?;
    let loader = producer()?;
    for r in &history.records {
        send(
            &loader,
            &topic_of(&prefix, r.table),
            &r.key,
            r.value.as_deref(),
        );
    }
    loader.flush(Duration::from_secs(120))?;
    let total = history.records.len() as f64;
    let bytes: usize = history
        .records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Vec::len))
        .sum();
    println!(
        "engine bench: {total} source change records ({:.1} MiB) in {prefix}.*",
        bytes as f64 / (1 << 20) as f64
    );

    // Baseline: one bare consume → produce hop over the same records.
    let copier = producer()?;
    let (copied, copy_time) = read_all(&sources, |m| {
        send(
            &copier,
            &copy_topic,
            m.key().unwrap_or_default(),
            m.payload(),
        )
    })?;
    copier.flush(Duration::from_secs(120))?;
    let copy_rate = rate(copied as f64, copy_time);

    // An earlier build, measured on the same source topics (issue #13: the
    // engine redesign must be no slower than what it replaced). The two
    // builds run in the order before, this, this, before (ABBA) for two
    // rounds, so neither gets all of the broker's warm-up; each build's
    // best run is compared.
    let this = Path::new(env!("CARGO_BIN_EXE_outbound"));
    let before_bin = std::env::var_os("OUTBOUND_BENCH_BEFORE_BIN").map(std::path::PathBuf::from);
    let rounds: usize = match &before_bin {
        None => 1,
        Some(_) => std::env::var("OUTBOUND_BENCH_ROUNDS")
            .ok()
            .map(|v| v.parse().context("OUTBOUND_BENCH_ROUNDS must be a number"))
            .transpose()?
            .unwrap_or(2)
            .max(1),
    };
    let mut these = Vec::new();
    let mut befores = Vec::new();
    for round in 0..rounds {
        let order: &[bool] = if round % 2 == 0 {
            &[true, false]
        } else {
            &[false, true]
        };
        for &earlier in order {
            match (&before_bin, earlier) {
                (Some(bin), true) => befores.push(measure(
                    bin,
                    &format!("{prefix}-before{round}"),
                    &prefix,
                    &dir,
                    total,
                )?),
                (None, true) => {}
                (_, false) => these.push(measure(
                    this,
                    &format!("{prefix}-app{round}"),
                    &prefix,
                    &dir,
                    total,
                )?),
            }
        }
    }
    let before = before_bin.map(|bin| (bin, best(befores)));
    let Run {
        all_rates,
        engine_rate,
        with_start,
        processing,
        outputs,
        written_out,
        aborted,
        changelog_records,
        read_rate,
        restored,
        restore_time,
        restore_only,
    } = best(these);

    println!();
    println!("| measure | outbound | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| source events/s, exactly-once, 1 instance, 4 stages | {engine_rate:.0} | {copy_rate:.0} (bare consume→produce copy, 1 hop) | {:.2} |",
        engine_rate / copy_rate
    );
    // Per record written, the four transactional hops against the one
    // bare hop: the broker's work is per record.
    let written = written_out + changelog_records as f64;
    let written_rate = rate(written, processing);
    println!(
        "| records written/s, all hops ({:.1} per source event, changelogs included) | {written_rate:.0} | {copy_rate:.0} | {:.2} |",
        written / total,
        written_rate / copy_rate
    );
    println!(
        "| restore records/s ({restored:.0} records, {:.1} s to all tasks running) | {:.0} | {read_rate:.0} (plain read of the changelogs) | {:.2} |",
        restore_time.as_secs_f64(),
        rate(restored, restore_time),
        rate(restored, restore_time) / read_rate
    );
    if let Some(span) = restore_only {
        println!(
            "| restore records/s, first restoring task to last restored | {:.0} | {read_rate:.0} | {:.2} |",
            rate(restored, span),
            rate(restored, span) / read_rate
        );
    }
    println!();
    println!(
        "processing time {:.1} s ({with_start:.0} events/s counting start-up); {outputs:.0} output records; {aborted:.0} aborted transactions; {changelog_records} changelog records",
        processing.as_secs_f64()
    );
    if restored < changelog_records as f64 * 0.5 {
        bail!("restored only {restored} of {changelog_records} changelog records");
    }
    if let Some((bin, b)) = &before {
        println!();
        println!(
            "earlier build {} against this one, same run, same source topics, {rounds} rounds (ABBA), best run of each:",
            bin.display()
        );
        println!();
        println!(
            "events/s of each run: this build {all_rates}; earlier build {}",
            b.all_rates
        );
        println!();
        println!("| measure | earlier build | this build | this ÷ earlier |");
        println!("|---|---|---|---|");
        println!(
            "| source events/s, exactly-once, 1 instance, 4 stages (higher is better) | {:.0} | {engine_rate:.0} | {:.2} |",
            b.engine_rate,
            engine_rate / b.engine_rate
        );
        println!(
            "| source events/s counting start-up | {:.0} | {with_start:.0} | {:.2} |",
            b.with_start,
            with_start / b.with_start
        );
        println!(
            "| records written/s, changelogs included | {:.0} | {written_rate:.0} | {:.2} |",
            rate(b.written_out + b.changelog_records as f64, b.processing),
            written_rate / rate(b.written_out + b.changelog_records as f64, b.processing)
        );
        println!(
            "| records written per source event (lower is better) | {:.2} | {:.2} | {:.2} |",
            (b.written_out + b.changelog_records as f64) / total,
            written / total,
            written / (b.written_out + b.changelog_records as f64)
        );
        println!(
            "| changelog records written | {} | {changelog_records} | {:.2} |",
            b.changelog_records,
            changelog_records as f64 / (b.changelog_records as f64).max(1.0)
        );
        println!(
            "| output records (details and rollups) | {:.0} | {outputs:.0} | {:.2} |",
            b.outputs,
            outputs / b.outputs.max(1.0)
        );
        println!(
            "| restore, s to all tasks running (lower is better) | {:.2} | {:.2} | {:.2} |",
            b.restore_time.as_secs_f64(),
            restore_time.as_secs_f64(),
            restore_time.as_secs_f64() / b.restore_time.as_secs_f64().max(1e-9)
        );
        println!(
            "| aborted transactions | {:.0} | {aborted:.0} | |",
            b.aborted
        );
    }
    delete_topics(&prefix)?;
    if std::env::var_os("OUTBOUND_BENCH_KEEP").is_some() {
        // The instances' logs, for a look at where the time went.
        println!("engine bench: kept {}", tmp.keep().display());
    }
    Ok(())
}

/// The run with the highest throughput, with the shortest restore of
/// all runs (restores vary with what else the broker is doing).
fn best(mut runs: Vec<Run>) -> Run {
    let all_rates = runs
        .iter()
        .map(|r| format!("{:.0}", r.engine_rate))
        .collect::<Vec<_>>()
        .join(", ");
    let fastest_restore = runs.iter().map(|r| r.restore_time).min();
    runs.sort_by(|a, b| b.engine_rate.total_cmp(&a.engine_rate));
    let mut best = runs.into_iter().next().expect("at least one run");
    best.restore_time = fastest_restore.unwrap_or(best.restore_time);
    best.all_rates = all_rates;
    best
}

/// One build's figures.
struct Run {
    /// Events/s of every run this one was chosen from (see [`best`]).
    all_rates: String,
    engine_rate: f64,
    with_start: f64,
    processing: Duration,
    outputs: f64,
    written_out: f64,
    aborted: f64,
    changelog_records: u64,
    read_rate: f64,
    restored: f64,
    restore_time: Duration,
    restore_only: Option<Duration>,
}

/// Runs `bin` as app `app` over the backlog in `prefix`'s source topics
/// from an empty state, then restores its state into an empty directory.
fn measure(bin: &Path, app: &str, prefix: &str, dir: &Path, total: f64) -> anyhow::Result<Run> {
    let state = dir.join(format!("state-{app}"));
    // The engine, exactly-once, one instance, from an empty state.
    let started = Instant::now();
    let mut engine = Instance::start(bin, app, prefix, &state, dir.join(format!("{app}-1.log")))?;
    let (first, _) = engine.wait("waiting for the first record", |m| {
        m.stage_in("rekey") > 0.0
    })?;
    let (done, m) = engine.wait("processing the backlog", |m| m.drained(total))?;
    let engine_rate = rate(total, done - first);
    let with_start = rate(total, done - started);
    let outputs = m.out("details") + m.out("rollups");
    // Every record the stages wrote (internal, output, dead-letter); the
    // changelog records are counted from their topics below.
    let written_out = m.sum("outbound_records_out_total", None);
    let aborted = m.sum("outbound_transactions_total", Some(("outcome", "aborted")));
    engine.stop()?;

    // Baseline: reading the changelogs with a plain consumer.
    let changelogs: Vec<String> = ["join", "details", "aggregate"]
        .iter()
        .map(|s| format!("{app}-{s}-changelog"))
        .collect();
    let (changelog_records, read_time) = read_all(&changelogs, |_| {})?;
    let read_rate = rate(changelog_records as f64, read_time);

    // Restore everything into an empty state directory.
    std::fs::remove_dir_all(&state).context("deleting the state directory")?;
    let restart = Instant::now();
    let mut engine = Instance::start(bin, app, prefix, &state, dir.join(format!("{app}-2.log")))?;
    let tasks = f64::from(PARTITIONS * 3);
    let (restored_at, m) = engine.wait("restoring", |m| {
        m.tasks("running") >= tasks && m.tasks("restoring") == 0.0
    })?;
    let restored = m.sum("outbound_restored_records_total", None);
    let restore_time = restored_at - restart;
    let log = engine.log.clone();
    engine.stop()?;
    // The restore alone: from the first task's "restoring" line to the last
    // "restore complete" (the above includes process start and group join).
    let restore_only = restore_span(&std::fs::read_to_string(&log)?);
    Ok(Run {
        all_rates: String::new(),
        engine_rate,
        with_start,
        processing: done - first,
        outputs,
        written_out,
        aborted,
        changelog_records,
        read_rate,
        restored,
        restore_time,
        restore_only,
    })
}
