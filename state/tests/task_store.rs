//! The task store against a real RocksDB in a temporary directory.

use std::collections::BTreeMap;

use outbound_state::{
    ChangelogPartition, ChangelogRecord, OpenOutcome, Overlay, StateError, StoreId, StoreResources,
    StoreSpec, StoreTuning, TaskStore, WriteBuffer,
};
use proptest::prelude::*;

const ROWS: StoreId = StoreId(1);
const COUNTERS: StoreId = StoreId(2);
const SPECS: &[StoreSpec] = &[
    StoreSpec {
        id: ROWS,
        name: "rows",
    },
    StoreSpec {
        id: COUNTERS,
        name: "counters",
    },
];

fn changelog(p: i32) -> ChangelogPartition {
    ChangelogPartition {
        topic: "app-join-changelog".into(),
        partition: p,
    }
}

fn resources() -> StoreResources {
    StoreResources::new(StoreTuning {
        block_cache_bytes: 4 << 20,
        write_buffer_bytes: 4 << 20,
        memtable_bytes: 1 << 20,
    })
}

#[test]
fn commit_is_durable_and_reopen_resumes_at_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let path = dir.path().join("join-0");
    {
        let (mut store, outcome) = TaskStore::open(&path, changelog(0), SPECS, &res).unwrap();
        assert_eq!(outcome, OpenOutcome::Created);
        let mut buf = WriteBuffer::new();
        let mut ov = Overlay::new(&store, &mut buf);
        ov.put(ROWS, b"o1/w1", b"item").unwrap();
        ov.put(COUNTERS, b"k", b"7").unwrap();
        assert_eq!(
            ov.get(ROWS, b"o1/w1").unwrap().as_deref(),
            Some(&b"item"[..])
        );
        // Pending writes are not in the store until the transaction commits.
        assert_eq!(store.get(ROWS, b"o1/w1").unwrap(), None);
        store.commit(&mut buf, Some(42)).unwrap();
        assert!(buf.is_empty());
    }
    let (store, outcome) = TaskStore::open(&path, changelog(0), SPECS, &res).unwrap();
    assert_eq!(outcome, OpenOutcome::Resumed { next_offset: 42 });
    assert_eq!(
        store.get(ROWS, b"o1/w1").unwrap().as_deref(),
        Some(&b"item"[..])
    );
    assert_eq!(
        store.get(COUNTERS, b"k").unwrap().as_deref(),
        Some(&b"7"[..])
    );
}

#[test]
fn an_aborted_buffer_leaves_the_store_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let (mut store, _) = TaskStore::open(&dir.path().join("t"), changelog(0), SPECS, &res).unwrap();
    let mut buf = WriteBuffer::new();
    buf.put(ROWS, b"a", b"1");
    store.commit(&mut buf, Some(1)).unwrap();
    buf.delete(ROWS, b"a");
    buf.put(ROWS, b"b", b"2");
    buf.clear();
    store.commit(&mut buf, None).unwrap();
    assert_eq!(store.get(ROWS, b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(store.get(ROWS, b"b").unwrap(), None);
    assert_eq!(store.checkpoint().next_offset, 1);
}

#[test]
fn changelog_records_coalesce_and_restore_into_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let mut buf = WriteBuffer::new();
    buf.put(ROWS, b"x", b"1");
    buf.put(ROWS, b"x", b"2"); // coalesces
    buf.put(COUNTERS, b"y", b"3");
    buf.delete(ROWS, b"z");
    let records: Vec<ChangelogRecord> = buf
        .changelog_records()
        .enumerate()
        .map(|(i, (key, value))| ChangelogRecord {
            offset: i as i64,
            key,
            value: value.map(<[u8]>::to_vec),
        })
        .collect();
    assert_eq!(records.len(), 3);
    let (mut replica, _) =
        TaskStore::open(&dir.path().join("replica"), changelog(1), SPECS, &res).unwrap();
    replica.restore_batch(&records, 3).unwrap();
    assert_eq!(replica.get(ROWS, b"x").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(
        replica.get(COUNTERS, b"y").unwrap().as_deref(),
        Some(&b"3"[..])
    );
    assert_eq!(replica.checkpoint().next_offset, 3);
}

#[test]
fn a_record_for_an_unknown_store_names_its_changelog_position() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let (mut store, _) = TaskStore::open(&dir.path().join("t"), changelog(4), SPECS, &res).unwrap();
    let bad = ChangelogRecord {
        offset: 99,
        key: vec![77, b'k'],
        value: Some(vec![1]),
    };
    let err = store.restore_batch(&[bad], 100).unwrap_err().to_string();
    assert!(err.contains("app-join-changelog[4] offset 99"), "{err}");
}

