package dev.outbound.kstreams;

import java.math.BigDecimal;
import java.math.BigInteger;

/**
 * The source tables' loosely typed values (VARCHAR money and quantities) as
 * exact decimals, with the rules of pipeline/src/values.rs: currency words
 * and symbols before or after the amount, Indian digit grouping, a `/-`
 * suffix; amounts normalised, at most 6 decimal places, below 10^15.
 */
final class Values {
    private Values() {}

    static final int MAX_SCALE = 6;
    static final BigDecimal MAX_AMOUNT = new BigDecimal("1000000000000000");
    static final long MAX_QTY = 1_000_000_000L;
    private static final BigInteger DECIMAL_MANTISSA_LIMIT = BigInteger.ONE.shiftLeft(96);

    /** An amount with the currency it was written in (ISO code), if any. */
    record Money(BigDecimal amount, String currency) {}

    /** A parsed column: null, a value, or the raw text that did not parse. */
    static final class Parsed<T> {
        static final Parsed<?> NULL = new Parsed<>(null, null);
        final T value;
        final String raw;

        private Parsed(T value, String raw) {
            this.value = value;
            this.raw = raw;
        }

        @SuppressWarnings("unchecked")
        static <T> Parsed<T> nil() {
            return (Parsed<T>) NULL;
        }

        static <T> Parsed<T> valid(T v) {
            return new Parsed<>(v, null);
        }

        static <T> Parsed<T> invalid(String raw) {
            return new Parsed<>(null, raw);
        }

        boolean isValid() {
            return value != null;
        }

        boolean isInvalid() {
            return raw != null;
        }

        @Override
        public boolean equals(Object o) {
            if (!(o instanceof Parsed<?> p)) return false;
            return java.util.Objects.equals(raw, p.raw) && valueEquals(value, p.value);
        }

        @Override
        public int hashCode() {
            return java.util.Objects.hash(raw);
        }

        private static boolean valueEquals(Object a, Object b) {
            if (a instanceof Money x && b instanceof Money y) {
                // rust_decimal compares numerically.
                return x.amount().compareTo(y.amount()) == 0
                        && java.util.Objects.equals(x.currency(), y.currency());
            }
            return java.util.Objects.equals(a, b);
        }
    }

    /** Normalises as rust_decimal's `normalize` does: no trailing zeros, scale >= 0. */
    static BigDecimal normalize(BigDecimal d) {
        if (d.signum() == 0) return BigDecimal.ZERO;
        BigDecimal s = d.stripTrailingZeros();
        return s.scale() < 0 ? s.setScale(0) : s;
    }

    /** Whether rust_decimal can hold it (96-bit mantissa, scale <= 28). */
    static boolean fitsDecimal(BigDecimal d) {
        return d.scale() >= 0 && d.scale() <= 28 && d.unscaledValue().abs().compareTo(DECIMAL_MANTISSA_LIMIT) < 0;
    }

    /** The decimal text rust_decimal writes (plain, scale kept). */
    static String text(BigDecimal d) {
        return d.toPlainString();
    }

    static BigDecimal boundedAmount(BigDecimal d) {
        if (d == null) return null;
        BigDecimal n = normalize(d);
        return n.scale() <= MAX_SCALE && n.abs().compareTo(MAX_AMOUNT) < 0 ? n : null;
    }

    /** A plain number as JSON or Java writes it (`24.5`, `-3`, `1.0E10`), exactly. */
    static BigDecimal parseNumber(String text) {
        String t = RustText.trim(text);
        if (t.isEmpty()) return null;
        BigDecimal d;
        try {
            if (t.indexOf('e') >= 0 || t.indexOf('E') >= 0) {
                d = new BigDecimal(t);
            } else {
                for (int i = 0; i < t.length(); i++) {
                    char c = t.charAt(i);
                    if (!(c >= '0' && c <= '9') && c != '-' && c != '+' && c != '.') return null;
                }
                d = new BigDecimal(t.startsWith("+") ? t.substring(1) : t);
            }
        } catch (NumberFormatException e) {
            return null;
        }
        if (d.scale() < 0) d = d.setScale(0);
        if (!fitsDecimal(d)) return null;
        return boundedAmount(d);
    }

