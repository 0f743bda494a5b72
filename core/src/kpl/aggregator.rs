//! Grouping user records into aggregates, one pending aggregate per destination shard.

use std::collections::BTreeMap;
use std::time::Duration;

use super::codec::{Builder, MIN_RECORD_COST, UserRecord};
use super::shard::ShardMap;
use super::{KINESIS_MAX_RECORD_BYTES, KplError, MAX_PARTITION_KEY_CHARS};
use crate::position::ShardId;
use crate::time::Timestamp;

/// Limits of the producer's [`Aggregator`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregatorConfig {
    /// Largest aggregate, counted as Kinesis counts a record against its limit: the data (magic,
    /// body, trailer) plus the aggregate's partition key.
    pub max_aggregate_bytes: usize,
    /// Most user records in one aggregate. It bounds how many acks ride on one put; with events
    /// of a few dozen bytes or more the byte limit is reached first.
    pub max_records: usize,
    /// How long a pending aggregate may wait for more records before [`Aggregator::take_due`]
    /// hands it out: the latency paid for fuller puts.
    pub linger: Duration,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            max_aggregate_bytes: KINESIS_MAX_RECORD_BYTES,
            max_records: 100_000,
            linger: Duration::from_millis(100),
        }
    }
}

/// A finished aggregate, ready for the producer to put to the stream as one record. Its explicit
/// hash key routes it to `shard_id`, where every user record in it belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate<T> {
    /// The shard the aggregate was built for; the put should land there.
    pub shard_id: ShardId,
    /// The stream record's partition key: the first user record's, as the KPL does. Kinesis needs
    /// one, but routing goes by `explicit_hash_key`.
    pub partition_key: String,
    /// The first user record's hash key, in decimal: inside the shard's range, so Kinesis puts
    /// the aggregate on that shard even when the first record's key was not explicit.
    pub explicit_hash_key: String,
    /// The aggregated record: magic, `AggregatedRecord` protobuf, MD5.
    pub data: Vec<u8>,
    /// The tokens given with the user records, in record order: whom to ack once the put is
    /// durable, and whom to fail or retry if it is not.
    pub tokens: Vec<T>,
    pub user_records: usize,
    /// Sum of the user records' data lengths; against `data.len()` it gives the aggregation fill.
    pub user_bytes: usize,
    /// When the first user record went in, for the time-in-aggregator figure.
    pub opened_at: Timestamp,
}

/// The producer's side of KPL aggregation, before the stream put: it takes user records one at a
/// time and hands out aggregates that are full, lingered long enough, or flushed. Sans-IO: the
/// caller supplies the time and does the puts.
///
/// Records are grouped by the shard their hash key falls in, never mixed, because the KCL silently
/// drops user records that belong to another shard than the one it read the aggregate from. Each
/// aggregate's exact encoded size is known as it grows, so none ever exceeds the configured limit.
///
/// Every aggregate holds at least one user record and is always in KPL format, even with a single
/// record (the KPL would send that one unaggregated). Then the consumer never has to guess: data
/// that starts with the magic is an aggregate, whatever the user's bytes look like, and a record
/// still gets routed by its explicit hash key. The cost is about 25 bytes per lone record.
#[derive(Debug)]
pub struct Aggregator<T> {
    config: AggregatorConfig,
    map: ShardMap,
    /// Keyed by the shard's index in `map`; a BTreeMap so that output order is deterministic.
    pending: BTreeMap<usize, Pending<T>>,
}

#[derive(Debug)]
struct Pending<T> {
    builder: Builder,
    tokens: Vec<T>,
    first_hash_key: u128,
    opened_at: Timestamp,
}

impl<T> Pending<T> {
    /// What Kinesis will count: the data plus the partition key.
    fn size(&self) -> usize {
        self.builder.len() + self.builder.first_partition_key().map_or(0, str::len)
    }
}

