package dev.outbound.kstreams;

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import dev.outbound.kstreams.Model.KeyedChange;
import dev.outbound.kstreams.Model.Row;
import dev.outbound.kstreams.Model.Sourced;
import dev.outbound.kstreams.Model.Table;
import dev.outbound.kstreams.Rollups.Delta;
import dev.outbound.kstreams.Rollups.ShippedItem;

/**
 * The join step (pipeline/src/join.rs): apply one keyed change to its order's
 * rows and return the detail changes of the items whose join inputs changed
 * and the rollup deltas of the order's contribution.
 *
 * State: `G` + u32 length + order_id → every row of the order in one record;
 * `O` + u16 length + db + id → an orphan item (no order_id).
 */
final class Join {
    /** The key-value store the join keeps its state in. */
    interface Kv {
        byte[] get(byte[] key);

        void put(byte[] key, byte[] value);

        void delete(byte[] key);

        /** Every entry whose key starts with `prefix`, read before any change. */
        List<Map.Entry<byte[], byte[]>> scanPrefix(byte[] prefix);
    }

    /** A change to the detail index; `doc` null is a delete. */
    record DetailChange(String id, long version, byte[] doc) {}

    static final class Output {
        final List<DetailChange> details = new ArrayList<>();
        final List<Delta> deltas = new ArrayList<>();
    }

    private final Settings settings;

    Join(Settings settings) {
        this.settings = settings;
    }

    Output apply(Kv store, KeyedChange c) {
        switch (c.kind) {
            case UPSERT -> {
                Sourced s = new Sourced(c.row, c.db, c.tsMs, c.version);
                if (c.row.orderId != null) return upsertInOrder(store, c.row.orderId, s);
                if (c.table == Table.ITEMS) return upsertOrphan(store, s);
                return new Output();
            }
            case DELETE -> {
                if (c.orderId != null) return deleteInOrder(store, c.orderId, c.table, c.db, c.id, c.version);
                if (c.table == Table.ITEMS) return deleteOrphan(store, c.db, c.id, c.version);
                return new Output();
            }
            default -> {
                return truncate(store, c.table, c.db, c.version);
            }
        }
    }

    // -----------------------------------------------------------------------
    // Keys and the order record

    static byte[] groupKey(String orderId) {
        byte[] id = orderId.getBytes(StandardCharsets.UTF_8);
        byte[] k = new byte[5 + id.length];
        k[0] = 'G';
        k[1] = (byte) (id.length >>> 24);
        k[2] = (byte) (id.length >>> 16);
        k[3] = (byte) (id.length >>> 8);
        k[4] = (byte) id.length;
        System.arraycopy(id, 0, k, 5, id.length);
        return k;
    }

    static byte[] orphanPrefix(String db) {
        byte[] d = db.getBytes(StandardCharsets.UTF_8);
        int n = Math.min(d.length, 0xFFFF);
        byte[] k = new byte[3 + d.length];
        k[0] = 'O';
        k[1] = (byte) (n >>> 8);
        k[2] = (byte) n;
        System.arraycopy(d, 0, k, 3, d.length);
        return k;
    }

    static byte[] orphanKey(String db, String id) {
        byte[] p = orphanPrefix(db);
        byte[] i = id.getBytes(StandardCharsets.UTF_8);
        byte[] k = new byte[p.length + i.length];
        System.arraycopy(p, 0, k, 0, p.length);
        System.arraycopy(i, 0, k, p.length, i.length);
        return k;
    }

    /** The rows of one order. */
    static final class OrderRows {
        final List<Sourced> rows = new ArrayList<>();

        static OrderRows decode(byte[] value) {
            OrderRows o = new OrderRows();
            if (value == null) return o;
            Codec.Reader r = new Codec.Reader(value);
            while (r.more()) o.rows.add(Codec.sourced(r));
            return o;
        }

        byte[] encode() {
            Codec.Writer w = new Codec.Writer();
            for (Sourced s : rows) Codec.sourced(w, s);
            return w.done();
        }

        int position(Table t, String db, String id) {
            for (int i = 0; i < rows.size(); i++) {
                Sourced s = rows.get(i);
                if (s.row().table == t && s.db().equals(db) && s.row().id.equals(id)) return i;
            }
            return -1;
        }

