//! Which shard a record goes to: Kinesis routes a record by its 128-bit hash key (the MD5 of its
//! partition key, or an explicit hash key) to the open shard whose hash-key range holds it.
//!
//! The producer's aggregator needs this before the put, because an aggregate must only hold user
//! records of one shard: the KCL drops, without a word, every user record whose hash key lies
//! outside the range of the shard it was read from.

use md5::{Digest, Md5};

use super::KplError;
use crate::position::ShardId;

/// The hash key Kinesis computes for a partition key: the MD5 of its UTF-8 bytes read as a
/// big-endian 128-bit integer.
pub fn hash_key_of(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Parses an explicit hash key as Kinesis accepts it: decimal, no sign, no leading zeros, at most
/// 2^128-1.
pub fn parse_explicit_hash_key(text: &str) -> Result<u128, KplError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let canonical = text == "0" || !text.starts_with('0');
    match text.parse::<u128>() {
        Ok(n) if digits && canonical => Ok(n),
        _ => Err(KplError::InvalidExplicitHashKey(text.to_owned())),
    }
}

/// An inclusive range of hash keys, as `ListShards` reports for each shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashKeyRange {
    pub start: u128,
    pub end: u128,
}

impl HashKeyRange {
    /// The whole hash-key space: a one-shard stream's range.
    pub const FULL: HashKeyRange = HashKeyRange {
        start: 0,
        end: u128::MAX,
    };

    pub fn new(start: u128, end: u128) -> Result<Self, KplError> {
        if start > end {
            return Err(KplError::InvalidShardMap(format!(
                "hash-key range starts at {start}, after its end {end}"
            )));
        }
        Ok(HashKeyRange { start, end })
    }

    /// From the decimal strings `ListShards` gives (`StartingHashKey`, `EndingHashKey`).
    pub fn parse(start: &str, end: &str) -> Result<Self, KplError> {
        Self::new(parse_explicit_hash_key(start)?, parse_explicit_hash_key(end)?)
    }

    pub fn contains(&self, hash_key: u128) -> bool {
        self.start <= hash_key && hash_key <= self.end
    }
}

/// One open shard and the hash keys it takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    pub id: ShardId,
    pub range: HashKeyRange,
}

/// The open shards of a stream, covering the whole hash-key space once, with no gap and no overlap
/// (which is what the open shards of a Kinesis stream always do). The producer refreshes it after
/// a reshard and hands it to [`Aggregator::set_shard_map`](super::Aggregator::set_shard_map).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    /// Sorted by range start.
    shards: Vec<Shard>,
}

