package dev.outbound.kstreams;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.time.LocalDate;
import java.util.Arrays;

import dev.outbound.kstreams.Model.KeyedChange;
import dev.outbound.kstreams.Model.Row;
import dev.outbound.kstreams.Model.Sourced;
import dev.outbound.kstreams.Model.Table;
import dev.outbound.kstreams.Rollups.Key;
import dev.outbound.kstreams.Rollups.Measures;
import dev.outbound.kstreams.Values.Money;
import dev.outbound.kstreams.Values.Parsed;

/**
 * The compact binary encoding of what this app keeps in its stores and sends
 * on its repartition topics (outbound uses bincode for the same purpose):
 * one format byte, then varints, length-prefixed UTF-8 and decimals as
 * scale + two's complement bytes. Not compatible with outbound's: each
 * implementation reads only its own internal topics.
 */
final class Codec {
    private Codec() {}

    static final byte FORMAT = 1;

    static final class Writer {
        private byte[] buf = new byte[256];
        private int len;

        Writer() {
            u8(FORMAT);
        }

        private void room(int n) {
            if (len + n > buf.length) buf = Arrays.copyOf(buf, Math.max(buf.length * 2, len + n));
        }

        Writer u8(int b) {
            room(1);
            buf[len++] = (byte) b;
            return this;
        }

        Writer varlong(long v) {
            long z = (v << 1) ^ (v >> 63);
            room(10);
            while ((z & ~0x7FL) != 0) {
                buf[len++] = (byte) ((z & 0x7F) | 0x80);
                z >>>= 7;
            }
            buf[len++] = (byte) z;
            return this;
        }

        Writer bytes(byte[] b) {
            varlong(b.length);
            room(b.length);
            System.arraycopy(b, 0, buf, len, b.length);
            len += b.length;
            return this;
        }

        Writer str(String s) {
            if (s == null) return varlong(-1);
            return bytes(s.getBytes(StandardCharsets.UTF_8));
        }

        Writer optLong(Long v) {
            if (v == null) return u8(0);
            return u8(1).varlong(v);
        }

        Writer decimal(BigDecimal d) {
            varlong(d.scale());
            return bytes(d.unscaledValue().toByteArray());
        }

        byte[] done() {
            return Arrays.copyOf(buf, len);
        }
    }

    static final class Reader {
        private final byte[] buf;
        private int at;

        Reader(byte[] buf) {
            if (buf == null || buf.length == 0 || buf[0] != FORMAT) {
                throw new IllegalStateException("unknown record format " + (buf == null || buf.length == 0 ? "(empty)" : buf[0]));
            }
            this.buf = buf;
            this.at = 1;
        }

        boolean more() {
            return at < buf.length;
        }

        int u8() {
            return buf[at++] & 0xFF;
        }

        long varlong() {
            long z = 0;
            int shift = 0;
            while (true) {
                byte b = buf[at++];
                z |= (long) (b & 0x7F) << shift;
                if ((b & 0x80) == 0) break;
                shift += 7;
            }
            return (z >>> 1) ^ -(z & 1);
        }

        byte[] bytes() {
            int n = (int) varlong();
            byte[] b = Arrays.copyOfRange(buf, at, at + n);
            at += n;
            return b;
        }

        String str() {
            int n = (int) varlong();
            if (n < 0) return null;
            String s = new String(buf, at, n, StandardCharsets.UTF_8);
            at += n;
            return s;
        }

        Long optLong() {
            return u8() == 0 ? null : varlong();
        }

        BigDecimal decimal() {
            int scale = (int) varlong();
            return new BigDecimal(new BigInteger(bytes()), scale);
        }
    }

    // ---------------------------------------------------------------------
    // Rows

    private static void money(Writer w, Parsed<Money> p) {
        if (p.isValid()) w.u8(1).decimal(p.value.amount()).str(p.value.currency());
        else if (p.isInvalid()) w.u8(2).str(p.raw);
        else w.u8(0);
    }

    private static Parsed<Money> money(Reader r) {
        return switch (r.u8()) {
            case 1 -> Parsed.valid(new Money(r.decimal(), r.str()));
            case 2 -> Parsed.invalid(r.str());
            default -> Parsed.nil();
        };
    }

