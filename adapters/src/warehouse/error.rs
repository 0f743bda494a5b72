//! sqlx errors as [`WarehouseError`]s: the kind, the SQLSTATE or SQLite extended result code, and
//! the server's whole message (with PostgreSQL's `DETAIL`, `HINT` and `CONTEXT`, which say which
//! COPY line and column failed), so that [`classify`](microbatch_core::import::classify) decides.

use microbatch_core::import::{WarehouseError, WarehouseErrorKind as Kind};
use sqlx::error::DatabaseError;
use sqlx::migrate::MigrateError;
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

/// Converts a sqlx error, keeping the database's code.
pub fn warehouse_error(error: sqlx::Error) -> WarehouseError {
    match error {
        sqlx::Error::Database(db) => database_error(db.as_ref()),
        sqlx::Error::Io(e) => WarehouseError::new(Kind::Io, e.to_string()),
        sqlx::Error::Tls(e) => WarehouseError::new(Kind::Connection, format!("TLS: {e}")),
        sqlx::Error::Protocol(m) => WarehouseError::new(Kind::Protocol, m),
        sqlx::Error::PoolTimedOut => {
            WarehouseError::new(Kind::Timeout, "timed out waiting for a connection from the pool")
        }
        sqlx::Error::PoolClosed => WarehouseError::new(Kind::Connection, "the connection pool is closed"),
        sqlx::Error::WorkerCrashed => {
            WarehouseError::new(Kind::Connection, "the SQLite worker thread crashed")
        }
        sqlx::Error::Migrate(e) => migrate_error(*e),
        other => WarehouseError::new(Kind::Other, other.to_string()),
    }
}

fn migrate_error(error: MigrateError) -> WarehouseError {
    match error {
        MigrateError::Execute(e) => warehouse_error(e),
        MigrateError::ExecuteMigration(e, version) => {
            let mut e = warehouse_error(e);
            e.message = format!("migration {version}: {}", e.message);
            e
        }
        other => WarehouseError::new(Kind::Other, format!("migrations: {other}")),
    }
}

fn database_error(db: &(dyn DatabaseError + 'static)) -> WarehouseError {
    if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
        let mut message = pg.message().to_owned();
        for (label, part) in [
            ("DETAIL", pg.detail()),
            ("HINT", pg.hint()),
            ("CONTEXT", pg.r#where()),
        ] {
            if let Some(part) = part {
                message.push_str(&format!(" {label}: {part}"));
            }
        }
        return WarehouseError::with_sqlstate(pg.code(), message);
    }
    let code = db.code();
    if db.try_downcast_ref::<SqliteError>().is_some() {
        // sqlx reports the extended result code (e.g. 2067 for SQLITE_CONSTRAINT_UNIQUE).
        if let Some(code) = code.as_deref().and_then(|c| c.parse::<i32>().ok()) {
            return WarehouseError::with_sqlite_code(code, db.message());
        }
        return WarehouseError::new(Kind::Database, db.message());
    }
    match code {
        Some(code) => WarehouseError::with_sqlstate(code.into_owned(), db.message()),
        None => WarehouseError::new(Kind::Database, db.message()),
    }
}

#[cfg(test)]
mod tests {
    use microbatch_core::import::{ErrorClass, classify};

    use super::*;

    #[test]
    fn transport_errors_are_transient() {
        let cases = [
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "refused",
            )),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Protocol("unexpected message".into()),
        ];
        for e in cases {
            let w = warehouse_error(e);
            assert_ne!(w.kind, Kind::Database, "{w}");
            assert_eq!(classify(&w), ErrorClass::Transient, "{w}");
        }
    }

    #[test]
    fn migration_failures_keep_the_database_code() {
        let e = MigrateError::Execute(sqlx::Error::PoolTimedOut);
        assert_eq!(
            warehouse_error(sqlx::Error::Migrate(Box::new(e))).kind,
            Kind::Timeout
        );
        let e = warehouse_error(sqlx::Error::Migrate(Box::new(MigrateError::VersionMismatch(3))));
        assert_eq!(e.kind, Kind::Other);
        assert!(e.message.contains("migration 3"), "{e}");
    }

    #[tokio::test]
    async fn sqlite_errors_carry_the_extended_code() {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (a INTEGER NOT NULL UNIQUE) STRICT")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap();
        let dup = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        let dup = warehouse_error(dup);
        assert_eq!(dup.sqlite_code, Some(2067), "{dup}");
        assert_eq!(classify(&dup), ErrorClass::Transient);
        let mismatch = sqlx::query("INSERT INTO t VALUES ('abc')")
            .execute(&mut conn)
            .await
            .unwrap_err();
        let mismatch = warehouse_error(mismatch);
        assert_eq!(
            mismatch.sqlite_code,
            Some(3091),
            "SQLITE_CONSTRAINT_DATATYPE: {mismatch}"
        );
        assert_eq!(classify(&mismatch), ErrorClass::Permanent);
        let missing = sqlx::query("SELECT * FROM nope")
            .execute(&mut conn)
            .await
            .unwrap_err();
        let missing = warehouse_error(missing);
        assert_eq!(missing.sqlite_code, Some(1), "{missing}");
        assert_eq!(classify(&missing), ErrorClass::Permanent);
    }
}
