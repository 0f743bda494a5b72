//! The simulated world: in-memory implementations of every port, sharing one virtual clock and
//! one seeded fault plan ([`Ctx`]).
//!
//! Each is a faithful model of the service's contract as the drivers rely on it (conditional
//! lease writes, at-least-once queue delivery with visibility timeouts, atomic object puts that
//! notify the queue, a transactional warehouse with its manifest), plus the ways the real service
//! fails, each drawn from the run's fault plan.

mod leases;
mod queue;
mod store;
mod stream;
mod warehouse;

pub use leases::MemLeases;
pub use queue::{DeadLetter, MemQueue, REDRIVE_REASON};
pub use store::{DurableRow, LoadObject, MemStore};
pub use stream::{MemStream, Shard};
pub use warehouse::{MemWarehouse, Order, Row, TableData, order_of};

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::ctx::Ctx;

/// Locks a world part; a poisoned lock means a simulated component panicked, which is a bug the
/// run must surface rather than paper over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
        .expect("a simulated component panicked while holding the world")
}

/// Every simulated service of one run.
#[derive(Debug)]
pub struct World {
    pub ctx: Arc<Ctx>,
    pub stream: Arc<MemStream>,
    pub queue: Arc<MemQueue>,
    pub store: MemStore,
    pub warehouse: MemWarehouse,
    pub leases: MemLeases,
}

impl World {
    pub fn new(ctx: Arc<Ctx>, shards: u32, visibility: Duration, max_receives: u32) -> Self {
        let stream = Arc::new(MemStream::new(ctx.clone(), shards));
        let queue = Arc::new(MemQueue::new(ctx.clone(), visibility, max_receives));
        World {
            store: MemStore::new(ctx.clone(), queue.clone()),
            warehouse: MemWarehouse::new(ctx.clone()),
            leases: MemLeases::new(ctx.clone(), stream.clone()),
            stream,
            queue,
            ctx,
        }
    }
}
