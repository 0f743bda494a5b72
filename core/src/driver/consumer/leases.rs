//! The consumer's lease loop: every write to the lease table, on its own timer.
//!
//! It runs beside the worker (the loop that reads, maps and writes objects), so a slow object
//! store or a long read never delays a renewal past the failover time. Every `lease_sync` it
//! lists the lease table (and, every `shard_sync` or as soon as a held shard ended, the stream's
//! shards), asks the [`LeaseCoordinator`] for a plan, and carries it out: creates leases for new
//! shards, deletes finished ones, renews, takes. It tells the worker which shards it took and
//! lost ([`LeaseEvent`]); the worker tells it what to checkpoint ([`ToLeases`]), which it writes
//! at once. It owns the only copy of each held lease's counter, so no two lease writes of one
//! worker ever race each other.
//!
//! Failures: a transient one (throttled, unavailable) is retried with backoff, never fatal; a
//! lost condition means the lease was lost; anything else (access denied, a missing table) stops
//! the consumer with the error — nothing is lost, the checkpoints are only of durable data.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};

use super::ConsumerError;
use crate::backoff::Backoff;
use crate::lease::{Checkpoint, Lease, LeaseCoordinator};
use crate::ports::{Clock, Entropy, ErrorKind, LeaseStore, Observation, Observer, PortError, StreamReader};
use crate::position::{Position, ShardId};
use crate::time::Timestamp;

/// From the lease loop to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LeaseEvent {
    /// Read this shard from `checkpoint`; `tenure` tells this holding apart from earlier ones.
    Taken {
        shard: ShardId,
        checkpoint: Checkpoint,
        tenure: u64,
    },
    /// Stop reading this shard and drop its buffers: another worker has it.
    Lost { shard: ShardId },
}

/// From the worker to the lease loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ToLeases {
    /// Everything up to `position` is durable.
    Checkpoint {
        shard: ShardId,
        tenure: u64,
        position: Position,
        pending_records: usize,
    },
    /// The shard is read to its end and everything is durable: `SHARD_END`.
    Finished { shard: ShardId, tenure: u64 },
    /// The worker has drained: write what is pending, release every lease, stop.
    Drained,
}

/// Timing of the lease loop.
#[derive(Clone, Copy, Debug)]
pub(super) struct LeaseTiming {
    pub sync: Duration,
    pub shard_sync: Duration,
    pub retry: Backoff,
}

#[derive(Debug)]
struct Held {
    lease: Lease,
    tenure: u64,
}

/// The lease loop's state.
pub(super) struct LeaseKeeper<'a, R, L, C, E, B> {
    reader: &'a R,
    leases: &'a L,
    clock: &'a C,
    entropy: &'a E,
    observer: &'a B,
    timing: LeaseTiming,
    coordinator: LeaseCoordinator,
    held: BTreeMap<ShardId, Held>,
    /// The latest checkpoint asked for per shard, not yet written.
    pending: BTreeMap<ShardId, (u64, Checkpoint, usize)>,
    next_sync: Timestamp,
    next_shard_sync: Timestamp,
    failures: u32,
    tenures: u64,
    drained: bool,
    to_worker: UnboundedSender<LeaseEvent>,
    from_worker: UnboundedReceiver<ToLeases>,
}

