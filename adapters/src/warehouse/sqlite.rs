//! A SQLite file: the warehouse of the embedded stack, with the load semantics of PostgreSQL.
//!
//! - WAL journal, `synchronous = FULL` (a committed load survives a power cut: the importer acks
//!   the queue message right after), a busy timeout for other processes on the same file.
//! - One writer: a pool of a single connection does every migration and load, each in a
//!   `BEGIN IMMEDIATE` transaction (the write lock is taken up front, so two writers never deadlock
//!   upgrading a read lock); readers (`is_loaded`, `schema_diff`) have their own pool.
//! - Tables are `STRICT`. SQLite has no COPY: the importer parses the CSV with
//!   [`parse_rows_as`] (the NULL-versus-empty rules of the batch's CSV encoding) and converts each field
//!   to its column's type as PostgreSQL would read it — a value PostgreSQL would refuse (text in a
//!   bigint column, an invalid timestamp or JSON) fails the load with `SQLITE_MISMATCH` (permanent).
//!   Timestamps are stored as UTC RFC 3339 text with microseconds (`2024-05-01T12:00:00.000000Z`),
//!   so that text order is time order; booleans as 0/1.
//! - Append tables insert with `ON CONFLICT (_event_id, _row_index) DO NOTHING`; upsert tables keep
//!   the latest row per key within the batch, then `ON CONFLICT (key) DO UPDATE … WHERE` the new
//!   row is later than the stored one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use microbatch_core::catalog::{Catalog, Column, ColumnType, Mode, Quoted, Table};
use microbatch_core::csv::parse_rows_as;
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use microbatch_core::ports::{LoadOutcome, LoadRequest, Warehouse};
use microbatch_core::time::Timestamp;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Executor, Row, Sqlite};

use super::{
    EmbeddedMigration, Existing, SchemaDifference, body_of, column_list, diff_schema, embed_migration,
    migrator, resolve_columns, unique_index, warehouse_error,
};

/// `adapters/migrations/sqlite/`, in order.
pub(super) const MIGRATIONS: &[EmbeddedMigration] = &[
    embed_migration!("sqlite", 20260101000001, "load_manifest"),
    embed_migration!("sqlite", 20261202000001, "manifest_refused"),
];

/// `SQLITE_ERROR`: the statement is wrong (a column the table does not have).
const SQLITE_ERROR: i32 = 1;
/// `SQLITE_MISMATCH`: a value that does not fit its column (or CSV that does not parse).
const SQLITE_MISMATCH: i32 = 20;
/// `SQLITE_CONSTRAINT_NOTNULL`.
const SQLITE_CONSTRAINT_NOTNULL: i32 = 1299;
/// Bound parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER` is 32766 since 3.32).
const MAX_VARIABLES: usize = 32_766;
/// How often [`Warehouse::migrate`] runs the migrations when they fail (see there).
const MIGRATION_ATTEMPTS: u32 = 4;
/// Rows per multi-row `INSERT`.
const MAX_ROWS_PER_STATEMENT: usize = 500;

const MANIFEST_EXISTS_SQL: &str =
    "SELECT EXISTS (SELECT 1 FROM \"microbatch_manifest\" WHERE \"key\" = ?1 AND sha256 = ?2)";
const MANIFEST_INSERT_SQL: &str = "INSERT INTO \"microbatch_manifest\" (\"key\", sha256, table_name, \"rows\", \
     inserted, shard, first_position, last_position, catalog_version, min_received_at, max_received_at, refused) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// How to open the file.
#[derive(Clone, Debug)]
pub struct SqliteWarehouseOptions {
    /// How long a statement waits for another process's lock on the file.
    pub busy_timeout: Duration,
    /// How long a load waits for the writer connection.
    pub acquire_timeout: Duration,
    /// Connections for reads (`is_loaded`, `schema_diff`), which WAL lets run beside the writer.
    pub readers: u32,
}

impl Default for SqliteWarehouseOptions {
    fn default() -> Self {
        SqliteWarehouseOptions {
            busy_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(60),
            readers: 4,
        }
    }
}

/// A SQLite file warehouse.
#[derive(Clone, Debug)]
pub struct SqliteWarehouse {
    writer: SqlitePool,
    reader: SqlitePool,
    path: PathBuf,
}

