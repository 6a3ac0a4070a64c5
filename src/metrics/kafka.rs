//! Consumer lag from librdkafka's statistics (`statistics.interval.ms`):
//! `outbound_consumer_lag_records{topic,partition}`, one series per partition
//! this process consumes, removed when the partition is revoked.
//!
//! librdkafka's own `consumer_lag` is measured from the *committed* offset,
//! which a transactional consumer never commits itself (offsets go through
//! `send_offsets_to_transaction`), so it would stay stale. The lag here is
//! the partition's end (the last stable offset under `read_committed`, else
//! the high watermark) minus the position handed to the application.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use prometheus::{IntGaugeVec, Opts, Registry};
use rdkafka::Statistics;

pub struct ConsumerLag {
    gauge: IntGaugeVec,
    /// (topic, partition) label values currently exported, per client (the
    /// stream consumer and the sink's consumer of one process report apart).
    exported: Mutex<BTreeMap<String, BTreeSet<(String, String)>>>,
}

impl ConsumerLag {
    pub(super) fn new(registry: &Registry) -> Self {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "outbound_consumer_lag_records",
                "Records between the end of an input partition (last stable offset) and this process's position.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(gauge.clone()))
            .expect("metric registered once");
        Self {
            gauge,
            exported: Mutex::new(BTreeMap::new()),
        }
    }

    /// Updates the gauges from one statistics report of a consumer: sets the
    /// partitions it fetches, drops those it no longer owns. Several consumers
    /// of one process may report (they read different topics).
    pub fn record(&self, stats: &Statistics) {
        let mut seen = BTreeSet::new();
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *id < 0 || !p.desired {
                    continue;
                }
                let Some(lag) = lag(p.ls_offset, p.hi_offset, p.app_offset, p.committed_offset)
                else {
                    continue;
                };
                let key = (topic.clone(), id.to_string());
                self.gauge.with_label_values(&[&key.0, &key.1]).set(lag);
                seen.insert(key);
            }
        }
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        let before = exported
            .insert(stats.name.clone(), seen.clone())
            .unwrap_or_default();
        for (topic, partition) in before.difference(&seen) {
            let _ = self.gauge.remove_label_values(&[topic, partition]);
        }
    }
}

/// End minus position, when both are known (librdkafka reports -1 or -1001
/// for unknown offsets).
fn lag(ls_offset: i64, hi_offset: i64, app_offset: i64, committed_offset: i64) -> Option<i64> {
    let end = if ls_offset >= 0 { ls_offset } else { hi_offset };
    let position = if app_offset >= 0 {
        app_offset
    } else {
        committed_offset
    };
    (end >= 0 && position >= 0).then(|| (end - position).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_end_minus_position_when_both_are_known() {
        assert_eq!(
            lag(100, 120, 40, 10),
            Some(60),
            "last stable offset, application position"
        );
        assert_eq!(
            lag(-1, 120, -1001, 10),
            Some(110),
            "high watermark, committed offset"
        );
        assert_eq!(lag(100, 100, 100, 100), Some(0));
        assert_eq!(lag(100, 100, 101, 0), Some(0), "never negative");
        assert_eq!(lag(-1, -1, 40, 10), None);
        assert_eq!(lag(100, 100, -1001, -1001), None);
    }

    #[test]
    fn partitions_no_longer_fetched_are_removed() {
        let registry = Registry::new();
        let lag = ConsumerLag::new(&registry);
        let stats = |parts: &[(i32, bool, i64, i64)]| -> Statistics {
            let partitions: serde_json::Map<String, serde_json::Value> = parts
                .iter()
                .map(|(id, desired, end, pos)| {
                    (id.to_string(), partition_json(*id, *desired, *end, *pos))
                })
                .collect();
            let json = serde_json::json!({
                "name": "c", "client_id": "c", "type": "consumer", "ts": 0, "time": 0, "age": 0,
                "replyq": 0, "msg_cnt": 0, "msg_size": 0, "msg_max": 0, "msg_size_max": 0,
                "simple_cnt": 0, "metadata_cache_cnt": 0, "tx": 0, "tx_bytes": 0, "rx": 0, "rx_bytes": 0,
                "txmsgs": 0, "txmsg_bytes": 0, "rxmsgs": 0, "rxmsg_bytes": 0, "brokers": {},
                "topics": {"t": {"topic": "t", "age": 0, "metadata_age": 0, "batchsize": window(), "batchcnt": window(), "partitions": partitions}}
            });
            serde_json::from_value(json).expect("statistics JSON")
        };
        lag.record(&stats(&[
            (0, true, 10, 4),
            (1, true, 5, 5),
            (-1, false, 0, 0),
        ]));
        let text = render(&registry);
        assert!(
            text.contains("outbound_consumer_lag_records{partition=\"0\",topic=\"t\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("outbound_consumer_lag_records{partition=\"1\",topic=\"t\"} 0"),
            "{text}"
        );
        assert!(!text.contains("partition=\"-1\""), "{text}");
        let mut other = stats(&[]);
        other.name = "another-consumer".into();
        lag.record(&other);
        assert!(
            render(&registry).contains("partition=\"0\""),
            "another client's report keeps these"
        );
        lag.record(&stats(&[(0, false, 10, 4), (1, true, 9, 5)]));
        let text = render(&registry);
        assert!(
            !text.contains("partition=\"0\""),
            "revoked partition dropped: {text}"
        );
        assert!(
            text.contains("outbound_consumer_lag_records{partition=\"1\",topic=\"t\"} 4"),
            "{text}"
        );
    }

    fn partition_json(id: i32, desired: bool, end: i64, pos: i64) -> serde_json::Value {
        let mut p = serde_json::json!({
            "partition": id, "broker": 1, "leader": 1, "desired": desired, "unknown": false,
            "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0, "xmit_msgq_bytes": 0,
            "fetchq_cnt": 0, "fetchq_size": 0, "fetch_state": "active", "query_offset": 0,
            "next_offset": pos, "app_offset": pos, "stored_offset": -1001, "committed_offset": -1001,
            "eof_offset": end, "lo_offset": 0, "hi_offset": end, "ls_offset": end,
            "consumer_lag": -1, "consumer_lag_stored": -1, "txmsgs": 0, "txbytes": 0,
            "rxmsgs": 0, "rxbytes": 0, "msgs": 0, "rx_ver_drops": 0, "msgs_inflight": 0,
            "next_ack_seq": 0, "next_err_seq": 0, "acked_msgid": 0
        });
        if id < 0 {
            p["fetch_state"] = "none".into();
        }
        p
    }

    fn window() -> serde_json::Value {
        serde_json::json!({"min": 0, "max": 0, "avg": 0, "sum": 0, "cnt": 0, "stddev": 0, "hdrsize": 0,
            "p50": 0, "p75": 0, "p90": 0, "p95": 0, "p99": 0, "p99_99": 0, "outofrange": 0})
    }

    fn render(registry: &Registry) -> String {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut buf,
        )
        .expect("encode");
        String::from_utf8(buf).expect("utf-8")
    }
}
