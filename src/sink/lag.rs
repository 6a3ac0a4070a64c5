//! How old the oldest record the sink has not had acknowledged is, per
//! output partition. Output records carry their source change's timestamp
//! (possibly years old), not their append time, so the age is measured
//! here instead: the sink samples each partition's end offset over time;
//! a record at offset o was appended after the last sample whose end was
//! ≤ o, so `now −` that sample's time bounds its age from above.
//!
//! Compacted output topics drop a tombstone `delete.retention.ms` after it
//! is cleaned: a sink lagging longer than that misses the delete for good
//! (the `OutboundSinkLagNearDeleteRetention` alert compares the two).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples kept per partition; older ones are thinned, which only makes the
/// bound looser, never wrong.
const MAX_SAMPLES: usize = 512;

/// End offsets of one partition over time.
#[derive(Debug, Default, Clone)]
pub struct LagClock {
    /// (when, end offset), both non-decreasing.
    samples: VecDeque<(Instant, i64)>,
}

impl LagClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the partition's end offset as seen at `now`.
    pub fn observe(&mut self, now: Instant, end: i64) {
        if let Some(&(_, last)) = self.samples.back() {
            if end <= last {
                // Unchanged: the newest sample with this end stays the one
                // that bounds records above it.
                return;
            }
        }
        self.samples.push_back((now, end));
        if self.samples.len() > MAX_SAMPLES {
            // Drop every other sample of the older half.
            let half = self.samples.len() / 2;
            let mut i = 1;
            let mut kept = 0;
            while i < half - kept {
                self.samples.remove(i);
                kept += 1;
                i += 1;
            }
        }
    }

    /// The age bound of the record at `first_unacknowledged` (None = nothing
    /// outstanding, or no sample yet).
    pub fn age(&self, now: Instant, first_unacknowledged: i64) -> Option<Duration> {
        let &(_, newest_end) = self.samples.back()?;
        if first_unacknowledged >= newest_end {
            return Some(Duration::ZERO);
        }
        // The last sample whose end was at or below the record: it did not
        // exist then. Before every sample: at least as old as the first.
        let since = self
            .samples
            .iter()
            .rev()
            .find(|(_, end)| *end <= first_unacknowledged)
            .or(self.samples.front())
            .map(|(t, _)| *t)?;
        Some(now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_is_bounded_by_the_last_sample_before_the_record_existed() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut c = LagClock::new();
        assert_eq!(c.age(s(0), 0), None);
        c.observe(s(0), 10);
        c.observe(s(10), 10);
        c.observe(s(20), 30);
        c.observe(s(30), 50);
        assert_eq!(c.age(s(40), 50), Some(Duration::ZERO), "caught up");
        assert_eq!(c.age(s(40), 60), Some(Duration::ZERO));
        // Offset 35 appeared after the end was 30 (at 20 s).
        assert_eq!(c.age(s(40), 35), Some(Duration::from_secs(20)));
        assert_eq!(c.age(s(40), 30), Some(Duration::from_secs(20)));
        // Offset 12 appeared after the end was 10, last seen unchanged at
        // 0 s (the first sample with that end).
        assert_eq!(c.age(s(40), 12), Some(Duration::from_secs(40)));
        // Older than every sample: at least since the first.
        assert_eq!(c.age(s(40), 3), Some(Duration::from_secs(40)));
    }

    #[test]
    fn thinning_keeps_the_bound_an_upper_bound() {
        let t0 = Instant::now();
        let mut c = LagClock::new();
        for i in 0..5_000u64 {
            c.observe(t0 + Duration::from_secs(i), (i as i64) * 10);
        }
        assert!(c.samples.len() <= MAX_SAMPLES);
        let now = t0 + Duration::from_secs(5_000);
        for offset in [5i64, 1_005, 20_005, 49_985] {
            // The record at `offset` appeared after second offset/10.
            let exact = Duration::from_secs(5_000 - (offset as u64) / 10);
            let got = c.age(now, offset).unwrap();
            assert!(got >= exact, "{offset}: {got:?} < {exact:?}");
        }
        // Recent samples stay exact.
        assert_eq!(
            c.age(now, 49_985),
            Some(Duration::from_secs(2)),
            "the newest samples are never thinned"
        );
        let times: Vec<Instant> = c.samples.iter().map(|s| s.0).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
    }
}
