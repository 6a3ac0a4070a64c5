//! The Kibana saved objects (`kibana/outbound.ndjson`) against the live
//! search node: every object's references resolve; every field a
//! visualization aggregates on exists in the mapping the sink installs, with
//! an aggregatable type of the right kind; the aggregation each visualization
//! performs (as Kibana builds it from the visState: date_histogram → terms →
//! sum), sent as a query to the node, returns the expected numbers for
//! seed-like rollup documents; the saved search's columns are all mapped.
//!
//! Needs `stack/stack.sh up opensearch`.
#![allow(clippy::type_complexity, clippy::field_reassign_with_default)] // test code: tuples and configs built field by field read best here

mod sink_support;

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use outbound::pipeline::docs::rollup_doc;
use outbound::pipeline::rollup::{Measures, RollupKey};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sink_support::*;

fn saved_objects() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kibana/outbound.ndjson");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad line {l}: {e}", path.display()))
        })
        .collect()
}

/// Seed-like rollup documents: the seed order (2020-02-04, warehouse `wms`,
/// electronics, FETCHR, cost 24.5, value Rs 52755) and a few more keys.
fn seed_rollups() -> Vec<(RollupKey, Measures)> {
    let day = |d| NaiveDate::from_ymd_opt(2020, 2, d).unwrap();
    let units = |d, wh: &str, t: Option<&str>, units, items| {
        (
            RollupKey::UnitsDaily {
                day: day(d),
                warehouse: wh.into(),
                item_type: t.map(Into::into),
            },
            Measures {
                units,
                items,
                ..Measures::default()
            },
        )
    };
    let courier = |d, c: Option<&str>, orders, shipments, cost| {
        (
            RollupKey::CourierDaily {
                day: day(d),
                courier: c.map(Into::into),
            },
            Measures {
                orders,
                shipments,
                items: orders,
                shipping_cost: cost,
                ..Measures::default()
            },
        )
    };
    let warehouse = |d, wh: &str, cost, value, units| {
        (
            RollupKey::WarehouseDaily {
                day: day(d),
                warehouse: wh.into(),
            },
            Measures {
                shipping_cost: cost,
                order_value: value,
                units,
                items: 1,
                ..Measures::default()
            },
        )
    };
    vec![
        units(4, "wms", Some("electronics"), 1, 1),
        units(4, "wms", Some("phone"), 3, 2),
        units(4, "wms2", Some("electronics"), 5, 1),
        units(5, "wms", Some("electronics"), 2, 2),
        units(5, "wms2", None, 4, 1),
        courier(4, Some("FETCHR"), 1, 1, Decimal::new(245, 1)),
        courier(4, Some("DHL"), 2, 1, Decimal::new(1001, 2)),
        courier(5, Some("FETCHR"), 3, 2, Decimal::new(7525, 2)),
        courier(5, None, 1, 1, Decimal::new(5, 0)),
        warehouse(4, "wms", Decimal::new(245, 1), Decimal::new(52755, 0), 4),
        warehouse(4, "wms2", Decimal::new(1001, 2), Decimal::new(99, 0), 5),
        warehouse(5, "wms", Decimal::new(7525, 2), Decimal::new(123450, 2), 2),
    ]
}

