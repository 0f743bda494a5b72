//! The local lease table: the KCL's leases and checkpoints in SQLite, with its conditional writes.
//!
//! Columns carry the KCL lease-table attribute names (`leaseKey`, `leaseOwner`, `leaseCounter`,
//! `checkpoint`, `checkpointSubSequenceNumber`, `parentShardId`), and the checkpoint the KCL's
//! values (`TRIM_HORIZON`, `SHARD_END` or a sequence number), so an operator reads it as a KCL
//! table. Every write but `create` applies only if the lease still has the counter and owner the
//! caller last saw, and bumps the counter; `create` applies only if there is no lease yet.

use std::path::Path;

use microbatch_core::kpl::HashKeyRange;
use microbatch_core::ports::{Checkpoint, Lease, LeaseStore, PortError};
use microbatch_core::position::{Position, SequenceNumber, ShardId};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::sqlite::{Db, Durability, OpenSpec, db_error};

const SERVICE: &str = "leases";

/// The schema, as its migrations (see `OpenSpec::migrations`).
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2];

const SCHEMA_V1: &str = r#"
CREATE TABLE leases (
    leaseKey        TEXT PRIMARY KEY,
    leaseOwner      TEXT,
    leaseCounter    INTEGER NOT NULL,
    checkpoint      TEXT NOT NULL,
    checkpointSubSequenceNumber INTEGER NOT NULL DEFAULT 0,
    parentShardId   TEXT NOT NULL DEFAULT '[]'
);
"#;

/// The shard's hash-key range, as the KCL keeps it (decimal text; NULL when unknown).
const SCHEMA_V2: &str = r#"
ALTER TABLE leases ADD COLUMN startingHashKey TEXT;
ALTER TABLE leases ADD COLUMN endingHashKey TEXT;
"#;

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

const TRIM_HORIZON: &str = "TRIM_HORIZON";
const SHARD_END: &str = "SHARD_END";

const COLUMNS: &str = "leaseKey, leaseOwner, leaseCounter, checkpoint, checkpointSubSequenceNumber, \
                       parentShardId, startingHashKey, endingHashKey";

/// The lease table, in one SQLite file. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteLeases {
    db: Db,
}

impl SqliteLeases {
    pub async fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, PortError> {
        let db = Db::open(OpenSpec {
            service: SERVICE,
            path: path.as_ref(),
            durability,
            page_size: None,
            readers: 2,
            writer_cache_kib: 0,
            migrations: MIGRATIONS,
        })
        .await?;
        Ok(SqliteLeases { db })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// Applies `set` (an SQL `SET` list whose `?4`.. are bound by `bind`) if the stored lease
    /// still has the counter and owner of `seen`, bumping the counter; returns the lease now.
    async fn conditional(
        &self,
        seen: &Lease,
        set: &str,
        bind: impl for<'q> FnOnce(Query<'q>) -> Query<'q>,
    ) -> Result<Lease, PortError> {
        let sql = format!(
            "UPDATE leases SET {set}, leaseCounter = leaseCounter + 1 \
             WHERE leaseKey = ?1 AND leaseCounter = ?2 AND leaseOwner IS ?3 RETURNING {COLUMNS}"
        );
        let query = sqlx::query(&sql)
            .bind(seen.shard.as_str())
            .bind(counter(seen.counter)?)
            .bind(seen.owner.as_deref());
        let row = bind(query)
            .fetch_optional(&self.db.writer)
            .await
            .map_err(|e| db_error(SERVICE, &format!("cannot update the lease of {}", seen.shard), e))?;
        match row {
            Some(row) => lease_of(&row),
            None => Err(changed(&seen.shard)),
        }
    }
}

/// The conflict a conditional write that lost answers with.
fn changed(shard: &ShardId) -> PortError {
    PortError::conflict(
        SERVICE,
        format!("the lease of {shard} was changed by another worker"),
    )
}

fn counter(c: u64) -> Result<i64, PortError> {
    i64::try_from(c).map_err(|_| PortError::invalid(SERVICE, format!("lease counter {c} is out of range")))
}

fn encode_checkpoint(c: &Checkpoint) -> (String, i64) {
    match c {
        Checkpoint::TrimHorizon => (TRIM_HORIZON.to_owned(), 0),
        Checkpoint::ShardEnd => (SHARD_END.to_owned(), 0),
        Checkpoint::At(p) => (p.seq.as_str().to_owned(), i64::from(p.sub)),
    }
}

