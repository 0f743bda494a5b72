//! A lease table with conditional writes, as DynamoDB gives the KCL; leases can be stolen behind
//! their holder's back. Every checkpoint written is logged for the checkpoint-safety check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use microbatch_core::kpl;
use microbatch_core::ports::{Checkpoint, Lease, LeaseStore, PortError};
use microbatch_core::position::{Position, ShardId};

use super::{MemStream, lock};
use crate::ctx::{Ctx, Fault, Sabotage};

/// An in-memory lease table.
#[derive(Debug)]
pub struct MemLeases {
    ctx: Arc<Ctx>,
    stream: Arc<MemStream>,
    leases: Mutex<BTreeMap<ShardId, Lease>>,
    deleted: Mutex<BTreeSet<ShardId>>,
}

impl MemLeases {
    pub fn new(ctx: Arc<Ctx>, stream: Arc<MemStream>) -> Self {
        MemLeases {
            ctx,
            stream,
            leases: Mutex::new(BTreeMap::new()),
            deleted: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn snapshot(&self) -> Vec<Lease> {
        lock(&self.leases).values().cloned().collect()
    }

    /// Shards whose (finished) lease was deleted.
    pub fn deleted(&self) -> BTreeSet<ShardId> {
        lock(&self.deleted).clone()
    }

    /// Another worker takes the `pick`-th held lease (a steal), if any is held.
    pub fn steal(&self, pick: u64) -> bool {
        let mut leases = lock(&self.leases);
        let held: Vec<ShardId> = leases
            .values()
            .filter(|l| l.owner.is_some() && l.checkpoint != Checkpoint::ShardEnd)
            .map(|l| l.shard.clone())
            .collect();
        if held.is_empty() {
            return false;
        }
        let shard = &held[(pick % held.len() as u64) as usize];
        let lease = leases.get_mut(shard).expect("listed");
        let from = lease.owner.clone().unwrap_or_default();
        lease.owner = Some("thief".into());
        lease.counter += 1;
        let shard = shard.clone();
        drop(leases);
        self.ctx.count(Fault::LeaseStolen);
        self.ctx
            .trace("leases", format_args!("{shard} stolen from {from}"));
        true
    }

    /// The position of the last user record the stream handed out for `shard`.
    fn last_read(&self, shard: &ShardId) -> Option<Position> {
        let seq = self.stream.last_read(shard)?;
        let records = self.stream.records_from(shard, 0);
        let record = records.iter().find(|r| r.seq == seq)?;
        let n = kpl::decode(&record.partition_key, &record.data).map_or(1, |u| u.len().max(1));
        Some(Position::new(seq, n as u32 - 1))
    }

    /// Applies `change` if the stored lease still has the counter and owner the caller saw.
    fn conditional(&self, seen: &Lease, change: impl FnOnce(&mut Lease)) -> Result<Lease, PortError> {
        let mut leases = lock(&self.leases);
        let conflict = || PortError::conflict("leases", format!("the lease of {} changed", seen.shard));
        let Some(current) = leases.get_mut(&seen.shard) else {
            return Err(conflict());
        };
        if current.counter != seen.counter || current.owner != seen.owner {
            return Err(conflict());
        }
        change(current);
        Ok(current.clone())
    }

    /// What every call of the lease table meets.
    async fn call(&self) -> Result<(), PortError> {
        self.ctx.latency(0, 10).await;
        if self.ctx.throttled() {
            return Err(PortError::throttled(
                "leases",
                "ProvisionedThroughputExceededException (burst)",
            ));
        }
        if self.ctx.chance(Fault::LeaseTableUnavailable) {
            return Err(PortError::unavailable("leases", "500 InternalServerError"));
        }
        Ok(())
    }
}

impl LeaseStore for MemLeases {
    async fn list(&self) -> Result<Vec<Lease>, PortError> {
        self.call().await?;
        Ok(self.snapshot())
    }

    async fn create(&self, lease: &Lease) -> Result<(), PortError> {
        self.call().await?;
        let mut leases = lock(&self.leases);
        if leases.contains_key(&lease.shard) {
            return Err(PortError::conflict(
                "leases",
                format!("a lease of {} exists", lease.shard),
            ));
        }
        leases.insert(lease.shard.clone(), lease.clone());
        Ok(())
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, PortError> {
        self.call().await?;
        self.conditional(lease, |l| {
            l.owner = Some(owner.to_owned());
            l.counter += 1;
        })
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, PortError> {
        self.call().await?;
        self.conditional(lease, |l| l.counter += 1)
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Lease, PortError> {
        self.call().await?;
        let mut checkpoint = checkpoint.clone();
        if self.ctx.sabotage == Sabotage::CheckpointBeforeFlush
            && let Checkpoint::At(p) = &checkpoint
            && let Some(read) = self.last_read(&lease.shard)
            && read > *p
        {
            checkpoint = Checkpoint::At(read);
        }
        let stored = checkpoint.clone();
        let updated = self.conditional(lease, |l| {
            l.checkpoint = stored;
            l.counter += 1;
        })?;
        self.ctx.log_checkpoint(lease.shard.clone(), checkpoint);
        Ok(updated)
    }

    async fn release(&self, lease: &Lease) -> Result<(), PortError> {
        self.call().await?;
        self.conditional(lease, |l| {
            l.owner = None;
            l.counter += 1;
        })
        .map(|_| ())
    }

    async fn delete(&self, lease: &Lease) -> Result<(), PortError> {
        self.call().await?;
        self.conditional(lease, |_| {})?;
        if lease.checkpoint != Checkpoint::ShardEnd {
            self.ctx
                .violation(format!("leases: {} deleted before it ended", lease.shard));
        }
        lock(&self.leases).remove(&lease.shard);
        lock(&self.deleted).insert(lease.shard.clone());
        self.ctx
            .trace_here(format_args!("deleted the lease of {}", lease.shard));
        Ok(())
    }
}
