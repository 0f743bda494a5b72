//! The ports: everything the driver loops need from the world, as traits.
//!
//! The adapters implement them for AWS (Kinesis, S3, SQS, DynamoDB, Redshift) and for the
//! embedded stack (SQLite, a local directory, PostgreSQL); the simulation implements them in
//! memory with fault injection and virtual time. Because the drivers in [`crate::driver`] are
//! written against these traits only, production and simulation run the same code.
//!
//! Each port is shaped after the AWS service it stands for, so that its adapter is a thin
//! translation and not a contortion (docs/DESIGN.md, "The ports"):
//!
//! - errors say what happened ([`ErrorKind`]), so a driver reacts to a throttle, an expired
//!   cursor or a denial each in its own way instead of on a retryable bool;
//! - stream reads go through a [`Cursor`] (a Kinesis shard iterator): opened once, carried from
//!   read to read, re-opened after the last delivered record when it expires;
//! - objects are addressed by [`ObjectLocation`] (bucket and key, as a notification names them),
//!   written through an [`ObjectWriter`] and read through an [`ObjectReader`];
//! - the queue extends a message's visibility while its load runs and dead-letters with a reason
//!   code; batched deletes hold at most [`Queue::MAX_BATCH`] messages (SQS's 10);
//! - a load names its batch by location, with the bytes optional: a warehouse that reads the
//!   object itself (Redshift's COPY from S3) never makes the importer download it.
//!
//! Futures are `Send` so that production can run the drivers on a multi-threaded runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// Object bodies: shared, so a retried write does not copy them.
pub use bytes::Bytes;

use crate::batch::BatchMetadata;
use crate::catalog::{Catalog, Table};
use crate::import::WarehouseError;
use crate::kpl::HashKeyRange;
pub use crate::lease::{Checkpoint, Lease};
use crate::position::{SequenceNumber, ShardId};
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

// ---------------------------------------------------------------------------------------------
// Errors

/// What a failed port call means for the caller. Each adapter maps its SDK's or driver's errors
/// to these in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The service asked to slow down (Kinesis `ProvisionedThroughputExceeded`, S3 `SlowDown`,
    /// DynamoDB and SQS throttling): retry later, and slower.
    Throttled,
    /// The service could not be reached or did not answer (connection, timeout, 5xx). The call
    /// may or may not have taken effect: retry, and let idempotence absorb a double.
    Unavailable,
    /// A stream cursor (a shard iterator) is too old: open a new one.
    Expired,
    /// The shard, object, queue or table is not there (or no longer).
    NotFound,
    /// Not allowed: credentials, an IAM policy, a disabled KMS key. Retrying cures it only once
    /// an operator fixes it.
    Denied,
    /// The request itself is wrong: a validation error, a value too large for the service.
    Invalid,
    /// A condition did not hold: a lease changed by another worker, a receipt that is no longer
    /// the message's newest.
    Conflict,
}

impl ErrorKind {
    /// Throttling and unavailability pass by themselves; every other kind needs something to
    /// change first (a new cursor, an operator, another request).
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Unavailable)
    }

    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Expired => "expired",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Denied => "denied",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Conflict => "conflict",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed port call: which service, what kind of failure, and the service's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{service} ({kind}): {message}")]
pub struct PortError {
    pub service: &'static str,
    pub kind: ErrorKind,
    pub message: String,
}

impl PortError {
    pub fn new(service: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        PortError {
            service,
            kind,
            message: message.into(),
        }
    }

    pub fn throttled(service: &'static str, message: impl Into<String>) -> Self {
        Self::new(service, ErrorKind::Throttled, message)
    }

    pub fn unavailable(service: &'static str, message: impl Into<String>) -> Self {
        Self::new(service, ErrorKind::Unavailable, message)
    }

    pub fn expired(service: &'static str, message: impl Into<String>) -> Self {
        Self::new(service, ErrorKind::Expired, message)
    }

    pub fn not_found(service: &'static str, message: impl Into<String>) -> Self {
        Self::new(service, ErrorKind::NotFound, message)
    }

    pub fn denied(service: &'static str, message: impl Into<String>) -> Self {
        Self::new(service, ErrorKind::Denied, message)
    }

    pub fn invalid(service: &'static str, message: impl Into<String>) -> Self {
        Self::new(service, ErrorKind::Invalid, message)
    }

    pub fn conflict(service: &'static str, message: impl Into<String>) -> Self {
        Self::new(service, ErrorKind::Conflict, message)
    }

