//! A `read_committed` consumer of the app's output topics (details and
//! rollups) running through the whole test: when each committed record
//! became visible, and the source timestamp it carries. From these, the
//! longest gap between output commits and the end-to-end latency of any
//! window of the test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One output record as the watcher saw it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    /// Unix ms when it became visible.
    pub visible_ms: i64,
    /// Its record timestamp: the source change's (Debezium `source.ts_ms`).
    pub source_ms: i64,
}

pub struct OutputWatch {
    stop: Arc<AtomicBool>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl OutputWatch {
    /// Starts reading `topics` from their beginning once they exist (the
    /// first instance creates them).
    pub fn start(base: ClientConfig, topics: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (flag, seen) = (stop.clone(), arrivals.clone());
        let thread = std::thread::Builder::new()
            .name("output-watch".into())
            .spawn(move || watch(base, &topics, &flag, &seen))
            .expect("output watcher thread");
        Self {
            stop,
            arrivals,
            thread: Some(thread),
        }
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the watcher; an error it met (other than transient fetch
    /// errors, which it rides out) fails the test.
    pub fn finish(mut self) -> Vec<Arrival> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("output watcher: {e}"),
                Err(_) => panic!("output watcher panicked"),
            }
        }
        self.arrivals()
    }
}

impl Drop for OutputWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn watch(
    base: ClientConfig,
    topics: &[String],
    stop: &AtomicBool,
    seen: &Mutex<Vec<Arrival>>,
) -> Result<(), String> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", format!("rolling-watch-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // Visibility is timed to the fetch: do not let the broker hold it.
        .set("fetch.wait.max.ms", "20")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    // Wait for the topics (no deadline of its own: the test's waits on the
    // instances fail first if they never come).
    let tpl = loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        let mut found = 0;
        for topic in topics {
            if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                for t in md.topics().iter().filter(|t| t.error().is_none()) {
                    for p in t.partitions() {
                        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                            .map_err(|e| format!("{topic}[{}]: {e}", p.id()))?;
                    }
                    found += usize::from(!t.partitions().is_empty());
                }
            }
        }
        if found == topics.len() {
            break tpl;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    consumer
        .assign(&tpl)
        .map_err(|e| format!("assign {topics:?}: {e}"))?;
    while !stop.load(Ordering::Relaxed) {
        // Fetch errors (a leader moving) are retried by the client.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let arrival = Arrival {
                at: Instant::now(),
                visible_ms: wall_ms(),
                source_ms: m.timestamp().to_millis().unwrap_or(0),
            };
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(arrival);
        }
    }
    Ok(())
}

/// A stretch of the test.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn length(&self) -> Duration {
        self.end - self.start
    }
}

/// What the outputs looked like during one window.
#[derive(Debug, Clone, Copy)]
pub struct OutputFigures {
    pub records: usize,
    /// The longest time between two consecutive visible output commits,
    /// counting the gaps that straddle the window's edges.
    pub longest_gap: Duration,
    /// End-to-end p50 and p99 (source timestamp → visible), in seconds, of
    /// this run's records that became visible in the window.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// `arrivals` in the order seen; `since_ms`: only records of changes made
/// since then count for latency (the topics' history is older).
pub fn figures(arrivals: &[Arrival], window: Window, since_ms: i64) -> OutputFigures {
    let inside: Vec<&Arrival> = arrivals
        .iter()
        .filter(|a| a.at >= window.start && a.at <= window.end)
        .collect();
    // Gaps: from the last arrival before the window to the first after it.
    let before = arrivals.iter().rev().find(|a| a.at < window.start);
    let after = arrivals.iter().find(|a| a.at > window.end);
    let mut times: Vec<Instant> = before.map(|a| a.at).into_iter().collect();
    times.extend(inside.iter().map(|a| a.at));
    times.push(after.map_or(window.end, |a| a.at));
    if before.is_none() {
        times.insert(0, window.start);
    }
    let longest_gap = times
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default();
    let mut latencies: Vec<i64> = inside
        .iter()
        .filter(|a| a.source_ms >= since_ms)
        .map(|a| a.visible_ms - a.source_ms)
        .collect();
    latencies.sort_unstable();
    let quantile = |q: f64| {
        (!latencies.is_empty()).then(|| {
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i] as f64 / 1000.0
        })
    };
    OutputFigures {
        records: inside.len(),
        longest_gap,
        p50: quantile(0.50),
        p99: quantile(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_the_window_edges_and_latency_only_this_runs_records() {
        let t0 = Instant::now();
        let at = |ms: u64, source_ms: i64, visible_ms: i64| Arrival {
            at: t0 + Duration::from_millis(ms),
            visible_ms,
            source_ms,
        };
        let arrivals = [
            at(0, 10, 100),
            at(1_000, 900, 1_000),
            at(1_500, 1_000, 1_200),
            at(5_000, 4_000, 5_000),
        ];
        let w = Window {
            start: t0 + Duration::from_millis(1_200),
            end: t0 + Duration::from_millis(2_000),
        };
        let f = figures(&arrivals, w, 500);
        assert_eq!(f.records, 1);
        // 1.5 s → 5.0 s straddles the window's end.
        assert_eq!(f.longest_gap, Duration::from_millis(3_500));
        assert_eq!(f.p99, Some(0.2));
        // Records older than `since_ms` are history, not latency.
        let all = Window {
            start: t0,
            end: t0 + Duration::from_millis(5_000),
        };
        let f = figures(&arrivals, all, 500);
        assert_eq!((f.records, f.p50, f.p99), (4, Some(0.2), Some(1.0)));
    }
}
