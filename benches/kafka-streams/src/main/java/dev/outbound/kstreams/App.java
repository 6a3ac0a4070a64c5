package dev.outbound.kstreams;

import java.time.Duration;
import java.time.ZoneId;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Branched;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.Stores;

import dev.outbound.kstreams.Model.Table;

/**
 * outbound's topology as a Kafka Streams application, the baseline of the
 * `versus` benchmark (issue #15):
 *
 * <pre>
 * source topics ─rekey─▶ &lt;app&gt;-rekey-repartition ─join─▶ &lt;app&gt;-detail-changes-repartition ─details─▶ &lt;app&gt;-details
 *                                                    └─▶ &lt;app&gt;-rollup-deltas-repartition ─aggregate─▶ &lt;app&gt;-rollups
 * </pre>
 *
 * exactly_once_v2, one stream thread (one outbound instance), RocksDB stores
 * with the record cache on, sharing one bounded block cache and write buffer
 * manager as outbound's stores do. Partitioned by outbound's FNV-1a
 * partitioner so that both place every key alike.
 *
 * Prints one line per lifecycle event on stdout for the benchmark:
 * `KSTREAMS state NEW_STATE epoch_ms` and `KSTREAMS restored STORE PARTITION RECORDS epoch_ms`.
 */
public final class App {
    private App() {}

    private static Map<String, String> args(String[] argv) {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
                throw new IllegalArgumentException("expected --name value pairs, got " + argv[i]);
            }
            a.put(argv[i].substring(2), argv[++i]);
        }
        return a;
    }

    private static String arg(Map<String, String> a, String name, String dflt) {
        String v = a.get(name);
        if (v == null && dflt == null) throw new IllegalArgumentException("missing --" + name);
        return v == null ? dflt : v;
    }

    static Topology topology(Settings settings, String appId, int partitions) {
        StreamsBuilder b = new StreamsBuilder();
        for (String store : List.of("join", "details", "aggregate")) {
            b.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(store), Serdes.Bytes(),
                    Serdes.ByteArray()).withCachingEnabled());
        }
        Stages.Fnv fnv = new Stages.Fnv();
        List<String> sources = List.of(settings.topic(Table.ORDERS), settings.topic(Table.ITEMS), settings.topic(Table.SHIPMENTS));
        KStream<byte[], byte[]> rekeyed = b.stream(sources, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .process(() -> new Stages.Rekey(settings), Named.as("rekey"));
        // Undecodable source records carry a null key: to the dead-letter topic.
        Map<String, KStream<byte[], byte[]>> routed = rekeyed.split(Named.as("rekey-"))
                .branch((k, v) -> k == null, Branched.as("dlq"))
                .defaultBranch(Branched.as("changes"));
        routed.get("rekey-dlq").to(appId + "-dlq", Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        KStream<byte[], byte[]> joined = routed.get("rekey-changes")
                .repartition(Repartitioned.<byte[], byte[]>as("rekey").withKeySerde(Serdes.ByteArray())
                        .withValueSerde(Serdes.ByteArray()).withNumberOfPartitions(partitions).withStreamPartitioner(fnv))
                .process(() -> new Stages.JoinStage(settings), Named.as("join"), "join");
        Map<String, KStream<byte[], byte[]>> outs = joined.split(Named.as("join-"))
                .branch((k, v) -> Stages.isDetail(v), Branched.as("details"))
                .defaultBranch(Branched.as("deltas"));
        outs.get("join-details")
                .repartition(Repartitioned.<byte[], byte[]>as("detail-changes").withKeySerde(Serdes.ByteArray())
                        .withValueSerde(Serdes.ByteArray()).withNumberOfPartitions(partitions).withStreamPartitioner(fnv))
                .process(Stages.Details::new, Named.as("details"), "details")
                .to(appId + "-details", Produced.with(Serdes.ByteArray(), Serdes.ByteArray()).withStreamPartitioner(fnv));
        outs.get("join-deltas")
                .repartition(Repartitioned.<byte[], byte[]>as("rollup-deltas").withKeySerde(Serdes.ByteArray())
                        .withValueSerde(Serdes.ByteArray()).withNumberOfPartitions(partitions).withStreamPartitioner(fnv))
                .process(Stages.Aggregate::new, Named.as("aggregate"), "aggregate")
                .to(appId + "-rollups", Produced.with(Serdes.ByteArray(), Serdes.ByteArray()).withStreamPartitioner(fnv));
        return b.build();
    }

    /** The settings shared with outbound, then what Kafka Streams' docs recommend for throughput. */
    static Properties config(Map<String, String> a) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, arg(a, "app-id", null));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, arg(a, "bootstrap", "127.0.0.1:9092"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, arg(a, "state-dir", null));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(arg(a, "commit-interval-ms", "100")));
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        // The record cache: writes to the stores coalesce per key between commits.
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 64L << 20);
        p.put(StreamsConfig.ROCKSDB_CONFIG_SETTER_CLASS_CONFIG, BoundedRocksDb.class);
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        // As outbound's transactional producer: linger 5 ms, lz4, ~1 MB batches (librdkafka's default).
        p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 5);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.COMPRESSION_TYPE_CONFIG), "lz4");
        p.put(StreamsConfig.producerPrefix(ProducerConfig.BATCH_SIZE_CONFIG), 1 << 20);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.BUFFER_MEMORY_CONFIG), 64L << 20);
        // As outbound: right after a commit the coordinator answers CONCURRENT_TRANSACTIONS
        // until its markers are written; retry at 10 ms (growing to 100), not 100 ms (to 1 s).
        p.put(StreamsConfig.producerPrefix(ProducerConfig.RETRY_BACKOFF_MS_CONFIG), 10);
        p.put(StreamsConfig.producerPrefix(ProducerConfig.RETRY_BACKOFF_MAX_MS_CONFIG), 100);
        // Large fetches for a backlog; as outbound's consumer, session timeout 10 s, heartbeat 1 s.
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), 2000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.FETCH_MAX_BYTES_CONFIG), 50 << 20);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG), 10 << 20);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 10_000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1_000);
        return p;
    }

    private static void event(String what) {
        System.out.println("KSTREAMS " + what + " " + System.currentTimeMillis());
        System.out.flush();
    }

    public static void main(String[] argv) throws InterruptedException {
        Map<String, String> a = args(argv);
        String appId = arg(a, "app-id", null);
        int partitions = Integer.parseInt(arg(a, "partitions", "4"));
        Settings settings = new Settings(arg(a, "topic-prefix", "outbound"), ZoneId.of(arg(a, "business-tz", "UTC")));
        KafkaStreams streams = new KafkaStreams(topology(settings, appId, partitions), config(a));
        streams.setStateListener((now, before) -> event("state " + now));
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {}

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long n) {}

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
                event("restored " + store + " " + tp.partition() + " " + total);
            }
        });
        // A dead stream thread is replaced, as a production deployment would have it.
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("stream thread failed: " + e);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.REPLACE_THREAD;
        });
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(60));
            stopped.countDown();
        }));
        streams.start();
        stopped.await();
    }
}
