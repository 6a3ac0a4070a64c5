//! A task's state on disk (Kafka Streams' `ProcessorStateManager` and
//! `StateDirectory`): where each task's store lives, whether its checkpoint
//! can be trusted against its changelog, and removing the directories of
//! tasks this instance no longer owns once `state.cleanup_delay_ms` has
//! passed (they are kept that long so a task that comes back soon restores
//! only its changelog's tail).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use outbound_state::Checkpoint;
use tracing::{info, warn};

use super::task::TaskId;
use crate::config::Config;

/// What the changelog says about a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogFacts<'a> {
    /// The changelog topic's id now, if known.
    pub topic_id: Option<&'a str>,
    /// Its first offset.
    pub low: i64,
    /// Its last stable offset (read_committed end), read after the input's
    /// committed offsets, so no transaction behind those offsets is in doubt.
    pub end: i64,
    /// Its `delete.retention.ms`: how long compaction keeps a tombstone.
    pub delete_retention_ms: i64,
}

/// What to do with a task's local state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Trusted: restore the changelog from this offset to its end.
    Resume { from: i64 },
    /// Not trusted: delete it and restore the whole changelog.
    Wipe { reason: String },
    /// The checkpoint is past the changelog's stable end: a transaction that
    /// wrote it is not settled yet. Ask again shortly.
    Wait { reason: String },
}

/// The margin kept below `delete.retention.ms` for the restore itself to
/// read a tombstone before compaction may drop it.
pub fn retention_margin_ms(delete_retention_ms: i64) -> i64 {
    (delete_retention_ms / 2).min(3_600_000)
}

/// Whether a checkpoint can be trusted. A store mirrors its changelog up to
/// the checkpoint, but only while nothing it has not seen was compacted
/// away: a task that comes back after another instance deleted rows and
/// compaction dropped the tombstones would resurrect those rows. So the
/// checkpoint must be of this incarnation of the topic and younger than
/// `delete.retention.ms` (minus a margin for the restore), and lie within
/// the changelog.
pub fn validate(cp: &Checkpoint, facts: &ChangelogFacts<'_>, now_ms: i64) -> Verdict {
    if let (Some(was), Some(now)) = (cp.topic_id.as_deref(), facts.topic_id) {
        if was != now {
            return Verdict::Wipe {
                reason: format!(
                    "the changelog topic was created again (its id was {was}, is {now})"
                ),
            };
        }
    }
    if cp.next_offset == 0 {
        return Verdict::Resume { from: facts.low };
    }
    let age = now_ms - cp.written_at_ms;
    let trusted_for = facts.delete_retention_ms - retention_margin_ms(facts.delete_retention_ms);
    if age > trusted_for {
        return Verdict::Wipe {
            reason: format!(
                "the checkpoint is {age} ms old, more than delete.retention.ms ({} ms) less a margin: \
                 deletes made meanwhile may have been compacted away",
                facts.delete_retention_ms
            ),
        };
    }
    if cp.next_offset < facts.low {
        return Verdict::Wipe {
            reason: format!(
                "checkpoint {} is before the changelog start {}",
                cp.next_offset, facts.low
            ),
        };
    }
    if cp.next_offset > facts.end {
        return Verdict::Wait {
            reason: format!(
                "checkpoint {} is past the changelog's stable end {}: a transaction is not settled yet",
                cp.next_offset, facts.end
            ),
        };
    }
    Verdict::Resume {
        from: cp.next_offset,
    }
}

/// The state directory of one app on this instance, shared by its stream
/// threads: `<state.dir>/<app_id>/<stage>-<partition>` per task.
pub struct StateDirectory {
    root: PathBuf,
    cleanup_delay: Duration,
    inner: Mutex<Ownership>,
}

#[derive(Default)]
struct Ownership {
    owned: HashSet<String>,
    /// Task directories not owned, since when.
    unowned_since: HashMap<String, Instant>,
    last_sweep: Option<Instant>,
}

