//! `outbound rebuild-indices`: a new generation of every index, filled from
//! the compacted output topics and swapped in without readers ever seeing a
//! missing or half-filled index. Also what applies a template or mapping
//! change (`sink.index_version`).
//!
//! 1. Each new generation is created (`<alias>-v<index_version>-g<n+1>`)
//!    behind `<alias>-rebuild` only: no reader sees it.
//! 2. A loop in its own consumer group (`<app>-rebuild`) fills it from the
//!    start of the output topics, in the same version epoch as the live
//!    index (a new one if the topic was re-created), so the live sink and
//!    the rebuild write comparable versions.
//! 3. Once it has caught up with the topics' ends, the write aliases move to
//!    it: the live sink (which writes through them) writes the new generation
//!    from then on; whatever it sent to the old one before is in the topics.
//! 4. The rebuild catches up with the ends read after that move, so the new
//!    generation holds everything the old one does, then refreshes it.
//! 5. Every read alias moves in one `_aliases` call: readers go from a
//!    complete index to a complete index.
//! 6. The old generation is retired, deleted after `--keep-old` (by the
//!    sink's janitor, or at once when zero).
//!
//! A rebuild stopped half-way leaves its generation behind `<alias>-rebuild`
//! and its group's offsets; the next rebuild resumes it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

use super::cluster::{Cluster, Created};
use super::consumer::lock;
use super::encoder::Target;
use super::errors::Refusal;
use super::indices::{index_specs, IndexSpec};
use super::install::output_topic_ids;
use super::ownership::{epoch_for_rebuild, IndexOwner, IndexState};
use super::service::BulkService;
use super::sink_loop::Progress;
use super::supervisor::{run_loop, Prepared};
use super::topics::client_config;

/// How the command shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A progress bar on a terminal, log lines otherwise.
    Auto,
    /// Log lines only (`--json`, tests).
    Log,
}

#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// How long the old generation is kept after the swap.
    pub keep_old: Duration,
    pub display: Display,
}

/// One index's rebuild.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RebuiltIndex {
    pub alias: String,
    /// The generation readers saw before (none on a first build).
    pub old: Option<String>,
    pub new: String,
    pub epoch: u32,
    pub documents: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub indices: Vec<RebuiltIndex>,
    /// Output records read into the new generation.
    pub records: u64,
    pub seconds: f64,
    /// When the old generation goes (Unix ms).
    pub old_deleted_after_ms: i64,
}

/// The rebuild's consumer group.
pub fn group_id(config: &Config) -> String {
    format!("{}-rebuild", config.app_id)
}

