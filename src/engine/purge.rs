//! Purging the repartition topics (Kafka Streams' `deleteRecords` after
//! commit): they keep records without time retention (see
//! `topology::TopicKind::Repartition`), so once a stage's consumed offsets
//! are committed the records before them are deleted, bounding the topics
//! by what is still unprocessed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::config::Config;

pub struct Purger {
    admin: AdminClient<DefaultClientContext>,
    runtime: tokio::runtime::Runtime,
    /// `None`: purging is off (`kafka.purge_interval_ms = 0`).
    interval: Option<Duration>,
    last: Instant,
    /// Committed next offset per repartition partition, not yet purged.
    pending: HashMap<(String, i32), i64>,
}

impl Purger {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let cc = config.client_config();
        Ok(Self {
            admin: cc.create().context("creating the purge admin client")?,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the purge runtime")?,
            interval: (config.kafka.purge_interval_ms > 0)
                .then(|| Duration::from_millis(config.kafka.purge_interval_ms)),
            last: Instant::now(),
            pending: HashMap::new(),
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

    /// Deletes the committed prefix of each noted partition, when due. A
    /// failure only delays the purge: the records stay until the next try.
    pub fn maybe_purge(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        if self.pending.is_empty() || self.last.elapsed() < interval {
            return;
        }
        self.last = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &self.pending {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                warn!(%topic, partition, error = %e, "skipping a purge");
            }
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let result = self.runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(15),
                self.admin.delete_records(&tpl, &opts),
            )
            .await
        });
        match result {
            Ok(Ok(done)) => {
                for e in done.elements() {
                    if let Err(err) = e.error() {
                        warn!(topic = e.topic(), partition = e.partition(), error = %err, "purging a repartition partition failed; will retry");
                    } else {
                        self.pending.remove(&(e.topic().to_owned(), e.partition()));
                    }
                }
                debug!(partitions = tpl.count(), "purged repartition topics");
            }
            Ok(Err(e)) => warn!(error = %e, "purging the repartition topics failed; will retry"),
            Err(_) => warn!("purging the repartition topics timed out; will retry"),
        }
    }
}
