//! What the Redshift warehouse creates at importer start: its migrations (checked in under
//! `adapters/migrations/redshift/`, recorded in `microbatch_migrations`) and the catalog's tables,
//! as pure statement lists the transports run.
//!
//! Types: text and json → `VARCHAR(65535)` (the storable limit, so no accepted value is too long;
//! JSON stays the text that was mapped, which `JSON_PARSE` turns into `SUPER` at query time —
//! COPY from CSV into a `SUPER` column would store a string scalar, not the document), bigint →
//! `BIGINT`, double → `DOUBLE PRECISION`, boolean → `BOOLEAN`, timestamp → `TIMESTAMPTZ`, date →
//! `DATE`. Tables are `DISTSTYLE AUTO` (Redshift picks and changes the distribution as the table
//! grows), sorted on `_received_at` for append tables (loads append in that order, and queries
//! filter on time) and on the key for upsert tables (each load deletes and re-inserts by key).
//! A new catalog column is added with `ALTER TABLE … ADD COLUMN` (always nullable in effect:
//! Redshift refuses `NOT NULL` without a default on a table with rows).

use microbatch_core::catalog::{Catalog, Mode, Quoted, Table};
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};

use super::super::{EmbeddedMigration, Existing};
use super::script::{literal, redshift_type};

/// The table that records applied migrations.
pub const MIGRATIONS_TABLE: &str = "microbatch_migrations";

/// `adapters/migrations/redshift/`, in order.
pub(crate) const MIGRATIONS: &[EmbeddedMigration] = &[(
    20261202000001,
    "load_manifest",
    include_str!("../../../migrations/redshift/20261202000001_load_manifest.sql"),
)];

/// Redshift's limit on identifiers, in bytes.
pub const MAX_NAME_BYTES: usize = 127;

/// Whether the DDL carries Redshift's table attributes (`DISTSTYLE`, `SORTKEY`); the portable
/// form is what the tests run on PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Redshift,
    Portable,
}

/// Creates the schema and the migrations table: run once, before anything is read.
pub fn bootstrap(schema: &str) -> Vec<String> {
    let s = Quoted(schema);
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {s}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.{} (\"version\" BIGINT NOT NULL, \"name\" VARCHAR(256) NOT NULL, \
             \"applied_at\" TIMESTAMPTZ NOT NULL)",
            Quoted(MIGRATIONS_TABLE)
        ),
    ]
}

/// The query of the migrations applied.
pub fn applied_query(schema: &str) -> String {
    format!(
        "SELECT CAST(\"version\" AS VARCHAR(32)) FROM {}.{} ORDER BY 1",
        Quoted(schema),
        Quoted(MIGRATIONS_TABLE)
    )
}

/// The query of the schema's tables and columns: table, column, type (as
/// [`reported_type`] names it), in column order.
pub fn columns_query(schema: &str) -> Result<String, WarehouseError> {
    Ok(format!(
        "SELECT CAST(table_name AS VARCHAR(128)), CAST(column_name AS VARCHAR(128)), \
         CAST(data_type AS VARCHAR(128)) FROM information_schema.columns WHERE table_schema = {} \
         ORDER BY table_name, ordinal_position",
        literal(schema)?
    ))
}

/// How `information_schema.columns.data_type` names a catalog type's Redshift type (the same
/// words in PostgreSQL).
pub fn reported_type(ty: microbatch_core::catalog::ColumnType) -> &'static str {
    use microbatch_core::catalog::ColumnType;
    match ty {
        ColumnType::Text | ColumnType::Json => "character varying",
        ColumnType::Bigint => "bigint",
        ColumnType::Double => "double precision",
        ColumnType::Boolean => "boolean",
        ColumnType::Timestamp => "timestamp with time zone",
        ColumnType::Date => "date",
    }
}

/// The statements that bring the schema to the catalog, in one transaction: the migrations not
/// in `applied` (each recorded), then the tables missing from `existing` and the columns missing
/// from the tables there. Idempotent: run again on what it made, it plans nothing but the lock.
pub fn migration_plan(
    schema: &str,
    applied: &[i64],
    existing: &Existing,
    catalog: &Catalog,
    flavor: Flavor,
    now: &str,
) -> Result<Vec<String>, WarehouseError> {
    check_names(catalog)?;
    let s = Quoted(schema).to_string();
    let mut out = vec![format!("LOCK {s}.{}", Quoted(MIGRATIONS_TABLE))];
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for statement in sql.split(';').map(without_comments).filter(|s| !s.is_empty()) {
            out.push(statement.replace("{schema}", &s));
        }
        out.push(format!(
            "INSERT INTO {s}.{} VALUES ({version}, {}, {})",
            Quoted(MIGRATIONS_TABLE),
            literal(name)?,
            literal(now)?
        ));
    }
    for table in catalog.tables() {
        let target = format!("{s}.{}", Quoted(&table.name));
        match existing.get(&table.name) {
            None => out.push(create_table(&target, table, flavor)),
            Some(have) => {
                for column in &table.columns {
                    if have.iter().all(|(name, _)| *name != column.name) {
                        out.push(format!(
                            "ALTER TABLE {target} ADD COLUMN {} {}",
                            Quoted(&column.name),
                            redshift_type(column.ty)
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A migration statement without its comment lines (they explain the file, not the statement).
fn without_comments(statement: &str) -> String {
    statement
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

/// `CREATE TABLE IF NOT EXISTS` of a catalog table.
pub fn create_table(target: &str, table: &Table, flavor: Flavor) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {}{not_null}", Quoted(&c.name), redshift_type(c.ty))
        })
        .collect();
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {target} ({})", columns.join(", "));
    if flavor == Flavor::Redshift {
        let sort: Vec<String> = match &table.mode {
            Mode::Append => vec![Quoted("_received_at").to_string()],
            Mode::Upsert { key } => key.iter().map(|k| Quoted(k).to_string()).collect(),
        };
        sql.push_str(&format!(" DISTSTYLE AUTO SORTKEY ({})", sort.join(", ")));
    }
    sql
}

/// Names Redshift would refuse, by name (the catalog already holds them to 127 bytes; this
/// keeps the rule next to the DDL that needs it).
fn check_names(catalog: &Catalog) -> Result<(), WarehouseError> {
    let too_long = |what: String, name: &str| {
        WarehouseError::new(
            WarehouseErrorKind::Other,
            format!(
                "{what} {name:?} is {} bytes; Redshift allows {MAX_NAME_BYTES}",
                name.len()
            ),
        )
    };
    for table in catalog.tables() {
        if table.name.len() > MAX_NAME_BYTES {
            return Err(too_long("table".into(), &table.name));
        }
        for column in &table.columns {
            if column.name.len() > MAX_NAME_BYTES {
                return Err(too_long(
                    format!("column of table {:?}", table.name),
                    &column.name,
                ));
            }
        }
    }
    Ok(())
}
