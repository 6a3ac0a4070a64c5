//! `outbound`'s configuration: defaults that work against the local stack,
//! overridden by a TOML file, then by `OUTBOUND_*` environment variables
//! (nested keys joined with `__`, e.g. `OUTBOUND_KAFKA__BOOTSTRAP_SERVERS`),
//! then by command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use outbound_pipeline::config::{PipelineConfig, TableSource, WarehouseRule};
use serde::{Deserialize, Serialize};

/// Everything `outbound run` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Names the consumer group and prefixes every internal and output topic.
    pub app_id: String,
    /// Unique per instance and stable across its restarts: the transactional
    /// id is `<app_id>-<instance_id>`, so a restarted instance fences its
    /// previous incarnation.
    pub instance_id: String,
    pub kafka: KafkaConfig,
    pub source: SourceConfig,
    pub state: StateConfig,
    pub metrics: MetricsConfig,
    /// The Elasticsearch sink (`outbound sink`, or inside `outbound run`).
    pub sink: crate::sink::SinkConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Partitions of the internal topics (`-rekey`, `-rollup-deltas`,
    /// `-detail-changes`), their changelogs and the output topics. Fixed
    /// for the life of an app id: state is partitioned by it.
    pub partitions: i32,
    pub replication_factor: i32,
    /// How often the open transaction is committed (outputs, changelogs and
    /// consumed offsets together).
    pub commit_interval_ms: u64,
    /// Broker-side transaction timeout: bounds how long a crashed instance's
    /// open transaction blocks readers of the partitions it wrote.
    pub transaction_timeout_ms: u64,
    /// How often records the stages have committed are deleted from the
    /// repartition topics (which have no time retention); 0 turns it off.
    pub purge_interval_ms: u64,
    /// Extra librdkafka properties for every client (e.g. security settings).
    pub properties: BTreeMap<String, String>,
    /// How long the output topics keep tombstones (`delete.retention.ms`)
    /// when outbound creates them: a sink further behind than this misses
    /// deletes for good (the `OutboundSinkLagNearDeleteRetention` alert
    /// warns before). Existing topics keep theirs; the sink warns when it is
    /// lower.
    pub delete_retention_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Debezium's `topic.prefix`: source topics are `<prefix>.<db>.<table>`.
    pub topic_prefix: String,
    /// `<database>.<table>` of the orders table.
    pub orders_table: String,
    /// `<database>.<table>` of the order-items (WMS) table.
    pub items_table: String,
    /// `<database>.<table>` of the shipments (logistics) table.
    pub shipments_table: String,
    /// Full topic names of further item tables, one per extra warehouse
    /// database (same columns as the items table).
    pub extra_item_topics: Vec<String>,
    /// IANA time zone whose calendar days `ship_day` uses.
    pub business_time_zone: String,
    /// Where an item's warehouse comes from: `column_else_source_db`
    /// (`warehouse_id` when non-empty, else the item's database) or `source_db`.
    pub warehouse_rule: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Where each task's RocksDB lives (`<dir>/<app_id>/<stage>-<partition>`).
    pub dir: PathBuf,
    pub block_cache_mb: usize,
    pub write_buffer_mb: usize,
    /// Records applied per write batch while restoring from a changelog.
    pub restore_batch: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`; empty disables.
    pub listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            app_id: "outbound".into(),
            instance_id: "0".into(),
            kafka: KafkaConfig::default(),
            source: SourceConfig::default(),
            state: StateConfig::default(),
            metrics: MetricsConfig::default(),
            sink: crate::sink::SinkConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            partitions: 4,
            replication_factor: 1,
            commit_interval_ms: 100,
            transaction_timeout_ms: 10_000,
            purge_interval_ms: 30_000,
            properties: BTreeMap::new(),
            delete_retention_ms: 7 * 86_400_000,
        }
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            topic_prefix: "outbound".into(),
            orders_table: "orders.order_demo".into(),
            items_table: "wms.wms_demo".into(),
            shipments_table: "logistics.logistics_demo".into(),
            extra_item_topics: Vec::new(),
            business_time_zone: "UTC".into(),
            warehouse_rule: "column_else_source_db".into(),
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("state"),
            block_cache_mb: 128,
            write_buffer_mb: 64,
            restore_batch: 10_000,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl Config {
    /// Layers defaults < TOML file (when given) < environment < `overrides`
    /// (the flags given on the command line, as a partial config).
    pub fn load(file: Option<&Path>, overrides: &impl Serialize) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file(path));
        }
        let mut config: Config = figment
            // Only the config's own sections: scripts use other OUTBOUND_*
            // variables (OUTBOUND_STACK_DIR, ...) that are not config keys.
            .merge(Env::prefixed("OUTBOUND_").split("__").filter(|k| {
                let key = k.as_str().to_ascii_lowercase();
                matches!(
                    key.split("__").next().and_then(|s| s.split('.').next()),
                    Some(
                        "app_id"
                            | "instance_id"
                            | "kafka"
                            | "source"
                            | "state"
                            | "metrics"
                            | "sink"
                    )
                )
            }))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("invalid configuration (keys are listed by `outbound run --help`)")?;
        config.sink.resolve_index_prefix(&config.app_id);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let ensure_name = |key: &str, v: &str| {
            anyhow::ensure!(
                !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                "config key `{key}` = {v:?}: use letters, digits, '.', '_' or '-'"
            );
            Ok(())
        };
        ensure_name("app_id", &self.app_id)?;
        ensure_name("instance_id", &self.instance_id)?;
        anyhow::ensure!(
            self.kafka.partitions > 0,
            "config key `kafka.partitions` = {}: must be at least 1",
            self.kafka.partitions
        );
        anyhow::ensure!(
            self.kafka.replication_factor > 0,
            "config key `kafka.replication_factor` = {}: must be at least 1",
            self.kafka.replication_factor
        );
        anyhow::ensure!(
            self.kafka.commit_interval_ms > 0,
            "config key `kafka.commit_interval_ms` must be positive"
        );
        anyhow::ensure!(
            self.state.restore_batch > 0,
            "config key `state.restore_batch` must be positive"
        );
        anyhow::ensure!(
            self.kafka.delete_retention_ms >= 3_600_000,
            "config key `kafka.delete_retention_ms` = {}: keep tombstones at least an hour (the \
             sink must see every delete)",
            self.kafka.delete_retention_ms
        );
        self.pipeline()?;
        self.sink.validate()?;
        Ok(())
    }

    /// The pipeline's semantic settings from the `source.*` keys.
    pub fn pipeline(&self) -> anyhow::Result<PipelineConfig> {
        let table = |key: &str, v: &str| -> anyhow::Result<TableSource> {
            match v.split_once('.') {
                Some((database, table)) if !database.is_empty() && !table.is_empty() => {
                    Ok(TableSource {
                        database: database.into(),
                        table: table.into(),
                    })
                }
                _ => anyhow::bail!("config key `{key}` = {v:?}: expected `<database>.<table>`"),
            }
        };
        let business_tz = self.source.business_time_zone.parse::<chrono_tz::Tz>().map_err(|_| {
            anyhow::anyhow!(
                "config key `source.business_time_zone` = {:?}: not an IANA time zone (e.g. UTC, Asia/Kolkata)",
                self.source.business_time_zone
            )
        })?;
        let warehouse_rule = match self.source.warehouse_rule.as_str() {
            "column_else_source_db" => WarehouseRule::ColumnElseSourceDb,
            "source_db" => WarehouseRule::SourceDb,
            other => anyhow::bail!(
                "config key `source.warehouse_rule` = {other:?}: expected column_else_source_db or source_db"
            ),
        };
        Ok(PipelineConfig {
            topic_prefix: self.source.topic_prefix.clone(),
            orders: table("source.orders_table", &self.source.orders_table)?,
            items: table("source.items_table", &self.source.items_table)?,
            shipments: table("source.shipments_table", &self.source.shipments_table)?,
            extra_item_topics: self.source.extra_item_topics.clone(),
            business_tz,
            warehouse_rule,
        })
    }

    /// The consumer group of the stream stages.
    pub fn group_id(&self) -> String {
        self.app_id.clone()
    }

    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.app_id, self.instance_id)
    }

    pub fn topic(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.app_id)
    }
}

#[cfg(test)]
// figment's test jail returns its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct NoFlags {}

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.transactional_id(), "outbound-0");
        assert_eq!(c.topic("rekey"), "outbound-rekey");
    }

    #[test]
    fn file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "outbound.toml",
                "app_id = \"fromfile\"\ninstance_id = \"a\"\n[kafka]\npartitions = 8\ncommit_interval_ms = 250\n",
            )?;
            jail.set_env("OUTBOUND_KAFKA__PARTITIONS", "12");
            jail.set_env("OUTBOUND_INSTANCE_ID", "b");
            #[derive(Serialize)]
            struct Flags {
                instance_id: &'static str,
            }
            let c = Config::load(
                Some(Path::new("outbound.toml")),
                &Flags { instance_id: "c" },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(c.app_id, "fromfile");
            assert_eq!(c.kafka.commit_interval_ms, 250);
            assert_eq!(c.kafka.partitions, 12);
            assert_eq!(c.instance_id, "c");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "bad.toml",
                "[source]\nbusiness_time_zone = \"Mars/Olympus\"\n",
            )?;
            let err = Config::load(Some(Path::new("bad.toml")), &NoFlags {}).unwrap_err();
            assert!(
                format!("{err:#}").contains("source.business_time_zone"),
                "{err:#}"
            );
            jail.create_file("typo.toml", "[kafka]\nbootstrap_server = \"x\"\n")?;
            let err = Config::load(Some(Path::new("typo.toml")), &NoFlags {}).unwrap_err();
            assert!(format!("{err:#}").contains("bootstrap_server"), "{err:#}");
            Ok(())
        });
    }
}
