//! One task's RocksDB instance: open (detecting a corrupt or foreign
//! directory and rebuilding it), read, commit a write buffer with its
//! checkpoint atomically, and apply restored changelog records.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, Direction, ErrorKind, IteratorMode, WriteBatch, DB};
use tracing::{info, warn};

use crate::{
    changelog, ChangelogPartition, ChangelogRecord, Checkpoint, Overlay, StateError, StoreId,
    StoreResources, WriteBuffer,
};

const META_CF: &str = "__meta";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// Meta keys `pending/<owner>`: groups whose derived entries a restore has
/// not rebuilt yet.
const PENDING_PREFIX: &[u8] = b"pending/";

fn pending_key(owner: &[u8]) -> Vec<u8> {
    [PENDING_PREFIX, owner].concat()
}

/// One logical store of a task: its stable id (the changelog key's first
/// byte) and its column family name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSpec {
    pub id: StoreId,
    pub name: &'static str,
}

/// How opening went: the engine reports it and restores from the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    /// No local state: restore the whole changelog.
    Created,
    /// Local state at a committed point: restore only the changelog tail.
    Resumed { next_offset: i64 },
    /// Local state could not be trusted and was deleted: restore everything.
    Rebuilt { reason: String },
}

/// Size figures for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub estimated_keys: u64,
    pub live_bytes: u64,
}

pub struct TaskStore {
    db: DB,
    path: PathBuf,
    specs: Vec<StoreSpec>,
    checkpoint: Checkpoint,
}

impl TaskStore {
    /// Opens (or creates) the store of one task in `dir`. A directory that
    /// RocksDB reports corrupt, or whose checkpoint is missing, unreadable or
    /// belongs to another changelog partition, is deleted and recreated: its
    /// contents are never trusted without a checkpoint that vouches for them.
    pub fn open(
        dir: &Path,
        changelog: ChangelogPartition,
        specs: &[StoreSpec],
        resources: &StoreResources,
    ) -> Result<(Self, OpenOutcome), StateError> {
        let existed = dir.join("CURRENT").exists();
        let rebuild = |reason: String| -> Result<(Self, OpenOutcome), StateError> {
            warn!(path = %dir.display(), %changelog, %reason, "local state not trusted; deleting it for a full restore");
            remove_dir(dir)?;
            let store = Self::open_db(dir, changelog.clone(), specs, resources)?;
            Ok((store, OpenOutcome::Rebuilt { reason }))
        };
        if !existed {
            if dir.exists() {
                // A directory without CURRENT is a half-created store.
                remove_dir(dir)?;
            }
            let store = Self::open_db(dir, changelog.clone(), specs, resources)?;
            return Ok((store, OpenOutcome::Created));
        }
        let db = match Self::raw_open(dir, specs, resources) {
            Ok(db) => db,
            Err(e) if matches!(e.kind(), ErrorKind::Corruption) => {
                return rebuild(format!("RocksDB reports corruption: {e}"));
            }
            Err(e) => {
                return Err(StateError::Rocks {
                    path: dir.to_path_buf(),
                    source: e,
                });
            }
        };
        let stored = match read_checkpoint(&db, dir) {
            Ok(Some(cp)) => cp,
            Ok(None) => {
                drop(db);
                return rebuild("no checkpoint record".into());
            }
            Err(e) => {
                drop(db);
                return rebuild(e.to_string());
            }
        };
        if stored.changelog != changelog {
            drop(db);
            return rebuild(format!(
                "the directory mirrors changelog {}, not {changelog}",
                stored.changelog
            ));
        }
        let next_offset = stored.next_offset;
        info!(path = %dir.display(), %changelog, next_offset, "opened local state at its checkpoint");
        let store = Self {
            db,
            path: dir.to_path_buf(),
            specs: specs.to_vec(),
            checkpoint: stored,
        };
        Ok((store, OpenOutcome::Resumed { next_offset }))
    }

    fn raw_open(
        dir: &Path,
        specs: &[StoreSpec],
        resources: &StoreResources,
    ) -> Result<DB, rocksdb::Error> {
        let opts = resources.options();
        let mut cfs = vec![ColumnFamilyDescriptor::new(META_CF, resources.options())];
        cfs.extend(
            specs
                .iter()
                .map(|s| ColumnFamilyDescriptor::new(s.name, resources.options())),
        );
        DB::open_cf_descriptors(&opts, dir, cfs)
    }

