//! The indices the sink writes and their names, from the index templates in
//! `search/templates/` (compiled in). With `sink.index_prefix` = P:
//!
//! | index role    | read aliases (what readers query)           | write alias              |
//! |---------------|---------------------------------------------|--------------------------|
//! | details       | `P outbound_details`, `P latestoutboundreport_es` | `P outbound_details-write` |
//! | units_daily   | `P units_daily`                             | `P units_daily-write`    |
//! | courier_daily | `P courier_daily`                           | `P courier_daily-write`  |
//! | warehouse_daily | `P warehouse_daily`                       | `P warehouse_daily-write`|
//!
//! Concrete indices are `<read alias>-v<index_version>-g<generation>`; each
//! template is put under the read alias' name for `<read alias>-v*`, so every
//! generation gets the current mapping. Reads and writes go through separate
//! aliases so that `outbound rebuild-indices` can move the writers to a new
//! generation first, let it catch up, and only then move every reader in one
//! `_aliases` call (`rebuild.rs`). A rebuild fills its generation through
//! `<read alias>-rebuild`.

use anyhow::Context;
use serde_json::{json, Value};

use outbound_pipeline::rollup::RollupName;

use crate::config::Config;

/// The template files, by template name (the read alias without prefix).
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

/// Which of the four indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexRole {
    Details,
    Rollup(RollupName),
}

impl IndexRole {
    pub const ALL: [IndexRole; 4] = [
        IndexRole::Details,
        IndexRole::Rollup(RollupName::UnitsDaily),
        IndexRole::Rollup(RollupName::CourierDaily),
        IndexRole::Rollup(RollupName::WarehouseDaily),
    ];

    /// `details`, `units_daily`, …: for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            IndexRole::Details => "details",
            IndexRole::Rollup(r) => r.as_str(),
        }
    }

    /// The template file's name.
    pub fn template_file(self) -> &'static str {
        match self {
            IndexRole::Details => "outbound_details",
            IndexRole::Rollup(r) => r.as_str(),
        }
    }

    /// The suffix of the output topic that feeds it (`config.topic(..)`).
    pub fn output(self) -> &'static str {
        match self {
            IndexRole::Details => "details",
            IndexRole::Rollup(_) => "rollups",
        }
    }

    /// The read alias without prefix (`sink.details_alias` for details).
    pub fn base_alias(self, details_alias: &str) -> String {
        match self {
            IndexRole::Details => details_alias.to_owned(),
            IndexRole::Rollup(r) => r.as_str().to_owned(),
        }
    }
}

/// One index the sink owns, named for one configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub role: IndexRole,
    /// The main read alias; also the template's name and the stem of the
    /// concrete index names.
    pub alias: String,
    /// Every read alias: the main one first, then e.g. the legacy alias.
    pub read_aliases: Vec<String>,
    /// The alias the sink writes through.
    pub write_alias: String,
    /// The alias a rebuild fills its new generation through.
    pub rebuild_alias: String,
    /// The output topic feeding the index.
    pub topic: String,
    pub index_version: u32,
    /// The composable index template body.
    pub template: Value,
}

impl IndexSpec {
    /// The concrete index of a generation.
    pub fn index_name(&self, generation: u32) -> String {
        format!("{}-v{}-g{generation}", self.alias, self.index_version)
    }

    /// Every concrete index of this alias, whatever its version or generation.
    pub fn index_pattern(&self) -> String {
        format!("{}-v*", self.alias)
    }

    /// The config key that names a read alias (for error messages).
    pub fn key_of(&self, read_alias: &str) -> &'static str {
        if read_alias == self.alias {
            "sink.index_prefix"
        } else {
            "sink.details_legacy_alias"
        }
    }
}

/// The indices of this configuration, templates adapted to its names,
/// shard counts, replicas and delete retention.
pub fn index_specs(config: &Config) -> anyhow::Result<Vec<IndexSpec>> {
    let sink = &config.sink;
    let file = |name: &str| -> anyhow::Result<Value> {
        let text = TEMPLATES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .with_context(|| format!("no index template file for {name}"))?;
        serde_json::from_str(text)
            .with_context(|| format!("search/templates/{name}.json is not JSON"))
    };
    IndexRole::ALL
        .iter()
        .map(|&role| {
            let alias = format!("{}{}", sink.prefix(), role.base_alias(&sink.details_alias));
            let mut read_aliases = vec![alias.clone()];
            if role == IndexRole::Details {
                read_aliases.extend(sink.details_legacy_alias());
            }
            let mut template = file(role.template_file())?;
            template["index_patterns"] = json!([format!("{alias}-v*")]);
            template["_meta"]["aliases"] = json!(read_aliases);
            template["_meta"]["write_alias"] = json!(format!("{alias}-write"));
            let settings = &mut template["template"]["settings"];
            settings["number_of_shards"] = json!(sink.number_of_shards);
            settings["number_of_replicas"] = json!(sink.number_of_replicas);
            settings["index.gc_deletes"] = json!(format!("{}s", sink.gc_deletes_secs()));
            Ok(IndexSpec {
                role,
                write_alias: format!("{alias}-write"),
                rebuild_alias: format!("{alias}-rebuild"),
                topic: config.topic(role.output()),
                index_version: sink.index_version,
                read_aliases,
                alias,
                template,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: &str, version: u32) -> Config {
        let mut c = Config {
            app_id: "app".into(),
            ..Config::default()
        };
        c.sink.index_prefix = Some(prefix.into());
        c.sink.index_version = version;
        c
    }

    #[test]
    fn specs_follow_the_configured_names() {
        let specs = index_specs(&config("it-", 3)).unwrap();
        let names: Vec<(&str, &str, String)> = specs
            .iter()
            .map(|s| (s.alias.as_str(), s.write_alias.as_str(), s.index_name(2)))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "it-outbound_details",
                    "it-outbound_details-write",
                    "it-outbound_details-v3-g2".into()
                ),
                (
                    "it-units_daily",
                    "it-units_daily-write",
                    "it-units_daily-v3-g2".into()
                ),
                (
                    "it-courier_daily",
                    "it-courier_daily-write",
                    "it-courier_daily-v3-g2".into()
                ),
                (
                    "it-warehouse_daily",
                    "it-warehouse_daily-write",
                    "it-warehouse_daily-v3-g2".into()
                ),
            ]
        );
        assert_eq!(
            specs[0].read_aliases,
            ["it-outbound_details", "it-latestoutboundreport_es"]
        );
        assert_eq!(specs[0].topic, "app-details");
        assert_eq!(specs[2].topic, "app-rollups");
        assert_eq!(specs[0].rebuild_alias, "it-outbound_details-rebuild");
        assert_eq!(
            specs[1].template["index_patterns"],
            json!(["it-units_daily-v*"])
        );
        assert_eq!(specs[1].key_of("it-units_daily"), "sink.index_prefix");
        assert_eq!(
            specs[0].key_of("it-latestoutboundreport_es"),
            "sink.details_legacy_alias"
        );
    }

    #[test]
    fn every_index_remembers_deletes_longer_than_the_sink_retries() {
        let c = config("", 1);
        for s in index_specs(&c).unwrap() {
            let gc = s.template["template"]["settings"]["index.gc_deletes"]
                .as_str()
                .unwrap()
                .trim_end_matches('s')
                .parse::<u64>()
                .unwrap();
            assert!(
                gc * 1000 >= 2 * c.sink.retry_window_ms,
                "{}: {gc}s",
                s.alias
            );
        }
    }

    #[test]
    fn mappings_type_every_field_the_dashboards_use() {
        let specs = index_specs(&config("", 1)).unwrap();
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
