//! The consumer: leased shards in, batches of CSV out, checkpoints after they are durable.
//!
//! Per record read: deaggregate (KPL), decode the envelope, map it to rows, add the rows to the
//! [`Batcher`]; every batch the batcher cuts is written to the object store (several writes in
//! flight at once, each retried until it succeeds), and only then released to the
//! [`CheckpointTracker`], whose safe position is written to the lease table. Events that cannot
//! be mapped are written to `rejected/` before the checkpoint may pass them.

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
    Checkpoint, Clock, Entropy, Lease, LeaseError, LeaseStore, ObjectStore, Observation, Observer, PortError,
    ReadFrom, StreamReader,
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
}

struct Written {
    shard: ShardId,
    first: Position,
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
    next_lease_sync: Timestamp,
    mapped: MappedRows,
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
            next_lease_sync: Timestamp::UNIX_EPOCH,
            mapped: MappedRows::default(),
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
        self.observer.observe(Observation::BufferBytes {
            allocated: self.batcher.allocated_bytes(),
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
            let caught_up = count < self.config.read_limit;
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

    async fn write_all(&mut self, batches: Vec<Batch>) -> Result<(), ConsumerError> {
        for batch in batches {
            while self.inflight.len() >= self.config.max_inflight_writes.max(1) {
                if let Some(done) = self.inflight.next().await {
                    self.written(done)?;
                }
            }
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
            self.inflight.push(Box::pin(async move {
                // Unbounded retries: the checkpoint of this shard waits for this write, so giving
                // up would lose nothing but would stall; the retry metric tells operators.
                let _ = with_backoff(clock, entropy, observer, &retry, false, || {
                    store.put_batch(&key, data.clone(), &metadata)
                })
                .await;
                observer.observe(Observation::BatchWritten { key: &key });
                Written { shard, first }
            }));
        }
        Ok(())
    }

    fn written(&mut self, done: Written) -> Result<(), ConsumerError> {
        // A write for a shard whose lease was lost meanwhile is harmless: its rows are deduplicated
        // when the new owner writes them again.
        if self.shards.contains_key(&done.shard) {
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
