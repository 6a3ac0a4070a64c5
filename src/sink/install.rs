//! Installing and checking the indices before the sink writes: the templates
//! are put, each index behind its write alias is created if there is none,
//! and its owner record (`ownership.rs`) decides whether this sink may write
//! there and in which version epoch. Safe to run from several instances at
//! once: creation races end with one index, the others find it.
//!
//! Also [`bump_epoch`], what `outbound reset` calls to keep versions
//! consistent when the output topics are deleted: the next incarnation of
//! each topic claims a new epoch, so its restarted offsets outrank what is
//! indexed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use tracing::{info, warn};

use crate::config::Config;

use super::cluster::{Cluster, Created};
use super::encoder::Target;
use super::errors::Refusal;
use super::indices::{index_specs, IndexSpec};
use super::ownership::{verdict, Expected, IndexOwner, IndexState, Verdict};
use super::service::BulkService;
use super::topics::topic_ids;

/// An index ready to be written: where the write alias points and its record.
#[derive(Debug, Clone)]
pub struct Installed {
    pub spec: IndexSpec,
    pub index: String,
    pub owner: IndexOwner,
}

impl Installed {
    /// Where the sink writes it: its write alias, in its epoch.
    pub fn target(&self) -> Target {
        Target {
            role: self.spec.role,
            alias: self.spec.write_alias.as_str().into(),
            epoch: self.owner.epoch,
        }
    }
}

/// Puts the templates, creates missing indices, checks ownership and the
/// topic incarnation, and adds missing aliases. `topic_ids` are the output
/// topics' current ids (a missing topic is checked later, on assignment).
/// `consumed` are the topics the sink's group has already consumed from:
/// a first generation fed from one of them would miss the records before
/// the group's offsets, so it is refused rather than created half-filled.
pub async fn install(
    cluster: &Cluster,
    config: &Config,
    topic_ids: &BTreeMap<String, String>,
    consumed: &BTreeSet<String>,
) -> anyhow::Result<Vec<Installed>> {
    let mut out = Vec::new();
    for spec in index_specs(config)? {
        cluster.put_template(&spec.alias, &spec.template).await?;
        let topic_id = topic_ids.get(&spec.topic).map(String::as_str);
        let may_create = !consumed.contains(&spec.topic);
        out.push(install_one(cluster, config, spec, topic_id, may_create).await?);
    }
    Ok(out)
}

async fn install_one(
    cluster: &Cluster,
    config: &Config,
    spec: IndexSpec,
    topic_id: Option<&str>,
    may_create: bool,
) -> anyhow::Result<Installed> {
    let expected = Expected {
        app_id: &config.app_id,
        topic: &spec.topic,
        topic_id,
    };
    // A few rounds: another instance may be creating the same index.
    for _ in 0..5 {
        let written = cluster.alias_indices(&spec.write_alias).await?;
        let (index, has_write_alias) = match written.as_slice() {
            [one] => (one.clone(), true),
            [] => match cluster.alias_indices(&spec.alias).await?.as_slice() {
                // An index from before write aliases: checked, then adopted.
                [legacy] => (legacy.clone(), false),
                [] if !may_create => {
                    return Err(Refusal::new(format!(
                        "no index behind alias {}, but the sink's group already consumed topic \
                         {} past its start (were the indices deleted?): a new index would miss \
                         every document before the group's offsets. Run `outbound \
                         rebuild-indices` to build one from the whole topic",
                        spec.alias, spec.topic
                    ))
                    .into())
                }
                [] => {
                    let index = spec.index_name(1);
                    let owner = IndexOwner {
                        app_id: config.app_id.clone(),
                        topic: spec.topic.clone(),
                        topic_id: topic_id.map(str::to_owned),
                        epoch: 0,
                        generation: 1,
                        index_version: spec.index_version,
                        state: IndexState::Live,
                        delete_after_ms: None,
                    };
                    let mut aliases = vec![(spec.write_alias.as_str(), true)];
                    aliases.extend(spec.read_aliases.iter().map(|a| (a.as_str(), false)));
                    if cluster.create_index(&index, &aliases, &owner).await? == Created::Created {
                        info!(%index, alias = %spec.alias, "created the first generation");
                    }
                    continue;
                }
                several => {
                    return Err(Refusal::new(format!(
                        "alias {} points to several indices ({}) and none is behind the write \
                         alias {}: move it to one, or run `outbound rebuild-indices`",
                        spec.alias,
                        several.join(", "),
                        spec.write_alias
                    ))
                    .into())
                }
            },
            several => {
                return Err(Refusal::new(format!(
                    "write alias {} points to several indices ({})",
                    spec.write_alias,
                    several.join(", ")
                ))
                .into())
            }
        };
        let found = cluster.owner(&index).await?;
        let owner = match (
            verdict(&index, &spec.alias, found.as_ref(), expected)?,
            found,
        ) {
            (Verdict::Write, Some(o)) => o,
            (Verdict::Claim, Some(mut o)) => {
                o.topic_id = topic_id.map(str::to_owned);
                info!(%index, topic = %spec.topic, topic_id, epoch = o.epoch, "claimed the version epoch for this incarnation of the topic");
                cluster.put_owner(&index, &o).await?;
                o
            }
            // No record (verdict Adopt): this app becomes the owner.
            _ => {
                let o = IndexOwner {
                    app_id: config.app_id.clone(),
                    topic: spec.topic.clone(),
                    topic_id: topic_id.map(str::to_owned),
                    epoch: 0,
                    generation: 0,
                    index_version: 0,
                    state: IndexState::Live,
                    delete_after_ms: None,
                };
                warn!(%index, alias = %spec.alias, "index has no owner record (an older outbound, or made by hand): recording this app as its owner, version epoch 0");
                cluster.put_owner(&index, &o).await?;
                o
            }
        };
        let mut actions = Vec::new();
        if !has_write_alias {
            actions.push(
                json!({"add": {"index": index, "alias": spec.write_alias, "is_write_index": true}}),
            );
        }
        for alias in &spec.read_aliases {
            let behind = cluster.alias_indices(alias).await?;
            if behind.is_empty() {
                actions.push(json!({"add": {"index": index, "alias": alias}}));
            }
            for other in behind.iter().filter(|i| **i != index) {
                // During a rebuild readers still see the previous generation:
                // fine when it is ours.
                let theirs = cluster.owner(other).await?;
                if theirs.as_ref().is_none_or(|o| o.app_id != config.app_id) {
                    return Err(Refusal::new(format!(
                        "alias {alias} points to index {other}, which {}; this app must not \
                         add its documents to what that alias reads. Choose another name \
                         (`{}`)",
                        match &theirs {
                            Some(o) => format!("belongs to app id {:?}", o.app_id),
                            None => "no outbound app owns".to_owned(),
                        },
                        spec.key_of(alias)
                    ))
                    .into());
                }
            }
        }
        cluster.update_aliases(actions).await?;
        let want = config.sink.gc_deletes_secs();
        if cluster.gc_deletes_secs(&index).await? < want {
            info!(%index, gc_deletes_secs = want, "raising index.gc_deletes above the sink's retry window");
            cluster
                .put_settings(&index, json!({"index.gc_deletes": format!("{want}s")}))
                .await?;
        }
        if owner.index_version < spec.index_version {
            warn!(
                %index, has = owner.index_version, configured = spec.index_version,
                "sink.index_version is ahead of the index: run `outbound rebuild-indices` to build and swap in an index with the current mapping"
            );
        }
        return Ok(Installed { spec, index, owner });
    }
    anyhow::bail!(
        "index behind alias {} kept changing while it was installed; is a rebuild running?",
        spec.write_alias
    )
}

