package dev.outbound.kstreams;

import java.io.IOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeFormatterBuilder;
import java.time.format.DateTimeParseException;
import java.time.temporal.ChronoField;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import dev.outbound.kstreams.Model.ChangeEvent;
import dev.outbound.kstreams.Model.Op;
import dev.outbound.kstreams.Model.Row;
import dev.outbound.kstreams.Model.Table;
import dev.outbound.kstreams.Values.Money;
import dev.outbound.kstreams.Values.Parsed;

/**
 * Debezium JSON change events, with and without the schema/payload wrapper,
 * decoded with the rules of pipeline/src/decode.rs: columns typed by the
 * envelope's schema when present (io.debezium.time.*, Connect Decimal as
 * base64 with its scale, VariableScaleDecimal), only the known columns read,
 * and each topic's last schema cached by its raw bytes so that a record with
 * the same schema skips parsing it.
 */
final class Decoder {
    /** Why a record could not be decoded (goes to the dead-letter topic). */
    static final class DecodeException extends Exception {
        private static final long serialVersionUID = 1L;

        DecodeException(String message) {
            super(message);
        }
    }

    static final String[] ORDER_COLUMNS = {"id", "order_id", "order_value", "order_description", "customer_address", "created_at", "updated_at"};
    static final String[] ITEM_COLUMNS = {"id", "order_id", "item_type", "item_qty", "shipment_id", "courier", "warehouse_id", "created_at", "updated_at"};
    static final String[] SHIPMENT_COLUMNS = {"id", "order_id", "wmsrecord_id", "shipment_cost", "courier", "created_at", "updated_at"};

    static String[] columnsOf(Table t) {
        return switch (t) {
            case ORDERS -> ORDER_COLUMNS;
            case ITEMS -> ITEM_COLUMNS;
            case SHIPMENTS -> SHIPMENT_COLUMNS;
        };
    }

    // Column types, as far as decoding cares.
    static final int UNKNOWN = 0, INT = 1, TEXT = 2, DECIMAL = 3, VARIABLE_DECIMAL = 4, EPOCH_MILLIS = 5,
            EPOCH_MICROS = 6, EPOCH_NANOS = 7, EPOCH_DAYS = 8, ZONED = 9;
    private static final String[] TYPE_NAMES = {"Unknown", "Int", "Text", "Decimal", "VariableDecimal",
        "EpochMillis", "EpochMicros", "EpochNanos", "EpochDays", "Zoned"};

    /** The types (and decimal scales) of a table's known columns, by slot. */
    record TableSchema(int[] types, int[] scales) {
        static final TableSchema NONE = new TableSchema(new int[9], new int[9]);
    }

    private record CachedSchema(byte[] raw, TableSchema schema) {}

    private static final JsonFactory JSON = new JsonFactory();
    private static final ObjectMapper MAPPER = new ObjectMapper(JSON);
    private static final byte[] WRAPPER_HEAD = "{\"schema\":".getBytes();
    private static final byte[] PAYLOAD_KEY = ",\"payload\":".getBytes();

    private final Settings settings;
    private final Map<String, CachedSchema> schemas = new HashMap<>();

    Decoder(Settings settings) {
        this.settings = settings;
    }

