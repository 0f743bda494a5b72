//! The ports, opened from the configuration: each port the local adapter or the AWS one, as its
//! `kind` says, behind one enum per port that the drivers take like any adapter.
//!
//! | port | `local` (the default: `microbatch run` needs nothing installed) | AWS |
//! |---|---|---|
//! | stream | `<data>/stream.db` (SQLite, shards by hash key) | Kinesis |
//! | object store | `<data>/objects/` (`loads/…` keys, `.meta.json` sidecars) | S3 |
//! | queue + DLQ | `<data>/queue.db` (SQLite) | SQS |
//! | leases and checkpoints | `<data>/leases.db` (SQLite) | DynamoDB |
//! | warehouse | `<data>/warehouse.db` (SQLite), or PostgreSQL by `warehouse.url` | |
//!
//! Kinds mix: the embedded stream with an S3 store is fine. The local store announces its
//! batches to the local queue (as S3 announces them to SQS), so a local store needs a local queue
//! to be read from; `microbatch check` says so when it is not. Separate processes (`produce`,
//! `consume`, `import`) on one machine share the local files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use microbatch_core::batch::BatchMetadata;
use microbatch_core::ports::{
    Bytes, Checkpoint, Cursor, DeadLetterNote, Lease, LeaseStore, Message, ObjectLocation, ObjectReader,
    ObjectWriter, PortError, PutAck, PutRecord, Queue, ReadBatch, ReadFrom, ShardInfo, StoredObject,
    StreamReader, StreamWriter,
};
use microbatch_core::position::ShardId;
use tokio::sync::OnceCell;

use crate::aws::{Aws, DynamoLeases, KinesisStream, S3Store, SqsQueue};
use crate::config::{Config, LeasesConfig, QueueConfig, StoreConfig, StreamConfig};
use crate::local::{
    DirStore, Durability, QueueOptions, SqliteLeases, SqliteQueue, SqliteStream, StreamOptions,
};
use crate::warehouse::redshift::url::RedshiftUrl;
use crate::warehouse::{RedshiftWarehouse, SqlWarehouse};
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};

/// `match` over a port enum's two adapters with the same body.
macro_rules! each {
    ($value:expr, $port:ident => $body:expr) => {
        match $value {
            Self::Local($port) => $body,
            Self::Aws($port) => $body,
        }
    };
}

/// The stream: both halves.
#[derive(Debug)]
pub enum Stream {
    Local(SqliteStream),
    Aws(KinesisStream),
}

/// The object store: both halves.
#[derive(Debug)]
pub enum Store {
    Local(DirStore<Arc<SqliteQueue>>),
    Aws(S3Store),
}

/// The load queue with its dead-letter queue.
#[derive(Debug)]
pub enum LoadQueue {
    Local(Arc<SqliteQueue>),
    Aws(SqsQueue),
}

/// The lease table.
#[derive(Debug)]
pub enum Leases {
    Local(SqliteLeases),
    Aws(DynamoLeases),
}

/// Every port a process may need. The stream, store, queue and leases are opened at once (an
/// AWS client opens no connection until its first call); the warehouse on first use, so that a
/// producer or consumer needs no warehouse at all.
#[derive(Debug)]
pub struct Stack {
    pub stream: Stream,
    pub store: Store,
    pub queue: LoadQueue,
    pub leases: Leases,
    /// The SDK configuration, when any port is an AWS one.
    pub aws: Option<Aws>,
    warehouse_url: String,
    warehouse_schema: String,
    warehouse_iam_role: String,
    warehouse: OnceCell<SqlWarehouse>,
}