/// One index whose epoch [`bump_epoch`] raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BumpedIndex {
    pub index: String,
    pub epoch: u32,
}

/// Starts a new version epoch in every index this app writes or serves
/// (behind its write and read aliases), its topic id left for the next
/// incarnation of the output topic to claim. For `outbound reset`, once the
/// app is stopped and before its output topics are created again: the
/// offsets of the new topics then outrank every indexed document. Deleting
/// the indices instead (`reset --indices`) needs no bump.
pub async fn bump_epoch_async(config: &Config) -> anyhow::Result<Vec<BumpedIndex>> {
    let mut config = config.clone();
    config.sink.resolve_index_prefix(&config.app_id);
    let cluster = Cluster::new(BulkService::new(&config.sink)?.client().clone());
    let mut out = Vec::new();
    for spec in index_specs(&config)? {
        let mut indices = cluster.alias_indices(&spec.write_alias).await?;
        for a in &spec.read_aliases {
            indices.extend(cluster.alias_indices(a).await?);
        }
        indices.sort();
        indices.dedup();
        for index in indices {
            let Some(owner) = cluster.owner(&index).await? else {
                continue;
            };
            if owner.app_id != config.app_id {
                continue;
            }
            let bumped = super::ownership::bumped(&owner);
            cluster.put_owner(&index, &bumped).await?;
            info!(%index, epoch = bumped.epoch, "new version epoch; the next incarnation of {} claims it", owner.topic);
            out.push(BumpedIndex {
                index,
                epoch: bumped.epoch,
            });
        }
    }
    Ok(out)
}

/// [`bump_epoch_async`] for callers without an async runtime.
pub fn bump_epoch(config: &Config) -> anyhow::Result<Vec<BumpedIndex>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bump_epoch_async(config))
}

/// The current ids of the topics feeding `specs`.
pub async fn output_topic_ids(config: &Config) -> anyhow::Result<BTreeMap<String, String>> {
    let topics = [config.topic("details"), config.topic("rollups")];
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    topic_ids(config, &names).await
}

/// Installs and checks the indices of `config` as the sink does before it
/// writes, for tools and tests; the sink group's offsets are not consulted
/// (a missing first generation is always created).
pub async fn install_indices(config: &Config) -> anyhow::Result<Vec<Installed>> {
    let mut config = config.clone();
    config.sink.resolve_index_prefix(&config.app_id);
    config.sink.validate()?;
    let cluster = Cluster::new(BulkService::new(&config.sink)?.client().clone());
    let ids = output_topic_ids(&config).await?;
    install(&cluster, &config, &ids, &BTreeSet::new()).await
}
