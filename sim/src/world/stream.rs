//! A stream of shards, routed by hash key like Kinesis, with sequence numbers, resharding (split
//! and merge: parents close, children take the new records) and the producer-side faults.

use std::sync::{Arc, Mutex};

use microbatch_core::kpl::{HashKeyRange, ShardMap, hash_key_of, parse_explicit_hash_key};
use microbatch_core::ports::{
    Clock, Cursor, PortError, PutAck, PutRecord, ReadBatch, ReadFrom, ShardInfo, StreamReader, StreamRecord,
    StreamWriter,
};
use microbatch_core::position::{SequenceNumber, ShardId};

use super::lock;
use crate::ctx::{Ctx, Fault, Sabotage};

/// How long a cursor stays good, as Kinesis's shard iterators do.
const CURSOR_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Shard {
    pub info: ShardInfo,
    pub records: Vec<StreamRecord>,
    /// The last record handed to a reader (for the checkpoint-before-flush sabotage).
    pub last_read: Option<SequenceNumber>,
}

#[derive(Debug)]
struct State {
    shards: Vec<Shard>,
    next_seq: u128,
    next_shard: u32,
}

/// An in-memory stream.
#[derive(Debug)]
pub struct MemStream {
    ctx: Arc<Ctx>,
    state: Mutex<State>,
}