impl<T> Aggregator<T> {
    pub fn new(config: AggregatorConfig, map: ShardMap) -> Result<Self, KplError> {
        if config.max_records == 0 {
            return Err(KplError::InvalidConfig("max_records must be at least 1".into()));
        }
        if config.max_aggregate_bytes > KINESIS_MAX_RECORD_BYTES {
            return Err(KplError::InvalidConfig(format!(
                "max_aggregate_bytes {} is over Kinesis' record limit of {KINESIS_MAX_RECORD_BYTES}",
                config.max_aggregate_bytes
            )));
        }
        Ok(Aggregator {
            config,
            map,
            pending: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    pub fn shard_map(&self) -> &ShardMap {
        &self.map
    }

    /// Adds a user record for the shard its hash key falls in, and returns the aggregates that
    /// this filled: the shard's pending one if the record did not fit in it, and the record's
    /// own if that is now full. A record that fits in no aggregate, or whose keys Kinesis would
    /// refuse, is an error and leaves the aggregator as it was (the token comes back to no one).
    pub fn add(
        &mut self,
        record: UserRecord,
        token: T,
        now: Timestamp,
    ) -> Result<Vec<Aggregate<T>>, KplError> {
        let chars = record.partition_key.chars().count();
        if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
            return Err(KplError::InvalidPartitionKey { chars });
        }
        let hash_key = record.hash_key()?;
        let alone = Builder::default().len()
            + Builder::default().cost(
                &record.partition_key,
                record.explicit_hash_key.as_deref(),
                record.data.len(),
            )
            + record.partition_key.len();
        if alone > self.config.max_aggregate_bytes {
            return Err(KplError::RecordTooLarge {
                size: alone,
                limit: self.config.max_aggregate_bytes,
            });
        }
        Ok(self.add_checked(record, hash_key, token, now))
    }

    fn add_checked(
        &mut self,
        record: UserRecord,
        hash_key: u128,
        token: T,
        now: Timestamp,
    ) -> Vec<Aggregate<T>> {
        let index = self.map.index_for(hash_key);
        let mut out = Vec::new();
        if let Some(p) = self.pending.get(&index) {
            let cost = p.builder.cost(
                &record.partition_key,
                record.explicit_hash_key.as_deref(),
                record.data.len(),
            );
            let fits = p.builder.record_count() < self.config.max_records
                && p.size() + cost <= self.config.max_aggregate_bytes;
            if !fits {
                out.extend(self.take(index));
            }
        }
        let p = self.pending.entry(index).or_insert_with(|| Pending {
            builder: Builder::default(),
            tokens: Vec::new(),
            first_hash_key: hash_key,
            opened_at: now,
        });
        p.builder
            .push(record.partition_key, record.explicit_hash_key, record.data);
        p.tokens.push(token);
        let full = p.builder.record_count() >= self.config.max_records
            || self.config.max_aggregate_bytes.saturating_sub(p.size()) < MIN_RECORD_COST;
        if full {
            out.extend(self.take(index));
        }
        out
    }

    /// Hands out the pending aggregates that have waited at least the linger, oldest first.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<Aggregate<T>> {
        let linger = self.config.linger;
        self.take_where(|p| now.saturating_since(p.opened_at) >= linger)
    }

    /// When the oldest pending aggregate comes due, for the driver to set its timer; `None` when
    /// nothing is pending.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.pending
            .values()
            .map(|p| p.opened_at)
            .min()
            .map(|t| t.saturating_add(self.config.linger))
    }

    /// Hands out every pending aggregate, oldest first, e.g. at shutdown.
    pub fn flush_all(&mut self) -> Vec<Aggregate<T>> {
        self.take_where(|_| true)
    }