        void save(Kv store, byte[] key) {
            if (rows.isEmpty()) store.delete(key);
            else store.put(key, encode());
        }
    }

    // -----------------------------------------------------------------------
    // Evaluation: the join rules over an order's rows

    record Joined(Sourced item, Sourced order, Sourced shipment) {
        boolean sameAs(Joined o) {
            return item.same(o.item) && same(order, o.order) && same(shipment, o.shipment);
        }

        private static boolean same(Sourced a, Sourced b) {
            if (a == null || b == null) return a == b;
            return a.same(b);
        }
    }

    /** (db, id) in Rust's tuple order. */
    record ItemKey(String db, String id) implements Comparable<ItemKey> {
        @Override
        public int compareTo(ItemKey o) {
            int c = RustText.compare(db, o.db);
            return c != 0 ? c : RustText.compare(id, o.id);
        }
    }

    record Evaluation(Sourced order, TreeMap<ItemKey, Joined> items) {}

    /** The greatest by compare_ids, ties (same id, other database) by database. */
    private static boolean isGreater(Sourced a, Sourced b) {
        int c = Model.compareIds(a.row().id, b.row().id);
        if (c == 0) c = RustText.compare(a.db(), b.db());
        return c > 0;
    }

    private static Sourced best(List<Sourced> shipments, java.util.function.Predicate<Row> matches) {
        Sourced best = null;
        for (Sourced s : shipments) {
            if (!matches.test(s.row())) continue;
            if (best == null || isGreater(s, best)) best = s;
        }
        return best;
    }

    static Evaluation evaluate(List<Sourced> rows) {
        Sourced order = null;
        List<Sourced> shipments = new ArrayList<>();
        List<Sourced> items = new ArrayList<>();
        for (Sourced s : rows) {
            switch (s.row().table) {
                case ORDERS -> {
                    if (order == null || isGreater(s, order)) order = s;
                }
                case SHIPMENTS -> shipments.add(s);
                case ITEMS -> items.add(s);
            }
        }
        TreeMap<ItemKey, Joined> joined = new TreeMap<>();
        for (Sourced item : items) {
            Row i = item.row();
            Sourced shipment = null;
            if (i.shipmentId != null) shipment = best(shipments, s -> s.id.equals(i.shipmentId));
            if (shipment == null) shipment = best(shipments, s -> i.id.equals(s.wmsrecordId));
            joined.put(new ItemKey(item.db(), i.id), new Joined(item, order, shipment));
        }
        return new Evaluation(order, joined);
    }

    private List<ShippedItem> shipped(Evaluation e) {
        List<ShippedItem> out = new ArrayList<>();
        for (Joined j : e.items.values()) {
            if (j.shipment == null) continue;
            Row s = j.shipment.row();
            LocalDate day = Docs.shipDay(settings, s);
            if (day == null) continue;
            Row i = j.item.row();
            out.add(new ShippedItem(day, Docs.warehouse(j.item), i.itemType, Docs.courier(i, s),
                    i.itemQty.isValid() ? i.itemQty.value : 0, s.id, Docs.amountOrZero(s.shipmentCost)));
        }
        return out;
    }

    private static BigDecimal orderValue(Evaluation e) {
        return e.order == null ? BigDecimal.ZERO : Docs.amountOrZero(e.order.row().orderValue);
    }

    /** What changed between two evaluations of one order. */
    private Output diff(Evaluation before, Evaluation after, long removalVersion) {
        Output out = new Output();
        for (Map.Entry<ItemKey, Joined> e : after.items.entrySet()) {
            Joined b = before.items.get(e.getKey());
            Joined j = e.getValue();
            if (b != null && b.sameAs(j)) continue;
            out.details.add(new DetailChange(settings.itemDocId(e.getKey().db, e.getKey().id), j.item.version(),
                    Docs.itemDoc(settings, j.item, j.order, j.shipment)));
        }
        for (ItemKey k : before.items.keySet()) {
            if (!after.items.containsKey(k)) {
                out.details.add(new DetailChange(settings.itemDocId(k.db, k.id), removalVersion, null));
            }
        }
        List<ShippedItem> old = shipped(before), now = shipped(after);
        BigDecimal vb = orderValue(before), va = orderValue(after);
        boolean same = old.size() == now.size();
        for (int i = 0; same && i < old.size(); i++) same = old.get(i).sameAs(now.get(i));
        if (!(same && (now.isEmpty() || vb.compareTo(va) == 0))) {
            out.deltas.addAll(Rollups.deltas(Rollups.contribution(vb, old), Rollups.contribution(va, now)));
        }
        return out;
    }

