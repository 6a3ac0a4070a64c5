//! `[sink]`: where the Elasticsearch sink writes, how it batches, how much it
//! holds in memory and how it backs off. Every key has a default that works
//! against the local stack; set them in the TOML file, as `OUTBOUND_SINK__*`
//! environment variables or as `outbound sink` flags.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use outbound_pipeline::rollup::RollupName;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Run the sink inside `outbound run`, as its own task with its own
    /// consumer group (`<app_id>-sink`). `outbound sink` runs it alone.
    pub in_run: bool,
    /// Base URL of the Elasticsearch-API node or load balancer; several
    /// nodes comma-separated (requests go round-robin over them).
    pub url: String,
    /// Basic-auth user; empty = no basic auth.
    pub username: String,
    /// Basic-auth password.
    pub password: Secret,
    /// File holding the basic-auth password (e.g. a mounted Kubernetes
    /// Secret); instead of `sink.password`.
    pub password_file: String,
    /// Elasticsearch API key: the base64 `encoded` value the create-API-key
    /// call returns, or `id:api_key`. Instead of basic auth.
    pub api_key: Secret,
    /// File holding the API key; instead of `sink.api_key`.
    pub api_key_file: String,
    /// TLS towards the search nodes (https:// URLs).
    pub tls: SinkTlsConfig,
    /// Prefix of every index, alias and index template the sink owns, so
    /// several deployments (or test runs) can share one cluster.
    pub index_prefix: String,
    /// Write alias of the detail index (one document per order item).
    pub details_alias: String,
    /// Second alias of the detail index, under the name the original
    /// project's Discover searches and CSV exports used.
    pub details_legacy_alias: String,
    /// Concrete indices are `<alias>-v<index_version>`. Bump it when a mapping
    /// changes incompatibly, then replay the output topics into the new
    /// indices (reset the sink group's offsets) and move the aliases.
    pub index_version: u32,
    /// Install the index templates and create the indices at startup
    /// (idempotent). Off when an operator manages them.
    pub install_templates: bool,
    /// Primary shards of each index the sink creates.
    pub number_of_shards: u32,
    /// Replicas of each index the sink creates (0 on a single node).
    pub number_of_replicas: u32,
    /// A bulk request is sent once it holds this many documents…
    pub batch_max_docs: usize,
    /// …or this many bytes of bulk body…
    pub batch_max_bytes: usize,
    /// …or when its first document has waited this long.
    pub batch_timeout_ms: u64,
    /// Bulk requests outstanding at once (each waits for every item's ack).
    pub max_in_flight_requests: usize,
    /// Bytes of consumed-but-unacknowledged documents held in memory; at the
    /// limit the sink pauses its partitions until Elasticsearch catches up.
    pub max_in_flight_bytes: usize,
    /// Timeout of one bulk request.
    pub request_timeout_ms: u64,
    /// First retry delay of a bulk request or of its failed items; doubles
    /// per attempt, with jitter (a random delay in [d/2, d]).
    pub retry_initial_backoff_ms: u64,
    /// Cap of the retry delay.
    pub retry_max_backoff_ms: u64,
    /// Attempts per batch before the sink gives up and exits with an error
    /// (nothing is committed past the batch, so a restart resumes it).
    /// 0 = retry for as long as it takes: an outage only delays the index.
    pub retry_max_attempts: u32,
    /// Topic of documents Elasticsearch rejects for good (e.g. a mapping
    /// error); empty = `<app_id>-sink-dlq`.
    pub dlq_topic: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SinkTlsConfig {
    /// PEM file of the CA(s) that signed the nodes' certificates (e.g.
    /// Elasticsearch 8's `http_ca.crt`); empty = the built-in web roots.
    pub ca_file: String,
    /// Check the node's certificate at all. Off accepts any certificate
    /// (a test cluster only: it gives up protection from impostors).
    pub verify: bool,
    /// PEM client certificate, for clusters that authenticate clients by
    /// certificate (PKI realm).
    pub certificate_file: String,
    /// PEM private key of the client certificate (unencrypted).
    pub key_file: String,
}

impl Default for SinkTlsConfig {
    fn default() -> Self {
        Self {
            ca_file: String::new(),
            verify: true,
            certificate_file: String::new(),
            key_file: String::new(),
        }
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            in_run: true,
            url: "http://127.0.0.1:9200".into(),
            username: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            api_key: Secret::default(),
            api_key_file: String::new(),
            tls: SinkTlsConfig::default(),
            index_prefix: String::new(),
            details_alias: "outbound_details".into(),
            details_legacy_alias: "latestoutboundreport_es".into(),
            index_version: 1,
            install_templates: true,
            number_of_shards: 1,
            number_of_replicas: 0,
            batch_max_docs: 5_000,
            batch_max_bytes: 5 * 1024 * 1024,
            batch_timeout_ms: 200,
            max_in_flight_requests: 2,
            max_in_flight_bytes: 64 * 1024 * 1024,
            request_timeout_ms: 60_000,
            retry_initial_backoff_ms: 200,
            retry_max_backoff_ms: 30_000,
            retry_max_attempts: 0,
            dlq_topic: String::new(),
        }
    }
}

