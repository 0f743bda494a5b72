//! PostgreSQL, the local stand-in for Redshift (same wire protocol, same COPY CSV rules).
//!
//! One load is one transaction. The rows go in by `COPY … FROM STDIN (FORMAT csv)` with the body
//! as it is (an unquoted empty field is NULL, `""` the empty string — see `microbatch_core::csv`),
//! and the COPY must read as many rows as the batch metadata says (else `22P04`, permanent).
//!
//! **Append tables** take the direct path, written once, as `psql \copy` would:
//!
//! 1. `BEGIN; SAVEPOINT microbatch_direct` (one round trip; the check below only reads, so rolling
//!    back to the savepoint undoes the COPY and nothing else);
//! 2. `SELECT EXISTS (…manifest…)`: the batch is there already → [`LoadOutcome::AlreadyLoaded`];
//! 3. `COPY <table> (<batch columns>) FROM STDIN` straight into the table; `inserted` is the rows
//!    copied. If a row is there already — the unique index on (`_event_id`, `_row_index`) raises
//!    `23505`: a replayed flush cut differently, a client retry with the same event id, a row twice
//!    in the batch — `ROLLBACK TO SAVEPOINT microbatch_direct` and take the staged path (steps 4–5
//!    below), which skips those rows. Any other error fails the load, as the staged path would:
//!    both read the same types and constraints (COPY parses rows ahead of inserting them, so a bad
//!    value is reported even when a duplicate comes before it);
//! 4. the manifest row and `COMMIT` (steps 6–7 below).
//!
//! The direct path is the common one (a fresh batch), and skips what the staged path pays for on
//! every load: a temporary table's catalog entries created and dropped, and every row written
//! twice. The fallback costs a COPY that is thrown away, only for batches that overlap.
//!
//! **Upsert tables**, and append batches that fell back, take the staged path:
//!
//! 1. `BEGIN` (append batches: with the savepoint, as above);
//! 2. `SELECT EXISTS (…manifest…)` → [`LoadOutcome::AlreadyLoaded`];
//! 3. `CREATE TEMP TABLE microbatch_staging (LIKE <table>) ON COMMIT DROP`;
//! 4. `COPY microbatch_staging (<batch columns>) FROM STDIN`;
//! 5. append tables: `INSERT … SELECT … ON CONFLICT (_event_id, _row_index) DO NOTHING`;
//!    upsert tables: the latest row per key (`DISTINCT ON`), then
//!    `ON CONFLICT (key) DO UPDATE … WHERE <new order> > <stored order>`;
//! 6. the manifest row — a plain `INSERT`, so a concurrent loader of the same batch fails here with
//!    a unique violation (transient: its retry finds the row and skips);
//! 7. `COMMIT`.
//!
//! The staging table is created per load rather than kept per connection (`ON COMMIT DELETE
//! ROWS`): a kept one would go stale when a migration adds a column (a batch with the new column
//! would fail on each pooled connection that kept the old table), and every commit that touched
//! one would truncate all of them (one per upsert table).
//!
//! **Exactly once, with loaders racing.** The manifest row is still inserted in the load's own
//! transaction, so a batch's rows commit with its manifest row or not at all. Two loaders of one
//! batch both pass the manifest check (neither sees the other's uncommitted row), then:
//!
//! - direct path: the second one's COPY meets the first's uncommitted rows in the unique index and
//!   waits for the first transaction to end. If it commits, the COPY fails with `23505`, the
//!   second loader falls back, its `INSERT … ON CONFLICT DO NOTHING` finds every row committed and
//!   inserts none, and its manifest `INSERT` fails with `23505` on the committed manifest row:
//!   transient, and the retry skips. If the first rolls back, the COPY goes on and loads the
//!   batch. An empty batch has no rows to wait on and meets the other at the manifest instead.
//! - staged path: the `INSERT … ON CONFLICT` waits the same way, then the manifest `INSERT` fails.
//!
//! Either way at most one of them commits, and the rows are stored once (the unique index). Two
//! *different* batches sharing rows behave the same, except that the second one commits with only
//! its new rows. Batches sharing rows in different orders can deadlock (`40P01`, transient: one is
//! retried) on either path, as the `INSERT … ON CONFLICT` alone could.
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
    EmbeddedMigration, Existing, MANIFEST_TABLE, SchemaDifference, Selection, body_of, column_list,
    diff_schema, embed_migration, migrator, pg_copy_options, resolve_columns, select_list, unique_index,
    warehouse_error,
};
use microbatch_core::csv::CsvEncoding;

