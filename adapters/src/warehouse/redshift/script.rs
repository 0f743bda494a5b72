//! The load of a group of batches into Redshift as one SQL script: pure, generated from the
//! batches' metadata and the catalog, with no branching between statements, so that either
//! transport runs it as it is (the wire protocol one statement at a time inside `BEGIN … COMMIT`,
//! the Data API as one `BatchExecuteStatement`, which is one transaction).
//!
//! Redshift enforces no unique constraint and has no `ON CONFLICT`, so exactly once is the
//! script's own doing:
//!
//! 1. `LOCK` the load manifest: loaders queue here, so two importers never work on the same rows
//!    at once and never meet Redshift's serializable-isolation error 1023 on them;
//! 2. the group's batches into a temporary table, less those the manifest holds already (key and
//!    checksum): a batch another loader committed while this one waited is not recorded twice;
//! 3. per unit — the batches of one table with one compression and one CSV encoding, normally one
//!    per table — a staging table `LIKE` the target and **one `COPY`** of all the unit's objects,
//!    listed in a COPY manifest (`mandatory`) written next to them, then a check that the COPY
//!    read the rows the metadata says (`pg_last_copy_count()`: a division by zero otherwise,
//!    which aborts the transaction);
//! 4. append tables: the staged rows whose (`_event_id`, `_row_index`) the table does not hold,
//!    each once; upsert tables: the latest staged row per key (by `_received_at`, then sequence
//!    number — numerically, by length then text — then sub-sequence, the PostgreSQL warehouse's
//!    rule), kept only when newer than the stored row, which it then replaces (`DELETE USING` +
//!    `INSERT`);
//! 5. the manifest rows of the batches still in the group table, which a `SELECT` then returns
//!    (the batches this load recorded: the others were loaded already), and `COMMIT`.
//!
//! A replay of a batch loaded already changes nothing (steps 2 and 4), so the script needs no
//! branch for it. Rows the warehouse refused before (`skip_rows`) are left out by letting the
//! COPY skip exactly that many bad rows (`MAXERROR`): the same rows fail again, and the count
//! check holds the COPY to the rows left.
//!
//! Every identifier is the catalog's, quoted; every literal is ours (object keys, checksums,
//! positions, the role) and goes through [`literal`], which refuses what it cannot write safely.

use std::fmt::Write as _;

use microbatch_core::batch::{BatchMetadata, Compression};
use microbatch_core::catalog::{Column, ColumnType, Mode, Quoted, Table};
use microbatch_core::csv::{CsvEncoding, NULL_MARKER};
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use microbatch_core::ports::{LoadRequest, ObjectLocation};
use microbatch_core::time::Timestamp;
use sha2::{Digest, Sha256};

use super::super::{MANIFEST_TABLE, column_list, resolve_columns, select_list};

/// The temporary table of the group's batches.
pub const GROUP_TABLE: &str = "microbatch_group";

/// What every load script needs besides its batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptOptions {
    /// The schema of the tables and the manifest.
    pub schema: String,
    /// The role Redshift assumes to read the objects and the COPY manifests.
    pub iam_role: String,
    /// Where COPY manifests are written: `s3://<manifest_bucket>/<manifest_prefix><table>/<digest>.manifest`
    /// (the batch bucket, outside `loads/`, so that no notification fires).
    pub manifest_bucket: String,
    pub manifest_prefix: String,
}

/// A statement and what it is for: the transports report a failure by the statement's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub role: Role,
}

/// The part a statement plays in the load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Lock,
    Group,
    Skip,
    Stage {
        table: String,
    },
    Copy(Box<Copy>),
    CountCheck {
        table: String,
        expected: u64,
    },
    Merge {
        table: String,
    },
    Manifest,
    /// Returns the batches this load recorded: key, rows written.
    Recorded,
    Drop,
}

/// One `COPY` of a unit: what a stand-in needs to run it without S3 (tests), and what an error
/// names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    pub table: String,
    pub staging: String,
    pub columns: Vec<String>,
    pub manifest: ObjectLocation,
    pub objects: Vec<ObjectLocation>,
    pub compression: Compression,
    pub encoding: CsvEncoding,
    /// Rows refused before, which the COPY may skip (`MAXERROR`).
    pub skip: u64,
    pub expected_rows: u64,
}