struct Plan {
    spec: IndexSpec,
    /// The generation behind the read alias now, with its record.
    current: Option<(String, Option<IndexOwner>)>,
    new: String,
    owner: IndexOwner,
    resumed: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Rebuilds every index of the app (see the module docs).
pub async fn rebuild_indices(
    config: Config,
    options: RebuildOptions,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let mut config = config;
    config.sink.resolve_index_prefix(&config.app_id);
    config.sink.validate()?;
    let service = BulkService::new(&config.sink)?;
    let cluster = Cluster::new(service.client().clone());
    let topic_ids = output_topic_ids(&config).await?;
    let outputs = [config.topic("details"), config.topic("rollups")];
    for t in &outputs {
        anyhow::ensure!(
            topic_ids.contains_key(t),
            "output topic {t} does not exist: nothing to rebuild from (run `outbound run` first)"
        );
    }
    let mut plans = Vec::new();
    for spec in index_specs(&config)? {
        cluster.put_template(&spec.alias, &spec.template).await?;
        plans.push(plan(&cluster, &config, spec, &topic_ids).await?);
    }
    let group = group_id(&config);
    if plans.iter().all(|p| !p.resumed) {
        rewind_group(&config, &group, &outputs)?;
    }
    // Created side by side: each creation waits for its shards to start.
    let mut creations = tokio::task::JoinSet::new();
    for p in &plans {
        if p.resumed {
            info!(index = %p.new, "resuming the rebuild of this generation");
            continue;
        }
        let (cluster, index, alias, owner) = (
            cluster.clone(),
            p.new.clone(),
            p.spec.rebuild_alias.clone(),
            p.owner.clone(),
        );
        creations.spawn(async move {
            let created = cluster
                .create_index(&index, &[(alias.as_str(), true)], &owner)
                .await?;
            anyhow::ensure!(
                created == Created::Created,
                "index {index} exists already: another rebuild is running?"
            );
            info!(%index, epoch = owner.epoch, "new generation created; filling it");
            Ok(())
        });
    }
    while let Some(done) = creations.join_next().await {
        done.context("creating a new generation: the task panicked")??;
    }

    // The loop filling the new generation, in its own group and shutdown.
    let dlq_topic = super::supervisor::dlq_topic(&config);
    super::topics::ensure_dead_letter_topic(&config, &dlq_topic).await?;
    let prepared = Prepared {
        service: service.clone(),
        cluster: cluster.clone(),
        installed: Vec::new(),
        topic_ids: topic_ids.clone(),
        dlq: Arc::new(super::dlq::DeadLetterProducer::new(
            &client_config(&config),
            &dlq_topic,
        )?),
    };
    let targets: Vec<Target> = plans
        .iter()
        .map(|p| Target {
            role: p.spec.role,
            alias: p.spec.rebuild_alias.as_str().into(),
            epoch: p.owner.epoch,
        })
        .collect();
    let progress = Arc::new(Mutex::new(Progress::default()));
    let stop = Shutdown::new();
    let filler = {
        let (config, group, progress, metrics, stop) = (
            config.clone(),
            group.clone(),
            progress.clone(),
            metrics.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            run_loop(
                &config,
                &prepared,
                &group,
                &targets,
                Some(progress),
                metrics,
                stop,
            )
            .await
        })
    };
    let mut watch = Watch {
        progress: &progress,
        filler: &filler,
        shutdown: &shutdown,
        stop: &stop,
        display: Reporter::new(options.display, total_records(&config, &outputs)?),
    };

    // Live until caught up: each pass catches up with the ends read at its
    // start, until the new generation keeps pace (see ready_to_move_writers).
    let mut ends = watermarks(&config, &outputs)?;
    let (mut passes, mut behind_before) = (0, None);
    loop {
        let pass = Instant::now();
        watch.until_caught_up(&ends, "filling").await?;
        passes += 1;
        let next = watermarks(&config, &outputs)?;
        let behind = records_behind(&next, &lock(&progress).acked_through);
        if ready_to_move_writers(pass.elapsed(), behind, behind_before, passes) {
            info!(
                passes,
                behind, "the new generation keeps pace with the output topics"
            );
            break;
        }
        behind_before = Some(behind);
        ends = next;
    }
    // Writers first: from here on the live sink writes the new generation.
    let mut actions = Vec::new();
    for p in &plans {
        if let Some((old, _)) = &p.current {
            actions.push(json!({"remove": {"index": old, "alias": p.spec.write_alias}}));
        }
        actions.push(
            json!({"add": {"index": p.new, "alias": p.spec.write_alias, "is_write_index": true}}),
        );
    }
    remove_missing_aliases(&cluster, &mut actions).await?;
    cluster
        .update_aliases(actions)
        .await
        .context("moving the write aliases to the new generation")?;
    info!("write aliases moved to the new generation; catching up with what the live sink wrote before");
    let ends = watermarks(&config, &outputs)?;
    watch.until_caught_up(&ends, "catching up").await?;
    for p in &plans {
        cluster.refresh(&p.new).await?;
    }

