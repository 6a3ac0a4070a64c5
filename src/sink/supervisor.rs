//! Running the sink: [`run`] is one run of it (prepare the topics and
//! indices, then the loop until shutdown or an error), [`spawn`] runs it on
//! its own thread under a supervisor that starts it again after any error,
//! with backoff, from the committed offsets. An Elasticsearch problem thus
//! never stops the process: inside `outbound run` the exactly-once stages
//! keep going while the sink reports on `/healthz/sink` (`health.rs`).
//! `outbound sink` alone exits on a [`Refusal`](super::errors::Refusal),
//! which needs an operator, and rides out everything else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

use super::acks::OffsetTracker;
use super::cluster::Cluster;
use super::consumer;
use super::delivery::{Delivery, StaleBatch};
use super::dlq::DeadLetterProducer;
use super::encoder::{Encoder, Target};
use super::errors::is_refusal;
use super::install::{install, output_topic_ids, Installed};
use super::ownership::IndexState;
use super::retry::Backoff;
use super::service::BulkService;
use super::sink_loop::{LoopSetup, Progress, SinkLoop};
use super::topics::{client_config, delete_retention_ms, ensure_dead_letter_topic};

/// A run that lasted this long resets the restart backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// How often retired generations past their `--keep-old` time are deleted.
const JANITOR_EVERY: Duration = Duration::from_secs(600);

/// The sink's consumer group.
pub fn group_id(config: &Config) -> String {
    format!("{}-sink", config.app_id)
}

/// The sink's dead-letter topic.
pub fn dlq_topic(config: &Config) -> String {
    if config.sink.dlq_topic.is_empty() {
        config.topic("sink-dlq")
    } else {
        config.sink.dlq_topic.clone()
    }
}

/// What a supervised sink does with a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefusal {
    /// Stop and return it (`outbound sink`).
    Exit,
    /// Stay down, report it, try again every `sink.retry_max_backoff_ms`
    /// (inside `outbound run`: the stream stages go on).
    Wait,
}

/// Runs the sink on its own thread and runtime as `outbound run` does: it
/// never stops the process; errors restart it with backoff.
pub fn spawn(
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    spawn_with(config, metrics, shutdown, OnRefusal::Wait)
}

/// [`spawn`], choosing what a refusal does.
pub fn spawn_with(
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    on_refusal: OnRefusal,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name("sink".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("sink-rt")
                .enable_all()
                .build()
                .context("starting the sink's async runtime")?;
            let result = runtime.block_on(async {
                tokio::select! {
                    result = supervise(config, metrics, shutdown.clone(), on_refusal) => result,
                    () = overdue(&shutdown) => {
                        warn!(
                            grace_s = STOP_GRACE.as_secs(),
                            "the sink did not stop in time after shutdown was requested; leaving it \
                             (what it had not committed is sent again by the next owner, idempotently)"
                        );
                        Ok(())
                    }
                }
            });
            // Not a plain drop, which would wait for any blocking task forever.
            runtime.shutdown_timeout(Duration::from_secs(2));
            result
        })
        .context("starting the sink thread")
}

/// How long the sink may take to stop once shutdown is requested: its loop
/// gives in-flight batches 10 s, then commits. Whatever it is waiting on
/// beyond that (a search node that just came back, a request with a 60 s
/// timeout, a restart's backoff) must not hold the process past its
/// shutdown deadline.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Resolves `STOP_GRACE` after shutdown was requested.
async fn overdue(shutdown: &Shutdown) {
    while !shutdown.is_requested() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(STOP_GRACE).await;
}

