//! The topics of one app id: their names, how each is kept, creating them at
//! startup, and what the engine needs to know of them while it runs (their
//! ids and their size and tombstone retention settings).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use tracing::{info, warn};

use super::topology::{Output, Stage};
use crate::config::Config;

/// Every topic name of one app id.
#[derive(Debug, Clone)]
pub struct Topics {
    pub sources: Vec<String>,
    /// `<app>-<suffix>` of each [`Output`], indexed by it.
    outputs: [String; Output::ALL.len()],
    /// `<app>-<stage>-changelog`, indexed by [`Stage::index`].
    changelogs: [String; Stage::ALL.len()],
    pub partitions: i32,
}

impl Topics {
    pub fn new(config: &Config, sources: Vec<String>) -> Self {
        Self {
            sources,
            outputs: Output::ALL.map(|o| config.topic(o.suffix())),
            changelogs: Stage::ALL.map(|s| config.topic(&format!("{}-changelog", s.name()))),
            partitions: config.kafka.partitions,
        }
    }

    /// The topic of an output.
    pub fn output(&self, output: Output) -> &str {
        &self.outputs[output as usize]
    }

    /// The input topic of a stateful stage.
    pub fn input(&self, stage: Stage) -> &str {
        self.output(stage.def().input)
    }

    /// The changelog of a stateful stage's store.
    pub fn changelog(&self, stage: Stage) -> &str {
        &self.changelogs[stage.index()]
    }

    /// The stage whose input `topic` is, if any.
    pub fn stage_of(&self, topic: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| self.input(*s) == topic)
    }

    pub fn details(&self) -> &str {
        self.output(Output::Details)
    }

    pub fn rollups(&self) -> &str {
        self.output(Output::Rollups)
    }

    pub fn dead_letter(&self) -> &str {
        self.output(Output::DeadLetter)
    }

    /// The topics this app creates, with their kind.
    fn owned(&self) -> Vec<(String, TopicKind)> {
        let mut out: Vec<(String, TopicKind)> = Output::ALL
            .iter()
            .map(|o| (self.output(*o).to_owned(), o.topic_kind()))
            .collect();
        out.extend(
            self.changelogs
                .iter()
                .map(|c| (c.clone(), TopicKind::Compacted)),
        );
        out
    }

    /// Every topic the stream stages write.
    pub fn written(&self) -> Vec<String> {
        self.owned().into_iter().map(|(n, _)| n).collect()
    }
}

/// How a topic is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
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

/// `max.message.bytes` of the dead-letter topic: a refused record of up to
/// 16 MiB (`processors::MAX_DEAD_LETTER_BYTES`) fits whole, with its headers.
pub const DEAD_LETTER_MAX_BYTES: usize = 17 << 20;
const DEAD_LETTER_MAX_BYTES_TEXT: &str = "17825792";

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
                // A record dead-lettered for being too large for its output
                // topic still fits here, whole, up to this size.
                ("max.message.bytes", DEAD_LETTER_MAX_BYTES_TEXT),
            ],
        }
    }
}

/// Creates the internal, changelog and output topics when missing, and
/// refuses to start when one exists with another partition count: state and
/// routing are partitioned by it, so a silent mismatch would corrupt results.
pub async fn ensure_topics(config: &Config, topics: &Topics) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
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
            let output = *name == topics.details() || *name == topics.rollups();
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

/// What the engine needs to know of the topics it writes, read at startup
/// and again when a changelog is restored.
#[derive(Debug, Clone, Default)]
pub struct TopicFacts {
    /// Topic id (base64) per topic name.
    pub ids: HashMap<String, String>,
    /// `max.message.bytes` per topic name.
    pub max_bytes: HashMap<String, usize>,
    /// `delete.retention.ms` per compacted topic name.
    pub delete_retention_ms: HashMap<String, i64>,
}

/// Reads the ids and the size and tombstone settings of `names`.
pub fn describe<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    config: &Config,
    names: &[String],
) -> anyhow::Result<TopicFacts> {
    let timeout = Duration::from_secs(30);
    let ids = super::librdkafka::topic_ids(client, names, timeout)
        .map_err(|e| anyhow::anyhow!(e))
        .context("reading topic ids")?;
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .context("creating the Kafka admin client")?;
    let specs: Vec<ResourceSpecifier<'_>> = names
        .iter()
        .filter(|n| ids.contains_key(*n))
        .map(|n| ResourceSpecifier::Topic(n))
        .collect();
    let mut facts = TopicFacts {
        ids,
        ..TopicFacts::default()
    };
    // Topics just created may not be in the metadata yet; describing no
    // resource at all is an invalid request.
    if specs.is_empty() {
        return Ok(facts);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime to describe topics")?;
    let results = runtime
        .block_on(admin.describe_configs(
            specs.iter(),
            &AdminOptions::new().request_timeout(Some(timeout)),
        ))
        .context("describing topic configs")?;
    for resource in results.into_iter().flatten() {
        let OwnedResourceSpecifier::Topic(name) = &resource.specifier else {
            continue;
        };
        let value = |key: &str| resource.get(key).and_then(|e| e.value.clone());
        if let Some(n) = value("max.message.bytes").and_then(|v| v.parse().ok()) {
            facts.max_bytes.insert(name.clone(), n);
        }
        if let Some(n) = value("delete.retention.ms").and_then(|v| v.parse().ok()) {
            facts.delete_retention_ms.insert(name.clone(), n);
        }
    }
    Ok(facts)
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
            .map(|s| topics.changelog(s).to_owned())
            .into_iter()
            .chain([topics.details().to_owned(), topics.rollups().to_owned()])
        {
            assert_eq!(kind_of(&name), Some(TopicKind::Compacted), "{name}");
        }
        assert_eq!(
            config_of(TopicKind::Compacted, "cleanup.policy"),
            Some("compact")
        );
        assert_eq!(kind_of(topics.dead_letter()), Some(TopicKind::DeadLetter));
        assert_eq!(
            config_of(TopicKind::DeadLetter, "message.timestamp.type"),
            Some("LogAppendTime")
        );
        // Source topics belong to Debezium: never created or configured here.
        assert_eq!(kind_of("outbound.orders.order_demo"), None);
    }
}
