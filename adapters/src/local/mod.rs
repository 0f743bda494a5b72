//! The embedded stack: durable local implementations of the ports, for `microbatch run` (one
//! process, no cloud account, nothing to install).
//!
//! - [`SqliteStream`]: the stream, a log in SQLite partitioned into shards by hash key, as Kinesis
//!   routes records ([`StreamWriter`](microbatch_core::ports::StreamWriter) and
//!   [`StreamReader`](microbatch_core::ports::StreamReader)).
//! - [`DirStore`]: the object store, a directory with the same `loads/…` keys and the metadata in a
//!   `<key>.meta.json` sidecar; a batch put announces itself to a [`Notifier`] with the S3 event
//!   notification body, as S3 → SQS does.
//! - [`SqliteQueue`]: the load queue, in SQLite, with visibility timeouts, receive counts, receipt
//!   handles, long polling and a dead-letter queue (with a max-receive redrive, as SQS has).
//! - [`SqliteLeases`]: the lease table, with the KCL's conditional writes.
//!
//! Everything is crash-safe without a storage format of our own: SQLite in WAL mode for the
//! stream, the queue and the leases (a call returns `Ok` only after its transaction committed), and
//! write-temp-fsync-rename for the directory. Kill the process at any moment and start it again:
//! nothing acknowledged is lost, and nothing is doubled.

mod leases;
mod queue;
mod sqlite;
mod store;
mod stream;

pub use leases::SqliteLeases;
pub use queue::{DeadLetter, QueueDepth, QueueOptions, SqliteQueue};
pub use sqlite::Durability;
pub use store::{DirStore, NoNotifier, Notifier};
pub use stream::{SqliteStream, StreamOptions};