/// A COPY manifest file to write before the script runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyManifest {
    pub location: ObjectLocation,
    pub body: Vec<u8>,
}

/// The load of one group: its statements (without `BEGIN` and `COMMIT`, which the transport
/// adds or implies) and the COPY manifests they read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    pub statements: Vec<Statement>,
    pub manifests: Vec<CopyManifest>,
}

impl Script {
    /// The statements as one text, one per line, wrapped in `BEGIN` and `COMMIT` as the wire
    /// transport sends them (the golden files).
    pub fn to_sql(&self) -> String {
        let mut out = String::from("BEGIN;\n");
        for s in &self.statements {
            out.push_str(&s.sql);
            out.push_str(";\n");
        }
        out.push_str("COMMIT;\n");
        out
    }

    /// The index of the statement that returns the recorded keys.
    pub fn recorded_index(&self) -> usize {
        self.statements
            .iter()
            .position(|s| s.role == Role::Recorded)
            .expect("every script returns the keys it recorded")
    }
}

/// A batch of the group whose load its unit carries.
struct Unit<'r> {
    table: &'r Table,
    columns: Vec<&'r Column>,
    compression: Compression,
    encoding: CsvEncoding,
    requests: Vec<&'r LoadRequest<'r>>,
}

/// The script that loads `requests` (each batch's table already resolved against the catalog).
///
/// `now` is the manifest rows' `loaded_at` (Redshift's clock functions differ from PostgreSQL's,
/// and a literal keeps the script pure).
pub fn load_script(
    requests: &[LoadRequest<'_>],
    options: &ScriptOptions,
    now: Timestamp,
) -> Result<Script, WarehouseError> {
    if requests.is_empty() {
        return Err(WarehouseError::new(
            WarehouseErrorKind::Other,
            "a load script of no batches (importer bug)",
        ));
    }
    let schema = Quoted(&options.schema).to_string();
    let qualified = |name: &str| format!("{schema}.{}", Quoted(name));
    let manifest = qualified(MANIFEST_TABLE);
    let group = Quoted(GROUP_TABLE).to_string();
    let mut statements = Vec::new();
    let mut push = |sql: String, role: Role| statements.push(Statement { sql, role });

    push(format!("LOCK {manifest}"), Role::Lock);
    push(
        format!(
            "CREATE TEMP TABLE {group} (\"key\" VARCHAR(1024) NOT NULL, \"sha256\" CHAR(64) NOT NULL, \
             \"table_name\" VARCHAR(127) NOT NULL, \"rows\" BIGINT NOT NULL, \"inserted\" BIGINT NOT NULL, \
             \"shard\" VARCHAR(256) NOT NULL, \"first_position\" VARCHAR(256) NOT NULL, \
             \"last_position\" VARCHAR(256) NOT NULL, \"catalog_version\" VARCHAR(256) NOT NULL, \
             \"min_received_at\" TIMESTAMPTZ NOT NULL, \"max_received_at\" TIMESTAMPTZ NOT NULL, \
             \"refused\" BIGINT NOT NULL, \"loaded_at\" TIMESTAMPTZ NOT NULL, \
             \"first_sequence\" VARCHAR(128) NOT NULL, \"first_sub\" BIGINT NOT NULL, \
             \"last_sequence\" VARCHAR(128) NOT NULL, \"last_sub\" BIGINT NOT NULL, \
             \"ordinal\" INTEGER NOT NULL)"
        ),
        Role::Group,
    );
    let mut values = Vec::with_capacity(requests.len());
    for (ordinal, req) in requests.iter().enumerate() {
        values.push(group_row(req, ordinal, now)?);
    }
    push(
        format!("INSERT INTO {group} VALUES {}", values.join(", ")),
        Role::Group,
    );
    push(
        format!(
            "DELETE FROM {group} USING {manifest} AS m \
             WHERE m.\"key\" = {group}.\"key\" AND m.\"sha256\" = {group}.\"sha256\""
        ),
        Role::Skip,
    );

    let units = units(requests)?;
    let mut manifests = Vec::new();
    let mut temporary = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        let target = qualified(&unit.table.name);
        let staging = format!("microbatch_stage_{i}");
        let names = column_list(unit.columns.iter().map(|c| c.name.as_str()));
        push(
            format!("CREATE TEMP TABLE {} (LIKE {target})", Quoted(&staging)),
            Role::Stage {
                table: unit.table.name.clone(),
            },
        );
        temporary.push(staging.clone());

        let objects: Vec<ObjectLocation> = unit.requests.iter().map(|r| r.location.clone()).collect();
        let copy_manifest = copy_manifest(&unit.table.name, &objects, options);
        let skip: u64 = unit.requests.iter().map(|r| r.skip_rows.len() as u64).sum();
        let expected: u64 = unit
            .requests
            .iter()
            .map(|r| r.metadata.row_count.saturating_sub(r.skip_rows.len() as u64))
            .sum();
        let mut sql = format!(
            "COPY {} ({names}) FROM {} IAM_ROLE {} MANIFEST FORMAT AS CSV NULL AS {}",
            Quoted(&staging),
            literal(&copy_manifest.location.to_string())?,
            literal(&options.iam_role)?,
            literal(match unit.encoding {
                CsvEncoding::EmptyIsNull => "",
                CsvEncoding::NullMarker => NULL_MARKER,
            })?,
        );
        match unit.compression {
            Compression::None => {}
            Compression::Gzip => sql.push_str(" GZIP"),
            Compression::Zstd => sql.push_str(" ZSTD"),
        }
        sql.push_str(" TIMEFORMAT 'auto' DATEFORMAT 'auto' COMPUPDATE OFF STATUPDATE OFF");
        if skip > 0 {
            let _ = write!(sql, " MAXERROR {skip}");
        }
        push(
            sql,
            Role::Copy(Box::new(Copy {
                table: unit.table.name.clone(),
                staging: staging.clone(),
                columns: unit.columns.iter().map(|c| c.name.clone()).collect(),
                manifest: copy_manifest.location.clone(),
                objects,
                compression: unit.compression,
                encoding: unit.encoding,
                skip,
                expected_rows: expected,
            })),
        );
        manifests.push(copy_manifest);
        push(
            format!("SELECT 1 / (CASE WHEN pg_last_copy_count() = {expected} THEN 1 ELSE 0 END)"),
            Role::CountCheck {
                table: unit.table.name.clone(),
                expected,
            },
        );
        let merge = Role::Merge {
            table: unit.table.name.clone(),
        };
        let values = select_list(&unit.columns, unit.encoding);
        let fresh = format!("microbatch_new_{i}");
        let fresh_q = Quoted(&fresh).to_string();
        let staging_q = Quoted(&staging).to_string();
        temporary.push(fresh.clone());
        match &unit.table.mode {
            // The staged rows the table does not hold, each once.
            Mode::Append => push(
                format!(
                    "CREATE TEMP TABLE {fresh_q} AS SELECT {names} FROM (SELECT {values}, \
                     ROW_NUMBER() OVER (PARTITION BY \"_event_id\", \"_row_index\" ORDER BY \"_received_at\") \
                     AS \"microbatch_rank\" FROM {staging_q}) AS s WHERE s.\"microbatch_rank\" = 1 \
                     AND NOT EXISTS (SELECT 1 FROM {target} AS t \
                     WHERE t.\"_event_id\" = s.\"_event_id\" AND t.\"_row_index\" = s.\"_row_index\")"
                ),
                merge.clone(),
            ),
            // The latest staged row per key, kept only if strictly newer than the stored one: a
            // replay of an older batch, or of the same one, leaves the stored row alone.
            Mode::Upsert { key } => {
                let keys = column_list(key.iter().map(String::as_str));
                push(
                    format!(
                        "CREATE TEMP TABLE {fresh_q} AS SELECT {names} FROM (SELECT {values}, \
                         ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY \"_received_at\" DESC, \
                         LENGTH(\"_sequence\") DESC, \"_sequence\" DESC, \"_sub_sequence\" DESC) \
                         AS \"microbatch_rank\" FROM {staging_q}) AS s WHERE s.\"microbatch_rank\" = 1"
                    ),
                    merge.clone(),
                );
                push(
                    format!(
                        "DELETE FROM {fresh_q} USING {target} AS stored WHERE {} AND NOT ({})",
                        same_key(key, "stored", &fresh_q),
                        newer(&fresh_q, "stored"),
                    ),
                    merge.clone(),
                );
            }
        }
        // Each batch's count of the rows written: those of its shard within its positions (a row
        // two batches of the group both span — a replay cut differently — counts for the first).
        let mut keys = Vec::with_capacity(unit.requests.len());
        for req in &unit.requests {
            keys.push(literal(req.key())?);
        }
        push(
            format!(
                "UPDATE {group} SET \"inserted\" = c.n FROM (SELECT o.\"ordinal\", COUNT(*) AS n FROM \
                 (SELECT MIN(g.\"ordinal\") AS \"ordinal\" FROM {fresh_q} AS r JOIN {group} AS g \
                 ON r.\"_shard\" = g.\"shard\" AND {} AND {} WHERE g.\"key\" IN ({}) \
                 GROUP BY r.\"_event_id\", r.\"_row_index\") AS o GROUP BY o.\"ordinal\") AS c \
                 WHERE {group}.\"ordinal\" = c.\"ordinal\"",
                at_or_after("r", "g", "first"),
                at_or_before("r", "g", "last"),
                keys.join(", "),
            ),
            merge.clone(),
        );
        if let Mode::Upsert { key } = &unit.table.mode {
            push(
                format!(
                    "DELETE FROM {target} USING {fresh_q} WHERE {}",
                    same_key(key, &target, &fresh_q)
                ),
                merge.clone(),
            );
        }
        push(
            format!("INSERT INTO {target} ({names}) SELECT {names} FROM {fresh_q}"),
            merge,
        );
    }
    push(
        format!(
            "INSERT INTO {manifest} (\"key\", \"sha256\", \"table_name\", \"rows\", \"inserted\", \"shard\", \
             \"first_position\", \"last_position\", \"catalog_version\", \"min_received_at\", \
             \"max_received_at\", \"refused\", \"loaded_at\") SELECT \"key\", \"sha256\", \"table_name\", \
             \"rows\", \"inserted\", \"shard\", \"first_position\", \"last_position\", \"catalog_version\", \
             \"min_received_at\", \"max_received_at\", \"refused\", \"loaded_at\" FROM {group}"
        ),
        Role::Manifest,
    );
    push(
        format!("SELECT \"key\", CAST(\"inserted\" AS VARCHAR(32)) FROM {group} ORDER BY \"key\""),
        Role::Recorded,
    );
    temporary.push(GROUP_TABLE.to_owned());
    for name in temporary {
        push(format!("DROP TABLE {}", Quoted(&name)), Role::Drop);
    }
    Ok(Script {
        statements,
        manifests,
    })
}

