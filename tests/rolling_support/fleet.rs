//! The `outbound run` instances of one app (sink in-process), each with its
//! metrics endpoint: start, stop on SIGTERM (asserting a clean exit), time
//! to `/readyz` 200, state size from `/metrics`, and the wait for the
//! consumer groups to settle on exactly the running instances.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use outbound::config::Config;
use outbound::ops::group;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::common::{plain_client, Outbound, RunSpec};

/// How often readiness and the groups are polled: the figures are only as
/// fine as this.
const POLL: Duration = Duration::from_millis(100);

pub struct Instance {
    pub process: Outbound,
    pub spawned: Instant,
    /// `host:port` of its metrics endpoint, once it logged it.
    pub addr: Option<String>,
}

/// What one instance's start told us.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    /// Spawn → `/readyz` 200.
    pub ready_after: Duration,
    /// `outbound_state_keys` over all stages, and the changelog records it
    /// restored (`outbound_restored_records_total`), once published.
    pub keys: u64,
    pub restored: u64,
}

pub struct Fleet {
    pub config: Config,
    pub partitions: i32,
    pub search_url: String,
    pub dir: PathBuf,
    pub running: BTreeMap<String, Instance>,
    generation: usize,
    http: ureq::Agent,
    observer: BaseConsumer,
}