/// `adapters/migrations/postgres/`, in order.
pub(super) const MIGRATIONS: &[EmbeddedMigration] = &[
    embed_migration!("postgres", 20260101000001, "load_manifest"),
    embed_migration!("postgres", 20261202000001, "manifest_refused"),
];

/// The per-load temporary table of the staged path.
const STAGING: &str = "microbatch_staging";

/// The staging table of the `index`-th batch of a load group.
fn staging_name(index: usize) -> String {
    if index == 0 {
        STAGING.to_owned()
    } else {
        format!("{STAGING}_{index}")
    }
}

/// An append load's `BEGIN`, with the savepoint its direct `COPY` may roll back to taken in the
/// same round trip (before the manifest check, which only reads: rolling back to it undoes the
/// `COPY` and nothing else).
const BEGIN_DIRECT: &str = "BEGIN; SAVEPOINT microbatch_direct";
/// The same savepoint for a later append batch of a group (a newer savepoint of the same name
/// hides the older one, so rolling back to it undoes this batch's `COPY` only).
const SAVEPOINT_DIRECT: &str = "SAVEPOINT microbatch_direct";
const ROLLBACK_TO_DIRECT: &str = "ROLLBACK TO SAVEPOINT microbatch_direct";

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
                 first_position, last_position, catalog_version, min_received_at, max_received_at, refused) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::timestamptz, $11::timestamptz, $12)"
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
fn insert_sql(
    target: &str,
    staging: &str,
    table: &Table,
    columns: &[&Column],
    encoding: CsvEncoding,
) -> String {
    let names = column_list(columns.iter().map(|c| c.name.as_str()));
    let values = select_list(columns, encoding);
    let staging = format!("pg_temp.{}", Quoted(staging));
    match &table.mode {
        Mode::Append => format!(
            "INSERT INTO {target} ({names}) SELECT {values} FROM {staging} \
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
                 SELECT DISTINCT ON ({keys}) {values} FROM {staging} \
                 ORDER BY {keys}, \"_received_at\" DESC, length(\"_sequence\") DESC, \
                 \"_sequence\" COLLATE \"C\" DESC, \"_sub_sequence\" DESC \
                 ON CONFLICT ({keys}) {action}"
            )
        }
    }
}

