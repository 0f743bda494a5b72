//! The local stream: a durable log in SQLite, partitioned into shards by hash key as Kinesis is.
//!
//! A record's shard is the one whose hash-key range holds its explicit hash key, else the MD5 of
//! its partition key ([`hash_key_of`]), over shards laid out by [`ShardMap::even`] when the file
//! is created and kept in it afterwards. Sequence numbers come from one `AUTOINCREMENT` counter,
//! so they increase strictly within each shard (and across the stream), and are never reused,
//! not even after the retention trim has emptied the log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use microbatch_core::kpl::{
    HashKeyRange, KINESIS_MAX_RECORD_BYTES, MAX_PARTITION_KEY_CHARS, Shard, ShardMap, hash_key_of,
    parse_explicit_hash_key,
};
use microbatch_core::ports::{
    Cursor, PortError, PutAck, PutRecord, ReadBatch, ReadFrom, ShardInfo, StreamReader, StreamRecord,
    StreamWriter,
};
use microbatch_core::position::{SequenceNumber, ShardId};
use microbatch_core::time::{Timestamp, duration_micros};
use sqlx::Row;

use super::sqlite::{Db, Durability, OpenSpec, db_error, now};

const SERVICE: &str = "stream";

/// The schema, as its migrations (see `OpenSpec::migrations`).
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

const SCHEMA_V1: &str = r#"
CREATE TABLE shards (
    idx             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    starting_hash_key TEXT NOT NULL,
    ending_hash_key TEXT NOT NULL,
    parent          TEXT,
    adjacent_parent TEXT,
    closed          INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE records (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    shard           INTEGER NOT NULL,
    partition_key   TEXT NOT NULL,
    data            BLOB NOT NULL,
    arrived_at      INTEGER NOT NULL
);
CREATE INDEX records_by_shard ON records (shard, seq);
CREATE INDEX records_by_arrival ON records (arrived_at);
"#;

/// Records per `INSERT` statement: fewer round trips to SQLite's thread for small records.
const INSERT_CHUNK: usize = 64;

/// `INSERT INTO records … VALUES (…), (…)` for `rows` rows; the texts are made once, so that
/// sqlx's statement cache prepares each of them once per connection.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=INSERT_CHUNK)
            .map(|n| {
                let values: Vec<&str> = std::iter::repeat_n("(?, ?, ?, ?, ?)", n).collect();
                format!(
                    "INSERT INTO records (seq, shard, partition_key, data, arrived_at) VALUES {}",
                    values.join(", ")
                )
            })
            .collect()
    });
    &all[rows]
}

/// Rows whose sizes a read looks up at a time, until it has its byte budget.
const SIZE_PAGE: i64 = 128;

/// Rows deleted per transaction by the retention trim, so a trim never holds the write lock long.
const TRIM_CHUNK: i64 = 1_000;

/// How the local stream is laid out and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Shards of a new stream. An existing file keeps the shards it was created with.
    pub shards: u32,
    /// Records older than this are deleted by [`SqliteStream::trim`].
    pub retention: Duration,
    pub durability: Durability,
    /// Most bytes (data and partition keys) one read returns, as `GetRecords` stops at 10 MiB. A
    /// read always returns at least one record if there is one, whatever its size. The default is
    /// 2 MiB, not Kinesis' 10: a read is held (and copied by the SQLite driver) while it is
    /// mapped, outside the consumer's buffer budget, and at 10 MiB the consumer's RSS went past
    /// budget + 64 MiB in the loadtest's drains; a local read is cheap, so more of them cost
    /// little.
    pub max_read_bytes: usize,
    /// Reader connections (reads run beside the writer).
    pub readers: u32,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            shards: 2,
            retention: Duration::from_secs(24 * 3600),
            durability: Durability::default(),
            max_read_bytes: 2 * 1024 * 1024,
            readers: 4,
        }
    }
}

/// The local stream, in one SQLite file. Cheap to clone: clones share the connections.
#[derive(Clone, Debug)]
pub struct SqliteStream {
    db: Db,
    shards: Arc<[ShardInfo]>,
    /// The open shards, for routing.
    map: Arc<ShardMap>,
    index: Arc<HashMap<ShardId, i64>>,
    retention: Duration,
    max_read_bytes: usize,
}