    /// See [`ErrorKind::is_transient`].
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
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

/// A position in a shard as the stream hands it out (a Kinesis shard iterator): opaque, good
/// for one read, and only for a while ([`ErrorKind::Expired`] after five minutes on Kinesis).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cursor(pub String);

impl Cursor {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One read from a shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    /// May be empty in the middle of a shard (Kinesis pages through gaps): read on from `next`.
    pub records: Vec<StreamRecord>,
    pub millis_behind_latest: Option<u64>,
    /// Where the next read starts; `None` once the shard is closed and read to its end.
    pub next: Option<Cursor>,
}

/// The consumer's side of the stream.
pub trait StreamReader: Send + Sync {
    /// Every shard, open and closed, with its lineage.
    fn list_shards(&self) -> impl Future<Output = Result<Vec<ShardInfo>, PortError>> + Send;
    /// A cursor for `shard` at `from` (`GetShardIterator`).
    fn open(
        &self,
        shard: &ShardId,
        from: &ReadFrom,
    ) -> impl Future<Output = Result<Cursor, PortError>> + Send;
    /// Up to `limit` records of `shard` from `cursor` on (`GetRecords`), and the cursor after them.
    fn read(
        &self,
        shard: &ShardId,
        cursor: &Cursor,
        limit: usize,
    ) -> impl Future<Output = Result<ReadBatch, PortError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Object store

/// Where an object is: its bucket and key, as an S3 event notification names them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectLocation {
    pub bucket: String,
    pub key: String,
}

impl ObjectLocation {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        ObjectLocation {
            bucket: bucket.into(),
            key: key.into(),
        }
    }
}

impl fmt::Display for ObjectLocation {
    /// `s3://bucket/key`, the form Redshift's COPY and the AWS CLI take.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// An object with its metadata pairs (S3 user metadata, or the local sidecar).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub body: Vec<u8>,
    pub metadata: BTreeMap<String, String>,
}