impl Warehouse for PgWarehouse {
    async fn migrate(&self, catalog: &Catalog) -> Result<(), WarehouseError> {
        check_name_lengths(catalog)?;
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

    async fn load_all(&self, requests: &[LoadRequest<'_>]) -> Result<Vec<LoadOutcome>, WarehouseError> {
        let loads = self.load_all_via(requests).await?;
        Ok(loads.into_iter().map(|(outcome, _)| outcome).collect())
    }

    /// The load of the rows in `rows`, rolled back: the same statements (triggers and
    /// constraints included), without the manifest.
    async fn probe(&self, req: LoadRequest<'_>, rows: std::ops::Range<u64>) -> Result<(), WarehouseError> {
        let columns =
            resolve_columns(req.table, req.columns).map_err(|m| WarehouseError::with_sqlstate("42703", m))?;
        let selection = Selection::of(body_of(&req)?, req.skip_rows, Some(rows))?;
        let begin = if req.table.mode == Mode::Append {
            self.pool.begin_with(BEGIN_DIRECT).await
        } else {
            self.pool.begin().await
        };
        let mut tx = begin.map_err(warehouse_error)?;
        let sent = selection.len();
        let result = self.load_rows(&mut tx, &req, &columns, &selection, sent, 0).await;
        tx.rollback().await.map_err(warehouse_error)?;
        result.map(|_| ())
    }
}

impl PgWarehouse {
    /// [`Warehouse::load_all`], also saying which way each batch's rows went in (`None` when it
    /// was loaded already).
    pub(crate) async fn load_all_via(
        &self,
        requests: &[LoadRequest<'_>],
    ) -> Result<Vec<(LoadOutcome, Option<LoadPath>)>, WarehouseError> {
        let started = Instant::now();
        let first_appends = requests.first().is_some_and(|r| r.table.mode == Mode::Append);
        let begin = if first_appends {
            self.pool.begin_with(BEGIN_DIRECT).await
        } else {
            self.pool.begin().await
        };
        let mut tx = begin.map_err(warehouse_error)?;
        let mut loads = Vec::with_capacity(requests.len());
        for (i, req) in requests.iter().enumerate() {
            if i > 0 && req.table.mode == Mode::Append {
                tx.execute(SAVEPOINT_DIRECT).await.map_err(warehouse_error)?;
            }
            loads.push(self.load_in(&mut tx, req, i).await?);
        }
        if loads.iter().all(|(o, _)| *o == LoadOutcome::AlreadyLoaded) {
            tx.rollback().await.map_err(warehouse_error)?;
        } else {
            tx.commit().await.map_err(warehouse_error)?;
        }
        tracing::debug!(
            batches = requests.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded batches into PostgreSQL"
        );
        Ok(loads)
    }

    /// [`Warehouse::load`] with its [`LoadPath`].
    #[cfg(test)]
    pub(crate) async fn load_via(
        &self,
        req: LoadRequest<'_>,
    ) -> Result<(LoadOutcome, Option<LoadPath>), WarehouseError> {
        let mut loads = self.load_all_via(std::slice::from_ref(&req)).await?;
        Ok(loads.remove(0))
    }

    /// One batch inside the load transaction, the `index`-th of its group. Append batches come
    /// with the savepoint [`ROLLBACK_TO_DIRECT`] returns to already taken.
    async fn load_in(
        &self,
        tx: &mut PgConnection,
        req: &LoadRequest<'_>,
        index: usize,
    ) -> Result<(LoadOutcome, Option<LoadPath>), WarehouseError> {
        let columns =
            resolve_columns(req.table, req.columns).map_err(|m| WarehouseError::with_sqlstate("42703", m))?;
        let meta = req.metadata;
        let loaded: bool = sqlx::query_scalar(&self.manifest_exists_sql)
            .bind(req.key())
            .bind(&meta.sha256)
            .fetch_one(&mut *tx)
            .await
            .map_err(warehouse_error)?;
        if loaded {
            return Ok((LoadOutcome::AlreadyLoaded, None));
        }
        let selection = Selection::of(body_of(req)?, req.skip_rows, None)?;
        let expected = meta.row_count.saturating_sub(req.skip_rows.len() as u64);
        let (inserted, path) = self
            .load_rows(tx, req, &columns, &selection, expected, index)
            .await?;
        let position = |p: &microbatch_core::position::Position| format!("{}:{}", p.seq, p.sub);
        sqlx::query(&self.manifest_insert_sql)
            .bind(req.key())
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
            .bind(i64::try_from(req.skip_rows.len()).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(warehouse_error)?;
        tracing::debug!(
            key = req.key(),
            table = %req.table.name,
            rows = meta.row_count,
            refused = req.skip_rows.len(),
            inserted,
            ?path,
            "loaded batch into PostgreSQL"
        );
        Ok((LoadOutcome::Loaded { inserted }, Some(path)))
    }

    /// The rows of `selection` into the table (no manifest): straight by COPY for an append
    /// batch none of whose rows are there, else through the staging table; the rows written and
    /// the way. The COPY must read `expected` rows.
    async fn load_rows(
        &self,
        tx: &mut PgConnection,
        req: &LoadRequest<'_>,
        columns: &[&Column],
        selection: &Selection<'_>,
        expected: u64,
        index: usize,
    ) -> Result<(u64, LoadPath), WarehouseError> {
        let target = self.table(&req.table.name);
        let encoding = req.metadata.csv;
        // Escaped values must be unescaped on their way in, which COPY straight into the table
        // cannot do.
        let direct = encoding == CsvEncoding::EmptyIsNull
            || !columns.iter().any(|c| c.ty == ColumnType::Text)
            || !microbatch_core::csv::may_hold_escapes(&selection.body);
        match &req.table.mode {
            Mode::Append if !direct => {
                let inserted = load_staged(
                    tx, &target, req.table, columns, selection, expected, index, encoding,
                )
                .await?;
                Ok((inserted, LoadPath::Staged))
            }
            Mode::Append => {
                let copy = format!(
                    "COPY {target} ({}) FROM STDIN {}",
                    column_list(columns.iter().map(|c| c.name.as_str())),
                    pg_copy_options(encoding, columns)
                );
                match copy_in(tx, &copy, &selection.body).await {
                    Ok(copied) => {
                        check_count(copied, expected)?;
                        Ok((copied, LoadPath::Direct))
                    }
                    Err(e) if is_unique_violation(&e) => {
                        tracing::debug!(
                            key = req.key(),
                            table = %req.table.name,
                            error = %e,
                            "the batch has rows the table holds already: loading it through the \
                             staging table"
                        );
                        tx.execute(ROLLBACK_TO_DIRECT).await.map_err(warehouse_error)?;
                        let inserted = load_staged(
                            tx, &target, req.table, columns, selection, expected, index, encoding,
                        )
                        .await?;
                        Ok((inserted, LoadPath::Staged))
                    }
                    Err(e) => Err(copy_error(e, selection)),
                }
            }
            Mode::Upsert { .. } => {
                let inserted = load_staged(
                    tx, &target, req.table, columns, selection, expected, index, encoding,
                )
                .await?;
                Ok((inserted, LoadPath::Staged))
            }
        }
    }
}

/// A COPY failure, naming the batch row when PostgreSQL names the line (`CONTEXT: COPY t, line
/// 3, column v: …`): the `line`-th record of what was sent.
fn copy_error(error: sqlx::Error, selection: &Selection<'_>) -> WarehouseError {
    let e = warehouse_error(error);
    match copy_line(&e.message).and_then(|line| selection.batch_row(line.saturating_sub(1))) {
        Some(row) => e.at_row(row),
        None => e,
    }
}

/// The line number in a COPY error's context, if any (`COPY t, line 3, column v: …`; a value's
/// own context, such as `JSON data, line 1: …`, may come first).
pub(crate) fn copy_line(message: &str) -> Option<u64> {
    let at = message.find("COPY ")?;
    let context = &message[at..];
    let line = context.find(", line ")? + ", line ".len();
    let digits: String = context[line..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|n| *n > 0)
}

/// PostgreSQL keeps the first 63 bytes of an identifier (`NAMEDATALEN` - 1) and drops the rest
/// without an error, so two long catalog names could land in one table or column. The catalog
/// allows Redshift's 127; a PostgreSQL warehouse refuses longer names here, by name.
fn check_name_lengths(catalog: &Catalog) -> Result<(), WarehouseError> {
    const MAX: usize = 63;
    let too_long = |what: String, name: &str| {
        WarehouseError::with_sqlstate(
            "42622",
            format!(
                "{what} {name:?} is {} bytes; PostgreSQL keeps only the first {MAX} (shorten it in the catalog)",
                name.len()
            ),
        )
    };
    for table in catalog.tables() {
        if table.name.len() > MAX {
            return Err(too_long("table".into(), &table.name));
        }
        if let Some(column) = table.columns.iter().find(|c| c.name.len() > MAX) {
            return Err(too_long(
                format!("column of table {:?}", table.name),
                &column.name,
            ));
        }
    }
    Ok(())
}

/// Which way a load's rows went into the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoadPath {
    /// `COPY` straight into the table: an append batch none of whose rows were there.
    Direct,
    /// `COPY` into the staging table, then `INSERT … SELECT`: upsert tables, and append batches
    /// that overlap the rows stored (or repeat a row within themselves).
    Staged,
}

/// Streams `body` through `statement` (a `COPY … FROM STDIN`); the rows it wrote.
async fn copy_in(conn: &mut PgConnection, statement: &str, body: &[u8]) -> Result<u64, sqlx::Error> {
    let mut copy_in = conn.copy_in_raw(statement).await?;
    // On failure the copy is dropped (which aborts it) and so is the transaction (rollback). An
    // error the server raises while reading the rows (a bad value, a duplicate) comes from
    // `finish`, which also reads the server's ReadyForQuery: the connection stays usable, in an
    // aborted (sub)transaction.
    copy_in.send(body).await?;
    copy_in.finish().await
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// The COPY must have read as many rows as were sent (the batch metadata's count, less the rows
/// left out).
fn check_count(copied: u64, expected: u64) -> Result<(), WarehouseError> {
    if copied == expected {
        return Ok(());
    }
    Err(WarehouseError::with_sqlstate(
        "22P04",
        format!("row count mismatch: COPY read {copied} rows, the batch metadata says {expected}"),
    ))
}

/// Steps 3–5 of the staged path: the batch into a temporary table dropped at commit, then
/// [`insert_sql`] from there; the rows inserted (or replaced).
#[allow(clippy::too_many_arguments)]
async fn load_staged(
    conn: &mut PgConnection,
    target: &str,
    table: &Table,
    columns: &[&Column],
    selection: &Selection<'_>,
    expected: u64,
    index: usize,
    encoding: CsvEncoding,
) -> Result<u64, WarehouseError> {
    // One staging table per batch of the group: each is `LIKE` its own target.
    let staging = staging_name(index);
    let create = format!(
        "CREATE TEMP TABLE {} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP",
        Quoted(&staging)
    );
    conn.execute(create.as_str()).await.map_err(warehouse_error)?;
    let copy = format!(
        "COPY pg_temp.{} ({}) FROM STDIN {}",
        Quoted(&staging),
        column_list(columns.iter().map(|c| c.name.as_str())),
        pg_copy_options(encoding, columns)
    );
    let copied = copy_in(conn, &copy, &selection.body)
        .await
        .map_err(|e| copy_error(e, selection))?;
    check_count(copied, expected)?;
    Ok(conn
        .execute(insert_sql(target, &staging, table, columns, encoding).as_str())
        .await
        .map_err(warehouse_error)?
        .rows_affected())
}

#[cfg(test)]
pub(crate) mod tests;
