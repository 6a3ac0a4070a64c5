//! The exactly-once audit, as Kafka's own EOS system tests check it: every
//! committed source record (topic, partition, offset) is reflected exactly
//! once in the committed `-rekey` output — as many rekey records as the
//! rekey step makes of it, each carrying that position in its
//! `outbound.source.*` headers — or, if it cannot be decoded, exactly once
//! in the dead-letter topic. Duplicates are invisible in a final-state
//! comparison; this is where they show.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use outbound::config::Config;
use outbound_pipeline::{decode, rekey};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// (topic, partition, offset) of a source record.
type Position = (String, i32, i64);

#[derive(Debug, Default)]
pub struct Audit {
    pub source_records: u64,
    pub rekey_records: u64,
    pub dead_letters: u64,
    /// Positions reflected fewer times than expected: (position, expected, seen).
    pub missing: Vec<(Position, u32, u32)>,
    /// Positions reflected more times than expected.
    pub duplicated: Vec<(Position, u32, u32)>,
    /// Rekey or dead-letter records naming no source record.
    pub unattributed: u64,
}

impl Audit {
    pub fn passed(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.unattributed == 0
    }
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} source records, {} committed rekey records, {} dead letters: {} reflected too few times, {} too many, {} unattributed{}",
            self.source_records,
            self.rekey_records,
            self.dead_letters,
            self.missing.len(),
            self.duplicated.len(),
            self.unattributed,
            if self.passed() { " — every source record exactly once" } else { "" }
        )?;
        for (what, list) in [("too few", &self.missing), ("too many", &self.duplicated)] {
            for ((t, p, o), want, got) in list.iter().take(5) {
                write!(
                    f,
                    "\n    {what}: {t}[{p}]@{o}: expected {want}, committed {got}"
                )?;
            }
        }
        Ok(())
    }
}

/// Reads every record of `topic` from its start to its current end.
fn read_all(
    config: &Config,
    topic: &str,
    committed_only: bool,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("group.id", format!("audit-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.message.max.bytes", "16777216")
        .set(
            "isolation.level",
            if committed_only {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    let mut parts = 0;
    for t in md.topics() {
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
                .map_err(|e| format!("watermarks of {topic}[{}]: {e}", p.id()))?;
            if high > low {
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                    .map_err(|e| e.to_string())?;
                parts += 1;
            }
        }
    }
    if parts == 0 {
        return Ok(());
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    // Partitions read to their end: one may report its end more than once
    // (a record arrived after the first), which must not stand in for
    // another's.
    let mut at_end = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while at_end.len() < parts {
        if Instant::now() > deadline {
            return Err(format!("{topic} not read to its end in 10 minutes"));
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => each(&m),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            None => {}
        }
    }
    Ok(())
}

fn position_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<Position> {
    let headers = m.headers()?;
    let (mut t, mut p, mut o) = (None, None, None);
    for h in headers.iter() {
        let v = std::str::from_utf8(h.value?).ok()?;
        match h.key {
            "outbound.source.topic" => t = Some(v.to_owned()),
            "outbound.source.partition" => p = v.parse().ok(),
            "outbound.source.offset" => o = v.parse().ok(),
            _ => {}
        }
    }
    Some((t?, p?, o?))
}

/// Runs the audit of `config`'s app (its rekey and dead-letter topics must
/// not have been purged: run it with `kafka.purge_interval_ms = 0`).
pub fn audit(config: &Config) -> Result<Audit, String> {
    let pipeline = config.pipeline().map_err(|e| format!("{e:#}"))?;
    let partitions = config.kafka.partitions as u32;
    let mut audit = Audit::default();
    // What each source record should become: (rekey records, dead letters).
    let mut want: HashMap<Position, (u32, u32)> = HashMap::new();
    // The last offset read of each source partition: the rekey topic, read
    // after, may already reflect records the connector wrote since.
    let mut read_to: HashMap<(String, i32), i64> = HashMap::new();
    let mut decoder = decode::Decoder::default();
    for topic in pipeline.topics() {
        read_all(config, &topic, false, |m| {
            audit.source_records += 1;
            let pos = (m.topic().to_owned(), m.partition(), m.offset());
            let last = read_to.entry((pos.0.clone(), pos.1)).or_insert(pos.2);
            *last = (*last).max(pos.2);
            use outbound::engine::processors::{keyless_row_change, oversized_source_record};
            let oversized = oversized_source_record(m.payload()).is_some();
            let expect = match decoder.decode(&pipeline, m.topic(), m.key(), m.payload()) {
                _ if oversized => (0, 1),
                Ok(Some(event)) if keyless_row_change(m.key(), &event).is_some() => (0, 1),
                Ok(None) => (0, 0),
                Err(_) => (0, 1),
                Ok(Some(event)) => {
                    let n = rekey::rekey(&event, m.offset())
                        .iter()
                        .map(|(route, _)| {
                            if route.partition_key().is_some() {
                                1
                            } else {
                                partitions
                            }
                        })
                        .sum();
                    (n, 0)
                }
            };
            want.insert(pos, expect);
        })?;
    }
    let mut got: HashMap<Position, (u32, u32)> = HashMap::new();
    let mut unattributed = 0;
    read_all(config, &config.topic("rekey"), true, |m| {
        audit.rekey_records += 1;
        match position_of(m) {
            Some(pos) => got.entry(pos).or_default().0 += 1,
            None => unattributed += 1,
        }
    })?;
    read_all(config, &config.topic("dlq"), true, |m| {
        audit.dead_letters += 1;
        match position_of(m) {
            Some(pos) => got.entry(pos).or_default().1 += 1,
            None => unattributed += 1,
        }
    })?;
    for (pos, (w_rekey, w_dlq)) in &want {
        let (g_rekey, g_dlq) = got.remove(pos).unwrap_or_default();
        for (w, g) in [(*w_rekey, g_rekey), (*w_dlq, g_dlq)] {
            if g < w {
                audit.missing.push((pos.clone(), w, g));
            } else if g > w {
                audit.duplicated.push((pos.clone(), w, g));
            }
        }
    }
    // Anything left names a position no source topic held when it was read,
    // unless the position came after what was read of its partition.
    let sources = pipeline.topics();
    unattributed += got
        .iter()
        .filter(|((topic, partition, offset), _)| {
            !sources.contains(topic)
                || read_to
                    .get(&(topic.clone(), *partition))
                    .is_some_and(|last| offset <= last)
        })
        .map(|(_, (a, b))| u64::from(a + b))
        .sum::<u64>();
    audit.unattributed = unattributed;
    audit.missing.sort();
    audit.duplicated.sort();
    Ok(audit)
}
