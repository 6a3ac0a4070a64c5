//! Graceful shutdown as a type: a [`Shutdown`] handle is cloned into every
//! loop; SIGTERM/SIGINT (or a caller) trips it once, and every loop sees it at
//! its next check and winds down cleanly (commit, leave the group).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.requested.store(true, Ordering::SeqCst);
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
