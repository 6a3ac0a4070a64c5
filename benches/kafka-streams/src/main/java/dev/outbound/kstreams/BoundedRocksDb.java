package dev.outbound.kstreams;

import java.util.Map;

import org.apache.kafka.streams.state.RocksDBConfigSetter;
import org.rocksdb.BlockBasedTableConfig;
import org.rocksdb.BloomFilter;
import org.rocksdb.Cache;
import org.rocksdb.CompressionType;
import org.rocksdb.LRUCache;
import org.rocksdb.Options;
import org.rocksdb.WriteBufferManager;

/**
 * Every store of the process shares one 128 MiB block cache and a 64 MiB
 * write buffer manager charged to it (Kafka Streams' "bounded memory" recipe),
 * with the table options of outbound's state/src/resources.rs: 8 MiB
 * memtables (3 at most), bloom filters, index and filter blocks in the cache,
 * LZ4, two background threads.
 */
public final class BoundedRocksDb implements RocksDBConfigSetter {
    static {
        org.rocksdb.RocksDB.loadLibrary();
    }

    private static final Cache CACHE = new LRUCache(128L << 20);
    private static final WriteBufferManager WRITE_BUFFERS = new WriteBufferManager(64L << 20, CACHE);

    @Override
    public void setConfig(String storeName, Options options, Map<String, Object> configs) {
        BlockBasedTableConfig table = (BlockBasedTableConfig) options.tableFormatConfig();
        table.setBlockCache(CACHE);
        table.setCacheIndexAndFilterBlocks(true);
        table.setFilterPolicy(new BloomFilter(10, false));
        options.setTableFormatConfig(table);
        options.setWriteBufferManager(WRITE_BUFFERS);
        options.setWriteBufferSize(8L << 20);
        options.setMaxWriteBufferNumber(3);
        options.setCompressionType(CompressionType.LZ4_COMPRESSION);
        options.setIncreaseParallelism(2);
        options.setMaxOpenFiles(256);
    }

    @Override
    public void close(String storeName, Options options) {
        // The cache and the write buffer manager are shared: never closed per store.
    }
}
