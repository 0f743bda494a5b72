//! Which adapter stands behind each port, and its settings: a tagged enum per port, chosen by
//! `kind` (`[stream] kind = "kinesis"`, or `MICROBATCH_STREAM__KIND=kinesis`).
//!
//! Each kind takes only its own settings: `stream.shards` under `kind = "kinesis"` is an error
//! naming the field, not a setting silently ignored. Endpoints, region and credentials of the AWS
//! kinds are not settings here: the AWS SDK reads them from its environment (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`, the credential chain), so the same
//! configuration runs against AWS, LocalStack or moto (docs/AWS.md).

use serde::{Deserialize, Serialize};

/// The stream between the producer and the consumer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamConfig {
    /// A log in SQLite under the data directory, sharded by hash key as Kinesis shards.
    Local(LocalStreamConfig),
    /// An Amazon Kinesis data stream.
    Kinesis(KinesisConfig),
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig::Local(LocalStreamConfig::default())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LocalStreamConfig {
    pub shards: u32,
    /// How long records are kept, read or not (as Kinesis retention).
    pub retention_hours: u64,
}

impl Default for LocalStreamConfig {
    fn default() -> Self {
        LocalStreamConfig {
            shards: 2,
            retention_hours: 24,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KinesisConfig {
    /// The stream's name (`MICROBATCH_STREAM_NAME`).
    pub name: String,
    /// Bytes a second the producer puts into one shard, at most: Kinesis takes 1 MiB/s per
    /// shard and throttles above it. Several producers share the limit, so lower it for them.
    pub put_bytes_per_sec: u64,
    /// Records a second the producer puts into one shard, at most (Kinesis: 1,000).
    pub put_records_per_sec: u64,
}

impl Default for KinesisConfig {
    fn default() -> Self {
        KinesisConfig {
            name: String::new(),
            put_bytes_per_sec: 1 << 20,
            put_records_per_sec: 1000,
        }
    }
}

impl StreamConfig {
    /// The default linger and aggregate size of the producer for this stream, when the
    /// configuration sets none. Kinesis: the KPL's (100 ms, 50 KiB): a put costs a request and
    /// counts against the shard's 1,000 records/s, so aggregates are worth a wait. Local: 20 ms
    /// and aggregates up to a Kinesis record (1 MiB), for latency (a put is a SQLite insert).
    pub fn producer_defaults(&self) -> (u64, usize) {
        match self {
            StreamConfig::Local(_) => (20, microbatch_core::kpl::KINESIS_MAX_RECORD_BYTES),
            StreamConfig::Kinesis(_) => (100, 50 * 1024),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StreamConfig::Local(_) => "local",
            StreamConfig::Kinesis(_) => "kinesis",
        }
    }
}

/// The object store batches are written to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreConfig {
    /// A directory under the data directory; a written batch is announced to the local queue
    /// as S3 announces it to SQS.
    Local(LocalStoreConfig),
    /// An Amazon S3 bucket, whose event notifications feed the SQS load queue.
    S3(S3Config),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Local(LocalStoreConfig::default())
    }
}

impl StoreConfig {
    /// The bucket batches are written to (and named in notifications).
    pub fn bucket(&self) -> &str {
        match self {
            StoreConfig::Local(c) => &c.bucket,
            StoreConfig::S3(c) => &c.bucket,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StoreConfig::Local(_) => "local",
            StoreConfig::S3(_) => "s3",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LocalStoreConfig {
    /// The name notifications give the directory, as a bucket's.
    pub bucket: String,
}

impl Default for LocalStoreConfig {
    fn default() -> Self {
        LocalStoreConfig {
            bucket: "microbatch".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The bucket (`MICROBATCH_BUCKET`).
    pub bucket: String,
    /// Path-style addressing (`http://host/bucket/key`) instead of virtual-hosted style
    /// (`http://bucket.host/key`): emulators on `localhost` need it.
    pub path_style: bool,
}

/// The queue of batch notifications the importer takes loads from, with its dead-letter queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueueConfig {
    /// In SQLite under the data directory, with visibility timeouts and a max-receive redrive.
    Local(LocalQueueConfig),
    /// Amazon SQS, with a dead-letter queue by redrive policy.
    Sqs(SqsConfig),
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig::Local(LocalQueueConfig::default())
    }
}

impl QueueConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            QueueConfig::Local(_) => "local",
            QueueConfig::Sqs(_) => "sqs",
        }
    }

    /// How long the importer's receive waits for a first message, when the configuration sets
    /// none: SQS's longest long poll (20 s: fewer empty receives, which are billed), and 1 s on
    /// the local queue (it wakes at once on a send anyway).
    pub fn default_receive_wait_ms(&self) -> u64 {
        match self {
            QueueConfig::Local(_) => 1_000,
            QueueConfig::Sqs(_) => 20_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LocalQueueConfig {
    /// Seconds a received message stays hidden; above the longest load.
    pub visibility_secs: u64,
    /// Receives after which the queue itself dead-letters a message.
    pub max_receives: u32,
}

impl Default for LocalQueueConfig {
    fn default() -> Self {
        LocalQueueConfig {
            visibility_secs: 120,
            max_receives: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SqsConfig {
    /// The load queue's URL (`MICROBATCH_QUEUE_URL`).
    pub url: String,
    /// The dead-letter queue's URL (`MICROBATCH_DLQ_URL`): where the importer sends what it
    /// cannot load, with the reason, and where `microbatch dlq` reads.
    pub dlq_url: String,
    /// The queue's visibility timeout, in seconds (`microbatch check` compares it with the
    /// queue's): the importer extends a message's visibility at a third of it while it loads.
    pub visibility_secs: u64,
    /// The `maxReceiveCount` of the queue's redrive policy (checked against the queue's too).
    pub max_receives: u32,
}

impl Default for SqsConfig {
    fn default() -> Self {
        SqsConfig {
            url: String::new(),
            dlq_url: String::new(),
            visibility_secs: 120,
            max_receives: 10,
        }
    }
}

/// Where the consumer's leases and checkpoints live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LeasesConfig {
    /// In SQLite under the data directory (KCL column names).
    Local(LocalLeasesConfig),
    /// A DynamoDB table with the KCL's lease-table schema.
    Dynamodb(DynamoDbConfig),
}

impl Default for LeasesConfig {
    fn default() -> Self {
        LeasesConfig::Local(LocalLeasesConfig {})
    }
}

impl LeasesConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            LeasesConfig::Local(_) => "local",
            LeasesConfig::Dynamodb(_) => "dynamodb",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LocalLeasesConfig {}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DynamoDbConfig {
    /// The table's name (`MICROBATCH_LEASE_TABLE`); hash key `leaseKey` (S).
    pub table: String,
}