    // The new generation holds everything the old one does: the filling
    // stops (the live sink writes everything after the write aliases moved).
    stop.trigger();
    let Watch { display, .. } = watch;
    match filler.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(error = %format!("{e:#}"), "the rebuild's loop ended with an error before the swap")
        }
        Err(e) => warn!(error = %e, "the rebuild's loop panicked before the swap"),
    }
    // Readers, all at once.
    let mut actions = Vec::new();
    for p in &plans {
        for alias in &p.spec.read_aliases {
            for behind in cluster.alias_indices(alias).await? {
                if behind != p.new {
                    actions.push(json!({"remove": {"index": behind, "alias": alias}}));
                }
            }
            actions.push(json!({"add": {"index": p.new, "alias": alias}}));
        }
        actions.push(json!({"remove": {"index": p.new, "alias": p.spec.rebuild_alias}}));
    }
    cluster
        .update_aliases(actions)
        .await
        .context("swapping the read aliases to the new generation")?;
    let delete_after_ms = now_ms() + options.keep_old.as_millis() as i64;
    let mut indices = Vec::new();
    for p in &plans {
        let live = IndexOwner {
            state: IndexState::Live,
            ..p.owner.clone()
        };
        cluster.put_owner(&p.new, &live).await?;
        if let Some((old, owner)) = &p.current {
            let retired = IndexOwner {
                state: IndexState::Retired,
                delete_after_ms: Some(delete_after_ms),
                ..owner.clone().unwrap_or_else(|| live.clone())
            };
            cluster.put_owner(old, &retired).await?;
        }
        indices.push(RebuiltIndex {
            alias: p.spec.alias.clone(),
            old: p.current.as_ref().map(|(o, _)| o.clone()),
            new: p.new.clone(),
            epoch: p.owner.epoch,
            documents: cluster.count(&p.new).await.unwrap_or(0),
        });
    }
    info!(indices = ?indices.iter().map(|i| (&i.alias, &i.new)).collect::<Vec<_>>(), "read aliases swapped to the new generation");
    let records = lock(&progress).consumed;
    display.finish(records);
    delete_group(&config, &group).await;
    if options.keep_old.is_zero() {
        for p in &plans {
            delete_expired(&cluster, &config, &p.spec).await?;
        }
    }
    Ok(RebuildReport {
        indices,
        records,
        seconds: started.elapsed().as_secs_f64(),
        old_deleted_after_ms: delete_after_ms,
    })
}

/// Passes of "catch up with the ends read at the start" before the writers
/// move regardless.
const MAX_PASSES: u32 = 10;

/// Whether the filling is close enough to the topics' ends to move the
/// write aliases: the last pass was quick, or the lag stopped shrinking (the
/// new generation cannot gain on the stream; moving now bounds how long
/// readers see the old generation frozen to the time it takes to catch up
/// this lag, with no writes coming in), or enough passes were made.
pub fn ready_to_move_writers(
    pass: Duration,
    behind: u64,
    behind_before: Option<u64>,
    passes: u32,
) -> bool {
    pass < Duration::from_secs(2)
        || passes >= MAX_PASSES
        || behind_before.is_some_and(|before| behind >= before)
}

/// Records between what is acknowledged and the ends.
fn records_behind(
    ends: &BTreeMap<(String, i32), (i64, i64)>,
    acked: &BTreeMap<(String, i32), i64>,
) -> u64 {
    ends.iter()
        .map(|(key, (low, high))| (high - acked.get(key).copied().unwrap_or(*low)).max(0) as u64)
        .sum()
}

/// What a spec's rebuild starts from and builds.
async fn plan(
    cluster: &Cluster,
    config: &Config,
    spec: IndexSpec,
    topic_ids: &BTreeMap<String, String>,
) -> anyhow::Result<Plan> {
    let topic_id = topic_ids.get(&spec.topic).cloned();
    let behind = cluster.alias_indices(&spec.alias).await?;
    let current = match behind.as_slice() {
        [] => None,
        [one] => Some((one.clone(), cluster.owner(one).await?)),
        several => anyhow::bail!(
            "alias {} points to several indices ({}): make it point to one first",
            spec.alias,
            several.join(", ")
        ),
    };
    if let Some((index, Some(owner))) = &current {
        if owner.app_id != config.app_id {
            return Err(Refusal::new(format!(
                "index {index} behind alias {} belongs to app id {:?}: this app does not rebuild \
                 another app's index (set sink.index_prefix apart)",
                spec.alias, owner.app_id
            ))
            .into());
        }
    }
    // A rebuild stopped half-way: resume it.
    if let [index] = cluster.alias_indices(&spec.rebuild_alias).await?.as_slice() {
        if let Some(owner) = cluster.owner(index).await? {
            if owner.app_id == config.app_id && owner.state == IndexState::Building {
                return Ok(Plan {
                    spec,
                    current,
                    new: index.clone(),
                    owner,
                    resumed: true,
                });
            }
        }
    }
    let generation = cluster
        .owners(&spec.index_pattern())
        .await?
        .iter()
        .filter_map(|(_, o)| o.as_ref().map(|o| o.generation))
        .max()
        .unwrap_or(0)
        .max(current.as_ref().map_or(0, |_| 1))
        + 1;
    let current_owner = current.as_ref().and_then(|(_, o)| o.as_ref());
    let owner = IndexOwner {
        app_id: config.app_id.clone(),
        topic: spec.topic.clone(),
        topic_id: topic_id.clone(),
        epoch: epoch_for_rebuild(current_owner, topic_id.as_deref()),
        generation,
        index_version: spec.index_version,
        state: IndexState::Building,
        delete_after_ms: None,
    };
    Ok(Plan {
        new: spec.index_name(generation),
        spec,
        current,
        owner,
        resumed: false,
    })
}

