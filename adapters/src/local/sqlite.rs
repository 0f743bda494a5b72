//! What the SQLite-backed adapters share: how a database file is opened (WAL, durability,
//! versioned schema), how sqlx errors become [`PortError`]s, and the wall clock.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use microbatch_core::ports::{ErrorKind, PortError};
use microbatch_core::time::Timestamp;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// How hard a commit is pushed to the disk before a call returns `Ok`.
///
/// Both survive `kill -9` at any moment: in WAL mode a commit is in the write-ahead log, in the
/// operating system's page cache, before the call returns, and a killed process leaves the page
/// cache to the kernel. They differ on a power loss or a kernel crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = FULL`: the write-ahead log is fsynced at every commit, so a commit also
    /// survives a power loss. One fsync per call (not per record): `put_records` commits all its
    /// records in one transaction.
    #[default]
    PowerLoss,
    /// `synchronous = NORMAL`: the log is fsynced only at checkpoints. Survives a process crash;
    /// a power loss may take the last commits back. For benchmarks and throwaway runs.
    ProcessCrash,
}

impl Durability {
    fn synchronous(self) -> SqliteSynchronous {
        match self {
            Durability::PowerLoss => SqliteSynchronous::Full,
            Durability::ProcessCrash => SqliteSynchronous::Normal,
        }
    }
}

/// One database file: a pool of one connection that does every write (SQLite has one writer at
/// a time anyway; within the process they queue here instead of spinning on `SQLITE_BUSY`), and
/// a pool of readers, which WAL lets run beside the writer.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub writer: SqlitePool,
    pub reader: SqlitePool,
}

/// How long a statement waits for a lock held by another process before failing (retryably).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a file is opened.
pub(crate) struct OpenSpec<'a> {
    pub service: &'static str,
    pub path: &'a Path,
    pub durability: Durability,
    /// Page size of a new file (ignored for an existing one); large pages suit large blobs.
    pub page_size: Option<u32>,
    pub readers: u32,
    /// Page cache of the writer, in KiB: a transaction whose pages do not fit spills them to the
    /// log before its commit, which costs a second pass over them.
    pub writer_cache_kib: u32,
    /// The schema as its migrations: the `n`-th (1-based) takes a file from version `n - 1`
    /// (0: new) to `n`. A file of a newer version than this list knows is refused rather than
    /// misread.
    pub migrations: &'a [&'a str],
}

impl Db {
    pub async fn open(spec: OpenSpec<'_>) -> Result<Db, PortError> {
        let service = spec.service;
        if let Some(dir) = spec.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_error(service, &format!("cannot create directory {}", dir.display()), &e))?;
        }
        let base = SqliteConnectOptions::new()
            .filename(spec.path)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(spec.durability.synchronous())
            .foreign_keys(false)
            // Keep the write-ahead log from staying large after a burst of big records.
            .pragma("journal_size_limit", (64 * 1024 * 1024).to_string());
        // Switching to WAL needs a lock that busy_timeout does not wait for, so only the writer
        // asks (once per file: WAL is a property of the file), and it connects first.
        let mut writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("cache_size", format!("-{}", spec.writer_cache_kib.max(2048)))
            .pragma("temp_store", "memory");
        if let Some(size) = spec.page_size {
            writer_options = writer_options.page_size(size);
        }
        let context = format!("cannot open {}", spec.path.display());
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_options)
            .await
            .map_err(|e| db_error(service, &context, e))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(spec.readers.max(1))
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(base)
            .await
            .map_err(|e| db_error(service, &context, e))?;
        let db = Db { writer, reader };
        db.migrate(service, spec.migrations).await?;
        Ok(db)
    }

    async fn migrate(&self, service: &'static str, migrations: &[&str]) -> Result<(), PortError> {
        let context = "cannot create the schema";
        let newest = migrations.len() as i64;
        let mut tx = self.begin_write(service).await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error(service, context, e))?;
        if version > newest {
            return Err(PortError::invalid(
                service,
                format!(
                    "the database has schema version {version}, newer than this build knows \
                     ({newest}); it was written by a newer microbatch"
                ),
            ));
        }
        for migration in &migrations[version.max(0) as usize..] {
            sqlx::raw_sql(migration)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(service, context, e))?;
        }
        if version < newest {
            sqlx::raw_sql(&format!("PRAGMA user_version = {newest}"))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(service, context, e))?;
        }
        tx.commit().await.map_err(|e| db_error(service, context, e))
    }

    /// A write transaction that holds the write lock from its first statement (`BEGIN
    /// IMMEDIATE`), so that a read-then-write inside it never fails on a stale snapshot.
    pub async fn begin_write(
        &self,
        service: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, PortError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(service, "cannot begin a write transaction", e))
    }

    /// Closes both pools; the last connection checkpoints the write-ahead log into the file.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// SQLite primary result codes (the low byte of an extended code) worth retrying: the file is