impl SinkConfig {
    /// The write alias of the detail index.
    pub fn details_alias(&self) -> String {
        format!("{}{}", self.index_prefix, self.details_alias)
    }

    /// The extra (read) alias of the detail index.
    pub fn details_legacy_alias(&self) -> String {
        format!("{}{}", self.index_prefix, self.details_legacy_alias)
    }

    /// The alias of one rollup's index, e.g. `units_daily`.
    pub fn rollup_alias(&self, rollup: RollupName) -> String {
        format!("{}{}", self.index_prefix, rollup.as_str())
    }

    /// The concrete index behind a write alias.
    pub fn index_of(&self, alias: &str) -> String {
        format!("{alias}-v{}", self.index_version)
    }

    /// The node URLs of `sink.url` (one or more, comma-separated).
    pub fn urls(&self) -> anyhow::Result<Vec<elasticsearch::http::Url>> {
        let urls = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                let url = elasticsearch::http::Url::parse(u)
                    .map_err(|e| anyhow::anyhow!("config key `sink.url`: {u:?}: {e}"))?;
                anyhow::ensure!(
                    matches!(url.scheme(), "http" | "https"),
                    "config key `sink.url`: {u:?}: expected an http:// or https:// URL"
                );
                Ok(url)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!urls.is_empty(), "config key `sink.url` is empty");
        Ok(urls)
    }

    /// Checks the values; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.urls()?;
        anyhow::ensure!(
            !(self.api_key.is_set() && (self.password.is_set() || !self.username.is_empty())),
            "config keys `sink.api_key` and `sink.username`/`sink.password`: set one way of authenticating"
        );
        anyhow::ensure!(
            self.username.is_empty() != self.password.is_set(),
            "config keys `sink.username` and `sink.password` go together"
        );
        for (key, file) in [
            ("sink.tls.ca_file", &self.tls.ca_file),
            ("sink.tls.certificate_file", &self.tls.certificate_file),
            ("sink.tls.key_file", &self.tls.key_file),
        ] {
            anyhow::ensure!(
                file.is_empty() || std::path::Path::new(file).is_file(),
                "config key `{key}` = {file:?}: no such file"
            );
        }
        anyhow::ensure!(
            self.tls.certificate_file.is_empty() == self.tls.key_file.is_empty(),
            "config keys `sink.tls.certificate_file` and `sink.tls.key_file` go together"
        );
        for (key, v) in [
            ("sink.index_prefix", &self.index_prefix),
            ("sink.details_alias", &self.details_alias),
            ("sink.details_legacy_alias", &self.details_legacy_alias),
        ] {
            anyhow::ensure!(
                v.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)),
                "config key `{key}` = {v:?}: index names use lowercase letters, digits, '.', '_' or '-'"
            );
        }
        anyhow::ensure!(
            !self.details_alias.is_empty(),
            "config key `sink.details_alias` must not be empty"
        );
        anyhow::ensure!(
            self.details_alias != self.details_legacy_alias,
            "config keys `sink.details_alias` and `sink.details_legacy_alias` must differ"
        );
        let positive = [
            ("sink.batch_max_docs", self.batch_max_docs as u64),
            ("sink.batch_max_bytes", self.batch_max_bytes as u64),
            ("sink.batch_timeout_ms", self.batch_timeout_ms),
            (
                "sink.max_in_flight_requests",
                self.max_in_flight_requests as u64,
            ),
            ("sink.request_timeout_ms", self.request_timeout_ms),
            (
                "sink.retry_initial_backoff_ms",
                self.retry_initial_backoff_ms,
            ),
            ("sink.index_version", u64::from(self.index_version)),
            ("sink.number_of_shards", u64::from(self.number_of_shards)),
        ];
        for (key, v) in positive {
            anyhow::ensure!(v > 0, "config key `{key}` must be positive");
        }
        anyhow::ensure!(
            self.max_in_flight_bytes >= self.batch_max_bytes,
            "config key `sink.max_in_flight_bytes` = {} must be at least `sink.batch_max_bytes` = {}",
            self.max_in_flight_bytes,
            self.batch_max_bytes
        );
        anyhow::ensure!(
            self.retry_max_backoff_ms >= self.retry_initial_backoff_ms,
            "config key `sink.retry_max_backoff_ms` must be at least `sink.retry_initial_backoff_ms`"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_name_the_local_indices() {
        let c = SinkConfig::default();
        c.validate().unwrap();
        assert_eq!(c.details_alias(), "outbound_details");
        assert_eq!(c.details_legacy_alias(), "latestoutboundreport_es");
        assert_eq!(c.rollup_alias(RollupName::UnitsDaily), "units_daily");
        assert_eq!(c.index_of("units_daily"), "units_daily-v1");
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = SinkConfig {
            url: "not a url".into(),
            ..SinkConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("sink.url"));
        let c = SinkConfig {
            index_prefix: "Staging-".into(),
            ..SinkConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sink.index_prefix"));
        let c = SinkConfig {
            max_in_flight_bytes: 10,
            ..SinkConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sink.max_in_flight_bytes"));
    }
}
