//! The SQL warehouses of the embedded pipeline: PostgreSQL (the local stand-in for Redshift) and a
//! SQLite file, both behind [`Warehouse`].
//!
//! Both keep the same load semantics (contract 2):
//!
//! - **Migrations at start.** [`Warehouse::migrate`] runs the checked-in SQL under
//!   `adapters/migrations/<dialect>/` with sqlx (the load manifest, [`MANIFEST_TABLE`]), then creates
//!   every catalog table that is missing (lineage columns first), its unique index — on
//!   (`_event_id`, `_row_index`) for append tables, on the key for upsert tables — and adds the
//!   columns a table lacks (`ALTER TABLE … ADD COLUMN`, always nullable: old rows have no value). A
//!   column whose type differs is left alone and reported by `schema_diff` (and logged).
//! - **One transaction per group of loads.** [`Warehouse::load_all`] loads its batches in one
//!   transaction with one commit, all or nothing. Per batch: manifest check → the batch's rows →
//!   insert the rows not already present by (`_event_id`, `_row_index`), or for upsert tables the
//!   latest row per key → the manifest row. "Latest" is by `_received_at`, then the sequence
//!   number (numerically: by length, then text), then `_sub_sequence`, within the batch and
//!   against the stored row, so a replayed older batch never overwrites a newer row.
//!   [`LoadOutcome::Loaded`]'s `inserted` counts the rows written: new rows of append tables; new
//!   or replaced rows of upsert tables.
//! - **Races end in the manifest.** Two loaders of one batch: the second fails on the manifest's
//!   unique (key, sha256) with a unique violation, which [`classify`] calls transient; its retry
//!   finds the manifest row and skips.
//! - **Errors keep their codes.** sqlx errors become [`WarehouseError`]s with the SQLSTATE or the
//!   SQLite extended result code ([`warehouse_error`]), so [`classify`] can tell a retry from poison.
//!
//! Identifiers come from the catalog only (contract 6): the batch's column list is resolved against
//! the catalog table before any SQL is written, and every name goes through [`Quoted`].
//!
//! [`classify`]: microbatch_core::import::classify
//! [`WarehouseError`]: microbatch_core::import::WarehouseError

mod error;
mod postgres;
pub mod redshift;
mod sqlite;
#[cfg(test)]
mod testkit;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use microbatch_core::catalog::{Catalog, Column, ColumnType, Mode, Quoted, Table};
use microbatch_core::csv::CsvEncoding;
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use microbatch_core::ports::{LoadOutcome, LoadRequest, Warehouse};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

pub use error::warehouse_error;
pub use postgres::{PgWarehouse, PgWarehouseOptions};
pub use redshift::RedshiftWarehouse;
pub use sqlite::{SqliteWarehouse, SqliteWarehouseOptions};

/// The load manifest: one row per loaded batch, unique on (`key`, `sha256`).
pub const MANIFEST_TABLE: &str = "microbatch_manifest";

/// A migration compiled into the binary: version, name and SQL of the file
/// `adapters/migrations/<dialect>/<version>_<name>.sql`.
type EmbeddedMigration = (i64, &'static str, &'static str);

/// Embeds `adapters/migrations/<dialect>/<version>_<name>.sql`, so the version and name sqlx records
/// are the ones the sqlx CLI would read from the file name.
macro_rules! embed_migration {
    ($dialect:literal, $version:literal, $name:literal) => {
        (
            $version,
            $name,
            include_str!(concat!(
                "../../migrations/",
                $dialect,
                "/",
                stringify!($version),
                "_",
                $name,
                ".sql"
            )),
        )
    };
}
use embed_migration;

