//! The engine tests' scenario: a unique app id and topic prefix, source
//! topics, a temporary directory for state and logs, and the wait for the
//! output topics to equal what the pipeline core computes.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::history::{generate, History};
use super::*;

pub const PARTITIONS: i32 = 4;
pub const DEADLINE: Duration = Duration::from_secs(300);

pub struct Scenario {
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub history: History,
}

impl Scenario {
    /// A generated history of `changes` over `orders` order ids, on source
    /// topics of 2 partitions.
    pub fn new(name: &str, seed: u64, orders: u64, changes: usize) -> Self {
        Self::with_sources(name, 2, |prefix| generate(seed, prefix, orders, changes))
    }

    /// A scenario whose history `make(prefix)` builds, on source topics of
    /// `source_partitions`.
    pub fn with_sources(
        name: &str,
        source_partitions: i32,
        make: impl FnOnce(&str) -> History,
    ) -> Self {
        let prefix = unique(name);
        create_source_topics(&prefix, source_partitions);
        Self {
            history: make(&prefix),
            prefix,
            // OUTBOUND_TEST_KEEP=1 keeps state directories and logs.
            dir: tempfile::Builder::new()
                .prefix(name)
                .disable_cleanup(std::env::var_os("OUTBOUND_TEST_KEEP").is_some())
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn spec<'a>(&'a self, instance: &'a str, state: &'a std::path::Path) -> RunSpec<'a> {
        RunSpec {
            app_id: &self.prefix,
            instance,
            prefix: &self.prefix,
            state_dir: state,
            log_dir: self.dir.path(),
            partitions: PARTITIONS,
        }
    }

    pub fn state(&self, instance: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("state-{instance}"))
    }

    pub fn details_topic(&self) -> String {
        format!("{}-details", self.prefix)
    }

    pub fn rollups_topic(&self) -> String {
        format!("{}-rollups", self.prefix)
    }

    pub fn source_topics(&self) -> Vec<String> {
        history::Table::ALL
            .iter()
            .map(|t| topic_of(&self.prefix, *t))
            .collect()
    }

    /// Waits until the folded outputs equal the pipeline core's result over
    /// the scenario's history.
    pub fn assert_outputs_converge(&self, logs: &[&Outbound]) {
        self.assert_outputs_converge_to(&self.history, logs);
    }

    /// Waits until the folded outputs equal the pipeline core's result over
    /// the final tables of `history`.
    pub fn assert_outputs_converge_to(&self, history: &History, logs: &[&Outbound]) {
        let (want_details, want_rollups) = expected(history, &self.prefix);
        assert!(
            want_details.len() > 10 && !want_rollups.is_empty(),
            "the history must exercise the join: {} details, {} rollups expected",
            want_details.len(),
            want_rollups.len()
        );
        let tail = || {
            let tail: String = logs
                .iter()
                .map(|o| o.log_tail(5) + "\n")
                .collect::<String>();
            format!("last log lines:\n{tail}")
        };
        wait_for("details to equal the pipeline core", DEADLINE, || {
            fold_topic(&self.details_topic())
                .and_then(|got| diff(&want_details, &got))
                .map_err(|e| format!("{e}\n{}", tail()))
        });
        wait_for("rollups to equal the pipeline core", DEADLINE, || {
            fold_topic(&self.rollups_topic())
                .and_then(|got| diff(&want_rollups, &got))
                .map_err(|e| format!("{e}\n{}", tail()))
        });
    }
}

/// Deletes the scenario's topics (sources, internal, outputs): a single-node
/// broker slows down as thousands of test partitions pile up.
impl Drop for Scenario {
    fn drop(&mut self) {
        if std::env::var_os("OUTBOUND_TEST_KEEP").is_some() {
            return;
        }
        let Ok(consumer) = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create::<BaseConsumer>()
        else {
            return;
        };
        let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(10)) else {
            return;
        };
        let names: Vec<String> = md
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|n| n.starts_with(&self.prefix))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let Ok(admin) = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create::<AdminClient<DefaultClientContext>>()
        else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _ = rt.block_on(admin.delete_topics(&refs, &AdminOptions::new()));
        }
    }
}