/// `new` is later in the stream than `old`: by `_received_at`, then the sequence number
/// (numerically: by length, then text), then the sub-sequence. Spelled out, as Redshift has no
/// row-value comparison.
fn newer(new: &str, old: &str) -> String {
    let c = |alias: &str, column: &str| format!("{alias}.\"{column}\"");
    let len = |alias: &str| format!("LENGTH({})", c(alias, "_sequence"));
    format!(
        "{nr} > {or} OR ({nr} = {or} AND ({nl} > {ol} OR ({nl} = {ol} AND ({ns} > {os} OR ({ns} = {os} \
         AND {nsub} > {osub})))))",
        nr = c(new, "_received_at"),
        or = c(old, "_received_at"),
        nl = len(new),
        ol = len(old),
        ns = c(new, "_sequence"),
        os = c(old, "_sequence"),
        nsub = c(new, "_sub_sequence"),
        osub = c(old, "_sub_sequence"),
    )
}

/// `a.k = b.k AND …` over the key columns.
fn same_key(key: &[String], a: &str, b: &str) -> String {
    key.iter()
        .map(|k| format!("{a}.{k} = {b}.{k}", k = Quoted(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Row `r`'s stream position is at or after the group row `g`'s `<end>` position
/// (`<end>_sequence`, `<end>_sub`): by sequence number (length, then text), then sub-sequence.
fn at_or_after(r: &str, g: &str, end: &str) -> String {
    compare_position(r, g, end, ">")
}

fn at_or_before(r: &str, g: &str, end: &str) -> String {
    compare_position(r, g, end, "<")
}

fn compare_position(r: &str, g: &str, end: &str, direction: &str) -> String {
    let rs = format!("{r}.\"_sequence\"");
    let rsub = format!("{r}.\"_sub_sequence\"");
    let gs = format!("{g}.\"{end}_sequence\"");
    let gsub = format!("{g}.\"{end}_sub\"");
    format!(
        "(LENGTH({rs}) {direction} LENGTH({gs}) OR (LENGTH({rs}) = LENGTH({gs}) AND ({rs} {direction} {gs} \
         OR ({rs} = {gs} AND {rsub} {direction}= {gsub}))))"
    )
}

/// The group's batches split into units: one per table, compression and encoding, in the order
/// of their first batch. The batch's column list must be the same within a unit (one COPY column
/// list); a batch with another list starts its own unit.
fn units<'r>(requests: &'r [LoadRequest<'r>]) -> Result<Vec<Unit<'r>>, WarehouseError> {
    let mut units: Vec<Unit<'r>> = Vec::new();
    for req in requests {
        let columns =
            resolve_columns(req.table, req.columns).map_err(|m| WarehouseError::with_sqlstate("42703", m))?;
        let m = req.metadata;
        let same = |u: &&mut Unit<'r>| {
            u.table.name == req.table.name
                && u.compression == m.compression
                && u.encoding == m.csv
                && u.requests[0].columns == req.columns
        };
        match units.iter_mut().find(same) {
            Some(unit) => unit.requests.push(req),
            None => {
                units.push(Unit {
                    table: req.table,
                    columns,
                    compression: m.compression,
                    encoding: m.csv,
                    requests: vec![req],
                });
            }
        }
    }
    Ok(units)
}

/// The group table's row of a batch.
fn group_row(req: &LoadRequest<'_>, ordinal: usize, now: Timestamp) -> Result<String, WarehouseError> {
    let m: &BatchMetadata = req.metadata;
    let position = |p: &microbatch_core::position::Position| format!("{}:{}", p.seq, p.sub);
    Ok(format!(
        "({}, {}, {}, {}, 0, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {ordinal})",
        literal(req.key())?,
        literal(&m.sha256)?,
        literal(&req.table.name)?,
        m.row_count,
        literal(m.shard.as_str())?,
        literal(&position(&m.first))?,
        literal(&position(&m.last))?,
        literal(&m.catalog_version)?,
        literal(&m.min_received_at.to_string())?,
        literal(&m.max_received_at.to_string())?,
        req.skip_rows.len(),
        literal(&now.to_string())?,
        literal(m.first.seq.as_str())?,
        m.first.sub,
        literal(m.last.seq.as_str())?,
        m.last.sub,
    ))
}

/// The COPY manifest of a unit's objects, named by a digest of their locations: a retry of the
/// same group writes the same object.
fn copy_manifest(table: &str, objects: &[ObjectLocation], options: &ScriptOptions) -> CopyManifest {
    let entries: Vec<serde_json::Value> = objects
        .iter()
        .map(|o| serde_json::json!({ "url": o.to_string(), "mandatory": true }))
        .collect();
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "entries": entries }))
        .expect("a manifest always serialises");
    let digest = hex::encode(Sha256::digest(&body));
    CopyManifest {
        location: ObjectLocation::new(
            options.manifest_bucket.clone(),
            format!("{}{table}/{}.manifest", options.manifest_prefix, &digest[..32]),
        ),
        body,
    }
}

/// A SQL string literal of one of our own values. Refuses a backslash (Redshift may read it as
/// an escape inside a literal) and control characters, rather than guess how they would read.
pub fn literal(value: &str) -> Result<String, WarehouseError> {
    if let Some(c) = value.chars().find(|c| *c == '\\' || c.is_control()) {
        return Err(WarehouseError::new(
            WarehouseErrorKind::Other,
            format!("{value:?} holds {c:?}, which a Redshift load script does not write into a literal"),
        ));
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

/// The Redshift type of a catalog column type.
pub fn redshift_type(ty: ColumnType) -> &'static str {
    match ty {
        // The storable limit (`core::storable`): no accepted value is too long.
        ColumnType::Text | ColumnType::Json => "VARCHAR(65535)",
        ColumnType::Bigint => "BIGINT",
        ColumnType::Double => "DOUBLE PRECISION",
        ColumnType::Boolean => "BOOLEAN",
        ColumnType::Timestamp => "TIMESTAMPTZ",
        ColumnType::Date => "DATE",
    }
}
