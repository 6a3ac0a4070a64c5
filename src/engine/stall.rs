//! When a commit's flush holds back the producer's queued records, and when
//! it lets them go again.
//!
//! librdkafka's broker thread spins a core while a partition has its five
//! idempotent requests in flight and more records ready, for as long as the
//! broker stays silent (it keeps setting its wake-up to the batch it may not
//! send). So once no delivery report has come for [`STALLED`], the flush
//! pauses the transaction's partitions. A delivery report means the broker
//! answers again: resume. But a stall can also have nothing on the wire —
//! records waiting on the transaction coordinator (adding partitions to the
//! transaction while the previous one's markers are still being written) —
//! and then no report can ever come while the partitions are paused. So a
//! pause is also lifted now and then to probe: a probe that brings no report
//! within [`PROBE_WINDOW`] pauses again, and the probes grow rarer while the
//! stall lasts (a frozen broker costs a few short spins, not a core).

use std::time::{Duration, Instant};

/// No delivery report for this long: pause (a broker that answers takes
/// milliseconds).
pub const STALLED: Duration = Duration::from_millis(500);
/// How long a probe leaves the partitions running without a report.
pub const PROBE_WINDOW: Duration = Duration::from_millis(100);
/// The first probe comes this long after a pause; each later one twice as
/// late, up to [`PROBE_AT_MOST`].
const PROBE_FIRST: Duration = Duration::from_secs(1);
const PROBE_AT_MOST: Duration = Duration::from_secs(8);

/// What the flush should do with the transaction's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
}

/// Follows a flush's undelivered count and says when to pause or resume.
#[derive(Debug)]
pub struct StallGuard {
    last: u64,
    progressed: Instant,
    paused_at: Option<Instant>,
    probing_since: Option<Instant>,
    probe_after: Duration,
}

impl StallGuard {
    pub fn new(undelivered: u64, now: Instant) -> Self {
        StallGuard {
            last: undelivered,
            progressed: now,
            paused_at: None,
            probing_since: None,
            probe_after: PROBE_FIRST,
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// The undelivered count now; what to do, if anything. The caller
    /// reports back with [`StallGuard::done`] whether it managed to.
    pub fn observe(&mut self, undelivered: u64, now: Instant) -> Option<Action> {
        let progressed = undelivered < self.last;
        self.last = undelivered;
        if progressed {
            self.progressed = now;
            self.probing_since = None;
            self.probe_after = PROBE_FIRST;
            return self.paused_at.is_some().then_some(Action::Resume);
        }
        match self.paused_at {
            Some(at) if now.duration_since(at) >= self.probe_after => Some(Action::Resume),
            Some(_) => None,
            None => {
                let (since, window) = match self.probing_since {
                    Some(p) => (p, PROBE_WINDOW),
                    None => (self.progressed, STALLED),
                };
                (now.duration_since(since) >= window).then_some(Action::Pause)
            }
        }
    }

    /// The caller carried `action` out at `now`.
    pub fn done(&mut self, action: Action, now: Instant) {
        match action {
            Action::Pause => self.paused_at = Some(now),
            Action::Resume => {
                if self.paused_at.take().is_some() && now.duration_since(self.progressed) >= STALLED
                {
                    // Lifted without a report: a probe.
                    self.probing_since = Some(now);
                    self.probe_after = (self.probe_after * 2).min(PROBE_AT_MOST);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a guard over `total` with the undelivered count `count(t)`,
    /// carrying every action out; returns when each happened.
    fn run(total: Duration, count: impl Fn(Duration) -> u64) -> Vec<(Duration, Action)> {
        let t0 = Instant::now();
        let mut g = StallGuard::new(count(Duration::ZERO), t0);
        let mut actions = Vec::new();
        let step = Duration::from_millis(10);
        let mut t = Duration::ZERO;
        while t <= total {
            if let Some(a) = g.observe(count(t), t0 + t) {
                g.done(a, t0 + t);
                actions.push((t, a));
            }
            t += step;
        }
        actions
    }

    #[test]
    fn a_flush_that_progresses_is_never_paused() {
        let actions = run(Duration::from_secs(5), |t| 10_000 - t.as_millis() as u64);
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn a_stall_with_nothing_on_the_wire_is_probed_and_ends() {
        // Nothing is delivered while paused (nothing was in flight); the
        // records go once the partitions run again after 2 s.
        let t0 = Instant::now();
        let mut g = StallGuard::new(100, t0);
        let mut undelivered = 100u64;
        let mut t = Duration::ZERO;
        let step = Duration::from_millis(10);
        let mut delivered_at = None;
        while t <= Duration::from_secs(10) && undelivered > 0 {
            let coordinator_ready = t >= Duration::from_secs(2);
            if coordinator_ready && !g.is_paused() && undelivered > 0 {
                undelivered -= 1; // a report, now that sends may go
                delivered_at.get_or_insert(t);
            }
            if let Some(a) = g.observe(undelivered, t0 + t) {
                g.done(a, t0 + t);
            }
            t += step;
        }
        let delivered_at = delivered_at.expect("the records went at last");
        assert!(
            delivered_at < Duration::from_secs(4),
            "delivery resumed only at {delivered_at:?}"
        );
        assert_eq!(undelivered, 0, "all delivered within 10 s");
    }

    #[test]
    fn a_frozen_broker_is_probed_rarely_and_briefly() {
        let actions = run(Duration::from_secs(20), |_| 500);
        assert_eq!(actions.first(), Some(&(STALLED, Action::Pause)));
        // Time spent not paused after the first pause: the probes.
        let mut running = Duration::ZERO;
        let mut last_resume = None;
        for (t, a) in &actions {
            match a {
                Action::Resume => last_resume = Some(*t),
                Action::Pause => {
                    if let Some(r) = last_resume.take() {
                        running += *t - r;
                    }
                }
            }
        }
        let probes = actions.iter().filter(|(_, a)| *a == Action::Resume).count();
        assert!(
            (2..=5).contains(&probes),
            "{probes} probes in 20 s: {actions:?}"
        );
        assert!(
            running <= PROBE_WINDOW * 6,
            "ran {running:?} of 20 s: {actions:?}"
        );
    }
}
