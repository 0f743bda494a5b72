//! The ports: everything the driver loops need from the world, as traits.
//!
//! The adapters implement them for AWS (Kinesis, S3, SQS, DynamoDB, Redshift) and for the
//! embedded stack (SQLite, a local directory, PostgreSQL); the simulation implements them in
//! memory with fault injection and virtual time. Because the drivers in [`crate::driver`] are
//! written against these traits only, production and simulation run the same code.
//!
//! Futures are `Send` so that production can run the drivers on a multi-threaded runtime.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Object bodies: shared, so a retried write does not copy them.
pub use bytes::Bytes;

use crate::batch::BatchMetadata;
use crate::catalog::{Catalog, Table};
use crate::import::WarehouseError;
use crate::kpl::HashKeyRange;
use crate::position::{Position, SequenceNumber, ShardId};
use crate::time::Timestamp;

/// Time, for drivers that must not read a clock of their own.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    /// Resolves once [`now`](Self::now) has reached `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> impl Future<Output = ()> + Send;

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        self.sleep_until(self.now().saturating_add(d))
    }
}

/// Randomness, for backoff jitter and ids: seeded in the simulation.
pub trait Entropy: Send + Sync {
    /// A uniform draw in `[0, 1)`.
    fn unit(&self) -> f64;
    fn fill(&self, buf: &mut [u8]);
}

/// An error from a port that a retry may cure, or not. Adapters map their SDK errors to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{service}: {message}")]
pub struct PortError {
    pub service: &'static str,
    pub message: String,
    /// Throttling, timeouts, 5xx: worth retrying.
    pub retryable: bool,
}

impl PortError {
    pub fn transient(service: &'static str, message: impl Into<String>) -> Self {
        PortError {
            service,
            message: message.into(),
            retryable: true,
        }
    }

    pub fn permanent(service: &'static str, message: impl Into<String>) -> Self {
        PortError {
            service,
            message: message.into(),
            retryable: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream

/// A shard as the stream lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: ShardId,
    pub parent: Option<ShardId>,
    pub adjacent_parent: Option<ShardId>,
    pub range: HashKeyRange,
    /// Closed shards (after a split or merge) take no more records; their children are read only
    /// once they are finished.
    pub closed: bool,
}

/// One record to put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

/// Where a put record landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutAck {
    pub shard: ShardId,
    pub seq: SequenceNumber,
}

/// The producer's side of the stream.
pub trait StreamWriter: Send + Sync {
    /// The open shards, to route aggregates by hash key.
    fn shards(&self) -> impl Future<Output = Result<Vec<ShardInfo>, PortError>> + Send;
    /// Puts records; the outer error fails the whole call, the inner ones single records
    /// (Kinesis `PutRecords` partial failures). `Ok` means durable.
    fn put_records(
        &self,
        records: Vec<PutRecord>,
    ) -> impl Future<Output = Result<Vec<Result<PutAck, PortError>>, PortError>> + Send;
}

/// A record read from a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    pub seq: SequenceNumber,
    pub partition_key: String,
    pub data: Vec<u8>,
    pub arrived_at: Timestamp,
}

/// One read from a shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    pub records: Vec<StreamRecord>,
    pub millis_behind_latest: Option<u64>,
    /// The shard is closed and everything in it has been read.
    pub end_of_shard: bool,
}

/// Where a read starts (the Kinesis shard-iterator types the consumer needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// The oldest record kept (`TRIM_HORIZON`).
    Oldest,
    /// The record with this sequence number and on (`AT_SEQUENCE_NUMBER`): a checkpoint inside
    /// an aggregate re-reads the aggregate and skips the user records already done.
    At(SequenceNumber),
    /// The records after this one (`AFTER_SEQUENCE_NUMBER`).
    After(SequenceNumber),
}

