//! `--wait-for-quiet`: wait until the pipeline has caught up with the
//! sources, so a comparison right after the load stops is meaningful. Quiet
//! means: the stream stages' consumer group and the sink's have committed
//! every partition they read up to its end, and no topic has grown for a
//! while (Debezium may still be delivering the last binlog events).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;

/// How long to wait, and how long the topics must stay unchanged.
#[derive(Debug, Clone, Copy)]
pub struct QuietOptions {
    pub timeout: Duration,
    pub settle: Duration,
}

/// One group's position against the ends of the topics it reads.
#[derive(Debug, Default)]
struct Lag {
    /// Records not yet committed by the group, over all its partitions.
    records: i64,
    /// The first partition still behind, for messages.
    example: Option<String>,
}

/// Partitions behind by at most this many offsets are read to see whether
/// only transaction markers (or aborted records) are left.
const PROBE_LIMIT: i64 = 64;

/// Whether a `read_committed` read of `topic[partition]` from `position`
/// reaches the end without a single record.
fn only_markers_after(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    position: i64,
) -> anyhow::Result<bool> {
    let mut c = config.clone();
    c.set(
        "group.id",
        format!("outbound-reconcile-probe-{}", std::process::id()),
    )
    .set("enable.partition.eof", "true");
    let probe: BaseConsumer = c.create().context("creating a Kafka probe")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(position))
        .context("probe assignment")?;
    probe.assign(&tpl).context("probe assignment")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match probe.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => return Ok(false),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(true),
            Some(Err(_)) | None => {}
        }
    }
    Ok(false)
}

fn client_config(config: &Config) -> ClientConfig {
    let mut c = config.client_config();
    c.set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    c
}

fn client(config: &Config, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut c = config.client_config();
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    c.create()
        .with_context(|| format!("creating a Kafka client for group {group}"))
}

/// The lag of `group` over `topics` (a topic that does not exist counts as
/// empty), and the high watermarks seen.
fn lag(
    consumer: &BaseConsumer,
    consumer_config: &ClientConfig,
    topics: &[String],
    ends: &mut BTreeMap<(String, i32), i64>,
) -> anyhow::Result<Lag> {
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| format!("metadata of {topic}"))?;
        for t in md.topics() {
            if t.error().is_some() {
                continue;
            }
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(tpl.clone(), timeout)
        .context("reading committed offsets")?;
    let mut lag = Lag::default();
    for e in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), timeout)
            .with_context(|| format!("watermarks of {}[{}]", e.topic(), e.partition()))?;
        ends.insert((e.topic().to_owned(), e.partition()), high);
        let position = match e.offset() {
            Offset::Offset(o) => o,
            // Nothing committed yet: everything from the start is unread.
            _ => low,
        };
        // Transaction markers and aborted records sit between a group's
        // committed position and the high watermark without being records
        // it must read: a partition behind by a little is probed.
        let mut behind = (high - position).max(0);
        if behind > 0
            && behind <= PROBE_LIMIT
            && only_markers_after(consumer_config, e.topic(), e.partition(), position)?
        {
            behind = 0;
        }
        if behind > 0 && lag.example.is_none() {
            lag.example = Some(format!(
                "{}[{}] at {position} of {high}",
                e.topic(),
                e.partition()
            ));
        }
        lag.records += behind;
    }
    Ok(lag)
}

/// Waits until the app's groups have no lag and no topic has grown for
/// `settle`. Reports progress through `status`.
pub fn wait_for_quiet(
    config: &Config,
    options: QuietOptions,
    mut status: impl FnMut(&str),
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let pipeline = config.pipeline()?;
    let stages: Vec<String> = pipeline
        .topics()
        .into_iter()
        .chain(["rekey", "detail-changes", "rollup-deltas"].map(|s| config.topic(s)))
        .collect();
    let outputs: Vec<String> = ["details", "rollups"].map(|s| config.topic(s)).to_vec();
    let stage_group = config.group_id();
    let sink_group = crate::sink::group_id(config);
    let stage_client = client(config, &stage_group)?;
    let sink_client = client(config, &sink_group)?;
    let probe_config = client_config(config);
    let mut last_ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut unchanged_since: Option<Instant> = None;
    loop {
        let mut ends = BTreeMap::new();
        let stage_lag = lag(&stage_client, &probe_config, &stages, &mut ends)?;
        let sink_lag = lag(&sink_client, &probe_config, &outputs, &mut ends)?;
        let caught_up = stage_lag.records == 0 && sink_lag.records == 0;
        if caught_up && ends == last_ends {
            let since = *unchanged_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= options.settle {
                return Ok(started.elapsed());
            }
        } else {
            unchanged_since = None;
        }
        let msg = if caught_up {
            "caught up; waiting for the topics to stay unchanged".to_owned()
        } else {
            format!(
                "waiting: group {stage_group} {} behind{}, group {sink_group} {} behind{}",
                stage_lag.records,
                stage_lag
                    .example
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                sink_lag.records,
                sink_lag
                    .example
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
            )
        };
        status(&msg);
        anyhow::ensure!(
            started.elapsed() < options.timeout,
            "--wait-for-quiet: not quiet after {:?}: {msg}",
            options.timeout
        );
        last_ends = ends;
        std::thread::sleep(Duration::from_millis(500));
    }
}