fn lease_of(row: &SqliteRow) -> Result<Lease, PortError> {
    let shard = ShardId::new(row.get::<String, _>("leaseKey"));
    let invalid = |what: &str, value: &str| {
        PortError::invalid(
            SERVICE,
            format!("the lease of {shard} has an invalid {what}: {value:?}"),
        )
    };
    let text: String = row.get("checkpoint");
    let sub: i64 = row.get("checkpointSubSequenceNumber");
    let checkpoint = match text.as_str() {
        TRIM_HORIZON => Checkpoint::TrimHorizon,
        SHARD_END => Checkpoint::ShardEnd,
        seq => Checkpoint::At(Position::new(
            SequenceNumber::parse(seq).map_err(|_| invalid("checkpoint", seq))?,
            u32::try_from(sub).map_err(|_| invalid("checkpointSubSequenceNumber", &sub.to_string()))?,
        )),
    };
    let parents: String = row.get("parentShardId");
    let parents: Vec<ShardId> =
        serde_json::from_str(&parents).map_err(|_| invalid("parentShardId", &parents))?;
    let counter: i64 = row.get("leaseCounter");
    let hash_range = match (
        row.get::<Option<String>, _>("startingHashKey"),
        row.get::<Option<String>, _>("endingHashKey"),
    ) {
        (Some(start), Some(end)) => Some(
            HashKeyRange::parse(&start, &end)
                .map_err(|_| invalid("hash-key range", &format!("{start}..{end}")))?,
        ),
        _ => None,
    };
    Ok(Lease {
        hash_range,
        owner: row.get("leaseOwner"),
        counter: u64::try_from(counter).map_err(|_| invalid("leaseCounter", &counter.to_string()))?,
        checkpoint,
        parents,
        shard,
    })
}