/// `remove` actions for aliases an index does not have fail the whole call:
/// drop them (an index from before write aliases has none).
async fn remove_missing_aliases(
    cluster: &Cluster,
    actions: &mut Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    let mut keep = Vec::new();
    for a in actions.drain(..) {
        if let Some(r) = a.get("remove") {
            let (index, alias) = (
                r["index"].as_str().unwrap_or_default(),
                r["alias"].as_str().unwrap_or_default(),
            );
            if !cluster
                .alias_indices(alias)
                .await?
                .iter()
                .any(|i| i == index)
            {
                continue;
            }
        }
        keep.push(a);
    }
    *actions = keep;
    Ok(())
}

/// Deletes the retired generations of `spec` whose time is up (and that no
/// alias serves any more).
pub async fn delete_expired(
    cluster: &Cluster,
    config: &Config,
    spec: &IndexSpec,
) -> anyhow::Result<()> {
    let mut served = Vec::new();
    for a in spec
        .read_aliases
        .iter()
        .chain([&spec.write_alias, &spec.rebuild_alias])
    {
        served.extend(cluster.alias_indices(a).await?);
    }
    for (index, owner) in cluster.owners(&spec.index_pattern()).await? {
        let Some(owner) = owner else { continue };
        let due = owner.state == IndexState::Retired
            && owner.app_id == config.app_id
            && owner.delete_after_ms.is_some_and(|t| t <= now_ms())
            && !served.contains(&index);
        if due {
            cluster.delete_index(&index).await?;
            info!(%index, "deleted a retired generation");
        }
    }
    Ok(())
}

/// Commits offset 0 for every partition of the topics: the group starts
/// from the beginning (the earliest kept record of a compacted topic).
fn rewind_group(config: &Config, group: &str, topics: &[String]) -> anyhow::Result<()> {
    let consumer: BaseConsumer = client_config(config)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a consumer to rewind the rebuild's group")?;
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in partitions(&consumer, topics)? {
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Offset(0))
                .context("building the rewind")?;
        }
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .with_context(|| format!("rewinding group {group} to the start of {topics:?}"))
}

async fn delete_group(config: &Config, group: &str) {
    let admin: Result<AdminClient<DefaultClientContext>, _> = client_config(config).create();
    if let Ok(admin) = admin {
        if let Err(e) = admin.delete_groups(&[group], &AdminOptions::new()).await {
            warn!(error = %e, %group, "deleting the rebuild's consumer group failed");
        }
    }
}

fn partitions(consumer: &BaseConsumer, topics: &[String]) -> anyhow::Result<Vec<(String, i32)>> {
    topics
        .iter()
        .map(|t| {
            let md = consumer
                .fetch_metadata(Some(t), Duration::from_secs(30))
                .with_context(|| format!("reading metadata of {t}"))?;
            let n = md.topics().first().map_or(0, |m| m.partitions().len());
            Ok((t.clone(), n as i32))
        })
        .collect()
}

