//! Test-only failpoints: `OUTBOUND_FAILPOINTS=name[@n],...` makes the process
//! die (abort, like `kill -9`: nothing is flushed or closed) the `n`th time
//! (default: the first) it reaches the named point. Integration tests use
//! them to kill an instance at the two moments a crash is hardest to get
//! right:
//!
//! - `commit.after_flush`: every record of the transaction is delivered, the
//!   commit not sent;
//! - `commit.before_apply`: the transaction is committed, its writes not yet
//!   applied to the local stores.
//!
//! And one that does not kill but plays a fault seen under load:
//!
//! - `input.jump_back`: right after a commit that consumed rollup deltas
//!   (the `n`th such; summing is what a record read twice breaks), the
//!   consumer's fetch position of every stage input it consumed goes back
//!   to the partition's first offset, so records already processed come
//!   again.
//!
//! Unset (always, outside tests), a failpoint costs one branch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub const AFTER_FLUSH: &str = "commit.after_flush";
pub const BEFORE_APPLY: &str = "commit.before_apply";
pub const JUMP_BACK: &str = "input.jump_back";

struct Point {
    at: u64,
    seen: AtomicU64,
}

fn points() -> &'static HashMap<String, Point> {
    static POINTS: OnceLock<HashMap<String, Point>> = OnceLock::new();
    POINTS.get_or_init(|| {
        let Ok(spec) = std::env::var("OUTBOUND_FAILPOINTS") else {
            return HashMap::new();
        };
        spec.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                let (name, at) = match s.trim().split_once('@') {
                    Some((n, at)) => (n, at.parse().unwrap_or(1)),
                    None => (s.trim(), 1),
                };
                (
                    name.to_owned(),
                    Point {
                        at: at.max(1),
                        seen: AtomicU64::new(0),
                    },
                )
            })
            .collect()
    })
}

/// Whether the failpoint `name` is set and due (the `n`th time here).
pub fn due(name: &str) -> bool {
    let points = points();
    if points.is_empty() {
        return false;
    }
    points
        .get(name)
        .is_some_and(|p| p.seen.fetch_add(1, Ordering::SeqCst) + 1 == p.at)
}

/// Dies here if the failpoint `name` is set and due.
pub fn hit(name: &str) {
    if due(name) {
        tracing::error!(failpoint = name, "failpoint reached: aborting the process");
        std::process::abort();
    }
}
