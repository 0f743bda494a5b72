//! Read-only questions to the SQL warehouses, for the demo, `check` and the tests: how many rows
//! each table holds, and how fresh the loads were.

use std::collections::BTreeMap;

use microbatch_core::catalog::{Catalog, Quoted};
use microbatch_core::time::Timestamp;
use sqlx::Row;

use crate::warehouse::redshift::transport::Transport as _;
use crate::warehouse::{MANIFEST_TABLE, SqlWarehouse};

impl SqlWarehouse {
    /// Rows per catalog table (tables not created yet count 0).
    pub async fn row_counts(&self, catalog: &Catalog) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for table in catalog.tables() {
            let sql = format!("SELECT count(*) FROM {}", Quoted(&table.name));
            let n: i64 = match self {
                SqlWarehouse::Postgres(w) => sqlx::query(&sql)
                    .fetch_one(w.pool())
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or(0),
                SqlWarehouse::Sqlite(w) => sqlx::query(&sql)
                    .fetch_one(w.pool())
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or(0),
                SqlWarehouse::Redshift(w) => {
                    let sql = format!(
                        "SELECT CAST(COUNT(*) AS VARCHAR(32)) FROM {}.{}",
                        Quoted(w.schema()),
                        Quoted(&table.name)
                    );
                    w.transport()
                        .query(&sql)
                        .await
                        .ok()
                        .and_then(|rows| rows.first()?.first().cloned().flatten()?.parse().ok())
                        .unwrap_or(0)
                }
            };
            out.insert(table.name.clone(), n.max(0) as u64);
        }
        Ok(out)
    }

    /// Accept → queryable seconds, one sample per inserted row, taking each batch's oldest row
    /// (its commit time minus its earliest `received_at`): an upper bound on every row's freshness.
    pub async fn freshness_seconds(&self) -> anyhow::Result<Vec<f64>> {
        let mut samples = Vec::new();
        match self {
            SqlWarehouse::Postgres(w) => {
                let sql = format!(
                    "SELECT EXTRACT(EPOCH FROM (loaded_at - min_received_at))::float8, inserted FROM {}",
                    Quoted(MANIFEST_TABLE)
                );
                for r in sqlx::query(&sql).fetch_all(w.pool()).await? {
                    let (secs, n): (f64, i64) = (r.get(0), r.get(1));
                    samples.extend(std::iter::repeat_n(secs, n.max(0) as usize));
                }
            }
            SqlWarehouse::Sqlite(w) => {
                let sql = format!(
                    "SELECT loaded_at, min_received_at, inserted FROM {}",
                    Quoted(MANIFEST_TABLE)
                );
                for r in sqlx::query(&sql).fetch_all(w.pool()).await? {
                    let (loaded, received, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
                    let (Ok(loaded), Ok(received)) = (
                        Timestamp::parse_rfc3339(&loaded),
                        Timestamp::parse_rfc3339(&received),
                    ) else {
                        continue;
                    };
                    samples.extend(std::iter::repeat_n(
                        loaded.saturating_since(received).as_secs_f64(),
                        n.max(0) as usize,
                    ));
                }
            }
            SqlWarehouse::Redshift(w) => {
                let sql = format!(
                    "SELECT CAST(DATEDIFF(millisecond, min_received_at, loaded_at) AS VARCHAR(32)), \
                     CAST(inserted AS VARCHAR(32)) FROM {}.{}",
                    Quoted(w.schema()),
                    Quoted(MANIFEST_TABLE)
                );
                for row in w.transport().query(&sql).await? {
                    if let [Some(ms), Some(n)] = &row[..] {
                        let (ms, n): (f64, i64) = (ms.parse().unwrap_or(0.0), n.parse().unwrap_or(0));
                        samples.extend(std::iter::repeat_n(ms / 1000.0, n.max(0) as usize));
                    }
                }
            }
        }
        Ok(samples)
    }
}
