//! A transport that runs Redshift load scripts on PostgreSQL, for the tests: every statement as
//! it is, except the Redshift-only ones, which are emulated with Redshift's documented behaviour:
//!
//! - `COPY … FROM 's3://…' … MANIFEST`: the COPY manifest and its objects are read from an
//!   in-memory object store, decompressed, and copied with `COPY … FROM STDIN`, reading `NULL AS`
//!   the way Redshift does (after removing quotes: PostgreSQL's `FORCE_NULL` on every column);
//!   a bad row is recorded in `sys_load_error_detail` (outside the transaction, as Redshift's
//!   system tables are) and either skipped, up to `MAXERROR`, or the COPY fails with Redshift's
//!   message;
//! - `pg_last_copy_count()`: a function of the schema reading what the last emulated COPY set.
//!
//! `LOCK`, `CREATE TEMP TABLE … (LIKE …)`, `DELETE … USING`, `UPDATE … FROM` and the rest are
//! run by PostgreSQL itself: the transaction logic is proven on a real engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use microbatch_core::batch::{BatchMetadata, Compression};
use microbatch_core::catalog::Quoted;
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use microbatch_core::ports::Bytes;
use microbatch_core::ports::{ObjectWriter, PortError};
use sqlx::postgres::PgPool;
use sqlx::{Executor, PgConnection, Row};

use super::super::postgres::copy_line;
use super::super::warehouse_error;
use super::transport::{Failure, Rows, Transport};

/// An object store in memory: the batches a test loads and the COPY manifests the warehouse
/// writes.
#[derive(Clone, Debug, Default)]
pub struct MemoryObjects {
    objects: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

pub const BUCKET: &str = "test-bucket";

impl MemoryObjects {
    pub fn insert(&self, key: &str, body: Vec<u8>) {
        self.objects.lock().unwrap().insert(key.to_owned(), body);
    }

    pub fn get(&self, url: &str) -> Option<Vec<u8>> {
        let key = url.strip_prefix(&format!("s3://{BUCKET}/"))?;
        self.objects.lock().unwrap().get(key).cloned()
    }

    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.sort();
        keys
    }
}

impl ObjectWriter for MemoryObjects {
    fn bucket(&self) -> &str {
        BUCKET
    }

    async fn put_batch(&self, key: &str, body: Bytes, _metadata: &BatchMetadata) -> Result<(), PortError> {
        self.insert(key, body.to_vec());
        Ok(())
    }

    async fn put(&self, key: &str, body: Bytes, _content_type: &str) -> Result<(), PortError> {
        self.insert(key, body.to_vec());
        Ok(())
    }
}

/// Runs scripts on PostgreSQL, emulating Redshift's COPY from S3.
#[derive(Clone, Debug)]
pub struct PgRedshift {
    pub pool: PgPool,
    pub objects: MemoryObjects,
    /// Each run is a session of its own (the Data API's): its temporary tables go with it.
    pub session_per_run: bool,
}

impl PgRedshift {
    /// Installs what the emulation needs in `schema` (the pool's `search_path`).
    pub async fn install(pool: PgPool, schema: &str, objects: MemoryObjects) -> Self {
        let s = Quoted(schema);
        for sql in [
            format!("CREATE SCHEMA IF NOT EXISTS {s}"),
            format!(
                "CREATE OR REPLACE FUNCTION {s}.pg_last_copy_count() RETURNS bigint LANGUAGE sql AS \
                 $$ SELECT COALESCE(NULLIF(current_setting('microbatch.last_copy_count', true), ''), '-1')::bigint $$"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {s}.sys_load_error_detail (file_name text, line_number bigint, \
                 column_name text, error_message text, start_time timestamptz DEFAULT clock_timestamp())"
            ),
        ] {
            pool.execute(sql.as_str()).await.unwrap();
        }
        PgRedshift {
            pool,
            objects,
            session_per_run: false,
        }
    }

    /// Runs `statements` in one transaction; the rows of each (empty for those without).
    pub async fn run_all(&self, statements: &[String]) -> Result<Vec<Rows>, Failure> {
        let mut conn = self.pool.acquire().await.map_err(warehouse_error)?;
        let outcome = self.run_on(&mut conn, statements).await;
        if self.session_per_run {
            conn.execute("DISCARD TEMP").await.map_err(warehouse_error)?;
        }
        outcome
    }