    /** One record; null is a tombstone (null, empty or `null` value, or a null payload). */
    ChangeEvent decode(String topic, byte[] value) throws DecodeException {
        Table table = settings.tableForTopic(topic);
        if (table == null) throw new DecodeException("topic \"" + topic + "\" is not a configured source topic");
        if (value == null) return null;
        int start = 0, end = value.length;
        while (start < end && isSpace(value[start])) start++;
        while (end > start && isSpace(value[end - 1])) end--;
        if (start == end || (end - start == 4 && value[start] == 'n' && value[start + 1] == 'u'
                && value[start + 2] == 'l' && value[start + 3] == 'l')) return null;
        if (value[start] != '{') throw new DecodeException("malformed JSON: expected a JSON object");
        String[] names = columnsOf(table);
        // Fast path: the wrapper with this topic's cached schema, byte for byte.
        CachedSchema cached = schemas.get(topic);
        if (cached != null && startsWith(value, 0, WRAPPER_HEAD)
                && startsWith(value, WRAPPER_HEAD.length, cached.raw)
                && startsWith(value, WRAPPER_HEAD.length + cached.raw.length, PAYLOAD_KEY)) {
            int from = WRAPPER_HEAD.length + cached.raw.length + PAYLOAD_KEY.length;
            if (end - 1 > from && value[end - 1] == '}') {
                Envelope env = null;
                try {
                    env = parseEnvelope(value, from, end - 1 - from, names);
                } catch (IOException | DecodeException e) {
                    // Not what it looked like: the full parse below reports why.
                }
                if (env != null) return buildEvent(topic, table, env, cached.schema);
            }
        }
        Envelope top;
        try {
            top = parseEnvelope(value, 0, value.length, names);
        } catch (IOException e) {
            throw new DecodeException("malformed JSON: " + jsonError(e));
        }
        if (top.payloadStart < 0) return buildEvent(topic, table, top, null);
        TableSchema schema = null;
        if (top.schemaStart >= 0 && !isNullLiteral(value, top.schemaStart, top.schemaEnd)) {
            schema = schemaFor(topic, table, Arrays.copyOfRange(value, top.schemaStart, top.schemaEnd));
        }
        if (isNullLiteral(value, top.payloadStart, top.payloadEnd)) return null;
        Envelope env;
        try {
            env = parseEnvelope(value, top.payloadStart, top.payloadEnd - top.payloadStart, names);
        } catch (IOException e) {
            throw new DecodeException("malformed JSON: " + jsonError(e));
        }
        return buildEvent(topic, table, env, schema);
    }

    private static String jsonError(IOException e) {
        return e instanceof com.fasterxml.jackson.core.JsonProcessingException j ? j.getOriginalMessage() : e.toString();
    }

    private static boolean isSpace(byte b) {
        return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f';
    }

    private static boolean isNullLiteral(byte[] v, int from, int to) {
        return to - from == 4 && v[from] == 'n' && v[from + 1] == 'u' && v[from + 2] == 'l' && v[from + 3] == 'l';
    }

    private static boolean startsWith(byte[] v, int at, byte[] prefix) {
        return v.length - at >= prefix.length && Arrays.equals(v, at, at + prefix.length, prefix, 0, prefix.length);
    }

    private TableSchema schemaFor(String topic, Table table, byte[] raw) throws DecodeException {
        CachedSchema c = schemas.get(topic);
        if (c != null && Arrays.equals(c.raw, raw)) return c.schema;
        TableSchema s = parseSchema(table, raw);
        schemas.put(topic, new CachedSchema(raw, s));
        return s;
    }

    // -----------------------------------------------------------------------
    // The envelope: one streaming pass, row images included.

    /** A JSON value of a known column, classified. */
    static final class Scalar {
        static final int NULL = 0, BOOL = 1, NUMBER = 2, STR = 3, OBJECT = 4, ARRAY = 5;
        static final Scalar NULL_VALUE = new Scalar(NULL, null, null);
        final int kind;
        final String text; // BOOL: true/false; NUMBER: its exact text; STR: the string
        final JsonNode object;

        Scalar(int kind, String text, JsonNode object) {
            this.kind = kind;
            this.text = text;
            this.object = object;
        }
    }

    private static final class Envelope {
        int schemaStart = -1, schemaEnd = -1, payloadStart = -1, payloadEnd = -1;
        Scalar[] before, after; // null: absent or null
        boolean beforeNotObject, afterNotObject;
        boolean hasSource;
        String sourceDb;
        Long sourceTsMs;
        String op;
        Long tsMs;
    }