impl ShardMap {
    /// Checks that the shards tile the hash-key space. A gap or an overlap most likely means
    /// closed parent shards were mixed in, or some open shards left out, and routing by such a
    /// map would put user records where the KCL drops them.
    pub fn new(mut shards: Vec<Shard>) -> Result<Self, KplError> {
        shards.sort_by_key(|s| s.range.start);
        let (Some(first), Some(last)) = (shards.first(), shards.last()) else {
            return Err(KplError::InvalidShardMap("no shards".into()));
        };
        if first.range.start != 0 {
            return Err(KplError::InvalidShardMap(format!(
                "no shard covers hash keys 0 to {} (the lowest range starts in shard {})",
                first.range.start - 1,
                first.id
            )));
        }
        if last.range.end != u128::MAX {
            return Err(KplError::InvalidShardMap(format!(
                "no shard covers hash keys above {} (the end of shard {})",
                last.range.end, last.id
            )));
        }
        for pair in shards.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.range.start <= a.range.end {
                return Err(KplError::InvalidShardMap(format!(
                    "shards {} and {} overlap at hash key {}",
                    a.id, b.id, b.range.start
                )));
            }
            if b.range.start != a.range.end + 1 {
                return Err(KplError::InvalidShardMap(format!(
                    "no shard covers hash keys {} to {} (between shards {} and {})",
                    a.range.end + 1,
                    b.range.start - 1,
                    a.id,
                    b.id
                )));
            }
        }
        let mut ids: Vec<&ShardId> = shards.iter().map(|s| &s.id).collect();
        ids.sort();
        if let Some(pair) = ids.windows(2).find(|p| p[0] == p[1]) {
            return Err(KplError::InvalidShardMap(format!(
                "shard {} appears twice",
                pair[0]
            )));
        }
        Ok(ShardMap { shards })
    }

    /// A stream of one shard, which takes every hash key.
    pub fn single(id: ShardId) -> Self {
        ShardMap {
            shards: vec![Shard {
                id,
                range: HashKeyRange::FULL,
            }],
        }
    }

    /// `count` shards splitting the space evenly, named `shardId-000000000000` upwards, as
    /// `CreateStream` lays out a new stream: for the local stream and the simulation.
    pub fn even(count: u32) -> Result<Self, KplError> {
        if count == 0 {
            return Err(KplError::InvalidShardMap(
                "a stream needs at least one shard".into(),
            ));
        }
        if count == 1 {
            // 2^128 / 1 does not fit a u128; one shard simply takes everything.
            return Ok(ShardMap::single(ShardId::new("shardId-000000000000")));
        }
        let n = u128::from(count);
        // floor(2^128 / n), computed without 2^128.
        let step = u128::MAX / n + u128::from(u128::MAX % n + 1 == n);
        let shards = (0..count)
            .map(|i| {
                let start = u128::from(i) * step;
                let end = if i + 1 == count {
                    u128::MAX
                } else {
                    start + step - 1
                };
                Shard {
                    id: ShardId::new(format!("shardId-{i:012}")),
                    range: HashKeyRange { start, end },
                }
            })
            .collect();
        Ok(ShardMap { shards })
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The shard that takes this hash key; there always is one, as the map tiles the space.
    pub fn shard_for(&self, hash_key: u128) -> &Shard {
        &self.shards[self.index_for(hash_key)]
    }

    pub(crate) fn index_for(&self, hash_key: u128) -> usize {
        // The first shard starts at 0, so at least one start is <= any key.
        self.shards.partition_point(|s| s.range.start <= hash_key) - 1
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn shard(id: &str, start: u128, end: u128) -> Shard {
        Shard {
            id: ShardId::new(id),
            range: HashKeyRange::new(start, end).unwrap(),
        }
    }

    #[test]
    fn hash_key_is_big_endian_md5() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key_of(""), 0xd41d8cd98f00b204e9800998ecf8427e);
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(hash_key_of("a"), 0x0cc175b9c0f1b6a831c399e269772661);
        // UTF-8 bytes, not UTF-16 or chars: md5("é") = md5(c3 a9)
        assert_eq!(
            hash_key_of("é").to_be_bytes(),
            <[u8; 16]>::from(Md5::digest([0xc3, 0xa9]))
        );
    }

    #[test]
    fn explicit_hash_keys_are_strict_decimal() {
        assert_eq!(parse_explicit_hash_key("0").unwrap(), 0);
        assert_eq!(
            parse_explicit_hash_key("340282366920938463463374607431768211455").unwrap(),
            u128::MAX
        );
        for bad in [
            "",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "0x10",
            "1.0",
            "340282366920938463463374607431768211456",
        ] {
            let err = parse_explicit_hash_key(bad).unwrap_err();
            assert_eq!(err, KplError::InvalidExplicitHashKey(bad.to_owned()));
        }
        assert!(
            parse_explicit_hash_key("x")
                .unwrap_err()
                .to_string()
                .contains("explicit hash key must be a decimal")
        );
    }

    #[test]
    fn map_must_tile_the_space() {
        let max = u128::MAX;
        assert!(
            ShardMap::new(vec![])
                .unwrap_err()
                .to_string()
                .contains("no shards")
        );
        let gap = ShardMap::new(vec![shard("a", 0, 9), shard("b", 11, max)]).unwrap_err();
        assert!(
            gap.to_string().contains("no shard covers hash keys 10 to 10"),
            "{gap}"
        );
        let overlap = ShardMap::new(vec![shard("a", 0, 10), shard("b", 10, max)]).unwrap_err();
        assert!(
            overlap.to_string().contains("overlap at hash key 10"),
            "{overlap}"
        );
        let low = ShardMap::new(vec![shard("a", 5, max)]).unwrap_err();
        assert!(low.to_string().contains("0 to 4"), "{low}");
        let high = ShardMap::new(vec![shard("a", 0, 5)]).unwrap_err();
        assert!(high.to_string().contains("above 5"), "{high}");
        let dup = ShardMap::new(vec![shard("a", 0, 5), shard("a", 6, max)]).unwrap_err();
        assert!(dup.to_string().contains("appears twice"), "{dup}");
        assert!(HashKeyRange::new(2, 1).is_err());
        assert_eq!(
            HashKeyRange::parse("0", "340282366920938463463374607431768211455").unwrap(),
            HashKeyRange::FULL
        );
    }

    #[test]
    fn lookup_respects_inclusive_bounds() {
        let map = ShardMap::new(vec![shard("b", 11, u128::MAX), shard("a", 0, 10)]).unwrap();
        assert_eq!(map.shard_for(0).id.as_str(), "a");
        assert_eq!(map.shard_for(10).id.as_str(), "a");
        assert_eq!(map.shard_for(11).id.as_str(), "b");
        assert_eq!(map.shard_for(u128::MAX).id.as_str(), "b");
    }

    #[test]
    fn even_split_matches_kinesis_layout() {
        let two = ShardMap::even(2).unwrap();
        assert_eq!(two.shards()[0].id.as_str(), "shardId-000000000000");
        // CreateStream with two shards ends the first at 2^127 - 1.
        assert_eq!(two.shards()[0].range.end, (1u128 << 127) - 1);
        assert_eq!(two.shards()[1].range.start, 1u128 << 127);
        assert_eq!(
            ShardMap::even(1).unwrap(),
            ShardMap::single(ShardId::new("shardId-000000000000"))
        );
        assert!(ShardMap::even(0).is_err());
        for n in [3, 7, 64, 1000] {
            let map = ShardMap::even(n).unwrap();
            assert_eq!(
                ShardMap::new(map.shards().to_vec()).unwrap(),
                map,
                "{n} shards tile the space"
            );
        }
    }

    proptest! {
        #[test]
        fn every_key_lands_in_the_shard_whose_range_holds_it(n in 1u32..50, key in any::<u128>()) {
            let map = ShardMap::even(n).unwrap();
            let s = map.shard_for(key);
            prop_assert!(s.range.contains(key));
        }
    }
}
