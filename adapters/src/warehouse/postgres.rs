//! PostgreSQL, the local stand-in for Redshift (same wire protocol, same COPY CSV rules).
//!
//! One load is one transaction:
//!
//! 1. `SELECT EXISTS (…manifest…)`: the batch is there already → [`LoadOutcome::AlreadyLoaded`];
//! 2. `CREATE TEMP TABLE microbatch_staging (LIKE <table>) ON COMMIT DROP`;
//! 3. `COPY microbatch_staging (<batch columns>) FROM STDIN (FORMAT csv)` with the body as it is
//!    (an unquoted empty field is NULL, `""` the empty string — see `microbatch_core::csv`);
//! 4. append tables: `INSERT … SELECT … ON CONFLICT (_event_id, _row_index) DO NOTHING`;
//!    upsert tables: the latest row per key (`DISTINCT ON`), then
//!    `ON CONFLICT (key) DO UPDATE … WHERE <new order> > <stored order>`;
//! 5. the manifest row — a plain `INSERT`, so a concurrent loader of the same batch fails here with
//!    a unique violation (transient: its retry finds the row and skips);
//! 6. `COMMIT`.
//!
//! Every connection starts with `search_path` set to the warehouse's schema (so sqlx's own
//! `_sqlx_migrations` table lives there too), and every statement qualifies names with it anyway.

use std::time::{Duration, Instant};

use microbatch_core::catalog::{Catalog, Column, ColumnType, Mode, Quoted, Table, validate_ident};
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use microbatch_core::ports::{LoadOutcome, LoadRequest, Warehouse};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Acquire, ConnectOptions, Executor, PgConnection, Row};

use super::{
    EmbeddedMigration, Existing, MANIFEST_TABLE, SchemaDifference, column_list, diff_schema, embed_migration,
    migrator, resolve_columns, unique_index, warehouse_error,
};

/// `adapters/migrations/postgres/`, in order.
pub(super) const MIGRATIONS: &[EmbeddedMigration] =
    &[embed_migration!("postgres", 20260101000001, "load_manifest")];

/// The per-load temporary table the COPY writes into.
const STAGING: &str = "microbatch_staging";

/// How to connect to PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgWarehouseOptions {
    /// The schema holding the tables, the load manifest and sqlx's migration table; created by
    /// [`Warehouse::migrate`] when missing. Must be a valid catalog identifier.
    pub schema: String,
    pub max_connections: u32,
    /// How long a load waits for a free connection before failing (transiently).
    pub acquire_timeout: Duration,
    /// Shown in `pg_stat_activity`.
    pub application_name: String,
}

impl Default for PgWarehouseOptions {
    fn default() -> Self {
        PgWarehouseOptions {
            schema: "public".into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
            application_name: "microbatch".into(),
        }
    }
}

/// A PostgreSQL warehouse in one schema.
#[derive(Clone, Debug)]
pub struct PgWarehouse {
    pool: PgPool,
    schema: String,
    manifest_exists_sql: String,
    manifest_insert_sql: String,
}