    fn open_db(
        dir: &Path,
        changelog: ChangelogPartition,
        specs: &[StoreSpec],
        resources: &StoreResources,
    ) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Io {
            path: dir.to_path_buf(),
            message: "creating the state directory".into(),
            source: e,
        })?;
        let db = Self::raw_open(dir, specs, resources).map_err(|e| StateError::Rocks {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let mut store = Self {
            db,
            path: dir.to_path_buf(),
            specs: specs.to_vec(),
            checkpoint: Checkpoint {
                changelog,
                next_offset: 0,
                topic_id: None,
                written_at_ms: crate::now_ms(),
            },
        };
        // Write the checkpoint at once so the directory vouches for itself.
        store.write(WriteBatch::default(), Some(0))?;
        Ok(store)
    }

    /// Records which incarnation of the changelog topic the store mirrors
    /// (written with the next checkpoint).
    pub fn set_topic_id(&mut self, topic_id: &str) {
        self.checkpoint.topic_id = Some(topic_id.to_owned());
    }

    /// Writes the checkpoint again with the current time: the store is in
    /// step with its changelog now (it is the changelog's only writer while
    /// its task runs here, and this is called as the task closes cleanly).
    pub fn touch(&mut self) -> Result<(), StateError> {
        let next = self.checkpoint.next_offset;
        self.write(WriteBatch::default(), Some(next))
    }

    /// Deletes the local state and starts empty (the engine found the
    /// checkpoint inconsistent with the changelog, e.g. past its end).
    pub fn wipe(self, resources: &StoreResources, reason: &str) -> Result<Self, StateError> {
        let Self {
            db,
            path,
            specs,
            checkpoint,
        } = self;
        warn!(path = %path.display(), changelog = %checkpoint.changelog, %reason, "wiping local state for a full restore");
        drop(db);
        remove_dir(&path)?;
        let mut store = Self::open_db(&path, checkpoint.changelog, &specs, resources)?;
        if let Some(id) = &checkpoint.topic_id {
            store.set_topic_id(id);
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    pub(crate) fn check_store(&self, id: StoreId) -> Result<(), StateError> {
        self.spec(id).map(|_| ())
    }

    fn spec(&self, id: StoreId) -> Result<&StoreSpec, StateError> {
        self.specs
            .iter()
            .find(|s| s.id == id)
            .ok_or(StateError::UnknownStore {
                path: self.path.clone(),
                id: id.0,
            })
    }

    fn cf(&self, id: StoreId) -> Result<&rocksdb::ColumnFamily, StateError> {
        let name = self.spec(id)?.name;
        self.db.cf_handle(name).ok_or(StateError::UnknownStore {
            path: self.path.clone(),
            id: id.0,
        })
    }

    fn rocks(&self, e: rocksdb::Error) -> StateError {
        StateError::Rocks {
            path: self.path.clone(),
            source: e,
        }
    }

    pub fn get(&self, id: StoreId, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let cf = self.cf(id)?;
        self.db.get_cf(cf, key).map_err(|e| self.rocks(e))
    }

    /// Committed entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, id: StoreId, prefix: &[u8]) -> Result<crate::Entries, StateError> {
        let cf = self.cf(id)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| self.rocks(e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// Applies a committed transaction's writes and, when the transaction
    /// wrote changelog records, the checkpoint past the last of them — one
    /// atomic batch. Empties the buffer.
    pub fn commit(
        &mut self,
        buffer: &mut WriteBuffer,
        next_offset: Option<i64>,
    ) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for (id, key, value) in buffer.entries() {
            let cf = self.cf(id)?;
            match value {
                Some(v) => batch.put_cf(cf, key, v),
                None => batch.delete_cf(cf, key),
            }
        }
        self.write(batch, next_offset)?;
        buffer.clear();
        Ok(())
    }

    /// Applies changelog records read during restore, and the checkpoint
    /// `next_offset` (the offset after the last record read), atomically.
    pub fn restore_batch(
        &mut self,
        records: &[ChangelogRecord],
        next_offset: i64,
    ) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for r in records {
            let (id, key) = self.restored_key(r)?;
            let cf = self.cf(id)?;
            match &r.value {
                Some(v) => batch.put_cf(cf, key, v),
                None => batch.delete_cf(cf, key),
            }
        }
        self.write(batch, Some(next_offset))
    }

    /// Like [`TaskStore::restore_batch`], for a store that keeps entries it
    /// derives from its logged ones (and does not log): with the records
    /// and the checkpoint, one atomic batch marks the groups the records
    /// touch (as `owner` names them) as waiting for their derived entries to be rebuilt.
    /// The marks survive a crash or a move of the task, so a restore that
    /// stops half-way resumes and still rebuilds every group it touched;
    /// [`TaskStore::pending_derivations`] lists them and
    /// [`TaskStore::derive`] clears them. Rebuilding once at the end of a
    /// restore, not after every batch, is what keeps the restore fast: a
    /// group's rows may be spread over many batches.
    pub fn restore_batch_marking(
        &mut self,
        records: &[ChangelogRecord],
        next_offset: i64,
        owner: impl Fn(StoreId, &[u8]) -> Option<Vec<u8>>,
    ) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        let mut owners = std::collections::BTreeSet::new();
        for r in records {
            let (id, key) = self.restored_key(r)?;
            let cf = self.cf(id)?;
            match &r.value {
                Some(v) => batch.put_cf(cf, key, v),
                None => batch.delete_cf(cf, key),
            }
            if let Some(o) = owner(id, key) {
                owners.insert(o);
            }
        }
        let meta = self.meta()?;
        for owner in owners {
            batch.put_cf(meta, pending_key(&owner), []);
        }
        self.write(batch, Some(next_offset))
    }

    /// Up to `limit` groups marked by [`TaskStore::restore_batch_marking`]
    /// whose derived entries are not rebuilt yet, in key order.
    pub fn pending_derivations(&self, limit: usize) -> Result<Vec<Vec<u8>>, StateError> {
        let meta = self.meta()?;
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator_cf(meta, IteratorMode::From(PENDING_PREFIX, Direction::Forward));
        for item in iter {
            let (k, _) = item.map_err(|e| self.rocks(e))?;
            let Some(owner) = k.strip_prefix(PENDING_PREFIX) else {
                break;
            };
            out.push(owner.to_vec());
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Rebuilds the derived entries of `owners`: `derive` writes them,
    /// reading through its own writes, and those writes and the clearing of
    /// the owners' marks are one atomic batch (the checkpoint does not move:
    /// derived entries are not in the changelog).
    pub fn derive<E: From<StateError>>(
        &mut self,
        owners: &[Vec<u8>],
        derive: impl FnOnce(Overlay<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut buffer = WriteBuffer::new();
        derive(Overlay::new(self, &mut buffer))?;
        let mut batch = WriteBatch::default();
        for (id, key, value) in buffer.entries() {
            let cf = self.cf(id)?;
            match value {
                Some(v) => batch.put_cf(cf, key, v),
                None => batch.delete_cf(cf, key),
            }
        }
        let meta = self.meta()?;
        for owner in owners {
            batch.delete_cf(meta, pending_key(owner));
        }
        self.db.write(batch).map_err(|e| self.rocks(e))?;
        Ok(())
    }

    fn meta(&self) -> Result<&rocksdb::ColumnFamily, StateError> {
        self.db.cf_handle(META_CF).ok_or(StateError::UnknownStore {
            path: self.path.clone(),
            id: u8::MAX,
        })
    }

    /// The store and key of a restored changelog record.
    fn restored_key<'r>(&self, r: &'r ChangelogRecord) -> Result<(StoreId, &'r [u8]), StateError> {
        let (id, key) = changelog::decode_key(&self.checkpoint.changelog, r.offset, &r.key)?;
        self.cf(id).map_err(|_| StateError::BadChangelogRecord {
            topic: self.checkpoint.changelog.topic.clone(),
            partition: self.checkpoint.changelog.partition,
            offset: r.offset,
            reason: format!("store id {} is not one of this task's stores", id.0),
        })?;
        Ok((id, key))
    }

    fn write(&mut self, mut batch: WriteBatch, next_offset: Option<i64>) -> Result<(), StateError> {
        let mut checkpoint = self.checkpoint.clone();
        if let Some(next) = next_offset {
            checkpoint.next_offset = next;
            checkpoint.written_at_ms = crate::now_ms();
            let meta = self.meta()?;
            batch.put_cf(meta, CHECKPOINT_KEY, checkpoint.encode());
        }
        self.db.write(batch).map_err(|e| self.rocks(e))?;
        self.checkpoint = checkpoint;
        Ok(())
    }

    /// Estimated keys and live bytes of one store, for metrics.
    pub fn stats(&self, id: StoreId) -> Result<StoreStats, StateError> {
        let cf = self.cf(id)?;
        let prop = |name: &str| -> Result<u64, StateError> {
            Ok(self
                .db
                .property_int_value_cf(cf, name)
                .map_err(|e| self.rocks(e))?
                .unwrap_or(0))
        };
        Ok(StoreStats {
            estimated_keys: prop("rocksdb.estimate-num-keys")?,
            live_bytes: prop("rocksdb.estimate-live-data-size")?
                + prop("rocksdb.cur-size-all-mem-tables")?,
        })
    }
}

fn read_checkpoint(db: &DB, dir: &Path) -> Result<Option<Checkpoint>, StateError> {
    let meta = db
        .cf_handle(META_CF)
        .ok_or_else(|| StateError::BadCheckpoint {
            path: dir.to_path_buf(),
            reason: "no meta column family".into(),
        })?;
    let raw = db
        .get_cf(meta, CHECKPOINT_KEY)
        .map_err(|e| StateError::Rocks {
            path: dir.to_path_buf(),
            source: e,
        })?;
    raw.map(|bytes| {
        Checkpoint::decode(&bytes).map_err(|reason| StateError::BadCheckpoint {
            path: dir.to_path_buf(),
            reason,
        })
    })
    .transpose()
}

fn remove_dir(dir: &Path) -> Result<(), StateError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StateError::Io {
            path: dir.to_path_buf(),
            message: "deleting untrusted local state".into(),
            source: e,
        }),
    }
}