impl LeaseStore for SqliteLeases {
    async fn list(&self) -> Result<Vec<Lease>, PortError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM leases ORDER BY leaseKey"))
            .fetch_all(&self.db.reader)
            .await
            .map_err(|e| db_error(SERVICE, "cannot list the leases", e))?;
        rows.iter().map(lease_of).collect()
    }

    async fn create(&self, lease: &Lease) -> Result<(), PortError> {
        let (checkpoint, sub) = encode_checkpoint(&lease.checkpoint);
        let parents = serde_json::to_string(&lease.parents)
            .map_err(|e| PortError::invalid(SERVICE, format!("cannot encode the parents: {e}")))?;
        let created = sqlx::query(&format!(
            "INSERT INTO leases ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (leaseKey) DO NOTHING"
        ))
        .bind(lease.shard.as_str())
        .bind(lease.owner.as_deref())
        .bind(counter(lease.counter)?)
        .bind(checkpoint)
        .bind(sub)
        .bind(parents)
        .bind(lease.hash_range.map(|r| r.start.to_string()))
        .bind(lease.hash_range.map(|r| r.end.to_string()))
        .execute(&self.db.writer)
        .await
        .map_err(|e| db_error(SERVICE, &format!("cannot create the lease of {}", lease.shard), e))?
        .rows_affected();
        if created == 0 {
            return Err(PortError::conflict(
                SERVICE,
                format!("a lease of {} exists already", lease.shard),
            ));
        }
        Ok(())
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, PortError> {
        self.conditional(lease, "leaseOwner = ?4", |q| q.bind(owner.to_owned()))
            .await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, PortError> {
        self.conditional(lease, "leaseOwner = leaseOwner", |q| q).await
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Lease, PortError> {
        let (text, sub) = encode_checkpoint(checkpoint);
        self.conditional(lease, "checkpoint = ?4, checkpointSubSequenceNumber = ?5", |q| {
            q.bind(text).bind(sub)
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), PortError> {
        self.conditional(lease, "leaseOwner = NULL", |q| q)
            .await
            .map(|_| ())
    }

    async fn delete(&self, lease: &Lease) -> Result<(), PortError> {
        let deleted =
            sqlx::query("DELETE FROM leases WHERE leaseKey = ?1 AND leaseCounter = ?2 AND leaseOwner IS ?3")
                .bind(lease.shard.as_str())
                .bind(counter(lease.counter)?)
                .bind(lease.owner.as_deref())
                .execute(&self.db.writer)
                .await
                .map_err(|e| db_error(SERVICE, &format!("cannot delete the lease of {}", lease.shard), e))?
                .rows_affected();
        if deleted == 0 {
            return Err(changed(&lease.shard));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microbatch_core::ports::ErrorKind;

    fn new_lease(shard: &str) -> Lease {
        Lease {
            shard: ShardId::new(shard),
            owner: None,
            counter: 0,
            checkpoint: Checkpoint::TrimHorizon,
            parents: Vec::new(),
            hash_range: None,
        }
    }

    async fn open(dir: &Path) -> SqliteLeases {
        SqliteLeases::open(dir.join("leases.db"), Durability::PowerLoss)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn writes_are_conditional_on_counter_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let leases = open(dir.path()).await;
        let fresh = new_lease("shardId-000000000000");
        leases.create(&fresh).await.unwrap();
        assert_eq!(
            leases.create(&fresh).await.unwrap_err().kind,
            ErrorKind::Conflict,
            "create only once"
        );
        assert_eq!(leases.list().await.unwrap(), std::slice::from_ref(&fresh));

        let mine = leases.take(&fresh, "worker-a").await.unwrap();
        assert_eq!((mine.owner.as_deref(), mine.counter), (Some("worker-a"), 1));
        // Another worker that saw the old version loses the race.
        assert!(matches!(
            leases.take(&fresh, "worker-b").await,
            Err(PortError {
                kind: ErrorKind::Conflict,
                ..
            })
        ));

        let renewed = leases.renew(&mine).await.unwrap();
        assert_eq!(renewed.counter, 2);
        assert!(leases.renew(&mine).await.is_err(), "stale counter");
        let mut wrong_owner = renewed.clone();
        wrong_owner.owner = Some("worker-b".into());
        assert!(
            leases.renew(&wrong_owner).await.is_err(),
            "same counter, other owner"
        );
        let mut unowned = renewed.clone();
        unowned.owner = None;
        assert!(leases.checkpoint(&unowned, &Checkpoint::ShardEnd).await.is_err());

        let at = Checkpoint::At(Position::new(SequenceNumber::from_u128(1234), 7));
        let checkpointed = leases.checkpoint(&renewed, &at).await.unwrap();
        assert_eq!((checkpointed.counter, &checkpointed.checkpoint), (3, &at));

        // Taken over by another worker (its lease expired): the old holder can no longer
        // checkpoint.
        let stolen = leases.take(&checkpointed, "worker-b").await.unwrap();
        assert_eq!(stolen.checkpoint, at, "the checkpoint goes with the lease");
        assert!(matches!(
            leases.checkpoint(&checkpointed, &Checkpoint::ShardEnd).await,
            Err(PortError {
                kind: ErrorKind::Conflict,
                ..
            })
        ));
        leases.release(&stolen).await.unwrap();
        let released = leases.list().await.unwrap().remove(0);
        assert_eq!((released.owner, released.counter), (None, 5));
        assert!(leases.release(&stolen).await.is_err());

        let missing = new_lease("shardId-000000000009");
        assert!(matches!(
            leases.renew(&missing).await,
            Err(PortError {
                kind: ErrorKind::Conflict,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn leases_and_checkpoints_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let leases = open(dir.path()).await;
        let mut child = new_lease("shardId-000000000002");
        child.parents = vec![
            ShardId::new("shardId-000000000000"),
            ShardId::new("shardId-000000000001"),
        ];
        leases.create(&child).await.unwrap();
        let parent = new_lease("shardId-000000000000");
        leases.create(&parent).await.unwrap();
        let held = leases.take(&parent, "w").await.unwrap();
        let big = SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap();
        let at = Checkpoint::At(Position::new(big, 3));
        let held = leases.checkpoint(&held, &at).await.unwrap();
        let ended = leases.checkpoint(&held, &Checkpoint::ShardEnd).await.unwrap();
        drop(leases);

        let leases = open(dir.path()).await;
        let listed = leases.list().await.unwrap();
        assert_eq!(listed, [ended.clone(), child.clone()]);
        assert_eq!(listed[0].checkpoint, Checkpoint::ShardEnd);
        assert_eq!(listed[1].parents.len(), 2);
        // After a restart the worker renews from what it reads back.
        let renewed = leases.renew(&listed[0]).await.unwrap();
        // A finished lease is deleted, only as last seen.
        assert_eq!(
            leases.delete(&listed[0]).await.unwrap_err().kind,
            ErrorKind::Conflict
        );
        leases.delete(&renewed).await.unwrap();
        assert_eq!(leases.list().await.unwrap(), [child.clone()]);
        leases.close().await;
    }
}
