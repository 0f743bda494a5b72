//! The consumer: leased shards in, batches of CSV out, checkpoints after they are durable.
//!
//! Per record read: deaggregate (KPL), decode the envelope, map it to rows, add the rows to the
//! [`Batcher`]; every batch the batcher cuts is written to the object store (several writes in
//! flight at once, each retried until it succeeds), and only then released to the
//! [`CheckpointTracker`], whose safe position is written to the lease table. Events that cannot
//! be mapped are written to `rejected/` before the checkpoint may pass them.
//!
//! Memory: the batch policy's `budget_bytes` covers the rows buffered in the batcher *and* the
//! batches being written. A batch cut from the buffers still occupies memory until its write
//! finishes, so before starting another write, and before mapping the next record, the consumer
//! waits for writes in flight while buffered + in-flight bytes exceed the budget (see
//! [`Consumer::wait_for_room`]). Reading stops meanwhile: that is the back-pressure.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use super::retry::with_backoff;
use crate::batch::Compression;
use crate::batcher::{Batch, BatchPolicy, Batcher, PolicyError};
use crate::catalog::Catalog;
use crate::checkpoint::{CheckpointTracker, TrackerError};
use crate::event::Envelope;
use crate::import::Backoff;
use crate::kpl;
use crate::lease::LeaseCoordinator;
use crate::mapping::{Lineage, MappedRows, Mapper};
use crate::ports::{
    Bytes, Checkpoint, Clock, Entropy, Lease, LeaseError, LeaseStore, ObjectStore, Observation, Observer,
    PortError, ReadFrom, StreamReader,
};
use crate::position::{Position, SequenceNumber, ShardId};
use crate::time::Timestamp;

/// How the consumer reads, batches and checkpoints.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// This worker's name in the lease table.
    pub owner: String,
    pub batch: BatchPolicy,
    pub compression: Compression,
    /// Records per read.
    pub read_limit: usize,
    /// How long to wait before reading a shard that had nothing new.
    pub idle_poll: Duration,
    /// How often to list leases (renew, take, notice losses) and shards.
    pub lease_sync: Duration,
    /// A lease whose counter has not moved for this long is free to take.
    pub failover: Duration,
    pub max_leases: usize,
    /// How often to write a shard's checkpoint when it moved.
    pub checkpoint_every: Duration,
    /// Object writes in flight at once; more waits (back-pressure on reading).
    pub max_inflight_writes: usize,
    /// Retries of store writes (unbounded: the checkpoint waits meanwhile).
    pub write_retry: Backoff,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            owner: "consumer-1".into(),
            batch: BatchPolicy::default(),
            compression: Compression::None,
            read_limit: 10_000,
            idle_poll: Duration::from_millis(200),
            lease_sync: Duration::from_secs(3),
            failover: Duration::from_secs(10),
            max_leases: 1024,
            checkpoint_every: Duration::from_millis(500),
            max_inflight_writes: 32,
            write_retry: Backoff::new(Duration::from_millis(50), Duration::from_secs(10), u32::MAX),
        }
    }
}

/// A consumer failure that stops it (a port failure that retries cannot cure, or a bug).
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    #[error("{0}")]
    Port(#[from] PortError),
}

#[derive(Debug)]
struct ShardState {
    lease: Lease,
    from: ReadFrom,
    /// Positions at or before this were done before the lease was taken (a checkpoint inside an
    /// aggregate): skip them when the aggregate is read again.
    skip_through: Option<Position>,
    ended: bool,
    next_read: Timestamp,
    last_checkpoint_write: Timestamp,
    /// A checkpoint advanced in the tracker but not yet stored.
    unsaved: Option<Position>,
    /// Which tenure of this shard's lease this is: a write started under an earlier one (before
    /// the lease was lost and taken again) must not release a hold of this one.
    tenure: u64,
}

struct Written {
    /// Bytes of the batch body, returned to the budget when the write is done.
    bytes: usize,
    shard: ShardId,
    first: Position,
    /// The tenure of the shard the batch was cut in; `None` if the shard was not held.
    tenure: Option<u64>,
}

type WriteFuture<'a> = Pin<Box<dyn Future<Output = Written> + Send + 'a>>;

/// What one [`Consumer::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub records: usize,
    pub batches_written: usize,
}

/// What a rejected event looks like in `rejected/`.
#[derive(Serialize)]
struct RejectedRecord<'a> {
    reason: &'a str,
    shard: &'a str,
    sequence: &'a str,
    sub_sequence: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a Envelope>,
    /// The raw user record when it is not an envelope at all, lossy UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
}