#[test]
fn a_corrupt_directory_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let path = dir.path().join("t");
    {
        let (mut store, _) = TaskStore::open(&path, changelog(0), SPECS, &res).unwrap();
        let mut buf = WriteBuffer::new();
        buf.put(ROWS, b"a", b"1");
        store.commit(&mut buf, Some(5)).unwrap();
    }
    std::fs::write(path.join("CURRENT"), b"garbage-without-newline").unwrap();
    let (store, outcome) = TaskStore::open(&path, changelog(0), SPECS, &res).unwrap();
    assert!(
        matches!(outcome, OpenOutcome::Rebuilt { .. }),
        "{outcome:?}"
    );
    assert_eq!(store.get(ROWS, b"a").unwrap(), None);
    assert_eq!(store.checkpoint().next_offset, 0);
}

#[test]
fn a_directory_of_another_changelog_partition_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let path = dir.path().join("t");
    {
        let (mut store, _) = TaskStore::open(&path, changelog(0), SPECS, &res).unwrap();
        let mut buf = WriteBuffer::new();
        buf.put(ROWS, b"a", b"1");
        store.commit(&mut buf, Some(5)).unwrap();
    }
    let (store, outcome) = TaskStore::open(&path, changelog(1), SPECS, &res).unwrap();
    match outcome {
        OpenOutcome::Rebuilt { reason } => {
            assert!(reason.contains("app-join-changelog[0]"), "{reason}")
        }
        other => panic!("expected a rebuild, got {other:?}"),
    }
    assert_eq!(store.get(ROWS, b"a").unwrap(), None);
}

#[test]
fn a_store_in_use_by_another_process_is_an_error_not_a_wipe() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let path = dir.path().join("t");
    let (mut first, _) = TaskStore::open(&path, changelog(0), SPECS, &res).unwrap();
    let mut buf = WriteBuffer::new();
    buf.put(ROWS, b"a", b"1");
    first.commit(&mut buf, Some(1)).unwrap();
    let second = TaskStore::open(&path, changelog(0), SPECS, &res);
    assert!(second.is_err(), "a locked store must not be opened twice");
    assert_eq!(first.get(ROWS, b"a").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn wipe_empties_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let (mut store, _) = TaskStore::open(&dir.path().join("t"), changelog(0), SPECS, &res).unwrap();
    let mut buf = WriteBuffer::new();
    buf.put(ROWS, b"a", b"1");
    store.commit(&mut buf, Some(9)).unwrap();
    let store = store
        .wipe(&res, "checkpoint past the changelog end")
        .unwrap();
    assert_eq!(store.get(ROWS, b"a").unwrap(), None);
    assert_eq!(store.checkpoint().next_offset, 0);
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    Commit,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..24).prop_map(Op::Delete),
        1 => Just(Op::Commit),
        1 => Just(Op::Abort),
    ]
}

