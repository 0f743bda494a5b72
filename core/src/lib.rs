//! microbatch-core: the pure heart of microbatch.
//!
//! Everything here is sans-IO: state machines take inputs (a record read, the time now, an ack,
//! an error) and return what to do. The world is reached only through the [`ports`] traits, which
//! the adapters implement for AWS and the embedded stack and the simulation implements in memory.
//! See `docs/DESIGN.md` for the flow these pieces make up and the contracts they keep.
//!
//! In the order of the flow:
//! - [`event`]: the envelope the producer stamps; [`kpl`]: how envelopes ride in stream records;
//!   [`put_pacing`]: puts per shard under the stream's write limits.
//! - [`catalog`]: event types → tables; [`mapping`]: an event → CSV rows ([`csv`]).
//! - [`storable`]: what every warehouse can store (the mapper and the producer check it).
//! - [`batcher`]: rows → per-table batches; [`batch`]: their metadata and schema objects;
//!   [`compression`]: their encodings; [`keys`]: every object key; [`checkpoint`]: how far a
//!   shard may be checkpointed; [`lease`]: which shards a worker holds; [`read`]: how one shard
//!   is read (cursor, pacing, backoff); [`backoff`]: every retry's delays.
//! - [`import`]: what the importer does with each notification and each failure.
//! - [`ports`]: the world, as traits; [`driver`]: the three service loops over them.

pub mod backoff;
pub mod batch;
pub mod batcher;
pub mod catalog;
pub mod checkpoint;
pub mod compression;
pub mod csv;
pub mod driver;
pub mod event;
pub mod import;
pub mod keys;
pub mod kpl;
pub mod lease;
pub mod mapping;
pub mod ports;
pub mod position;
pub mod put_pacing;
pub mod read;
pub mod storable;
pub mod time;