impl SqliteStream {
    /// Opens the stream at `path`, creating it with `options.shards` shards if the file is new.
    pub async fn open(path: impl AsRef<Path>, options: StreamOptions) -> Result<Self, PortError> {
        if options.shards == 0 {
            return Err(PortError::invalid(SERVICE, "a stream needs at least one shard"));
        }
        let path = path.as_ref();
        let db = Db::open(OpenSpec {
            service: SERVICE,
            path,
            durability: options.durability,
            // Records are up to 1 MiB: larger pages mean shorter overflow chains.
            page_size: Some(64 * 1024),
            readers: options.readers,
            writer_cache_kib: 64 * 1024,
            migrations: MIGRATIONS,
        })
        .await?;
        let (shards, index) = Self::load_or_create_shards(&db, options.shards).await?;
        if shards.len() != options.shards as usize {
            tracing::warn!(
                path = %path.display(),
                shards = shards.len(),
                configured = options.shards,
                "the local stream keeps the shards it was created with; resharding it is not supported \
                 (delete the file to start over with the configured count)"
            );
        }
        let open: Vec<Shard> = shards
            .iter()
            .filter(|s| !s.closed)
            .map(|s| Shard {
                id: s.id.clone(),
                range: s.range,
            })
            .collect();
        let map = ShardMap::new(open).map_err(|e| {
            PortError::invalid(SERVICE, format!("the shards stored in {}: {e}", path.display()))
        })?;
        Ok(SqliteStream {
            db,
            shards: shards.into(),
            map: Arc::new(map),
            index: Arc::new(index),
            retention: options.retention,
            max_read_bytes: options.max_read_bytes.max(1),
        })
    }