/// (topic, partition) → (low, high) watermarks.
fn watermarks(
    config: &Config,
    topics: &[String],
) -> anyhow::Result<BTreeMap<(String, i32), (i64, i64)>> {
    let consumer: BaseConsumer = client_config(config)
        .create()
        .context("creating a consumer to read watermarks")?;
    let mut out = BTreeMap::new();
    for (topic, n) in partitions(&consumer, topics)? {
        for p in 0..n {
            let w = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(30))
                .with_context(|| format!("reading the watermarks of {topic}/{p}"))?;
            out.insert((topic.clone(), p), w);
        }
    }
    Ok(out)
}

fn total_records(config: &Config, topics: &[String]) -> anyhow::Result<u64> {
    Ok(watermarks(config, topics)?
        .values()
        .map(|(lo, hi)| (hi - lo).max(0) as u64)
        .sum())
}

/// Waits on the filling loop, reporting progress.
struct Watch<'a> {
    progress: &'a Arc<Mutex<Progress>>,
    filler: &'a tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: &'a Shutdown,
    stop: &'a Shutdown,
    display: Reporter,
}

impl Watch<'_> {
    /// Until every partition is acknowledged up to `ends` (an empty or
    /// fully compacted partition, low = high, needs nothing).
    async fn until_caught_up(
        &mut self,
        ends: &BTreeMap<(String, i32), (i64, i64)>,
        phase: &str,
    ) -> anyhow::Result<()> {
        loop {
            if self.shutdown.is_requested() {
                self.stop.trigger();
                anyhow::bail!(
                    "stopped during the rebuild; its generation stays behind the rebuild aliases, \
                     and the next `outbound rebuild-indices` resumes it"
                );
            }
            if self.filler.is_finished() {
                anyhow::bail!(
                    "the rebuild's loop stopped (see the error above); the next `outbound \
                     rebuild-indices` resumes it"
                );
            }
            let progress = lock(self.progress).clone();
            self.display.update(phase, progress.consumed);
            let caught_up = ends.iter().all(|(key, (low, high))| {
                low >= high || progress.acked_through.get(key).is_some_and(|a| a >= high)
            });
            if caught_up {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A progress bar (docs/s, ETA) on a terminal, a log line every 10 s otherwise.
struct Reporter {
    bar: Option<ProgressBar>,
    total: u64,
    started: Instant,
    last_log: Instant,
}

impl Reporter {
    fn new(display: Display, total: u64) -> Self {
        let bar = (display == Display::Auto && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} records, {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            total,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    fn update(&mut self, phase: &str, consumed: u64) {
        if let Some(bar) = &self.bar {
            if consumed > bar.length().unwrap_or(0) {
                bar.set_length(consumed);
            }
            bar.set_position(consumed);
            bar.set_message(phase.to_owned());
            return;
        }
        if self.last_log.elapsed() >= Duration::from_secs(10) {
            self.last_log = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            let rate = consumed as f64 / secs;
            let eta = (self.total.saturating_sub(consumed) as f64 / rate.max(1.0)) as u64;
            info!(
                phase,
                records = consumed,
                of = self.total,
                records_per_sec = rate as u64,
                eta_secs = eta,
                "rebuilding"
            );
        }
    }

    fn finish(&self, consumed: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(consumed);
            bar.finish_with_message("swapped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writers_move_once_the_filling_keeps_pace_or_stops_gaining() {
        let s = Duration::from_secs;
        assert!(ready_to_move_writers(s(1), 5_000, None, 1), "a quick pass");
        assert!(!ready_to_move_writers(s(30), 5_000, None, 1));
        assert!(
            !ready_to_move_writers(s(10), 800, Some(5_000), 2),
            "still gaining"
        );
        assert!(
            ready_to_move_writers(s(10), 900, Some(800), 3),
            "no longer gaining"
        );
        assert!(
            ready_to_move_writers(s(10), 10, Some(20), MAX_PASSES),
            "enough passes"
        );
    }

    #[test]
    fn records_behind_counts_from_the_acknowledged_offset_or_the_start() {
        let key = |p| ("t".to_owned(), p);
        let ends = BTreeMap::from([(key(0), (0, 100)), (key(1), (40, 50)), (key(2), (7, 7))]);
        let acked = BTreeMap::from([(key(0), 90), (key(2), 7)]);
        assert_eq!(records_behind(&ends, &acked), 10 + 10);
    }
}
