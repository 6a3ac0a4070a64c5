//! Graceful shutdown as a type: a [`Shutdown`] handle is cloned into every
//! loop; SIGTERM/SIGINT (or a caller) trips it once, and every loop sees it at
//! its next check and winds down cleanly (commit, leave the group).
//!
//! Winding down is bounded: a handle made with [`Shutdown::with_deadline`]
//! ends the process once the deadline has passed after it tripped, whatever
//! is still running (a commit waiting on a broker that does not answer, a
//! sink retrying a search node that is down). That is safe for the stream
//! stages: their stores only ever hold committed writes.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
    deadline: Option<Duration>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle whose trip gives the process `deadline` to end by itself.
    pub fn with_deadline(deadline: Duration) -> Self {
        Self {
            requested: Arc::default(),
            deadline: Some(deadline),
        }
    }

    pub fn trigger(&self) {
        if self.requested.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(deadline) = self.deadline else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("shutdown-deadline".into())
            .spawn(move || {
                std::thread::sleep(deadline);
                tracing::error!(
                    deadline_ms = deadline.as_millis() as u64,
                    "shutdown did not finish within shutdown_deadline_ms; exiting now \
                     (the stream stages' stores are at a committed point)"
                );
                // Not eprintln!: it panics when stderr fails (a full disk),
                // and this thread must reach the exit.
                let _ = writeln!(
                    std::io::stderr(),
                    "outbound: shutdown did not finish within {deadline:?}; exiting"
                );
                std::process::exit(1);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "starting the shutdown deadline's timer");
        }
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Trips this handle on SIGTERM or SIGINT (a second signal exits at once).
    pub fn on_signals(&self) -> anyhow::Result<()> {
        use std::sync::atomic::AtomicUsize;
        let count = Arc::new(AtomicUsize::new(0));
        let handle = self.clone();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if count.fetch_add(1, Ordering::SeqCst) > 0 {
                        tracing::warn!(signal = sig, "second signal: exiting at once");
                        std::process::exit(130);
                    }
                    tracing::info!(
                        signal = sig,
                        "shutdown requested: committing and leaving the group"
                    );
                    handle.trigger();
                }
            })?;
        Ok(())
    }
}
