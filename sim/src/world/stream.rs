//! A stream of shards, routed by hash key like Kinesis, with sequence numbers per shard.

use std::sync::Mutex;

use microbatch_core::kpl::{ShardMap, hash_key_of, parse_explicit_hash_key};
use microbatch_core::ports::{
    Clock, PortError, PutAck, PutRecord, ReadBatch, ReadFrom, ShardInfo, StreamReader, StreamRecord,
    StreamWriter,
};
use microbatch_core::position::{SequenceNumber, ShardId};

use super::lock;
use crate::clock::VirtualClock;

#[derive(Debug)]
struct Shard {
    info: ShardInfo,
    records: Vec<StreamRecord>,
}

/// An in-memory stream.
#[derive(Debug)]
pub struct MemStream {
    clock: VirtualClock,
    shards: Mutex<Vec<Shard>>,
    next_seq: Mutex<u128>,
}

impl MemStream {
    /// A stream of `n` shards splitting the hash-key space evenly, as `CreateStream` does.
    pub fn new(clock: VirtualClock, n: u32) -> Self {
        let map = ShardMap::even(n).expect("at least one shard");
        let shards = map
            .shards()
            .iter()
            .map(|s| Shard {
                info: ShardInfo {
                    id: s.id.clone(),
                    parent: None,
                    adjacent_parent: None,
                    range: s.range,
                    closed: false,
                },
                records: Vec::new(),
            })
            .collect();
        MemStream {
            clock,
            shards: Mutex::new(shards),
            next_seq: Mutex::new(1_000),
        }
    }

    /// Every record in every shard (for checks).
    pub fn record_count(&self) -> usize {
        lock(&self.shards).iter().map(|s| s.records.len()).sum()
    }

    fn route(shards: &[Shard], hash: u128) -> Option<usize> {
        shards
            .iter()
            .position(|s| !s.info.closed && s.info.range.contains(hash))
    }
}

impl StreamWriter for MemStream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        Ok(lock(&self.shards).iter().map(|s| s.info.clone()).collect())
    }

    async fn put_records(
        &self,
        records: Vec<PutRecord>,
    ) -> Result<Vec<Result<PutAck, PortError>>, PortError> {
        let now = self.clock.now();
        let mut shards = lock(&self.shards);
        let mut seq = lock(&self.next_seq);
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let hash = match &r.explicit_hash_key {
                Some(k) => {
                    parse_explicit_hash_key(k).map_err(|e| PortError::permanent("stream", e.to_string()))?
                }
                None => hash_key_of(&r.partition_key),
            };
            let Some(i) = Self::route(&shards, hash) else {
                out.push(Err(PortError::permanent(
                    "stream",
                    "no open shard for the hash key",
                )));
                continue;
            };
            *seq += 1;
            let sequence = SequenceNumber::from_u128(*seq);
            shards[i].records.push(StreamRecord {
                seq: sequence.clone(),
                partition_key: r.partition_key,
                data: r.data,
                arrived_at: now,
            });
            out.push(Ok(PutAck {
                shard: shards[i].info.id.clone(),
                seq: sequence,
            }));
        }
        Ok(out)
    }
}

impl StreamReader for MemStream {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        Ok(lock(&self.shards).iter().map(|s| s.info.clone()).collect())
    }

    async fn read(&self, shard: &ShardId, from: &ReadFrom, limit: usize) -> Result<ReadBatch, PortError> {
        let shards = lock(&self.shards);
        let Some(s) = shards.iter().find(|s| &s.info.id == shard) else {
            return Err(PortError::permanent("stream", format!("no shard {shard}")));
        };
        let start = match from {
            ReadFrom::Oldest => 0,
            ReadFrom::At(seq) => s.records.partition_point(|r| &r.seq < seq),
            ReadFrom::After(seq) => s.records.partition_point(|r| &r.seq <= seq),
        };
        let records: Vec<StreamRecord> = s.records[start..].iter().take(limit).cloned().collect();
        let end = start + records.len();
        Ok(ReadBatch {
            millis_behind_latest: Some(if end == s.records.len() { 0 } else { 1 }),
            end_of_shard: s.info.closed && end == s.records.len(),
            records,
        })
    }
}
