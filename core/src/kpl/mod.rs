//! The KPL aggregation format: many user records packed into one stream record.
//!
//! The producer aggregates before the stream put ([`Aggregator`] groups user records per destination
//! shard and hands out [`Aggregate`]s ready to put); the consumer deaggregates after the read
//! ([`decode`] turns one stream record back into its user records, their index being the
//! sub-sequence number). Writing the format the Kinesis Producer Library writes means a Java KCL
//! or a Lambda deaggregator can read our stream too.
//!
//! An aggregated record is `MAGIC ++ protobuf(AggregatedRecord) ++ md5(protobuf)`, as specified in
//! `aggregation-format.md` of awslabs/amazon-kinesis-producer. The interop tests check our bytes
//! against golden vectors made by the reference Python implementation
//! (`scripts/kpl/gen_golden_vectors.py` → `core/tests/fixtures/kpl/golden.json`).

mod aggregator;
mod codec;
pub mod proto;
mod shard;

pub use aggregator::{Aggregate, Aggregator, AggregatorConfig};
pub use codec::{UserRecord, decode, encode, encoded_len, is_aggregated};
pub use shard::{HashKeyRange, Shard, ShardMap, hash_key_of, parse_explicit_hash_key};

/// The four bytes every KPL aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 trailer that closes an aggregated record.
pub const DIGEST_LEN: usize = 16;

/// Kinesis' limit on one record: data plus partition key, in bytes.
pub const KINESIS_MAX_RECORD_BYTES: usize = 1_048_576;

/// Kinesis' limit on a partition key, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// What went wrong while packing user records (producer, before the put) or unpacking a stream
/// record (consumer, after the read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    #[error(
        "KPL aggregate too short: {len} bytes after the magic, but the MD5 trailer alone needs {DIGEST_LEN}"
    )]
    Truncated { len: usize },

    #[error(
        "KPL aggregate checksum mismatch: the trailer says MD5 {expected}, the body hashes to {actual} \
         (the record is corrupt or truncated)"
    )]
    ChecksumMismatch { expected: String, actual: String },

    #[error("KPL aggregate body is not a valid AggregatedRecord protobuf: {0}")]
    Protobuf(#[source] prost::DecodeError),

    #[error(
        "KPL aggregate user record {record} points at partition key {index}, \
         but the partition key table holds only {table_len}"
    )]
    PartitionKeyIndexOutOfRange {
        record: usize,
        index: u64,
        table_len: usize,
    },

    #[error(
        "KPL aggregate user record {record} points at explicit hash key {index}, \
         but the explicit hash key table holds only {table_len}"
    )]
    ExplicitHashKeyIndexOutOfRange {
        record: usize,
        index: u64,
        table_len: usize,
    },

    #[error("KPL aggregate holds no user records")]
    EmptyAggregate,

    #[error("partition key must be 1 to {MAX_PARTITION_KEY_CHARS} characters, got {chars}")]
    InvalidPartitionKey { chars: usize },

    #[error("explicit hash key must be a decimal integer from 0 to 2^128-1 without leading zeros, got {0:?}")]
    InvalidExplicitHashKey(String),

    #[error(
        "user record too large: it needs {size} bytes as a KPL aggregate (data, keys and framing), \
         over the {limit}-byte limit"
    )]
    RecordTooLarge { size: usize, limit: usize },

    #[error("invalid KPL aggregator config: {0}")]
    InvalidConfig(String),

    #[error("invalid shard map: {0}")]
    InvalidShardMap(String),
}