impl StateDirectory {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let root = config.state.dir.join(&config.app_id);
        std::fs::create_dir_all(&root).map_err(|e| {
            anyhow::anyhow!(
                "creating the state directory {} (config key `state.dir`): {e}",
                root.display()
            )
        })?;
        let mut inner = Ownership::default();
        let now = Instant::now();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    inner
                        .unowned_since
                        .insert(entry.file_name().to_string_lossy().into_owned(), now);
                }
            }
        }
        Ok(StateDirectory {
            root,
            cleanup_delay: Duration::from_millis(config.state.cleanup_delay_ms),
            inner: Mutex::new(inner),
        })
    }

    fn name(id: TaskId) -> String {
        id.to_string()
    }

    pub fn task_dir(&self, id: TaskId) -> PathBuf {
        self.root.join(Self::name(id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ownership> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task is this instance's now: its directory is kept.
    pub fn claim(&self, id: TaskId) {
        let mut o = self.lock();
        o.unowned_since.remove(&Self::name(id));
        o.owned.insert(Self::name(id));
    }

    /// The task has gone: its directory is removed after the cleanup delay
    /// unless it comes back.
    pub fn release(&self, id: TaskId) {
        let mut o = self.lock();
        o.owned.remove(&Self::name(id));
        o.unowned_since.insert(Self::name(id), Instant::now());
    }

    /// Removes the directories not owned for longer than the cleanup delay
    /// (checked at most every few seconds).
    pub fn sweep(&self) {
        let mut o = self.lock();
        if o.last_sweep
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        o.last_sweep = Some(Instant::now());
        let due: Vec<String> = o
            .unowned_since
            .iter()
            .filter(|(_, since)| since.elapsed() >= self.cleanup_delay)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            o.unowned_since.remove(&name);
            if o.owned.contains(&name) {
                continue;
            }
            let path = self.root.join(&name);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    info!(path = %path.display(), "removed the state of a task this instance no longer owns")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "removing the state of a task no longer owned")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbound_state::ChangelogPartition;

    fn cp(next: i64, at: i64, id: Option<&str>) -> Checkpoint {
        Checkpoint {
            changelog: ChangelogPartition {
                topic: "app-join-changelog".into(),
                partition: 0,
            },
            next_offset: next,
            topic_id: id.map(str::to_owned),
            written_at_ms: at,
        }
    }

    fn facts(low: i64, end: i64) -> ChangelogFacts<'static> {
        ChangelogFacts {
            topic_id: Some("T1"),
            low,
            end,
            delete_retention_ms: 86_400_000,
        }
    }

    #[test]
    fn a_fresh_checkpoint_within_the_changelog_resumes() {
        let now = 1_000_000_000;
        assert_eq!(
            validate(&cp(50, now - 1000, Some("T1")), &facts(0, 80), now),
            Verdict::Resume { from: 50 }
        );
        assert_eq!(
            validate(&cp(80, now, Some("T1")), &facts(0, 80), now),
            Verdict::Resume { from: 80 }
        );
        assert_eq!(
            validate(&cp(0, 0, None), &facts(7, 80), now),
            Verdict::Resume { from: 7 },
            "empty store: everything"
        );
    }

    #[test]
    fn another_topic_incarnation_or_an_old_checkpoint_wipes() {
        let now = 1_000_000_000_000;
        assert!(matches!(
            validate(&cp(50, now, Some("T0")), &facts(0, 80), now),
            Verdict::Wipe { .. }
        ));
        let day = 86_400_000;
        assert!(matches!(
            validate(&cp(50, now - day, Some("T1")), &facts(0, 80), now),
            Verdict::Wipe { .. }
        ));
        assert_eq!(
            validate(
                &cp(50, now - day + 3_600_000, Some("T1")),
                &facts(0, 80),
                now
            ),
            Verdict::Resume { from: 50 },
            "within delete.retention.ms less the margin"
        );
        assert!(matches!(
            validate(
                &cp(50, now - day + 3_500_000, Some("T1")),
                &facts(0, 80),
                now
            ),
            Verdict::Wipe { .. }
        ));
        let tiny = ChangelogFacts {
            delete_retention_ms: 1000,
            ..facts(0, 80)
        };
        assert!(matches!(
            validate(&cp(50, now - 600, Some("T1")), &tiny, now),
            Verdict::Wipe { .. }
        ));
        assert!(matches!(
            validate(&cp(5, now, Some("T1")), &facts(10, 80), now),
            Verdict::Wipe { .. }
        ));
    }

    #[test]
    fn a_checkpoint_past_the_stable_end_waits_instead_of_wiping() {
        let now = 1_000_000_000;
        assert!(matches!(
            validate(&cp(90, now, Some("T1")), &facts(0, 80), now),
            Verdict::Wait { .. }
        ));
    }

    #[test]
    fn directories_of_tasks_no_longer_owned_go_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.state.dir = dir.path().to_path_buf();
        config.state.cleanup_delay_ms = 0;
        std::fs::create_dir_all(dir.path().join("outbound/join-9")).unwrap();
        let sd = StateDirectory::new(&config).unwrap();
        let kept = TaskId {
            stage: super::super::topology::Stage::ALL[0],
            partition: 1,
        };
        std::fs::create_dir_all(sd.task_dir(kept)).unwrap();
        sd.claim(kept);
        sd.sweep();
        assert!(
            !dir.path().join("outbound/join-9").exists(),
            "left from an earlier run, not owned"
        );
        assert!(sd.task_dir(kept).exists(), "owned");
        sd.release(kept);
        std::thread::sleep(Duration::from_millis(10));
        // At most one sweep every few seconds.
        sd.lock().last_sweep = None;
        sd.sweep();
        assert!(!sd.task_dir(kept).exists(), "released and past the delay");
    }
}