impl Fleet {
    pub fn new(config: Config, partitions: i32, search_url: String, dir: &Path) -> Self {
        let observer = plain_client()
            .set(
                "group.id",
                format!("rolling-observer-{}", std::process::id()),
            )
            .create()
            .expect("group observer");
        Self {
            config,
            partitions,
            search_url,
            dir: dir.to_owned(),
            running: BTreeMap::new(),
            generation: 0,
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into(),
            observer,
        }
    }

    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.dir.join("state").join(id)
    }

    pub fn start(&mut self, id: &str) {
        assert!(!self.running.contains_key(id), "instance {id} already runs");
        self.generation += 1;
        let (state, logs) = (self.state_dir(id), self.dir.join("logs"));
        let index_prefix = self.config.sink.index_prefix.clone().unwrap_or_default();
        let spec = RunSpec {
            app_id: &self.config.app_id,
            instance: id,
            prefix: &self.config.source.topic_prefix,
            state_dir: &state,
            log_dir: &logs,
            partitions: self.partitions,
        };
        let process = Outbound::start_with_env(
            &spec,
            self.generation,
            &[
                ("OUTBOUND_SINK__IN_RUN", "true"),
                ("OUTBOUND_SINK__INDEX_PREFIX", &index_prefix),
                ("OUTBOUND_SINK__URL", &self.search_url),
                ("OUTBOUND_METRICS__LISTEN", "127.0.0.1:0"),
                // The exactly-once audit reads the committed rekey output.
                ("OUTBOUND_KAFKA__PURGE_INTERVAL_MS", "0"),
            ],
        );
        self.running.insert(
            id.to_owned(),
            Instance {
                process,
                spawned: Instant::now(),
                addr: None,
            },
        );
    }

    /// SIGTERM; asserts exit status 0. Returns SIGTERM → exit.
    pub fn stop(&mut self, id: &str) -> Duration {
        let mut i = self
            .running
            .remove(id)
            .unwrap_or_else(|| panic!("instance {id} is not running"));
        let asked = Instant::now();
        let status = i.process.stop();
        let took = asked.elapsed();
        assert!(
            status.success(),
            "instance {id} did not stop cleanly on SIGTERM: {status}; log:\n{}",
            i.process.log_tail(60)
        );
        took
    }

    /// Every instance that should be running still is.
    pub fn check_alive(&mut self) {
        for (id, i) in self.running.iter_mut() {
            assert!(
                i.process.is_running(),
                "instance {id} exited by itself; log:\n{}",
                i.process.log_tail(60)
            );
        }
    }

    fn get(&self, addr: &str, path: &str) -> Option<(u16, String)> {
        let mut r = self.http.get(&format!("http://{addr}{path}")).call().ok()?;
        let status = r.status().as_u16();
        Some((status, r.body_mut().read_to_string().unwrap_or_default()))
    }

    fn addr_of(&mut self, id: &str) -> Option<String> {
        let i = self.running.get_mut(id)?;
        if i.addr.is_none() {
            i.addr = i
                .process
                .log_text()
                .lines()
                .filter(|l| l.contains("metrics endpoint listening"))
                .find_map(|l| l.split("addr=").nth(1))
                .and_then(|s| s.split_whitespace().next())
                .map(str::to_owned);
        }
        i.addr.clone()
    }

    fn is_ready(&mut self, id: &str) -> bool {
        match self.addr_of(id) {
            Some(addr) => matches!(self.get(&addr, "/readyz"), Some((200, _))),
            None => false,
        }
    }

    /// Waits for `/readyz` 200 of `id`, then for its state metrics.
    pub fn wait_ready(&mut self, id: &str, deadline: Duration) -> Readiness {
        let spawned = self.running[id].spawned;
        while !self.is_ready(id) {
            self.check_alive();
            assert!(
                spawned.elapsed() < deadline,
                "instance {id} not ready within {deadline:?} of its start; log:\n{}",
                self.running[id].process.log_tail(60)
            );
            std::thread::sleep(POLL);
        }
        let ready_after = spawned.elapsed();
        // The state gauges are published every 5 s of the stream loop.
        let addr = self.addr_of(id).expect("a ready instance has an address");
        let published = Instant::now();
        let (mut keys, mut restored) = (0, 0);
        while published.elapsed() < Duration::from_secs(15) {
            if let Some((200, text)) = self.get(&addr, "/metrics") {
                keys = sum_of(&text, "outbound_state_keys");
                restored = sum_of(&text, "outbound_restored_records_total");
                if keys > 0 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Readiness {
            ready_after,
            keys,
            restored,
        }
    }

    /// Waits until the stream stages' group and the sink's are stable with
    /// exactly the running instances as members, each owning partitions and
    /// every partition owned, and every running instance is ready. Returns
    /// how long that took.
    pub fn wait_settled(&mut self, deadline: Duration) -> Duration {
        let started = Instant::now();
        let app = self.config.app_id.clone();
        let pipeline = self.config.pipeline().expect("pipeline config");
        let mut engine_topics = pipeline.topics();
        for t in ["rekey", "detail-changes", "rollup-deltas"] {
            engine_topics.push(self.config.topic(t));
        }
        let sink_topics = vec![self.config.topic("details"), self.config.topic("rollups")];
        let groups = [
            (self.config.group_id(), engine_topics),
            (outbound::sink::group_id(&self.config), sink_topics),
        ];
        loop {
            self.check_alive();
            let want: BTreeSet<String> = self
                .running
                .keys()
                .map(|id| format!("{app}-{id}"))
                .collect();
            let mut problem = None;
            for (name, topics) in &groups {
                if let Err(e) = self.group_settled(name, topics, &want) {
                    problem = Some(e);
                    break;
                }
            }
            if problem.is_none() {
                let ids: Vec<String> = self.running.keys().cloned().collect();
                problem = ids
                    .into_iter()
                    .find(|id| !self.is_ready(id))
                    .map(|id| format!("instance {id} not ready"));
            }
            let Some(last) = problem else {
                return started.elapsed();
            };
            assert!(
                started.elapsed() < deadline,
                "groups not settled on instances {:?} within {deadline:?}: {last}",
                self.running.keys().collect::<Vec<_>>()
            );
            std::thread::sleep(POLL);
        }
    }

    fn group_settled(
        &self,
        name: &str,
        topics: &[String],
        want: &BTreeSet<String>,
    ) -> Result<(), String> {
        let g = group::describe(&self.observer, name, Duration::from_secs(5))
            .map_err(|e| format!("{e:#}"))?;
        if g.state != "Stable" {
            return Err(format!("group {name} is {}", g.state));
        }
        // A stream thread's client.id is `<app>-<instance>-stream[-<n>]`, the
        // sink's `<app>-<instance>`: compare instances, not clients.
        let members: BTreeSet<String> = g
            .members
            .iter()
            .map(|m| instance_client(&m.client_id).to_owned())
            .collect();
        if &members != want {
            return Err(format!("group {name} has members {members:?}"));
        }
        if let Some(idle) = g.members.iter().find(|m| m.partitions.is_empty()) {
            return Err(format!("{} owns nothing in {name}", idle.client_id));
        }
        let mut total = 0;
        for t in topics {
            let md = self
                .observer
                .fetch_metadata(Some(t), Duration::from_secs(5))
                .map_err(|e| format!("metadata of {t}: {e}"))?;
            total += md
                .topics()
                .iter()
                .map(|t| t.partitions().len())
                .sum::<usize>();
        }
        let owned = g.owners().len();
        if owned != total {
            return Err(format!("group {name} owns {owned} of {total} partitions"));
        }
        Ok(())
    }
}

/// `client_id` without a stream thread's `-stream` / `-stream-<n>` suffix.
fn instance_client(client_id: &str) -> &str {
    match client_id.rsplit_once("-stream") {
        Some((instance, tail))
            if tail.is_empty()
                || tail
                    .strip_prefix('-')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            instance
        }
        _ => client_id,
    }
}

/// The sum of every sample of `metric` in a text exposition.
fn sum_of(text: &str, metric: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
