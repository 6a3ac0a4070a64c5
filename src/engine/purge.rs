//! Purging the repartition topics (Kafka Streams' `deleteRecords` after
//! commit): they keep records without time retention (see
//! `topics::TopicKind::Repartition`), so once a stage's consumed offsets are
//! committed the records before them are deleted, bounding the topics by
//! what is still unprocessed. The deletes run on a thread of their own: a
//! slow broker delays the purge, never the stream loop.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::config::Config;

/// Committed next offset per repartition partition.
type Offsets = HashMap<(String, i32), i64>;

pub struct Purger {
    /// `None`: purging is off (`kafka.purge_interval_ms = 0`).
    interval: Option<Duration>,
    last: Instant,
    pending: Offsets,
    requests: Option<SyncSender<Offsets>>,
}

impl Purger {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let interval = (config.kafka.purge_interval_ms > 0)
            .then(|| Duration::from_millis(config.kafka.purge_interval_ms));
        let requests = match interval {
            None => None,
            Some(_) => {
                let admin: AdminClient<DefaultClientContext> = config
                    .client_config()
                    .create()
                    .context("creating the purge admin client")?;
                let (tx, rx) = sync_channel(1);
                std::thread::Builder::new()
                    .name("purge".into())
                    .spawn(move || purge_loop(admin, rx))
                    .context("starting the purge thread")?;
                Some(tx)
            }
        };
        Ok(Self {
            interval,
            last: Instant::now(),
            pending: HashMap::new(),
            requests,
        })
    }

    /// Notes an offset a transaction has committed for a repartition
    /// partition: every record before it is processed for good.
    pub fn committed(&mut self, topic: &str, partition: i32, next: i64) {
        if self.interval.is_some() {
            let e = self
                .pending
                .entry((topic.to_owned(), partition))
                .or_insert(0);
            *e = (*e).max(next);
        }
    }

    /// Hands the noted offsets to the purge thread, when due. A purge still
    /// running keeps them for the next time.
    pub fn maybe_purge(&mut self) {
        let (Some(interval), Some(tx)) = (self.interval, &self.requests) else {
            return;
        };
        if self.pending.is_empty() || self.last.elapsed() < interval {
            return;
        }
        self.last = Instant::now();
        match tx.try_send(std::mem::take(&mut self.pending)) {
            Ok(()) => {}
            Err(TrySendError::Full(back)) | Err(TrySendError::Disconnected(back)) => {
                for (k, v) in back {
                    let e = self.pending.entry(k).or_insert(0);
                    *e = (*e).max(v);
                }
            }
        }
    }
}

fn purge_loop(admin: AdminClient<DefaultClientContext>, requests: Receiver<Offsets>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "starting the purge runtime; repartition topics are not purged");
            return;
        }
    };
    // Offsets whose purge failed, tried again with the next request.
    let mut retry: Offsets = HashMap::new();
    while let Ok(offsets) = requests.recv() {
        for (k, v) in offsets {
            let e = retry.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &retry {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                warn!(%topic, partition, error = %e, "skipping a purge");
            }
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let result = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(15), admin.delete_records(&tpl, &opts)).await
        });
        match result {
            Ok(Ok(done)) => {
                for e in done.elements() {
                    if let Err(err) = e.error() {
                        warn!(topic = e.topic(), partition = e.partition(), error = %err, "purging a repartition partition failed; will retry");
                    } else {
                        retry.remove(&(e.topic().to_owned(), e.partition()));
                    }
                }
                debug!(partitions = tpl.count(), "purged repartition topics");
            }
            Ok(Err(e)) => warn!(error = %e, "purging the repartition topics failed; will retry"),
            Err(_) => warn!("purging the repartition topics timed out; will retry"),
        }
    }
}
