//! The sink's own health, apart from the process's: `/healthz/sink` and
//! `outbound_sink_up`. Inside `outbound run` an Elasticsearch problem must
//! not fail `/healthz` (an orchestrator would restart the process and stop
//! the exactly-once stages with it), so the sink reports here instead.
//!
//! Healthy = the sink loop runs and its requests have not kept failing for
//! [`UNHEALTHY_AFTER`] (a single retried 429 is no reason to page anyone).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntGauge, Registry};

/// Continuous failure for this long makes the sink unhealthy.
pub const UNHEALTHY_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    /// A sink was started in this process.
    enabled: bool,
    /// Its loop is running (not backing off between restarts).
    running: bool,
    /// Why it is not running.
    down_reason: Option<String>,
    /// Requests failing since, and the last failure.
    failing_since: Option<Instant>,
    last_failure: Option<String>,
}

pub struct SinkHealth {
    registry: Registry,
    /// `outbound_sink_up`, registered by [`SinkHealth::enable`].
    gauge: IntGauge,
    up: Mutex<Option<IntGauge>>,
    state: Mutex<State>,
}

/// What `/healthz/sink` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// No sink in this process.
    Absent,
    Healthy,
    Unhealthy(String),
}

impl SinkHealth {
    pub(crate) fn new(registry: &Registry, gauge: IntGauge) -> Self {
        Self {
            registry: registry.clone(),
            gauge,
            up: Mutex::new(None),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sink runs in this process from now on: `outbound_sink_up` exists.
    pub fn enable(&self) {
        self.state().enabled = true;
        let mut up = self.up.lock().unwrap_or_else(|e| e.into_inner());
        if up.is_none() && self.registry.register(Box::new(self.gauge.clone())).is_ok() {
            *up = Some(self.gauge.clone());
        }
        drop(up);
        self.refresh();
    }

    /// The loop started (again).
    pub fn running(&self) {
        {
            let mut s = self.state();
            s.running = true;
            s.down_reason = None;
        }
        self.refresh();
    }

    /// The loop stopped and waits to start again.
    pub fn down(&self, reason: String) {
        {
            let mut s = self.state();
            s.running = false;
            s.down_reason = Some(reason);
        }
        self.refresh();
    }

    /// A request or an item failed (it will be retried).
    pub fn failing(&self, reason: String) {
        {
            let mut s = self.state();
            s.failing_since.get_or_insert_with(Instant::now);
            s.last_failure = Some(reason);
        }
        self.refresh();
    }

    /// A request succeeded.
    pub fn succeeded(&self) {
        let changed = {
            let mut s = self.state();
            let was = s.failing_since.take().is_some();
            s.last_failure = None;
            was
        };
        if changed {
            self.refresh();
        }
    }

    pub fn report(&self) -> Report {
        let s = self.state();
        if !s.enabled {
            return Report::Absent;
        }
        if !s.running {
            return Report::Unhealthy(format!(
                "sink down, restarting: {}",
                s.down_reason.as_deref().unwrap_or("starting")
            ));
        }
        match s.failing_since {
            Some(since) if since.elapsed() >= UNHEALTHY_AFTER => Report::Unhealthy(format!(
                "Elasticsearch requests failing for {}s: {}",
                since.elapsed().as_secs(),
                s.last_failure.as_deref().unwrap_or("?")
            )),
            _ => Report::Healthy,
        }
    }

    /// Sets `outbound_sink_up` from the report (called on every change and
    /// by the loop's tick, since failing turns unhealthy with time).
    pub fn refresh(&self) {
        let healthy = self.report() == Report::Healthy;
        if let Some(g) = self.up.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            g.set(i64::from(healthy));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_until_enabled_then_follows_the_loop() {
        let registry = Registry::new();
        let h = SinkHealth::new(&registry, IntGauge::new("outbound_sink_up", "up").unwrap());
        assert_eq!(h.report(), Report::Absent);
        assert!(
            registry.gather().is_empty(),
            "no outbound_sink_up without a sink"
        );
        h.enable();
        assert!(matches!(h.report(), Report::Unhealthy(r) if r.contains("starting")));
        h.running();
        assert_eq!(h.report(), Report::Healthy);
        let up = |r: &Registry| r.gather()[0].get_metric()[0].get_gauge().get_value();
        assert_eq!(up(&registry), 1.0);
        h.failing("HTTP 503".into());
        assert_eq!(h.report(), Report::Healthy, "not at the first failure");
        h.state().failing_since = Some(Instant::now() - UNHEALTHY_AFTER);
        assert!(matches!(h.report(), Report::Unhealthy(r) if r.contains("HTTP 503")));
        h.refresh();
        assert_eq!(up(&registry), 0.0);
        h.succeeded();
        assert_eq!(h.report(), Report::Healthy);
        h.down("HTTP 400: invalid_index_name_exception".into());
        assert!(matches!(h.report(), Report::Unhealthy(r) if r.contains("400")));
        assert_eq!(up(&registry), 0.0);
    }
}
