//! Redshift over its PostgreSQL wire protocol, with sqlx: every statement is sent as a simple
//! query (`sqlx::raw_sql`: no prepared statements, which Redshift's leader node handles
//! differently from PostgreSQL, and no compile-time checked macros), one at a time inside
//! `BEGIN … COMMIT`, so that a failure names its statement.
//!
//! TLS comes from the URL (`sslmode=require` or `verify-full`). A run that does not finish
//! within the statement timeout drops its connection, which rolls the transaction back on the
//! server.

use std::time::Duration;

use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use super::super::warehouse_error;
use super::transport::{Failure, Rows, Transport};

/// The wire transport's pool.
#[derive(Clone, Debug)]
pub struct WireTransport {
    pool: PgPool,
    host: String,
    timeout: Duration,
}

impl WireTransport {
    /// Connects to `url`: `redshift://user:password@host:5439/db?sslmode=require` (or a
    /// `postgres://` URL, which is what the tests point at PostgreSQL).
    pub async fn connect(url: &str, max_connections: u32, timeout: Duration) -> Result<Self, WarehouseError> {
        let url = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("redshift") => format!("postgres://{rest}"),
            _ => url.to_owned(),
        };
        let options: PgConnectOptions = url.parse().map_err(warehouse_error)?;
        let host = options.get_host().to_owned();
        let options = options
            .application_name("microbatch")
            // Statements are logged by the warehouse's own tracing, with their role.
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(warehouse_error)?;
        Ok(WireTransport { pool, host, timeout })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn run_on(
    conn: &mut sqlx::PgConnection,
    statements: &[String],
    result: Option<usize>,
) -> Result<Rows, Failure> {
    {
        conn.execute(sqlx::raw_sql("BEGIN"))
            .await
            .map_err(warehouse_error)?;
        let mut rows = Rows::new();
        for (i, statement) in statements.iter().enumerate() {
            match conn.fetch_all(sqlx::raw_sql(statement)).await {
                Ok(got) if Some(i) == result => rows = text_rows(&got).map_err(Failure::from)?,
                Ok(_) => {}
                Err(e) => {
                    // The connection is usable after a statement error (the caller drops it if
                    // the rollback fails too).
                    if let Err(rollback) = conn.execute(sqlx::raw_sql("ROLLBACK")).await {
                        tracing::debug!(error = %rollback, "rollback after a failed statement failed");
                    }
                    return Err(Failure {
                        statement: Some(i),
                        error: warehouse_error(e),
                    });
                }
            }
        }
        conn.execute(sqlx::raw_sql("COMMIT")).await.map_err(|e| Failure {
            statement: None,
            error: warehouse_error(e),
        })?;
        Ok(rows)
    }
}

/// Every value of a simple-query result is text on the wire, whatever its type.
fn text_rows(rows: &[PgRow]) -> Result<Rows, WarehouseError> {
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get_unchecked::<Option<String>, _>(i)
                        .map_err(warehouse_error)
                })
                .collect()
        })
        .collect()
}

impl Transport for WireTransport {
    async fn run(&self, statements: &[String], result: Option<usize>) -> Result<Rows, Failure> {
        let mut conn = self.pool.acquire().await.map_err(warehouse_error)?;
        let outcome = tokio::time::timeout(self.timeout, run_on(&mut conn, statements, result)).await;
        let healthy = matches!(&outcome, Ok(Ok(_)))
            || matches!(&outcome, Ok(Err(f)) if f.statement.is_some() && !conn.is_in_transaction());
        if !healthy {
            // Cut short inside its transaction (a timeout, a broken connection): closing the
            // connection is what rolls it back on the server; never hand it to another load.
            drop(conn.detach());
        }
        match outcome {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::from(WarehouseError::new(
                WarehouseErrorKind::Timeout,
                format!(
                    "the load did not finish within {:?}; its connection was dropped, which rolls it back",
                    self.timeout
                ),
            ))),
        }
    }

    fn describe(&self) -> String {
        format!("the PostgreSQL wire protocol to {}", self.host)
    }
}