/// Serves embedded migrations to sqlx's [`Migrator`], so the binary needs no migrations directory.
#[derive(Debug, Clone, Copy)]
struct Embedded(&'static [EmbeddedMigration]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        // What sqlx makes of a file name's description part.
                        Cow::Owned(name.replace('_', " ")),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

async fn migrator(migrations: &'static [EmbeddedMigration]) -> Result<Migrator, WarehouseError> {
    let mut migrator = Migrator::new(Embedded(migrations))
        .await
        .map_err(|e| warehouse_error(sqlx::Error::Migrate(Box::new(e))))?;
    // The schema may be shared with another application that uses sqlx migrations too: its
    // versions are not ours to complain about.
    migrator.set_ignore_missing(true);
    Ok(migrator)
}

/// How a table in the warehouse differs from what the catalog says (`microbatch check` prints
/// these, one per line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaDifference {
    /// The table (a catalog table, or the load manifest) does not exist.
    MissingTable { table: String },
    /// The table lacks a catalog column; `expected` is the SQL type the warehouse would use.
    MissingColumn {
        table: String,
        column: String,
        expected: String,
    },
    /// The column exists with another type.
    WrongType {
        table: String,
        column: String,
        expected: String,
        found: String,
    },
}

impl fmt::Display for SchemaDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaDifference::MissingTable { table } => write!(f, "table {table:?} is missing"),
            SchemaDifference::MissingColumn {
                table,
                column,
                expected,
            } => write!(
                f,
                "column {table:?}.{column:?} is missing (the catalog wants {expected})"
            ),
            SchemaDifference::WrongType {
                table,
                column,
                expected,
                found,
            } => write!(
                f,
                "column {table:?}.{column:?} is {found} in the warehouse, the catalog wants {expected}"
            ),
        }
    }
}

/// What a warehouse holds of one table: its columns and their SQL types as the warehouse names
/// them.
type Existing = std::collections::BTreeMap<String, Vec<(String, String)>>;

/// Compares the catalog with what the warehouse holds; `sql_type` names a column type the way the
/// warehouse reports it (compared case-insensitively).
fn diff_schema(
    catalog: &Catalog,
    existing: &Existing,
    sql_type: fn(ColumnType) -> &'static str,
) -> Vec<SchemaDifference> {
    let mut out = Vec::new();
    if !existing.contains_key(MANIFEST_TABLE) {
        out.push(SchemaDifference::MissingTable {
            table: MANIFEST_TABLE.to_owned(),
        });
    }
    for table in catalog.tables() {
        let Some(columns) = existing.get(&table.name) else {
            out.push(SchemaDifference::MissingTable {
                table: table.name.clone(),
            });
            continue;
        };
        for column in &table.columns {
            let expected = sql_type(column.ty);
            match columns.iter().find(|(name, _)| *name == column.name) {
                None => out.push(SchemaDifference::MissingColumn {
                    table: table.name.clone(),
                    column: column.name.clone(),
                    expected: expected.to_owned(),
                }),
                Some((_, found)) if !found.eq_ignore_ascii_case(expected) => {
                    out.push(SchemaDifference::WrongType {
                        table: table.name.clone(),
                        column: column.name.clone(),
                        expected: expected.to_owned(),
                        found: found.clone(),
                    })
                }
                Some(_) => {}
            }
        }
    }
    out
}

/// The batch's columns resolved against its catalog table, in the batch's order: the names that
/// reach SQL are the catalog's, never the metadata's (contract 6).
fn resolve_columns<'t>(table: &'t Table, names: &[String]) -> Result<Vec<&'t Column>, String> {
    let mut out: Vec<&Column> = Vec::with_capacity(names.len());
    for name in names {
        let Some(column) = table.columns.iter().find(|c| c.name == *name) else {
            return Err(format!(
                "the batch names column {name:?}, which table {:?} does not have",
                table.name
            ));
        };
        if out.iter().any(|c| c.name == column.name) {
            return Err(format!("the batch names column {name:?} twice"));
        }
        out.push(column);
    }
    Ok(out)
}

/// `"a", "b", …` for a column list.
fn column_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&Quoted(name).to_string());
    }
    out
}

/// The select list that reads `columns` from a staging table loaded from CSV in `encoding`: the
/// names, with text columns unescaped ([`unescape_sql`], under their own name) for
/// [`CsvEncoding::NullMarker`].
///
/// [`unescape_sql`]: microbatch_core::csv::unescape_sql
fn select_list(columns: &[&Column], encoding: CsvEncoding) -> String {
    let mut out = String::new();
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let name = Quoted(&column.name).to_string();
        if encoding == CsvEncoding::NullMarker && column.ty == ColumnType::Text {
            out.push_str(&microbatch_core::csv::unescape_sql(&name));
            out.push_str(" AS ");
            out.push_str(&name);
        } else {
            out.push_str(&name);
        }
    }
    out
}

