//! The catalog: which event types exist, how each is validated, and which rows in which tables it
//! becomes. It is declarative (a directory of TOML files, see [`load`]) and is the only source of
//! table and column names (contract 6).
//!
//! Flow: the producer asks it for an event type's JSON Schema; the consumer's [`Mapper`]
//! (crate::mapping) turns events into rows with it; the importer checks batch columns against it
//! and creates tables from it.

mod ident;
mod load;
mod pointer;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub use ident::{IdentError, Quoted, validate as validate_ident};
pub use load::{CatalogError, CatalogErrorKind, CatalogErrors, Source};
pub use pointer::{Pointer, PointerError};

/// The type of a column, as the catalog names it. Adapters map it to each warehouse's SQL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Text,
    Bigint,
    Double,
    Boolean,
    Timestamp,
    Date,
    Json,
}

impl ColumnType {
    pub const NAMES: &'static str = "text, bigint, double, boolean, timestamp, date, json";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "text" => ColumnType::Text,
            "bigint" => ColumnType::Bigint,
            "double" => ColumnType::Double,
            "boolean" => ColumnType::Boolean,
            "timestamp" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            "json" => ColumnType::Json,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Bigint => "bigint",
            ColumnType::Double => "double",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Date => "date",
            ColumnType::Json => "json",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A column of a warehouse table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

/// The lineage columns every table starts with: where each row came from, and the key
/// (`_event_id`, `_row_index`) that makes loading it twice a no-op.
pub const LINEAGE_COLUMNS: [(&str, ColumnType); 6] = [
    ("_event_id", ColumnType::Text),
    ("_row_index", ColumnType::Bigint),
    ("_received_at", ColumnType::Timestamp),
    ("_shard", ColumnType::Text),
    ("_sequence", ColumnType::Text),
    ("_sub_sequence", ColumnType::Bigint),
];

/// How rows land in a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Facts: every row is kept (once).
    Append,
    /// Dimensions: one row per key; the latest by `_received_at`, then stream position, wins.
    Upsert { key: Vec<String> },
}

/// A warehouse table as the catalog defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// Lineage columns first, then the declared ones, in the order of the first declaration.
    pub columns: Vec<Column>,
    pub mode: Mode,
}

impl Table {
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// The declared (non-lineage) columns.
    pub fn data_columns(&self) -> &[Column] {
        &self.columns[LINEAGE_COLUMNS.len()..]
    }
}

/// Index of a table in [`Catalog::tables`]: cheap to copy and hash on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub u32);

/// An envelope field a column may read instead of the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvelopeField {
    Id,
    Type,
    Source,
    ReceivedAt,
    OccurredAt,
}

impl EnvelopeField {
    pub const NAMES: &'static str = "id, type, source, received_at, occurred_at";

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "id" => EnvelopeField::Id,
            "type" => EnvelopeField::Type,
            "source" => EnvelopeField::Source,
            "received_at" => EnvelopeField::ReceivedAt,
            "occurred_at" => EnvelopeField::OccurredAt,
            _ => return None,
        })
    }
}

/// Where a column's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueSource {
    /// A pointer into the payload.
    Payload(Pointer),
    /// A pointer into the current element of the exploded array.
    Item(Pointer),
    Envelope(EnvelopeField),
}

/// How a number in a `timestamp` column is read; without it only RFC 3339 text is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epoch {
    Seconds,
    Millis,
}

/// One column of an output: its place in the table and where its value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSource {
    pub column: Column,
    pub source: ValueSource,
    pub epoch: Option<Epoch>,
}

/// One target table of an event type.
#[derive(Clone, Debug)]
pub struct Output {
    pub table: TableId,
    /// When set, one row per element of the array at this pointer.
    pub explode: Option<Pointer>,
    /// In the table's data-column order.
    pub columns: Vec<ColumnSource>,
}

/// An event type: its optional JSON Schema and its outputs.
#[derive(Debug)]
pub struct EventType {
    pub name: String,
    pub file: String,
    pub schema: Option<jsonschema::Validator>,
    pub outputs: Vec<Output>,
}

/// The loaded, validated catalog.
#[derive(Debug)]
pub struct Catalog {
    version: String,
    tables: Vec<Table>,
    table_ids: BTreeMap<String, TableId>,
    events: HashMap<String, EventType>,
}

impl Catalog {
    /// A short hash of every source file's name and text: written into each batch's metadata so
    /// the importer can tell which catalog cut it.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    pub fn table(&self, id: TableId) -> &Table {
        &self.tables[id.0 as usize]
    }

    pub fn table_id(&self, name: &str) -> Option<TableId> {
        self.table_ids.get(name).copied()
    }

    pub fn event_type(&self, name: &str) -> Option<&EventType> {
        self.events.get(name)
    }

    pub fn event_types(&self) -> impl Iterator<Item = &EventType> {
        self.events.values()
    }
}

#[cfg(test)]
mod tests;