    async fn load_or_create_shards(
        db: &Db,
        count: u32,
    ) -> Result<(Vec<ShardInfo>, HashMap<ShardId, i64>), PortError> {
        let context = "cannot read the shards";
        let mut tx = db.begin_write(SERVICE).await?;
        let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM shards")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error(SERVICE, context, e))?;
        if existing == 0 {
            let map = ShardMap::even(count).map_err(|e| PortError::invalid(SERVICE, e.to_string()))?;
            for (i, s) in map.shards().iter().enumerate() {
                sqlx::query(
                    "INSERT INTO shards (idx, id, starting_hash_key, ending_hash_key) VALUES (?1, ?2, ?3, ?4)",
                )
                .bind(i as i64)
                .bind(s.id.as_str())
                .bind(s.range.start.to_string())
                .bind(s.range.end.to_string())
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(SERVICE, "cannot create the shards", e))?;
            }
        }
        let rows = sqlx::query(
            "SELECT idx, id, starting_hash_key, ending_hash_key, parent, adjacent_parent, closed \
             FROM shards ORDER BY idx",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error(SERVICE, context, e))?;
        tx.commit().await.map_err(|e| db_error(SERVICE, context, e))?;
        let mut shards = Vec::with_capacity(rows.len());
        let mut index = HashMap::with_capacity(rows.len());
        for row in rows {
            let id = ShardId::new(row.get::<String, _>("id"));
            let start: String = row.get("starting_hash_key");
            let end: String = row.get("ending_hash_key");
            let range = HashKeyRange::parse(&start, &end).map_err(|e| {
                PortError::invalid(SERVICE, format!("shard {id} has an invalid hash-key range: {e}"))
            })?;
            index.insert(id.clone(), row.get::<i64, _>("idx"));
            shards.push(ShardInfo {
                id,
                parent: row.get::<Option<String>, _>("parent").map(ShardId::new),
                adjacent_parent: row.get::<Option<String>, _>("adjacent_parent").map(ShardId::new),
                range,
                closed: row.get::<i64, _>("closed") != 0,
            });
        }
        Ok((shards, index))
    }

    /// The configured retention.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Deletes the records older than the retention; returns how many.
    pub async fn trim(&self) -> Result<u64, PortError> {
        let cutoff =
            Timestamp::from_micros(now().as_micros().saturating_sub(duration_micros(self.retention)));
        self.trim_before(cutoff).await
    }

    /// Deletes the records that arrived before `cutoff`, a chunk per transaction so that puts are
    /// not held up; returns how many. The space is reused by later records.
    pub async fn trim_before(&self, cutoff: Timestamp) -> Result<u64, PortError> {
        let context = "cannot trim the stream";
        let mut total = 0u64;
        loop {
            let mut tx = self.db.begin_write(SERVICE).await?;
            let deleted = sqlx::query(
                "DELETE FROM records WHERE seq IN \
                 (SELECT seq FROM records WHERE arrived_at < ?1 ORDER BY arrived_at LIMIT ?2)",
            )
            .bind(cutoff.as_micros())
            .bind(TRIM_CHUNK)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(SERVICE, context, e))?
            .rows_affected();
            tx.commit().await.map_err(|e| db_error(SERVICE, context, e))?;
            total += deleted;
            if deleted < TRIM_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Trims every `every` in the background, for as long as the task runs (abort it to stop).
    /// Failures are logged and retried at the next round.
    pub fn spawn_trimmer(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let stream = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match stream.trim().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(records = n, "trimmed the local stream"),
                    Err(e) => tracing::warn!(error = %e, "cannot trim the local stream"),
                }
            }
        })
    }

    /// Records kept, all shards together.
    pub async fn record_count(&self) -> Result<u64, PortError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM records")
            .fetch_one(&self.db.reader)
            .await
            .map_err(|e| db_error(SERVICE, "cannot count the records", e))?;
        Ok(n as u64)
    }

    /// Closes the connections (the write-ahead log is folded into the file).
    pub async fn close(&self) {
        self.db.close().await;
    }

    fn route(&self, record: &PutRecord) -> Result<i64, PortError> {
        let key_chars = record.partition_key.chars().count();
        if key_chars == 0 || key_chars > MAX_PARTITION_KEY_CHARS {
            return Err(PortError::invalid(
                SERVICE,
                format!(
                    "a partition key must have 1 to {MAX_PARTITION_KEY_CHARS} characters, not {key_chars}"
                ),
            ));
        }
        let size = record.data.len() + record.partition_key.len();
        if size > KINESIS_MAX_RECORD_BYTES {
            return Err(PortError::invalid(
                SERVICE,
                format!(
                    "a record of {size} bytes (data and partition key) exceeds the {KINESIS_MAX_RECORD_BYTES}-byte limit"
                ),
            ));
        }
        let hash = match &record.explicit_hash_key {
            Some(k) => parse_explicit_hash_key(k).map_err(|e| PortError::invalid(SERVICE, e.to_string()))?,
            None => hash_key_of(&record.partition_key),
        };
        let shard = &self.map.shard_for(hash).id;
        Ok(self.index[shard])
    }

    fn shard_index(&self, shard: &ShardId) -> Result<i64, PortError> {
        self.index
            .get(shard)
            .copied()
            .ok_or_else(|| PortError::not_found(SERVICE, format!("the stream has no shard {shard}")))
    }
}

/// A sequence number of this stream as the integer it is stored as.
fn parse_seq(seq: &SequenceNumber) -> Result<i64, PortError> {
    seq.as_str().parse::<i64>().map_err(|_| {
        PortError::invalid(
            SERVICE,
            format!("sequence number {seq} is not one of the local stream's (too large)"),
        )
    })
}

fn seq_of(n: i64) -> SequenceNumber {
    // AUTOINCREMENT starts at 1 and never goes below.
    SequenceNumber::from_u128(u128::try_from(n).unwrap_or(0))
}