/// The consumer's (and the importer's, for refused rows) side of the object store: writes into
/// the store's own bucket. Overwriting a key is allowed: a replayed flush writes the same bytes.
pub trait ObjectWriter: Send + Sync {
    /// The bucket this writer writes to.
    fn bucket(&self) -> &str;
    /// Writes a load object with its metadata, atomically. The body is shared, not copied, by
    /// each retry.
    fn put_batch(
        &self,
        key: &str,
        body: Bytes,
        metadata: &BatchMetadata,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Writes any other object: rejected events and rows, batch schemas.
    fn put(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// The importer's side of the object store: reads wherever a notification points.
pub trait ObjectReader: Send + Sync {
    /// An object's metadata without its body (`HeadObject`); `Ok(None)` when there is no such
    /// object.
    fn head(
        &self,
        at: &ObjectLocation,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, String>>, PortError>> + Send;
    /// An object with its metadata; `Ok(None)` when there is no such object.
    fn get(
        &self,
        at: &ObjectLocation,
    ) -> impl Future<Output = Result<Option<StoredObject>, PortError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Queue

/// A message received from the load queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    /// Handle for ack, visibility changes and dead-lettering of this delivery.
    pub receipt: String,
    pub body: String,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
}

/// Why a message goes to the dead-letter queue: a stable code (a message attribute operators
/// filter on) and the one-line text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetterNote<'a> {
    pub code: &'a str,
    pub reason: &'a str,
}

/// The queue of object notifications, with its dead-letter queue.
pub trait Queue: Send + Sync {
    /// Most messages in one receive and in one [`ack_all`](Self::ack_all) (SQS: 10).
    const MAX_BATCH: usize = 10;

    /// How long a received message stays hidden unless its visibility is changed.
    fn visibility_timeout(&self) -> Duration;
    /// Up to `max` messages (at most [`MAX_BATCH`](Self::MAX_BATCH)), waiting up to `wait` for
    /// the first.
    fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Message>, PortError>> + Send;
    /// Deletes the message: it is done.
    fn ack(&self, message: &Message) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Deletes up to [`MAX_BATCH`](Self::MAX_BATCH) messages in one call (SQS
    /// `DeleteMessageBatch`); one result per message, in order. The default acks them one at a
    /// time.
    fn ack_all(&self, messages: &[&Message]) -> impl Future<Output = Vec<Result<(), PortError>>> + Send {
        async move {
            let mut results = Vec::with_capacity(messages.len());
            for message in messages {
                results.push(self.ack(message).await);
            }
            results
        }
    }
    /// Hides the message for `hidden` from now (SQS `ChangeMessageVisibility`): a retry with
    /// backoff, or a heartbeat that keeps a long load from being delivered twice.
    fn set_visibility(
        &self,
        message: &Message,
        hidden: Duration,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Sends the message to the dead-letter queue with its reason, then deletes it here. On SQS
    /// that is two calls: a crash between them leaves the message in both queues, so replaying
    /// the dead-letter queue must be idempotent (the load manifest makes it so).
    fn dead_letter(
        &self,
        message: &Message,
        note: DeadLetterNote<'_>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Warehouse

/// One batch to load.
#[derive(Debug, Clone, Copy)]
pub struct LoadRequest<'a> {
    /// The object; its key is also the load manifest's key.
    pub location: &'a ObjectLocation,
    pub metadata: &'a BatchMetadata,
    pub table: &'a Table,
    /// The batch's columns, in the order of its CSV fields (from its schema object).
    pub columns: &'a [String],
    /// The uncompressed CSV, verified against the metadata; `None` when the warehouse reads the
    /// object from the store itself ([`Warehouse::needs_body`] is false).
    pub body: Option<&'a [u8]>,
    /// Rows (0-based, ascending) the warehouse refused before: leave them out. The manifest
    /// records how many, so a redelivery skips the batch instead of trying them again.
    pub skip_rows: &'a [u64],
}

impl LoadRequest<'_> {
    /// The manifest's key of this batch.
    pub fn key(&self) -> &str {
        &self.location.key
    }
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
    /// Whether loads need the object's bytes in [`LoadRequest::body`]. A warehouse that reads
    /// the object itself answers false, and verifies the row count from its own COPY instead.
    fn needs_body(&self) -> bool {
        true
    }
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
    ///
    /// A row the warehouse refuses fails the load with [`WarehouseError::row`] naming it when
    /// the warehouse can tell which.
    fn load_all(
        &self,
        requests: &[LoadRequest<'_>],
    ) -> impl Future<Output = Result<Vec<LoadOutcome>, WarehouseError>> + Send;

    /// Runs the load of the batch rows in `rows` (less `request.skip_rows`), without the
    /// manifest, and rolls it back whatever happened: whether the warehouse would take those
    /// rows. The importer bisects a batch with it when a refused row is not named.
    fn probe(
        &self,
        request: LoadRequest<'_>,
        rows: std::ops::Range<u64>,
    ) -> impl Future<Output = Result<(), WarehouseError>> + Send;

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

/// The lease table. Every write is conditional on the counter (and owner) the caller last saw;
/// a write that loses fails with [`ErrorKind::Conflict`].
pub trait LeaseStore: Send + Sync {
    /// Every lease, read consistently (the coordinator decides on it).
    fn list(&self) -> impl Future<Output = Result<Vec<Lease>, PortError>> + Send;
    /// Creates a lease for a new shard unless one exists.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Takes `lease` (as last seen) for `owner`: counter + 1.
    fn take(&self, lease: &Lease, owner: &str) -> impl Future<Output = Result<Lease, PortError>> + Send;
    /// Renews a held lease: counter + 1.
    fn renew(&self, lease: &Lease) -> impl Future<Output = Result<Lease, PortError>> + Send;
    /// Stores a checkpoint on a held lease (fails if the lease was lost).
    fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<Lease, PortError>> + Send;
    /// Gives a held lease up (owner cleared), e.g. at shutdown.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Deletes a lease nobody needs any more (a finished parent, a shard gone from the stream),
    /// if it is still as last seen.
    fn delete(&self, lease: &Lease) -> impl Future<Output = Result<(), PortError>> + Send;
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
        bytes: usize,
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
        /// Bytes stored (after compression).
        bytes: usize,
    },
    /// An object write failed; it is retried. While `stalled`, the shard it came from is not
    /// read (the failure is not transient: an operator must fix it) — the alarm.
    WriteFailed {
        key: &'a str,
        error: &'a PortError,
        attempt: u32,
        stalled: bool,
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
    /// A lease nobody needs any more was deleted.
    LeaseDeleted {
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
    /// The warehouse refused a row of a batch: it went to `rejected/`, the others loaded.
    RowRefused {
        key: &'a str,
        row: u64,
        reason: &'a str,
    },
    DeadLettered {
        key: &'a str,
        code: &'a str,
        reason: &'a str,
    },
    /// A port call failed and will be retried.
    PortRetry {
        service: &'static str,
        kind: ErrorKind,
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

impl Observation<'_> {
    /// [`Observation::PortRetry`] of `error`.
    pub fn retry(error: &PortError) -> Observation<'_> {
        Observation::PortRetry {
            service: error.service,
            kind: error.kind,
            error: &error.message,
        }
    }
}
