//! `outbound`'s configuration: one set of structs, each field documented,
//! from which every way of setting a key is generated (keys.rs): a TOML file
//! (`--config`), `OUTBOUND_*` environment variables (nested keys joined with
//! `__`, e.g. `OUTBOUND_KAFKA__BOOTSTRAP_SERVERS`) and one flag per key on
//! every subcommand that reads the configuration (flags.rs). Layered
//! defaults < file < environment < flags (layers.rs), each value remembered
//! with its source for `outbound config check`.

mod flags;
mod kafka;
pub mod keys;
mod layers;
mod render;
mod secret;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use outbound_pipeline::config::{PipelineConfig, TableSource, WarehouseRule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use flags::ConfigArgs;
pub use kafka::{KafkaConfig, KafkaTlsConfig, SaslConfig, SaslMechanism, SecurityProtocol};
pub use layers::Source;
pub use render::example;
pub use secret::Secret;

/// Everything `outbound run` needs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Names the consumer group and prefixes every internal and output topic.
    pub app_id: String,
    /// Unique per instance and stable across its restarts: the transactional
    /// id is `<app_id>-<instance_id>`, so a restarted instance fences its
    /// previous incarnation.
    pub instance_id: String,
    /// Stream threads of this instance, each with its own consumer,
    /// transactional producer (`<app_id>-<instance_id>-<n>` when more than
    /// one) and share of the tasks, as Kafka Streams' `num.stream.threads`.
    pub stream_threads: usize,
    /// How long SIGTERM may take, in ms: the stream stages commit if they
    /// can within it, else abort (the stores are at a committed point), and
    /// the process exits when it has passed whatever is still running.
    pub shutdown_deadline_ms: u64,
    /// Kafka brokers, security, topics and transactions.
    pub kafka: KafkaConfig,
    /// The Debezium source topics and the pipeline's business settings.
    pub source: SourceConfig,
    /// Local state (RocksDB task stores).
    pub state: StateConfig,
    /// The /metrics, /healthz and /readyz endpoint.
    pub metrics: MetricsConfig,
    /// The Elasticsearch sink (`outbound sink`, or inside `outbound run`).
    pub sink: crate::sink::SinkConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Debezium's `topic.prefix`: source topics are `<prefix>.<db>.<table>`.
    #[schemars(extend("x-flag-alias" = "topic-prefix"))]
    pub topic_prefix: String,
    /// `<database>.<table>` of the orders table.
    pub orders_table: String,
    /// `<database>.<table>` of the order-items (WMS) table.
    pub items_table: String,
    /// `<database>.<table>` of the shipments (logistics) table.
    pub shipments_table: String,
    /// Full topic names of further item tables, one per extra warehouse
    /// database (same columns as the items table).
    #[schemars(extend("x-flag-alias" = "extra-item-topic"))]
    pub extra_item_topics: Vec<String>,
    /// IANA time zone whose calendar days `ship_day` uses.
    pub business_time_zone: String,
    /// Where an item's warehouse comes from: `column_else_source_db`
    /// (`warehouse_id` when non-empty, else the item's database) or `source_db`.
    pub warehouse_rule: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Where each task's RocksDB lives (`<dir>/<app_id>/<stage>-<partition>`).
    pub dir: PathBuf,
    /// RocksDB block cache shared by all tasks, in MiB.
    pub block_cache_mb: usize,
    /// RocksDB memtables shared by all tasks, in MiB.
    pub write_buffer_mb: usize,
    /// Records applied per write batch while restoring from a changelog.
    pub restore_batch: usize,
    /// How long the directory of a task this instance no longer owns is
    /// kept, in ms (for the task coming back soon: it then restores only its
    /// changelog's tail), as Kafka Streams' `state.cleanup.delay.ms`.
    pub cleanup_delay_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
            stream_threads: 1,
            shutdown_deadline_ms: 30_000,
            kafka: KafkaConfig::default(),
            source: SourceConfig::default(),
            state: StateConfig::default(),
            metrics: MetricsConfig::default(),
            sink: crate::sink::SinkConfig::default(),
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
            cleanup_delay_ms: 600_000,
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
    /// Layers defaults < the TOML `file` < the `OUTBOUND_*` variables among
    /// `env` < `flags` (key path, raw values). Misspelt keys and sections,
    /// values of the wrong type and inconsistent settings are errors naming
    /// the key and where it was set.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(String, Vec<String>)],
    ) -> anyhow::Result<Loaded> {
        let mut layers = layers::Layers::default();
        if let Some(path) = file {
            anyhow::ensure!(
                path.is_file(),
                "config file {} does not exist",
                path.display()
            );
            layers.file(path)?;
        }
        layers.env(env)?;
        let cat = keys::catalogue();
        for (path, values) in flags {
            let key = cat
                .key(path)
                .with_context(|| format!("no config key `{path}`"))?;
            layers.flag(key, values)?;
        }
        layers.secret_files()?;
        let tree = serde_json::Value::Object(layers.tree.clone());
        let mut config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let source = layers
                .sources
                .get(&path)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            anyhow::anyhow!("config key `{path}`{source}: {}", e.into_inner())
        })?;
        config.sink.resolve_index_prefix(&config.app_id);
        config.validate()?;
        Ok(Loaded {
            config,
            sources: layers.sources,
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
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
        self.kafka.validate()?;
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
            (1..=64).contains(&self.stream_threads),
            "config key `stream_threads` = {}: must be between 1 and 64",
            self.stream_threads
        );
        anyhow::ensure!(
            self.shutdown_deadline_ms >= 1000,
            "config key `shutdown_deadline_ms` = {}: must be at least 1000",
            self.shutdown_deadline_ms
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

    /// [`KafkaConfig::client_config`] with `client.id` = `<app_id>-<instance_id>`,
    /// so group descriptions (`outbound status`) and broker logs name the
    /// instance behind each client.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut cc = self.kafka.client_config();
        cc.set("client.id", self.transactional_id());
        for (k, v) in &self.kafka.properties {
            cc.set(k, v);
        }
        cc
    }

    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.app_id, self.instance_id)
    }

    pub fn topic(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.app_id)
    }
}