    async fn run_on(&self, conn: &mut PgConnection, statements: &[String]) -> Result<Vec<Rows>, Failure> {
        conn.execute("BEGIN").await.map_err(warehouse_error)?;
        let mut out = Vec::with_capacity(statements.len());
        for (i, sql) in statements.iter().enumerate() {
            let result = if sql.starts_with("COPY ") && sql.contains(" FROM 's3://") {
                self.copy(conn, sql).await.map(|()| Rows::new())
            } else {
                match conn.fetch_all(sqlx::raw_sql(sql)).await {
                    Ok(rows) => Ok(rows
                        .iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|c| r.try_get_unchecked::<Option<String>, _>(c).unwrap())
                                .collect()
                        })
                        .collect()),
                    Err(e) => Err(warehouse_error(e)),
                }
            };
            match result {
                Ok(rows) => out.push(rows),
                Err(error) => {
                    conn.execute("ROLLBACK").await.map_err(warehouse_error)?;
                    return Err(Failure {
                        statement: Some(i),
                        error,
                    });
                }
            }
        }
        conn.execute("COMMIT").await.map_err(warehouse_error)?;
        Ok(out)
    }

    /// One emulated `COPY … FROM 's3://…manifest' … MANIFEST`.
    async fn copy(&self, conn: &mut PgConnection, sql: &str) -> Result<(), WarehouseError> {
        let bad = |m: String| WarehouseError::new(WarehouseErrorKind::Database, m);
        let between = |from: &str, to: &str| -> Option<String> {
            let start = sql.find(from)? + from.len();
            let end = start + sql[start..].find(to)?;
            Some(sql[start..end].to_owned())
        };
        let staging = between("COPY ", " (").ok_or_else(|| bad(format!("emulator: no table in {sql}")))?;
        let columns = between(" (", ") FROM").ok_or_else(|| bad(format!("emulator: no columns in {sql}")))?;
        let manifest_url = between("FROM '", "'").ok_or_else(|| bad(format!("emulator: no URL in {sql}")))?;
        let null = between("NULL AS '", "'").unwrap_or_default();
        let compression = if sql.contains(" GZIP") {
            Compression::Gzip
        } else if sql.contains(" ZSTD") {
            Compression::Zstd
        } else {
            Compression::None
        };
        let max_errors: u64 = between("MAXERROR ", " ")
            .or_else(|| sql.split("MAXERROR ").nth(1).map(str::to_owned))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            sql.contains(" MANIFEST "),
            "our COPY always reads a manifest: {sql}"
        );
        let manifest = self.objects.get(&manifest_url).ok_or_else(|| {
            bad(format!(
                "S3ServiceException: the manifest {manifest_url} does not exist"
            ))
        })?;
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let mut total = 0u64;
        let mut skipped = 0u64;
        for entry in manifest["entries"].as_array().unwrap() {
            assert_eq!(entry["mandatory"], true);
            let url = entry["url"].as_str().unwrap();
            let object = self
                .objects
                .get(url)
                .ok_or_else(|| bad(format!("S3ServiceException: mandatory file {url} does not exist")))?;
            let body = compression
                .decompress(&object, u64::MAX)
                .map_err(|e| bad(e.to_string()))?;
            // Lines still sent, by their line number in the object.
            let mut lines: Vec<(u64, Vec<u8>)> = microbatch_core::import::record_spans(&body)
                .map_err(|e| bad(e.to_string()))?
                .into_iter()
                .enumerate()
                .map(|(i, span)| (i as u64 + 1, body[span].to_vec()))
                .collect();
            loop {
                let mut sent = Vec::new();
                for (_, line) in &lines {
                    sent.extend_from_slice(line);
                    if sent.last() != Some(&b'\n') {
                        sent.push(b'\n');
                    }
                }
                conn.execute("SAVEPOINT microbatch_emulated_copy")
                    .await
                    .map_err(warehouse_error)?;
                let copy = format!(
                    "COPY {staging} ({columns}) FROM STDIN (FORMAT csv, NULL '{null}', FORCE_NULL ({columns}))"
                );
                let outcome = async {
                    let mut copy_in = conn.copy_in_raw(&copy).await?;
                    copy_in.send(sent.as_slice()).await?;
                    copy_in.finish().await
                }
                .await;
                match outcome {
                    Ok(n) => {
                        conn.execute("RELEASE SAVEPOINT microbatch_emulated_copy")
                            .await
                            .map_err(warehouse_error)?;
                        total += n;
                        break;
                    }
                    Err(e) => {
                        conn.execute("ROLLBACK TO SAVEPOINT microbatch_emulated_copy")
                            .await
                            .map_err(warehouse_error)?;
                        let e = warehouse_error(e);
                        let Some(sent_line) = copy_line(&e.message) else {
                            return Err(e);
                        };
                        let (line, _) = lines.remove(sent_line as usize - 1);
                        let mut log = self.pool.acquire().await.map_err(warehouse_error)?;
                        sqlx::query(
                            "INSERT INTO sys_load_error_detail (file_name, line_number, column_name, error_message) \
                             VALUES ($1, $2, '', $3)",
                        )
                        .bind(url)
                        .bind(line as i64)
                        .bind(&e.message)
                        .execute(&mut *log)
                        .await
                        .map_err(warehouse_error)?;
                        skipped += 1;
                        if skipped > max_errors {
                            return Err(bad(format!(
                                "Load into table '{}' failed. Check 'sys_load_error_detail' system table for details.",
                                staging.trim_matches('"')
                            )));
                        }
                    }
                }
            }
        }
        sqlx::query("SELECT set_config('microbatch.last_copy_count', $1, true)")
            .bind(total.to_string())
            .execute(&mut *conn)
            .await
            .map_err(warehouse_error)?;
        Ok(())
    }
}

impl Transport for PgRedshift {
    async fn run(&self, statements: &[String], result: Option<usize>) -> Result<Rows, Failure> {
        let mut all = self.run_all(statements).await?;
        Ok(result.map(|i| std::mem::take(&mut all[i])).unwrap_or_default())
    }

    fn describe(&self) -> String {
        "PostgreSQL emulating Redshift (tests)".into()
    }
}
