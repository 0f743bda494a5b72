//! Redshift over its PostgreSQL wire protocol, with sqlx: every statement is sent as a simple
//! query (`sqlx::raw_sql`: no prepared statements, which Redshift's leader node handles
//! differently from PostgreSQL, and no compile-time checked macros), one at a time inside
//! `BEGIN … COMMIT`, so that a failure names its statement.
//!
//! TLS comes from the URL (`sslmode=require` or `verify-full`); the password too, or IAM
//! temporary credentials (`?iam_cluster=…` / `?iam_workgroup=…`, [`credentials`]) refreshed in
//! the background before they expire. A run that does not finish within the statement timeout
//! drops its connection, which rolls the transaction back on the server.
//!
//! [`credentials`]: super::credentials

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use super::super::warehouse_error;
use super::credentials::{self, IamAuth};
use super::transport::{Failure, Rows, Transport};
use crate::aws::Aws;

/// How the wire transport connects.
#[derive(Clone, Debug)]
pub struct WireOptions {
    pub max_connections: u32,
    /// How long a statement list may run.
    pub timeout: Duration,
    /// Fetch new IAM credentials this often rather than by their expiry (tests).
    pub refresh_every: Option<Duration>,
}

/// The wire transport's pool.
#[derive(Clone, Debug)]
pub struct WireTransport {
    pool: PgPool,
    host: String,
    timeout: Duration,
    /// IAM credentials fetched after the first (tests and logs).
    refreshes: Arc<AtomicU64>,
}

impl WireTransport {
    /// Connects to `url`: `redshift://user:password@host:5439/db?sslmode=require`, or with
    /// `iam_cluster` / `iam_workgroup` instead of the password (then `aws` is needed); a
    /// `postgres://` URL is taken too (the tests point it at PostgreSQL).
    pub async fn connect(url: &str, options: WireOptions, aws: Option<&Aws>) -> Result<Self, WarehouseError> {
        let (auth, url) = IamAuth::from_url(url)?;
        let url = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("redshift") => format!("postgres://{rest}"),
            _ => url,
        };
        let connect: PgConnectOptions = url.parse().map_err(warehouse_error)?;
        let host = connect.get_host().to_owned();
        let mut connect = connect
            .application_name("microbatch")
            // Statements are logged by the warehouse's own tracing, with their role.
            .disable_statement_logging();
        let iam = match (auth, aws) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(WarehouseError::new(
                    WarehouseErrorKind::Other,
                    "IAM database credentials need the AWS configuration (AWS_REGION)",
                ));
            }
            (Some(auth), Some(aws)) => {
                let user = connect.get_username().to_owned();
                let database = connect.get_database().unwrap_or(&user).to_owned();
                let credentials = credentials::fetch(aws, &auth, &user, &database).await?;
                connect = connect
                    .username(&credentials.user)
                    .password(&credentials.password);
                Some((auth, aws.clone(), user, database, credentials))
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await
            .map_err(warehouse_error)?;
        let refreshes = Arc::new(AtomicU64::new(0));
        if let Some((auth, aws, user, database, first)) = iam {
            let (pool, refreshes) = (pool.clone(), refreshes.clone());
            tokio::spawn(async move {
                let mut fetched = (SystemTime::now(), first.expires);
                while !pool.is_closed() {
                    let at = options.refresh_every.map_or_else(
                        || credentials::refresh_at(fetched.0, fetched.1),
                        |every| fetched.0 + every,
                    );
                    tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
                    match credentials::fetch(&aws, &auth, &user, &database).await {
                        Ok(c) => {
                            pool.set_connect_options(connect.clone().username(&c.user).password(&c.password));
                            fetched = (SystemTime::now(), c.expires);
                            refreshes.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not refresh the IAM database credentials; retrying");
                            fetched.0 = SystemTime::now().min(fetched.1);
                            tokio::time::sleep(Duration::from_secs(10)).await;
                        }
                    }
                }
            });
        }
        Ok(WireTransport {
            pool,
            host,
            timeout: options.timeout,
            refreshes,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// IAM credentials fetched since the first.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
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
