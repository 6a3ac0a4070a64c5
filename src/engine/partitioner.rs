//! Which partition a key goes to. Stable across builds and platforms (state
//! is partitioned by it, so it must never change for an app id): FNV-1a 64
//! over the key bytes, modulo the partition count.

pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // partitions > 0 is validated with the config.
    (hash % partitions.max(1) as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // Pinned: changing these would silently re-partition existing state.
        assert_eq!(partition_for(b"", 4), (0xcbf2_9ce4_8422_2325u64 % 4) as i32);
        assert_eq!(partition_for(b"ORD-1", 4), partition_for(b"ORD-1", 4));
        assert_eq!(partition_for(b"a", 1), 0);
    }

    #[test]
    fn spreads_keys() {
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            counts[partition_for(format!("order-{i}").as_bytes(), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700 && c < 1300), "{counts:?}");
    }
}
