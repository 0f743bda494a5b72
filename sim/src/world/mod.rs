//! The simulated world: in-memory implementations of every port, sharing one virtual clock.
//!
//! Each is a faithful model of the service's contract as the drivers rely on it (conditional
//! lease writes, at-least-once queue delivery with visibility timeouts, atomic object puts that
//! notify the queue, a transactional warehouse with its manifest), kept small enough to read.

mod leases;
mod queue;
mod store;
mod stream;
mod warehouse;

pub use leases::MemLeases;
pub use queue::MemQueue;
pub use store::MemStore;
pub use stream::MemStream;
pub use warehouse::MemWarehouse;

use std::sync::{Mutex, MutexGuard};

/// Locks a world part; a poisoned lock means a simulated component panicked, which is a bug the
/// run must surface rather than paper over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
        .expect("a simulated component panicked while holding the world")
}
