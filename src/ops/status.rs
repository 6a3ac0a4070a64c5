//! `outbound status`: what every task and sink partition is doing, from the
//! brokers and the instances' own endpoints:
//!
//! - the stream group `<app_id>`: each consumed partition (a stage's task)
//!   with its owner (the instance id in the member's `client.id`),
//!   committed offset, end offset and lag;
//! - each owner's `/readyz` and `/metrics` (when its URL is known): ready or
//!   not, tasks restoring per stage, and the age of its last commit (the
//!   stream loop's heartbeat, beaten at every commit interval);
//! - the sink group `<app_id>-sink` over the output topics: lag per
//!   partition and the age of the oldest record Elasticsearch has not
//!   acknowledged (the one at the committed offset).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use super::group::{self, Group};
use crate::config::Config;
use crate::engine::{Stage, Topics};

const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Serialize)]
pub struct Status {
    pub app_id: String,
    pub group: Group,
    pub sink_group: Group,
    pub tasks: Vec<TaskStatus>,
    pub sink: Vec<SinkPartition>,
    pub instances: Vec<InstanceStatus>,
}

#[derive(Debug, Serialize)]
pub struct TaskStatus {
    /// rekey (stateless, over the source topics), join, details, aggregate.
    pub stage: String,
    pub topic: String,
    pub partition: i32,
    /// The owning instance id, if the partition is assigned.
    pub owner: Option<String>,
    /// unassigned, assigned (owner's endpoint unknown), restoring, running,
    /// or not_ready.
    pub state: String,
    pub committed: Option<i64>,
    pub end: i64,
    /// Offsets from the first committed record not yet processed to the
    /// end (0 when only transaction markers are left).
    pub lag: i64,
    pub last_commit_age_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SinkPartition {
    pub topic: String,
    pub partition: i32,
    pub owner: Option<String>,
    pub committed: Option<i64>,
    pub end: i64,
    /// Offsets from the first committed record not yet processed to the
    /// end (0 when only transaction markers are left).
    pub lag: i64,
    /// Age of the oldest record not yet acknowledged by Elasticsearch.
    pub oldest_unacked_age_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct InstanceStatus {
    pub instance: String,
    pub url: Option<String>,
    /// `/readyz` answered 200.
    pub ready: Option<bool>,
    /// Tasks restoring, by stage (from `outbound_tasks`).
    pub restoring: BTreeMap<String, i64>,
    pub last_commit_age_s: Option<f64>,
    pub error: Option<String>,
}

/// Where each instance's `/metrics` and `/readyz` are: explicit
/// `instance=URL` pairs, else a template with `{instance}` in it.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub explicit: BTreeMap<String, String>,
    pub template: Option<String>,
}

impl Endpoints {
    fn url(&self, instance: &str) -> Option<String> {
        self.explicit
            .get(instance)
            .cloned()
            .or_else(|| {
                self.template
                    .as_ref()
                    .map(|t| t.replace("{instance}", instance))
            })
            .map(|u| u.trim_end_matches('/').to_owned())
    }
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A consumer of `group` that never joins it: it only reads the group's
/// committed offsets and the topics' metadata.
fn observer(config: &Config, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut cc = config.client_config();
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    for (k, v) in &config.kafka.properties {
        cc.set(k, v);
    }
    cc.create().context("creating a Kafka consumer")
}

/// One partition as the group sees it: its committed offset, the
/// partition's bounds, and what is left to read.
struct PartitionOffsets {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    end: i64,
    /// Committed records after the group's position (see [`unread`]).
    lag: i64,
    /// Timestamp (ms) of the first of them.
    first_unread_ms: Option<i64>,
}

/// The committed offsets and lag of every partition of `topics`.
fn offsets(
    config: &Config,
    consumer: &BaseConsumer,
    topics: &[String],
) -> anyhow::Result<Vec<PartitionOffsets>> {
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| format!("reading the metadata of {topic}"))?;
        let Some(t) = md.topics().iter().find(|t| t.error().is_none()) else {
            continue; // not created yet
        };
        let mut tpl = TopicPartitionList::new();
        let mut bounds = Vec::new();
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), TIMEOUT)
                .with_context(|| format!("end offset of {topic}[{}]", p.id()))?;
            tpl.add_partition(topic, p.id());
            bounds.push((p.id(), low, high));
        }
        let committed = consumer
            .committed_offsets(tpl, TIMEOUT)
            .with_context(|| format!("reading the group's committed offsets of {topic}"))?;
        let committed_of = |partition: i32| {
            committed
                .find_partition(topic, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
        };
        let behind: Vec<(i32, i64)> = bounds
            .iter()
            .filter_map(|&(p, low, end)| {
                let from = committed_of(p).unwrap_or(low).max(low);
                (from < end).then_some((p, from))
            })
            .collect();
        let peeks = unread(config, topic, &behind);
        for (partition, low, end) in bounds {
            let committed = committed_of(partition);
            let from = committed.unwrap_or(low).max(low);
            let (lag, first_unread_ms) = match peeks.get(&partition) {
                _ if from >= end => (0, None),
                Some(Peek::Record {
                    offset,
                    timestamp_ms,
                }) => (end - offset, *timestamp_ms),
                Some(Peek::End) => (0, None),
                None => (end - from, None),
            };
            out.push(PartitionOffsets {
                topic: topic.clone(),
                partition,
                committed,
                end,
                lag,
                first_unread_ms,
            });
        }
    }
    Ok(out)
}

