//! `outbound dlq replay --from <topic> [--filter reason]`: re-feeds the
//! sink's dead letters once their cause is fixed (a mapping corrected, a
//! field limit raised), idempotently.
//!
//! A dead letter is replayed only while it is still the latest record of
//! its key in the output topic: the compacted topic keeps the latest record
//! of every key, so if the record at the letter's offset is still there and
//! no later record of the key exists, the letter is current. Otherwise a
//! newer record was handled since — possibly a delete whose tombstone the
//! index has long forgotten (`index.gc_deletes`), which an old write would
//! undo. The record is read back from the topic, so what is replayed is
//! exactly what the sink would index, in the live epoch (`epoch << 40 |
//! offset`): replaying twice changes nothing. Letters of another incarnation
//! of the topic (it was re-created since) are skipped: their offsets mean
//! nothing now. Documents rejected again are counted as failed, with their
//! reason; they are not dead-lettered a second time (the letter is still
//! there).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

use super::cluster::Cluster;
use super::delivery::{Delivery, DeliveryError};
use super::dlq::LetterHeaders;
use super::encoder::{BulkItem, Encoder, Origin, Target};
use super::install::{install, output_topic_ids, Installed};
use super::service::BulkService;
use super::supervisor::{consumed_topics, group_id};
use super::topics::client_config;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The dead-letter topic to read.
    pub from: String,
    /// Only letters whose error type is this, or whose message contains it.
    pub filter: Option<String>,
}

/// What a replay did, letter by letter.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters read.
    pub read: u64,
    /// Indexed (or deleted) now.
    pub replayed: u64,
    /// Rejected again, by error type.
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    /// Not selected by `--filter`.
    pub filtered_out: u64,
    /// A newer record of the document was handled since.
    pub superseded: u64,
    /// Of another incarnation of the topic, or not from an output topic.
    pub skipped: u64,
}

struct Letter {
    headers: LetterHeaders,
    topic: String,
    partition: i32,
    offset: i64,
}

const POLL: Duration = Duration::from_millis(500);

/// Replays the dead letters of `options.from` (see the module docs).
pub async fn replay(
    config: Config,
    options: ReplayOptions,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<ReplayReport> {
    let mut config = config;
    config.sink.resolve_index_prefix(&config.app_id);
    config.sink.validate()?;
    let service = BulkService::new(&config.sink)?;
    let cluster = Cluster::new(service.client().clone());
    let outputs = [config.topic("details"), config.topic("rollups")];
    let topic_ids = output_topic_ids(&config).await?;
    let consumed = consumed_topics(&config, &group_id(&config), &outputs)?;
    let installed = install(&cluster, &config, &topic_ids, &consumed).await?;
    let targets: Vec<Target> = installed.iter().map(Installed::target).collect();
    let encoder = Encoder::new(
        &targets,
        &outputs[0],
        &outputs[1],
        config.sink.max_request_bytes,
    )?;

    let mut report = ReplayReport::default();
    let letters = read_letters(&config, &options.from)?;
    let mut wanted: Vec<Letter> = Vec::new();
    let mut sink_letters = 0u64;
    for letter in letters {
        report.read += 1;
        if !outputs.contains(&letter.topic) {
            report.skipped += 1;
            continue;
        }
        sink_letters += 1;
        if let Some(f) = &options.filter {
            if !letter.headers.matches(f) {
                report.filtered_out += 1;
                continue;
            }
        }
        let incarnation = letter.headers.source_topic_id.as_deref();
        if incarnation
            .is_some_and(|id| topic_ids.get(&letter.topic).map(String::as_str) != Some(id))
        {
            report.skipped += 1;
            continue;
        }
        wanted.push(letter);
    }
    anyhow::ensure!(
        report.read == 0 || sink_letters > 0,
        "{} holds no dead letters of the sink (none comes from {} or {}); the engine's \
         dead letters are source records: fix them at the source",
        options.from,
        outputs[0],
        outputs[1]
    );

    // The current records of the letters' keys, read back from the topics.
    let current = current_records(&config, &wanted)?;
    let mut items: Vec<BulkItem> = Vec::new();
    for letter in &wanted {
        let Some((key, value, timestamp)) =
            current.get(&(letter.topic.clone(), letter.partition, letter.offset))
        else {
            report.superseded += 1;
            continue;
        };
        let origin = Origin {
            topic: letter.topic.as_str().into(),
            partition: letter.partition,
            offset: letter.offset,
        };
        match encoder.encode(origin, key.as_deref(), value.as_deref(), *timestamp) {
            Ok(item) => items.push(item),
            Err(e) => {
                report.failed += 1;
                *report.failures.entry(e.kind().to_owned()).or_default() += 1;
            }
        }
    }
    let delivery = Delivery::new(&config.sink, service, metrics, shutdown);
    for (n, chunk) in items.chunks(config.sink.batch_max_docs).enumerate() {
        match delivery.deliver(n as u64 + 1, chunk, Vec::new()).await {
            Ok(delivered) => {
                report.replayed += (chunk.len() - delivered.letters.len()) as u64;
                for l in delivered.letters {
                    warn!(origin = %l.origin, error_type = %l.error_type, reason = %l.reason, "dead letter rejected again");
                    report.failed += 1;
                    *report.failures.entry(l.error_type).or_default() += 1;
                }
            }
            Err(DeliveryError::Aborted) => anyhow::bail!("stopped during the replay"),
            Err(DeliveryError::Failed(e)) => return Err(e),
        }
    }
    info!(?report, "dead-letter replay done");
    Ok(report)
}

/// Every dead letter of `topic` up to its current end.
fn read_letters(config: &Config, topic: &str) -> anyhow::Result<Vec<Letter>> {
    let consumer = reader(config)?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("reading metadata of {topic}"))?;
    let partitions = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    anyhow::ensure!(partitions > 0, "topic {topic} does not exist");
    let mut ranges = BTreeMap::new();
    for p in 0..partitions {
        ranges.insert(p, (Offset::Beginning, watermark_high(&consumer, topic, p)?));
    }
    let mut out = Vec::new();
    scan(&consumer, topic, &ranges, |m| {
        let headers = m
            .headers()
            .map(|h| LetterHeaders::parse(h.iter().map(|h| (h.key, h.value))))
            .unwrap_or_default();
        if let (Some(t), Some(p), Some(o)) = (
            headers.source_topic.clone(),
            headers.source_partition,
            headers.source_offset,
        ) {
            out.push(Letter {
                headers,
                topic: t,
                partition: p,
                offset: o,
            });
        }
    })?;
    Ok(out)
}

