//! The consumer: leased shards in, batches of CSV out, checkpoints after they are durable.
//!
//! Two loops run side by side and share nothing but two channels:
//!
//! - the **lease loop** ([`leases`]) owns every write to the lease table — renewals on their own
//!   timer, takes, creations, deletions and the checkpoints the worker asks for — so a slow
//!   store or a long read never costs a lease;
//! - the **worker** (here) reads the shards it was given, pushes every record through the
//!   [`pipeline`] (deaggregate, map, batch), writes what it cuts ([`writes`]) and, once a
//!   record's rows are durable, asks the lease loop to checkpoint past it.
//!
//! Per step the worker: applies what the lease loop said (shards taken, lost); reads each due
//! shard once — [`ShardRead`] says when (pacing, backoff) and from which cursor; cuts aged
//! buffers; collects finished writes; asks for the checkpoints that are due. A shard whose write
//! fails in a way retries alone cannot cure is not read until that write succeeds (see
//! [`writes`]); the others go on.
//!
//! Memory: the batch policy's `budget_bytes` covers the rows buffered in the batcher *and* the
//! batches being written. A batch cut from the buffers still occupies memory until its write
//! finishes, so before starting another write, and before mapping the next record, the worker
//! waits for writes in flight while buffered + in-flight bytes exceed the budget (see
//! `Worker::wait_for_room`). Reading stops meanwhile: that is the back-pressure.

mod leases;
mod pipeline;
mod rejected;
mod writes;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::{FutureExt, StreamExt};

use self::leases::{LeaseEvent, LeaseKeeper, LeaseTiming, ToLeases};
use self::pipeline::{Pipeline, Processed, Rejected};
use self::writes::{Body, Write, Writes, after_failure};
use crate::backoff::Backoff;
use crate::batch::Compression;
use crate::batcher::{Batch, BatchPolicy, Batcher, PolicyError};
use crate::catalog::Catalog;
use crate::checkpoint::TrackerError;
use crate::lease::{Checkpoint, LeaseCoordinator};
use crate::ports::{
    Bytes, Clock, Entropy, LeaseStore, ObjectWriter, Observation, Observer, PortError, ReadFrom,
    StreamReader, StreamRecord,
};
use crate::position::{Position, ShardId};
use crate::read::{ReadAction, ReadFatal, ReadPacing, ReadResult, ShardRead};
use crate::time::Timestamp;

/// How the consumer reads, batches and checkpoints.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// This worker's name in the lease table: stable across restarts, so a restarted worker takes
    /// back its own leases at once instead of after the failover time.
    pub owner: String,
    pub batch: BatchPolicy,
    /// How batch objects are compressed.
    pub compression: Compression,
    /// Records per read.
    pub read_limit: usize,
    /// How long to wait before reading a shard that is read to its tip.
    pub idle_poll: Duration,
    /// How fast one shard may be read.
    pub pacing: ReadPacing,
    /// Backoff of throttled or failed reads.
    pub read_retry: Backoff,
    /// How often the lease loop renews, takes and balances leases; well below `failover`.
    pub lease_sync: Duration,
    /// How often it lists the stream's shards (new shards, finished parents); also at once after
    /// a held shard ended.
    pub shard_sync: Duration,
    /// A lease whose counter has not moved for this long is free to take.
    pub failover: Duration,
    pub max_leases: usize,
    /// Backoff of failed lease-table calls.
    pub lease_retry: Backoff,
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
            pacing: ReadPacing::default(),
            read_retry: Backoff::new(Duration::from_millis(100), Duration::from_secs(10), u32::MAX),
            lease_sync: Duration::from_secs(3),
            shard_sync: Duration::from_secs(30),
            failover: Duration::from_secs(10),
            max_leases: 1024,
            lease_retry: Backoff::new(Duration::from_millis(100), Duration::from_secs(2), u32::MAX),
            checkpoint_every: Duration::from_millis(500),
            max_inflight_writes: 32,
            write_retry: Backoff::new(Duration::from_millis(50), Duration::from_secs(10), u32::MAX),
        }
    }
}

/// A consumer failure that stops it: a port failure that retries cannot cure, or a bug.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    #[error(transparent)]
    Read(#[from] ReadFatal),
    #[error("the lease table: {0}")]
    Leases(PortError),
}