fn key(k: u8) -> Vec<u8> {
    // Two prefixes so scans have neighbours to exclude.
    format!(
        "{}/{k:03}",
        if k.is_multiple_of(2) { "even" } else { "odd" }
    )
    .into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Reads through the overlay equal a plain model of committed state with
    /// pending writes laid over it, through any sequence of commits and aborts.
    #[test]
    fn overlay_reads_equal_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let res = resources();
        let (mut store, _) = TaskStore::open(&dir.path().join("t"), changelog(0), SPECS, &res).unwrap();
        let mut buf = WriteBuffer::new();
        let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut pending: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put(k, v) => {
                    Overlay::new(&store, &mut buf).put(ROWS, &key(k), &[v]).unwrap();
                    pending.insert(key(k), Some(vec![v]));
                }
                Op::Delete(k) => {
                    Overlay::new(&store, &mut buf).delete(ROWS, &key(k)).unwrap();
                    pending.insert(key(k), None);
                }
                Op::Commit => {
                    store.commit(&mut buf, Some(i as i64)).unwrap();
                    for (k, v) in std::mem::take(&mut pending) {
                        match v { Some(v) => { committed.insert(k, v); } None => { committed.remove(&k); } }
                    }
                }
                Op::Abort => { buf.clear(); pending.clear(); }
            }
            let mut view = committed.clone();
            for (k, v) in &pending {
                match v { Some(v) => { view.insert(k.clone(), v.clone()); } None => { view.remove(k); } }
            }
            let ov = Overlay::new(&store, &mut buf);
            for prefix in [&b"even/"[..], &b"odd/"[..], &b""[..]] {
                let want: Vec<_> = view.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(ov.scan_prefix(ROWS, prefix).unwrap(), want);
            }
            for k in 0u8..24 {
                prop_assert_eq!(ov.get(ROWS, &key(k)).unwrap(), view.get(&key(k)).cloned());
            }
        }
    }
}

#[test]
fn a_restore_marks_what_to_derive_and_the_marks_outlive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let res = resources();
    let path = dir.path().join("d");
    let record = |offset: i64, key: &[u8], value: &[u8]| {
        let mut b = WriteBuffer::new();
        b.put(ROWS, key, value);
        let (key, _) = b.changelog_records().next().unwrap();
        ChangelogRecord {
            offset,
            key,
            value: Some(value.to_vec()),
        }
    };
    // A row `G/n` belongs to group G.
    let group = |_: StoreId, key: &[u8]| key.split(|b| *b == b'/').next().map(<[u8]>::to_vec);
    {
        let (mut store, _) = TaskStore::open(&path, changelog(2), SPECS, &res).unwrap();
        store
            .restore_batch_marking(
                &[record(0, b"A/1", b"a"), record(1, b"B/1", b"b")],
                2,
                group,
            )
            .unwrap();
        // The same group marked again by a later batch is one mark.
        store
            .restore_batch_marking(&[record(2, b"A/2", b"c")], 3, group)
            .unwrap();
        assert_eq!(
            store.pending_derivations(10).unwrap(),
            [b"A".to_vec(), b"B".to_vec()]
        );
        assert_eq!(store.pending_derivations(1).unwrap(), [b"A".to_vec()]);
    }
    // A crash (or the task moving away) before deriving: the marks remain.
    let (mut store, outcome) = TaskStore::open(&path, changelog(2), SPECS, &res).unwrap();
    assert_eq!(outcome, OpenOutcome::Resumed { next_offset: 3 });
    let pending = store.pending_derivations(10).unwrap();
    assert_eq!(pending.len(), 2);
    // A failing derivation leaves the marks and writes nothing.
    let err = store
        .derive(&pending[..1], |_| {
            Err::<(), StateError>(StateError::UnknownStore {
                path: dir.path().to_path_buf(),
                id: 9,
            })
        })
        .unwrap_err();
    assert!(
        matches!(err, StateError::UnknownStore { id: 9, .. }),
        "{err}"
    );
    assert_eq!(store.pending_derivations(10).unwrap().len(), 2);
    // Deriving group A reads its rows and writes the count; its mark goes.
    store
        .derive(&pending[..1], |ov| -> Result<(), StateError> {
            let mut ov = ov;
            let n = ov.scan_prefix(ROWS, b"A/").unwrap().len();
            ov.put(COUNTERS, b"A", n.to_string().as_bytes())
        })
        .unwrap();
    assert_eq!(
        store.get(COUNTERS, b"A").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(store.pending_derivations(10).unwrap(), [b"B".to_vec()]);
    assert_eq!(
        store.checkpoint().next_offset,
        3,
        "the checkpoint does not move"
    );
}
