//! The report end to end (issue #5): a generated history of several thousand
//! Debezium changes flows through `outbound run` with its in-process sink into
//! the local search node, and the four indices then equal the pipeline core's
//! expected result document for document — every expected detail and rollup
//! indexed under its id with exactly the expected `_source`, nothing else.
//!
//! Then across processes: a second `outbound run` with the same app id and
//! index prefix but an empty state directory (a full restore from the
//! changelogs), its sink replaying both output topics from offset 0, leaves
//! every document as it was — same content, same `_version`.
//!
//! Needs the local stack (`stack/stack.sh up kafka opensearch`).

mod common;
mod sink_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::history::{generate, History};
use common::{
    create_source_topics, diff, expected, produce, producer, unique, wait_for, Outbound, RunSpec,
};
use outbound::engine::Stage;
use serde_json::{json, Value};
use sink_support::{es, reset_group_to_beginning, search_url, wait_committed_to_end, IndexCleanup};

const PARTITIONS: i32 = 4;
const DEADLINE: Duration = Duration::from_secs(300);

/// The detail alias and the three rollup aliases (without the index prefix);
/// a rollup's alias is its name, the `<rollup>/` prefix of its record keys.
const DETAILS: &str = "outbound_details";
const ROLLUPS: [&str; 3] = ["units_daily", "courier_daily", "warehouse_daily"];

/// alias (without prefix) → document id → `_source`.
type Indexed = BTreeMap<String, BTreeMap<String, Value>>;

/// Documents as read from one alias: id → (`_version`, `_source`).
type Docs = BTreeMap<String, (i64, Value)>;

/// The pipeline core's expected outputs, mapped to the indices as the sink
/// maps records: a detail key is its `_id` in the detail alias; a rollup key
/// `<rollup>/<id>` is `_id` `<id>` in the alias `<rollup>`.
fn expected_indices(history: &History, prefix: &str) -> Indexed {
    let (details, rollups) = expected(history, prefix);
    let mut out: Indexed = std::iter::once(DETAILS)
        .chain(ROLLUPS)
        .map(|a| (a.to_owned(), BTreeMap::new()))
        .collect();
    out.insert(DETAILS.to_owned(), details);
    for (key, doc) in rollups {
        let (rollup, id) = key
            .split_once('/')
            .unwrap_or_else(|| panic!("rollup key {key:?} is not <rollup>/<id>"));
        out.get_mut(rollup)
            .unwrap_or_else(|| panic!("rollup key {key:?} names no known rollup"))
            .insert(id.to_owned(), doc);
    }
    out
}

/// Every document of an alias, id → (`_version`, `_source`), after a refresh.
/// Errors (an alias the sink has not created yet) are returned for polling.
fn indexed_docs(alias: &str) -> Result<Docs, String> {
    let (status, body) = es("POST", &format!("/{alias}/_refresh"), None);
    if status != 200 {
        return Err(format!("refresh {alias}: HTTP {status}: {body}"));
    }
    let (status, body) = es(
        "POST",
        &format!("/{alias}/_search"),
        Some(json!({
            "size": 10_000,
            "version": true,
            "track_total_hits": true,
            "query": {"match_all": {}}
        })),
    );
    if status != 200 {
        return Err(format!("search {alias}: HTTP {status}: {body}"));
    }
    let hits = body["hits"]["hits"]
        .as_array()
        .ok_or_else(|| format!("search {alias}: no hits in {body}"))?;
    let total = body["hits"]["total"]["value"].as_u64().unwrap_or(0);
    assert_eq!(
        total,
        hits.len() as u64,
        "{alias} holds more documents than one page: grow the page or shrink the history"
    );
    hits.iter()
        .map(|h| {
            let id = h["_id"].as_str().ok_or("hit without _id")?.to_owned();
            let version = h["_version"].as_i64().ok_or("hit without _version")?;
            Ok((id, (version, h["_source"].clone())))
        })
        .collect()
}

/// The documents of all four aliases (with their versions).
fn read_indices(index_prefix: &str) -> Result<BTreeMap<String, Docs>, String> {
    std::iter::once(DETAILS)
        .chain(ROLLUPS)
        .map(|a| Ok((a.to_owned(), indexed_docs(&format!("{index_prefix}{a}"))?)))
        .collect()
}

