package dev.outbound.kstreams;

import java.nio.charset.StandardCharsets;
import java.util.AbstractMap;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.BytesSerializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.processor.StreamPartitioner;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import dev.outbound.kstreams.Model.ChangeEvent;
import dev.outbound.kstreams.Model.KeyedChange;
import dev.outbound.kstreams.Model.Row;
import dev.outbound.kstreams.Rollups.Delta;
import dev.outbound.kstreams.Rollups.Measures;

/**
 * The four stages as Kafka Streams processors (outbound's src/engine/processors.rs):
 * rekey (stateless), join, details (newest version wins) and aggregate.
 */
final class Stages {
    private Stages() {}

    private static final Logger LOG = LoggerFactory.getLogger(Stages.class);

    /** Internal value tags after the format byte: a detail change or a rollup delta. */
    static final byte DETAIL = 'D', DELTA = 'R';

    /** FNV-1a 64 over the key bytes, modulo the partition count (src/engine/partitioner.rs). */
    static int partitionFor(byte[] key, int partitions) {
        long hash = 0xcbf29ce484222325L;
        for (byte b : key) {
            hash ^= (b & 0xFF);
            hash *= 0x100000001b3L;
        }
        return (int) Long.remainderUnsigned(hash, Math.max(1, partitions));
    }

    /** outbound's partitioner; an empty key (a truncate) goes to every partition. */
    static final class Fnv implements StreamPartitioner<byte[], byte[]> {
        @Override
        public Optional<Set<Integer>> partitions(String topic, byte[] key, byte[] value, int n) {
            if (key != null && key.length == 0) {
                return Optional.of(IntStream.range(0, n).boxed().collect(Collectors.toSet()));
            }
            return Optional.of(Set.of(partitionFor(key == null ? new byte[0] : key, n)));
        }
    }

    /** A Kafka Streams key-value store as the join's Kv. */
    static Join.Kv kv(KeyValueStore<Bytes, byte[]> store) {
        return new Join.Kv() {
            @Override
            public byte[] get(byte[] key) {
                return store.get(Bytes.wrap(key));
            }

            @Override
            public void put(byte[] key, byte[] value) {
                store.put(Bytes.wrap(key), value);
            }

            @Override
            public void delete(byte[] key) {
                store.delete(Bytes.wrap(key));
            }

            @Override
            public List<Map.Entry<byte[], byte[]>> scanPrefix(byte[] prefix) {
                List<Map.Entry<byte[], byte[]>> out = new ArrayList<>();
                try (KeyValueIterator<Bytes, byte[]> it = store.prefixScan(Bytes.wrap(prefix), new BytesSerializer())) {
                    while (it.hasNext()) {
                        KeyValue<Bytes, byte[]> kv = it.next();
                        out.add(new AbstractMap.SimpleImmutableEntry<>(kv.key.get(), kv.value));
                    }
                }
                return out;
            }
        };
    }

    // -----------------------------------------------------------------------

    /**
     * Source topics → keyed changes for the join partitions of their orders.
     * A record that cannot be decoded is forwarded with a null key and the
     * reason in its headers: the topology sends those to the dead-letter topic.
     */
    static final class Rekey implements Processor<byte[], byte[], byte[], byte[]> {
        private final Settings settings;
        private Decoder decoder;
        private ProcessorContext<byte[], byte[]> ctx;

        Rekey(Settings settings) {
            this.settings = settings;
        }

        @Override
        public void init(ProcessorContext<byte[], byte[]> context) {
            this.ctx = context;
            this.decoder = new Decoder(settings);
        }

