//! `[sink]`: where the Elasticsearch sink writes, how it batches, how much it
//! holds in memory and how it backs off. Every key has a default that works
//! against the local stack; set them in the TOML file, as `OUTBOUND_SINK__*`
//! environment variables or as `outbound sink` flags.

use serde::{Deserialize, Serialize};

use outbound_pipeline::rollup::RollupName;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Run the sink inside `outbound run`, as its own task with its own
    /// consumer group (`<app_id>-sink`). `outbound sink` runs it alone.
    pub in_run: bool,
    /// Base URL of the Elasticsearch-API node or load balancer.
    pub url: String,
    /// Basic-auth user; empty = no authentication.
    pub username: String,
    /// Basic-auth password (prefer `OUTBOUND_SINK__PASSWORD` to a file).
    pub password: String,
    /// Prefix of every index, alias and index template the sink owns, so
    /// several apps can share one cluster. Unset: `<app_id>-` (lowercased),
    /// except for the default app id `outbound`, whose indices keep the
    /// documented names (`outbound_details`, `units_daily`, …). Each index
    /// records its owner in its `_meta`; the sink refuses to write into an
    /// index another app owns.
    pub index_prefix: Option<String>,
    /// Read alias of the detail index (one document per order item): what
    /// readers query. The sink writes through `<alias>-write`, so a rebuild
    /// can move writes and reads apart (see `outbound rebuild-indices`).
    pub details_alias: String,
    /// Second read alias of the detail index, under the name the original
    /// project's Discover searches and CSV exports used; empty = none.
    pub details_legacy_alias: String,
    /// Mapping version in the names of the indices the sink creates
    /// (`<alias>-v<index_version>-g<generation>`). After changing a template
    /// incompatibly, bump it and run `outbound rebuild-indices`: a new
    /// generation is filled from the output topics and swapped in with one
    /// alias change, without downtime.
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
    /// How long Elasticsearch waits for an unavailable shard inside one bulk
    /// request (its `timeout` parameter) before answering 503 for the items.
    pub bulk_timeout_ms: u64,
    /// The largest bulk request the cluster (or a proxy in front of it)
    /// accepts: `http.max_content_length`, 100 MB by default. A document
    /// larger than this is dead-lettered when encoded; a request answered
    /// 413 is split in halves.
    pub max_request_bytes: usize,
    /// First retry delay of a bulk request or of its failed items; doubles
    /// per attempt, with jitter (a random delay in [d/2, d]).
    pub retry_initial_backoff_ms: u64,
    /// Cap of the retry delay.
    pub retry_max_backoff_ms: u64,
    /// Attempts per bulk request before the sink gives up on the batch and
    /// starts again from the committed offsets (nothing is lost: nothing
    /// past the batch was committed). 0 = bounded by `retry_window_ms` only.
    pub retry_max_attempts: u32,
    /// Attempts of one document that keeps failing with a transient item
    /// error (429, 5xx) before it is dead-lettered; 0 = `retry_window_ms` only.
    pub max_item_attempts: u32,
    /// The longest a batch is retried. Past it, documents failing with item
    /// errors are dead-lettered, and a batch still failing as a whole is
    /// dropped and read again from the committed offsets. Every index keeps
    /// deletes (`index.gc_deletes`) at least twice this long, so a retried
    /// old write can never bring back a document deleted meanwhile.
    pub retry_window_ms: u64,
    /// Topic of documents Elasticsearch rejects for good (e.g. a mapping
    /// error); empty = `<app_id>-sink-dlq`.
    pub dlq_topic: String,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            in_run: true,
            url: "http://127.0.0.1:9200".into(),
            username: String::new(),
            password: String::new(),
            index_prefix: None,
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
            bulk_timeout_ms: 60_000,
            max_request_bytes: 100 * 1024 * 1024,
            retry_initial_backoff_ms: 200,
            retry_max_backoff_ms: 30_000,
            retry_max_attempts: 0,
            max_item_attempts: 10,
            retry_window_ms: 5 * 60_000,
            dlq_topic: String::new(),
        }
    }
}

/// The app id whose indices keep the documented, unprefixed names.
pub const DEFAULT_APP_ID: &str = "outbound";

impl SinkConfig {
    /// The prefix when `index_prefix` is unset: `<app_id>-`, or none for
    /// the default app id.
    pub fn default_index_prefix(app_id: &str) -> String {
        if app_id == DEFAULT_APP_ID {
            String::new()
        } else {
            format!("{}-", app_id.to_ascii_lowercase())
        }
    }

    /// Fills an unset `index_prefix` from the app id.
    pub fn resolve_index_prefix(&mut self, app_id: &str) {
        if self.index_prefix.is_none() {
            self.index_prefix = Some(Self::default_index_prefix(app_id));
        }
    }

    /// The index prefix (resolve it first: unset reads as none).
    pub fn prefix(&self) -> &str {
        self.index_prefix.as_deref().unwrap_or_default()
    }

