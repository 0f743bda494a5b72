//! Loading and validating catalog sources.
//!
//! Core does no I/O, so it takes the files' names and texts ([`Source`]); the adapters read the
//! directory. Every problem found is reported, each naming its file, event type, table and column,
//! so a data engineer fixes the catalog in one pass instead of one error per run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ident;
use super::pointer::Pointer;
use super::{
    Catalog, Column, ColumnSource, ColumnType, EnvelopeField, Epoch, EventType, LINEAGE_COLUMNS, Mode,
    Output, Table, TableId, ValueSource,
};

/// One catalog file: its name (for messages) and its TOML text.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// What is wrong with one part of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogErrorKind {
    #[error("invalid TOML: {0}")]
    Toml(String),
    #[error("the catalog declares no event types")]
    Empty,
    #[error("event type is declared twice (also in {0})")]
    DuplicateEventType(String),
    #[error("invalid event type name {0:?}: use letters, digits, '.', '_' or '-' (1 to 128)")]
    EventTypeName(String),
    #[error("invalid JSON Schema: {0}")]
    Schema(String),
    #[error("event type has no outputs")]
    NoOutputs,
    #[error("{0}")]
    Identifier(#[from] ident::IdentError),
    #[error("unknown column type {0:?} (expected one of {types})", types = ColumnType::NAMES)]
    UnknownType(String),
    #[error("{0}")]
    Pointer(#[from] super::PointerError),
    #[error("column needs exactly one of `pointer`, `item` or `envelope`")]
    SourceCount,
    #[error("`item` is only allowed in an output with `explode`")]
    ItemWithoutExplode,
    #[error("unknown envelope field {0:?} (expected one of {fields})", fields = EnvelopeField::NAMES)]
    UnknownEnvelopeField(String),
    #[error("unknown epoch {0:?} (expected seconds or millis)")]
    UnknownEpoch(String),
    #[error("`epoch` is only allowed on timestamp columns")]
    EpochOnNonTimestamp,
    #[error("column is declared twice in the same output")]
    DuplicateColumn,
    #[error("column name collides with the lineage column of the same name")]
    LineageCollision,
    #[error("unknown mode {0:?} (expected append or upsert)")]
    UnknownMode(String),
    #[error("upsert output needs a non-empty `key`")]
    UpsertWithoutKey,
    #[error("`key` is only allowed with mode = \"upsert\"")]
    KeyWithoutUpsert,
    #[error("key column {0:?} is not a column of the output")]
    UnknownKeyColumn(String),
    #[error("key column {0:?} must not be nullable")]
    NullableKeyColumn(String),
    #[error("table is declared differently by event type {other:?} in {other_file}: {difference}")]
    TableConflict {
        other: String,
        other_file: String,
        difference: String,
    },
}

/// One error, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError {
    pub file: String,
    pub event_type: Option<String>,
    pub table: Option<String>,
    pub column: Option<String>,
    pub kind: CatalogErrorKind,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(e) = &self.event_type {
            write!(f, ": event type {e:?}")?;
        }
        if let Some(t) = &self.table {
            write!(f, ", table {t:?}")?;
        }
        if let Some(c) = &self.column {
            write!(f, ", column {c:?}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// Every error found in a catalog, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CatalogErrors(pub Vec<CatalogError>);

impl fmt::Display for CatalogErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the catalog has {} error(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    events: Vec<EventDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventDoc {
    #[serde(rename = "type")]
    name: String,
    #[serde(default)]
    #[allow(dead_code)] // documentation for humans, kept so `deny_unknown_fields` accepts it
    description: Option<String>,
    #[serde(default)]
    schema: Option<SchemaDoc>,
    #[serde(default)]
    outputs: Vec<OutputDoc>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SchemaDoc {
    Json(String),
    Table(toml::Value),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputDoc {
    table: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    explode: Option<String>,
    columns: Vec<ColumnDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnDoc {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default = "yes")]
    nullable: bool,
    pointer: Option<String>,
    item: Option<String>,
    envelope: Option<String>,
    epoch: Option<String>,
}

fn yes() -> bool {
    true
}

struct Ctx<'a> {
    file: &'a str,
    event: Option<&'a str>,
    table: Option<&'a str>,
}

impl Ctx<'_> {
    fn err(&self, column: Option<&str>, kind: impl Into<CatalogErrorKind>) -> CatalogError {
        CatalogError {
            file: self.file.to_owned(),
            event_type: self.event.map(str::to_owned),
            table: self.table.map(str::to_owned),
            column: column.map(str::to_owned),
            kind: kind.into(),
        }
    }
}

/// An event type parsed but not yet linked to table ids: name, file, schema, outputs by table name.
type PendingEvent = (
    String,
    String,
    Option<jsonschema::Validator>,
    Vec<(String, Output)>,
);

/// The first declaration of a table, against which later ones are compared.
struct Declared {
    table: Table,
    by_event: String,
    by_file: String,
}

impl Catalog {
    /// Parses and validates catalog sources; sources are taken in name order so that the first
    /// declaration of a shared table (which fixes its column order) does not depend on how the
    /// directory was listed.
    pub fn load(sources: impl IntoIterator<Item = Source>) -> Result<Catalog, CatalogErrors> {
        let mut sources: Vec<Source> = sources.into_iter().collect();
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        let mut errors = Vec::new();
        let mut hasher = Sha256::new();
        let mut declared: BTreeMap<String, Declared> = BTreeMap::new();
        let mut pending: Vec<PendingEvent> = Vec::new();
        let mut seen_events: HashMap<String, String> = HashMap::new();

        for source in &sources {
            hasher.update((source.name.len() as u64).to_le_bytes());
            hasher.update(source.name.as_bytes());
            hasher.update((source.text.len() as u64).to_le_bytes());
            hasher.update(source.text.as_bytes());
            let file_ctx = Ctx {
                file: &source.name,
                event: None,
                table: None,
            };
            let doc: FileDoc = match toml::from_str(&source.text) {
                Ok(doc) => doc,
                Err(e) => {
                    errors.push(file_ctx.err(None, CatalogErrorKind::Toml(e.message().to_owned())));
                    continue;
                }
            };
            for event in doc.events {
                let ctx = Ctx {
                    file: &source.name,
                    event: Some(&event.name),
                    table: None,
                };
                if !valid_event_type_name(&event.name) {
                    errors.push(ctx.err(None, CatalogErrorKind::EventTypeName(event.name.clone())));
                    continue;
                }
                if let Some(other) = seen_events.get(&event.name) {
                    errors.push(ctx.err(None, CatalogErrorKind::DuplicateEventType(other.clone())));
                    continue;
                }
                seen_events.insert(event.name.clone(), source.name.clone());
                let schema = match event.schema.map(compile_schema).transpose() {
                    Ok(s) => s,
                    Err(kind) => {
                        errors.push(ctx.err(None, kind));
                        None
                    }
                };
                if event.outputs.is_empty() {
                    errors.push(ctx.err(None, CatalogErrorKind::NoOutputs));
                }
                let mut outputs = Vec::new();
                for out in event.outputs {
                    let table_name = out.table.clone();
                    let ctx = Ctx {
                        file: &source.name,
                        event: Some(&event.name),
                        table: Some(&table_name),
                    };
                    match parse_output(&ctx, out) {
                        Ok((table, output)) => {
                            match declared.get(&table.name) {
                                None => {
                                    declared.insert(
                                        table.name.clone(),
                                        Declared {
                                            table: table.clone(),
                                            by_event: event.name.clone(),
                                            by_file: source.name.clone(),
                                        },
                                    );
                                }
                                Some(first) => {
                                    if let Some(difference) = table_difference(&first.table, &table) {
                                        errors.push(ctx.err(
                                            None,
                                            CatalogErrorKind::TableConflict {
                                                other: first.by_event.clone(),
                                                other_file: first.by_file.clone(),
                                                difference,
                                            },
                                        ));
                                        continue;
                                    }
                                }
                            }
                            outputs.push((table.name, output));
                        }
                        Err(mut errs) => errors.append(&mut errs),
                    }
                }
                pending.push((event.name, source.name.clone(), schema, outputs));
            }
        }
        if seen_events.is_empty() && errors.is_empty() {
            errors.push(CatalogError {
                file: "(catalog)".into(),
                event_type: None,
                table: None,
                column: None,
                kind: CatalogErrorKind::Empty,
            });
        }
        if !errors.is_empty() {
            return Err(CatalogErrors(errors));
        }

        let mut tables = Vec::new();
        let mut table_ids = BTreeMap::new();
        for (name, d) in declared {
            table_ids.insert(name, TableId(tables.len() as u32));
            tables.push(d.table);
        }
        let mut events = HashMap::new();
        for (name, file, schema, outputs) in pending {
            let outputs = outputs
                .into_iter()
                .map(|(table_name, mut output)| {
                    let id = table_ids[&table_name];
                    reorder_like(&tables[id.0 as usize], &mut output);
                    output.table = id;
                    output
                })
                .collect();
            events.insert(
                name.clone(),
                EventType {
                    name,
                    file,
                    schema,
                    outputs,
                },
            );
        }
        let version = hex::encode(&hasher.finalize()[..8]);
        Ok(Catalog {
            version,
            tables,
            table_ids,
            events,
        })
    }
}

fn valid_event_type_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn compile_schema(doc: SchemaDoc) -> Result<jsonschema::Validator, CatalogErrorKind> {
    let value: serde_json::Value = match doc {
        SchemaDoc::Json(text) => {
            serde_json::from_str(&text).map_err(|e| CatalogErrorKind::Schema(format!("not JSON: {e}")))?
        }
        SchemaDoc::Table(t) => {
            serde_json::to_value(t).map_err(|e| CatalogErrorKind::Schema(e.to_string()))?
        }
    };
    jsonschema::validator_for(&value).map_err(|e| CatalogErrorKind::Schema(e.to_string()))
}

/// Parses one output into the table it declares and how to fill it (columns in declared order).
fn parse_output(ctx: &Ctx<'_>, out: OutputDoc) -> Result<(Table, Output), Vec<CatalogError>> {
    let mut errors = Vec::new();
    if let Err(e) = ident::validate(&out.table) {
        errors.push(ctx.err(None, e));
    }
    let explode = match out.explode.as_deref().map(Pointer::parse).transpose() {
        Ok(p) => p,
        Err(e) => {
            errors.push(ctx.err(None, e));
            None
        }
    };
    let mut columns = Vec::new();
    let mut seen = HashSet::new();
    for c in out.columns {
        let col = Some(c.name.as_str());
        if let Err(e) = ident::validate(&c.name) {
            errors.push(ctx.err(col, e));
            continue;
        }
        if LINEAGE_COLUMNS.iter().any(|(n, _)| *n == c.name) {
            errors.push(ctx.err(col, CatalogErrorKind::LineageCollision));
            continue;
        }
        if !seen.insert(c.name.clone()) {
            errors.push(ctx.err(col, CatalogErrorKind::DuplicateColumn));
            continue;
        }
        let Some(ty) = ColumnType::parse(&c.ty) else {
            errors.push(ctx.err(col, CatalogErrorKind::UnknownType(c.ty.clone())));
            continue;
        };
        let source = match (&c.pointer, &c.item, &c.envelope) {
            (Some(p), None, None) => Pointer::parse(p).map(ValueSource::Payload).map_err(Into::into),
            (None, Some(p), None) if explode.is_some() || out.explode.is_some() => {
                Pointer::parse(p).map(ValueSource::Item).map_err(Into::into)
            }
            (None, Some(_), None) => Err(CatalogErrorKind::ItemWithoutExplode),
            (None, None, Some(f)) => EnvelopeField::parse(f)
                .map(ValueSource::Envelope)
                .ok_or_else(|| CatalogErrorKind::UnknownEnvelopeField(f.clone())),
            _ => Err(CatalogErrorKind::SourceCount),
        };
        let source = match source {
            Ok(s) => s,
            Err(kind) => {
                errors.push(ctx.err(col, kind));
                continue;
            }
        };
        let epoch = match c.epoch.as_deref() {
            None => None,
            Some(_) if ty != ColumnType::Timestamp => {
                errors.push(ctx.err(col, CatalogErrorKind::EpochOnNonTimestamp));
                continue;
            }
            Some("seconds") => Some(Epoch::Seconds),
            Some("millis") => Some(Epoch::Millis),
            Some(other) => {
                errors.push(ctx.err(col, CatalogErrorKind::UnknownEpoch(other.to_owned())));
                continue;
            }
        };
        columns.push(ColumnSource {
            column: Column {
                name: c.name,
                ty,
                nullable: c.nullable,
            },
            source,
            epoch,
        });
    }
    let mode = match (out.mode.as_deref().unwrap_or("append"), out.key.is_empty()) {
        ("append", true) => Some(Mode::Append),
        ("append", false) => {
            errors.push(ctx.err(None, CatalogErrorKind::KeyWithoutUpsert));
            None
        }
        ("upsert", true) => {
            errors.push(ctx.err(None, CatalogErrorKind::UpsertWithoutKey));
            None
        }
        ("upsert", false) => {
            for k in &out.key {
                match columns.iter().find(|c| &c.column.name == k) {
                    None => errors.push(ctx.err(Some(k), CatalogErrorKind::UnknownKeyColumn(k.clone()))),
                    Some(c) if c.column.nullable => {
                        errors.push(ctx.err(Some(k), CatalogErrorKind::NullableKeyColumn(k.clone())))
                    }
                    Some(_) => {}
                }
            }
            Some(Mode::Upsert { key: out.key.clone() })
        }
        (other, _) => {
            errors.push(ctx.err(None, CatalogErrorKind::UnknownMode(other.to_owned())));
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let table = Table {
        name: out.table,
        columns: LINEAGE_COLUMNS
            .iter()
            .map(|(n, ty)| Column {
                name: (*n).to_owned(),
                ty: *ty,
                nullable: false,
            })
            .chain(columns.iter().map(|c| c.column.clone()))
            .collect(),
        mode: mode.expect("mode is set when there are no errors"),
    };
    Ok((
        table,
        Output {
            table: TableId(u32::MAX),
            explode,
            columns,
        },
    ))
}

/// Why two declarations of one table differ, if they do: columns compare as a set (name, type,
/// nullability), so two event types may list them in different orders.
fn table_difference(first: &Table, other: &Table) -> Option<String> {
    if first.mode != other.mode {
        return Some(format!("mode {:?} vs {:?}", first.mode, other.mode));
    }
    let a: BTreeMap<&str, &Column> = first.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let b: BTreeMap<&str, &Column> = other.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    for (name, col) in &b {
        match a.get(name) {
            None => return Some(format!("column {name:?} is not in the first declaration")),
            Some(first_col) if first_col.ty != col.ty => {
                return Some(format!(
                    "column {name:?} is {} there but {} here",
                    first_col.ty, col.ty
                ));
            }
            Some(first_col) if first_col.nullable != col.nullable => {
                return Some(format!("column {name:?} differs in nullability"));
            }
            Some(_) => {}
        }
    }
    a.keys()
        .find(|name| !b.contains_key(*name))
        .map(|name| format!("column {name:?} is missing here"))
}

/// Puts an output's columns in its table's order, so every row of a table has one layout.
fn reorder_like(table: &Table, output: &mut Output) {
    let order: HashMap<&str, usize> = table
        .data_columns()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    output.columns.sort_by_key(|c| order[c.column.name.as_str()]);
}