/// The `COPY` options that read CSV in `encoding` the way both warehouses do. PostgreSQL's
/// `FORCE_NULL` matches the marker quoted too, as Redshift's `NULL AS` does.
fn pg_copy_options(encoding: CsvEncoding, columns: &[&Column]) -> String {
    match encoding {
        CsvEncoding::EmptyIsNull => "(FORMAT csv)".to_owned(),
        CsvEncoding::NullMarker => format!(
            "(FORMAT csv, NULL '{}', FORCE_NULL ({}))",
            microbatch_core::csv::NULL_MARKER,
            column_list(columns.iter().map(|c| c.name.as_str()))
        ),
    }
}

/// The rows a load sends: the batch's CSV without the rows it skips (and, for a probe, only
/// those in a range), and which batch row each line sent is, so that a warehouse naming the
/// line it refused names the batch row.
pub(crate) struct Selection<'b> {
    pub body: Cow<'b, [u8]>,
    /// The batch row of each record sent, in order; `None` when every row is sent.
    rows: Option<Vec<u64>>,
}

impl<'b> Selection<'b> {
    /// Rows of `body` but `skip`, within `range` when given.
    pub fn of(body: &'b [u8], skip: &[u64], range: Option<Range<u64>>) -> Result<Self, WarehouseError> {
        if skip.is_empty() && range.is_none() {
            return Ok(Selection {
                body: Cow::Borrowed(body),
                rows: None,
            });
        }
        let spans = microbatch_core::import::record_spans(body)
            .map_err(|e| WarehouseError::with_sqlstate("22P04", format!("the batch is not CSV: {e}")))?;
        let skip: std::collections::BTreeSet<u64> = skip.iter().copied().collect();
        let mut out = Vec::with_capacity(body.len());
        let mut rows = Vec::new();
        for (i, span) in spans.into_iter().enumerate() {
            let i = i as u64;
            if skip.contains(&i) || range.as_ref().is_some_and(|r| !r.contains(&i)) {
                continue;
            }
            out.extend_from_slice(&body[span]);
            if out.last() != Some(&b'\n') {
                out.push(b'\n');
            }
            rows.push(i);
        }
        Ok(Selection {
            body: Cow::Owned(out),
            rows: Some(rows),
        })
    }

    /// How many records are sent.
    pub fn len(&self) -> u64 {
        match &self.rows {
            Some(rows) => rows.len() as u64,
            None => microbatch_core::import::record_spans(&self.body).map_or(0, |s| s.len() as u64),
        }
    }

    /// The batch row of the `index`-th (0-based) record sent.
    pub fn batch_row(&self, index: u64) -> Option<u64> {
        match &self.rows {
            None => Some(index),
            Some(rows) => rows.get(index as usize).copied(),
        }
    }
}

/// The batch CSV of a load request: the warehouses of this module load from the bytes.
pub(crate) fn body_of<'r>(req: &LoadRequest<'r>) -> Result<&'r [u8], WarehouseError> {
    req.body.ok_or_else(|| {
        WarehouseError::new(
            WarehouseErrorKind::Other,
            format!(
                "a load of {} without its bytes (importer bug: this warehouse needs them)",
                req.key()
            ),
        )
    })
}

/// The unique index a table's mode needs: its name and its columns.
fn unique_index(table: &Table) -> (String, Vec<&str>) {
    match &table.mode {
        Mode::Append => (
            index_name(&table.name, "event_row"),
            vec!["_event_id", "_row_index"],
        ),
        Mode::Upsert { key } => (
            index_name(&table.name, "key"),
            key.iter().map(String::as_str).collect(),
        ),
    }
}

