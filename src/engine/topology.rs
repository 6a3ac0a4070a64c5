//! The topology of DESIGN.md §3 as data: the stages, the topics between them,
//! and creating those topics with the right settings at startup.
//!
//! ```text
//! source topics ─rekey─▶ <app>-rekey ─join─▶ <app>-detail-changes ─details─▶ <app>-details
//!                                         └─▶ <app>-rollup-deltas ─aggregate─▶ <app>-rollups
//! ```
//! The `details` stage is the one place every change of an item passes
//! through (it is partitioned by item id), so when an item moves between
//! orders — and so between join partitions — the newest version of its
//! document wins, whatever order the two join tasks commit in.

use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use tracing::{info, warn};

use crate::config::Config;

/// A stateful stage: reads one internal topic, keeps a task store per
/// partition mirrored to a changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Join,
    Details,
    Aggregate,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Join, Stage::Details, Stage::Aggregate];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Join => "join",
            Stage::Details => "details",
            Stage::Aggregate => "aggregate",
        }
    }
}

/// Every topic name of one app id.
#[derive(Debug, Clone)]
pub struct Topics {
    pub sources: Vec<String>,
    pub rekey: String,
    pub detail_changes: String,
    pub rollup_deltas: String,
    pub details: String,
    pub rollups: String,
    pub dead_letter: String,
    pub partitions: i32,
    app_id: String,
}

impl Topics {
    pub fn new(config: &Config, sources: Vec<String>) -> Self {
        Self {
            sources,
            rekey: config.topic("rekey"),
            detail_changes: config.topic("detail-changes"),
            rollup_deltas: config.topic("rollup-deltas"),
            details: config.topic("details"),
            rollups: config.topic("rollups"),
            dead_letter: config.topic("dlq"),
            partitions: config.kafka.partitions,
            app_id: config.app_id.clone(),
        }
    }

    /// The input topic of a stateful stage.
    pub fn input(&self, stage: Stage) -> &str {
        match stage {
            Stage::Join => &self.rekey,
            Stage::Details => &self.detail_changes,
            Stage::Aggregate => &self.rollup_deltas,
        }
    }

    pub fn changelog(&self, stage: Stage) -> String {
        format!("{}-{}-changelog", self.app_id, stage.name())
    }

    /// The stage whose input `topic` is, if any.
    pub fn stage_of(&self, topic: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| self.input(*s) == topic)
    }

    /// The topics this app creates, with their kind.
    fn owned(&self) -> Vec<(String, TopicKind)> {
        let mut out = vec![
            (self.rekey.clone(), TopicKind::Repartition),
            (self.detail_changes.clone(), TopicKind::Repartition),
            (self.rollup_deltas.clone(), TopicKind::Repartition),
            (self.details.clone(), TopicKind::Compacted),
            (self.rollups.clone(), TopicKind::Compacted),
            (self.dead_letter.clone(), TopicKind::DeadLetter),
        ];
        out.extend(Stage::ALL.map(|s| (self.changelog(s), TopicKind::Compacted)));
        out
    }
}

/// How a topic is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopicKind {
    /// Between stages. Records carry their source change's timestamp, which
    /// may be days or years old (a snapshot, a replay): time retention would
    /// delete records not yet processed. So no retention; the engine purges
    /// what its stages have committed (`kafka.purge_interval_ms`), as Kafka
    /// Streams does for its repartition topics.
    Repartition,
    /// Changelogs and outputs: the latest record per key, kept forever.
    Compacted,
    /// Retention counts from when a record was dead-lettered (the broker's
    /// append time); its original timestamp is in a header.
    DeadLetter,
}

impl TopicKind {
    fn configs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            TopicKind::Repartition => &[
                ("cleanup.policy", "delete"),
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
            ],
            TopicKind::Compacted => &[
                ("cleanup.policy", "compact"),
                // Keep tombstones long enough for a slow restore to see them.
                ("delete.retention.ms", "86400000"),
                ("min.compaction.lag.ms", "0"),
            ],
            TopicKind::DeadLetter => &[
                ("cleanup.policy", "delete"),
                ("message.timestamp.type", "LogAppendTime"),
            ],
        }
    }
}