    private Output upsertInOrder(Kv store, String orderId, Sourced stored) {
        byte[] key = groupKey(orderId);
        OrderRows rows = OrderRows.decode(store.get(key));
        Table table = stored.row().table;
        int at = rows.position(table, stored.db(), stored.row().id);
        if (at >= 0) {
            Sourced old = rows.rows.get(at);
            if (old.same(stored) || (table != Table.ITEMS && old.sameContent(stored))) {
                // A replay of an order or shipment change already applied.
                rows.rows.set(at, stored);
                rows.save(store, key);
                return new Output();
            }
        }
        Evaluation before = evaluate(rows.rows);
        List<Sourced> next = new ArrayList<>(rows.rows);
        if (at >= 0) next.set(at, stored);
        else next.add(stored);
        Evaluation after = evaluate(next);
        Output out = diff(before, after, stored.version());
        rows.rows.clear();
        rows.rows.addAll(next);
        rows.save(store, key);
        return out;
    }

    private Output deleteInOrder(Kv store, String orderId, Table table, String db, String id, long version) {
        byte[] key = groupKey(orderId);
        OrderRows rows = OrderRows.decode(store.get(key));
        int at = rows.position(table, db, id);
        if (at < 0) return new Output();
        Evaluation before = evaluate(rows.rows);
        rows.rows.remove(at);
        Evaluation after = evaluate(rows.rows);
        Output out = diff(before, after, version);
        rows.save(store, key);
        return out;
    }

    private Output upsertOrphan(Kv store, Sourced item) {
        byte[] key = orphanKey(item.db(), item.row().id);
        byte[] existing = store.get(key);
        Codec.Writer w = new Codec.Writer();
        Codec.sourced(w, item);
        store.put(key, w.done());
        Output out = new Output();
        if (existing != null && Codec.sourced(new Codec.Reader(existing)).same(item)) return out;
        out.details.add(new DetailChange(settings.itemDocId(item.db(), item.row().id), item.version(),
                Docs.itemDoc(settings, item, null, null)));
        return out;
    }

    private Output deleteOrphan(Kv store, String db, String id, long version) {
        byte[] key = orphanKey(db, id);
        Output out = new Output();
        if (store.get(key) == null) return out;
        store.delete(key);
        out.details.add(new DetailChange(settings.itemDocId(db, id), version, null));
        return out;
    }

    private Output truncate(Kv store, Table table, String db, long version) {
        Output out = new Output();
        for (Map.Entry<byte[], byte[]> e : store.scanPrefix(new byte[] {'G'})) {
            OrderRows rows = OrderRows.decode(e.getValue());
            boolean has = rows.rows.stream().anyMatch(s -> s.row().table == table && s.db().equals(db));
            if (!has) continue;
            Evaluation before = evaluate(rows.rows);
            rows.rows.removeIf(s -> s.row().table == table && s.db().equals(db));
            Evaluation after = evaluate(rows.rows);
            Output d = diff(before, after, version);
            out.details.addAll(d.details);
            out.deltas.addAll(d.deltas);
            rows.save(store, e.getKey());
        }
        if (table == Table.ITEMS) {
            for (Map.Entry<byte[], byte[]> e : store.scanPrefix(orphanPrefix(db))) {
                Sourced row = Codec.sourced(new Codec.Reader(e.getValue()));
                if (!row.db().equals(db)) continue;
                store.delete(e.getKey());
                out.details.add(new DetailChange(settings.itemDocId(db, row.row().id), version, null));
            }
        }
        return out;
    }
}