    /// Swaps in a new shard map after a reshard. Pending user records are regrouped by the new
    /// shards, since an aggregate built for a shard that has since split would mix the children's
    /// records; aggregates that fill up while regrouping are returned.
    pub fn set_shard_map(&mut self, map: ShardMap) -> Vec<Aggregate<T>> {
        if map == self.map {
            return Vec::new();
        }
        self.map = map;
        let mut old: Vec<Pending<T>> = std::mem::take(&mut self.pending).into_values().collect();
        // Oldest first, so each new aggregate keeps the earliest opening time among its records,
        // and records of one partition key (all in one old aggregate) keep their order.
        old.sort_by_key(|p| p.opened_at);
        let mut out = Vec::new();
        for p in old {
            let opened_at = p.opened_at;
            for (record, token) in p.builder.into_user_records().into_iter().zip(p.tokens) {
                // Validated when first added; the hash key cannot fail now.
                if let Ok(hash_key) = record.hash_key() {
                    out.extend(self.add_checked(record, hash_key, token, opened_at));
                }
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// User records waiting in pending aggregates.
    pub fn pending_records(&self) -> usize {
        self.pending.values().map(|p| p.builder.record_count()).sum()
    }

    /// Bytes the pending aggregates would take on the wire, for the producer's memory budget.
    pub fn pending_bytes(&self) -> usize {
        self.pending.values().map(Pending::size).sum()
    }

    fn take_where(&mut self, due: impl Fn(&Pending<T>) -> bool) -> Vec<Aggregate<T>> {
        let mut keys: Vec<(Timestamp, usize)> = self
            .pending
            .iter()
            .filter(|(_, p)| due(p))
            .map(|(&i, p)| (p.opened_at, i))
            .collect();
        keys.sort();
        keys.into_iter().filter_map(|(_, i)| self.take(i)).collect()
    }

    fn take(&mut self, index: usize) -> Option<Aggregate<T>> {
        let p = self.pending.remove(&index)?;
        let shard_id = self.map.shards()[index].id.clone();
        let partition_key = p.builder.first_partition_key().unwrap_or_default().to_owned();
        let user_records = p.builder.record_count();
        let user_bytes = p.builder.user_bytes();
        Some(Aggregate {
            shard_id,
            partition_key,
            explicit_hash_key: p.first_hash_key.to_string(),
            data: p.builder.finish(),
            tokens: p.tokens,
            user_records,
            user_bytes,
            opened_at: p.opened_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::kpl::codec::tests::user_record;
    use crate::kpl::shard::{HashKeyRange, Shard, hash_key_of, parse_explicit_hash_key};
    use crate::kpl::{decode, encoded_len};

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn config(max_aggregate_bytes: usize, max_records: usize) -> AggregatorConfig {
        AggregatorConfig {
            max_aggregate_bytes,
            max_records,
            linger: Duration::from_millis(100),
        }
    }

    fn one_shard(config: AggregatorConfig) -> Aggregator<u32> {
        Aggregator::new(config, ShardMap::single(ShardId::new("s0"))).unwrap()
    }

    #[test]
    fn default_config_is_kinesis_record_limit() {
        let c = AggregatorConfig::default();
        assert_eq!(c.max_aggregate_bytes, 1_048_576);
        assert!(Aggregator::<u32>::new(c, ShardMap::single(ShardId::new("s"))).is_ok());
        let err =
            Aggregator::<u32>::new(config(1_048_577, 10), ShardMap::single(ShardId::new("s"))).unwrap_err();
        assert!(err.to_string().contains("over Kinesis' record limit"), "{err}");
        assert!(Aggregator::<u32>::new(config(1000, 0), ShardMap::single(ShardId::new("s"))).is_err());
    }

    #[test]
    fn single_record_becomes_a_one_record_aggregate() {
        let mut agg = one_shard(config(1000, 10));
        assert!(
            agg.add(UserRecord::new("pk", b"x".to_vec()), 7, t(0))
                .unwrap()
                .is_empty()
        );
        let out = agg.flush_all();
        assert_eq!(out.len(), 1);
        let a = &out[0];
        assert_eq!(a.tokens, vec![7]);
        assert_eq!((a.user_records, a.user_bytes), (1, 1));
        assert_eq!(a.partition_key, "pk");
        assert_eq!(a.explicit_hash_key, hash_key_of("pk").to_string());
        assert_eq!(a.shard_id.as_str(), "s0");
        assert_eq!(
            decode("pk", &a.data).unwrap(),
            vec![UserRecord::new("pk", b"x".to_vec())]
        );
        assert!(agg.is_empty() && agg.flush_all().is_empty());
    }

    #[test]
    fn fills_up_by_record_count() {
        let mut agg = one_shard(config(1000, 3));
        let mut out = Vec::new();
        for i in 0..7u32 {
            out.extend(agg.add(UserRecord::new("pk", vec![i as u8]), i, t(0)).unwrap());
        }
        assert_eq!(
            out.iter().map(|a| a.tokens.clone()).collect::<Vec<_>>(),
            vec![vec![0, 1, 2], vec![3, 4, 5]]
        );
        assert_eq!(agg.pending_records(), 1);
    }

    #[test]
    fn fills_up_by_bytes_exactly_at_the_limit() {
        // One record "pk"+10 bytes alone: 4 magic + 4 pk table + 16 record + 16 md5 + 2 pk = 42.
        // Each further one with the same key adds 16.
        let rec = || UserRecord::new("pk", vec![0u8; 10]);
        assert_eq!(encoded_len(&[rec()]) + 2, 42);
        let mut agg = one_shard(config(42 + 16 * 2, 100));
        let mut out = Vec::new();
        for i in 0..3 {
            out.extend(agg.add(rec(), i, t(0)).unwrap());
        }
        // Exactly full after three records: handed out at once, with no room left.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.len() + out[0].partition_key.len(), 74);
        assert!(agg.is_empty());

        // One byte less and the third record starts a new aggregate.
        let mut agg = one_shard(config(42 + 16 * 2 - 1, 100));
        let mut out = Vec::new();
        for i in 0..3 {
            out.extend(agg.add(rec(), i, t(0)).unwrap());
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tokens, vec![0, 1]);
        assert_eq!(agg.pending_records(), 1);
    }

    #[test]
    fn record_too_large_for_any_aggregate_is_an_error() {
        let mut agg = one_shard(AggregatorConfig::default());
        agg.add(UserRecord::new("a", b"first".to_vec()), 1, t(0)).unwrap();
        let err = agg
            .add(UserRecord::new("pk", vec![0u8; 1_048_576]), 2, t(0))
            .unwrap_err();
        match &err {
            KplError::RecordTooLarge { size, limit } => assert!(size > limit && *limit == 1_048_576),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("user record too large"), "{err}");
        // The aggregator is as it was.
        assert_eq!(
            agg.flush_all()
                .into_iter()
                .flat_map(|a| a.tokens)
                .collect::<Vec<_>>(),
            vec![1]
        );
    }

    #[test]
    fn largest_single_record_fits_exactly() {
        let mut agg = one_shard(AggregatorConfig::default());
        // magic 4 + pk table 3 + record (tag 1 + len 3 + pk index 2 + data tag 1 + len 3 + n)
        // + md5 16 + stream partition key 1
        let n = 1_048_576 - (4 + 3 + 10 + 16 + 1);
        let out = agg.add(UserRecord::new("p", vec![7u8; n]), 1, t(0)).unwrap();
        assert_eq!(out.len(), 1, "exactly full, so handed out at once");
        assert_eq!(out[0].data.len() + 1, 1_048_576);
        assert!(agg.add(UserRecord::new("p", vec![7u8; n + 1]), 2, t(0)).is_err());
    }

    #[test]
    fn invalid_keys_are_refused() {
        let mut agg = one_shard(config(10_000, 10));
        let err = agg.add(UserRecord::new("", b"x".to_vec()), 1, t(0)).unwrap_err();
        assert_eq!(err, KplError::InvalidPartitionKey { chars: 0 });
        let err = agg
            .add(UserRecord::new("é".repeat(257), b"x".to_vec()), 1, t(0))
            .unwrap_err();
        assert_eq!(err, KplError::InvalidPartitionKey { chars: 257 });
        assert!(
            agg.add(UserRecord::new("é".repeat(256), b"x".to_vec()), 1, t(0))
                .is_ok()
        );
        let err = agg
            .add(
                UserRecord::new("a", b"x".to_vec()).with_explicit_hash_key("-1"),
                1,
                t(0),
            )
            .unwrap_err();
        assert_eq!(err, KplError::InvalidExplicitHashKey("-1".into()));
    }

    #[test]
    fn lingers_then_comes_due_oldest_first() {
        let map = ShardMap::even(4).unwrap();
        let mut agg: Aggregator<u32> = Aggregator::new(config(10_000, 100), map.clone()).unwrap();
        assert_eq!(agg.next_due(), None);
        // Explicit hash keys pick the shard: shard 3 first, then shard 0.
        let top = map.shards()[3].range.start.to_string();
        agg.add(
            UserRecord::new("a", b"1".to_vec()).with_explicit_hash_key(top),
            1,
            t(10),
        )
        .unwrap();
        agg.add(
            UserRecord::new("b", b"2".to_vec()).with_explicit_hash_key("0"),
            2,
            t(50),
        )
        .unwrap();
        assert_eq!(agg.next_due(), Some(t(110)));
        assert!(agg.take_due(t(109)).is_empty());
        let due = agg.take_due(t(110));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].shard_id, map.shards()[3].id);
        assert_eq!(due[0].opened_at, t(10));
        assert_eq!(agg.next_due(), Some(t(150)));
        agg.add(
            UserRecord::new("c", b"3".to_vec()).with_explicit_hash_key("1"),
            3,
            t(120),
        )
        .unwrap();
        let due = agg.take_due(t(1000));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].tokens, vec![2, 3]);
        assert_eq!(due[0].opened_at, t(50));
    }

    #[test]
    fn aggregate_routes_to_its_shard_by_explicit_hash_key() {
        let map = ShardMap::even(8).unwrap();
        let mut agg: Aggregator<usize> = Aggregator::new(config(100_000, 1000), map.clone()).unwrap();
        for i in 0..500 {
            agg.add(UserRecord::new(format!("user-{i}"), b"{}".to_vec()), i, t(0))
                .unwrap();
        }
        let out = agg.flush_all();
        assert_eq!(out.len(), 8);
        for a in &out {
            let ehk = parse_explicit_hash_key(&a.explicit_hash_key).unwrap();
            assert_eq!(map.shard_for(ehk).id, a.shard_id);
            for r in decode(&a.partition_key, &a.data).unwrap() {
                assert_eq!(map.shard_for(r.hash_key().unwrap()).id, a.shard_id, "{r:?}");
            }
        }
    }

    #[test]
    fn reshard_regroups_pending_records() {
        let one = ShardMap::single(ShardId::new("parent"));
        let mut agg: Aggregator<usize> = Aggregator::new(config(100_000, 1000), one).unwrap();
        for i in 0..50 {
            agg.add(UserRecord::new(format!("k{i}"), vec![i as u8]), i, t(i as i64))
                .unwrap();
        }
        let half = 1u128 << 127;
        let split = ShardMap::new(vec![
            Shard {
                id: ShardId::new("left"),
                range: HashKeyRange::new(0, half - 1).unwrap(),
            },
            Shard {
                id: ShardId::new("right"),
                range: HashKeyRange::new(half, u128::MAX).unwrap(),
            },
        ])
        .unwrap();
        assert!(agg.set_shard_map(split.clone()).is_empty());
        assert_eq!(agg.pending_records(), 50);
        let out = agg.flush_all();
        assert_eq!(out.len(), 2);
        let mut tokens = Vec::new();
        for a in out {
            assert_eq!(a.opened_at, t(0), "keeps the old aggregate's opening time");
            for r in decode(&a.partition_key, &a.data).unwrap() {
                assert_eq!(split.shard_for(r.hash_key().unwrap()).id, a.shard_id);
            }
            tokens.extend(a.tokens);
        }
        tokens.sort();
        assert_eq!(tokens, (0..50).collect::<Vec<_>>());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Add(UserRecord),
        Tick(i64),
        Reshard(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            20 => user_record().prop_map(Op::Add),
            1 => (100usize..3000).prop_map(|n| Op::Add(UserRecord::new("big", vec![1u8; n]))),
            3 => (0i64..80).prop_map(Op::Tick),
            1 => (1u32..6).prop_map(Op::Reshard),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_record_comes_out_once_in_one_shard_under_the_limit(
            shards in 1u32..6,
            limit in 60usize..3000,
            max_records in 1usize..40,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let mut map = ShardMap::even(shards).unwrap();
            let mut agg: Aggregator<usize> = Aggregator::new(config(limit, max_records), map.clone()).unwrap();
            let mut added: Vec<Option<UserRecord>> = Vec::new();
            let mut out: Vec<(ShardMap, Aggregate<usize>)> = Vec::new();
            let mut now = 0i64;
            for op in ops {
                match op {
                    Op::Add(r) => {
                        let token = added.len();
                        match agg.add(r.clone(), token, t(now)) {
                            Ok(full) => {
                                added.push(Some(r));
                                out.extend(full.into_iter().map(|a| (map.clone(), a)));
                            }
                            Err(KplError::RecordTooLarge { size, limit: l }) => {
                                prop_assert_eq!(l, limit);
                                prop_assert_eq!(size, encoded_len(std::slice::from_ref(&r)) + r.partition_key.len());
                                prop_assert!(size > limit);
                                added.push(None);
                            }
                            Err(KplError::InvalidPartitionKey { chars: 0 }) => {
                                prop_assert!(r.partition_key.is_empty());
                                added.push(None);
                            }
                            Err(e) => prop_assert!(false, "unexpected error {e}"),
                        }
                    }
                    Op::Tick(ms) => {
                        now += ms;
                        out.extend(agg.take_due(t(now)).into_iter().map(|a| (map.clone(), a)));
                    }
                    Op::Reshard(n) => {
                        map = ShardMap::even(n).unwrap();
                        out.extend(agg.set_shard_map(map.clone()).into_iter().map(|a| (map.clone(), a)));
                    }
                }
                // At most one pending aggregate per shard, and maps here have at most 5.
                prop_assert!(agg.pending_bytes() <= limit * 5);
            }
            out.extend(agg.flush_all().into_iter().map(|a| (map.clone(), a)));
            prop_assert!(agg.is_empty());

            let mut seen = BTreeSet::new();
            let mut last_token_per_key: BTreeMap<String, usize> = BTreeMap::new();
            for (map_then, a) in &out {
                prop_assert!(a.data.len() + a.partition_key.len() <= limit, "over the limit");
                prop_assert!(a.user_records >= 1 && a.user_records <= max_records);
                prop_assert_eq!(a.tokens.len(), a.user_records);
                let records = decode(&a.partition_key, &a.data).unwrap();
                prop_assert_eq!(records.len(), a.user_records);
                prop_assert_eq!(encoded_len(&records), a.data.len());
                prop_assert_eq!(records.iter().map(|r| r.data.len()).sum::<usize>(), a.user_bytes);
                prop_assert_eq!(&records[0].partition_key, &a.partition_key);
                let shard = map_then.shards().iter().find(|s| s.id == a.shard_id).unwrap();
                let ehk = parse_explicit_hash_key(&a.explicit_hash_key).unwrap();
                prop_assert!(shard.range.contains(ehk));
                for (r, &token) in records.iter().zip(&a.tokens) {
                    prop_assert!(shard.range.contains(r.hash_key().unwrap()), "mixed shards");
                    prop_assert_eq!(Some(r), added[token].as_ref());
                    prop_assert!(seen.insert(token), "token {} twice", token);
                    // Records of one partition key keep their order.
                    if r.explicit_hash_key.is_none()
                        && let Some(prev) = last_token_per_key.insert(r.partition_key.clone(), token)
                    {
                        prop_assert!(prev < token, "order of key {}", r.partition_key);
                    }
                }
            }
            let expected: BTreeSet<usize> =
                added.iter().enumerate().filter(|(_, r)| r.is_some()).map(|(i, _)| i).collect();
            prop_assert_eq!(seen, expected);
        }
    }
}
