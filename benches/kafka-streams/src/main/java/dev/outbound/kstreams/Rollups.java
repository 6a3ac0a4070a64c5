package dev.outbound.kstreams;

import java.math.BigDecimal;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeMap;

/**
 * The daily rollups (pipeline/src/rollup.rs): keys, signed measures, one
 * order's contribution, and the deltas between two contributions.
 */
final class Rollups {
    private Rollups() {}

    static final int UNITS_DAILY = 0, COURIER_DAILY = 1, WAREHOUSE_DAILY = 2;
    static final String[] NAMES = {"units_daily", "courier_daily", "warehouse_daily"};
    static final byte[] TAGS = {'u', 'c', 'w'};

    /** One rollup document's key; orders as the Rust enum derives it. */
    record Key(int rollup, LocalDate day, String warehouse, String itemType, String courier) implements Comparable<Key> {
        static Key units(LocalDate day, String warehouse, String itemType) {
            return new Key(UNITS_DAILY, day, warehouse, itemType, null);
        }

        static Key courier(LocalDate day, String courier) {
            return new Key(COURIER_DAILY, day, null, null, courier);
        }

        static Key warehouse(LocalDate day, String warehouse) {
            return new Key(WAREHOUSE_DAILY, day, warehouse, null, null);
        }

        @Override
        public int compareTo(Key o) {
            int c = Integer.compare(rollup, o.rollup);
            if (c == 0) c = day.compareTo(o.day);
            if (c == 0) c = opt(warehouse, o.warehouse);
            if (c == 0) c = opt(rollup == COURIER_DAILY ? courier : itemType, o.rollup == COURIER_DAILY ? o.courier : o.itemType);
            return c;
        }

        private static int opt(String a, String b) {
            if (a == null) return b == null ? 0 : -1;
            if (b == null) return 1;
            return RustText.compare(a, b);
        }

        /** `_id`: the day and the dimensions joined by `|`; `%`, `|` escaped, null as `%00`. */
        String docId() {
            StringBuilder id = new StringBuilder(32).append(Json.day(day));
            switch (rollup) {
                case UNITS_DAILY -> {
                    part(id, warehouse);
                    part(id, itemType);
                }
                case COURIER_DAILY -> part(id, courier);
                default -> part(id, warehouse);
            }
            return id.toString();
        }

        private static void part(StringBuilder id, String p) {
            id.append('|');
            if (p == null) {
                id.append("%00");
                return;
            }
            for (int i = 0; i < p.length(); i++) {
                char c = p.charAt(i);
                if (c == '%') id.append("%25");
                else if (c == '|') id.append("%7C");
                else id.append(c);
            }
        }

        /** `name/doc_id`: the output record key and the partitioning key of its deltas. */
        String qualifiedId() {
            return NAMES[rollup] + "/" + docId();
        }
    }

    /** A key's measures: one shape for all rollups, each using its own subset. */
    static final class Measures {
        long items, units, orders, shipments;
        BigDecimal shippingCost = BigDecimal.ZERO, orderValue = BigDecimal.ZERO;

        boolean isZero() {
            return items == 0 && units == 0 && orders == 0 && shipments == 0 && shippingCost.signum() == 0
                    && orderValue.signum() == 0;
        }

        void add(Measures o) {
            items += o.items;
            units += o.units;
            orders += o.orders;
            shipments += o.shipments;
            shippingCost = Values.normalize(shippingCost.add(o.shippingCost));
            orderValue = Values.normalize(orderValue.add(o.orderValue));
        }

        void sub(Measures o) {
            items -= o.items;
            units -= o.units;
            orders -= o.orders;
            shipments -= o.shipments;
            shippingCost = Values.normalize(shippingCost.subtract(o.shippingCost));
            orderValue = Values.normalize(orderValue.subtract(o.orderValue));
        }
    }

    record Delta(Key key, Measures measures) {}

    /** A shipped item with a ship day, as the rollups see it. */
    record ShippedItem(LocalDate day, String warehouse, String itemType, String courier, long units,
                       String shipmentId, BigDecimal shippingCost) {
        boolean sameAs(ShippedItem o) {
            return day.equals(o.day) && warehouse.equals(o.warehouse) && Objects.equals(itemType, o.itemType)
                    && Objects.equals(courier, o.courier) && units == o.units && shipmentId.equals(o.shipmentId)
                    && shippingCost.compareTo(o.shippingCost) == 0;
        }
    }

    /** One order's contribution to every key its shipped items touch (distinct counts within a key). */
    static Map<Key, Measures> contribution(BigDecimal orderValue, List<ShippedItem> items) {
        TreeMap<Key, Measures> out = new TreeMap<>();
        Set<String> shipmentInKey = new HashSet<>();
        for (ShippedItem it : items) {
            Measures u = out.computeIfAbsent(Key.units(it.day, it.warehouse, it.itemType), k -> new Measures());
            u.units += it.units;
            u.items += 1;

            Key ck = Key.courier(it.day, it.courier);
            Measures c = out.computeIfAbsent(ck, k -> new Measures());
            c.items += 1;
            c.orders = 1;
            if (shipmentInKey.add(ck.qualifiedId() + "\u0000" + it.shipmentId)) {
                c.shipments += 1;
                c.shippingCost = c.shippingCost.add(it.shippingCost);
            }

            Key wk = Key.warehouse(it.day, it.warehouse);
            Measures w = out.computeIfAbsent(wk, k -> new Measures());
            w.items += 1;
            w.units += it.units;
            w.orderValue = orderValue;
            if (shipmentInKey.add(wk.qualifiedId() + "\u0000" + it.shipmentId)) {
                w.shippingCost = w.shippingCost.add(it.shippingCost);
            }
        }
        for (Measures m : out.values()) {
            m.shippingCost = Values.normalize(m.shippingCost);
            m.orderValue = Values.normalize(m.orderValue);
        }
        return out;
    }

    /** The non-zero deltas that turn contribution `before` into `after`. */
    static List<Delta> deltas(Map<Key, Measures> before, Map<Key, Measures> after) {
        TreeMap<Key, Boolean> keys = new TreeMap<>();
        for (Key k : before.keySet()) keys.put(k, true);
        for (Key k : after.keySet()) keys.put(k, true);
        List<Delta> out = new ArrayList<>();
        for (Key k : keys.keySet()) {
            Measures m = new Measures();
            Measures a = after.get(k), b = before.get(k);
            if (a != null) m.add(a);
            if (b != null) m.sub(b);
            if (!m.isZero()) out.add(new Delta(k, m));
        }
        return out;
    }

    /** The rollup document of a key with these measures, as docs.rs serialises it. */
    static byte[] doc(Key key, Measures m) {
        Json j = new Json().open().field("day", Json.day(key.day));
        switch (key.rollup) {
            case UNITS_DAILY -> j.field("warehouse", key.warehouse).field("item_type", key.itemType)
                    .field("units", m.units).field("items", m.items);
            case COURIER_DAILY -> j.field("courier", key.courier).field("orders", m.orders)
                    .field("shipments", m.shipments).field("shipping_cost", Json.decimal(m.shippingCost))
                    .field("items", m.items);
            default -> j.field("warehouse", key.warehouse).field("shipping_cost", Json.decimal(m.shippingCost))
                    .field("order_value", Json.decimal(m.orderValue)).field("units", m.units)
                    .field("items", m.items);
        }
        return j.close().bytes();
    }
}
