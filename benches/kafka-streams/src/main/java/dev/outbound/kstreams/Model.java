package dev.outbound.kstreams;

import java.math.BigInteger;
import java.util.Objects;

import dev.outbound.kstreams.Values.Money;
import dev.outbound.kstreams.Values.Parsed;

/** The rows of the three source tables and the changes that carry them (pipeline/src/model.rs, rekey.rs). */
final class Model {
    private Model() {}

    enum Table {
        ORDERS('o'), ITEMS('i'), SHIPMENTS('s');

        final byte tag;

        Table(char tag) {
            this.tag = (byte) tag;
        }

        static Table ofTag(byte tag) {
            for (Table t : values()) if (t.tag == tag) return t;
            throw new IllegalArgumentException("unknown table tag " + tag);
        }
    }

    enum Op { CREATE, UPDATE, DELETE, READ, TRUNCATE }

    /**
     * A row of one of the three tables. One shape for all three; each table
     * uses its own columns (the others stay null). Instants are microseconds
     * since the epoch.
     */
    static final class Row {
        final Table table;
        String id;
        String orderId;
        // order_demo
        Parsed<Money> orderValue = Parsed.nil();
        String orderDescription;
        String orderAddress;
        // wms_demo
        String itemType;
        Parsed<Long> itemQty = Parsed.nil();
        String shipmentId;
        String courier; // wms_demo and logistics_demo
        String warehouseId;
        // logistics_demo
        String wmsrecordId;
        Parsed<Money> shipmentCost = Parsed.nil();
        Long createdAt;
        Long updatedAt;

        Row(Table table) {
            this.table = table;
        }

        @Override
        public boolean equals(Object o) {
            if (!(o instanceof Row r)) return false;
            return table == r.table && Objects.equals(id, r.id) && Objects.equals(orderId, r.orderId)
                    && orderValue.equals(r.orderValue) && Objects.equals(orderDescription, r.orderDescription)
                    && Objects.equals(orderAddress, r.orderAddress) && Objects.equals(itemType, r.itemType)
                    && itemQty.equals(r.itemQty) && Objects.equals(shipmentId, r.shipmentId)
                    && Objects.equals(courier, r.courier) && Objects.equals(warehouseId, r.warehouseId)
                    && Objects.equals(wmsrecordId, r.wmsrecordId) && shipmentCost.equals(r.shipmentCost)
                    && Objects.equals(createdAt, r.createdAt) && Objects.equals(updatedAt, r.updatedAt);
        }

        @Override
        public int hashCode() {
            return Objects.hash(table, id, orderId);
        }
    }

    /** A row as the join keeps it: its database, source ts_ms and version (source offset). */
    record Sourced(Row row, String db, long tsMs, long version) {
        boolean sameContent(Sourced o) {
            return row.equals(o.row) && db.equals(o.db) && tsMs == o.tsMs;
        }

        boolean same(Sourced o) {
            return this == o || (sameContent(o) && version == o.version);
        }
    }

    /** One decoded Debezium change event. */
    record ChangeEvent(Table table, Op op, Row before, Row after, String db, long sourceTsMs) {}

    /** A change for the join stage, keyed by its order (rekey.rs's KeyedChange). */
    static final class KeyedChange {
        enum Kind { UPSERT, DELETE, TRUNCATE }

        final Kind kind;
        final Table table;
        final Row row; // UPSERT
        final String db;
        final long tsMs; // UPSERT
        final String orderId; // DELETE (null: an orphan item)
        final String id; // DELETE
        final long version;

        private KeyedChange(Kind kind, Table table, Row row, String db, long tsMs, String orderId, String id, long version) {
            this.kind = kind;
            this.table = table;
            this.row = row;
            this.db = db;
            this.tsMs = tsMs;
            this.orderId = orderId;
            this.id = id;
            this.version = version;
        }

        static KeyedChange upsert(Row row, String db, long tsMs, long version) {
            return new KeyedChange(Kind.UPSERT, row.table, row, db, tsMs, null, null, version);
        }

        static KeyedChange delete(Table table, String db, String orderId, String id, long version) {
            return new KeyedChange(Kind.DELETE, table, null, db, 0, orderId, id, version);
        }

        static KeyedChange truncate(Table table, String db, long version) {
            return new KeyedChange(Kind.TRUNCATE, table, null, db, 0, null, null, version);
        }
    }

    /** Trims an id-like text; null when nothing is left. */
    static String normalizeId(String raw) {
        if (raw == null) return null;
        String t = RustText.trim(raw);
        return t.isEmpty() ? null : t;
    }

    /**
     * "The greatest id wins" order (model.rs compare_ids): canonical integers
     * first, numerically; then every other id as a string.
     */
    static int compareIds(String a, String b) {
        BigInteger x = canonicalInt(a), y = canonicalInt(b);
        if (x != null && y != null) return x.compareTo(y);
        if (x != null) return -1;
        if (y != null) return 1;
        return RustText.compare(a, b);
    }

    private static final BigInteger I128_MAX = BigInteger.ONE.shiftLeft(127).subtract(BigInteger.ONE);
    private static final BigInteger I128_MIN = BigInteger.ONE.shiftLeft(127).negate();

    private static BigInteger canonicalInt(String s) {
        String digits = s.startsWith("-") ? s.substring(1) : s;
        if (digits.isEmpty() || (digits.length() > 1 && digits.charAt(0) == '0') || s.equals("-0")) return null;
        for (int i = 0; i < digits.length(); i++) {
            char c = digits.charAt(i);
            if (c < '0' || c > '9') return null;
        }
        if (digits.length() <= 18) return BigInteger.valueOf(Long.parseLong(s));
        BigInteger v = new BigInteger(s);
        return v.compareTo(I128_MAX) > 0 || v.compareTo(I128_MIN) < 0 ? null : v;
    }
}