impl PgWarehouse {
    /// Connects to `url` (`postgres://user@host:port/db?…`) for the tables of `schema`.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, WarehouseError> {
        let options = PgWarehouseOptions {
            schema: schema.to_owned(),
            ..PgWarehouseOptions::default()
        };
        Self::connect_with(url, options).await
    }

    /// Connects with explicit pool options; fails if no connection can be made now.
    pub async fn connect_with(url: &str, options: PgWarehouseOptions) -> Result<Self, WarehouseError> {
        validate_ident(&options.schema)
            .map_err(|e| WarehouseError::new(WarehouseErrorKind::Other, format!("warehouse schema: {e}")))?;
        let connect: PgConnectOptions = url.parse().map_err(warehouse_error)?;
        let connect = connect
            .application_name(&options.application_name)
            .options([("search_path", options.schema.as_str())]);
        let pool = match PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
        {
            Ok(pool) => pool,
            // The pool retried until its deadline and says only that; one more attempt says why.
            Err(sqlx::Error::PoolTimedOut) => {
                let why = match tokio::time::timeout(options.acquire_timeout, connect.connect()).await {
                    Ok(Err(e)) => warehouse_error(e),
                    _ => warehouse_error(sqlx::Error::PoolTimedOut),
                };
                return Err(WarehouseError {
                    message: format!(
                        "could not connect within {:?}: {}",
                        options.acquire_timeout, why.message
                    ),
                    ..why
                });
            }
            Err(e) => return Err(warehouse_error(e)),
        };
        let manifest = qualified(&options.schema, MANIFEST_TABLE);
        Ok(PgWarehouse {
            pool,
            manifest_exists_sql: format!(
                "SELECT EXISTS (SELECT 1 FROM {manifest} WHERE \"key\" = $1 AND sha256 = $2)"
            ),
            manifest_insert_sql: format!(
                "INSERT INTO {manifest} (\"key\", sha256, table_name, \"rows\", inserted, shard, \
                 first_position, last_position, catalog_version, min_received_at, max_received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::timestamptz, $11::timestamptz)"
            ),
            schema: options.schema,
        })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The connection pool (every connection's `search_path` is [`schema`](Self::schema)).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Each catalog table and column that is missing from the schema or has another type there,
    /// and the load manifest if it is missing (empty when the warehouse matches the catalog).
    pub async fn schema_diff(&self, catalog: &Catalog) -> Result<Vec<SchemaDifference>, WarehouseError> {
        let mut conn = self.pool.acquire().await.map_err(warehouse_error)?;
        let existing = existing(&mut conn, &self.schema).await?;
        Ok(diff_schema(catalog, &existing, reported_type))
    }

    fn table(&self, name: &str) -> String {
        qualified(&self.schema, name)
    }

    async fn migrate_tables(&self, conn: &mut PgConnection, catalog: &Catalog) -> Result<(), WarehouseError> {
        let mut tx = conn.begin().await.map_err(warehouse_error)?;
        // Importers starting together would race on CREATE TABLE IF NOT EXISTS; take turns.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("microbatch migrate {}", self.schema))
            .execute(&mut *tx)
            .await
            .map_err(warehouse_error)?;
        let existing = existing(&mut tx, &self.schema).await?;
        for table in catalog.tables() {
            let target = self.table(&table.name);
            match existing.get(&table.name) {
                None => {
                    tx.execute(create_table_sql(&target, table).as_str())
                        .await
                        .map_err(warehouse_error)?;
                    tracing::info!(table = %table.name, schema = %self.schema, "created warehouse table");
                }
                Some(have) => {
                    for column in &table.columns {
                        if have.iter().any(|(name, _)| *name == column.name) {
                            continue;
                        }
                        let sql = format!(
                            "ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {} {}",
                            Quoted(&column.name),
                            sql_type(column.ty)
                        );
                        tx.execute(sql.as_str()).await.map_err(warehouse_error)?;
                        added_column(table, column);
                    }
                }
            }
            let (index, columns) = unique_index(table);
            let sql = format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {target} ({})",
                Quoted(&index),
                column_list(columns)
            );
            tx.execute(sql.as_str()).await.map_err(warehouse_error)?;
        }
        tx.commit().await.map_err(warehouse_error)
    }
}

fn added_column(table: &Table, column: &Column) {
    if column.nullable {
        tracing::info!(table = %table.name, column = %column.name, "added warehouse column");
    } else {
        tracing::warn!(
            table = %table.name,
            column = %column.name,
            "added warehouse column as nullable although the catalog says not null: the rows \
             already in the table have no value for it"
        );
    }
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", Quoted(schema), Quoted(name))
}