impl Stack {
    /// Opens (creating when new) every port the configuration names.
    pub async fn open(config: &Config) -> anyhow::Result<Stack> {
        let data = &config.data_dir;
        let any_aws = !matches!(config.stream, StreamConfig::Local(_))
            || !matches!(config.store, StoreConfig::Local(_))
            || !matches!(config.queue, QueueConfig::Local(_))
            || !matches!(config.leases, LeasesConfig::Local(_));
        let any_local = matches!(config.stream, StreamConfig::Local(_))
            || matches!(config.store, StoreConfig::Local(_))
            || matches!(config.queue, QueueConfig::Local(_))
            || matches!(config.leases, LeasesConfig::Local(_));
        if any_local {
            std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
        }
        let aws = if any_aws {
            Some(Aws::from_env().await.context("cannot configure the AWS SDK")?)
        } else {
            None
        };
        let aws_ref = || aws.as_ref().expect("loaded when any port is an AWS one");

        let stream = match &config.stream {
            StreamConfig::Local(c) => {
                let stream = SqliteStream::open(
                    data.join("stream.db"),
                    StreamOptions {
                        shards: c.shards,
                        retention: Duration::from_secs(c.retention_hours * 3600),
                        ..StreamOptions::default()
                    },
                )
                .await
                .context("cannot open the local stream")?;
                // Like Kinesis retention: records older than `retention_hours` go, read or not.
                stream.spawn_trimmer(Duration::from_secs(60));
                Stream::Local(stream)
            }
            StreamConfig::Kinesis(c) => Stream::Aws(KinesisStream::new(aws_ref(), &c.name)),
        };
        // The local store notifies the local queue, whichever queue the importer reads.
        let local_queue = if matches!(config.queue, QueueConfig::Local(_))
            || matches!(config.store, StoreConfig::Local(_))
        {
            let (visibility, max_receives) = match &config.queue {
                QueueConfig::Local(c) => (c.visibility_secs, c.max_receives),
                QueueConfig::Sqs(c) => (c.visibility_secs, c.max_receives),
            };
            Some(Arc::new(
                SqliteQueue::open(
                    data.join("queue.db"),
                    QueueOptions {
                        visibility: Duration::from_secs(visibility),
                        max_receives,
                        ..QueueOptions::default()
                    },
                )
                .await
                .context("cannot open the local queue")?,
            ))
        } else {
            None
        };
        let store = match &config.store {
            StoreConfig::Local(c) => Store::Local(
                DirStore::open(
                    data.join("objects"),
                    c.bucket.clone(),
                    local_queue.clone().expect("opened for a local store"),
                )
                .await
                .context("cannot open the local object store")?,
            ),
            StoreConfig::S3(c) => Store::Aws(S3Store::new(aws_ref(), &c.bucket, c.path_style)),
        };
        let queue = match &config.queue {
            QueueConfig::Local(_) => LoadQueue::Local(local_queue.expect("opened for a local queue")),
            QueueConfig::Sqs(c) => LoadQueue::Aws(SqsQueue::new(
                aws_ref(),
                &c.url,
                &c.dlq_url,
                Duration::from_secs(c.visibility_secs),
            )),
        };
        let leases = match &config.leases {
            LeasesConfig::Local(_) => Leases::Local(
                SqliteLeases::open(data.join("leases.db"), Durability::default())
                    .await
                    .context("cannot open the local lease table")?,
            ),
            LeasesConfig::Dynamodb(c) => Leases::Aws(DynamoLeases::new(aws_ref(), &c.table)),
        };
        Ok(Stack {
            stream,
            store,
            queue,
            leases,
            aws,
            warehouse_url: config.warehouse_url(),
            warehouse_schema: config.warehouse.schema.clone(),
            warehouse_iam_role: config.warehouse.iam_role.clone(),
            warehouse: OnceCell::new(),
        })
    }

    /// The warehouse, connected on first use.
    pub async fn warehouse(&self) -> anyhow::Result<&SqlWarehouse> {
        self.warehouse
            .get_or_try_init(|| async {
                let opened = match RedshiftUrl::parse(&self.warehouse_url) {
                    Some(url) => self.redshift(url?).await,
                    None => SqlWarehouse::connect(&self.warehouse_url, &self.warehouse_schema).await,
                };
                opened.with_context(|| format!("cannot open the warehouse {}", redact(&self.warehouse_url)))
            })
            .await
    }