/// What a read_committed read from a group's position finds first.
enum Peek {
    /// A committed record.
    Record {
        offset: i64,
        timestamp_ms: Option<i64>,
    },
    /// Nothing but transaction markers and aborted records before the end.
    End,
}

/// Reads each `(partition, from)` of `topic` up to its first committed
/// record. `end - committed` alone over-counts: a transactional writer
/// leaves a commit marker after its records, and librdkafka's position (the
/// offset `outbound` commits) never moves past a marker, so a stage that
/// has processed everything still sits one offset (or an aborted batch)
/// before the end (librdkafka issues #2539, #3917). Partitions not settled
/// within a few seconds are left out (their lag is then `end - from`).
fn unread(config: &Config, topic: &str, from: &[(i32, i64)]) -> BTreeMap<i32, Peek> {
    let mut out = BTreeMap::new();
    if from.is_empty() {
        return out;
    }
    let mut cc = config.client_config();
    cc.set("group.id", format!("{}-status-peek", config.app_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = match cc.create() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("status: cannot read {topic}: {e}");
            return out;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for &(p, offset) in from {
        if tpl
            .add_partition_offset(topic, p, Offset::Offset(offset))
            .is_err()
        {
            return out;
        }
    }
    if let Err(e) = consumer.assign(&tpl) {
        tracing::warn!("status: cannot read {topic}: {e}");
        return out;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while out.len() < from.len() && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.entry(m.partition()).or_insert(Peek::Record {
                    offset: m.offset(),
                    timestamp_ms: m.timestamp().to_millis(),
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                out.entry(p).or_insert(Peek::End);
            }
            Some(Err(e)) => tracing::debug!("status: reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// One instance's `/readyz` and the metrics `status` reads.
async fn probe(http: &reqwest::Client, instance: &str, url: Option<String>) -> InstanceStatus {
    let mut out = InstanceStatus {
        instance: instance.to_owned(),
        url: url.clone(),
        ready: None,
        restoring: BTreeMap::new(),
        last_commit_age_s: None,
        error: None,
    };
    let Some(url) = url else { return out };
    match http.get(format!("{url}/readyz")).send().await {
        Ok(r) => out.ready = Some(r.status().is_success()),
        Err(e) => {
            out.error = Some(format!("{url}/readyz: {e}"));
            return out;
        }
    }
    let text = match http.get(format!("{url}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => {
            out.error = Some(format!("{url}/metrics: {e}"));
            return out;
        }
    };
    for sample in parse_metrics(&text) {
        match sample.name.as_str() {
            "outbound_tasks" if sample.label("status") == Some("restoring") => {
                if let Some(stage) = sample.label("stage") {
                    out.restoring.insert(stage.to_owned(), sample.value as i64);
                }
            }
            // One loop per stream thread (`stream`, or `stream-<n>`): the
            // oldest beat is the instance's.
            "outbound_loop_heartbeat_timestamp_seconds"
                if sample
                    .label("loop")
                    .is_some_and(|l| l == "stream" || l.starts_with("stream-")) =>
            {
                let age = (now_s() - sample.value).max(0.0);
                out.last_commit_age_s = Some(out.last_commit_age_s.map_or(age, |a| a.max(age)));
            }
            _ => {}
        }
    }
    out
}

/// The instance id in a member's `client.id`: the sink's is
/// `<app_id>-<instance_id>`, a stream thread's `<app_id>-<instance_id>-stream`
/// (or `-stream-<n>` with several threads).
fn instance_of_client(app_id: &str, client_id: &str) -> String {
    let rest = client_id
        .strip_prefix(&format!("{app_id}-"))
        .unwrap_or(client_id);
    let without_thread = match rest.rsplit_once("-stream") {
        Some((instance, tail))
            if !instance.is_empty()
                && (tail.is_empty()
                    || tail.strip_prefix('-').is_some_and(|n| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    })) =>
        {
            instance
        }
        _ => rest,
    };
    without_thread.to_owned()
}

/// One sample of the Prometheus text format.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a Prometheus text exposition (comments skipped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rfind('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => match line.split_once(' ') {
                Some((h, v)) => (h, v.trim()),
                None => continue,
            },
        };
        let value = value.split_whitespace().next().unwrap_or("");
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((name, rest)) => {
                let body = rest.trim_end_matches('}');
                let labels = body
                    .split("\",")
                    .filter_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        Some((
                            k.trim().to_owned(),
                            v.trim().trim_matches('"').replace("\\\"", "\""),
                        ))
                    })
                    .collect();
                (name, labels)
            }
            None => (head, Vec::new()),
        };
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