/// The column type to create.
fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Bigint => "bigint",
        ColumnType::Double => "double precision",
        ColumnType::Boolean => "boolean",
        ColumnType::Timestamp => "timestamptz",
        ColumnType::Date => "date",
        ColumnType::Json => "jsonb",
    }
}

/// The column type as `format_type` reports it.
fn reported_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Timestamp => "timestamp with time zone",
        other => sql_type(other),
    }
}

fn create_table_sql(target: &str, table: &Table) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {}{not_null}", Quoted(&c.name), sql_type(c.ty))
        })
        .collect();
    format!("CREATE TABLE IF NOT EXISTS {target} ({})", columns.join(", "))
}

/// The tables of `schema` with their columns and types, in column order.
async fn existing(conn: &mut PgConnection, schema: &str) -> Result<Existing, WarehouseError> {
    let rows = sqlx::query(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod) \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_attribute a \
           ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') \
         ORDER BY c.relname, a.attnum",
    )
    .bind(schema)
    .fetch_all(conn)
    .await
    .map_err(warehouse_error)?;
    let mut out = Existing::new();
    for row in rows {
        let table: String = row.try_get(0).map_err(warehouse_error)?;
        let column: Option<String> = row.try_get(1).map_err(warehouse_error)?;
        let ty: Option<String> = row.try_get(2).map_err(warehouse_error)?;
        let columns = out.entry(table).or_default();
        if let (Some(column), Some(ty)) = (column, ty) {
            columns.push((column, ty));
        }
    }
    Ok(out)
}

/// `INSERT` of the staged rows: new (`_event_id`, `_row_index`) only for append tables; the latest
/// row per key, replacing an older stored one, for upsert tables.
fn insert_sql(target: &str, table: &Table, columns: &[&Column]) -> String {
    let names = column_list(columns.iter().map(|c| c.name.as_str()));
    let staging = format!("pg_temp.{}", Quoted(STAGING));
    match &table.mode {
        Mode::Append => format!(
            "INSERT INTO {target} ({names}) SELECT {names} FROM {staging} \
             ON CONFLICT (\"_event_id\", \"_row_index\") DO NOTHING"
        ),
        Mode::Upsert { key } => {
            let keys = column_list(key.iter().map(String::as_str));
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !key.contains(&c.name))
                .map(|c| format!("{0} = EXCLUDED.{0}", Quoted(&c.name)))
                .collect();
            // Sequence numbers are decimal text of any length: numeric order is length, then
            // bytes ("C" collation, whatever the database's default).
            let order = |alias: &str| {
                format!(
                    "({alias}.\"_received_at\", length({alias}.\"_sequence\"), \
                     {alias}.\"_sequence\" COLLATE \"C\", {alias}.\"_sub_sequence\")"
                )
            };
            let action = if updates.is_empty() {
                "DO NOTHING".to_owned()
            } else {
                format!(
                    "DO UPDATE SET {} WHERE {} > {}",
                    updates.join(", "),
                    order("EXCLUDED"),
                    order("stored")
                )
            };
            format!(
                "INSERT INTO {target} AS stored ({names}) \
                 SELECT DISTINCT ON ({keys}) {names} FROM {staging} \
                 ORDER BY {keys}, \"_received_at\" DESC, length(\"_sequence\") DESC, \
                 \"_sequence\" COLLATE \"C\" DESC, \"_sub_sequence\" DESC \
                 ON CONFLICT ({keys}) {action}"
            )
        }
    }
}