impl MemStream {
    /// A stream of `n` shards splitting the hash-key space evenly, as `CreateStream` does.
    pub fn new(ctx: Arc<Ctx>, n: u32) -> Self {
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
                last_read: None,
            })
            .collect();
        MemStream {
            ctx,
            state: Mutex::new(State {
                shards,
                next_seq: 1_000,
                next_shard: n,
            }),
        }
    }

    /// Every shard with its records (for checks).
    pub fn snapshot(&self) -> Vec<Shard> {
        lock(&self.state).shards.clone()
    }

    /// Each shard's id, whether it is closed, and its last record.
    pub fn tails(&self) -> Vec<(ShardId, bool, Option<StreamRecord>)> {
        lock(&self.state)
            .shards
            .iter()
            .map(|s| (s.info.id.clone(), s.info.closed, s.records.last().cloned()))
            .collect()
    }

    pub fn record_count(&self) -> usize {
        lock(&self.state).shards.iter().map(|s| s.records.len()).sum()
    }

    /// The records of one shard from index `from` on (for incremental checks).
    pub fn records_from(&self, shard: &ShardId, from: usize) -> Vec<StreamRecord> {
        lock(&self.state)
            .shards
            .iter()
            .find(|s| &s.info.id == shard)
            .map(|s| s.records.get(from..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }

    pub fn last_read(&self, shard: &ShardId) -> Option<SequenceNumber> {
        lock(&self.state)
            .shards
            .iter()
            .find(|s| &s.info.id == shard)
            .and_then(|s| s.last_read.clone())
    }

    pub fn open_shards(&self) -> usize {
        lock(&self.state).shards.iter().filter(|s| !s.info.closed).count()
    }

    fn child_id(s: &mut State) -> ShardId {
        let id = ShardId::new(format!("shardId-{:012}", s.next_shard));
        s.next_shard += 1;
        id
    }

    /// Splits the `pick`-th open shard in two halves (`SplitShard`); false if it is too narrow.
    pub fn split(&self, pick: u64) -> bool {
        let mut s = lock(&self.state);
        let open: Vec<usize> = (0..s.shards.len())
            .filter(|&i| !s.shards[i].info.closed)
            .collect();
        let i = open[(pick % open.len() as u64) as usize];
        let range = s.shards[i].info.range;
        if range.end - range.start < 2 {
            return false;
        }
        let mid = range.start + (range.end - range.start) / 2;
        let parent = s.shards[i].info.id.clone();
        s.shards[i].info.closed = true;
        for r in [(range.start, mid), (mid + 1, range.end)] {
            let id = Self::child_id(&mut s);
            s.shards.push(Shard {
                info: ShardInfo {
                    id,
                    parent: Some(parent.clone()),
                    adjacent_parent: None,
                    range: HashKeyRange::new(r.0, r.1).expect("ordered"),
                    closed: false,
                },
                records: Vec::new(),
                last_read: None,
            });
        }
        drop(s);
        self.ctx.trace("stream", format_args!("split {parent}"));
        true
    }

    /// Merges the `pick`-th pair of adjacent open shards (`MergeShards`); false if only one is open.
    pub fn merge(&self, pick: u64) -> bool {
        let mut s = lock(&self.state);
        let mut open: Vec<usize> = (0..s.shards.len())
            .filter(|&i| !s.shards[i].info.closed)
            .collect();
        if open.len() < 2 {
            return false;
        }
        open.sort_by_key(|&i| s.shards[i].info.range.start);
        let k = (pick % (open.len() as u64 - 1)) as usize;
        let (a, b) = (open[k], open[k + 1]);
        let (ra, rb) = (s.shards[a].info.range, s.shards[b].info.range);
        s.shards[a].info.closed = true;
        s.shards[b].info.closed = true;
        let (pa, pb) = (s.shards[a].info.id.clone(), s.shards[b].info.id.clone());
        let id = Self::child_id(&mut s);
        s.shards.push(Shard {
            info: ShardInfo {
                id,
                parent: Some(pa.clone()),
                adjacent_parent: Some(pb.clone()),
                range: HashKeyRange::new(ra.start, rb.end).expect("adjacent"),
                closed: false,
            },
            records: Vec::new(),
            last_read: None,
        });
        drop(s);
        self.ctx.trace("stream", format_args!("merge {pa} {pb}"));
        true
    }

    fn route(shards: &[Shard], hash: u128) -> Option<usize> {
        shards
            .iter()
            .position(|s| !s.info.closed && s.info.range.contains(hash))
    }
}

impl StreamWriter for MemStream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        Ok(lock(&self.state).shards.iter().map(|s| s.info.clone()).collect())
    }

    async fn put_records(
        &self,
        records: Vec<PutRecord>,
    ) -> Result<Vec<Result<PutAck, PortError>>, PortError> {
        self.ctx.latency(1, 30).await;
        if self.ctx.throttled() {
            return Err(PortError::throttled(
                "stream",
                "ProvisionedThroughputExceededException (burst)",
            ));
        }
        let now = self.ctx.clock.now();
        let mut out = Vec::with_capacity(records.len());
        {
            let mut s = lock(&self.state);
            for r in records {
                let hash = match &r.explicit_hash_key {
                    Some(k) => {
                        parse_explicit_hash_key(k).map_err(|e| PortError::invalid("stream", e.to_string()))?
                    }
                    None => hash_key_of(&r.partition_key),
                };
                if self.ctx.chance(Fault::PutRecordFailed) {
                    out.push(Err(PortError::throttled(
                        "stream",
                        "ProvisionedThroughputExceededException",
                    )));
                    continue;
                }
                let Some(i) = Self::route(&s.shards, hash) else {
                    out.push(Err(PortError::invalid(
                        "stream",
                        "no open shard for the hash key",
                    )));
                    continue;
                };
                s.next_seq += 1;
                let sequence = SequenceNumber::from_u128(s.next_seq);
                s.shards[i].records.push(StreamRecord {
                    seq: sequence.clone(),
                    partition_key: r.partition_key,
                    data: r.data,
                    arrived_at: now,
                });
                out.push(Ok(PutAck {
                    shard: s.shards[i].info.id.clone(),
                    seq: sequence,
                }));
            }
        }
        if self.ctx.chance(Fault::PutTimeoutStored) {
            // The records are in; the answer is lost on the way back.
            self.ctx.latency(100, 2_000).await;
            return Err(PortError::unavailable("stream", "request timed out"));
        }
        Ok(out)
    }
}

/// A cursor: the shard, the index of the next record, and when it was issued.
fn cursor(shard: &ShardId, index: usize, issued: microbatch_core::time::Timestamp) -> Cursor {
    Cursor(format!("{shard}|{index}|{}", issued.as_micros()))
}