/// The consumer driver. Ports are borrowed so that in-flight writes can hold them.
pub struct Consumer<'a, R, O, L, C, E, B> {
    reader: &'a R,
    store: &'a O,
    leases: &'a L,
    clock: &'a C,
    entropy: &'a E,
    observer: &'a B,
    catalog: &'a Catalog,
    config: ConsumerConfig,
    batcher: Batcher,
    tracker: CheckpointTracker,
    coordinator: LeaseCoordinator,
    shards: BTreeMap<ShardId, ShardState>,
    inflight: FuturesUnordered<WriteFuture<'a>>,
    /// Bytes of the batches in `inflight`.
    inflight_bytes: usize,
    next_lease_sync: Timestamp,
    mapped: MappedRows,
    tenures: u64,
}

impl<R, O, L, C, E, B> std::fmt::Debug for Consumer<'_, R, O, L, C, E, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("owner", &self.config.owner)
            .field("shards", &self.shards.keys().collect::<Vec<_>>())
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

impl<'a, R, O, L, C, E, B> Consumer<'a, R, O, L, C, E, B>
where
    R: StreamReader,
    O: ObjectStore,
    L: LeaseStore,
    C: Clock,
    E: Entropy,
    B: Observer,
{
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        reader: &'a R,
        store: &'a O,
        leases: &'a L,
        clock: &'a C,
        entropy: &'a E,
        observer: &'a B,
        catalog: &'a Catalog,
        config: ConsumerConfig,
    ) -> Result<Self, ConsumerError> {
        let batcher = Batcher::new(config.batch, catalog)?;
        let coordinator = LeaseCoordinator::new(config.owner.clone(), config.failover, config.max_leases);
        Ok(Consumer {
            reader,
            store,
            leases,
            clock,
            entropy,
            observer,
            catalog,
            batcher,
            tracker: CheckpointTracker::new(),
            coordinator,
            shards: BTreeMap::new(),
            inflight: FuturesUnordered::new(),
            inflight_bytes: 0,
            next_lease_sync: Timestamp::UNIX_EPOCH,
            mapped: MappedRows::default(),
            tenures: 0,
            config,
        })
    }

    /// Shards this worker holds now.
    pub fn shards(&self) -> impl Iterator<Item = &ShardId> {
        self.shards.keys()
    }

    /// Bytes the batcher has allocated (bounded by the budget).
    pub fn buffer_bytes(&self) -> usize {
        self.batcher.allocated_bytes()
    }

    /// Bytes of the batches being written now. With [`buffer_bytes`](Self::buffer_bytes) it stays
    /// within the budget, plus at most one batch (a write always may start when none is in flight).
    pub fn inflight_bytes(&self) -> usize {
        self.inflight_bytes
    }

    /// Runs until `stop` resolves, then drains: flushes every buffer, waits for the writes,
    /// stores the checkpoints and releases the leases.
    pub async fn run(mut self, stop: impl Future<Output = ()> + Send) -> Result<(), ConsumerError> {
        let mut stop = std::pin::pin!(stop.fuse());
        loop {
            let progress = self.step().await?;
            if progress.records == 0 && progress.batches_written == 0 {
                let wake = self.next_wake();
                let sleep = self.clock.sleep_until(wake).fuse();
                let mut sleep = std::pin::pin!(sleep);
                futures::select_biased! {
                    () = stop => break,
                    done = self.inflight.select_next_some() => self.written(done)?,
                    () = sleep => {}
                }
            } else if (&mut stop).now_or_never().is_some() {
                break;
            }
        }
        self.drain().await
    }

    /// When there is next something to do, if nothing arrives before.
    pub fn next_wake(&self) -> Timestamp {
        let mut wake = self.next_lease_sync;
        for s in self.shards.values() {
            if !s.ended {
                wake = wake.min(s.next_read);
            }
            if s.unsaved.is_some() {
                wake = wake.min(
                    s.last_checkpoint_write
                        .saturating_add(self.config.checkpoint_every),
                );
            }
        }
        if let Some(d) = self.batcher.next_deadline() {
            wake = wake.min(d);
        }
        wake
    }

    /// One round: sync leases if due, read each due shard once, cut aged buffers, collect
    /// finished writes and store checkpoints.
    pub async fn step(&mut self) -> Result<Progress, ConsumerError> {
        let mut progress = Progress::default();
        if self.clock.now() >= self.next_lease_sync {
            self.sync_leases().await?;
        }
        let due: Vec<ShardId> = {
            let now = self.clock.now();
            self.shards
                .iter()
                .filter(|(_, s)| !s.ended && s.next_read <= now)
                .map(|(k, _)| k.clone())
                .collect()
        };
        for shard in due {
            progress.records += self.read_shard(&shard).await?;
        }
        let aged = self.batcher.tick(self.clock.now());
        self.write_all(aged).await?;
        progress.batches_written += self.collect_written()?;
        self.finish_ended_shards().await?;
        self.save_checkpoints(false).await?;
        self.wait_for_room(0).await?;
        self.observer.observe(Observation::BufferBytes {
            allocated: self.batcher.allocated_bytes(),
            in_flight: self.inflight_bytes,
        });
        Ok(progress)
    }

    async fn sync_leases(&mut self) -> Result<(), ConsumerError> {
        let now = self.clock.now();
        self.next_lease_sync = now.saturating_add(self.config.lease_sync);
        // New shards (first start, or children after a reshard) get leases; existing ones stay.
        let shards = self.reader.list_shards().await?;
        let mut leases = self.leases.list().await?;
        for info in shards {
            if leases.iter().any(|l| l.shard == info.id) {
                continue;
            }
            let lease = Lease {
                shard: info.id.clone(),
                owner: None,
                counter: 0,
                checkpoint: Checkpoint::TrimHorizon,
                parents: info
                    .parent
                    .iter()
                    .chain(info.adjacent_parent.iter())
                    .cloned()
                    .collect(),
            };
            match self.leases.create(&lease).await {
                Ok(()) | Err(LeaseError::Conflict(_)) => {}
                Err(LeaseError::Port(e)) => return Err(e.into()),
            }
            leases.push(lease);
        }
        let leases = self.leases.list().await?;
        let plan = self.coordinator.plan(&leases, now);
        for shard in &plan.lost {
            self.lose(shard);
        }
        for lease in plan.renew {
            match self.leases.renew(&lease).await {
                Ok(renewed) => {
                    self.coordinator.confirm(&renewed, true, now);
                    if let Some(s) = self.shards.get_mut(&renewed.shard) {
                        s.lease = renewed;
                    }
                }
                Err(LeaseError::Conflict(shard)) => self.lose(&shard),
                Err(LeaseError::Port(e)) if e.retryable => {}
                Err(LeaseError::Port(e)) => return Err(e.into()),
            }
        }
        for lease in plan.take {
            match self.leases.take(&lease, &self.config.owner).await {
                Ok(taken) => {
                    self.coordinator.confirm(&taken, true, now);
                    self.start_shard(taken, now);
                }
                Err(LeaseError::Conflict(_)) => {}
                Err(LeaseError::Port(e)) if e.retryable => {}
                Err(LeaseError::Port(e)) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn start_shard(&mut self, lease: Lease, now: Timestamp) {
        let (from, skip, checkpointed) = match &lease.checkpoint {
            Checkpoint::TrimHorizon => (ReadFrom::Oldest, None, None),
            Checkpoint::At(p) => (ReadFrom::At(p.seq.clone()), Some(p.clone()), Some(p.clone())),
            Checkpoint::ShardEnd => return,
        };
        self.observer
            .observe(Observation::LeaseTaken { shard: &lease.shard });
        self.tracker.start(lease.shard.clone(), checkpointed);
        self.tenures += 1;
        self.shards.insert(
            lease.shard.clone(),
            ShardState {
                lease,
                from,
                skip_through: skip,
                ended: false,
                next_read: now,
                last_checkpoint_write: now,
                unsaved: None,
                tenure: self.tenures,
            },
        );
    }

    fn lose(&mut self, shard: &ShardId) {
        self.coordinator.lose(shard);
        if self.shards.remove(shard).is_some() {
            self.batcher.discard_shard(shard);
            self.tracker.stop(shard);
            self.observer.observe(Observation::LeaseLost { shard });
        }
    }

    async fn read_shard(&mut self, shard: &ShardId) -> Result<usize, ConsumerError> {
        let Some(state) = self.shards.get(shard) else {
            return Ok(0);
        };
        let from = state.from.clone();
        let read = match self.reader.read(shard, &from, self.config.read_limit).await {
            Ok(r) => r,
            Err(e) if e.retryable => {
                self.observer.observe(Observation::PortRetry {
                    service: e.service,
                    error: &e.message,
                });
                let now = self.clock.now();
                if let Some(s) = self.shards.get_mut(shard) {
                    s.next_read = now.saturating_add(self.config.idle_poll);
                }
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        };
        self.observer.observe(Observation::RecordsRead {
            shard,
            records: read.records.len(),
            millis_behind_latest: read.millis_behind_latest,
        });
        let count = read.records.len();
        for record in &read.records {
            self.process_record(shard, &record.seq, &record.partition_key, &record.data)
                .await?;
            if !self.shards.contains_key(shard) {
                return Ok(count);
            }
        }
        let now = self.clock.now();
        if let Some(s) = self.shards.get_mut(shard) {
            if let Some(last) = read.records.last() {
                s.from = ReadFrom::After(last.seq.clone());
            }
            if read.end_of_shard {
                s.ended = true;
            }
            // Byte limits cut reads short of `read_limit` (Kinesis at 10 MiB, the local stream
            // too), so a short read only means the tip when the stream cannot say where it is.
            let caught_up = match read.millis_behind_latest {
                Some(behind) => behind == 0,
                None => count < self.config.read_limit,
            };
            s.next_read = if caught_up {
                now.saturating_add(self.config.idle_poll)
            } else {
                now
            };
        }
        if read.end_of_shard {
            let batches = self.batcher.flush_shard(shard);
            self.write_all(batches).await?;
        }
        Ok(count)
    }

    async fn process_record(
        &mut self,
        shard: &ShardId,
        seq: &SequenceNumber,
        partition_key: &str,
        data: &[u8],
    ) -> Result<(), ConsumerError> {
        let user_records = match kpl::decode(partition_key, data) {
            Ok(records) => records,
            Err(e) => {
                // A corrupt record is poison for this record only: keep it, with why, and go on.
                let position = Position::new(seq.clone(), 0);
                if self.skip(shard, &position) {
                    return Ok(());
                }
                self.tracker.read(shard, position.clone())?;
                let reason = format!("stream record is not a valid KPL aggregate: {e}");
                self.reject(shard, &position, &reason, None, Some(data)).await?;
                return Ok(());
            }
        };
        for (sub, user) in user_records.iter().enumerate() {
            let position = Position::new(seq.clone(), sub as u32);
            if self.skip(shard, &position) {
                continue;
            }
            self.tracker.read(shard, position.clone())?;
            self.wait_for_room(0).await?;
            let envelope = match Envelope::decode(&user.data) {
                Ok(env) => env,
                Err(e) => {
                    self.reject(shard, &position, &e.to_string(), None, Some(&user.data))
                        .await?;
                    continue;
                }
            };
            let mapper = Mapper::new(self.catalog);
            if let Err(rejection) = mapper.map(
                &envelope,
                Lineage {
                    shard,
                    position: &position,
                },
                &mut self.mapped,
            ) {
                self.reject(shard, &position, &rejection.to_string(), Some(&envelope), None)
                    .await?;
                continue;
            }
            let now = self.clock.now();
            let mut flushed = Vec::new();
            let mut opened = 0;
            for (table, row) in self.mapped.iter() {
                let added = self
                    .batcher
                    .add(table, shard, &position, envelope.received_at, row, now);
                opened += usize::from(added.opened);
                flushed.extend(added.flushed);
            }
            for _ in 0..opened {
                self.tracker.hold(shard, position.clone());
            }
            self.write_all(flushed).await?;
        }
        Ok(())
    }

    fn skip(&self, shard: &ShardId, position: &Position) -> bool {
        self.shards
            .get(shard)
            .and_then(|s| s.skip_through.as_ref())
            .is_some_and(|done| position <= done)
    }

    async fn reject(
        &mut self,
        shard: &ShardId,
        position: &Position,
        reason: &str,
        event: Option<&Envelope>,
        raw: Option<&[u8]>,
    ) -> Result<(), ConsumerError> {
        let record = RejectedRecord {
            reason,
            shard: shard.as_str(),
            sequence: position.seq.as_str(),
            sub_sequence: position.sub,
            event,
            raw: raw.map(|r| String::from_utf8_lossy(r).into_owned()),
        };
        let body = serde_json::to_vec_pretty(&record).expect("a rejected record always serialises");
        let at = event.map_or_else(|| self.clock.now(), |e| e.received_at);
        let (y, m, d, h) = at.utc_hour_parts();
        let key = format!("rejected/{y:04}/{m:02}/{d:02}/{h:02}/{shard}-{position}.json");
        let store = self.store;
        with_backoff(
            self.clock,
            self.entropy,
            self.observer,
            &self.config.write_retry,
            false,
            || store.put(&key, body.clone(), "application/json"),
        )
        .await?;
        self.observer
            .observe(Observation::EventRejected { shard, reason });
        Ok(())
    }

    /// Waits for writes in flight until `incoming` more bytes fit under the budget next to what
    /// the batcher holds and what is being written — or until nothing is in flight (a batch is
    /// never larger than the budget, so one write alone is always allowed).
    async fn wait_for_room(&mut self, incoming: usize) -> Result<(), ConsumerError> {
        let budget = self.batcher.policy().budget_bytes;
        while !self.inflight.is_empty()
            && self.batcher.allocated_bytes() + self.inflight_bytes + incoming > budget
        {
            if let Some(done) = self.inflight.next().await {
                self.written(done)?;
            }
        }
        Ok(())
    }

    async fn write_all(&mut self, batches: Vec<Batch>) -> Result<(), ConsumerError> {
        for batch in batches {
            while self.inflight.len() >= self.config.max_inflight_writes.max(1) {
                if let Some(done) = self.inflight.next().await {
                    self.written(done)?;
                }
            }
            self.wait_for_room(batch.data.capacity()).await?;
            let now = self.clock.now();
            self.observer.observe(Observation::BatchFlushed {
                table: &batch.table,
                rows: batch.rows,
                bytes: batch.byte_size(),
                age: now.saturating_since(batch.opened_at),
                reason: batch.reason.as_str(),
            });
            let key = batch.key(self.config.compression);
            let metadata = batch.metadata(self.config.compression);
            let (store, clock, entropy, observer) = (self.store, self.clock, self.entropy, self.observer);
            let retry = self.config.write_retry;
            let Batch {
                shard, first, data, ..
            } = batch;
            // What the body occupies, spare capacity included (the batcher counted that too).
            let bytes = data.capacity();
            let data = Bytes::from(data);
            let tenure = self.shards.get(&shard).map(|s| s.tenure);
            self.inflight_bytes += bytes;
            self.inflight.push(Box::pin(async move {
                // Unbounded retries: the checkpoint of this shard waits for this write, so giving
                // up would lose nothing but would stall; the retry metric tells operators.
                let _ = with_backoff(clock, entropy, observer, &retry, false, || {
                    store.put_batch(&key, data.clone(), &metadata)
                })
                .await;
                observer.observe(Observation::BatchWritten { key: &key });
                Written {
                    bytes,
                    shard,
                    first,
                    tenure,
                }
            }));
        }
        Ok(())
    }

    fn written(&mut self, done: Written) -> Result<(), ConsumerError> {
        self.inflight_bytes -= done.bytes;
        // A write for a shard whose lease was lost meanwhile is harmless: its rows are deduplicated
        // when the new owner writes them again. It releases nothing, even when this worker holds
        // the shard again by now: the tracker restarted from the checkpoint, and a hold at the
        // same position is a new buffer's, whose rows this write does not carry.
        if done.tenure.is_some() && self.shards.get(&done.shard).map(|s| s.tenure) == done.tenure {
            self.tracker.release(&done.shard, &done.first)?;
        }
        Ok(())
    }

    fn collect_written(&mut self) -> Result<usize, ConsumerError> {
        let mut n = 0;
        while let Some(Some(done)) = self.inflight.next().now_or_never() {
            self.written(done)?;
            n += 1;
        }
        Ok(n)
    }

    async fn finish_ended_shards(&mut self) -> Result<(), ConsumerError> {
        let ended: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|(_, s)| s.ended)
            .map(|(k, _)| k.clone())
            .collect();
        for shard in ended {
            if let Some(p) = self.tracker.advance(&shard) {
                self.shards.get_mut(&shard).expect("listed above").unsaved = Some(p);
            }
            if !self.tracker.is_idle(&shard) {
                continue;
            }
            let lease = self.shards[&shard].lease.clone();
            match self.leases.checkpoint(&lease, &Checkpoint::ShardEnd).await {
                Ok(updated) => {
                    self.observer.observe(Observation::Checkpointed {
                        shard: &shard,
                        position: &Checkpoint::ShardEnd,
                        pending_records: 0,
                    });
                    self.coordinator.confirm(&updated, false, self.clock.now());
                    self.shards.remove(&shard);
                    self.tracker.stop(&shard);
                }
                Err(LeaseError::Conflict(_)) => self.lose(&shard),
                Err(LeaseError::Port(e)) if e.retryable => {}
                Err(LeaseError::Port(e)) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn save_checkpoints(&mut self, force: bool) -> Result<(), ConsumerError> {
        let now = self.clock.now();
        let shards: Vec<ShardId> = self.shards.keys().cloned().collect();
        for shard in shards {
            if let Some(p) = self.tracker.advance(&shard) {
                self.shards.get_mut(&shard).expect("listed above").unsaved = Some(p);
            }
            let state = &self.shards[&shard];
            let Some(position) = state.unsaved.clone() else {
                continue;
            };
            if !force && now.saturating_since(state.last_checkpoint_write) < self.config.checkpoint_every {
                continue;
            }
            let checkpoint = Checkpoint::At(position);
            match self.leases.checkpoint(&state.lease, &checkpoint).await {
                Ok(updated) => {
                    self.coordinator.confirm(&updated, true, now);
                    let pending = self.tracker.pending_records(&shard);
                    self.observer.observe(Observation::Checkpointed {
                        shard: &shard,
                        position: &checkpoint,
                        pending_records: pending,
                    });
                    let s = self.shards.get_mut(&shard).expect("listed above");
                    s.lease = updated;
                    s.unsaved = None;
                    s.last_checkpoint_write = now;
                }
                Err(LeaseError::Conflict(_)) => self.lose(&shard),
                Err(LeaseError::Port(e)) if e.retryable => {
                    self.observer.observe(Observation::PortRetry {
                        service: e.service,
                        error: &e.message,
                    });
                }
                Err(LeaseError::Port(e)) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Flushes everything, waits for every write, stores final checkpoints, releases leases.
    pub async fn drain(mut self) -> Result<(), ConsumerError> {
        let batches = self.batcher.flush_all();
        self.write_all(batches).await?;
        while let Some(done) = self.inflight.next().await {
            self.written(done)?;
        }
        self.finish_ended_shards().await?;
        self.save_checkpoints(true).await?;
        for state in self.shards.values() {
            match self.leases.release(&state.lease).await {
                Ok(()) | Err(LeaseError::Conflict(_)) => {}
                Err(LeaseError::Port(e)) => self.observer.observe(Observation::PortRetry {
                    service: e.service,
                    error: &e.message,
                }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::task::Poll;

    use futures::executor::block_on;
    use serde_json::value::RawValue;

    use super::*;
    use crate::batch::BatchMetadata;
    use crate::catalog::Source;
    use crate::event::EventId;
    use crate::kpl::{HashKeyRange, UserRecord};
    use crate::ports::{ShardInfo, StoredObject, StreamRecord};

    struct TestClock(Mutex<Timestamp>);

    impl Clock for TestClock {
        fn now(&self) -> Timestamp {
            *self.0.lock().unwrap()
        }
        fn sleep_until(&self, _: Timestamp) -> impl Future<Output = ()> + Send {
            futures::future::ready(())
        }
    }

    struct Half;

    impl Entropy for Half {
        fn unit(&self) -> f64 {
            0.5
        }
        fn fill(&self, buf: &mut [u8]) {
            buf.fill(7);
        }
    }

    struct OneShard(Vec<StreamRecord>);

    impl StreamReader for OneShard {
        async fn list_shards(&self) -> Result<Vec<ShardInfo>, PortError> {
            Ok(vec![ShardInfo {
                id: ShardId::new("s"),
                parent: None,
                adjacent_parent: None,
                range: HashKeyRange::FULL,
                closed: false,
            }])
        }
        async fn read(
            &self,
            _: &ShardId,
            from: &ReadFrom,
            limit: usize,
        ) -> Result<crate::ports::ReadBatch, PortError> {
            let start = match from {
                ReadFrom::Oldest => 0,
                ReadFrom::At(seq) => self.0.partition_point(|r| &r.seq < seq),
                ReadFrom::After(seq) => self.0.partition_point(|r| &r.seq <= seq),
            };
            Ok(crate::ports::ReadBatch {
                records: self.0[start..].iter().take(limit).cloned().collect(),
                millis_behind_latest: Some(0),
                end_of_shard: false,
            })
        }
    }

    /// Events of type `e` into table `t`, one text column `v`.
    fn one_table() -> Catalog {
        Catalog::load([Source {
            name: "c.toml".into(),
            text: "[[events]]\ntype = \"e\"\n[[events.outputs]]\ntable = \"t\"\ncolumns = [ { name = \"v\", type = \"text\", pointer = \"/v\" } ]\n".into(),
        }])
        .unwrap()
    }

    /// `n` stream records, each one event of [`one_table`] with `v` = `value`.
    fn records(n: u128, t0: Timestamp, value: &str) -> Vec<StreamRecord> {
        (0..n)
            .map(|i| {
                let event = Envelope {
                    id: EventId(format!("evt-{i}")),
                    event_type: "e".into(),
                    source: "test".into(),
                    received_at: t0,
                    occurred_at: None,
                    payload: RawValue::from_string(format!(r#"{{"v":"{value}"}}"#)).unwrap(),
                };
                StreamRecord {
                    seq: SequenceNumber::from_u128(1000 + i),
                    partition_key: "pk".into(),
                    data: kpl::encode(&[UserRecord::new("pk", event.encode())]),
                    arrived_at: t0,
                }
            })
            .collect()
    }

    /// A store whose batch writes finish only when the test opens their gate, one by one.
    #[derive(Default)]
    struct GatedStore(Mutex<Vec<(bool, Option<std::task::Waker>)>>);

    impl GatedStore {
        fn open(&self, i: usize) {
            let mut gates = self.0.lock().unwrap();
            gates[i].0 = true;
            if let Some(w) = gates[i].1.take() {
                w.wake();
            }
        }
        fn started(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    impl ObjectStore for GatedStore {
        fn put_batch(
            &self,
            _: &str,
            _: Bytes,
            _: &BatchMetadata,
        ) -> impl Future<Output = Result<(), PortError>> + Send {
            let i = {
                let mut gates = self.0.lock().unwrap();
                gates.push((false, None));
                gates.len() - 1
            };
            futures::future::poll_fn(move |cx| {
                let mut gates = self.0.lock().unwrap();
                if gates[i].0 {
                    Poll::Ready(Ok(()))
                } else {
                    gates[i].1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        }
        async fn put(&self, _: &str, _: Vec<u8>, _: &str) -> Result<(), PortError> {
            Ok(())
        }
        async fn get(&self, _: &str) -> Result<Option<StoredObject>, PortError> {
            Ok(None)
        }
    }

    #[derive(Default)]
    struct Table(Mutex<BTreeMap<ShardId, Lease>>);

    impl Table {
        fn set_owner(&self, owner: Option<&str>) {
            let mut t = self.0.lock().unwrap();
            let l = t.get_mut(&ShardId::new("s")).unwrap();
            l.owner = owner.map(str::to_owned);
            l.counter += 1;
        }
        fn checkpoint_of(&self) -> Checkpoint {
            self.0.lock().unwrap()[&ShardId::new("s")].checkpoint.clone()
        }
        fn conditional(&self, seen: &Lease, f: impl FnOnce(&mut Lease)) -> Result<Lease, LeaseError> {
            let mut t = self.0.lock().unwrap();
            let l = t.get_mut(&seen.shard).unwrap();
            if l.counter != seen.counter || l.owner != seen.owner {
                return Err(LeaseError::Conflict(seen.shard.clone()));
            }
            f(l);
            l.counter += 1;
            Ok(l.clone())
        }
    }

    impl LeaseStore for Table {
        async fn list(&self) -> Result<Vec<Lease>, PortError> {
            Ok(self.0.lock().unwrap().values().cloned().collect())
        }
        async fn create(&self, lease: &Lease) -> Result<(), LeaseError> {
            self.0
                .lock()
                .unwrap()
                .entry(lease.shard.clone())
                .or_insert_with(|| lease.clone());
            Ok(())
        }
        async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
            self.conditional(lease, |l| l.owner = Some(owner.into()))
        }
        async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
            self.conditional(lease, |_| {})
        }
        async fn checkpoint(&self, lease: &Lease, c: &Checkpoint) -> Result<Lease, LeaseError> {
            self.conditional(lease, |l| l.checkpoint = c.clone())
        }
        async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
            self.conditional(lease, |l| l.owner = None).map(|_| ())
        }
    }

    /// Found by the simulation (seed 130 of `microbatch-sim`): a batch write still in flight
    /// when the lease was lost finished after this worker had taken the lease again and buffered
    /// the same record anew; the stale write released the new buffer's hold, so the checkpoint
    /// could pass a record whose rows were only in memory (and the real release then failed with
    /// "released …, which was not held", stopping the consumer).
    #[test]
    fn a_write_from_an_earlier_tenure_releases_nothing() {
        let catalog = one_table();
        let t0 = Timestamp::from_millis(1_714_564_800_000);
        let event = Envelope {
            id: EventId("evt-1".into()),
            event_type: "e".into(),
            source: "test".into(),
            received_at: t0,
            occurred_at: None,
            payload: RawValue::from_string(r#"{"v":"x"}"#.into()).unwrap(),
        };
        let seq = SequenceNumber::from_u128(1001);
        let stream = OneShard(vec![StreamRecord {
            seq: seq.clone(),
            partition_key: "pk".into(),
            data: kpl::encode(&[UserRecord::new("pk", event.encode())]),
            arrived_at: t0,
        }]);
        let store = GatedStore::default();
        let leases = Table::default();
        let clock = TestClock(Mutex::new(t0));
        let at = |secs: u64| *clock.0.lock().unwrap() = t0.saturating_add(Duration::from_secs(secs));
        let config = ConsumerConfig {
            owner: "w".into(),
            batch: BatchPolicy {
                max_rows: 1,
                ..BatchPolicy::default()
            },
            lease_sync: Duration::from_secs(1),
            checkpoint_every: Duration::ZERO,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(
            &stream,
            &store,
            &leases,
            &clock,
            &Half,
            &crate::ports::NoObserver,
            &catalog,
            config,
        )
        .unwrap();
        // Take the lease, read the record, start writing its batch (write 0, held up).
        block_on(consumer.step()).unwrap();
        assert_eq!(store.started(), 1);
        // The lease is stolen: the worker notices and drops the shard.
        leases.set_owner(Some("thief"));
        at(2);
        block_on(consumer.step()).unwrap();
        assert_eq!(consumer.shards().count(), 0);
        // The thief lets it go; the worker takes it again and writes the record anew (write 1).
        leases.set_owner(None);
        at(4);
        block_on(consumer.step()).unwrap();
        assert_eq!(store.started(), 2);
        // The first write finishes now. It must not let the checkpoint pass the record, whose
        // second write is still in flight.
        store.open(0);
        at(5);
        block_on(consumer.step()).unwrap();
        assert_eq!(leases.checkpoint_of(), Checkpoint::TrimHorizon);
        // Once the second write is durable, the checkpoint moves.
        store.open(1);
        at(6);
        block_on(consumer.step()).unwrap();
        assert_eq!(leases.checkpoint_of(), Checkpoint::At(Position::new(seq, 0)));
    }

    /// Found by the loadtest (consumer peak RSS 238 MiB under a 64 MiB budget): batches cut from
    /// the buffers were written 32 at a time whatever their size, so memory was the budget plus
    /// every write in flight. Writes now wait while buffered + in-flight bytes exceed the budget.
    #[test]
    fn writes_in_flight_count_against_the_budget() {
        let catalog = one_table();
        let t0 = Timestamp::from_millis(1_714_564_800_000);
        let big = "x".repeat(1000);
        let records = records(10, t0, &big);
        let stream = OneShard(records);
        let store = GatedStore::default();
        let leases = Table::default();
        let clock = TestClock(Mutex::new(t0));
        // One row per batch; each batch's buffer is 4 KiB, so two fit in the 8 KiB budget.
        let config = ConsumerConfig {
            owner: "w".into(),
            batch: BatchPolicy {
                max_rows: 1,
                max_bytes: 4096,
                budget_bytes: 8192,
                ..BatchPolicy::default()
            },
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(
            &stream,
            &store,
            &leases,
            &clock,
            &Half,
            &crate::ports::NoObserver,
            &catalog,
            config,
        )
        .unwrap();
        let mut step = Box::pin(consumer.step());
        assert!(
            step.as_mut().now_or_never().is_none(),
            "waits for writes to finish"
        );
        assert_eq!(store.started(), 2, "two 4 KiB batches fill the 8 KiB budget");
        store.open(0);
        assert!(step.as_mut().now_or_never().is_none());
        assert_eq!(store.started(), 3, "one write done makes room for one more");
        // Each finished write lets one more start, until every record is read.
        let mut opened = 1;
        let done = loop {
            store.open(opened);
            opened += 1;
            if let Some(done) = step.as_mut().now_or_never() {
                break done;
            }
        };
        done.unwrap();
        assert_eq!((store.started(), opened), (10, 8), "two writes still in flight");
        drop(step);
        assert_eq!(consumer.inflight_bytes(), 8192);
    }

    /// Two records per read, as a byte limit cuts them, saying how far behind the tip it is.
    struct TwoPerRead(Vec<StreamRecord>, std::sync::atomic::AtomicUsize);

    impl StreamReader for TwoPerRead {
        async fn list_shards(&self) -> Result<Vec<ShardInfo>, PortError> {
            OneShard(Vec::new()).list_shards().await
        }
        async fn read(
            &self,
            _: &ShardId,
            from: &ReadFrom,
            _: usize,
        ) -> Result<crate::ports::ReadBatch, PortError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let start = match from {
                ReadFrom::Oldest => 0,
                ReadFrom::At(seq) => self.0.partition_point(|r| &r.seq < seq),
                ReadFrom::After(seq) => self.0.partition_point(|r| &r.seq <= seq),
            };
            let records: Vec<StreamRecord> = self.0[start..].iter().take(2).cloned().collect();
            let behind = if start + records.len() < self.0.len() {
                5_000
            } else {
                0
            };
            Ok(crate::ports::ReadBatch {
                records,
                millis_behind_latest: Some(behind),
                end_of_shard: false,
            })
        }
    }

    #[test]
    fn a_read_cut_short_behind_the_tip_is_followed_at_once() {
        let catalog = one_table();
        let t0 = Timestamp::from_millis(1_714_564_800_000);
        let records = records(5, t0, "x");
        let stream = TwoPerRead(records, Default::default());
        let store = GatedStore::default();
        let leases = Table::default();
        // The clock stands still: a read scheduled for later does not happen.
        let clock = TestClock(Mutex::new(t0));
        let mut consumer = Consumer::new(
            &stream,
            &store,
            &leases,
            &clock,
            &Half,
            &crate::ports::NoObserver,
            &catalog,
            ConsumerConfig {
                owner: "w".into(),
                ..ConsumerConfig::default()
            },
        )
        .unwrap();
        let reads = |n: usize| {
            assert_eq!(stream.1.load(std::sync::atomic::Ordering::SeqCst), n);
        };
        for n in 1..=3 {
            block_on(consumer.step()).unwrap();
            reads(n);
        }
        // The third read reached the tip: the next waits for the idle poll.
        block_on(consumer.step()).unwrap();
        reads(3);
    }
}