/// busy or locked by another connection, an I/O error, a full disk, a WAL lock race.
fn retryable_sqlite_code(code: i32) -> bool {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const IOERR: i32 = 10;
    const FULL: i32 = 13;
    const PROTOCOL: i32 = 15;
    matches!(code & 0xff, BUSY | LOCKED | IOERR | FULL | PROTOCOL)
}

/// A sqlx error as a [`PortError`]: unavailable (worth retrying) for busy or locked files, I/O
/// hiccups and an exhausted pool; invalid otherwise (a schema or a query that is wrong stays
/// wrong).
pub(crate) fn db_error(service: &'static str, context: &str, e: sqlx::Error) -> PortError {
    let transient = match &e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(retryable_sqlite_code),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        _ => false,
    };
    let kind = if transient {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Invalid
    };
    PortError::new(service, kind, format!("{context}: {e}"))
}

/// An I/O error as a [`PortError`] of the kind it is: denied (permissions, a read-only file
/// system), not found, invalid (a path that is not what it should be), or unavailable for
/// what a retry may cure (a full disk, an interrupted call, a hiccup).
pub(crate) fn io_error(service: &'static str, context: &str, e: &std::io::Error) -> PortError {
    use std::io::ErrorKind as K;
    let kind = match e.kind() {
        K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::Denied,
        K::NotFound => ErrorKind::NotFound,
        K::InvalidInput
        | K::InvalidData
        | K::Unsupported
        | K::NotADirectory
        | K::IsADirectory
        | K::InvalidFilename
        | K::AlreadyExists => ErrorKind::Invalid,
        _ => ErrorKind::Unavailable,
    };
    PortError::new(service, kind, format!("{context}: {e}"))
}

/// The wall clock, as core's [`Timestamp`].
pub(crate) fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    Timestamp::from_micros(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_locked_and_io_codes_are_retryable() {
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT (517), SQLITE_LOCKED, SQLITE_IOERR_FSYNC (1034),
        // SQLITE_FULL.
        for code in [5, 517, 6, 1034, 13] {
            assert!(retryable_sqlite_code(code), "{code}");
        }
        // SQLITE_CONSTRAINT_PRIMARYKEY (1555), SQLITE_ERROR, SQLITE_CORRUPT.
        for code in [1555, 1, 11] {
            assert!(!retryable_sqlite_code(code), "{code}");
        }
        let e = io_error(
            "store",
            "x",
            &std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert_eq!(e.kind, ErrorKind::Denied);
        let e = io_error(
            "store",
            "x",
            &std::io::Error::from(std::io::ErrorKind::Interrupted),
        );
        assert!(e.is_transient());
        assert!(db_error("stream", "x", sqlx::Error::PoolTimedOut).is_transient());
        assert!(!db_error("stream", "x", sqlx::Error::RowNotFound).is_transient());
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let spec = |path| OpenSpec {
            service: "test",
            path,
            durability: Durability::PowerLoss,
            page_size: None,
            readers: 1,
            writer_cache_kib: 0,
            migrations: &["CREATE TABLE t (x INTEGER);"],
        };
        let db = Db::open(spec(&path)).await.unwrap();
        // Reopening an up-to-date file does not run the schema again.
        db.close().await;
        let db = Db::open(spec(&path)).await.unwrap();
        sqlx::raw_sql("PRAGMA user_version = 99")
            .execute(&db.writer)
            .await
            .unwrap();
        db.close().await;
        let err = Db::open(spec(&path)).await.unwrap_err();
        assert!(err.message.contains("newer microbatch"), "{err}");
        assert!(!err.is_transient());
    }
}
