//! The protobuf messages of the KPL aggregation format, written by hand for prost so that the
//! build needs no `protoc`. They mirror `messages.proto` of the KPL (proto2):
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Tag    { required string key = 1; optional string value = 2; }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! The `required` labels matter for the bytes: proto2 writes a required field even when it holds
//! its default (index 0, empty data), and so must we to match the reference encoders byte for byte.

/// The body of an aggregated record (between the magic and the MD5 trailer). Built by the
/// producer's aggregator before the put, parsed by the consumer's deaggregator after the read.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AggregatedRecord {
    /// Distinct partition keys of the user records, in order of first use.
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    /// Distinct explicit hash keys (decimal) of the user records, in order of first use.
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    /// The user records, in order; a record's index is its sub-sequence number.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

/// One user record inside an [`AggregatedRecord`]; its keys are indexes into the tables.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Record {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
    /// Part of the format but unused by the KPL and the KCL; we never write them and ignore them
    /// when reading.
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// A key/value tag on a [`Record`] (never written by microbatch, skipped when read).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Tag {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}