        @Override
        public void process(Record<byte[], byte[]> r) {
            RecordMetadata md = ctx.recordMetadata().orElseThrow();
            ChangeEvent event;
            try {
                event = decoder.decode(md.topic(), r.value());
            } catch (Decoder.DecodeException | RuntimeException e) {
                deadLetter(r, md, e.getMessage());
                return;
            }
            if (event == null) return; // a tombstone
            long ts = event.sourceTsMs() > 0 ? event.sourceTsMs() : r.timestamp();
            long version = md.offset();
            String db = event.db();
            switch (event.op()) {
                case TRUNCATE -> send(new byte[0], KeyedChange.truncate(event.table(), db, version), ts);
                case DELETE -> delete(event.before(), db, version, ts);
                default -> {
                    Row b = event.before(), a = event.after();
                    if (b != null && a != null
                            && (!java.util.Objects.equals(b.orderId, a.orderId) || !b.id.equals(a.id))) {
                        delete(b, db, version, ts);
                    }
                    byte[] key = routeKey(a, db);
                    if (key != null) send(key, KeyedChange.upsert(a, db, event.sourceTsMs(), version), ts);
                }
            }
        }

        /** The partitioning key of a row's order; orphans (items without order) by db and id; null: nowhere. */
        private static byte[] routeKey(Row row, String db) {
            if (row.orderId != null) return row.orderId.getBytes(StandardCharsets.UTF_8);
            if (row.table != Model.Table.ITEMS) return null;
            return ("\0orphan\0" + db + "\0" + row.id).getBytes(StandardCharsets.UTF_8);
        }

        private void delete(Row row, String db, long version, long ts) {
            byte[] key = routeKey(row, db);
            if (key != null) send(key, KeyedChange.delete(row.table, db, row.orderId, row.id, version), ts);
        }

        private void send(byte[] key, KeyedChange change, long ts) {
            ctx.forward(new Record<>(key, Codec.keyedChange(change), ts));
        }

        private void deadLetter(Record<byte[], byte[]> r, RecordMetadata md, String reason) {
            LOG.warn("record sent to the dead-letter topic: {}[{}]@{}: {}", md.topic(), md.partition(), md.offset(), reason);
            RecordHeaders h = new RecordHeaders();
            h.add("outbound.error", String.valueOf(reason).getBytes(StandardCharsets.UTF_8));
            h.add("outbound.source.topic", md.topic().getBytes(StandardCharsets.UTF_8));
            h.add("outbound.source.partition", Integer.toString(md.partition()).getBytes(StandardCharsets.UTF_8));
            h.add("outbound.source.offset", Long.toString(md.offset()).getBytes(StandardCharsets.UTF_8));
            if (r.key() != null) h.add("outbound.source.key", r.key());
            ctx.forward(new Record<byte[], byte[]>(null, r.value(), r.timestamp(), h));
        }
    }

    /** The join stage: per order partition, the join state in RocksDB. */
    static final class JoinStage implements Processor<byte[], byte[], byte[], byte[]> {
        private final Settings settings;
        private Join join;
        private Join.Kv store;
        private ProcessorContext<byte[], byte[]> ctx;

        JoinStage(Settings settings) {
            this.settings = settings;
        }

        @Override
        public void init(ProcessorContext<byte[], byte[]> context) {
            ctx = context;
            join = new Join(settings);
            store = kv(context.getStateStore("join"));
        }

        @Override
        public void process(Record<byte[], byte[]> r) {
            if (r.value() == null) return;
            KeyedChange change;
            try {
                change = Codec.keyedChange(r.value());
            } catch (RuntimeException e) {
                LOG.warn("undecodable internal record skipped: {}", e.toString());
                return;
            }
            Join.Output out = join.apply(store, change);
            for (Join.DetailChange d : out.details) {
                Codec.Writer w = new Codec.Writer().u8(DETAIL).str(d.id()).varlong(d.version());
                if (d.doc() == null) w.u8(0);
                else w.u8(1).bytes(d.doc());
                ctx.forward(new Record<>(d.id().getBytes(StandardCharsets.UTF_8), w.done(), r.timestamp()));
            }
            for (Delta d : out.deltas) {
                Codec.Writer w = new Codec.Writer().u8(DELTA);
                Codec.key(w, d.key());
                Codec.measures(w, d.measures());
                ctx.forward(new Record<>(d.key().qualifiedId().getBytes(StandardCharsets.UTF_8), w.done(), r.timestamp()));
            }
        }
    }