/// What one [`Consumer::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub records: usize,
    pub batches_written: usize,
}

/// The consumer driver: the lease loop and the worker. Ports are borrowed so that in-flight
/// writes can hold them.
pub struct Consumer<'a, R, O, L, C, E, B> {
    keeper: LeaseKeeper<'a, R, L, C, E, B>,
    worker: Worker<'a, R, O, C, E, B>,
}

impl<R, O, L, C, E, B> std::fmt::Debug for Consumer<'_, R, O, L, C, E, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("owner", &self.worker.config.owner)
            .field("shards", &self.worker.shards.keys().collect::<Vec<_>>())
            .field("writes", &self.worker.writes)
            .finish_non_exhaustive()
    }
}

impl<'a, R, O, L, C, E, B> Consumer<'a, R, O, L, C, E, B>
where
    R: StreamReader,
    O: ObjectWriter,
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
        let (to_worker, from_leases) = mpsc::unbounded();
        let (to_leases, from_worker) = mpsc::unbounded();
        let keeper = LeaseKeeper::new(
            reader,
            leases,
            clock,
            entropy,
            observer,
            LeaseCoordinator::new(config.owner.clone(), config.failover, config.max_leases),
            LeaseTiming {
                sync: config.lease_sync,
                shard_sync: config.shard_sync,
                retry: config.lease_retry,
            },
            to_worker,
            from_worker,
        );
        let worker = Worker {
            reader,
            store,
            clock,
            entropy,
            observer,
            pipeline: Pipeline::new(catalog, batcher),
            shards: BTreeMap::new(),
            writes: Writes::new(),
            from_leases,
            to_leases,
            leases_gone: false,
            config,
        };
        Ok(Consumer { keeper, worker })
    }

    /// Shards the worker reads now.
    pub fn shards(&self) -> impl Iterator<Item = &ShardId> {
        self.worker.shards.keys()
    }

    /// Shards the lease loop holds now.
    pub fn leases(&self) -> impl Iterator<Item = &ShardId> {
        self.keeper.held()
    }

    /// Bytes the batcher has allocated (bounded by the budget).
    pub fn buffer_bytes(&self) -> usize {
        self.worker.pipeline.batcher.allocated_bytes()
    }

    /// Bytes of the batches being written now. With [`buffer_bytes`](Self::buffer_bytes) it stays
    /// within the budget, plus at most one batch (a write always may start when none is in flight).
    pub fn inflight_bytes(&self) -> usize {
        self.worker.writes.bytes()
    }

    /// One round of both loops, one after the other (for tests that drive time by hand): the
    /// lease loop's, the worker's, then the checkpoints the worker asked for.
    pub async fn step(&mut self) -> Result<Progress, ConsumerError> {
        self.keeper.tick().await?;
        let progress = self.worker.step().await?;
        self.keeper.tick_requests().await?;
        Ok(progress)
    }

    /// Runs both loops until `stop` resolves, then drains: the worker flushes every buffer and
    /// waits for the writes, the lease loop stores the last checkpoints and releases the leases.
    pub async fn run(self, stop: impl Future<Output = ()> + Send) -> Result<(), ConsumerError> {
        let Consumer { keeper, worker } = self;
        futures::future::try_join(keeper.run(), worker.run(stop))
            .await
            .map(|_| ())
    }

    /// Drains as [`run`](Self::run) does after its stop.
    pub async fn drain(mut self) -> Result<(), ConsumerError> {
        self.worker.drain().await?;
        while !self.keeper.is_drained() {
            self.keeper.tick().await?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct ShardState {
    read: ShardRead,
    /// Positions at or before this were done before the lease was taken (a checkpoint inside an
    /// aggregate): skip them when the aggregate is read again.
    skip_through: Option<Position>,
    /// Which holding of this shard's lease this is: a write started under an earlier one (before
    /// the lease was lost and taken again) must not release a hold of this one.
    tenure: u64,
    last_checkpoint: Timestamp,
    /// A checkpoint advanced in the tracker but not yet asked for.
    unsaved: Option<Position>,
}

/// The worker loop's state.
struct Worker<'a, R, O, C, E, B> {
    reader: &'a R,
    store: &'a O,
    clock: &'a C,
    entropy: &'a E,
    observer: &'a B,
    config: ConsumerConfig,
    pipeline: Pipeline<'a>,
    shards: BTreeMap<ShardId, ShardState>,
    writes: Writes<'a>,
    from_leases: UnboundedReceiver<LeaseEvent>,
    to_leases: UnboundedSender<ToLeases>,
    /// The lease loop stopped (it failed): nothing can be checkpointed any more.
    leases_gone: bool,
}

impl<'a, R, O, C, E, B> Worker<'a, R, O, C, E, B>
where
    R: StreamReader,
    O: ObjectWriter,
    C: Clock,
    E: Entropy,
    B: Observer,
{
    async fn run(mut self, stop: impl Future<Output = ()> + Send) -> Result<(), ConsumerError> {
        let mut stop = std::pin::pin!(stop.fuse());
        loop {
            let progress = self.step().await?;
            if self.leases_gone {
                return Ok(());
            }
            if progress.records > 0 || progress.batches_written > 0 {
                if (&mut stop).now_or_never().is_some() {
                    break;
                }
                continue;
            }
            let sleep = self.clock.sleep_until(self.next_wake()).fuse();
            let mut sleep = std::pin::pin!(sleep);
            futures::select_biased! {
                () = stop => break,
                event = self.from_leases.next() => match event {
                    Some(event) => self.apply(event),
                    None => self.leases_gone = true,
                },
                done = self.writes.inflight().select_next_some() => self.written(done)?,
                () = sleep => {}
            }
        }
        self.drain().await
    }

    /// When there is next something to do, if nothing arrives before.
    fn next_wake(&self) -> Timestamp {
        let now = self.clock.now();
        let mut wake = now.saturating_add(self.config.lease_sync);
        for (shard, s) in &self.shards {
            if !s.read.ended() && !self.writes.stalls(shard) {
                wake = wake.min(s.read.next_at());
            }
            if s.unsaved.is_some() {
                wake = wake.min(s.last_checkpoint.saturating_add(self.config.checkpoint_every));
            }
        }
        if let Some(d) = self.pipeline.batcher.next_deadline() {
            wake = wake.min(d);
        }
        wake
    }

    /// One round: apply lease events, read each due shard once, cut aged buffers, collect
    /// finished writes, ask for checkpoints.
    async fn step(&mut self) -> Result<Progress, ConsumerError> {
        let mut progress = Progress::default();
        self.apply_events();
        let due: Vec<ShardId> = {
            let now = self.clock.now();
            self.shards
                .iter()
                .filter(|(shard, s)| s.read.due(now) && !self.writes.stalls(shard))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for shard in due {
            progress.records += self.read_shard(&shard).await?;
        }
        let aged = self.pipeline.batcher.tick(self.clock.now());
        let aged = self.tagged(aged);
        self.write_all(aged).await?;
        progress.batches_written += self.collect_written()?;
        self.finish_ended_shards();
        self.ask_checkpoints(false);
        self.wait_for_room(0).await?;
        self.observer.observe(Observation::BufferBytes {
            allocated: self.pipeline.batcher.allocated_bytes(),
            in_flight: self.writes.bytes(),
        });
        Ok(progress)
    }

    fn apply_events(&mut self) {
        loop {
            match self.from_leases.try_recv() {
                Ok(event) => self.apply(event),
                Err(mpsc::TryRecvError::Closed) => {
                    self.leases_gone = true;
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => return,
            }
        }
    }

    fn apply(&mut self, event: LeaseEvent) {
        let now = self.clock.now();
        match event {
            LeaseEvent::Taken {
                shard,
                checkpoint,
                tenure,
            } => {
                let (from, checkpointed) = match checkpoint {
                    Checkpoint::TrimHorizon => (ReadFrom::Oldest, None),
                    Checkpoint::At(p) => (ReadFrom::At(p.seq.clone()), Some(p)),
                    Checkpoint::ShardEnd => return,
                };
                self.drop_shard(&shard);
                self.pipeline.tracker.start(shard.clone(), checkpointed.clone());
                self.shards.insert(
                    shard,
                    ShardState {
                        read: ShardRead::new(from, now),
                        skip_through: checkpointed,
                        tenure,
                        last_checkpoint: now,
                        unsaved: None,
                    },
                );
            }
            LeaseEvent::Lost { shard } => self.drop_shard(&shard),
        }
    }

    /// Forgets a shard: its buffers (another worker re-reads them from the checkpoint) and its
    /// holds. Its writes in flight finish harmlessly or are dropped at their next failure.
    fn drop_shard(&mut self, shard: &ShardId) {
        if self.shards.remove(shard).is_some() {
            self.pipeline.batcher.discard_shard(shard);
            self.pipeline.tracker.stop(shard);
        }
    }

    fn tenure_of(&self, shard: &ShardId) -> Option<u64> {
        self.shards.get(shard).map(|s| s.tenure)
    }

    async fn read_shard(&mut self, shard: &ShardId) -> Result<usize, ConsumerError> {
        let Some(state) = self.shards.get(shard) else {
            return Ok(0);
        };
        // Lease events are applied while this read waits for room: if the shard is lost, or
        // lost and taken again, the rest of this read is not this holding's to process.
        let tenure = state.tenure;
        let cursor = match state.read.action() {
            ReadAction::Read(cursor) => cursor,
            ReadAction::Open(from) => match self.reader.open(shard, &from).await {
                Ok(cursor) => {
                    if let Some(s) = self.shards.get_mut(shard) {
                        s.read.opened(cursor.clone());
                    }
                    cursor
                }
                Err(e) => {
                    self.read_failed(shard, &e, true)?;
                    return Ok(0);
                }
            },
        };
        let started = self.clock.now();
        let batch = match self.reader.read(shard, &cursor, self.config.read_limit).await {
            Ok(batch) => batch,
            Err(e) => {
                self.read_failed(shard, &e, false)?;
                return Ok(0);
            }
        };
        let bytes: usize = batch
            .records
            .iter()
            .map(|r| r.data.len() + r.partition_key.len())
            .sum();
        self.observer.observe(Observation::RecordsRead {
            shard,
            records: batch.records.len(),
            bytes,
            millis_behind_latest: batch.millis_behind_latest,
        });
        for record in &batch.records {
            self.process_record(shard, tenure, record).await?;
            if self.tenure_of(shard) != Some(tenure) {
                return Ok(batch.records.len());
            }
        }
        let now = self.clock.now();
        let Some(state) = self.shards.get_mut(shard).filter(|s| s.tenure == tenure) else {
            return Ok(batch.records.len());
        };
        state.read.read(
            ReadResult {
                records: batch.records.len(),
                bytes,
                last: batch.records.last().map(|r| &r.seq),
                millis_behind_latest: batch.millis_behind_latest,
                next: batch.next,
            },
            started,
            now,
            &self.config.pacing,
            self.config.idle_poll,
            self.config.read_limit,
        );
        if state.read.ended() {
            let batches = self.pipeline.batcher.flush_shard(shard);
            let batches = self.tagged(batches);
            self.write_all(batches).await?;
        }
        Ok(batch.records.len())
    }

    fn read_failed(
        &mut self,
        shard: &ShardId,
        error: &PortError,
        opening: bool,
    ) -> Result<(), ConsumerError> {
        self.observer.observe(Observation::retry(error));
        let (now, draw) = (self.clock.now(), self.entropy.unit());
        if let Some(s) = self.shards.get_mut(shard) {
            s.read
                .failed(error, opening, now, &self.config.read_retry, draw)?;
        }
        Ok(())
    }

    async fn process_record(
        &mut self,
        shard: &ShardId,
        tenure: u64,
        record: &StreamRecord,
    ) -> Result<(), ConsumerError> {
        let skip = self.shards.get(shard).and_then(|s| s.skip_through.clone());
        let now = self.clock.now();
        let users = match self.pipeline.deaggregate(
            shard,
            &record.seq,
            &record.partition_key,
            &record.data,
            skip.as_ref(),
            now,
        )? {
            Ok(users) => users,
            Err(None) => return Ok(()),
            Err(Some(rejected)) => return self.write_rejected(shard, tenure, rejected).await,
        };
        for (sub, user) in users.iter().enumerate() {
            self.wait_for_room(0).await?;
            if self.tenure_of(shard) != Some(tenure) {
                return Ok(());
            }
            let position = Position::new(record.seq.clone(), sub as u32);
            let now = self.clock.now();
            match self
                .pipeline
                .user_record(shard, position, &user.data, skip.as_ref(), now)?
            {
                Processed::Skipped => {}
                Processed::Rows(flushed) => {
                    let flushed = self.tagged(flushed);
                    self.write_all(flushed).await?;
                }
                Processed::Rejected(rejected) => self.write_rejected(shard, tenure, rejected).await?,
            }
        }
        Ok(())
    }

    /// Waits for writes in flight until `incoming` more bytes fit under the budget next to what
    /// the batcher holds and what is being written — or until nothing is in flight (a batch is
    /// never larger than the budget, so one write alone is always allowed).
    async fn wait_for_room(&mut self, incoming: usize) -> Result<(), ConsumerError> {
        let budget = self.pipeline.batcher.policy().budget_bytes;
        while !self.writes.is_empty()
            && self.pipeline.batcher.allocated_bytes() + self.writes.bytes() + incoming > budget
        {
            self.next_written().await?;
        }
        Ok(())
    }

    /// Waits for the next write to finish (applying lease events meanwhile: a lost shard's
    /// failing writes are dropped, not retried).
    async fn next_written(&mut self) -> Result<(), ConsumerError> {
        self.apply_events();
        if let Some(done) = self.writes.inflight().next().await {
            self.written(done)?;
        }
        Ok(())
    }

    /// Each batch with the holding of its shard it was cut under: lease events may be applied
    /// while earlier ones wait for room, and a batch of an earlier holding releases nothing.
    fn tagged(&self, batches: Vec<Batch>) -> Vec<(Batch, u64)> {
        batches
            .into_iter()
            .map(|b| {
                let tenure = self.tenure_of(&b.shard).unwrap_or(0);
                (b, tenure)
            })
            .collect()
    }

    async fn write_all(&mut self, batches: Vec<(Batch, u64)>) -> Result<(), ConsumerError> {
        for (batch, tenure) in batches {
            while self.writes.len() >= self.config.max_inflight_writes.max(1) {
                self.next_written().await?;
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
            let compression = self.config.compression;
            let key = batch.key(compression);
            let metadata = Box::new(batch.metadata(compression));
            let schema = self
                .writes
                .needs_schema(&batch.table)
                .then(|| (batch.schema_key(), Bytes::from(batch.schema().to_json())));
            let Batch {
                shard,
                first,
                data,
                table,
                ..
            } = batch;
            let (body, bytes) = match compression {
                // What the body occupies, spare capacity included (the batcher counted that too).
                Compression::None => {
                    let bytes = data.capacity();
                    (Bytes::from(data), bytes)
                }
                other => {
                    let packed = other.compress(data);
                    let bytes = packed.len();
                    (Bytes::from(packed), bytes)
                }
            };
            let write = Write {
                key,
                body,
                kind: Body::Batch {
                    metadata,
                    schema,
                    table,
                },
                shard,
                hold: first,
                tenure,
                bytes,
                attempt: 0,
                stalled: false,
            };
            self.writes.start(self.store, self.clock, write, Duration::ZERO);
        }
        Ok(())
    }

    async fn write_rejected(
        &mut self,
        shard: &ShardId,
        tenure: u64,
        rejected: Rejected,
    ) -> Result<(), ConsumerError> {
        while self.writes.len() >= self.config.max_inflight_writes.max(1) {
            self.next_written().await?;
        }
        let Rejected {
            key,
            body,
            position,
            reason,
        } = rejected;
        let bytes = body.len();
        let write = Write {
            key,
            body,
            kind: Body::Rejected { reason },
            shard: shard.clone(),
            hold: position,
            tenure,
            bytes,
            attempt: 0,
            stalled: false,
        };
        self.writes.start(self.store, self.clock, write, Duration::ZERO);
        Ok(())
    }

    /// A write came back: release its hold, or put it back in flight after a backoff.
    fn written(&mut self, (mut write, result): (Write, Result<(), PortError>)) -> Result<(), ConsumerError> {
        let current = self.tenure_of(&write.shard) == Some(write.tenure);
        match result {
            Ok(()) => {
                self.writes.finish(&write, true);
                match &write.kind {
                    Body::Batch { .. } => self.observer.observe(Observation::BatchWritten {
                        key: &write.key,
                        bytes: write.body.len(),
                    }),
                    Body::Rejected { reason } => self.observer.observe(Observation::EventRejected {
                        shard: &write.shard,
                        reason,
                    }),
                }
                // A write of a shard lost meanwhile releases nothing, even when this worker
                // holds the shard again by now: the tracker restarted from the checkpoint, and a
                // hold at the same position is a new buffer's, whose rows this write does not
                // carry. Its rows are deduplicated when the new holder writes them again.
                if current {
                    self.pipeline.tracker.release(&write.shard, &write.hold)?;
                }
            }
            Err(error) if !current => {
                // Not ours any more: the new holder writes these records itself.
                let _ = error;
                self.writes.finish(&write, false);
            }
            Err(error) => {
                write.attempt = write.attempt.saturating_add(1);
                let retry = after_failure(
                    write.attempt,
                    &error,
                    &self.config.write_retry,
                    self.entropy.unit(),
                );
                if retry.stalls {
                    self.writes.stall(&mut write);
                }
                self.observer.observe(Observation::WriteFailed {
                    key: &write.key,
                    error: &error,
                    attempt: write.attempt,
                    stalled: write.stalled,
                });
                self.writes.start(self.store, self.clock, write, retry.delay);
            }
        }
        Ok(())
    }

    /// Collects the writes that are done, without waiting; how many succeeded or failed. At most
    /// as many as were in flight: a write retried at once must not keep this from returning.
    fn collect_written(&mut self) -> Result<usize, ConsumerError> {
        let mut n = 0;
        for _ in 0..self.writes.len() {
            let Some(Some(done)) = self.writes.inflight().next().now_or_never() else {
                break;
            };
            self.written(done)?;
            n += 1;
        }
        Ok(n)
    }

    /// Shards read to their end with everything durable: `SHARD_END`, and they are done.
    fn finish_ended_shards(&mut self) {
        let ended: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|(_, s)| s.read.ended())
            .map(|(k, _)| k.clone())
            .collect();
        for shard in ended {
            self.pipeline.tracker.advance(&shard);
            if !self.pipeline.tracker.is_idle(&shard) {
                continue;
            }
            let tenure = self.shards[&shard].tenure;
            let _ = self.to_leases.unbounded_send(ToLeases::Finished {
                shard: shard.clone(),
                tenure,
            });
            self.shards.remove(&shard);
            self.pipeline.tracker.stop(&shard);
        }
    }

    /// Asks the lease loop to store every checkpoint that moved and is due (all when `force`).
    fn ask_checkpoints(&mut self, force: bool) {
        let now = self.clock.now();
        for (shard, state) in self.shards.iter_mut() {
            if let Some(p) = self.pipeline.tracker.advance(shard) {
                state.unsaved = Some(p);
            }
            let due = force || now.saturating_since(state.last_checkpoint) >= self.config.checkpoint_every;
            if !due {
                continue;
            }
            let Some(position) = state.unsaved.take() else {
                continue;
            };
            state.last_checkpoint = now;
            let _ = self.to_leases.unbounded_send(ToLeases::Checkpoint {
                shard: shard.clone(),
                tenure: state.tenure,
                position,
                pending_records: self.pipeline.tracker.pending_records(shard),
            });
        }
    }

    /// Flushes everything, waits for every write, asks for the final checkpoints, and tells the
    /// lease loop to release the leases.
    async fn drain(&mut self) -> Result<(), ConsumerError> {
        self.apply_events();
        let batches = self.pipeline.batcher.flush_all();
        let batches = self.tagged(batches);
        self.write_all(batches).await?;
        while !self.writes.is_empty() {
            self.next_written().await?;
        }
        self.finish_ended_shards();
        self.ask_checkpoints(true);
        let _ = self.to_leases.unbounded_send(ToLeases::Drained);
        Ok(())
    }
}
