//! `outbound reset`: removes what an app id has built, so the next `outbound
//! run` reprocesses the source topics from the beginning (as Kafka Streams'
//! application reset tool does):
//!
//! - the internal topics (`-rekey`, `-detail-changes`, `-rollup-deltas`)
//!   and the stages' changelogs;
//! - the stream group's committed offsets (the group itself);
//! - the local state directory `<state.dir>/<app_id>` (other machines'
//!   state directories are found stale against the empty changelogs and
//!   rebuilt by the engine when it starts there);
//! - with `--indices`: the detail and rollup indices and the sink group's
//!   offsets, so the sink refills new indices from the output topics;
//! - with `--outputs` (which needs `--indices`): the output and dead-letter
//!   topics too.
//!
//! The sink's external versions are the output records' offsets. Keeping the
//! output topics keeps their offsets growing, so reprocessed records carry
//! higher versions than the documents already indexed: the indices stay
//! consistent. Re-created output topics start again at offset 0, so their
//! records would lose against the old documents' versions: that is why
//! `--outputs` deletes the indices too.
//!
//! Refuses while the stream or sink group has live members.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use serde::Serialize;

use super::group;
use crate::config::Config;
use crate::engine::topology::Output;
use crate::engine::{Stage, Topics};

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    pub indices: bool,
    pub outputs: bool,
}

/// What a reset removes.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub topics: Vec<String>,
    pub groups: Vec<String>,
    pub state_dir: PathBuf,
    /// Concrete indices behind the sink's aliases.
    pub indices: Vec<String>,
}

impl Plan {
    pub fn describe(&self) -> String {
        let list = |v: &[String]| match v.is_empty() {
            true => "  (none)\n".to_owned(),
            false => v.iter().map(|s| format!("  {s}\n")).collect(),
        };
        format!(
            "topics:\n{}consumer groups (their committed offsets):\n{}local state:\n  {}\nindices:\n{}",
            list(&self.topics),
            list(&self.groups),
            self.state_dir.display(),
            list(&self.indices)
        )
    }

    /// The steps, for a progress bar.
    pub fn steps(&self) -> u64 {
        (self.topics.len() + self.groups.len() + self.indices.len() + 1) as u64
    }
}

fn admin(config: &Config) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    config
        .client_config()
        .create()
        .context("creating the Kafka admin client")
}

/// Checks no member is alive and lists what exists to remove.
pub async fn plan(config: &Config, scope: Scope) -> anyhow::Result<Plan> {
    anyhow::ensure!(
        !scope.outputs || scope.indices,
        "--outputs needs --indices: re-created output topics restart at offset 0, which the \
         indexed documents' versions (offsets of the old topics) would outrank"
    );
    let pipeline = config.pipeline()?;
    let topics = Topics::new(config, pipeline.topics());
    let stream_group = config.group_id();
    let sink_group = crate::sink::group_id(config);
    let mut probe = config.client_config();
    probe.set("group.id", format!("{}-reset", config.app_id));
    let consumer: BaseConsumer = probe.create().context("creating a Kafka consumer")?;
    for name in [&stream_group, &sink_group] {
        let g = group::describe(&consumer, name, TIMEOUT)?;
        if !g.members.is_empty() {
            let who: Vec<String> = g
                .members
                .iter()
                .map(|m| format!("{}@{}", m.client_id, m.host.trim_start_matches('/')))
                .collect();
            bail!(
                "consumer group {name} has {} live member(s): {}; stop every `outbound run` and \
                 `outbound sink` of app id {} first",
                who.len(),
                who.join(", "),
                config.app_id
            );
        }
    }
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .with_context(|| format!("listing topics on {}", config.kafka.bootstrap_servers))?;
    let existing: std::collections::BTreeSet<&str> =
        metadata.topics().iter().map(|t| t.name()).collect();
    let mut wanted: Vec<String> = [Output::Rekey, Output::DetailChanges, Output::RollupDeltas]
        .map(|o| topics.output(o).to_owned())
        .into();
    wanted.extend(Stage::ALL.map(|s| topics.changelog(s).to_owned()));
    if scope.outputs {
        wanted.extend([
            topics.details().to_owned(),
            topics.rollups().to_owned(),
            topics.dead_letter().to_owned(),
            crate::sink::dlq_topic(config),
        ]);
    }
    let mut groups = vec![stream_group];
    if scope.indices {
        groups.push(sink_group);
    }
    let indices = match scope.indices {
        true => index_names(config).await?,
        false => Vec::new(),
    };
    Ok(Plan {
        topics: wanted
            .into_iter()
            .filter(|t| existing.contains(t.as_str()))
            .collect(),
        groups,
        state_dir: config.state.dir.join(&config.app_id),
        indices,
    })
}