    static boolean isDetail(byte[] value) {
        return value != null && value.length > 1 && value[1] == DETAIL;
    }

    /**
     * The details stage (pipeline/src/resolve.rs): per document id, the newest
     * change by item version wins; a small tombstone keeps deleted ids dead.
     */
    static final class Details implements Processor<byte[], byte[], byte[], byte[]> {
        private KeyValueStore<Bytes, byte[]> store;
        private ProcessorContext<byte[], byte[]> ctx;

        @Override
        public void init(ProcessorContext<byte[], byte[]> context) {
            ctx = context;
            store = context.getStateStore("details");
        }

        @Override
        public void process(Record<byte[], byte[]> r) {
            if (r.value() == null) return;
            Codec.Reader in = new Codec.Reader(r.value());
            in.u8();
            String id = in.str();
            long version = in.varlong();
            byte[] doc = in.u8() == 1 ? in.bytes() : null;
            boolean upsert = doc != null;
            byte[] idBytes = id.getBytes(StandardCharsets.UTF_8);
            byte[] key = new byte[idBytes.length + 1];
            key[0] = 'D';
            System.arraycopy(idBytes, 0, key, 1, idBytes.length);
            Bytes k = Bytes.wrap(key);
            byte[] last = store.get(k);
            boolean wasPresent = false;
            if (last != null) {
                Codec.Reader lr = new Codec.Reader(last);
                long lastVersion = lr.varlong();
                wasPresent = lr.u8() == 1;
                boolean accept = version > lastVersion || (version == lastVersion && (upsert || !wasPresent));
                if (!accept) return;
            }
            store.put(k, new Codec.Writer().varlong(version).u8(upsert ? 1 : 0).done());
            if (upsert || wasPresent) ctx.forward(new Record<>(idBytes, doc, r.timestamp()));
        }
    }

    /** The aggregate stage: per rollup key, counters in RocksDB; the document, or a delete at zero. */
    static final class Aggregate implements Processor<byte[], byte[], byte[], byte[]> {
        private KeyValueStore<Bytes, byte[]> store;
        private ProcessorContext<byte[], byte[]> ctx;

        @Override
        public void init(ProcessorContext<byte[], byte[]> context) {
            ctx = context;
            store = context.getStateStore("aggregate");
        }

        @Override
        public void process(Record<byte[], byte[]> r) {
            if (r.value() == null) return;
            Codec.Reader in = new Codec.Reader(r.value());
            in.u8();
            Rollups.Key key = Codec.key(in);
            Measures delta = Codec.measures(in);
            String id = key.docId();
            byte[] idBytes = id.getBytes(StandardCharsets.UTF_8);
            byte[] sk = new byte[idBytes.length + 2];
            sk[0] = 'M';
            sk[1] = Rollups.TAGS[key.rollup()];
            System.arraycopy(idBytes, 0, sk, 2, idBytes.length);
            Bytes k = Bytes.wrap(sk);
            byte[] stored = store.get(k);
            Measures m = stored == null ? new Measures() : Codec.measures(new Codec.Reader(stored));
            m.add(delta);
            byte[] outKey = (Rollups.NAMES[key.rollup()] + "/" + id).getBytes(StandardCharsets.UTF_8);
            if (m.isZero()) {
                store.delete(k);
                ctx.forward(new Record<byte[], byte[]>(outKey, null, r.timestamp()));
            } else {
                Codec.Writer w = new Codec.Writer();
                Codec.measures(w, m);
                store.put(k, w.done());
                ctx.forward(new Record<>(outKey, Rollups.doc(key, m), r.timestamp()));
            }
        }
    }

}
