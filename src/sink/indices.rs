//! The indices the sink writes, installed idempotently at startup from the
//! index templates in `search/templates/` (compiled in):
//!
//! | write alias        | other alias               | concrete index          |
//! |--------------------|---------------------------|-------------------------|
//! | `outbound_details` | `latestoutboundreport_es` | `outbound_details-v1`   |
//! | `units_daily`      |                           | `units_daily-v1`        |
//! | `courier_daily`    |                           | `courier_daily-v1`      |
//! | `warehouse_daily`  |                           | `warehouse_daily-v1`    |
//!
//! (all names prefixed by `sink.index_prefix`; `-v1` is `sink.index_version`).
//! Each template is put under the write alias' name for `<alias>-v*`, so an
//! index created by hand for a later version gets the same mapping. The
//! concrete index is created with its aliases only while the write alias does
//! not exist; once it exists it is left alone (moving aliases to a new index
//! version after replaying into it is an operator's decision).

use anyhow::Context;
use elasticsearch::indices::{
    IndicesCreateParts, IndicesExistsAliasParts, IndicesPutIndexTemplateParts,
};
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};

use outbound_pipeline::rollup::RollupName;

use super::config::SinkConfig;

/// The template files, by write alias (without prefix).
pub const TEMPLATES: [(&str, &str); 4] = [
    (
        "outbound_details",
        include_str!("../../search/templates/outbound_details.json"),
    ),
    (
        "units_daily",
        include_str!("../../search/templates/units_daily.json"),
    ),
    (
        "courier_daily",
        include_str!("../../search/templates/courier_daily.json"),
    ),
    (
        "warehouse_daily",
        include_str!("../../search/templates/warehouse_daily.json"),
    ),
];

/// One index the sink owns.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    /// Write alias (also the template's name).
    pub alias: String,
    /// Further aliases on the same index.
    pub read_aliases: Vec<String>,
    /// The concrete index.
    pub index: String,
    /// The composable index template body.
    pub template: Value,
}

/// The indices of this configuration, templates adapted to its names,
/// shard counts and replicas.
pub fn index_specs(config: &SinkConfig) -> anyhow::Result<Vec<IndexSpec>> {
    let file = |name: &str| -> anyhow::Result<Value> {
        let text = TEMPLATES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .with_context(|| format!("no index template file for {name}"))?;
        serde_json::from_str(text)
            .with_context(|| format!("search/templates/{name}.json is not JSON"))
    };
    let mut specs = vec![(
        config.details_alias(),
        vec![config.details_legacy_alias()],
        file("outbound_details")?,
    )];
    for r in RollupName::ALL {
        specs.push((config.rollup_alias(r), Vec::new(), file(r.as_str())?));
    }
    Ok(specs
        .into_iter()
        .map(|(alias, read_aliases, mut template)| {
            template["index_patterns"] = json!([format!("{alias}-v*")]);
            template["_meta"]["aliases"] = json!(std::iter::once(&alias)
                .chain(&read_aliases)
                .collect::<Vec<_>>());
            let settings = &mut template["template"]["settings"];
            settings["number_of_shards"] = json!(config.number_of_shards);
            settings["number_of_replicas"] = json!(config.number_of_replicas);
            IndexSpec {
                index: config.index_of(&alias),
                alias,
                read_aliases,
                template,
            }
        })
        .collect())
}

/// Puts every template and creates every missing index with its aliases.
/// Safe to run concurrently from several instances.
pub async fn install(client: &Elasticsearch, specs: &[IndexSpec]) -> anyhow::Result<()> {
    for spec in specs {
        let response = client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(&spec.alias))
            .body(&spec.template)
            .send()
            .await
            .with_context(|| format!("putting index template {}", spec.alias))?;
        let status = response.status_code().as_u16();
        if !(200..300).contains(&status) {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!(
                "putting index template {}: HTTP {status}: {body}",
                spec.alias
            );
        }
        let exists = client
            .indices()
            .exists_alias(IndicesExistsAliasParts::Name(&[spec.alias.as_str()]))
            .send()
            .await
            .with_context(|| format!("checking alias {}", spec.alias))?
            .status_code()
            .as_u16();
        if exists == 200 {
            continue;
        }
        let mut aliases = serde_json::Map::new();
        aliases.insert(spec.alias.clone(), json!({"is_write_index": true}));
        for a in &spec.read_aliases {
            aliases.insert(a.clone(), json!({}));
        }
        let response = client
            .indices()
            .create(IndicesCreateParts::Index(&spec.index))
            .body(json!({ "aliases": aliases }))
            .send()
            .await
            .with_context(|| format!("creating index {}", spec.index))?;
        let status = response.status_code().as_u16();
        if (200..300).contains(&status) {
            tracing::info!(index = %spec.index, alias = %spec.alias, "created index");
            continue;
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if body["error"]["type"] == "resource_already_exists_exception" {
            // Another instance won the race, or the index exists without
            // its alias: add the aliases.
            let mut actions = vec![
                json!({"add": {"index": spec.index, "alias": spec.alias, "is_write_index": true}}),
            ];
            for a in &spec.read_aliases {
                actions.push(json!({"add": {"index": spec.index, "alias": a}}));
            }
            let response = client
                .indices()
                .update_aliases()
                .body(json!({ "actions": actions }))
                .send()
                .await
                .with_context(|| format!("adding aliases to {}", spec.index))?;
            let status = response.status_code().as_u16();
            if !(200..300).contains(&status) {
                let body = response.text().await.unwrap_or_default();
                anyhow::bail!(
                    "adding aliases to index {}: HTTP {status}: {body}",
                    spec.index
                );
            }
            continue;
        }
        anyhow::bail!(
            "creating index {} with alias {}: HTTP {status}: {body} (an index named like the alias \
             may exist; delete it or set sink.index_prefix)",
            spec.index,
            spec.alias
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_follow_the_configured_names() {
        let config = SinkConfig {
            index_prefix: "it-".into(),
            index_version: 3,
            ..SinkConfig::default()
        };
        let specs = index_specs(&config).unwrap();
        let names: Vec<(&str, &str)> = specs
            .iter()
            .map(|s| (s.alias.as_str(), s.index.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("it-outbound_details", "it-outbound_details-v3"),
                ("it-units_daily", "it-units_daily-v3"),
                ("it-courier_daily", "it-courier_daily-v3"),
                ("it-warehouse_daily", "it-warehouse_daily-v3"),
            ]
        );
        assert_eq!(specs[0].read_aliases, ["it-latestoutboundreport_es"]);
        assert_eq!(
            specs[1].template["index_patterns"],
            json!(["it-units_daily-v*"])
        );
    }

    #[test]
    fn mappings_type_every_field_the_dashboards_use() {
        let specs = index_specs(&SinkConfig::default()).unwrap();
        let props = |i: usize| specs[i].template["template"]["mappings"]["properties"].clone();
        assert_eq!(props(1)["day"]["type"], "date");
        assert_eq!(props(1)["units"]["type"], "long");
        assert_eq!(props(2)["courier"]["type"], "keyword");
        assert_eq!(props(3)["shipping_cost"]["type"], "scaled_float");
        assert_eq!(props(3)["shipping_cost"]["scaling_factor"], 100);
        assert_eq!(
            props(0)["order"]["properties"]["order_value"]["type"],
            "scaled_float"
        );
        assert_eq!(props(0)["item"]["properties"]["id"]["type"], "keyword");
    }
}