/// `<table>__<suffix>`, kept within PostgreSQL's 63-byte identifier limit (a long table name is
/// cut and a hash of the whole name appended, so two long names cannot collide).
fn index_name(table: &str, suffix: &str) -> String {
    const MAX: usize = 63;
    let name = format!("{table}__{suffix}");
    if name.len() <= MAX {
        return name;
    }
    // FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
    let hash = table.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let keep = MAX - suffix.len() - 2 - 9;
    let cut: String = table
        .chars()
        .scan(0, |len, c| {
            *len += c.len_utf8();
            (*len <= keep).then_some(c)
        })
        .collect();
    format!("{cut}_{hash:08x}__{suffix}")
}

/// A warehouse chosen by URL: `postgres://…` / `postgresql://…`, `sqlite://path` / `sqlite:path`,
/// or Redshift (`redshift://…`, `redshift-data://…`: see [`redshift::RedshiftUrl`]), which the
/// stack opens with its AWS configuration and batch bucket.
#[derive(Debug)]
pub enum SqlWarehouse {
    Postgres(PgWarehouse),
    Sqlite(SqliteWarehouse),
    Redshift(Box<RedshiftWarehouse>),
}

impl SqlWarehouse {
    /// Connects to the warehouse `url` names; `schema` is used by PostgreSQL only.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, WarehouseError> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => {
                Ok(SqlWarehouse::Postgres(PgWarehouse::connect(url, schema).await?))
            }
            Some("sqlite") => Ok(SqlWarehouse::Sqlite(SqliteWarehouse::connect(url).await?)),
            Some("redshift" | "redshift-data") => Err(WarehouseError::new(
                WarehouseErrorKind::Other,
                "a Redshift warehouse is opened by the stack, which has the AWS configuration and the \
                 batch bucket its COPY reads (Stack::warehouse)",
            )),
            _ => Err(WarehouseError::new(
                WarehouseErrorKind::Other,
                format!(
                    "unsupported warehouse URL {:?}: expected postgres://…, sqlite://…, redshift://… or \
                     redshift-data://…",
                    url.split_once("://").map_or(url, |(s, _)| s)
                ),
            )),
        }
    }

    /// See [`PgWarehouse::schema_diff`] and [`SqliteWarehouse::schema_diff`].
    pub async fn schema_diff(&self, catalog: &Catalog) -> Result<Vec<SchemaDifference>, WarehouseError> {
        match self {
            SqlWarehouse::Postgres(w) => w.schema_diff(catalog).await,
            SqlWarehouse::Sqlite(w) => w.schema_diff(catalog).await,
            SqlWarehouse::Redshift(w) => w.schema_diff(catalog).await,
        }
    }

    /// Closes the connection pools, waiting for connections in use to come back.
    pub async fn close(&self) {
        match self {
            SqlWarehouse::Postgres(w) => w.close().await,
            SqlWarehouse::Sqlite(w) => w.close().await,
            SqlWarehouse::Redshift(w) => w.close().await,
        }
    }
}

impl Warehouse for SqlWarehouse {
    fn needs_body(&self) -> bool {
        match self {
            SqlWarehouse::Postgres(w) => w.needs_body(),
            SqlWarehouse::Sqlite(w) => w.needs_body(),
            SqlWarehouse::Redshift(w) => w.needs_body(),
        }
    }

    async fn migrate(&self, catalog: &Catalog) -> Result<(), WarehouseError> {
        match self {
            SqlWarehouse::Postgres(w) => w.migrate(catalog).await,
            SqlWarehouse::Sqlite(w) => w.migrate(catalog).await,
            SqlWarehouse::Redshift(w) => w.migrate(catalog).await,
        }
    }

    async fn is_loaded(&self, key: &str, sha256: &str) -> Result<bool, WarehouseError> {
        match self {
            SqlWarehouse::Postgres(w) => w.is_loaded(key, sha256).await,
            SqlWarehouse::Sqlite(w) => w.is_loaded(key, sha256).await,
            SqlWarehouse::Redshift(w) => w.is_loaded(key, sha256).await,
        }
    }

