package dev.outbound.kstreams;

/**
 * Trimming as Rust's `str::trim` does it: Unicode White_Space, which is not
 * Java's `Character.isWhitespace` (that one skips U+00A0 and friends and
 * counts U+001C..U+001F). Ids and currencies are compared after trimming, so
 * the two implementations must agree.
 */
final class RustText {
    private RustText() {}

    static boolean isWhiteSpace(char c) {
        return (c >= '\t' && c <= '\r') || c == ' ' || c == '\u0085' || c == '\u00A0' || c == '\u1680'
                || (c >= '\u2000' && c <= '\u200A') || c == '\u2028' || c == '\u2029' || c == '\u202F'
                || c == '\u205F' || c == '\u3000';
    }

    static String trim(String s) {
        return trimEnd(trimStart(s));
    }

    static String trimStart(String s) {
        int i = 0;
        while (i < s.length() && isWhiteSpace(s.charAt(i))) i++;
        return i == 0 ? s : s.substring(i);
    }

    static String trimEnd(String s) {
        int j = s.length();
        while (j > 0 && isWhiteSpace(s.charAt(j - 1))) j--;
        return j == s.length() ? s : s.substring(0, j);
    }

    /** Compares as Rust compares `&str`: by UTF-8 bytes, which is by code point. */
    static int compare(String a, String b) {
        int i = 0, j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i), cb = b.codePointAt(j);
            if (ca != cb) return Integer.compare(ca, cb);
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        return Integer.compare(a.length() - i, b.length() - j) == 0 ? 0 : (i < a.length() ? 1 : -1);
    }
}