type Current = BTreeMap<(String, i32, i64), (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>)>;

/// For each letter still current (its record still there, no later record
/// of its key), that record: (key, value, timestamp).
fn current_records(config: &Config, letters: &[Letter]) -> anyhow::Result<Current> {
    let mut from: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for l in letters {
        let e = from
            .entry(l.topic.clone())
            .or_default()
            .entry(l.partition)
            .or_insert(l.offset);
        *e = (*e).min(l.offset);
    }
    let wanted: BTreeSet<(String, i32, i64)> = letters
        .iter()
        .map(|l| (l.topic.clone(), l.partition, l.offset))
        .collect();
    // (topic, partition, key) → the latest record seen, and the letters'
    // records by offset.
    let mut latest: BTreeMap<(String, i32, Vec<u8>), i64> = BTreeMap::new();
    let mut records: Current = BTreeMap::new();
    for (topic, starts) in &from {
        // One reader per topic: an end-of-partition event names no topic.
        let consumer = reader(config)?;
        let mut ranges = BTreeMap::new();
        for (p, o) in starts {
            ranges.insert(
                *p,
                (Offset::Offset(*o), watermark_high(&consumer, topic, *p)?),
            );
        }
        scan(&consumer, topic, &ranges, |m| {
            let key = m.key().map(<[u8]>::to_vec);
            let id = (m.topic().to_owned(), m.partition(), m.offset());
            if let Some(k) = &key {
                latest.insert((id.0.clone(), id.1, k.clone()), id.2);
            }
            if wanted.contains(&id) {
                records.insert(
                    id,
                    (
                        key,
                        m.payload().map(<[u8]>::to_vec),
                        m.timestamp().to_millis(),
                    ),
                );
            }
        })?;
    }
    records.retain(|(t, p, o), (key, _, _)| {
        key.as_ref()
            .and_then(|k| latest.get(&(t.clone(), *p, k.clone())))
            == Some(o)
    });
    Ok(records)
}

fn reader(config: &Config) -> anyhow::Result<BaseConsumer> {
    client_config(config)
        .set("group.id", format!("{}-dlq-replay", config.app_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating a reader")
}

fn watermark_high(consumer: &BaseConsumer, topic: &str, p: i32) -> anyhow::Result<i64> {
    Ok(consumer
        .fetch_watermarks(topic, p, Duration::from_secs(30))
        .with_context(|| format!("reading the watermarks of {topic}/{p}"))?
        .1)
}

/// Reads each partition of `topic` from its start offset until its end
/// (the high watermark read before, or the partition's end of file).
fn scan(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &BTreeMap<i32, (Offset, i64)>,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    let mut open: BTreeSet<i32> = BTreeSet::new();
    for (p, (start, end)) in ranges {
        if *end <= 0 {
            continue;
        }
        tpl.add_partition_offset(topic, *p, *start)
            .context("assigning a partition")?;
        open.insert(*p);
    }
    if open.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl).context("assigning the partitions")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while !open.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "reading {topic} partitions {open:?} took longer than 10 minutes"
        );
        match consumer.poll(POLL) {
            Some(Ok(m)) => {
                if let Some((_, end)) = ranges.get(&m.partition()) {
                    if m.offset() < *end {
                        each(&m);
                    }
                    if m.offset() + 1 >= *end {
                        open.remove(&m.partition());
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(anyhow::anyhow!("reading {topic}: {e}")),
            None => {}
        }
    }
    Ok(())
}