impl SqliteWarehouse {
    /// Opens (creating it and its directory if needed) the database file at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, WarehouseError> {
        Self::open_with(path, SqliteWarehouseOptions::default()).await
    }

    /// Opens `sqlite://path` or `sqlite:path` (a query string is ignored).
    pub async fn connect(url: &str) -> Result<Self, WarehouseError> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| other(format!("not a sqlite: URL: {url:?}")))?;
        let path = rest.split_once('?').map_or(rest, |(p, _)| p);
        if path.is_empty() || path == ":memory:" {
            return Err(other(format!("the SQLite warehouse needs a file, not {url:?}")));
        }
        Self::open(path).await
    }

    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteWarehouseOptions,
    ) -> Result<Self, WarehouseError> {
        let path = path.as_ref().to_owned();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                WarehouseError::new(WarehouseErrorKind::Io, format!("creating {}: {e}", dir.display()))
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(options.busy_timeout);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
            )
            .await
            .map_err(warehouse_error)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(base)
            .await
            .map_err(warehouse_error)?;
        Ok(SqliteWarehouse { writer, reader, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A pool for reading (and, in tests, poking at) the file.
    pub fn pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// Closes both pools, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// Each catalog table and column that is missing from the file or has another type there, and
    /// the load manifest if it is missing (empty when the file matches the catalog).
    pub async fn schema_diff(&self, catalog: &Catalog) -> Result<Vec<SchemaDifference>, WarehouseError> {
        let mut conn = self.reader.acquire().await.map_err(warehouse_error)?;
        let existing = existing(&mut conn).await?;
        Ok(diff_schema(catalog, &existing, sql_type))
    }
}

fn other(message: String) -> WarehouseError {
    WarehouseError::new(WarehouseErrorKind::Other, message)
}

fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text | ColumnType::Timestamp | ColumnType::Date | ColumnType::Json => "TEXT",
        ColumnType::Bigint | ColumnType::Boolean => "INTEGER",
        ColumnType::Double => "REAL",
    }
}

fn create_table_sql(table: &Table) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {}{not_null}", Quoted(&c.name), sql_type(c.ty))
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) STRICT",
        Quoted(&table.name),
        columns.join(", ")
    )
}

async fn existing(conn: &mut SqliteConnection) -> Result<Existing, WarehouseError> {
    let rows = sqlx::query(
        "SELECT m.name, p.name, p.type FROM sqlite_master AS m \
         LEFT JOIN pragma_table_info(m.name) AS p \
         WHERE m.type = 'table' ORDER BY m.name, p.cid",
    )
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

/// A field converted for its column.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Null,
    Text(String),
    Integer(i64),
    Real(f64),
}

/// A value as part of an upsert key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum KeyPart {
    Null,
    Text(String),
    Integer(i64),
    Real(u64),
}

impl From<&Value> for KeyPart {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => KeyPart::Null,
            Value::Text(s) => KeyPart::Text(s.clone()),
            Value::Integer(i) => KeyPart::Integer(*i),
            Value::Real(f) => KeyPart::Real(f.to_bits()),
        }
    }
}

/// Reads a CSV field into its column's type the way PostgreSQL's input functions would, or says
/// why not.
fn convert(ty: ColumnType, field: Option<String>) -> Result<Value, &'static str> {
    let Some(text) = field else {
        return Ok(Value::Null);
    };
    match ty {
        ColumnType::Text => Ok(Value::Text(text)),
        ColumnType::Bigint => text
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| "not a bigint"),
        ColumnType::Double => match text.trim().parse::<f64>() {
            // SQLite would store NaN as NULL.
            Ok(f) if f.is_nan() => Err("NaN cannot be stored"),
            Ok(f) => Ok(Value::Real(f)),
            Err(_) => Err("not a double"),
        },
        ColumnType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "y" | "yes" | "on" | "1" => Ok(Value::Integer(1)),
            "f" | "false" | "n" | "no" | "off" | "0" => Ok(Value::Integer(0)),
            _ => Err("not a boolean"),
        },
        ColumnType::Timestamp => parse_timestamp(text.trim())
            .map(|t| Value::Text(t.to_string()))
            .ok_or("not an RFC 3339 timestamp"),
        ColumnType::Date => {
            let t = text.trim();
            let valid = t.len() == 10 && Timestamp::parse_rfc3339(&format!("{t}T00:00:00Z")).is_ok();
            if valid {
                Ok(Value::Text(t.to_owned()))
            } else {
                Err("not a date (YYYY-MM-DD)")
            }
        }
        ColumnType::Json => match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            Ok(_) => Ok(Value::Text(text)),
            Err(_) => Err("not JSON"),
        },
    }
}