async fn supervise(
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    on_refusal: OnRefusal,
) -> anyhow::Result<()> {
    let health = &metrics.sink.health;
    health.enable();
    let backoff = Backoff::of(&config.sink);
    let mut attempt = 0u32;
    while !shutdown.is_requested() {
        let started = Instant::now();
        let result = run(config.clone(), metrics.clone(), shutdown.clone()).await;
        metrics.liveness.done("sink");
        let e = match result {
            Ok(()) => break,
            Err(e) if shutdown.is_requested() => {
                warn!(error = %format!("{e:#}"), "the sink stopped with an error during shutdown");
                break;
            }
            Err(e) => e,
        };
        if started.elapsed() >= STABLE_AFTER {
            attempt = 0;
        }
        let refused = is_refusal(&e);
        let reason = if refused {
            "refused"
        } else if e.chain().any(|c| c.is::<StaleBatch>()) {
            "stale"
        } else {
            "transient"
        };
        metrics.sink.restarts.with_label_values(&[reason]).inc();
        let message = format!("{e:#}");
        health.down(message.clone());
        if refused && on_refusal == OnRefusal::Exit {
            return Err(e);
        }
        let delay = if refused {
            backoff.max
        } else {
            backoff.delay(attempt, rand::random())
        };
        attempt = attempt.saturating_add(1);
        if refused {
            error!(error = %message, retry_in = ?delay, "the Elasticsearch sink stopped: it needs an operator; the stream stages go on, and the sink tries again");
        } else {
            warn!(error = %message, retry_in = ?delay, "the Elasticsearch sink stopped; it starts again from its committed offsets");
        }
        let until = Instant::now() + delay;
        while Instant::now() < until && !shutdown.is_requested() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    info!("Elasticsearch sink stopped");
    Ok(())
}

/// Everything one run of the loop needs besides its group and targets.
pub(crate) struct Prepared {
    pub service: BulkService,
    pub cluster: Cluster,
    pub installed: Vec<Installed>,
    pub topic_ids: BTreeMap<String, String>,
    pub dlq: Arc<DeadLetterProducer>,
}

/// Waits for the output topics, installs and checks the indices, creates
/// the dead-letter topic. A first generation is created only while the
/// sink's group has consumed nothing of its topic (it would miss every
/// record before the group's offsets).
pub(crate) async fn prepare(config: &Config, shutdown: &Shutdown) -> anyhow::Result<Prepared> {
    config.sink.validate()?;
    let service = BulkService::new(&config.sink)?;
    let cluster = Cluster::new(service.client().clone());
    let backoff = Backoff::of(&config.sink);
    let outputs = [config.topic("details"), config.topic("rollups")];
    // The indices record which incarnation of each topic they hold: wait
    // for the topics (the stream stages create them) before looking.
    let mut waited = 0u32;
    let topic_ids = loop {
        match output_topic_ids(config).await {
            Ok(ids) if outputs.iter().all(|t| ids.contains_key(t)) => break ids,
            Ok(_) if waited == 0 => {
                info!(topics = ?outputs, "waiting for the output topics to exist")
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %format!("{e:#}"), "describing the output topics failed; retrying")
            }
        }
        if shutdown.is_requested() {
            anyhow::bail!("shutdown while waiting for the output topics");
        }
        tokio::time::sleep(backoff.delay(waited.min(4), rand::random())).await;
        waited += 1;
    };
    let installed = if config.sink.install_templates {
        let consumed = consumed_topics(config, &group_id(config), &outputs)?;
        let mut attempt = 0;
        loop {
            match install(&cluster, config, &topic_ids, &consumed).await {
                Ok(done) => break done,
                Err(e) if is_refusal(&e) || shutdown.is_requested() => return Err(e),
                Err(e) => {
                    let delay = backoff.delay(attempt, rand::random());
                    warn!(error = %format!("{e:#}"), url = service.url(), retry_in = ?delay, "installing the indices failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    } else {
        unmanaged(config)?
    };
    let dlq_topic = dlq_topic(config);
    ensure_dead_letter_topic(config, &dlq_topic).await?;
    let dlq = Arc::new(DeadLetterProducer::new(&client_config(config), &dlq_topic)?);
    Ok(Prepared {
        service,
        cluster,
        installed,
        topic_ids,
        dlq,
    })
}

/// The topics of which `group` has committed offsets past their start.
pub(crate) fn consumed_topics(
    config: &Config,
    group: &str,
    topics: &[String],
) -> anyhow::Result<BTreeSet<String>> {
    let consumer: BaseConsumer = client_config(config)
        .set("group.id", group)
        .create()
        .context("creating a consumer to read the sink group's offsets")?;
    let mut out = BTreeSet::new();
    for topic in topics {
        let partitions = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .with_context(|| format!("reading metadata of {topic}"))?
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p as i32);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(30))
            .with_context(|| format!("reading group {group}'s offsets of {topic}"))?;
        if committed
            .elements()
            .iter()
            .any(|e| matches!(e.offset(), Offset::Offset(o) if o > 0))
        {
            out.insert(topic.clone());
        }
    }
    Ok(out)
}

/// Indices an operator manages (`sink.install_templates = false`): written
/// through their main aliases in epoch 0, unchecked.
fn unmanaged(config: &Config) -> anyhow::Result<Vec<Installed>> {
    Ok(super::indices::index_specs(config)?
        .into_iter()
        .map(|mut spec| Installed {
            index: {
                spec.write_alias = spec.alias.clone();
                spec.alias.clone()
            },
            owner: super::ownership::IndexOwner {
                app_id: config.app_id.clone(),
                topic: spec.topic.clone(),
                topic_id: None,
                epoch: 0,
                generation: 0,
                index_version: spec.index_version,
                state: IndexState::Live,
                delete_after_ms: None,
            },
            spec,
        })
        .collect())
}

/// One run of a loop over the output topics in `group`, writing to `targets`.
pub(crate) async fn run_loop(
    config: &Config,
    prepared: &Prepared,
    group: &str,
    targets: &[Target],
    progress: Option<Arc<Mutex<Progress>>>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (details, rollups) = (config.topic("details"), config.topic("rollups"));
    let encoder = Encoder::new(targets, &details, &rollups, config.sink.max_request_bytes)?;
    let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
    let consumer = Arc::new(consumer::create(
        config,
        group,
        &[&details, &rollups],
        tracker.clone(),
        metrics.clone(),
    )?);
    let mut sink = SinkLoop::new(LoopSetup {
        config: config.clone(),
        encoder,
        delivery: Arc::new(Delivery::new(
            &config.sink,
            prepared.service.clone(),
            metrics.clone(),
            shutdown.clone(),
        )),
        dlq: prepared.dlq.clone(),
        consumer,
        tracker,
        topic_ids: prepared.topic_ids.clone(),
        progress,
        metrics: metrics.clone(),
        shutdown,
    });
    metrics.sink.health.running();
    let result = sink.run().await;
    sink.finish(result.is_ok()).await;
    result
}

/// One run of the sink until `shutdown` trips or an error (no restarts).
pub async fn run(config: Config, metrics: Arc<Metrics>, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut config = config;
    config.sink.resolve_index_prefix(&config.app_id);
    let prepared = prepare(&config, &shutdown).await?;
    let group = group_id(&config);
    for topic in prepared.topic_ids.keys() {
        match delete_retention_ms(&config, topic).await {
            Ok(Some(ms)) => {
                metrics
                    .sink
                    .delete_retention_seconds
                    .with_label_values(&[topic])
                    .set(ms as f64 / 1000.0);
                if ms < config.kafka.delete_retention_ms {
                    warn!(%topic, delete_retention_ms = ms, configured = config.kafka.delete_retention_ms,
                        "the output topic keeps tombstones shorter than kafka.delete_retention_ms: a sink lagging longer misses deletes; raise it with kafka-configs --alter --entity-type topics --entity-name {topic} --add-config delete.retention.ms={}", config.kafka.delete_retention_ms);
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %format!("{e:#}"), %topic, "reading delete.retention.ms failed")
            }
        }
    }
    let targets: Vec<Target> = prepared.installed.iter().map(Installed::target).collect();
    info!(
        group = %group, url = %config.sink.url,
        indices = ?prepared.installed.iter().map(|i| (i.index.as_str(), i.owner.epoch)).collect::<Vec<_>>(),
        dead_letters = %prepared.dlq.topic(), "Elasticsearch sink running"
    );
    let janitor = tokio::spawn(janitor(
        config.clone(),
        prepared.cluster.clone(),
        shutdown.clone(),
    ));
    let result = run_loop(
        &config, &prepared, &group, &targets, None, metrics, shutdown,
    )
    .await;
    janitor.abort();
    result
}

/// Deletes this app's retired generations once their `--keep-old` time is up.
async fn janitor(config: Config, cluster: Cluster, shutdown: Shutdown) {
    let Ok(specs) = super::indices::index_specs(&config) else {
        return;
    };
    while !shutdown.is_requested() {
        for spec in &specs {
            if let Err(e) = super::rebuild::delete_expired(&cluster, &config, spec).await {
                warn!(error = %format!("{e:#}"), alias = %spec.alias, "deleting retired generations failed");
            }
        }
        let until = Instant::now() + JANITOR_EVERY;
        while Instant::now() < until && !shutdown.is_requested() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