impl StreamWriter for SqliteStream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        Ok(self.shards.iter().filter(|s| !s.closed).cloned().collect())
    }

    /// Routes every record, then writes them all in one transaction: `Ok` means every record of
    /// the call is committed (durable as [`Durability`] says), an error means none is. A record
    /// that Kinesis would refuse (an invalid explicit hash key, an empty or long partition key, a
    /// record over 1 MiB) fails the whole call before anything is written, as it does there.
    async fn put_records(
        &self,
        records: Vec<PutRecord>,
    ) -> Result<Vec<Result<PutAck, PortError>>, PortError> {
        let routed = records
            .into_iter()
            .map(|r| Ok((self.route(&r)?, r)))
            .collect::<Result<Vec<_>, PortError>>()?;
        if routed.is_empty() {
            return Ok(Vec::new());
        }
        let context = "cannot put records";
        let err = |e| db_error(SERVICE, context, e);
        let arrived_at = now().as_micros();
        let mut tx = self.db.begin_write(SERVICE).await?;
        // The write lock is held from here to the commit, so the numbers after the last one given
        // out are ours: assigning them here lets many records go in one statement.
        let last: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'records'")
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
        let mut next = last.unwrap_or(0) + 1;
        let mut acks = Vec::with_capacity(routed.len());
        let mut routed = routed.into_iter().peekable();
        while routed.peek().is_some() {
            let chunk: Vec<(i64, PutRecord)> = routed.by_ref().take(INSERT_CHUNK).collect();
            let mut query = sqlx::query(insert_sql(chunk.len()));
            for (shard, record) in chunk {
                query = query
                    .bind(next)
                    .bind(shard)
                    .bind(record.partition_key)
                    .bind(record.data)
                    .bind(arrived_at);
                acks.push(Ok(PutAck {
                    shard: self.shards[shard as usize].id.clone(),
                    seq: seq_of(next),
                }));
                next += 1;
            }
            query.execute(&mut *tx).await.map_err(err)?;
        }
        tx.commit().await.map_err(|e| db_error(SERVICE, context, e))?;
        Ok(acks)
    }
}

/// A local cursor: `<shard>@<the first sequence number it reads>`. It never expires (the
/// records it points to may be trimmed meanwhile: the read then starts at the oldest kept).
fn cursor_at(shard: &ShardId, start: i64) -> Cursor {
    Cursor(format!("{shard}@{start}"))
}