/// The concrete indices behind the sink's detail and rollup aliases.
async fn index_names(config: &Config) -> anyhow::Result<Vec<String>> {
    let client = crate::sink::client::client(&config.sink)?;
    let mut aliases = vec![config.sink.details_alias()];
    aliases.extend(
        outbound_pipeline::rollup::RollupName::ALL
            .iter()
            .map(|r| config.sink.rollup_alias(*r)),
    );
    let mut out = Vec::new();
    for alias in aliases {
        let response = client
            .indices()
            .get_alias(elasticsearch::indices::IndicesGetAliasParts::Name(&[
                &alias,
            ]))
            .send()
            .await
            .with_context(|| format!("looking up the alias {alias} on {}", config.sink.url))?;
        match response.status_code().as_u16() {
            404 => continue,
            s if s >= 400 => bail!("looking up the alias {alias}: HTTP {s}"),
            _ => {}
        }
        let body: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("the answer to GET _alias/{alias}"))?;
        if let Some(m) = body.as_object() {
            out.extend(m.keys().cloned());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Carries out `plan`, calling `step` with a description after each step.
pub async fn execute(
    config: &Config,
    plan: &Plan,
    mut step: impl FnMut(&str),
) -> anyhow::Result<()> {
    let admin = admin(config)?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    if !plan.topics.is_empty() {
        let names: Vec<&str> = plan.topics.iter().map(String::as_str).collect();
        let results = admin
            .delete_topics(&names, &options)
            .await
            .context("deleting topics")?;
        for r in results {
            match r {
                Ok(t) => step(&format!("deleted topic {t}")),
                Err((t, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                    step(&format!("topic {t} was already gone"))
                }
                Err((t, e)) => bail!("deleting topic {t}: {e}"),
            }
        }
    }
    let names: Vec<&str> = plan.groups.iter().map(String::as_str).collect();
    let results = admin
        .delete_groups(&names, &options)
        .await
        .context("deleting consumer groups")?;
    for r in results {
        match r {
            Ok(g) => step(&format!("deleted the offsets of group {g}")),
            Err((g, RDKafkaErrorCode::GroupIdNotFound)) => {
                step(&format!("group {g} had no offsets"))
            }
            Err((g, RDKafkaErrorCode::NonEmptyGroup)) => {
                bail!("group {g} gained members while resetting; stop them and run reset again")
            }
            Err((g, e)) => bail!("deleting consumer group {g}: {e}"),
        }
    }
    if !plan.indices.is_empty() {
        let client = crate::sink::client::client(&config.sink)?;
        for index in &plan.indices {
            let response = client
                .indices()
                .delete(elasticsearch::indices::IndicesDeleteParts::Index(&[index]))
                .send()
                .await
                .with_context(|| format!("deleting index {index}"))?;
            match response.status_code().as_u16() {
                404 => step(&format!("index {index} was already gone")),
                s if s >= 400 => bail!("deleting index {index}: HTTP {s}"),
                _ => step(&format!("deleted index {index}")),
            }
        }
    }
    match std::fs::remove_dir_all(&plan.state_dir) {
        Ok(()) => step(&format!("deleted {}", plan.state_dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            step(&format!("no local state at {}", plan.state_dir.display()))
        }
        Err(e) => return Err(e).with_context(|| format!("deleting {}", plan.state_dir.display())),
    }
    Ok(())
}