/// A loaded configuration and where each value that is not a default came
/// from (key path → source).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub sources: BTreeMap<String, Source>,
}

impl Loaded {
    pub fn source(&self, path: &str) -> Source {
        self.sources.get(path).cloned().unwrap_or(Source::Default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn flag(key: &str, v: &str) -> (String, Vec<String>) {
        (key.to_owned(), vec![v.to_owned()])
    }

    fn load_err(file: Option<&Path>, vars: &[(&str, &str)]) -> String {
        format!("{:#}", Config::load_from(file, env(vars), &[]).unwrap_err())
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.transactional_id(), "outbound-0");
        assert_eq!(c.topic("rekey"), "outbound-rekey");
    }

    #[test]
    fn file_then_env_then_flags_each_with_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("outbound.toml");
        std::fs::write(
            &file,
            "app_id = \"fromfile\"\ninstance_id = \"a\"\n[kafka]\npartitions = 8\ncommit_interval_ms = 250\n",
        )
        .unwrap();
        let loaded = Config::load_from(
            Some(&file),
            env(&[
                ("OUTBOUND_KAFKA__PARTITIONS", "12"),
                ("OUTBOUND_INSTANCE_ID", "b"),
            ]),
            &[flag("instance_id", "c")],
        )
        .unwrap();
        let c = &loaded.config;
        assert_eq!(c.app_id, "fromfile");
        assert_eq!(c.kafka.commit_interval_ms, 250);
        assert_eq!(c.kafka.partitions, 12);
        assert_eq!(c.instance_id, "c");
        assert_eq!(loaded.source("app_id"), Source::File(file.clone()));
        assert_eq!(
            loaded.source("kafka.partitions"),
            Source::Env("OUTBOUND_KAFKA__PARTITIONS".into())
        );
        assert_eq!(
            loaded.source("instance_id"),
            Source::Flag("instance-id".into())
        );
        assert_eq!(loaded.source("state.dir"), Source::Default);
    }

    #[test]
    fn environment_strings_stay_strings() {
        // Issue 11: numeric instance ids, app ids and passwords.
        let loaded = Config::load_from(
            None,
            env(&[
                ("OUTBOUND_INSTANCE_ID", "1"),
                ("OUTBOUND_APP_ID", "123"),
                ("OUTBOUND_SINK__USERNAME", "42"),
                ("OUTBOUND_SINK__PASSWORD", "12345"),
                ("OUTBOUND_SOURCE__TOPIC_PREFIX", "true"),
            ]),
            &[],
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.instance_id, "1");
        assert_eq!(c.app_id, "123");
        assert_eq!(c.sink.username, "42");
        assert_eq!(c.sink.password.expose(), "12345");
        assert_eq!(c.source.topic_prefix, "true");
        // In the file too, a bare number is taken for a string key.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("n.toml");
        std::fs::write(&file, "instance_id = 7\n").unwrap();
        let c = Config::load_from(Some(&file), [], &[]).unwrap().config;
        assert_eq!(c.instance_id, "7");
    }

    #[test]
    fn typed_values_from_the_environment() {
        let c = Config::load_from(
            None,
            env(&[
                ("OUTBOUND_KAFKA__PARTITIONS", "6"),
                ("OUTBOUND_SINK__IN_RUN", "false"),
                ("OUTBOUND_SOURCE__EXTRA_ITEM_TOPICS", "a.wms2.t, a.wms3.t"),
                (
                    "OUTBOUND_KAFKA__PROPERTIES",
                    "socket.keepalive.enable=true,client.rack=r1",
                ),
            ]),
            &[],
        )
        .unwrap()
        .config;
        assert_eq!(c.kafka.partitions, 6);
        assert!(!c.sink.in_run);
        assert_eq!(c.source.extra_item_topics, vec!["a.wms2.t", "a.wms3.t"]);
        assert_eq!(c.kafka.properties["client.rack"], "r1");
        let e = load_err(None, &[("OUTBOUND_KAFKA__PARTITIONS", "six")]);
        assert!(
            e.contains("OUTBOUND_KAFKA__PARTITIONS") && e.contains("integer"),
            "{e}"
        );
        let e = load_err(None, &[("OUTBOUND_KAFKA__SECURITY_PROTOCOL", "tls")]);
        assert!(e.contains("sasl_ssl"), "{e}");
    }