/// Describes how the indices differ from the expected result, alias by alias
/// (missing, extra and differing documents, with examples).
fn compare(want: &Indexed, got: &BTreeMap<String, Docs>) -> Result<(), String> {
    let problems: Vec<String> = want
        .iter()
        .filter_map(|(alias, want)| {
            let got: BTreeMap<String, Value> = got
                .get(alias)
                .map(|docs| {
                    docs.iter()
                        .map(|(id, (_, source))| (id.clone(), source.clone()))
                        .collect()
                })
                .unwrap_or_default();
            diff(want, &got).err().map(|e| {
                format!(
                    "{alias} ({} expected, {} indexed): {e}",
                    want.len(),
                    got.len()
                )
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The changelogs whose restore completed, and the records they restored.
fn restores_completed(log: &str) -> (BTreeSet<&str>, u64) {
    let mut changelogs = BTreeSet::new();
    let mut records = 0;
    for line in log.lines().filter(|l| l.contains("restore complete")) {
        let field = |name: &str| {
            line.split(&format!("{name}="))
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
        };
        if let Some(changelog) = field("changelog") {
            changelogs.insert(changelog);
        }
        records += field("restored")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (changelogs, records)
}

/// Polls until the indices equal `want`; fails at once if `outbound` dies.
fn wait_indices_equal(
    what: &str,
    want: &Indexed,
    index_prefix: &str,
    outbound: &mut Outbound,
) -> BTreeMap<String, Docs> {
    wait_for(what, DEADLINE, || {
        assert!(
            outbound.is_running(),
            "outbound exited on its own; log:\n{}",
            outbound.log_tail(40)
        );
        read_indices(index_prefix).and_then(|got| {
            compare(want, &got)
                .map(|()| got)
                .map_err(|e| format!("{e}\nlast log lines:\n{}", outbound.log_tail(5)))
        })
    })
}

/// One instance of the app `prefix` (app id and topic prefix alike).
fn spec<'a>(prefix: &'a str, state_dir: &'a Path, log_dir: &'a Path) -> RunSpec<'a> {
    RunSpec {
        app_id: prefix,
        instance: "a",
        prefix,
        state_dir,
        log_dir,
        partitions: PARTITIONS,
    }
}

#[test]
fn indices_equal_the_pipeline_core_after_run_and_sink_and_across_processes() {
    let prefix = unique("report-e2e");
    let index_prefix = format!("{prefix}-");
    let _cleanup = IndexCleanup(index_prefix.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    create_source_topics(&prefix, 2);
    let history = generate(5, &prefix, 600, 6_000);
    let want = expected_indices(&history, &prefix);
    assert!(
        want[DETAILS].len() > 100 && ROLLUPS.iter().all(|r| !want[*r].is_empty()),
        "the history must exercise the join and every rollup: {:?}",
        want.iter().map(|(a, d)| (a, d.len())).collect::<Vec<_>>()
    );
    produce(&producer(), &prefix, &history.records);

    let url = search_url();
    let env = [
        ("OUTBOUND_SINK__IN_RUN", "true"),
        ("OUTBOUND_SINK__URL", url.as_str()),
        ("OUTBOUND_SINK__INDEX_PREFIX", index_prefix.as_str()),
    ];
    let (state_first, state_second) = (dir.path().join("state-1"), dir.path().join("state-2"));

    // One process: engine and sink.
    let mut first = Outbound::start_with_env(&spec(&prefix, &state_first, dir.path()), 0, &env);
    let indexed = wait_indices_equal(
        "the indices to equal the pipeline core",
        &want,
        &index_prefix,
        &mut first,
    );
    first.stop_cleanly();

    // A second process, empty state directory, the sink replaying everything.
    let sink_group = format!("{prefix}-sink");
    let outputs = [format!("{prefix}-details"), format!("{prefix}-rollups")];
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    reset_group_to_beginning(&sink_group, &outputs, PARTITIONS);
    let mut second = Outbound::start_with_env(&spec(&prefix, &state_second, dir.path()), 1, &env);
    // Every stage's changelog of every partition restored from its start…
    let changelogs = Stage::ALL.len() * PARTITIONS as usize;
    wait_for("the full restore to complete", DEADLINE, || {
        assert!(
            second.is_running(),
            "the second outbound exited on its own; log:\n{}",
            second.log_tail(40)
        );
        let log = second.log_text();
        match restores_completed(&log) {
            (done, records) if done.len() == changelogs && records > 1000 => Ok(()),
            (done, records) => Err(format!(
                "{} of {changelogs} changelogs restored ({records} records)",
                done.len()
            )),
        }
    });
    // …and then the sink committed to the end of both output topics (read
    // now: whatever the restored engine might have written counts).
    wait_committed_to_end(&sink_group, &outputs, PARTITIONS);
    let replayed = read_indices(&index_prefix).expect("indices readable");
    if let Err(e) = compare(&want, &replayed) {
        panic!(
            "after a full restore and a sink replay the indices differ from the pipeline core:\n{e}\nlog:\n{}",
            second.log_tail(20)
        );
    }
    for (alias, docs) in &indexed {
        let changed: Vec<(&String, i64, i64)> = docs
            .iter()
            .filter_map(|(id, (v, _))| {
                let now = replayed[alias].get(id).map_or(-1, |(v, _)| *v);
                (now != *v).then_some((id, *v, now))
            })
            .collect();
        assert!(
            changed.is_empty(),
            "{alias}: {} documents changed _version across processes (id, before, after), e.g. {:?}",
            changed.len(),
            &changed[..changed.len().min(3)]
        );
    }
    second.stop_cleanly();
}
