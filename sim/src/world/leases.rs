//! A lease table with conditional writes, as DynamoDB gives the KCL.

use std::collections::BTreeMap;
use std::sync::Mutex;

use microbatch_core::ports::{Checkpoint, Lease, LeaseError, LeaseStore, PortError};
use microbatch_core::position::ShardId;

use super::lock;

/// An in-memory lease table.
#[derive(Debug, Default)]
pub struct MemLeases {
    leases: Mutex<BTreeMap<ShardId, Lease>>,
}

impl MemLeases {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> Vec<Lease> {
        lock(&self.leases).values().cloned().collect()
    }

    /// Applies `change` if the stored lease still has the counter and owner the caller saw.
    fn conditional(&self, seen: &Lease, change: impl FnOnce(&mut Lease)) -> Result<Lease, LeaseError> {
        let mut leases = lock(&self.leases);
        let Some(current) = leases.get_mut(&seen.shard) else {
            return Err(LeaseError::Conflict(seen.shard.clone()));
        };
        if current.counter != seen.counter || current.owner != seen.owner {
            return Err(LeaseError::Conflict(seen.shard.clone()));
        }
        change(current);
        Ok(current.clone())
    }
}

impl LeaseStore for MemLeases {
    async fn list(&self) -> Result<Vec<Lease>, PortError> {
        Ok(self.snapshot())
    }

    async fn create(&self, lease: &Lease) -> Result<(), LeaseError> {
        let mut leases = lock(&self.leases);
        if leases.contains_key(&lease.shard) {
            return Err(LeaseError::Conflict(lease.shard.clone()));
        }
        leases.insert(lease.shard.clone(), lease.clone());
        Ok(())
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        self.conditional(lease, |l| {
            l.owner = Some(owner.to_owned());
            l.counter += 1;
        })
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.conditional(lease, |l| l.counter += 1)
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Lease, LeaseError> {
        self.conditional(lease, |l| {
            l.checkpoint = checkpoint.clone();
            l.counter += 1;
        })
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.conditional(lease, |l| {
            l.owner = None;
            l.counter += 1;
        })
        .map(|_| ())
    }
}