    private static void qty(Writer w, Parsed<Long> p) {
        if (p.isValid()) w.u8(1).varlong(p.value);
        else if (p.isInvalid()) w.u8(2).str(p.raw);
        else w.u8(0);
    }

    private static Parsed<Long> qty(Reader r) {
        return switch (r.u8()) {
            case 1 -> Parsed.valid(r.varlong());
            case 2 -> Parsed.invalid(r.str());
            default -> Parsed.nil();
        };
    }

    static void row(Writer w, Row row) {
        w.u8(row.table.tag).str(row.id).str(row.orderId);
        switch (row.table) {
            case ORDERS -> {
                money(w, row.orderValue);
                w.str(row.orderDescription).str(row.orderAddress);
            }
            case ITEMS -> {
                w.str(row.itemType);
                qty(w, row.itemQty);
                w.str(row.shipmentId).str(row.courier).str(row.warehouseId);
            }
            case SHIPMENTS -> {
                w.str(row.wmsrecordId);
                money(w, row.shipmentCost);
                w.str(row.courier);
            }
        }
        w.optLong(row.createdAt).optLong(row.updatedAt);
    }

    static Row row(Reader r) {
        Row row = new Row(Table.ofTag((byte) r.u8()));
        row.id = r.str();
        row.orderId = r.str();
        switch (row.table) {
            case ORDERS -> {
                row.orderValue = money(r);
                row.orderDescription = r.str();
                row.orderAddress = r.str();
            }
            case ITEMS -> {
                row.itemType = r.str();
                row.itemQty = qty(r);
                row.shipmentId = r.str();
                row.courier = r.str();
                row.warehouseId = r.str();
            }
            case SHIPMENTS -> {
                row.wmsrecordId = r.str();
                row.shipmentCost = money(r);
                row.courier = r.str();
            }
        }
        row.createdAt = r.optLong();
        row.updatedAt = r.optLong();
        return row;
    }

    static void sourced(Writer w, Sourced s) {
        row(w, s.row());
        w.str(s.db()).varlong(s.tsMs()).varlong(s.version());
    }

    static Sourced sourced(Reader r) {
        Row row = row(r);
        return new Sourced(row, r.str(), r.varlong(), r.varlong());
    }

    // ---------------------------------------------------------------------
    // Keyed changes (the rekey topic)

    static byte[] keyedChange(KeyedChange c) {
        Writer w = new Writer().u8(c.kind.ordinal());
        switch (c.kind) {
            case UPSERT -> {
                row(w, c.row);
                w.str(c.db).varlong(c.tsMs).varlong(c.version);
            }
            case DELETE -> w.u8(c.table.tag).str(c.db).str(c.orderId).str(c.id).varlong(c.version);
            case TRUNCATE -> w.u8(c.table.tag).str(c.db).varlong(c.version);
        }
        return w.done();
    }

    static KeyedChange keyedChange(byte[] bytes) {
        Reader r = new Reader(bytes);
        KeyedChange.Kind kind = KeyedChange.Kind.values()[r.u8()];
        return switch (kind) {
            case UPSERT -> {
                Row row = row(r);
                yield KeyedChange.upsert(row, r.str(), r.varlong(), r.varlong());
            }
            case DELETE -> KeyedChange.delete(Table.ofTag((byte) r.u8()), r.str(), r.str(), r.str(), r.varlong());
            case TRUNCATE -> KeyedChange.truncate(Table.ofTag((byte) r.u8()), r.str(), r.varlong());
        };
    }

    // ---------------------------------------------------------------------
    // Rollup keys and measures

    static void key(Writer w, Key k) {
        w.u8(k.rollup()).varlong(k.day().toEpochDay()).str(k.warehouse()).str(k.itemType()).str(k.courier());
    }

    static Key key(Reader r) {
        return new Key(r.u8(), LocalDate.ofEpochDay(r.varlong()), r.str(), r.str(), r.str());
    }

    static void measures(Writer w, Measures m) {
        w.varlong(m.items).varlong(m.units).varlong(m.orders).varlong(m.shipments).decimal(m.shippingCost)
                .decimal(m.orderValue);
    }

    static Measures measures(Reader r) {
        Measures m = new Measures();
        m.items = r.varlong();
        m.units = r.varlong();
        m.orders = r.varlong();
        m.shipments = r.varlong();
        m.shippingCost = r.decimal();
        m.orderValue = r.decimal();
        return m;
    }
}
