//! A stable hash for partitioning: the same input gives the same partition on every host,
//! version and architecture.

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Continues an FNV-1a hash with more bytes (hash several parts without concatenating them).
pub fn fnv1a64_continue(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Maps a hash onto `0..count` (`count` > 0).
pub fn bucket(hash: u64, count: u32) -> u32 {
    // Multiply-shift keeps all bits of the hash relevant and avoids a division.
    ((u128::from(hash) * u128::from(count)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64_continue(fnv1a64(b"ab"), b"c"), fnv1a64(b"abc"));
        for c in [1, 2, 7, 1000] {
            assert!(bucket(u64::MAX, c) < c);
        }
    }
}
