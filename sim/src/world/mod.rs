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
pub use store::{BUCKET, DurableRow, LoadObject, MemStore};
pub use stream::{MemStream, Shard};
pub use warehouse::{MemWarehouse, Order, Row, TableData, order_of, refuses};

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
    pub store: Arc<MemStore>,
    pub warehouse: MemWarehouse,
    pub leases: MemLeases,
}

/// How a world is set up.
#[derive(Debug, Clone, Copy)]
pub struct WorldOptions {
    pub shards: u32,
    /// The queue's visibility timeout.
    pub visibility: Duration,
    /// The queue's redrive policy.
    pub max_receives: u32,
    /// The warehouse reads batches from the store itself (as Redshift's COPY does).
    pub warehouse_reads_store: bool,
    /// The warehouse names the row it refuses.
    pub names_rows: bool,
}

impl World {
    pub fn new(ctx: Arc<Ctx>, shards: u32, visibility: Duration, max_receives: u32) -> Self {
        Self::with(
            ctx,
            WorldOptions {
                shards,
                visibility,
                max_receives,
                warehouse_reads_store: false,
                names_rows: true,
            },
        )
    }

    pub fn with(ctx: Arc<Ctx>, options: WorldOptions) -> Self {
        let stream = Arc::new(MemStream::new(ctx.clone(), options.shards));
        let queue = Arc::new(MemQueue::new(
            ctx.clone(),
            options.visibility,
            options.max_receives,
        ));
        let store = Arc::new(MemStore::new(
            ctx.clone(),
            queue.clone(),
            !options.warehouse_reads_store,
        ));
        World {
            warehouse: MemWarehouse::new(
                ctx.clone(),
                options.warehouse_reads_store.then(|| store.clone()),
                options.names_rows,
            ),
            store,
            leases: MemLeases::new(ctx.clone(), stream.clone()),
            stream,
            queue,
            ctx,
        }
    }
}
