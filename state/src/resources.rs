//! Memory shared by every task store of a process: one block cache and one
//! write buffer manager charged against it, so the total memory RocksDB uses
//! stays bounded however many partitions an instance is assigned.

use rocksdb::{BlockBasedOptions, Cache, Options, WriteBufferManager};

/// RocksDB sizing, set from the `state.*` configuration keys.
#[derive(Debug, Clone)]
pub struct StoreTuning {
    /// Bytes of block cache shared by all task stores of the process.
    pub block_cache_bytes: usize,
    /// Bytes of memtables shared by all task stores (charged to the cache).
    pub write_buffer_bytes: usize,
    /// Bytes of one memtable of one column family before it is flushed.
    pub memtable_bytes: usize,
}

impl Default for StoreTuning {
    fn default() -> Self {
        Self {
            block_cache_bytes: 128 << 20,
            write_buffer_bytes: 64 << 20,
            memtable_bytes: 8 << 20,
        }
    }
}

/// The process-wide RocksDB resources every [`crate::TaskStore`] is opened with.
pub struct StoreResources {
    tuning: StoreTuning,
    cache: Cache,
    write_buffers: WriteBufferManager,
}

impl StoreResources {
    pub fn new(tuning: StoreTuning) -> Self {
        let cache = Cache::new_lru_cache(tuning.block_cache_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            tuning.write_buffer_bytes,
            false,
            cache.clone(),
        );
        Self {
            tuning,
            cache,
            write_buffers,
        }
    }

    pub fn tuning(&self) -> &StoreTuning {
        &self.tuning
    }

    /// Options for the database and each column family.
    pub(crate) fn options(&self) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_bloom_filter(10.0, false);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_manager(&self.write_buffers);
        opts.set_write_buffer_size(self.tuning.memtable_bytes);
        opts.set_max_write_buffer_number(3);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Few background threads: an instance runs on a couple of cores.
        opts.increase_parallelism(2);
        opts.set_max_open_files(256);
        opts
    }
}
