//! The settings that shape the semantics: which topics carry which table, the
//! business time zone of `ship_day`, and where an item's warehouse comes from.

use chrono_tz::Tz;

use crate::model::SourceTable;

/// Where a table's change events come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSource {
    /// The MySQL database, the middle part of the topic name.
    pub database: String,
    pub table: String,
}

impl TableSource {
    fn new(database: &str, table: &str) -> Self {
        TableSource {
            database: database.to_owned(),
            table: table.to_owned(),
        }
    }
}

/// How an item's `warehouse` is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WarehouseRule {
    /// `wms_demo.warehouse_id` when present and non-empty, else the item row's
    /// `source.db` (each warehouse running its own WMS database). The default.
    #[default]
    ColumnElseSourceDb,
    /// Always the item row's `source.db`.
    SourceDb,
}

/// The pipeline's semantic settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Debezium's `topic.prefix`; topics are `<prefix>.<database>.<table>`.
    pub topic_prefix: String,
    pub orders: TableSource,
    pub items: TableSource,
    pub shipments: TableSource,
    /// Full topic names of further item tables, one per extra warehouse
    /// database (same columns as `wms_demo`).
    pub extra_item_topics: Vec<String>,
    /// The time zone in which a shipment's `created_at` gives its `ship_day`.
    pub business_tz: Tz,
    pub warehouse_rule: WarehouseRule,
}

impl Default for PipelineConfig {
    /// Matches the local stack: prefix `outbound`, tables as in `sql/`, UTC.
    fn default() -> Self {
        PipelineConfig {
            topic_prefix: "outbound".to_owned(),
            orders: TableSource::new("orders", "order_demo"),
            items: TableSource::new("wms", "wms_demo"),
            shipments: TableSource::new("logistics", "logistics_demo"),
            extra_item_topics: Vec::new(),
            business_tz: Tz::UTC,
            warehouse_rule: WarehouseRule::default(),
        }
    }
}

impl PipelineConfig {
    fn source(&self, table: SourceTable) -> &TableSource {
        match table {
            SourceTable::Orders => &self.orders,
            SourceTable::Items => &self.items,
            SourceTable::Shipments => &self.shipments,
        }
    }

    /// The main topic of a table, e.g. `outbound.orders.order_demo`.
    pub fn topic(&self, table: SourceTable) -> String {
        let s = self.source(table);
        format!("{}.{}.{}", self.topic_prefix, s.database, s.table)
    }

    /// Every source topic to subscribe to.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = SourceTable::ALL.iter().map(|t| self.topic(*t)).collect();
        topics.extend(self.extra_item_topics.iter().cloned());
        topics
    }

    /// Which table a topic carries, if it is one of ours.
    pub fn table_for_topic(&self, topic: &str) -> Option<SourceTable> {
        for table in SourceTable::ALL {
            let s = self.source(table);
            let matches = topic
                .strip_prefix(self.topic_prefix.as_str())
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|r| r.strip_prefix(s.database.as_str()))
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|r| r == s.table);
            if matches {
                return Some(table);
            }
        }
        self.extra_item_topics
            .iter()
            .any(|t| t == topic)
            .then_some(SourceTable::Items)
    }

    /// The database a topic's rows come from when the event has no `source`
    /// block: the middle part of `<prefix>.<database>.<table>`.
    pub fn database_of_topic<'t>(&self, topic: &'t str) -> &'t str {
        let mut parts = topic.rsplitn(3, '.');
        let _table = parts.next();
        parts.next().unwrap_or(topic)
    }

    /// The detail document `_id` of an item: its `id`, prefixed with
    /// `<db>:` when it comes from another warehouse database than the main
    /// one, since each database numbers its rows on its own.
    pub fn item_doc_id(&self, db: &str, id: &str) -> String {
        if db == self.items.database || db.is_empty() {
            id.to_owned()
        } else {
            format!("{db}:{id}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topics_match_the_local_stack() {
        let c = PipelineConfig::default();
        assert_eq!(
            c.topics(),
            vec![
                "outbound.orders.order_demo",
                "outbound.wms.wms_demo",
                "outbound.logistics.logistics_demo"
            ]
        );
        assert_eq!(
            c.table_for_topic("outbound.orders.order_demo"),
            Some(SourceTable::Orders)
        );
        assert_eq!(
            c.table_for_topic("outbound.wms.wms_demo"),
            Some(SourceTable::Items)
        );
        assert_eq!(
            c.table_for_topic("outbound.logistics.logistics_demo"),
            Some(SourceTable::Shipments)
        );
        assert_eq!(c.table_for_topic("outbound.wms2.wms_demo"), None);
        assert_eq!(c.table_for_topic("outbound.orders.order_demo2"), None);
        assert_eq!(c.table_for_topic("other.orders.order_demo"), None);
        assert_eq!(c.database_of_topic("outbound.wms.wms_demo"), "wms");
    }

    #[test]
    fn extra_item_topics_and_their_doc_ids() {
        let c = PipelineConfig {
            extra_item_topics: vec!["outbound.wms2.wms_demo".into()],
            ..PipelineConfig::default()
        };
        assert_eq!(
            c.table_for_topic("outbound.wms2.wms_demo"),
            Some(SourceTable::Items)
        );
        assert_eq!(c.topics().len(), 4);
        assert_eq!(c.item_doc_id("wms", "7"), "7");
        assert_eq!(c.item_doc_id("wms2", "7"), "wms2:7");
    }
}
