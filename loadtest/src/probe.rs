//! Reading the warehouse while the pipeline loads it: which tables just got loads (the manifest),
//! the rows above a watermark (freshness), and the final counts (lost and duplicated).

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::Row as _;
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// A read connection to the warehouse a target loads.
#[derive(Debug, Clone)]
pub enum Probe {
    Sqlite(SqlitePool),
    Postgres { pool: PgPool, schema: String },
}

impl Probe {
    pub async fn sqlite(path: &Path) -> anyhow::Result<Probe> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(Probe::Sqlite(pool))
    }

    pub async fn postgres(url: &str, schema: &str) -> anyhow::Result<Probe> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await?;
        Ok(Probe::Postgres {
            pool,
            schema: schema.to_owned(),
        })
    }

    fn table(&self, name: &str) -> String {
        match self {
            Probe::Sqlite(_) => format!("\"{name}\""),
            Probe::Postgres { schema, .. } => format!("\"{schema}\".\"{name}\""),
        }
    }

    /// Tables with a load committed in the last few seconds.
    pub async fn recent_tables(&self) -> anyhow::Result<Vec<String>> {
        Ok(match self {
            Probe::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT DISTINCT table_name FROM microbatch_manifest \
                     WHERE loaded_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-5 seconds')",
                )
                .fetch_all(pool)
                .await?
            }
            Probe::Postgres { pool, .. } => {
                let sql = format!(
                    "SELECT DISTINCT table_name FROM {} WHERE loaded_at >= now() - interval '5 seconds'",
                    self.table("microbatch_manifest")
                );
                sqlx::query_scalar(&sql).fetch_all(pool).await?
            }
        })
    }

    /// `(seq, sent_us)` of the rows of `table` with `seq >= min_seq`.
    pub async fn rows_since(&self, table: &str, min_seq: i64) -> anyhow::Result<Vec<(i64, i64)>> {
        let sql = format!("SELECT seq, sent_us FROM {} WHERE seq >= $1", self.table(table));
        Ok(match self {
            Probe::Sqlite(pool) => sqlx::query(&sql.replace("$1", "?1"))
                .bind(min_seq)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
            Probe::Postgres { pool, .. } => sqlx::query(&sql)
                .bind(min_seq)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        })
    }

    /// Every `seq` in `table`, duplicates included.
    pub async fn all_seqs(&self, table: &str) -> anyhow::Result<Vec<i64>> {
        let sql = format!("SELECT seq FROM {}", self.table(table));
        Ok(match self {
            Probe::Sqlite(pool) => sqlx::query_scalar(&sql).fetch_all(pool).await?,
            Probe::Postgres { pool, .. } => sqlx::query_scalar(&sql).fetch_all(pool).await?,
        })
    }

    /// Rows loaded so far according to the manifest (cheap: one row per batch).
    pub async fn loaded_rows(&self) -> anyhow::Result<i64> {
        Ok(match self {
            Probe::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COALESCE(SUM(inserted), 0) FROM microbatch_manifest")
                    .fetch_one(pool)
                    .await?
            }
            Probe::Postgres { pool, .. } => {
                let sql = format!(
                    "SELECT COALESCE(SUM(inserted), 0)::bigint FROM {}",
                    self.table("microbatch_manifest")
                );
                sqlx::query_scalar(&sql).fetch_one(pool).await?
            }
        })
    }

    /// Batches loaded so far (manifest rows).
    pub async fn loaded_batches(&self) -> anyhow::Result<i64> {
        Ok(match self {
            Probe::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM microbatch_manifest")
                    .fetch_one(pool)
                    .await?
            }
            Probe::Postgres { pool, .. } => {
                let sql = format!("SELECT COUNT(*) FROM {}", self.table("microbatch_manifest"));
                sqlx::query_scalar(&sql).fetch_one(pool).await?
            }
        })
    }

    pub async fn close(&self) {
        match self {
            Probe::Sqlite(pool) => pool.close().await,
            Probe::Postgres { pool, .. } => pool.close().await,
        }
    }
}