impl Warehouse for PgWarehouse {
    async fn migrate(&self, catalog: &Catalog) -> Result<(), WarehouseError> {
        let has_schema: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)")
                .bind(&self.schema)
                .fetch_one(&self.pool)
                .await
                .map_err(warehouse_error)?;
        if !has_schema {
            // Only when missing: CREATE SCHEMA IF NOT EXISTS still needs the CREATE privilege.
            let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", Quoted(&self.schema));
            self.pool.execute(sql.as_str()).await.map_err(warehouse_error)?;
        }
        migrator(MIGRATIONS)
            .await?
            .run(&self.pool)
            .await
            .map_err(|e| warehouse_error(sqlx::Error::Migrate(Box::new(e))))?;
        let mut conn = self.pool.acquire().await.map_err(warehouse_error)?;
        self.migrate_tables(&mut conn, catalog).await?;
        for difference in diff_schema(catalog, &existing(&mut conn, &self.schema).await?, reported_type) {
            tracing::warn!(%difference, schema = %self.schema, "the warehouse differs from the catalog");
        }
        Ok(())
    }

    async fn is_loaded(&self, key: &str, sha256: &str) -> Result<bool, WarehouseError> {
        sqlx::query_scalar(&self.manifest_exists_sql)
            .bind(key)
            .bind(sha256)
            .fetch_one(&self.pool)
            .await
            .map_err(warehouse_error)
    }

    async fn load(&self, req: LoadRequest<'_>) -> Result<LoadOutcome, WarehouseError> {
        let started = Instant::now();
        let columns = resolve_columns(req.table, &req.metadata.columns)
            .map_err(|m| WarehouseError::with_sqlstate("42703", m))?;
        let target = self.table(&req.table.name);
        let meta = req.metadata;

        let mut tx = self.pool.begin().await.map_err(warehouse_error)?;
        let loaded: bool = sqlx::query_scalar(&self.manifest_exists_sql)
            .bind(req.key)
            .bind(&meta.sha256)
            .fetch_one(&mut *tx)
            .await
            .map_err(warehouse_error)?;
        if loaded {
            tx.rollback().await.map_err(warehouse_error)?;
            return Ok(LoadOutcome::AlreadyLoaded);
        }

        let staging = format!(
            "CREATE TEMP TABLE {} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP",
            Quoted(STAGING)
        );
        tx.execute(staging.as_str()).await.map_err(warehouse_error)?;
        let copy = format!(
            "COPY pg_temp.{} ({}) FROM STDIN (FORMAT csv)",
            Quoted(STAGING),
            column_list(columns.iter().map(|c| c.name.as_str()))
        );
        let mut copy_in = tx.copy_in_raw(&copy).await.map_err(warehouse_error)?;
        // On failure the copy is dropped (which aborts it) and so is the transaction (rollback).
        copy_in.send(req.body).await.map_err(warehouse_error)?;
        let copied = copy_in.finish().await.map_err(warehouse_error)?;
        if copied != meta.row_count {
            return Err(WarehouseError::with_sqlstate(
                "22P04",
                format!(
                    "COPY read {copied} rows, the batch metadata says {}",
                    meta.row_count
                ),
            ));
        }

        let inserted = tx
            .execute(insert_sql(&target, req.table, &columns).as_str())
            .await
            .map_err(warehouse_error)?
            .rows_affected();

        let position = |p: &microbatch_core::position::Position| format!("{}:{}", p.seq, p.sub);
        sqlx::query(&self.manifest_insert_sql)
            .bind(req.key)
            .bind(&meta.sha256)
            .bind(&req.table.name)
            .bind(i64::try_from(meta.row_count).unwrap_or(i64::MAX))
            .bind(i64::try_from(inserted).unwrap_or(i64::MAX))
            .bind(meta.shard.as_str())
            .bind(position(&meta.first))
            .bind(position(&meta.last))
            .bind(&meta.catalog_version)
            .bind(meta.min_received_at.to_string())
            .bind(meta.max_received_at.to_string())
            .execute(&mut *tx)
            .await
            .map_err(warehouse_error)?;
        tx.commit().await.map_err(warehouse_error)?;
        tracing::debug!(
            key = req.key,
            table = %req.table.name,
            rows = copied,
            inserted,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded batch into PostgreSQL"
        );
        Ok(LoadOutcome::Loaded { inserted })
    }
}

#[cfg(test)]
mod tests;
