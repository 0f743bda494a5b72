//! The embedded stack, opened from the configuration: every port in files under the data
//! directory, so `microbatch run` needs no cloud account and no server.
//!
//! | port | file |
//! |---|---|
//! | stream | `<data>/stream.db` (SQLite, shards by hash key) |
//! | object store | `<data>/objects/` (`loads/…` keys, `.meta.json` sidecars) |
//! | queue + DLQ | `<data>/queue.db` (SQLite) |
//! | leases and checkpoints | `<data>/leases.db` (SQLite) |
//! | warehouse | `<data>/warehouse.db` (SQLite), or PostgreSQL by `warehouse.url` |
//!
//! Separate processes (`produce`, `consume`, `import`) on one machine share these files.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{Config, QueueKind, StoreKind, StreamKind};
use crate::local::{
    DirStore, Durability, QueueOptions, SqliteLeases, SqliteQueue, SqliteStream, StreamOptions,
};
use crate::warehouse::SqlWarehouse;

/// Every port of the embedded stack.
#[derive(Debug)]
pub struct Stack {
    pub stream: SqliteStream,
    pub queue: Arc<SqliteQueue>,
    pub store: DirStore<Arc<SqliteQueue>>,
    pub leases: SqliteLeases,
    pub warehouse: SqlWarehouse,
}

impl Stack {
    /// Opens (creating when new) every port under `config.data_dir`.
    pub async fn open(config: &Config) -> anyhow::Result<Stack> {
        if config.stream.kind != StreamKind::Local
            || config.store.kind != StoreKind::Local
            || config.queue.kind != QueueKind::Local
        {
            anyhow::bail!(
                "this build runs the embedded stack only (stream.kind, store.kind and queue.kind = \"local\"); \
                 the AWS adapters arrive with their own issue"
            );
        }
        let data = &config.data_dir;
        std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
        let stream = SqliteStream::open(
            data.join("stream.db"),
            StreamOptions {
                shards: config.stream.shards,
                retention: Duration::from_secs(config.stream.retention_hours * 3600),
                ..StreamOptions::default()
            },
        )
        .await
        .context("cannot open the local stream")?;
        // Like Kinesis retention: records older than `stream.retention_hours` go, read or not.
        stream.spawn_trimmer(Duration::from_secs(60));
        let queue = Arc::new(
            SqliteQueue::open(
                data.join("queue.db"),
                QueueOptions {
                    visibility: Duration::from_secs(config.queue.visibility_secs),
                    max_receives: config.queue.max_receives,
                    ..QueueOptions::default()
                },
            )
            .await
            .context("cannot open the local queue")?,
        );
        let store = DirStore::open(data.join("objects"), config.store.bucket.clone(), queue.clone())
            .await
            .context("cannot open the local object store")?;
        let leases = SqliteLeases::open(data.join("leases.db"), Durability::default())
            .await
            .context("cannot open the local lease table")?;
        let url = config.warehouse_url();
        let warehouse = SqlWarehouse::connect(&url, &config.warehouse.schema)
            .await
            .with_context(|| format!("cannot open the warehouse {}", redact(&url)))?;
        Ok(Stack {
            stream,
            queue,
            store,
            leases,
            warehouse,
        })
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
}