    /// The main read alias of the detail index (what readers query).
    pub fn details_alias(&self) -> String {
        format!("{}{}", self.prefix(), self.details_alias)
    }

    /// The extra read alias of the detail index; None when disabled (empty).
    pub fn details_legacy_alias(&self) -> Option<String> {
        (!self.details_legacy_alias.is_empty())
            .then(|| format!("{}{}", self.prefix(), self.details_legacy_alias))
    }

    /// The read alias of one rollup's index, e.g. `units_daily`.
    pub fn rollup_alias(&self, rollup: RollupName) -> String {
        format!("{}{}", self.prefix(), rollup.as_str())
    }

    /// `index.gc_deletes` of every index: twice the retry window, at least
    /// an hour (Elasticsearch's default of 60 s is shorter than one backoff).
    pub fn gc_deletes_secs(&self) -> u64 {
        (2 * self.retry_window_ms.div_ceil(1000)).max(3600)
    }

    /// Checks the values; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let url = elasticsearch::http::Url::parse(&self.url)
            .map_err(|e| anyhow::anyhow!("config key `sink.url` = {:?}: {e}", self.url))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "config key `sink.url` = {:?}: expected an http:// or https:// URL",
            self.url
        );
        for (key, v) in [
            ("sink.index_prefix", self.prefix()),
            ("sink.details_alias", self.details_alias.as_str()),
            (
                "sink.details_legacy_alias",
                self.details_legacy_alias.as_str(),
            ),
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
        let first = self.details_alias().chars().next();
        anyhow::ensure!(
            !matches!(first, Some('-' | '_' | '.')),
            "config keys `sink.index_prefix` = {:?} and `sink.details_alias`: index names must not \
             start with '-', '_' or '.'",
            self.prefix()
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
            ("sink.bulk_timeout_ms", self.bulk_timeout_ms),
            ("sink.max_request_bytes", self.max_request_bytes as u64),
            ("sink.retry_window_ms", self.retry_window_ms),
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
            self.batch_max_bytes <= self.max_request_bytes,
            "config key `sink.batch_max_bytes` = {} must be at most `sink.max_request_bytes` = {} \
             (the largest request the cluster accepts)",
            self.batch_max_bytes,
            self.max_request_bytes
        );
        anyhow::ensure!(
            self.retry_window_ms > self.retry_max_backoff_ms,
            "config key `sink.retry_window_ms` = {} must be above `sink.retry_max_backoff_ms` = {}: \
             a batch gets at least one retry",
            self.retry_window_ms,
            self.retry_max_backoff_ms
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
        let mut c = SinkConfig::default();
        c.resolve_index_prefix(DEFAULT_APP_ID);
        c.validate().unwrap();
        assert_eq!(c.details_alias(), "outbound_details");
        assert_eq!(
            c.details_legacy_alias().as_deref(),
            Some("latestoutboundreport_es")
        );
        assert_eq!(c.rollup_alias(RollupName::UnitsDaily), "units_daily");
        assert!(c.gc_deletes_secs() >= 2 * c.retry_window_ms / 1000);
    }

    #[test]
    fn default_index_names_differ_between_apps() {
        let names = |app: &str| {
            let mut c = SinkConfig::default();
            c.resolve_index_prefix(app);
            c.validate().unwrap();
            let mut n = vec![c.details_alias()];
            n.extend(c.details_legacy_alias());
            n.extend(RollupName::ALL.map(|r| c.rollup_alias(r)));
            n
        };
        let (a, b) = (names("orders-eu"), names("Orders_US"));
        assert_eq!(a[0], "orders-eu-outbound_details");
        assert_eq!(b[0], "orders_us-outbound_details", "lowercased");
        assert!(a
            .iter()
            .all(|n| !b.contains(n) && !names("outbound").contains(n)));
        // An explicit prefix wins, even an empty one.
        let mut c = SinkConfig {
            index_prefix: Some(String::new()),
            ..SinkConfig::default()
        };
        c.resolve_index_prefix("orders-eu");
        assert_eq!(c.details_alias(), "outbound_details");
        let mut c = SinkConfig {
            details_legacy_alias: String::new(),
            ..SinkConfig::default()
        };
        c.resolve_index_prefix("x");
        assert_eq!(c.details_legacy_alias(), None, "empty disables it");
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = SinkConfig {
            url: "not a url".into(),
            ..SinkConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("sink.url"));
        let c = SinkConfig {
            index_prefix: Some("Staging-".into()),
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
        let c = SinkConfig {
            batch_max_bytes: 10 << 20,
            max_request_bytes: 1 << 20,
            ..SinkConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sink.max_request_bytes"));
        let c = SinkConfig {
            retry_window_ms: 1_000,
            ..SinkConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sink.retry_window_ms"));
        let c = SinkConfig {
            index_prefix: Some("_x".into()),
            ..SinkConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
