//! The metrics endpoint every `outbound` process serves on `metrics.listen`:
//!
//! - `GET /metrics`: the Prometheus text exposition of [`Metrics`];
//! - `GET /healthz`: liveness, 200 while every loop that reports heartbeats
//!   ([`Liveness::beat`]) has iterated within [`STALL_AFTER`], else 503;
//! - `GET /readyz`: readiness, 200 only when [`Metrics::is_ready`] (tasks
//!   assigned, none restoring) and no shutdown is under way, else 503;
//! - `GET /healthz/sink`: the Elasticsearch sink's own health (200, 503 with
//!   the reason, 404 without a sink in the process): an Elasticsearch
//!   problem fails this, never `/healthz` (see `sink/health.rs`).
//!
//! The server runs on its own thread and single-threaded runtime, so it
//! answers whatever the stream loop is doing (a liveness probe must not share
//! the fate of the thing it probes), and stops when the process's
//! [`Shutdown`] trips.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{GaugeVec, Opts, Registry};

use super::Metrics;
use crate::shutdown::Shutdown;

/// A loop that has not iterated for this long fails `/healthz` (and the
/// `OutboundLoopStalled` alert fires). Generous: one iteration may wait out a
/// transaction commit or a rebalance bounded by Kafka timeouts of tens of
/// seconds.
pub const STALL_AFTER: Duration = Duration::from_secs(120);

/// Heartbeats of the process's long-running loops (`stream`, `sink`), as
/// `outbound_loop_heartbeat_timestamp_seconds{loop}` and for `/healthz`.
pub struct Liveness {
    heartbeat: GaugeVec,
    last: Mutex<BTreeMap<&'static str, Instant>>,
}

impl Liveness {
    pub(super) fn new(registry: &Registry) -> Self {
        let heartbeat = GaugeVec::new(
            Opts::new(
                "outbound_loop_heartbeat_timestamp_seconds",
                "Unix time of the last iteration of each of the process's loops.",
            ),
            &["loop"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(heartbeat.clone()))
            .expect("metric registered once");
        Self {
            heartbeat,
            last: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one iteration of `name`; from the first beat on, the loop must
    /// keep beating for the process to stay live.
    pub fn beat(&self, name: &'static str) {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, Instant::now());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.heartbeat.with_label_values(&[name]).set(now);
    }

    /// Stops watching `name` (a loop that ended on purpose).
    pub fn done(&self, name: &'static str) {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let _ = self.heartbeat.remove_label_values(&[name]);
    }

    /// The loops that have not beaten within `stall_after`.
    pub fn stalled(&self, stall_after: Duration) -> Vec<(&'static str, Duration)> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.iter()
            .map(|(name, at)| (*name, at.elapsed()))
            .filter(|(_, idle)| *idle > stall_after)
            .collect()
    }
}

/// The running endpoint.
pub struct MetricsServer {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl MetricsServer {
    /// The bound address (the real port when `metrics.listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the server to stop (after the [`Shutdown`] tripped).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

/// Binds `listen` and serves the endpoints until `shutdown` trips. An empty
/// `listen` disables the endpoint (`Ok(None)`). Binding happens before this
/// returns, so a taken port fails the process at startup; the bound address
/// is logged (`metrics endpoint listening addr=...`), which makes
/// `127.0.0.1:0` usable.
pub fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<Option<MetricsServer>> {
    let listen = listen.trim();
    if listen.is_empty() {
        tracing::info!("metrics endpoint disabled (metrics.listen is empty)");
        return Ok(None);
    }
    let listener = TcpListener::bind(listen).with_context(|| {
        format!("binding the metrics endpoint to {listen:?} (config key `metrics.listen`)")
    })?;
    listener
        .set_nonblocking(true)
        .context("configuring the metrics listener")?;
    let addr = listener
        .local_addr()
        .context("reading the metrics listener's address")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the metrics endpoint's runtime")?;
    let state = AppState {
        metrics,
        shutdown: shutdown.clone(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/healthz/sink", get(sink_health))
        .with_state(state);
    let thread = std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "metrics endpoint: adopting the listener failed");
                        return;
                    }
                };
                let stop = async move {
                    while !shutdown.is_requested() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                    tracing::error!(error = %e, "metrics endpoint failed");
                }
            });
        })
        .context("spawning the metrics endpoint's thread")?;
    tracing::info!(%addr, "metrics endpoint listening (/metrics, /healthz, /readyz)");
    Ok(Some(MetricsServer { addr, thread }))
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let stalled = s.metrics.liveness.stalled(STALL_AFTER);
    if stalled.is_empty() {
        return (StatusCode::OK, "ok\n".to_owned());
    }
    let which: Vec<String> = stalled
        .iter()
        .map(|(name, idle)| format!("{name} loop idle for {}s", idle.as_secs()))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("stalled: {}\n", which.join(", ")),
    )
}

async fn sink_health(State(s): State<AppState>) -> impl IntoResponse {
    use crate::sink::health::Report;
    match s.metrics.sink.health.report() {
        Report::Healthy => (StatusCode::OK, "ok\n".to_owned()),
        Report::Absent => (
            StatusCode::NOT_FOUND,
            "no Elasticsearch sink in this process\n".to_owned(),
        ),
        Report::Unhealthy(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.shutdown.is_requested() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if s.metrics.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no task assigned yet, or tasks restoring\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    #[test]
    fn serves_metrics_health_and_readiness_until_shutdown() {
        let metrics = Arc::new(Metrics::new());
        let shutdown = Shutdown::new();
        let server = serve("127.0.0.1:0", metrics.clone(), shutdown.clone())
            .expect("serve")
            .expect("enabled");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200);
        assert!(body.contains("outbound_build_info{version="), "{body}");
        assert!(
            body.contains("outbound_transactions_total{outcome=\"aborted\"} 0"),
            "known series exist at zero"
        );

        assert_eq!(get(addr, "/readyz").0, 503, "not ready before tasks run");
        metrics.set_ready(true);
        assert_eq!(get(addr, "/readyz").0, 200);

        assert_eq!(
            get(addr, "/healthz").0,
            200,
            "live with no loop registered yet"
        );
        metrics.liveness.beat("stream");
        assert_eq!(get(addr, "/healthz").0, 200);
        assert!(get(addr, "/metrics")
            .1
            .contains("outbound_loop_heartbeat_timestamp_seconds{loop=\"stream\"}"));
        assert!(metrics
            .liveness
            .stalled(Duration::ZERO)
            .iter()
            .any(|(n, _)| *n == "stream"));
        metrics.liveness.done("stream");
        assert!(metrics.liveness.stalled(Duration::ZERO).is_empty());

        assert_eq!(get(addr, "/nope").0, 404);
        shutdown.trigger();
        server.join();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "the endpoint stops with the process"
        );
    }

    #[test]
    fn empty_listen_disables_and_a_bad_address_fails_at_startup() {
        let metrics = Arc::new(Metrics::new());
        assert!(serve("", metrics.clone(), Shutdown::new())
            .expect("ok")
            .is_none());
        let err = serve("not an address", metrics, Shutdown::new())
            .err()
            .expect("fails");
        assert!(format!("{err:#}").contains("metrics.listen"));
    }
}