/// Creates the internal, changelog and output topics when missing, and
/// refuses to start when one exists with another partition count: state and
/// routing are partitioned by it, so a silent mismatch would corrupt results.
pub async fn ensure_topics(config: &Config, topics: &Topics) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .create()
        .context("creating the Kafka admin client")?;
    let timeout = Duration::from_secs(30);
    let owned = topics.owned();
    let metadata = admin
        .inner()
        .fetch_metadata(None, timeout)
        .with_context(|| {
            format!(
                "reading topic metadata from {}",
                config.kafka.bootstrap_servers
            )
        })?;
    let existing: std::collections::HashMap<&str, usize> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name(), t.partitions().len()))
        .collect();
    for (name, _) in &owned {
        if let Some(&n) = existing.get(name.as_str()) {
            if n as i32 != topics.partitions {
                bail!(
                    "topic {name} has {n} partitions but kafka.partitions = {}: state and routing \
                     are partitioned by it. Either set kafka.partitions = {n}, or reset the app: \
                     delete every topic named {}-* and the state directory {}",
                    topics.partitions,
                    config.app_id,
                    config.state.dir.display()
                );
            }
        }
    }
    let missing: Vec<&(String, TopicKind)> = owned
        .iter()
        .filter(|(n, _)| !existing.contains_key(n.as_str()))
        .collect();
    warn_on_time_retention(&admin, &owned, &existing).await;
    if missing.is_empty() {
        return Ok(());
    }
    // The outputs keep tombstones as long as configured: the sink must see
    // every delete, however far behind it is (kafka.delete_retention_ms).
    let output_retention = config.kafka.delete_retention_ms.to_string();
    let new_topics: Vec<NewTopic> = missing
        .iter()
        .map(|(name, kind)| {
            let output = *name == topics.details || *name == topics.rollups;
            let topic = kind
                .configs()
                .iter()
                .filter(|(k, _)| !(output && *k == "delete.retention.ms"))
                .fold(
                    NewTopic::new(
                        name,
                        topics.partitions,
                        TopicReplication::Fixed(config.kafka.replication_factor),
                    ),
                    |t, (k, v)| t.set(k, v),
                );
            match output {
                true => topic.set("delete.retention.ms", &output_retention),
                false => topic,
            }
        })
        .collect();
    let results = admin
        .create_topics(
            new_topics.iter(),
            &AdminOptions::new().operation_timeout(Some(timeout)),
        )
        .await
        .context("creating topics")?;
    for result in results {
        match result {
            Ok(name) => info!(topic = %name, partitions = topics.partitions, "created topic"),
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                info!(topic = %name, "topic created concurrently by another instance")
            }
            Err((name, code)) => bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Repartition topics created by another tool (or an older version) may
/// delete unprocessed records by time: say so, with the fix.
async fn warn_on_time_retention(
    admin: &AdminClient<DefaultClientContext>,
    owned: &[(String, TopicKind)],
    existing: &std::collections::HashMap<&str, usize>,
) {
    let specs: Vec<ResourceSpecifier<'_>> = owned
        .iter()
        .filter(|(n, k)| *k == TopicKind::Repartition && existing.contains_key(n.as_str()))
        .map(|(n, _)| ResourceSpecifier::Topic(n))
        .collect();
    if specs.is_empty() {
        return;
    }
    let results = match admin
        .describe_configs(specs.iter(), &AdminOptions::new())
        .await
    {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "could not read the configs of the repartition topics");
            return;
        }
    };
    for resource in results.into_iter().flatten() {
        let retention = resource
            .get("retention.ms")
            .and_then(|e| e.value.clone())
            .unwrap_or_default();
        if retention != "-1" {
            let topic = match &resource.specifier {
                OwnedResourceSpecifier::Topic(t) => t.clone(),
                other => format!("{other:?}"),
            };
            warn!(
                %topic, %retention,
                "repartition topic has time retention: records older than retention.ms by their \
                 source timestamp may be deleted before they are processed; set retention.ms=-1 \
                 (kafka-configs --alter --entity-type topics --entity-name <topic> --add-config retention.ms=-1)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds() -> Vec<(String, TopicKind)> {
        let config = Config::default();
        Topics::new(&config, vec!["outbound.orders.order_demo".into()]).owned()
    }

    fn config_of(kind: TopicKind, key: &str) -> Option<&'static str> {
        kind.configs()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    #[test]
    fn stage_inputs_are_repartition_topics_without_time_retention() {
        let topics = Topics::new(&Config::default(), Vec::new());
        let owned = kinds();
        for stage in Stage::ALL {
            let (_, kind) = owned
                .iter()
                .find(|(n, _)| n == topics.input(stage))
                .expect("stage input is created");
            assert_eq!(*kind, TopicKind::Repartition, "{}", stage.name());
            assert_eq!(config_of(*kind, "retention.ms"), Some("-1"));
            assert_eq!(config_of(*kind, "cleanup.policy"), Some("delete"));
        }
    }

    #[test]
    fn changelogs_and_outputs_are_compacted_and_dead_letters_keep_append_time() {
        let topics = Topics::new(&Config::default(), Vec::new());
        let owned = kinds();
        let kind_of = |name: &str| owned.iter().find(|(n, _)| n == name).map(|(_, k)| *k);
        for name in Stage::ALL
            .map(|s| topics.changelog(s))
            .into_iter()
            .chain([topics.details.clone(), topics.rollups.clone()])
        {
            assert_eq!(kind_of(&name), Some(TopicKind::Compacted), "{name}");
        }
        assert_eq!(
            config_of(TopicKind::Compacted, "cleanup.policy"),
            Some("compact")
        );
        assert_eq!(kind_of(&topics.dead_letter), Some(TopicKind::DeadLetter));
        assert_eq!(
            config_of(TopicKind::DeadLetter, "message.timestamp.type"),
            Some("LogAppendTime")
        );
        // Source topics belong to Debezium: never created or configured here.
        assert_eq!(kind_of("outbound.orders.order_demo"), None);
    }
}