fn parse_cursor(c: &Cursor) -> Option<(ShardId, usize, microbatch_core::time::Timestamp)> {
    let mut parts = c.as_str().split('|');
    let shard = ShardId::new(parts.next()?);
    let index = parts.next()?.parse().ok()?;
    let issued = microbatch_core::time::Timestamp::from_micros(parts.next()?.parse().ok()?);
    Some((shard, index, issued))
}

impl StreamReader for MemStream {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        self.ctx.latency(0, 10).await;
        if self.ctx.throttled() {
            return Err(PortError::throttled("stream", "LimitExceededException (burst)"));
        }
        if self.ctx.chance(Fault::ListShardsFailed) {
            return Err(PortError::unavailable(
                "stream",
                "ListShards: 500 InternalFailure",
            ));
        }
        Ok(lock(&self.state).shards.iter().map(|s| s.info.clone()).collect())
    }

    async fn open(&self, shard: &ShardId, from: &ReadFrom) -> Result<Cursor, PortError> {
        self.ctx.latency(0, 10).await;
        if self.ctx.throttled() {
            return Err(PortError::throttled(
                "stream",
                "GetShardIterator: LimitExceededException",
            ));
        }
        let shards = lock(&self.state);
        let Some(s) = shards.shards.iter().find(|s| &s.info.id == shard) else {
            return Err(PortError::not_found("stream", format!("no shard {shard}")));
        };
        let mut start = match from {
            ReadFrom::Oldest => 0,
            ReadFrom::At(seq) => s.records.partition_point(|r| &r.seq < seq),
            ReadFrom::After(seq) => s.records.partition_point(|r| &r.seq <= seq),
        };
        if self.ctx.sabotage == Sabotage::ReopenAtLatest && *from != ReadFrom::Oldest {
            start = s.records.len();
        }
        Ok(cursor(shard, start, self.ctx.clock.now()))
    }

    async fn read(&self, shard: &ShardId, at: &Cursor, limit: usize) -> Result<ReadBatch, PortError> {
        self.ctx.latency(0, 10).await;
        let now = self.ctx.clock.now();
        let Some((cursor_shard, start, issued)) = parse_cursor(at) else {
            return Err(PortError::invalid("stream", format!("not a cursor: {at:?}")));
        };
        if &cursor_shard != shard {
            return Err(PortError::invalid(
                "stream",
                format!("cursor of {cursor_shard} used for {shard}"),
            ));
        }
        if now.saturating_since(issued) >= CURSOR_LIFETIME || self.ctx.chance(Fault::CursorExpired) {
            return Err(PortError::expired(
                "stream",
                "ExpiredIteratorException: Iterator expired",
            ));
        }
        if self.ctx.throttled() {
            return Err(PortError::throttled(
                "stream",
                "ProvisionedThroughputExceededException (burst)",
            ));
        }
        let mut shards = lock(&self.state);
        let Some(s) = shards.shards.iter_mut().find(|s| &s.info.id == shard) else {
            return Err(PortError::not_found("stream", format!("no shard {shard}")));
        };
        let start = start.min(s.records.len());
        if start < s.records.len() && self.ctx.chance(Fault::EmptyPage) {
            // A gap in the shard: nothing this time, a new cursor at the same place.
            let next = (self.ctx.sabotage != Sabotage::EmptyPageEndsShard).then(|| cursor(shard, start, now));
            return Ok(ReadBatch {
                records: Vec::new(),
                millis_behind_latest: Some(1),
                next,
            });
        }
        let records: Vec<StreamRecord> = s.records[start..].iter().take(limit).cloned().collect();
        let end = start + records.len();
        if let Some(last) = records.last()
            && s.last_read.as_ref().is_none_or(|l| *l < last.seq)
        {
            s.last_read = Some(last.seq.clone());
        }
        let finished = s.info.closed && end == s.records.len();
        Ok(ReadBatch {
            millis_behind_latest: Some(if end == s.records.len() { 0 } else { 1 }),
            next: (!finished).then(|| cursor(shard, end, now)),
            records,
        })
    }
}