/// Gathers the status of `config`'s app.
pub fn gather(config: &Config, endpoints: &Endpoints) -> anyhow::Result<Status> {
    let pipeline = config.pipeline()?;
    let topics = Topics::new(config, pipeline.topics());
    let group_name = config.group_id();
    let sink_group_name = crate::sink::group_id(config);
    let stream = observer(config, &group_name)?;
    let sink = observer(config, &sink_group_name)?;
    let group = group::describe(&stream, &group_name, TIMEOUT)?;
    let sink_group = group::describe(&sink, &sink_group_name, TIMEOUT)?;
    let instance_of = |client_id: &str| instance_of_client(&config.app_id, client_id);

    // The owners' endpoints.
    let mut owners: Vec<String> = group
        .members
        .iter()
        .chain(&sink_group.members)
        .map(|m| instance_of(&m.client_id))
        .collect();
    owners.sort();
    owners.dedup();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    let instances: Vec<InstanceStatus> = runtime.block_on(async {
        let mut out = Vec::new();
        for i in &owners {
            out.push(probe(&http, i, endpoints.url(i)).await);
        }
        out
    });
    let by_instance: BTreeMap<&str, &InstanceStatus> =
        instances.iter().map(|i| (i.instance.as_str(), i)).collect();

    let stage_of = |topic: &str| {
        topics
            .stage_of(topic)
            .map(Stage::name)
            .unwrap_or("rekey")
            .to_owned()
    };
    let mut consumed = topics.sources.clone();
    consumed.extend(Stage::ALL.map(|s| topics.input(s).to_owned()));
    let owner_of = group.owners();
    let tasks = offsets(config, &stream, &consumed)?
        .into_iter()
        .map(|o| {
            let PartitionOffsets {
                topic,
                partition,
                committed,
                end,
                lag,
                ..
            } = o;
            let stage = stage_of(&topic);
            let owner = owner_of
                .get(&(topic.clone(), partition))
                .map(|c| instance_of(c));
            let probe = owner.as_deref().and_then(|o| by_instance.get(o));
            let state = match (&owner, probe) {
                (None, _) => "unassigned",
                (Some(_), None) => "assigned",
                (Some(_), Some(p)) => match p.ready {
                    None => "assigned",
                    Some(true) => "running",
                    Some(false) if p.restoring.get(&stage).is_some_and(|n| *n > 0) => "restoring",
                    Some(false) => "not_ready",
                },
            };
            TaskStatus {
                lag,
                last_commit_age_s: probe.and_then(|p| p.last_commit_age_s),
                stage,
                topic,
                partition,
                owner,
                state: state.to_owned(),
                committed,
                end,
            }
        })
        .collect();

    let sink_owner_of = sink_group.owners();
    let sink_partitions = offsets(
        config,
        &sink,
        &[topics.details().to_owned(), topics.rollups().to_owned()],
    )?
    .into_iter()
    .map(|o| {
        let PartitionOffsets {
            topic,
            partition,
            committed,
            end,
            lag,
            first_unread_ms,
        } = o;
        SinkPartition {
            oldest_unacked_age_s: first_unread_ms.map(|ms| (now_s() - ms as f64 / 1000.0).max(0.0)),
            owner: sink_owner_of
                .get(&(topic.clone(), partition))
                .map(|c| instance_of(c)),
            topic,
            partition,
            committed,
            end,
            lag,
        }
    })
    .collect();
    Ok(Status {
        app_id: config.app_id.clone(),
        group,
        sink_group,
        tasks,
        sink: sink_partitions,
        instances,
    })
}