    /// Redshift's COPY reads the batches from S3, and its COPY manifests go next to them: it
    /// needs the S3 store.
    async fn redshift(&self, url: RedshiftUrl) -> Result<SqlWarehouse, WarehouseError> {
        let (Store::Aws(bucket), Some(aws)) = (&self.store, &self.aws) else {
            return Err(WarehouseError::new(
                WarehouseErrorKind::Other,
                "a Redshift warehouse reads the batches from S3: set [store] kind = \"s3\" \
                 (MICROBATCH_STORE__KIND=s3) and its bucket",
            ));
        };
        let w = RedshiftWarehouse::open(
            &url,
            &self.warehouse_schema,
            &self.warehouse_iam_role,
            aws,
            bucket.clone(),
        )
        .await?;
        Ok(SqlWarehouse::Redshift(Box::new(w)))
    }
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***{}", &url[..s], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl StreamWriter for Stream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        each!(self, s => s.shards().await)
    }

    async fn put_records(
        &self,
        records: Vec<PutRecord>,
    ) -> Result<Vec<Result<PutAck, PortError>>, PortError> {
        each!(self, s => s.put_records(records).await)
    }
}

impl StreamReader for Stream {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        each!(self, s => s.list_shards().await)
    }

    async fn open(&self, shard: &ShardId, from: &ReadFrom) -> Result<Cursor, PortError> {
        each!(self, s => s.open(shard, from).await)
    }

    async fn read(&self, shard: &ShardId, cursor: &Cursor, limit: usize) -> Result<ReadBatch, PortError> {
        each!(self, s => s.read(shard, cursor, limit).await)
    }
}

impl ObjectWriter for Store {
    fn bucket(&self) -> &str {
        each!(self, s => s.bucket())
    }

    async fn put_batch(&self, key: &str, body: Bytes, metadata: &BatchMetadata) -> Result<(), PortError> {
        each!(self, s => s.put_batch(key, body, metadata).await)
    }

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), PortError> {
        each!(self, s => s.put(key, body, content_type).await)
    }
}

impl ObjectReader for Store {
    async fn head(&self, at: &ObjectLocation) -> Result<Option<BTreeMap<String, String>>, PortError> {
        each!(self, s => s.head(at).await)
    }

    async fn get(&self, at: &ObjectLocation) -> Result<Option<StoredObject>, PortError> {
        each!(self, s => s.get(at).await)
    }
}

impl Queue for LoadQueue {
    fn visibility_timeout(&self) -> Duration {
        each!(self, q => q.visibility_timeout())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, PortError> {
        each!(self, q => q.receive(max, wait).await)
    }

    async fn ack(&self, message: &Message) -> Result<(), PortError> {
        each!(self, q => q.ack(message).await)
    }

    async fn ack_all(&self, messages: &[&Message]) -> Vec<Result<(), PortError>> {
        each!(self, q => q.ack_all(messages).await)
    }

    async fn set_visibility(&self, message: &Message, hidden: Duration) -> Result<(), PortError> {
        each!(self, q => q.set_visibility(message, hidden).await)
    }

    async fn dead_letter(&self, message: &Message, note: DeadLetterNote<'_>) -> Result<(), PortError> {
        each!(self, q => q.dead_letter(message, note).await)
    }
}

impl LeaseStore for Leases {
    async fn list(&self) -> Result<Vec<Lease>, PortError> {
        each!(self, l => l.list().await)
    }

    async fn create(&self, lease: &Lease) -> Result<(), PortError> {
        each!(self, l => l.create(lease).await)
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, PortError> {
        each!(self, l => l.take(lease, owner).await)
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, PortError> {
        each!(self, l => l.renew(lease).await)
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Lease, PortError> {
        each!(self, l => l.checkpoint(lease, checkpoint).await)
    }

    async fn release(&self, lease: &Lease) -> Result<(), PortError> {
        each!(self, l => l.release(lease).await)
    }

    async fn delete(&self, lease: &Lease) -> Result<(), PortError> {
        each!(self, l => l.delete(lease).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite:///tmp/w.db"), "sqlite:///tmp/w.db");
    }

    #[tokio::test]
    async fn the_default_configuration_opens_the_embedded_stack_without_aws() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let stack = Stack::open(&config).await.unwrap();
        assert!(stack.aws.is_none());
        assert!(matches!(
            (&stack.stream, &stack.store, &stack.queue, &stack.leases),
            (
                Stream::Local(_),
                Store::Local(_),
                LoadQueue::Local(_),
                Leases::Local(_)
            )
        ));
        assert!(
            !dir.path().join("warehouse.db").exists(),
            "no warehouse until asked"
        );
        stack.warehouse().await.unwrap();
        assert!(dir.path().join("warehouse.db").exists());
    }
}