/// The consumer's side of the stream.
pub trait StreamReader: Send + Sync {
    /// Every shard, open and closed, with its lineage.
    fn list_shards(&self) -> impl Future<Output = Result<Vec<ShardInfo>, PortError>> + Send;
    /// Up to `limit` records of `shard` from `from` on.
    fn read(
        &self,
        shard: &ShardId,
        from: &ReadFrom,
        limit: usize,
    ) -> impl Future<Output = Result<ReadBatch, PortError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Object store

/// An object with its metadata pairs (S3 user metadata, or the local sidecar).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub body: Vec<u8>,
    pub metadata: BTreeMap<String, String>,
}

/// Where batches (`loads/`) and rejected events (`rejected/`) are written.
pub trait ObjectStore: Send + Sync {
    /// Writes a load object and its metadata atomically; overwriting the same key is allowed
    /// (a replayed flush writes the same bytes). The body is shared, not copied, by each retry.
    fn put_batch(
        &self,
        key: &str,
        body: Bytes,
        metadata: &BatchMetadata,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Writes any other object (rejected events).
    fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Reads an object; `Ok(None)` when there is no such key.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<StoredObject>, PortError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Queue

/// A message received from the load queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    /// Handle for ack, delay and dead-lettering of this delivery.
    pub receipt: String,
    pub body: String,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
}

/// The queue of object notifications, with its dead-letter queue.
pub trait Queue: Send + Sync {
    fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Message>, PortError>> + Send;
    /// Deletes the message: it is done.
    fn ack(&self, message: &Message) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Deletes several messages in one call (SQS `DeleteMessageBatch`, one transaction locally);
    /// one result per message, in order. The default acks them one at a time.
    fn ack_all(&self, messages: &[&Message]) -> impl Future<Output = Vec<Result<(), PortError>>> + Send {
        async move {
            let mut results = Vec::with_capacity(messages.len());
            for message in messages {
                results.push(self.ack(message).await);
            }
            results
        }
    }
    /// Makes the message visible again after `delay` (a retry with backoff).
    fn retry_after(
        &self,
        message: &Message,
        delay: Duration,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Moves the message to the dead-letter queue with a reason, and deletes it here.
    fn dead_letter(
        &self,
        message: &Message,
        reason: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Warehouse

/// One batch to load.
#[derive(Debug, Clone, Copy)]
pub struct LoadRequest<'a> {
    /// The object's key (also the load manifest's key).
    pub key: &'a str,
    pub metadata: &'a BatchMetadata,
    pub table: &'a Table,
    /// The uncompressed CSV, verified against the metadata's checksum.
    pub body: &'a [u8],
}

/// What a load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Committed with its manifest row; `inserted` rows were new (the rest were already there).
    Loaded { inserted: u64 },
    /// The manifest already had this key and checksum: nothing was done.
    AlreadyLoaded,
}

/// The warehouse, with the load manifest that makes loads idempotent (contract 2).
pub trait Warehouse: Send + Sync {
    /// Creates or alters what the catalog needs (the manifest, the tables); run at start.
    fn migrate(&self, catalog: &Catalog) -> impl Future<Output = Result<(), WarehouseError>> + Send;
    /// Whether the manifest holds this key with this checksum.
    fn is_loaded(&self, key: &str, sha256: &str)
    -> impl Future<Output = Result<bool, WarehouseError>> + Send;
    /// Loads `requests` in one transaction, committed once: for each batch in order, check the
    /// manifest, insert the rows not already present by (`_event_id`, `_row_index`) (upsert by
    /// key for dimension tables), write the manifest row. One outcome per request, in order; a
    /// batch named twice loads once (the second finds the first's manifest row).
    ///
    /// All or nothing: on an error no batch of the group is committed. One commit for many
    /// batches is what keeps many small batches (many active tables) cheap: a commit is an fsync,
    /// and on Redshift a turn through its serialized commit queue.
    fn load_all(
        &self,
        requests: &[LoadRequest<'_>],
    ) -> impl Future<Output = Result<Vec<LoadOutcome>, WarehouseError>> + Send;

    /// [`Warehouse::load_all`] of one batch.
    fn load(
        &self,
        request: LoadRequest<'_>,
    ) -> impl Future<Output = Result<LoadOutcome, WarehouseError>> + Send {
        async move {
            let outcomes = self.load_all(std::slice::from_ref(&request)).await?;
            outcomes.into_iter().next().ok_or_else(|| {
                WarehouseError::new(
                    crate::import::WarehouseErrorKind::Other,
                    "the warehouse returned no outcome for a load (warehouse adapter bug)",
                )
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Leases and checkpoints

/// How far a shard has been processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Nothing yet: start at the oldest record (KCL `TRIM_HORIZON`).
    TrimHorizon,
    /// Every record up to and including this one is done.
    At(Position),
    /// The shard is closed and fully done (KCL `SHARD_END`); its children may start.
    ShardEnd,
}

/// A shard lease, as the KCL's lease table keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub shard: ShardId,
    pub owner: Option<String>,
    /// Bumped on every renewal and take; a lease whose counter has not moved for the failover
    /// time is expired.
    pub counter: u64,
    pub checkpoint: Checkpoint,
    pub parents: Vec<ShardId>,
}

/// Why a conditional lease write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("lease for shard {0} was changed by another worker")]
    Conflict(ShardId),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The lease table. Every write is conditional on the counter (and owner) the caller last saw.
pub trait LeaseStore: Send + Sync {
    fn list(&self) -> impl Future<Output = Result<Vec<Lease>, PortError>> + Send;
    /// Creates a lease for a new shard unless one exists.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<(), LeaseError>> + Send;
    /// Takes `lease` (as last seen) for `owner`: counter + 1.
    fn take(&self, lease: &Lease, owner: &str) -> impl Future<Output = Result<Lease, LeaseError>> + Send;
    /// Renews a held lease: counter + 1.
    fn renew(&self, lease: &Lease) -> impl Future<Output = Result<Lease, LeaseError>> + Send;
    /// Stores a checkpoint on a held lease (fails if the lease was lost).
    fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<Lease, LeaseError>> + Send;
    /// Gives a held lease up (owner cleared), e.g. at shutdown.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), LeaseError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Observation

/// Something a driver did that operators count: the adapters turn these into metrics, the
/// simulation into invariant checks. Borrowed, so observing costs nothing when nobody listens.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// The producer made events durable in the stream.
    EventsAccepted {
        count: usize,
    },
    /// The producer gave up on events (the client is told; nothing was acknowledged).
    EventsFailed {
        count: usize,
    },
    /// The producer put an aggregate: user bytes against the record's size.
    AggregatePut {
        user_records: usize,
        user_bytes: usize,
        record_bytes: usize,
    },
    RecordsRead {
        shard: &'a ShardId,
        records: usize,
        millis_behind_latest: Option<u64>,
    },
    /// An event that could not be mapped went to `rejected/`.
    EventRejected {
        shard: &'a ShardId,
        reason: &'a str,
    },
    BatchFlushed {
        table: &'a str,
        rows: u64,
        bytes: usize,
        age: Duration,
        reason: &'a str,
    },
    BatchWritten {
        key: &'a str,
    },
    Checkpointed {
        shard: &'a ShardId,
        position: &'a Checkpoint,
        pending_records: usize,
    },
    /// Bytes buffered in the batcher, and bytes of batches being written (both under the budget).
    BufferBytes {
        allocated: usize,
        in_flight: usize,
    },
    LeaseTaken {
        shard: &'a ShardId,
    },
    LeaseLost {
        shard: &'a ShardId,
    },
    /// The importer loaded a batch (`inserted` new rows) or found it loaded already.
    Loaded {
        table: &'a str,
        key: &'a str,
        rows: u64,
        inserted: u64,
        duration: Duration,
        min_received_at: Timestamp,
        max_received_at: Timestamp,
    },
    LoadSkipped {
        key: &'a str,
        reason: &'a str,
    },
    LoadRetry {
        key: &'a str,
        attempt: u32,
        error: &'a str,
        transient: bool,
    },
    DeadLettered {
        key: &'a str,
        reason: &'a str,
    },
    /// A port call failed and will be retried.
    PortRetry {
        service: &'static str,
        error: &'a str,
    },
}

/// Receives [`Observation`]s.
pub trait Observer: Send + Sync {
    fn observe(&self, observation: Observation<'_>);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn observe(&self, _: Observation<'_>) {}
}