impl StreamReader for SqliteStream {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        Ok(self.shards.to_vec())
    }

    async fn open(&self, shard: &ShardId, from: &ReadFrom) -> Result<Cursor, PortError> {
        self.shard_index(shard)?;
        let start = match from {
            ReadFrom::Oldest => 0,
            ReadFrom::At(seq) => parse_seq(seq)?,
            ReadFrom::After(seq) => parse_seq(seq)?.saturating_add(1),
        };
        Ok(cursor_at(shard, start))
    }

    /// Up to `limit` records and [`StreamOptions::max_read_bytes`] bytes, oldest first.
    /// `millis_behind_latest` is 0 when the read reached the newest record of the shard, else
    /// how long ago the last record returned arrived (at least 1).
    async fn read(&self, shard: &ShardId, at: &Cursor, limit: usize) -> Result<ReadBatch, PortError> {
        let idx = self.shard_index(shard)?;
        let start = at
            .as_str()
            .strip_prefix(shard.as_str())
            .and_then(|rest| rest.strip_prefix('@'))
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(|| PortError::invalid(SERVICE, format!("{at:?} is not a cursor of shard {shard}")))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let context = "cannot read the stream";
        let err = |e| db_error(SERVICE, context, e);
        // One read transaction: the sizes, the records and the newest sequence number all come
        // from one snapshot.
        let mut tx = self.db.reader.begin().await.map_err(err)?;
        // Sizes first, a page at a time, to stop at the byte budget without reading further.
        let mut budget = self.max_read_bytes as i64;
        let mut last = None;
        let mut count = 0i64;
        let mut cursor = start;
        'pages: while count < limit {
            let page = (limit - count).min(SIZE_PAGE);
            let sizes: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT seq, length(data) + length(CAST(partition_key AS BLOB)) FROM records \
                 WHERE shard = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
            )
            .bind(idx)
            .bind(cursor)
            .bind(page)
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            for (seq, size) in &sizes {
                if count > 0 && *size > budget {
                    break 'pages;
                }
                budget -= size;
                last = Some(*seq);
                count += 1;
            }
            match last {
                Some(l) if (sizes.len() as i64) == page => cursor = l + 1,
                _ => break,
            }
        }
        let rows = match last {
            None => Vec::new(),
            Some(last) => sqlx::query(
                "SELECT seq, partition_key, data, arrived_at FROM records \
                 WHERE shard = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq",
            )
            .bind(idx)
            .bind(start)
            .bind(last)
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?,
        };
        let newest: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM records WHERE shard = ?1")
            .bind(idx)
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;

        let records: Vec<StreamRecord> = rows
            .into_iter()
            .map(|row| StreamRecord {
                seq: seq_of(row.get("seq")),
                partition_key: row.get("partition_key"),
                data: row.get("data"),
                arrived_at: Timestamp::from_micros(row.get("arrived_at")),
            })
            .collect();
        // Caught up when nothing is left at or after the next position.
        let next = last.map_or(start, |l| l + 1);
        let caught_up = newest.is_none_or(|n| n < next);
        let millis_behind_latest = if caught_up {
            0
        } else {
            let behind = records
                .last()
                .map_or(Duration::ZERO, |r| now().saturating_since(r.arrived_at));
            u64::try_from(behind.as_millis()).unwrap_or(u64::MAX).max(1)
        };
        let closed = self.shards[idx as usize].closed;
        Ok(ReadBatch {
            records,
            millis_behind_latest: Some(millis_behind_latest),
            next: (!(closed && caught_up)).then(|| cursor_at(shard, next)),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use super::*;
    use microbatch_core::ports::ErrorKind;

    /// Opens a cursor at `from` and reads once from it.
    async fn read_from(
        stream: &SqliteStream,
        shard: &ShardId,
        from: &ReadFrom,
        limit: usize,
    ) -> Result<ReadBatch, PortError> {
        let cursor = stream.open(shard, from).await?;
        stream.read(shard, &cursor, limit).await
    }

    #[tokio::test]
    async fn reads_go_on_from_the_cursor_each_returns() {
        let dir = tempfile::tempdir().unwrap();
        let stream = open(dir.path(), 1).await;
        put(
            &stream,
            (0..5).map(|i| record("k", format!("{i}").as_bytes())).collect(),
        )
        .await;
        let shard = ShardId::new("shardId-000000000000");
        let mut cursor = stream.open(&shard, &ReadFrom::Oldest).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let batch = stream.read(&shard, &cursor, 2).await.unwrap();
            seen.extend(batch.records.iter().map(|r| r.data.clone()));
            cursor = batch.next.expect("an open shard never ends");
        }
        assert_eq!(
            seen,
            (0..5).map(|i| format!("{i}").into_bytes()).collect::<Vec<_>>()
        );
        let other = ShardId::new("shardId-000000000009");
        assert_eq!(
            stream.open(&other, &ReadFrom::Oldest).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        let foreign = Cursor("shardId-000000000001@4".into());
        assert_eq!(
            stream.read(&shard, &foreign, 1).await.unwrap_err().kind,
            ErrorKind::Invalid
        );
    }

    fn record(pk: &str, data: &[u8]) -> PutRecord {
        PutRecord {
            partition_key: pk.to_owned(),
            explicit_hash_key: None,
            data: data.to_vec(),
        }
    }

    async fn open(dir: &Path, shards: u32) -> SqliteStream {
        let options = StreamOptions {
            shards,
            ..StreamOptions::default()
        };
        SqliteStream::open(dir.join("stream.db"), options).await.unwrap()
    }

    async fn put(stream: &SqliteStream, records: Vec<PutRecord>) -> Vec<PutAck> {
        let acks = stream.put_records(records).await.unwrap();
        acks.into_iter().map(Result::unwrap).collect()
    }

    #[tokio::test]
    async fn routes_by_hash_key_like_the_shard_map() {
        let dir = tempfile::tempdir().unwrap();
        let stream = open(dir.path(), 4).await;
        let map = ShardMap::even(4).unwrap();
        let listed = stream.list_shards().await.unwrap();
        assert_eq!(listed, stream.shards().await.unwrap());
        let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "shardId-000000000000",
                "shardId-000000000001",
                "shardId-000000000002",
                "shardId-000000000003"
            ]
        );
        for (info, shard) in listed.iter().zip(map.shards()) {
            assert_eq!(info.range, shard.range);
            assert!(!info.closed && info.parent.is_none());
        }

        let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
        let acks = put(&stream, keys.iter().map(|k| record(k, b"x")).collect()).await;
        for (k, ack) in keys.iter().zip(&acks) {
            assert_eq!(ack.shard, map.shard_for(hash_key_of(k)).id, "{k}");
        }
        let used: std::collections::BTreeSet<_> = acks.iter().map(|a| &a.shard).collect();
        assert_eq!(used.len(), 4, "200 keys spread over every shard");

        // An explicit hash key wins over the partition key, at the exact range bounds too.
        for shard in map.shards() {
            for hash in [shard.range.start, shard.range.end] {
                let mut r = record("same-key", b"y");
                r.explicit_hash_key = Some(hash.to_string());
                let ack = put(&stream, vec![r]).await.remove(0);
                assert_eq!(ack.shard, shard.id, "hash key {hash}");
            }
        }
    }

    #[tokio::test]
    async fn invalid_records_fail_the_whole_call_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let stream = open(dir.path(), 2).await;
        let mut bad = record("k", b"x");
        bad.explicit_hash_key = Some("0x10".into());
        let err = stream
            .put_records(vec![record("a", b"1"), bad])
            .await
            .unwrap_err();
        assert!(!err.is_transient());
        assert!(err.message.contains("explicit hash key"), "{err}");

        let err = stream.put_records(vec![record("", b"1")]).await.unwrap_err();
        assert!(err.message.contains("partition key"), "{err}");
        let long_key = "k".repeat(MAX_PARTITION_KEY_CHARS + 1);
        assert!(stream.put_records(vec![record(&long_key, b"1")]).await.is_err());
        let too_big = vec![0u8; KINESIS_MAX_RECORD_BYTES];
        let err = stream.put_records(vec![record("k", &too_big)]).await.unwrap_err();
        assert!(err.message.contains("exceeds"), "{err}");
        // Exactly at the limit is fine.
        let at_limit = vec![0u8; KINESIS_MAX_RECORD_BYTES - 1];
        put(&stream, vec![record("k", &at_limit)]).await;
        assert_eq!(stream.record_count().await.unwrap(), 1);
        assert!(stream.put_records(Vec::new()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn reads_keep_per_shard_order_and_honour_oldest_at_after() {
        let dir = tempfile::tempdir().unwrap();
        let stream = open(dir.path(), 3).await;
        let mut sent: BTreeMap<ShardId, Vec<(SequenceNumber, Vec<u8>)>> = BTreeMap::new();
        for batch in 0..10 {
            let records: Vec<PutRecord> = (0..30)
                .map(|i| record(&format!("k{}", i % 7), format!("{batch}-{i}").as_bytes()))
                .collect();
            let datas: Vec<Vec<u8>> = records.iter().map(|r| r.data.clone()).collect();
            for (ack, data) in put(&stream, records).await.into_iter().zip(datas) {
                sent.entry(ack.shard).or_default().push((ack.seq, data));
            }
        }
        for (shard, expected) in &sent {
            let seqs: Vec<&SequenceNumber> = expected.iter().map(|(s, _)| s).collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "strictly increasing in {shard}"
            );

            let all = read_from(&stream, shard, &ReadFrom::Oldest, 10_000)
                .await
                .unwrap();
            let got: Vec<(SequenceNumber, Vec<u8>)> = all
                .records
                .iter()
                .map(|r| (r.seq.clone(), r.data.clone()))
                .collect();
            assert_eq!(&got, expected, "everything, in put order");
            assert_eq!(all.millis_behind_latest, Some(0));
            assert!(all.next.is_some(), "an open shard never ends");
            assert!(all.records.iter().all(|r| r.partition_key.starts_with('k')));

            let mid = &expected[expected.len() / 2].0;
            let at = read_from(&stream, shard, &ReadFrom::At(mid.clone()), 3)
                .await
                .unwrap();
            assert_eq!(&at.records[0].seq, mid);
            assert_eq!(at.records.len(), 3);
            assert!(at.millis_behind_latest.unwrap() >= 1, "not caught up");
            let after = read_from(&stream, shard, &ReadFrom::After(mid.clone()), 10_000)
                .await
                .unwrap();
            assert!(after.records.iter().all(|r| &r.seq > mid));
            assert_eq!(after.records.len(), expected.len() - expected.len() / 2 - 1);

            let last = &expected.last().unwrap().0;
            let empty = read_from(&stream, shard, &ReadFrom::After(last.clone()), 10)
                .await
                .unwrap();
            assert!(empty.records.is_empty());
            assert_eq!(empty.millis_behind_latest, Some(0));
        }

        // At a sequence number of another shard (they interleave): the next one of this shard.
        let shards: Vec<&ShardId> = sent.keys().collect();
        let other = &sent[shards[1]][0].0;
        let from = read_from(&stream, shards[0], &ReadFrom::At(other.clone()), 1)
            .await
            .unwrap();
        assert!(&from.records[0].seq > other);

        let err = read_from(
            &stream,
            &ShardId::new("shardId-000000000099"),
            &ReadFrom::Oldest,
            1,
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("no shard"), "{err}");
        let huge = SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap();
        assert!(
            read_from(&stream, shards[0], &ReadFrom::At(huge), 1)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_read_stops_at_the_byte_budget_but_returns_at_least_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let options = StreamOptions {
            shards: 1,
            max_read_bytes: 2_500,
            ..StreamOptions::default()
        };
        let stream = SqliteStream::open(dir.path().join("s.db"), options)
            .await
            .unwrap();
        put(&stream, (0..5).map(|_| record("k", &[7u8; 999])).collect()).await;
        put(&stream, vec![record("k", &[1u8; 9_000])]).await;
        let shard = ShardId::new("shardId-000000000000");
        let first = read_from(&stream, &shard, &ReadFrom::Oldest, 100).await.unwrap();
        assert_eq!(first.records.len(), 2, "1000 bytes each, 2500 allowed");
        let mut from = ReadFrom::After(first.records[1].seq.clone());
        let second = read_from(&stream, &shard, &from, 100).await.unwrap();
        assert_eq!(second.records.len(), 2);
        from = ReadFrom::After(second.records[1].seq.clone());
        let third = read_from(&stream, &shard, &from, 100).await.unwrap();
        assert_eq!(third.records.len(), 1, "the big one does not fit after the fifth");
        from = ReadFrom::After(third.records[0].seq.clone());
        let big = read_from(&stream, &shard, &from, 100).await.unwrap();
        assert_eq!(
            big.records.len(),
            1,
            "a record over the budget still comes, alone"
        );
        assert_eq!(big.records[0].data.len(), 9_000);
        assert_eq!(big.millis_behind_latest, Some(0));
    }

    #[tokio::test]
    async fn records_and_shards_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let stream = open(dir.path(), 3).await;
        let acks = put(&stream, (0..50).map(|i| record(&format!("k{i}"), b"d")).collect()).await;
        let shards = stream.list_shards().await.unwrap();
        // Dropped without close(), as a killed process would leave it.
        drop(stream);

        let reopened = open(dir.path(), 8).await;
        assert_eq!(
            reopened.list_shards().await.unwrap(),
            shards,
            "created with 3, kept 3"
        );
        assert_eq!(reopened.record_count().await.unwrap(), 50);
        for ack in &acks {
            let read = read_from(&reopened, &ack.shard, &ReadFrom::At(ack.seq.clone()), 1)
                .await
                .unwrap();
            assert_eq!(read.records[0].seq, ack.seq);
        }
        let max = acks.iter().map(|a| a.seq.clone()).max().unwrap();
        let next = put(&reopened, vec![record("k0", b"e")]).await.remove(0);
        assert!(next.seq > max, "sequence numbers go on increasing");
        reopened.close().await;
    }

    #[tokio::test]
    async fn retention_trims_old_records_and_never_reuses_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let stream = open(dir.path(), 1).await;
        let n = TRIM_CHUNK as usize * 2 + 5;
        let old = put(
            &stream,
            (0..n).map(|i| record(&format!("k{i}"), b"old")).collect(),
        )
        .await;
        let cutoff = now().saturating_add(Duration::from_millis(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let young = put(&stream, vec![record("k", b"young")]).await.remove(0);

        assert_eq!(stream.trim().await.unwrap(), 0, "nothing is 24 h old");
        assert_eq!(stream.trim_before(cutoff).await.unwrap(), n as u64);
        let shard = &young.shard;
        let left = read_from(&stream, shard, &ReadFrom::Oldest, 100).await.unwrap();
        assert_eq!(left.records.len(), 1);
        assert_eq!(left.records[0].seq, young.seq);
        // A checkpoint on a trimmed record still reads on from there.
        let from_trimmed = read_from(&stream, shard, &ReadFrom::After(old[3].seq.clone()), 10)
            .await
            .unwrap();
        assert_eq!(from_trimmed.records.len(), 1);

        // Empty the log entirely, reopen: the next record still gets a larger number.
        let future = now().saturating_add(Duration::from_secs(1));
        assert_eq!(stream.trim_before(future).await.unwrap(), 1);
        drop(stream);
        let stream = open(dir.path(), 1).await;
        let next = put(&stream, vec![record("k", b"next")]).await.remove(0);
        assert!(next.seq > young.seq, "{} after {}", next.seq, young.seq);

        let short = StreamOptions {
            shards: 1,
            retention: Duration::from_millis(1),
            ..StreamOptions::default()
        };
        let stream = SqliteStream::open(dir.path().join("stream.db"), short)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let trimmer = stream.spawn_trimmer(Duration::from_millis(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        while stream.record_count().await.unwrap() > 0 {
            assert!(Instant::now() < deadline, "the trimmer trims");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trimmer.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_puts_get_distinct_increasing_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let stream = open(dir.path(), 2).await;
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let stream = stream.clone();
                tokio::spawn(async move {
                    let mut acks = Vec::new();
                    for b in 0..20 {
                        let records = (0..10).map(|i| record(&format!("{t}-{b}-{i}"), b"x")).collect();
                        acks.extend(put(&stream, records).await);
                    }
                    acks
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            let acks = t.await.unwrap();
            // Within one producer, later calls get larger numbers in each shard.
            for shard in stream.list_shards().await.unwrap() {
                let seqs: Vec<_> = acks
                    .iter()
                    .filter(|a| a.shard == shard.id)
                    .map(|a| &a.seq)
                    .collect();
                assert!(seqs.windows(2).all(|w| w[0] < w[1]));
            }
            all.extend(acks);
        }
        let distinct: std::collections::BTreeSet<_> = all.iter().map(|a| a.seq.clone()).collect();
        assert_eq!(distinct.len(), 1600);
        assert_eq!(stream.record_count().await.unwrap(), 1600);
    }

    /// Not a benchmark (nothing is asserted on time): prints the put throughput of 1 MiB and
    /// 10 KiB records for both durability levels. Run with `--release -- --nocapture` to see it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_throughput_report() {
        for durability in [Durability::PowerLoss, Durability::ProcessCrash] {
            // 40 MiB of each in a debug build, 320 MiB in a release build.
            let calls = if cfg!(debug_assertions) { 8 } else { 64 };
            for (size, per_call) in [(1_048_000usize, 5usize), (10 * 1024, 500)] {
                let dir = tempfile::tempdir().unwrap();
                let options = StreamOptions {
                    shards: 4,
                    durability,
                    ..StreamOptions::default()
                };
                let stream = SqliteStream::open(dir.path().join("s.db"), options)
                    .await
                    .unwrap();
                let payload = vec![0xA5u8; size];
                let started = Instant::now();
                for c in 0..calls {
                    let records = (0..per_call)
                        .map(|i| record(&format!("{c}-{i}"), &payload))
                        .collect();
                    put(&stream, records).await;
                }
                let secs = started.elapsed().as_secs_f64();
                let n = (per_call * calls) as f64;
                // Drain every shard, as the consumer does.
                let started = Instant::now();
                let mut read = 0usize;
                for shard in stream.list_shards().await.unwrap() {
                    let mut from = ReadFrom::Oldest;
                    loop {
                        let batch = read_from(&stream, &shard.id, &from, 10_000).await.unwrap();
                        let Some(last) = batch.records.last() else { break };
                        from = ReadFrom::After(last.seq.clone());
                        read += batch.records.iter().map(|r| r.data.len()).sum::<usize>();
                    }
                }
                assert_eq!(read, size * per_call * calls);
                let read_secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "put {durability:?} {size} B x {per_call}/call: {:.0} records/s, {:.1} MiB/s; \
                     read {:.1} MiB/s",
                    n / secs,
                    n * size as f64 / secs / 1_048_576.0,
                    read as f64 / read_secs / 1_048_576.0,
                );
                stream.close().await;
            }
        }
    }
}
