package dev.outbound.kstreams;

import java.math.BigDecimal;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.ZoneOffset;

/**
 * A JSON writer that writes exactly what serde_json writes for the same
 * documents (the folded output topics are compared byte for byte): compact,
 * fields in the order given, serde_json's string escapes.
 */
final class Json {
    private final StringBuilder out = new StringBuilder(512);
    private boolean first = true;

    Json open() {
        sep();
        out.append('{');
        first = true;
        return this;
    }

    Json close() {
        out.append('}');
        first = false;
        return this;
    }

    Json openArray(String key) {
        key(key);
        out.append('[');
        first = true;
        return this;
    }

    Json closeArray() {
        out.append(']');
        first = false;
        return this;
    }

    Json openObject(String key) {
        key(key);
        out.append('{');
        first = true;
        return this;
    }

    private void sep() {
        if (!first) out.append(',');
        first = false;
    }

    private Json key(String k) {
        sep();
        string(k);
        out.append(':');
        first = true; // the value follows without a separator
        return this;
    }

    Json field(String k, String v) {
        key(k);
        first = false;
        if (v == null) out.append("null");
        else string(v);
        return this;
    }

    Json field(String k, long v) {
        key(k);
        first = false;
        out.append(v);
        return this;
    }

    Json field(String k, Long v) {
        key(k);
        first = false;
        if (v == null) out.append("null");
        else out.append(v.longValue());
        return this;
    }

    Json nullField(String k) {
        key(k);
        first = false;
        out.append("null");
        return this;
    }

    byte[] bytes() {
        return out.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8);
    }

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private void string(String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) out.append("\\u00").append(HEX[c >> 4]).append(HEX[c & 0xF]);
                    else out.append(c);
                }
            }
        }
        out.append('"');
    }

    // -----------------------------------------------------------------------
    // Value texts as the Rust documents render them.

    /** A normalised decimal as rust_decimal prints it. */
    static String decimal(BigDecimal d) {
        return Values.normalize(d).toPlainString();
    }

    /** `%Y-%m-%d` as chrono writes it. */
    static String day(LocalDate d) {
        StringBuilder b = new StringBuilder(10);
        year(b, d.getYear());
        b.append('-');
        two(b, d.getMonthValue());
        b.append('-');
        two(b, d.getDayOfMonth());
        return b.toString();
    }

    /** RFC 3339 with microseconds and `Z` (model.rs Timestamp's Display). */
    static String instant(long micros) {
        long secs = Math.floorDiv(micros, 1_000_000L);
        int us = (int) Math.floorMod(micros, 1_000_000L);
        LocalDateTime t = LocalDateTime.ofEpochSecond(secs, us * 1000, ZoneOffset.UTC);
        if (t.getYear() < -262_143 || t.getYear() > 262_142) return micros + "us";
        StringBuilder b = new StringBuilder(27);
        year(b, t.getYear());
        b.append('-');
        two(b, t.getMonthValue());
        b.append('-');
        two(b, t.getDayOfMonth());
        b.append('T');
        two(b, t.getHour());
        b.append(':');
        two(b, t.getMinute());
        b.append(':');
        two(b, t.getSecond());
        b.append('.');
        String frac = Integer.toString(us);
        for (int i = frac.length(); i < 6; i++) b.append('0');
        b.append(frac).append('Z');
        return b.toString();
    }

    private static void year(StringBuilder b, int y) {
        if (y >= 0 && y <= 9999) {
            String s = Integer.toString(y);
            for (int i = s.length(); i < 4; i++) b.append('0');
            b.append(s);
        } else if (y > 9999) {
            b.append('+').append(y);
        } else {
            String s = Integer.toString(-y);
            b.append('-');
            for (int i = s.length(); i < 4; i++) b.append('0');
            b.append(s);
        }
    }

    private static void two(StringBuilder b, int v) {
        if (v < 10) b.append('0');
        b.append(v);
    }
}