    static Money parseMoney(String raw) {
        String s = RustText.trim(raw);
        if (s.endsWith("/-")) s = RustText.trimEnd(s.substring(0, s.length() - 2));
        String[] prefix = splitCurrencyPrefix(s);
        String[] suffix = splitCurrencySuffix(RustText.trimStart(prefix[1]));
        if (prefix[0] != null && suffix[1] != null) return null;
        String currency = prefix[0] != null ? prefix[0] : suffix[1];
        BigDecimal amount = parseGroupedNumber(RustText.trim(suffix[0]));
        return amount == null ? null : new Money(amount, currency);
    }

    static Long parseQty(String raw) {
        BigDecimal d = parseGroupedNumber(RustText.trim(raw));
        return d == null ? null : qtyFromDecimal(d);
    }

    static Long qtyFromDecimal(BigDecimal d) {
        if (d.signum() < 0) return null;
        BigDecimal n = normalize(d);
        if (n.scale() != 0) return null;
        BigInteger v = n.unscaledValue();
        if (v.bitLength() > 63) return null;
        long q = v.longValue();
        return q <= MAX_QTY ? q : null;
    }

    private static BigDecimal parseGroupedNumber(String s) {
        if (s.isEmpty()) return null;
        boolean neg = false;
        String body = s;
        if (s.charAt(0) == '-') {
            neg = true;
            body = s.substring(1);
        } else if (s.charAt(0) == '+') {
            body = s.substring(1);
        }
        int dot = body.indexOf('.');
        String intPart = dot < 0 ? body : body.substring(0, dot);
        String frac = dot < 0 ? null : body.substring(dot + 1);
        if (intPart.isEmpty() && (frac == null || frac.isEmpty())) return null;
        if (intPart.startsWith(",") || intPart.endsWith(",") || intPart.contains(",,")) return null;
        StringBuilder text = new StringBuilder(s.length() + 1);
        if (neg) text.append('-');
        if (intPart.isEmpty()) text.append('0');
        for (int i = 0; i < intPart.length(); i++) {
            char c = intPart.charAt(i);
            if (c == ',') continue;
            if (c < '0' || c > '9') return null;
            text.append(c);
        }
        if (frac != null) {
            for (int i = 0; i < frac.length(); i++) {
                char c = frac.charAt(i);
                if (c < '0' || c > '9') return null;
            }
            if (!frac.isEmpty()) text.append('.').append(frac);
        }
        BigDecimal d = new BigDecimal(text.toString());
        if (!fitsDecimal(d)) return null;
        return boundedAmount(d);
    }

    private static final String[][] SYMBOLS = {
        {"Rs.", "INR"}, {"Rs", "INR"}, {"RS", "INR"}, {"rs", "INR"},
        {"\u20B9", "INR"}, {"$", "USD"}, {"\u20AC", "EUR"}, {"\u00A3", "GBP"},
    };

    private static boolean asciiAlpha(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }

    /** {currency or null, rest}. */
    private static String[] splitCurrencyPrefix(String s) {
        for (String[] sym : SYMBOLS) {
            if (s.startsWith(sym[0])) {
                String rest = s.substring(sym[0].length());
                if (rest.isEmpty() || !asciiAlpha(rest.charAt(0))) return new String[] {sym[1], rest};
            }
        }
        int letters = 0;
        while (letters < s.length() && asciiAlpha(s.charAt(letters))) letters++;
        if (letters == 3) return new String[] {s.substring(0, 3).toUpperCase(java.util.Locale.ROOT), s.substring(3)};
        return new String[] {null, s};
    }

    /** {rest, currency or null}. */
    private static String[] splitCurrencySuffix(String s) {
        for (String[] sym : SYMBOLS) {
            if (s.endsWith(sym[0])) {
                String rest = s.substring(0, s.length() - sym[0].length());
                if (rest.isEmpty() || !asciiAlpha(rest.charAt(rest.length() - 1))) return new String[] {rest, sym[1]};
            }
        }
        int letters = 0;
        while (letters < s.length() && asciiAlpha(s.charAt(s.length() - 1 - letters))) letters++;
        if (letters == 3) {
            int at = s.length() - 3;
            return new String[] {s.substring(0, at), s.substring(at).toUpperCase(java.util.Locale.ROOT)};
        }
        return new String[] {s, null};
    }
}