    #[test]
    fn misspelt_sections_and_keys_are_errors_naming_them() {
        // Issue 11: a misspelt environment section used to be dropped.
        let e = load_err(None, &[("OUTBOUND_KAKFA__PARTITIONS", "8")]);
        assert!(
            e.contains("OUTBOUND_KAKFA__PARTITIONS") && e.contains("`kafka"),
            "{e}"
        );
        let e = load_err(None, &[("OUTBOUND_KAFKA__PARTITION", "8")]);
        assert!(e.contains("kafka.partitions"), "{e}");
        let e = load_err(None, &[("OUTBOUND_KAFKA_PARTITIONS", "8")]);
        assert!(e.contains("OUTBOUND_KAFKA__PARTITIONS"), "{e}");
        let e = load_err(None, &[("OUTBOUND_INSTANCEID", "8")]);
        assert!(e.contains("OUTBOUND_INSTANCE_ID"), "{e}");
        // Other tools' OUTBOUND_* variables are not config keys.
        Config::load_from(
            None,
            env(&[
                ("OUTBOUND_STACK_DIR", "/tmp/x"),
                ("OUTBOUND_KAFKA_PORT", "9092"),
                ("OUTBOUND_TEST_BOOTSTRAP", "x"),
                ("OUTBOUND_CONFIG", "/etc/outbound.toml"),
                ("OUTBOUND_LOG_FORMAT", "json"),
            ]),
            &[],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            (
                "[kafka]\nbootstrap_server = \"x\"\n",
                "kafka.bootstrap_servers",
            ),
            ("[kakfa]\npartitions = 1\n", "[kakfa]"),
            ("[sink.tsl]\nca_file = \"x\"\n", "sink.tls"),
            ("[kafka]\npartitions = \"x\"\n", "kafka.partitions"),
        ] {
            let file = dir.path().join("typo.toml");
            std::fs::write(&file, text).unwrap();
            let e = load_err(Some(&file), &[]);
            assert!(e.contains(want) && e.contains("typo.toml"), "{text}: {e}");
        }
    }

    #[test]
    fn bad_values_name_their_key_and_source() {
        let e = load_err(
            None,
            &[("OUTBOUND_SOURCE__BUSINESS_TIME_ZONE", "Mars/Olympus")],
        );
        assert!(e.contains("source.business_time_zone"), "{e}");
        let e = format!(
            "{:#}",
            Config::load_from(None, [], &[flag("kafka.partitions", "0")]).unwrap_err()
        );
        assert!(e.contains("kafka.partitions"), "{e}");
    }

    #[test]
    fn secrets_from_files_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cr3t-from-file\n").unwrap();
        let loaded = Config::load_from(
            None,
            env(&[
                ("OUTBOUND_SINK__PASSWORD_FILE", pw.to_str().unwrap()),
                ("OUTBOUND_SINK__USERNAME", "admin"),
                ("OUTBOUND_KAFKA__SASL__PASSWORD", "kafka-s3cr3t"),
                ("OUTBOUND_KAFKA__SASL__USERNAME", "app"),
                ("OUTBOUND_KAFKA__SECURITY_PROTOCOL", "sasl_plaintext"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(loaded.config.sink.password.expose(), "s3cr3t-from-file");
        assert_eq!(
            loaded.source("sink.password"),
            Source::SecretFile(pw.clone())
        );
        for text in [
            format!("{:?}", loaded.config),
            loaded.describe(),
            loaded.describe_json().to_string(),
        ] {
            assert!(!text.contains("s3cr3t"), "{text}");
        }
        assert!(loaded.describe().contains("password = \"<redacted>\""));
        // Both the secret and its file: ambiguous.
        let e = load_err(
            None,
            &[
                ("OUTBOUND_SINK__PASSWORD", "x"),
                ("OUTBOUND_SINK__PASSWORD_FILE", pw.to_str().unwrap()),
            ],
        );
        assert!(e.contains("sink.password_file"), "{e}");
        let e = load_err(None, &[("OUTBOUND_SINK__PASSWORD_FILE", "/nonexistent/pw")]);
        assert!(e.contains("/nonexistent/pw"), "{e}");
    }

    #[test]
    fn check_output_is_toml_that_loads_back() {
        let loaded = Config::load_from(
            None,
            env(&[("OUTBOUND_KAFKA__PARTITIONS", "9")]),
            &[flag("app_id", "x")],
        )
        .unwrap();
        let text = loaded.describe();
        assert!(text.contains("# env OUTBOUND_KAFKA__PARTITIONS"), "{text}");
        assert!(text.contains("# flag --app-id"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("check.toml");
        std::fs::write(&file, &text).unwrap();
        let again = Config::load_from(Some(&file), [], &[]).unwrap();
        assert_eq!(again.config.kafka.partitions, 9);
        assert_eq!(again.config.app_id, "x");
    }
}