fn age(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.1}s"),
        Some(s) => format!("{:.0}m", s / 60.0),
    }
}

fn opt(v: &Option<impl ToString>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".into())
}

impl Status {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let members = |g: &Group| {
            g.members
                .iter()
                .map(|m| format!("{}@{}", m.client_id, m.host.trim_start_matches('/')))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "stream group {}: {}, {} member(s) {}\n",
            self.group.name,
            self.group.state,
            self.group.members.len(),
            members(&self.group)
        ));
        out.push_str(&format!(
            "sink group {}: {}, {} member(s) {}\n\n",
            self.sink_group.name,
            self.sink_group.state,
            self.sink_group.members.len(),
            members(&self.sink_group)
        ));
        out.push_str(&format!(
            "{:<10} {:<48} {:<10} {:<10} {:>10} {:>10} {:>8} {:>12}\n",
            "STAGE", "TASK", "OWNER", "STATE", "COMMITTED", "END", "LAG", "LAST COMMIT"
        ));
        for t in &self.tasks {
            out.push_str(&format!(
                "{:<10} {:<48} {:<10} {:<10} {:>10} {:>10} {:>8} {:>12}\n",
                t.stage,
                format!("{}[{}]", t.topic, t.partition),
                opt(&t.owner),
                t.state,
                opt(&t.committed),
                t.end,
                t.lag,
                age(t.last_commit_age_s)
            ));
        }
        out.push_str(&format!(
            "\n{:<48} {:<10} {:>10} {:>10} {:>8} {:>15}\n",
            "SINK PARTITION", "OWNER", "COMMITTED", "END", "LAG", "OLDEST UNACKED"
        ));
        for p in &self.sink {
            out.push_str(&format!(
                "{:<48} {:<10} {:>10} {:>10} {:>8} {:>15}\n",
                format!("{}[{}]", p.topic, p.partition),
                opt(&p.owner),
                opt(&p.committed),
                p.end,
                p.lag,
                age(p.oldest_unacked_age_s)
            ));
        }
        for i in self.instances.iter().filter(|i| i.error.is_some()) {
            out.push_str(&format!(
                "\ninstance {}: {}",
                i.instance,
                i.error.as_deref().unwrap_or("")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_instances_whatever_client_they_use() {
        assert_eq!(instance_of_client("app", "app-1"), "1");
        assert_eq!(instance_of_client("app", "app-1-stream"), "1");
        assert_eq!(instance_of_client("app", "app-b-2-stream-3"), "b-2");
        assert_eq!(instance_of_client("app", "app-streamer"), "streamer");
        assert_eq!(instance_of_client("app", "other"), "other");
    }

    #[test]
    fn parses_the_prometheus_text_format() {
        let text = "# HELP outbound_tasks x\n# TYPE outbound_tasks gauge\n\
            outbound_tasks{stage=\"join\",status=\"restoring\"} 2\n\
            outbound_loop_heartbeat_timestamp_seconds{loop=\"stream\"} 1700000000.5\n\
            outbound_ready 1\n";
        let s = parse_metrics(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].label("stage"), Some("join"));
        assert_eq!(s[0].label("status"), Some("restoring"));
        assert_eq!(s[0].value, 2.0);
        assert_eq!(s[1].value, 1_700_000_000.5);
        assert_eq!(s[2].name, "outbound_ready");
    }

    #[test]
    fn endpoints_from_pairs_or_a_template() {
        let e = Endpoints {
            explicit: [("0".to_owned(), "http://a:9464/".to_owned())].into(),
            template: Some("http://outbound-{instance}.outbound:9464".into()),
        };
        assert_eq!(e.url("0").as_deref(), Some("http://a:9464"));
        assert_eq!(
            e.url("2").as_deref(),
            Some("http://outbound-2.outbound:9464")
        );
    }
}
