//! Which core owns a thread: pure placement, no runtime.
//!
//! Every shard owns the threads whose id hashes to it ([`shard_for`]) and is
//! the only writer of their data. How a command gets to its owner is
//! [`crate::mesh`]'s business.

use std::fmt;

/// Index of a shard, `0..shard_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// The shard that owns `thread_id`, for a server with `shard_count` shards.
///
/// FNV-1a (64-bit) over the id's bytes, reduced modulo the shard count. It
/// is pure and must never change: a different answer for an existing id
/// would make its stored data unreachable. The golden test below pins it,
/// and the data directory records the shard count it was created with.
pub fn shard_for(thread_id: &str, shard_count: usize) -> ShardId {
    assert!(shard_count > 0, "shard_count must be positive");
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = thread_id.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    ShardId((hash % shard_count as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Guards stored data: these outputs must never change. The expected
    // values were computed by an independent FNV-1a implementation.
    #[test]
    fn shard_for_golden_values() {
        let golden: [(&str, [usize; 4]); 6] = [
            ("general", [0, 1, 1, 3]),
            ("a", [0, 0, 1, 4]),
            ("thread-1", [0, 1, 2, 7]),
            ("thread-2", [0, 0, 0, 2]),
            ("01jd0000000000000000000000", [0, 0, 1, 4]),
            ("user_42_support", [0, 1, 1, 1]),
        ];
        for (id, expected) in golden {
            let actual: Vec<usize> = [1usize, 2, 3, 8]
                .iter()
                .map(|&count| shard_for(id, count).0)
                .collect();
            assert_eq!(actual, expected, "shard_for({id:?}) changed");
        }
    }

    #[test]
    fn shard_for_is_in_range_and_spreads() {
        let mut counts = [0usize; 4];
        for n in 0..4000 {
            let shard = shard_for(&format!("thread-{n}"), 4);
            counts[shard.0] += 1;
        }
        for count in counts {
            assert!((800..=1200).contains(&count), "uneven spread {counts:?}");
        }
    }
}