impl<'a, R, L, C, E, B> LeaseKeeper<'a, R, L, C, E, B>
where
    R: StreamReader,
    L: LeaseStore,
    C: Clock,
    E: Entropy,
    B: Observer,
{
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        reader: &'a R,
        leases: &'a L,
        clock: &'a C,
        entropy: &'a E,
        observer: &'a B,
        coordinator: LeaseCoordinator,
        timing: LeaseTiming,
        to_worker: UnboundedSender<LeaseEvent>,
        from_worker: UnboundedReceiver<ToLeases>,
    ) -> Self {
        LeaseKeeper {
            reader,
            leases,
            clock,
            entropy,
            observer,
            timing,
            coordinator,
            held: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_sync: Timestamp::UNIX_EPOCH,
            next_shard_sync: Timestamp::UNIX_EPOCH,
            failures: 0,
            tenures: 0,
            drained: false,
            to_worker,
            from_worker,
        }
    }

    /// The shards held now.
    pub fn held(&self) -> impl Iterator<Item = &ShardId> {
        self.held.keys()
    }

    pub fn is_drained(&self) -> bool {
        self.drained
    }

    /// When this loop next has something to do, unless the worker asks earlier.
    pub fn next_wake(&self) -> Timestamp {
        let mut wake = self.next_sync;
        if !self.pending.is_empty() {
            wake = wake.min(self.clock.now().saturating_add(self.retry_delay()));
        }
        wake
    }

    fn retry_delay(&self) -> Duration {
        self.timing
            .retry
            .delay(self.failures.saturating_sub(1), self.entropy.unit())
            .min(self.timing.sync)
    }

    /// One round: what the worker asked (checkpoints), then the table if due.
    pub async fn tick(&mut self) -> Result<(), ConsumerError> {
        while let Ok(message) = self.from_worker.try_recv() {
            self.accept(message);
        }
        self.write_pending().await?;
        if self.drained {
            // The final checkpoints are worth a few retries: without them the next owner reads
            // again what was loaded already (harmless, but slow).
            for _ in 0..8 {
                if self.pending.is_empty() {
                    break;
                }
                self.clock.sleep(self.retry_delay()).await;
                self.write_pending().await?;
            }
            self.release_all().await;
            return Ok(());
        }
        if self.clock.now() >= self.next_sync {
            self.sync().await?;
        }
        Ok(())
    }

    /// What the worker asked, without a table round: the checkpoints it wants.
    pub async fn tick_requests(&mut self) -> Result<(), ConsumerError> {
        while let Ok(message) = self.from_worker.try_recv() {
            self.accept(message);
        }
        if self.drained {
            return self.tick().await;
        }
        self.write_pending().await
    }

    /// Takes one message from the worker.
    pub fn accept(&mut self, message: ToLeases) {
        match message {
            ToLeases::Checkpoint {
                shard,
                tenure,
                position,
                pending_records,
            } => {
                self.pending
                    .insert(shard, (tenure, Checkpoint::At(position), pending_records));
            }
            ToLeases::Finished { shard, tenure } => {
                self.pending.insert(shard, (tenure, Checkpoint::ShardEnd, 0));
            }
            ToLeases::Drained => self.drained = true,
        }
    }

    /// Runs until the worker has drained (then releases every lease) or a fatal error.
    pub async fn run(mut self) -> Result<(), ConsumerError> {
        use futures::{FutureExt, StreamExt};
        loop {
            self.tick().await?;
            if self.drained {
                return Ok(());
            }
            let sleep = self.clock.sleep_until(self.next_wake()).fuse();
            let mut sleep = std::pin::pin!(sleep);
            futures::select_biased! {
                message = self.from_worker.next() => match message {
                    Some(message) => self.accept(message),
                    // The worker is gone (it failed): nothing more will be checkpointed.
                    None => {
                        self.release_all().await;
                        return Ok(());
                    }
                },
                () = sleep => {}
            }
        }
    }

    /// A port failure of the lease table: retried (transient), the lease lost (conflict), or
    /// fatal.
    fn failed(&mut self, error: PortError) -> Result<(), ConsumerError> {
        if error.is_transient() {
            self.observer.observe(Observation::retry(&error));
            self.failures = self.failures.saturating_add(1);
            Ok(())
        } else {
            Err(ConsumerError::Leases(error))
        }
    }

    async fn write_pending(&mut self) -> Result<(), ConsumerError> {
        let pending = std::mem::take(&mut self.pending);
        for (shard, (tenure, checkpoint, pending_records)) in pending {
            let Some(held) = self.held.get(&shard).filter(|h| h.tenure == tenure) else {
                // Asked under an earlier holding of the lease: it is not ours to write any more.
                continue;
            };
            let now = self.clock.now();
            match self.leases.checkpoint(&held.lease, &checkpoint).await {
                Ok(updated) => {
                    self.failures = 0;
                    self.observer.observe(Observation::Checkpointed {
                        shard: &shard,
                        position: &checkpoint,
                        pending_records,
                    });
                    if checkpoint == Checkpoint::ShardEnd {
                        self.coordinator.confirm(&updated, false, now);
                        self.held.remove(&shard);
                        // Its children may be waiting for it: look for them now.
                        self.next_shard_sync = now;
                        self.next_sync = now;
                    } else {
                        self.coordinator.confirm(&updated, true, now);
                        self.held.get_mut(&shard).expect("held").lease = updated;
                    }
                }
                Err(e) if e.kind == ErrorKind::Conflict => self.lose(&shard),
                Err(e) => {
                    // Kept for the next round, unless a newer one arrives meanwhile.
                    self.pending
                        .entry(shard)
                        .or_insert((tenure, checkpoint, pending_records));
                    self.failed(e)?;
                }
            }
        }
        Ok(())
    }

    fn lose(&mut self, shard: &ShardId) {
        self.coordinator.lose(shard);
        self.pending.remove(shard);
        if self.held.remove(shard).is_some() {
            self.observer.observe(Observation::LeaseLost { shard });
            let _ = self
                .to_worker
                .unbounded_send(LeaseEvent::Lost { shard: shard.clone() });
        }
    }

    async fn sync(&mut self) -> Result<(), ConsumerError> {
        if self.sync_once().await? {
            // New leases are there to take: plan again at once rather than a round later.
            self.sync_once().await?;
        }
        Ok(())
    }

    /// Lists, plans and carries the plan out; whether it created leases.
    async fn sync_once(&mut self) -> Result<bool, ConsumerError> {
        let now = self.clock.now();
        let shards = if now >= self.next_shard_sync {
            match self.reader.list_shards().await {
                Ok(shards) => Some(shards),
                Err(e) => {
                    self.failed(e)?;
                    None
                }
            }
        } else {
            None
        };
        let listed = match self.leases.list().await {
            Ok(leases) => leases,
            Err(e) => {
                self.failed(e)?;
                self.next_sync = now.saturating_add(self.retry_delay());
                return Ok(false);
            }
        };
        self.failures = 0;
        self.next_sync = now.saturating_add(self.timing.sync);
        if shards.is_some() {
            self.next_shard_sync = now.saturating_add(self.timing.shard_sync);
        }
        let plan = self.coordinator.plan(&listed, shards.as_deref(), now);
        for shard in &plan.lost {
            self.lose(shard);
        }
        let mut created = false;
        for lease in &plan.create {
            match self.leases.create(lease).await {
                Ok(()) => created = true,
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => {
                    // No child before its parents: the rest waits for the next round.
                    self.failed(e)?;
                    break;
                }
            }
        }
        for lease in &plan.delete {
            match self.leases.delete(lease).await {
                Ok(()) => {
                    self.coordinator.forget(&lease.shard);
                    self.observer
                        .observe(Observation::LeaseDeleted { shard: &lease.shard });
                }
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => self.failed(e)?,
            }
        }
        for lease in plan.renew {
            match self.leases.renew(&lease).await {
                Ok(renewed) => {
                    self.coordinator.confirm(&renewed, true, self.clock.now());
                    if let Some(held) = self.held.get_mut(&renewed.shard) {
                        held.lease = renewed;
                    }
                }
                Err(e) if e.kind == ErrorKind::Conflict => self.lose(&lease.shard),
                Err(e) => self.failed(e)?,
            }
        }
        for lease in plan.take {
            match self.leases.take(&lease, self.coordinator.owner()).await {
                Ok(taken) => self.taken(taken),
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => self.failed(e)?,
            }
        }
        Ok(created)
    }

    fn taken(&mut self, lease: Lease) {
        self.coordinator.confirm(&lease, true, self.clock.now());
        self.tenures += 1;
        self.observer
            .observe(Observation::LeaseTaken { shard: &lease.shard });
        let _ = self.to_worker.unbounded_send(LeaseEvent::Taken {
            shard: lease.shard.clone(),
            checkpoint: lease.checkpoint.clone(),
            tenure: self.tenures,
        });
        self.held.insert(
            lease.shard.clone(),
            Held {
                lease,
                tenure: self.tenures,
            },
        );
    }

    /// Gives every held lease up, so another worker takes them at once instead of after the
    /// failover time. Failures are reported, not fatal: the lease then expires by itself.
    async fn release_all(&mut self) {
        for (shard, held) in std::mem::take(&mut self.held) {
            match self.leases.release(&held.lease).await {
                Ok(()) => self.coordinator.confirm(&held.lease, false, self.clock.now()),
                Err(e) if e.kind == ErrorKind::Conflict => self.coordinator.lose(&shard),
                Err(e) => self.observer.observe(Observation::retry(&e)),
            }
        }
    }
}