/// RFC 3339, also with a space between date and time (as PostgreSQL prints them).
fn parse_timestamp(text: &str) -> Option<Timestamp> {
    if text.len() > 10 && text.as_bytes()[10] == b' ' {
        let mut fixed = text.to_owned();
        fixed.replace_range(10..11, "T");
        return Timestamp::parse_rfc3339(&fixed).ok();
    }
    Timestamp::parse_rfc3339(text).ok()
}

/// At most `max` characters of `value`, for messages.
fn excerpt(value: &str, max: usize) -> String {
    let mut out: String = value.chars().take(max).collect();
    if value.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Which of two rows with the same key is later: (`_received_at` text, which is canonical UTC and
/// so orders as time; sequence length; sequence; sub-sequence).
type Order = (String, usize, String, i64);

/// Parses and converts the batch, in the batch's column order; for upsert tables only the latest
/// row of each key is kept.
/// The batch's rows as values of their columns — without the rows the request skips, and only
/// those in `only` (a probe) — and, for upsert tables, the latest per key. A value that does not
/// fit its column names its batch row.
fn staged_rows(
    req: &LoadRequest<'_>,
    columns: &[&Column],
    only: Option<&std::ops::Range<u64>>,
) -> Result<Vec<Vec<Value>>, WarehouseError> {
    let mismatch = |message: String| WarehouseError::with_sqlite_code(SQLITE_MISMATCH, message);
    let parsed = parse_rows_as(body_of(req)?, req.metadata.csv)
        .map_err(|e| mismatch(format!("malformed CSV: {e}")))?;
    if parsed.len() as u64 != req.metadata.row_count {
        return Err(mismatch(format!(
            "the CSV has {} rows, the batch metadata says {}",
            parsed.len(),
            req.metadata.row_count
        )));
    }
    let mut rows = Vec::with_capacity(parsed.len());
    for (i, fields) in parsed.into_iter().enumerate() {
        let n = i as u64;
        if req.skip_rows.contains(&n) || only.is_some_and(|o| !o.contains(&n)) {
            continue;
        }
        if fields.len() != columns.len() {
            return Err(mismatch(format!(
                "row {}: {} fields, the batch has {} columns",
                i + 1,
                fields.len(),
                columns.len()
            )));
        }
        let mut row = Vec::with_capacity(columns.len());
        for (field, column) in fields.into_iter().zip(columns) {
            // As PostgreSQL's COPY refuses it, naming the line: SQLite's own NOT NULL check on a
            // multi-row INSERT cannot say which row.
            if field.is_none() && !column.nullable {
                return Err(WarehouseError::with_sqlite_code(
                    SQLITE_CONSTRAINT_NOTNULL,
                    format!("row {}: NOT NULL constraint failed: {:?}", i + 1, column.name),
                )
                .at_row(n));
            }
            let shown = field.as_deref().map(|f| excerpt(f, 64));
            row.push(convert(column.ty, field).map_err(|why| {
                mismatch(format!(
                    "row {}, column {:?}: {why}: {:?}",
                    i + 1,
                    column.name,
                    shown.unwrap_or_default()
                ))
                .at_row(n)
            })?);
        }
        rows.push(row);
    }
    let Mode::Upsert { key } = &req.table.mode else {
        return Ok(rows);
    };
    let position = |name: &str| columns.iter().position(|c| c.name == name);
    let key_at: Vec<Option<usize>> = key.iter().map(|k| position(k)).collect();
    let [received, sequence, sub] = ["_received_at", "_sequence", "_sub_sequence"].map(position);
    let order = |row: &[Value]| -> Order {
        let text = |at: Option<usize>| match at.map(|i| &row[i]) {
            Some(Value::Text(s)) => s.clone(),
            _ => String::new(),
        };
        let seq = text(sequence);
        let sub = match sub.map(|i| &row[i]) {
            Some(Value::Integer(n)) => *n,
            _ => i64::MIN,
        };
        (text(received), seq.len(), seq, sub)
    };
    let mut latest: Vec<(Order, Vec<Value>)> = Vec::new();
    let mut by_key: HashMap<Vec<KeyPart>, usize> = HashMap::new();
    for row in rows {
        let k: Vec<KeyPart> = key_at
            .iter()
            .map(|at| at.map_or(KeyPart::Null, |i| KeyPart::from(&row[i])))
            .collect();
        let o = order(&row);
        match by_key.get(&k) {
            Some(&i) if latest[i].0 >= o => {}
            Some(&i) => latest[i] = (o, row),
            None => {
                by_key.insert(k, latest.len());
                latest.push((o, row));
            }
        }
    }
    Ok(latest.into_iter().map(|(_, row)| row).collect())
}

/// A multi-row `INSERT` of `rows` rows.
fn insert_sql(table: &Table, columns: &[&Column], rows: usize) -> String {
    let names = column_list(columns.iter().map(|c| c.name.as_str()));
    // Anonymous `?` parameters, bound in order: sqlx looks up the name of every numbered `?NNN`
    // parameter with `sqlite3_bind_parameter_name`, a linear scan in SQLite, which made binding a
    // statement of thousands of them quadratic (most of a load's time).
    let mut values = String::with_capacity(rows * (columns.len() * 3 + 4));
    for r in 0..rows {
        values.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns.len() {
            values.push_str(if c == 0 { "?" } else { ", ?" });
        }
        values.push(')');
    }
    let target = Quoted(&table.name);
    let conflict = match &table.mode {
        Mode::Append => "ON CONFLICT (\"_event_id\", \"_row_index\") DO NOTHING".to_owned(),
        Mode::Upsert { key } => {
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !key.contains(&c.name))
                .map(|c| format!("{0} = excluded.{0}", Quoted(&c.name)))
                .collect();
            let order = |alias: &str| {
                format!(
                    "({alias}.\"_received_at\", length({alias}.\"_sequence\"), {alias}.\"_sequence\", \
                     {alias}.\"_sub_sequence\")"
                )
            };
            let keys = column_list(key.iter().map(String::as_str));
            if updates.is_empty() {
                format!("ON CONFLICT ({keys}) DO NOTHING")
            } else {
                format!(
                    "ON CONFLICT ({keys}) DO UPDATE SET {} WHERE {} > {}",
                    updates.join(", "),
                    order("excluded"),
                    order("stored")
                )
            }
        }
    };
    format!("INSERT INTO {target} AS stored ({names}) VALUES {values} {conflict}")
}

fn bind<'q>(
    query: sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>,
    value: Value,
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>> {
    match value {
        Value::Null => query.bind(None::<String>),
        Value::Text(s) => query.bind(s),
        Value::Integer(i) => query.bind(i),
        Value::Real(f) => query.bind(f),
    }
}

impl Warehouse for SqliteWarehouse {
    async fn migrate(&self, catalog: &Catalog) -> Result<(), WarehouseError> {
        // sqlx takes no lock on SQLite: a second process migrating the same file at the same time
        // fails on the tables the first one just made (or on its snapshot). Run again, and the
        // migrations it applied are found applied.
        let migrator = migrator(MIGRATIONS).await?;
        let mut attempt = 1;
        while let Err(e) = migrator.run(&self.writer).await {
            let e = warehouse_error(sqlx::Error::Migrate(Box::new(e)));
            if attempt == MIGRATION_ATTEMPTS {
                return Err(e);
            }
            tracing::debug!(error = %e, attempt, "SQLite migrations failed; running them again");
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            attempt += 1;
        }
        let mut conn = self.writer.acquire().await.map_err(warehouse_error)?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(warehouse_error)?;
        let have = existing(&mut tx).await?;
        for table in catalog.tables() {
            match have.get(&table.name) {
                None => {
                    tx.execute(create_table_sql(table).as_str())
                        .await
                        .map_err(warehouse_error)?;
                    tracing::info!(table = %table.name, "created warehouse table");
                }
                Some(columns) => {
                    for column in &table.columns {
                        if columns.iter().any(|(name, _)| *name == column.name) {
                            continue;
                        }
                        // SQLite cannot add a NOT NULL column without a default; old rows have
                        // no value anyway.
                        let sql = format!(
                            "ALTER TABLE {} ADD COLUMN {} {}",
                            Quoted(&table.name),
                            Quoted(&column.name),
                            sql_type(column.ty)
                        );
                        tx.execute(sql.as_str()).await.map_err(warehouse_error)?;
                        if column.nullable {
                            tracing::info!(table = %table.name, column = %column.name, "added warehouse column");
                        } else {
                            tracing::warn!(
                                table = %table.name,
                                column = %column.name,
                                "added warehouse column as nullable although the catalog says not \
                                 null: the rows already in the table have no value for it"
                            );
                        }
                    }
                }
            }
            let (index, columns) = unique_index(table);
            let sql = format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
                Quoted(&index),
                Quoted(&table.name),
                column_list(columns)
            );
            tx.execute(sql.as_str()).await.map_err(warehouse_error)?;
        }
        tx.commit().await.map_err(warehouse_error)?;
        for difference in diff_schema(catalog, &existing(&mut conn).await?, sql_type) {
            tracing::warn!(%difference, "the warehouse differs from the catalog");
        }
        Ok(())
    }

    async fn is_loaded(&self, key: &str, sha256: &str) -> Result<bool, WarehouseError> {
        sqlx::query_scalar(MANIFEST_EXISTS_SQL)
            .bind(key)
            .bind(sha256)
            .fetch_one(&self.reader)
            .await
            .map_err(warehouse_error)
    }

    async fn load_all(&self, requests: &[LoadRequest<'_>]) -> Result<Vec<LoadOutcome>, WarehouseError> {
        let started = Instant::now();
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(warehouse_error)?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for req in requests {
            outcomes.push(load_in(&mut tx, req).await?);
        }
        if outcomes.iter().all(|o| *o == LoadOutcome::AlreadyLoaded) {
            tx.rollback().await.map_err(warehouse_error)?;
        } else {
            tx.commit().await.map_err(warehouse_error)?;
        }
        tracing::debug!(
            batches = requests.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded batches into SQLite"
        );
        Ok(outcomes)
    }

    /// The inserts of the rows in `rows`, rolled back.
    async fn probe(&self, req: LoadRequest<'_>, rows: std::ops::Range<u64>) -> Result<(), WarehouseError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(warehouse_error)?;
        let result = insert_rows(&mut tx, &req, Some(&rows)).await;
        tx.rollback().await.map_err(warehouse_error)?;
        result.map(|_| ())
    }
}

/// One batch inside the load transaction: manifest check, rows, manifest row.
async fn load_in(conn: &mut SqliteConnection, req: &LoadRequest<'_>) -> Result<LoadOutcome, WarehouseError> {
    let meta = req.metadata;
    let loaded: bool = sqlx::query_scalar(MANIFEST_EXISTS_SQL)
        .bind(req.key())
        .bind(&meta.sha256)
        .fetch_one(&mut *conn)
        .await
        .map_err(warehouse_error)?;
    if loaded {
        return Ok(LoadOutcome::AlreadyLoaded);
    }
    let inserted = insert_rows(conn, req, None).await?;
    let position = |p: &microbatch_core::position::Position| format!("{}:{}", p.seq, p.sub);
    sqlx::query(MANIFEST_INSERT_SQL)
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
        .execute(&mut *conn)
        .await
        .map_err(warehouse_error)?;
    tracing::debug!(
        key = req.key(),
        table = %req.table.name,
        rows = meta.row_count,
        refused = req.skip_rows.len(),
        inserted,
        "loaded batch into SQLite"
    );
    Ok(LoadOutcome::Loaded { inserted })
}

/// The batch's rows into its table (no manifest); how many were written.
async fn insert_rows(
    conn: &mut SqliteConnection,
    req: &LoadRequest<'_>,
    only: Option<&std::ops::Range<u64>>,
) -> Result<u64, WarehouseError> {
    let columns = resolve_columns(req.table, req.columns)
        .map_err(|m| WarehouseError::with_sqlite_code(SQLITE_ERROR, m))?;
    let rows = staged_rows(req, &columns, only)?;
    let per_statement = (MAX_VARIABLES / columns.len().max(1)).clamp(1, MAX_ROWS_PER_STATEMENT);
    let full_sql = insert_sql(req.table, &columns, per_statement);
    let mut inserted = 0u64;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(per_statement).collect();
        let partial_sql;
        let sql = if chunk.len() == per_statement {
            &full_sql
        } else {
            partial_sql = insert_sql(req.table, &columns, chunk.len());
            &partial_sql
        };
        let mut query = sqlx::query(sql);
        for value in chunk.into_iter().flatten() {
            query = bind(query, value);
        }
        inserted += query
            .execute(&mut *conn)
            .await
            .map_err(warehouse_error)?
            .rows_affected();
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests;
