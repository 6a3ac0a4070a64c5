package dev.outbound.kstreams;

import java.time.ZoneId;

import dev.outbound.kstreams.Model.Table;

/** The semantic settings (pipeline/src/config.rs) with the local stack's defaults. */
final class Settings {
    final String topicPrefix;
    final String ordersDb = "orders", ordersTable = "order_demo";
    final String itemsDb = "wms", itemsTable = "wms_demo";
    final String shipmentsDb = "logistics", shipmentsTable = "logistics_demo";
    final ZoneId businessTz;

    Settings(String topicPrefix, ZoneId businessTz) {
        this.topicPrefix = topicPrefix;
        this.businessTz = businessTz;
    }

    String topic(Table t) {
        return switch (t) {
            case ORDERS -> topicPrefix + "." + ordersDb + "." + ordersTable;
            case ITEMS -> topicPrefix + "." + itemsDb + "." + itemsTable;
            case SHIPMENTS -> topicPrefix + "." + shipmentsDb + "." + shipmentsTable;
        };
    }

    Table tableForTopic(String topic) {
        for (Table t : Table.values()) if (topic(t).equals(topic)) return t;
        return null;
    }

    /** The middle part of `<prefix>.<database>.<table>`, for events without a source block. */
    static String databaseOfTopic(String topic) {
        int last = topic.lastIndexOf('.');
        if (last < 0) return topic;
        int prev = topic.lastIndexOf('.', last - 1);
        return prev < 0 ? topic.substring(0, last) : topic.substring(prev + 1, last);
    }

    /** The detail document _id of an item: its id, prefixed with `db:` outside the main WMS database. */
    String itemDocId(String db, String id) {
        return db.equals(itemsDb) || db.isEmpty() ? id : db + ":" + id;
    }
}