    /// Each call is one transaction (the Data API's split groups aside), counted as
    /// `microbatch_warehouse_commits_total`: every commit waits in Redshift's one queue, so the
    /// cost model and the loadtest count them.
    async fn load_all(&self, requests: &[LoadRequest<'_>]) -> Result<Vec<LoadOutcome>, WarehouseError> {
        let result = match self {
            SqlWarehouse::Postgres(w) => w.load_all(requests).await,
            SqlWarehouse::Sqlite(w) => w.load_all(requests).await,
            SqlWarehouse::Redshift(w) => w.load_all(requests).await,
        };
        let outcome = if result.is_ok() { "committed" } else { "failed" };
        metrics::counter!("microbatch_warehouse_commits_total", "outcome" => outcome).increment(1);
        result
    }

    async fn probe(&self, request: LoadRequest<'_>, rows: Range<u64>) -> Result<(), WarehouseError> {
        match self {
            SqlWarehouse::Postgres(w) => w.probe(request, rows).await,
            SqlWarehouse::Sqlite(w) => w.probe(request, rows).await,
            SqlWarehouse::Redshift(w) => w.probe(request, rows).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_fit_postgres_limits_and_stay_distinct() {
        assert_eq!(index_name("orders", "event_row"), "orders__event_row");
        let a = "a".repeat(120);
        let b = format!("{}b", "a".repeat(119));
        let (ia, ib) = (index_name(&a, "event_row"), index_name(&b, "event_row"));
        assert!(ia.len() <= 63 && ib.len() <= 63, "{ia} {ib}");
        assert_ne!(ia, ib);
        assert!(ia.ends_with("__event_row"));
        assert_eq!(index_name(&"x".repeat(52), "event_row").len(), 63);
    }

    #[test]
    fn differences_read_as_sentences() {
        let d = SchemaDifference::WrongType {
            table: "orders".into(),
            column: "total".into(),
            expected: "double precision".into(),
            found: "text".into(),
        };
        assert_eq!(
            d.to_string(),
            "column \"orders\".\"total\" is text in the warehouse, the catalog wants double precision"
        );
        let d = SchemaDifference::MissingColumn {
            table: "orders".into(),
            column: "coupon".into(),
            expected: "text".into(),
        };
        assert_eq!(
            d.to_string(),
            "column \"orders\".\"coupon\" is missing (the catalog wants text)"
        );
        let d = SchemaDifference::MissingTable {
            table: "orders".into(),
        };
        assert_eq!(d.to_string(), "table \"orders\" is missing");
    }

    #[test]
    fn a_selection_maps_the_lines_sent_to_batch_rows() {
        let body = b"a,1\nb,\"x\ny\"\nc,3\nd,4";
        let all = Selection::of(body, &[], None).unwrap();
        assert_eq!((&*all.body, all.batch_row(2)), (&body[..], Some(2)));
        let some = Selection::of(body, &[1], Some(0..3)).unwrap();
        assert_eq!(&*some.body, b"a,1\nc,3\n");
        assert_eq!(
            (some.batch_row(0), some.batch_row(1), some.batch_row(2)),
            (Some(0), Some(2), None)
        );
    }

    #[test]
    fn column_lists_are_quoted() {
        assert_eq!(column_list(["a", "_b"]), "\"a\", \"_b\"");
    }

    #[tokio::test]
    async fn unknown_url_schemes_are_refused() {
        let e = SqlWarehouse::connect("mysql://x/y", "public").await.unwrap_err();
        assert!(e.message.contains("unsupported warehouse URL \"mysql\""), "{e}");
    }

    #[test]
    fn embedded_migrations_follow_the_sqlx_file_names() {
        for (version, name, sql) in postgres::MIGRATIONS.iter().chain(sqlite::MIGRATIONS) {
            assert!(*version > 0 && !name.is_empty() && sql.contains(MANIFEST_TABLE));
        }
        let postgres_versions: Vec<i64> = postgres::MIGRATIONS.iter().map(|m| m.0).collect();
        let sqlite_versions: Vec<i64> = sqlite::MIGRATIONS.iter().map(|m| m.0).collect();
        assert_eq!(postgres_versions, sqlite_versions, "both dialects move in step");
    }
}