    private static Envelope parseEnvelope(byte[] buf, int off, int len, String[] names) throws IOException, DecodeException {
        try (JsonParser p = JSON.createParser(buf, off, len)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                throw new DecodeException("malformed JSON: expected a Debezium change event object");
            }
            Envelope env = new Envelope();
            int seen = 0;
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String key = p.currentName();
                JsonToken t = p.nextToken();
                switch (key) {
                    case "schema" -> {
                        seen = once(seen, 1, key);
                        env.schemaStart = off + (int) p.currentTokenLocation().getByteOffset();
                        p.skipChildren();
                        env.schemaEnd = off + (int) p.currentLocation().getByteOffset();
                    }
                    case "payload" -> {
                        seen = once(seen, 2, key);
                        env.payloadStart = off + (int) p.currentTokenLocation().getByteOffset();
                        p.skipChildren();
                        env.payloadEnd = off + (int) p.currentLocation().getByteOffset();
                    }
                    case "before" -> {
                        seen = once(seen, 4, key);
                        if (t == JsonToken.START_OBJECT) env.before = readImage(p, names);
                        else if (t != JsonToken.VALUE_NULL) {
                            env.beforeNotObject = true;
                            p.skipChildren();
                        }
                    }
                    case "after" -> {
                        seen = once(seen, 8, key);
                        if (t == JsonToken.START_OBJECT) env.after = readImage(p, names);
                        else if (t != JsonToken.VALUE_NULL) {
                            env.afterNotObject = true;
                            p.skipChildren();
                        }
                    }
                    case "source" -> {
                        seen = once(seen, 16, key);
                        if (t == JsonToken.START_OBJECT) readSource(p, env);
                        else if (t != JsonToken.VALUE_NULL) throw new DecodeException("malformed JSON: invalid type for `source`, expected a Debezium source block");
                    }
                    case "op" -> {
                        seen = once(seen, 32, key);
                        if (t == JsonToken.VALUE_STRING) env.op = p.getText();
                        else if (t != JsonToken.VALUE_NULL) throw new DecodeException("malformed JSON: invalid type for `op`, expected a string");
                    }
                    case "ts_ms" -> {
                        seen = once(seen, 64, key);
                        env.tsMs = optLong(p, t, "ts_ms");
                    }
                    default -> p.skipChildren();
                }
            }
            if (p.nextToken() != null) throw new DecodeException("malformed JSON: trailing characters");
            return env;
        }
    }

    private static int once(int seen, int bit, String field) throws DecodeException {
        if ((seen & bit) != 0) throw new DecodeException("malformed JSON: duplicate field `" + field + "`");
        return seen | bit;
    }

    private static Long optLong(JsonParser p, JsonToken t, String field) throws IOException, DecodeException {
        if (t == JsonToken.VALUE_NULL) return null;
        if (t == JsonToken.VALUE_NUMBER_INT && p.getNumberType() != JsonParser.NumberType.BIG_INTEGER) return p.getLongValue();
        throw new DecodeException("malformed JSON: invalid type for `" + field + "`, expected i64");
    }

    private static void readSource(JsonParser p, Envelope env) throws IOException, DecodeException {
        env.hasSource = true;
        int seen = 0;
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            String key = p.currentName();
            JsonToken t = p.nextToken();
            switch (key) {
                case "connector", "name", "table", "file" -> {
                    int bit = switch (key) {
                        case "connector" -> 1;
                        case "name" -> 2;
                        case "table" -> 8;
                        default -> 32;
                    };
                    seen = once(seen, bit, key);
                    optString(p, t, key);
                }
                case "db" -> {
                    seen = once(seen, 4, key);
                    env.sourceDb = optString(p, t, key);
                }
                case "ts_ms" -> {
                    seen = once(seen, 16, key);
                    env.sourceTsMs = optLong(p, t, "source.ts_ms");
                }
                case "pos" -> {
                    seen = once(seen, 64, key);
                    Long pos = optLong(p, t, "source.pos");
                    if (pos != null && pos < 0) throw new DecodeException("malformed JSON: invalid value for `source.pos`, expected u64");
                }
                case "row" -> {
                    seen = once(seen, 128, key);
                    optLong(p, t, "source.row");
                }
                case "snapshot" -> {
                    seen = once(seen, 256, key);
                    p.skipChildren();
                }
                default -> p.skipChildren();
            }
        }
    }

    private static String optString(JsonParser p, JsonToken t, String field) throws IOException, DecodeException {
        if (t == JsonToken.VALUE_NULL) return null;
        if (t == JsonToken.VALUE_STRING) return p.getText();
        throw new DecodeException("malformed JSON: invalid type for `" + field + "`, expected a string");
    }

    private static Scalar[] readImage(JsonParser p, String[] names) throws IOException {
        Scalar[] slots = new Scalar[names.length];
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            String key = p.currentName();
            JsonToken t = p.nextToken();
            int slot = -1;
            for (int i = 0; i < names.length; i++) {
                if (names[i].equals(key)) {
                    slot = i;
                    break;
                }
            }
            if (slot < 0) {
                p.skipChildren();
                continue;
            }
            slots[slot] = switch (t) {
                case VALUE_NULL -> Scalar.NULL_VALUE;
                case VALUE_TRUE -> new Scalar(Scalar.BOOL, "true", null);
                case VALUE_FALSE -> new Scalar(Scalar.BOOL, "false", null);
                case VALUE_NUMBER_INT, VALUE_NUMBER_FLOAT -> new Scalar(Scalar.NUMBER, p.getText(), null);
                case VALUE_STRING -> new Scalar(Scalar.STR, p.getText(), null);
                case START_OBJECT -> new Scalar(Scalar.OBJECT, null, MAPPER.readTree(p));
                case START_ARRAY -> {
                    p.skipChildren();
                    yield new Scalar(Scalar.ARRAY, null, null);
                }
                default -> throw new IOException("unexpected token " + t);
            };
        }
        return slots;
    }

    private ChangeEvent buildEvent(String topic, Table table, Envelope env, TableSchema schema) throws DecodeException {
        if (env.op == null) throw new DecodeException("field `op`: missing");
        Op op = switch (env.op) {
            case "c" -> Op.CREATE;
            case "u" -> Op.UPDATE;
            case "d" -> Op.DELETE;
            case "r" -> Op.READ;
            case "t" -> Op.TRUNCATE;
            default -> throw new DecodeException("unsupported op \"" + env.op + "\"");
        };
        TableSchema types = schema == null ? TableSchema.NONE : schema;
        Row before = null, after = null;
        if (op != Op.TRUNCATE) {
            if (env.beforeNotObject) throw new DecodeException("malformed JSON: `before` is not a row image object");
            if (env.before != null) before = row(table, env.before, types, "before");
            if (env.afterNotObject) throw new DecodeException("malformed JSON: `after` is not a row image object");
            if (env.after != null) after = row(table, env.after, types, "after");
        }
        if ((op == Op.CREATE || op == Op.READ || op == Op.UPDATE) && after == null) {
            throw new DecodeException("field `after`: missing row image");
        }
        if (op == Op.DELETE && before == null) {
            throw new DecodeException("field `before`: missing row image (the connector needs binlog_row_image=FULL)");
        }
        String db = env.sourceDb != null ? env.sourceDb : Settings.databaseOfTopic(topic);
        long ts = env.sourceTsMs != null ? env.sourceTsMs : env.tsMs != null ? env.tsMs : 0;
        return new ChangeEvent(table, op, before, after, db, ts);
    }

    // -----------------------------------------------------------------------
    // Row images

    private Row row(Table table, Scalar[] slots, TableSchema schema, String image) throws DecodeException {
        Columns c = new Columns(columnsOf(table), slots, schema, image);
        Row r = new Row(table);
        switch (table) {
            case ORDERS -> {
                r.id = c.requiredId(0);
                r.orderId = c.id(1);
                r.orderValue = c.money(2);
                r.orderDescription = c.text(3);
                r.orderAddress = c.text(4);
                r.createdAt = c.timestamp(5);
                r.updatedAt = c.timestamp(6);
            }
            case ITEMS -> {
                r.id = c.requiredId(0);
                r.orderId = c.id(1);
                r.itemType = c.text(2);
                r.itemQty = c.qty(3);
                r.shipmentId = c.id(4);
                r.courier = c.text(5);
                r.warehouseId = c.id(6);
                r.createdAt = c.timestamp(7);
                r.updatedAt = c.timestamp(8);
            }
            case SHIPMENTS -> {
                r.id = c.requiredId(0);
                r.orderId = c.id(1);
                r.wmsrecordId = c.id(2);
                r.shipmentCost = c.money(3);
                r.courier = c.text(4);
                r.createdAt = c.timestamp(5);
                r.updatedAt = c.timestamp(6);
            }
        }
        return r;
    }

    private static final class Columns {
        final String[] names;
        final Scalar[] slots;
        final TableSchema schema;
        final String image;

        Columns(String[] names, Scalar[] slots, TableSchema schema, String image) {
            this.names = names;
            this.slots = slots;
            this.schema = schema;
            this.image = image;
        }

        Scalar get(int slot) {
            Scalar s = slots[slot];
            return s == null ? Scalar.NULL_VALUE : s;
        }

        int type(int slot) {
            return schema.types()[slot];
        }

        DecodeException err(int slot, String reason) {
            return new DecodeException("field `" + image + "." + names[slot] + "`: " + reason);
        }

        String text(int slot) throws DecodeException {
            Scalar v = get(slot);
            int ty = type(slot);
            switch (v.kind) {
                case Scalar.NULL:
                    return null;
                case Scalar.STR:
                    if (ty == DECIMAL) {
                        try {
                            return Values.text(decimalFromBase64(v.text, schema.scales()[slot]));
                        } catch (IllegalArgumentException e) {
                            throw err(slot, e.getMessage());
                        }
                    }
                    return v.text;
                case Scalar.NUMBER:
                case Scalar.BOOL:
                    return v.text;
                case Scalar.OBJECT:
                    if (ty == VARIABLE_DECIMAL) {
                        try {
                            return Values.text(variableDecimal(v.object));
                        } catch (IllegalArgumentException e) {
                            throw err(slot, e.getMessage());
                        }
                    }
                    throw err(slot, "expected a scalar, found a JSON object or array");
                default:
                    throw err(slot, "expected a scalar, found a JSON object or array");
            }
        }

        String id(int slot) throws DecodeException {
            return Model.normalizeId(text(slot));
        }

        String requiredId(int slot) throws DecodeException {
            String id = id(slot);
            if (id == null) throw err(slot, "primary key is missing, null or empty");
            return id;
        }

        BigDecimal exactDecimal(int slot) throws DecodeException {
            Scalar v = get(slot);
            int ty = type(slot);
            try {
                if (v.kind == Scalar.STR && ty == DECIMAL) return decimalFromBase64(v.text, schema.scales()[slot]);
                if (v.kind == Scalar.OBJECT && ty == VARIABLE_DECIMAL) return variableDecimal(v.object);
            } catch (IllegalArgumentException e) {
                throw err(slot, e.getMessage());
            }
            return null;
        }

        Parsed<Money> money(int slot) throws DecodeException {
            BigDecimal d = exactDecimal(slot);
            if (d != null) {
                BigDecimal amount = Values.boundedAmount(d);
                return amount != null ? Parsed.valid(new Money(amount, null)) : Parsed.invalid(Values.text(d));
            }
            Scalar v = get(slot);
            switch (v.kind) {
                case Scalar.NULL:
                    return Parsed.nil();
                case Scalar.NUMBER: {
                    BigDecimal n = Values.parseNumber(v.text);
                    return n != null ? Parsed.valid(new Money(n, null)) : Parsed.invalid(v.text);
                }
                case Scalar.STR: {
                    Money m = Values.parseMoney(v.text);
                    return m != null ? Parsed.valid(m) : Parsed.invalid(v.text);
                }
                case Scalar.BOOL:
                    return Parsed.invalid(v.text);
                case Scalar.OBJECT:
                    return Parsed.invalid(v.object.toString());
                default:
                    throw err(slot, "expected an amount, found an array");
            }
        }

        Parsed<Long> qty(int slot) throws DecodeException {
            BigDecimal d = exactDecimal(slot);
            if (d != null) {
                Long q = Values.qtyFromDecimal(d);
                return q != null ? Parsed.valid(q) : Parsed.invalid(Values.text(d));
            }
            Scalar v = get(slot);
            switch (v.kind) {
                case Scalar.NULL:
                    return Parsed.nil();
                case Scalar.NUMBER: {
                    BigDecimal n = Values.parseNumber(v.text);
                    Long q = n == null ? null : Values.qtyFromDecimal(n);
                    return q != null ? Parsed.valid(q) : Parsed.invalid(v.text);
                }
                case Scalar.STR: {
                    Long q = Values.parseQty(v.text);
                    return q != null ? Parsed.valid(q) : Parsed.invalid(v.text);
                }
                case Scalar.BOOL:
                    return Parsed.invalid(v.text);
                case Scalar.OBJECT:
                    return Parsed.invalid(v.object.toString());
                default:
                    throw err(slot, "expected a quantity, found an array");
            }
        }

        private long integer(int slot, String n) throws DecodeException {
            try {
                return Long.parseLong(n);
            } catch (NumberFormatException e) {
                throw err(slot, "expected an integer timestamp, found " + n);
            }
        }

        Long timestamp(int slot) throws DecodeException {
            Scalar v = get(slot);
            int ty = type(slot);
            if (v.kind == Scalar.NULL) return null;
            if (v.kind == Scalar.NUMBER) {
                switch (ty) {
                    case EPOCH_MILLIS:
                        return millis(slot, integer(slot, v.text));
                    case EPOCH_MICROS:
                        return integer(slot, v.text);
                    case EPOCH_NANOS:
                        return Math.floorDiv(integer(slot, v.text), 1000L);
                    case EPOCH_DAYS: {
                        long d = integer(slot, v.text);
                        try {
                            return Math.multiplyExact(d, 86_400_000_000L);
                        } catch (ArithmeticException e) {
                            throw err(slot, "timestamp out of range");
                        }
                    }
                    case UNKNOWN:
                    case INT: {
                        long n = integer(slot, v.text);
                        long a = n == Long.MIN_VALUE ? Long.MAX_VALUE : Math.abs(n);
                        if (a >= 100_000_000_000_000_000L) return Math.floorDiv(n, 1000L);
                        if (a >= 100_000_000_000_000L) return n;
                        return millis(slot, n);
                    }
                    default:
                        break;
                }
            } else if (v.kind == Scalar.STR && (ty == UNKNOWN || ty == TEXT || ty == ZONED)) {
                String s = RustText.trim(v.text);
                if (s.startsWith("0000-00-00")) return null;
                Long ts = parseIso(s);
                if (ts == null) throw err(slot, "not an ISO-8601 timestamp: \"" + v.text + "\"");
                return ts;
            }
            throw err(slot, "value does not fit its schema type " + TYPE_NAMES[ty]);
        }

        private Long millis(int slot, long ms) throws DecodeException {
            try {
                return Math.multiplyExact(ms, 1000L);
            } catch (ArithmeticException e) {
                throw err(slot, "timestamp out of range");
            }
        }
    }

    private static final DateTimeFormatter NAIVE_T = naive('T');
    private static final DateTimeFormatter NAIVE_SPACE = naive(' ');

    private static DateTimeFormatter naive(char sep) {
        return new DateTimeFormatterBuilder().appendPattern("uuuu-MM-dd").appendLiteral(sep)
                .appendPattern("HH:mm:ss").optionalStart().appendFraction(ChronoField.NANO_OF_SECOND, 1, 9, true)
                .optionalEnd().toFormatter();
    }

    /** RFC 3339 with an offset, or a naive date-time or date read as UTC. */
    static Long parseIso(String s) {
        try {
            String t = s;
            if (t.length() > 10 && (t.charAt(10) == ' ' || t.charAt(10) == 't')) {
                t = t.substring(0, 10) + 'T' + t.substring(11);
            }
            return micros(OffsetDateTime.parse(t, DateTimeFormatter.ISO_OFFSET_DATE_TIME).toInstant());
        } catch (DateTimeParseException e) {
            // not with an offset
        }
        for (DateTimeFormatter f : new DateTimeFormatter[] {NAIVE_T, NAIVE_SPACE}) {
            try {
                return micros(LocalDateTime.parse(s, f).toInstant(ZoneOffset.UTC));
            } catch (DateTimeParseException e) {
                // next form
            }
        }
        try {
            return micros(LocalDate.parse(s, DateTimeFormatter.ISO_LOCAL_DATE).atStartOfDay().toInstant(ZoneOffset.UTC));
        } catch (DateTimeParseException e) {
            return null;
        }
    }

    private static long micros(java.time.Instant i) {
        return Math.addExact(Math.multiplyExact(i.getEpochSecond(), 1_000_000L), i.getNano() / 1000);
    }

    /** Connect's Decimal: base64 of the unscaled value's big-endian two's complement. */
    static BigDecimal decimalFromBase64(String text, int scale) {
        byte[] bytes;
        try {
            bytes = Base64.getDecoder().decode(text);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("Decimal bytes are not base64: " + e.getMessage());
        }
        if (bytes.length == 0 || bytes.length > 16) {
            throw new IllegalArgumentException("Decimal of " + bytes.length + " bytes is out of range");
        }
        BigDecimal d = new BigDecimal(new BigInteger(bytes), scale);
        if (!Values.fitsDecimal(d)) throw new IllegalArgumentException("Decimal out of range");
        return d;
    }

    static BigDecimal variableDecimal(JsonNode o) {
        JsonNode scale = o.get("scale"), value = o.get("value");
        if (scale == null || !scale.canConvertToInt() || scale.asInt() < 0 || value == null || !value.isTextual()) {
            throw new IllegalArgumentException("VariableScaleDecimal: expected {\"scale\":…,\"value\":…}");
        }
        if (scale.asInt() > 28) {
            throw new IllegalArgumentException("VariableScaleDecimal scale " + scale.asInt() + " is out of range");
        }
        return decimalFromBase64(value.asText(), scale.asInt());
    }

    // -----------------------------------------------------------------------
    // Schemas

    static TableSchema parseSchema(Table table, byte[] raw) throws DecodeException {
        JsonNode root;
        try {
            root = MAPPER.readTree(raw);
        } catch (IOException e) {
            throw new DecodeException("malformed JSON: " + e.getMessage());
        }
        JsonNode fields = root.get("fields");
        if (fields == null || !fields.isArray()) throw new DecodeException("schema: envelope schema has no fields");
        // The `after` image's columns, else the `before` image's (as decode.rs).
        JsonNode imageField = null;
        for (String which : new String[] {"after", "before"}) {
            for (JsonNode f : fields) {
                if (imageField == null && which.equals(f.path("field").asText(null))) imageField = f;
            }
        }
        JsonNode image = imageField == null ? null : imageField.get("fields");
        int[] types = new int[9], scales = new int[9];
        if (image == null || !image.isArray()) return new TableSchema(types, scales);
        String[] names = columnsOf(table);
        for (JsonNode col : image) {
            String field = col.path("field").asText(null);
            int slot = -1;
            for (int i = 0; i < names.length; i++) if (names[i].equals(field)) slot = i;
            if (slot < 0) continue;
            String name = col.path("name").asText(null);
            String type = col.path("type").asText(null);
            int ty;
            if ("org.apache.kafka.connect.data.Decimal".equals(name)) {
                JsonNode s = col.path("parameters").get("scale");
                int scale = -1;
                if (s != null && s.isTextual()) {
                    try {
                        scale = Integer.parseInt(s.asText());
                    } catch (NumberFormatException e) {
                        scale = -1;
                    }
                } else if (s != null && s.canConvertToInt()) {
                    scale = s.asInt();
                }
                if (scale < 0 || scale > 28) {
                    throw new DecodeException("schema: column \"" + field + "\": Decimal without a valid scale parameter");
                }
                ty = DECIMAL;
                scales[slot] = scale;
            } else if ("io.debezium.data.VariableScaleDecimal".equals(name)) {
                ty = VARIABLE_DECIMAL;
            } else if ("io.debezium.time.Timestamp".equals(name) || "org.apache.kafka.connect.data.Timestamp".equals(name)) {
                ty = EPOCH_MILLIS;
            } else if ("io.debezium.time.MicroTimestamp".equals(name)) {
                ty = EPOCH_MICROS;
            } else if ("io.debezium.time.NanoTimestamp".equals(name)) {
                ty = EPOCH_NANOS;
            } else if ("io.debezium.time.Date".equals(name) || "org.apache.kafka.connect.data.Date".equals(name)) {
                ty = EPOCH_DAYS;
            } else if ("io.debezium.time.ZonedTimestamp".equals(name)) {
                ty = ZONED;
            } else if ("int8".equals(type) || "int16".equals(type) || "int32".equals(type) || "int64".equals(type)) {
                ty = INT;
            } else if ("string".equals(type)) {
                ty = TEXT;
            } else {
                ty = UNKNOWN;
            }
            types[slot] = ty;
        }
        return new TableSchema(types, scales);
    }
}