fn refs_resolve(objects: &[Value]) {
    let ids: BTreeSet<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().to_owned(),
                o["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for o in objects {
        for r in o["references"].as_array().unwrap() {
            let key = (
                r["type"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            );
            assert!(ids.contains(&key), "{} references missing {key:?}", o["id"]);
        }
    }
    let dashboard = objects
        .iter()
        .find(|o| o["type"] == "dashboard")
        .expect("a dashboard");
    let panels: Vec<Value> =
        serde_json::from_str(dashboard["attributes"]["panelsJSON"].as_str().unwrap()).unwrap();
    let names: BTreeSet<&str> = dashboard["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for p in &panels {
        assert!(
            names.contains(p["panelRefName"].as_str().unwrap()),
            "panel without reference: {p}"
        );
    }
    let kinds: Vec<&str> = dashboard["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "visualization").count(),
        3,
        "three visualizations on the dashboard"
    );
    assert!(
        kinds.contains(&"search"),
        "the saved search on the dashboard"
    );
}

/// Field → (type, aggregatable) from the live mapping.
fn field_caps(alias: &str, fields: &[&str]) -> BTreeMap<String, (String, bool)> {
    let (status, body) = es(
        "GET",
        &format!("/{alias}/_field_caps?fields={}", fields.join(",")),
        None,
    );
    assert_eq!(status, 200, "field_caps {alias}: {body}");
    body["fields"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(name, types)| {
            let (ty, caps) = types.as_object()?.iter().next()?;
            Some((
                name.clone(),
                (ty.clone(), caps["aggregatable"].as_bool().unwrap_or(false)),
            ))
        })
        .collect()
}

/// The query Kibana runs for a vislib visualization: bucket aggs nested in
/// order, the metric (id "1") at every level (terms order by it).
fn query_of(aggs: &[Value]) -> Value {
    let metric = aggs
        .iter()
        .find(|a| a["schema"] == "metric")
        .expect("a metric");
    assert_eq!(metric["type"], "sum");
    let metric_dsl = json!({"1": {"sum": {"field": metric["params"]["field"]}}});
    let buckets: Vec<&Value> = aggs.iter().filter(|a| a["schema"] != "metric").collect();
    let mut inner = metric_dsl.clone();
    for b in buckets.iter().rev() {
        let p = &b["params"];
        let dsl = match b["type"].as_str().unwrap() {
            "date_histogram" => {
                assert_eq!(p["interval"], "d", "daily buckets");
                json!({"date_histogram": {"field": p["field"], "calendar_interval": "1d", "min_doc_count": p["min_doc_count"], "format": "yyyy-MM-dd"}})
            }
            "terms" => {
                json!({"terms": {"field": p["field"], "size": p["size"], "order": {p["orderBy"].as_str().unwrap(): p["order"]}}})
            }
            other => panic!("unexpected bucket agg {other}"),
        };
        let mut dsl = dsl;
        dsl["aggs"] = inner;
        let mut wrapped = metric_dsl.clone();
        wrapped[b["id"].as_str().unwrap()] = dsl;
        inner = wrapped;
    }
    json!({"size": 0, "aggs": inner})
}

/// Flattens the response into (bucket keys…) → metric.
fn flatten(
    aggs: &Value,
    ids: &[String],
    prefix: Vec<String>,
    out: &mut BTreeMap<Vec<String>, i64>,
) {
    let Some((id, rest)) = ids.split_first() else {
        // Sums of scaled_float come back as doubles: compare in hundredths.
        let v = aggs["1"]["value"].as_f64().unwrap();
        out.insert(prefix, (v * 100.0).round() as i64);
        return;
    };
    for b in aggs[id]["buckets"].as_array().unwrap() {
        let key = b["key_as_string"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| b["key"].as_str().unwrap().to_owned());
        let mut p = prefix.clone();
        p.push(key);
        flatten(b, rest, p, out);
    }
}

#[test]
fn kibana_visualizations_aggregate_live_fields_to_the_expected_numbers() {
    let objects = saved_objects();
    refs_resolve(&objects);
    let token = run_token("sink-kibana");
    let config = test_config(&token);
    let _cleanup = IndexCleanup(config.sink.prefix().to_owned());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(outbound::sink::install::install_indices(&config))
        .expect("install indices");
    // Twice: installing is idempotent.
    rt.block_on(outbound::sink::install::install_indices(&config))
        .expect("install indices again");

    // Index the seed-like rollups through the write aliases.
    let rollups = seed_rollups();
    let mut bulk = String::new();
    for (i, (key, m)) in rollups.iter().enumerate() {
        let alias = format!("{}{}", config.sink.prefix(), key.name().as_str());
        bulk.push_str(&json!({"index": {"_index": alias, "_id": key.doc_id(), "version": i, "version_type": "external_gte"}}).to_string());
        bulk.push('\n');
        bulk.push_str(&serde_json::to_string(&rollup_doc(key, m)).unwrap());
        bulk.push('\n');
    }
    let resp = agent()
        .post(format!(
            "{}/_bulk?refresh=true&require_alias=true",
            search_url()
        ))
        .header("Content-Type", "application/x-ndjson")
        .send(bulk)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Data view title (an alias) → this run's alias.
    let data_views: BTreeMap<String, String> = objects
        .iter()
        .filter(|o| o["type"] == "index-pattern")
        .map(|o| {
            let title = o["attributes"]["title"].as_str().unwrap();
            (
                o["id"].as_str().unwrap().to_owned(),
                format!("{}{title}", config.sink.prefix()),
            )
        })
        .collect();

    let mut checked = 0;
    for vis in objects.iter().filter(|o| o["type"] == "visualization") {
        let title = vis["attributes"]["title"].as_str().unwrap();
        let state: Value =
            serde_json::from_str(vis["attributes"]["visState"].as_str().unwrap()).unwrap();
        let aggs = state["aggs"].as_array().unwrap();
        let dv = vis["references"][0]["id"].as_str().unwrap();
        let alias = &data_views[dv];
        let fields: Vec<&str> = aggs
            .iter()
            .filter_map(|a| a["params"]["field"].as_str())
            .collect();
        let caps = field_caps(alias, &fields);
        for a in aggs {
            let Some(f) = a["params"]["field"].as_str() else {
                continue;
            };
            let (ty, aggregatable) = caps
                .get(f)
                .unwrap_or_else(|| panic!("{title}: field {f} not in the mapping of {alias}"));
            assert!(aggregatable, "{title}: {f} ({ty}) is not aggregatable");
            let ok = match a["type"].as_str().unwrap() {
                "sum" => matches!(
                    ty.as_str(),
                    "long" | "integer" | "scaled_float" | "double" | "float"
                ),
                "date_histogram" => ty == "date",
                "terms" => ty == "keyword",
                _ => false,
            };
            assert!(ok, "{title}: {} on {f} of type {ty}", a["type"]);
        }

        // Run it, flatten, and compare with the sums computed here.
        let (status, res) = es("POST", &format!("/{alias}/_search"), Some(query_of(aggs)));
        assert_eq!(status, 200, "{title}: {res}");
        let bucket_ids: Vec<String> = aggs
            .iter()
            .filter(|a| a["schema"] != "metric")
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect();
        let mut got = BTreeMap::new();
        flatten(&res["aggregations"], &bucket_ids, Vec::new(), &mut got);

        let metric = aggs.iter().find(|a| a["schema"] == "metric").unwrap()["params"]["field"]
            .as_str()
            .unwrap();
        let mut want: BTreeMap<Vec<String>, i64> = BTreeMap::new();
        for (key, m) in &rollups {
            if data_views[dv] != format!("{}{}", config.sink.prefix(), key.name().as_str()) {
                continue;
            }
            let doc = serde_json::to_value(rollup_doc(key, m)).unwrap();
            let dims: Vec<String> = aggs
                .iter()
                .filter(|a| a["schema"] != "metric")
                .map(|a| {
                    let f = a["params"]["field"].as_str().unwrap();
                    // keyword null_value: a null dimension aggregates as "(none)".
                    doc[f].as_str().unwrap_or("(none)").to_owned()
                })
                .collect();
            let v: Decimal = match &doc[metric] {
                Value::String(s) => s.parse().unwrap(),
                Value::Number(n) => Decimal::from(n.as_i64().unwrap()),
                other => panic!("{metric} = {other}"),
            };
            *want.entry(dims).or_default() +=
                (v * Decimal::from(100)).round().try_into().unwrap_or(0i64);
        }
        assert!(!want.is_empty(), "{title}: no seed documents");
        assert_eq!(got, want, "{title}: the visualization's aggregation");
        checked += 1;
    }
    assert_eq!(checked, 3, "one visualization per business question");

    // The seed order's own numbers, spelled out.
    let (_, res) = es(
        "POST",
        &format!("/{}warehouse_daily/_search", config.sink.prefix()),
        Some(
            json!({"size": 0, "query": {"term": {"warehouse": "wms"}}, "aggs": {"d": {"date_histogram": {"field": "day", "calendar_interval": "1d", "format": "yyyy-MM-dd"}, "aggs": {"c": {"sum": {"field": "shipping_cost"}}, "v": {"sum": {"field": "order_value"}}}}}}),
        ),
    );
    let first = &res["aggregations"]["d"]["buckets"][0];
    assert_eq!(first["key_as_string"], "2020-02-04");
    assert_eq!(
        (first["c"]["value"].as_f64().unwrap() * 100.0).round() as i64,
        2450
    );
    assert_eq!(
        (first["v"]["value"].as_f64().unwrap() * 100.0).round() as i64,
        5_275_500
    );

    // The saved search's CSV columns are all mapped on the detail index.
    let search = objects
        .iter()
        .find(|o| o["type"] == "search")
        .expect("a saved search");
    let columns: Vec<&str> = search["attributes"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let caps = field_caps(
        &config.sink.details_legacy_alias().expect("legacy alias"),
        &columns,
    );
    for c in columns {
        assert!(
            caps.contains_key(c),
            "saved search column {c} is not mapped on the detail index"
        );
    }
    let sort_field = search["attributes"]["sort"][0][0].as_str().unwrap();
    assert!(
        caps.get(sort_field).is_some_and(|(_, agg)| *agg),
        "sort field {sort_field} is sortable"
    );
}
