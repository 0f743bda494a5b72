//! Mapping: one event in, its rows per table out, as CSV ready for the batcher.
//!
//! The consumer calls [`Mapper::map`] for every user record it reads. An event either maps whole
//! or is rejected whole with a typed [`Rejection`] (it then goes to `rejected/` with that reason):
//! a half-mapped event never reaches a buffer, and nothing here panics on event data.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::catalog::{Catalog, ColumnSource, ColumnType, EnvelopeField, Epoch, TableId, ValueSource};
use crate::csv::RowWriter;
use crate::event::Envelope;
use crate::position::{Position, ShardId};
use crate::storable::{self, Unstorable};
use crate::time::Timestamp;

/// Why an event produced no rows. Rendered as one line for the `rejected/` area and the logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rejection {
    #[error("unknown event type {event_type:?}")]
    UnknownEventType { event_type: String },
    #[error("payload is not JSON: {message}")]
    PayloadNotJson { message: String },
    #[error("payload violates the schema of {event_type:?}: {}", errors.join("; "))]
    Schema { event_type: String, errors: Vec<String> },
    #[error("table {table:?}, column {column:?}: required value missing at {source_desc}")]
    MissingRequired {
        table: String,
        column: String,
        source_desc: String,
    },
    #[error("table {table:?}, column {column:?}: {reason}")]
    InvalidValue {
        table: String,
        column: String,
        reason: String,
    },
    #[error("table {table:?}: {pointer} is not an array to explode")]
    NotAnArray { table: String, pointer: String },
    /// A value no supported warehouse can store (see [`storable`](crate::storable)).
    #[error("table {table:?}, column {column:?}: the value {reason}")]
    Unstorable {
        table: String,
        column: String,
        reason: String,
    },
    #[error("table {table:?}: {reason}")]
    RowUnstorable { table: String, reason: String },
}

/// The rows one event became: CSV bytes for each row, tagged with its table. Reused across events
/// so that mapping does not allocate per row.
#[derive(Debug, Default)]
pub struct MappedRows {
    buf: Vec<u8>,
    rows: Vec<(TableId, usize, usize)>,
}

impl MappedRows {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.rows.clear();
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Each row's table and its CSV line (with the trailing newline).
    pub fn iter(&self) -> impl Iterator<Item = (TableId, &[u8])> {
        self.rows.iter().map(|&(t, s, e)| (t, &self.buf[s..e]))
    }
}

/// Maps events with a catalog.
#[derive(Debug, Clone, Copy)]
pub struct Mapper<'c> {
    catalog: &'c Catalog,
}

/// Where the record carrying an event sits: becomes the lineage columns.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    pub shard: &'a ShardId,
    pub position: &'a Position,
}

enum Input<'v> {
    Missing,
    Json(&'v Value),
    Str(&'v str),
    Time(Timestamp),
}

impl<'c> Mapper<'c> {
    pub fn new(catalog: &'c Catalog) -> Self {
        Mapper { catalog }
    }

    /// Maps `event` into `out` (cleared first). On a rejection `out` is left empty.
    pub fn map(&self, event: &Envelope, lineage: Lineage<'_>, out: &mut MappedRows) -> Result<(), Rejection> {
        out.clear();
        let result = self.map_into(event, lineage, out);
        if result.is_err() {
            out.clear();
        }
        result
    }

    fn map_into(
        &self,
        event: &Envelope,
        lineage: Lineage<'_>,
        out: &mut MappedRows,
    ) -> Result<(), Rejection> {
        let Some(def) = self.catalog.event_type(&event.event_type) else {
            return Err(Rejection::UnknownEventType {
                event_type: event.event_type.clone(),
            });
        };
        let payload: Value =
            serde_json::from_str(event.payload_json()).map_err(|e| Rejection::PayloadNotJson {
                message: e.to_string(),
            })?;
        if let Some(schema) = &def.schema
            && !schema.is_valid(&payload)
        {
            let errors = schema
                .iter_errors(&payload)
                .take(5)
                .map(|e| format!("at {:?}: {e}", e.instance_path().to_string()))
                .collect();
            return Err(Rejection::Schema {
                event_type: def.name.clone(),
                errors,
            });
        }
        let mut scratch = String::new();
        // The lineage fields are the same for every row of the event but the row index: encode
        // them once.
        let mut id_field = Vec::with_capacity(event.id.as_str().len() + 2);
        let mut w = RowWriter::new(&mut id_field);
        w.text(event.id.as_str());
        w.finish_fields();
        let mut lineage_fields = Vec::with_capacity(64);
        let mut w = RowWriter::new(&mut lineage_fields);
        w.plain_bytes(&event.received_at.to_iso_bytes());
        w.text(lineage.shard.as_str());
        w.plain(lineage.position.seq.as_str());
        w.int(i64::from(lineage.position.sub));
        w.finish_fields();
        // Row indexes count per table within the event, so (event id, row index) names a row even
        // when two outputs of one event type share a table.
        let mut next_index: Vec<(TableId, u64)> = Vec::with_capacity(def.outputs.len());
        for output in &def.outputs {
            let table = self.catalog.table(output.table);
            let items: Vec<Option<&Value>> = match &output.explode {
                None => vec![None],
                Some(p) => match p.resolve(&payload) {
                    Some(Value::Array(items)) => items.iter().map(Some).collect(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        return Err(Rejection::NotAnArray {
                            table: table.name.clone(),
                            pointer: p.to_string(),
                        });
                    }
                },
            };
            for item in items {
                let index = match next_index.iter_mut().find(|(t, _)| *t == output.table) {
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        next_index.push((output.table, 0));
                        0
                    }
                };
                let start = out.buf.len();
                let mut row = RowWriter::new(&mut out.buf);
                row.encoded(&id_field);
                row.int(index as i64);
                row.encoded(&lineage_fields);
                for col in &output.columns {
                    let input = resolve(col, event, &payload, item);
                    write_cell(&mut row, col, input, &mut scratch).map_err(|reason| match reason {
                        CellError::Missing => Rejection::MissingRequired {
                            table: table.name.clone(),
                            column: col.column.name.clone(),
                            source_desc: describe(&col.source),
                        },
                        CellError::Invalid(reason) => Rejection::InvalidValue {
                            table: table.name.clone(),
                            column: col.column.name.clone(),
                            reason,
                        },
                        CellError::Unstorable(why) => Rejection::Unstorable {
                            table: table.name.clone(),
                            column: col.column.name.clone(),
                            reason: why.to_string(),
                        },
                    })?;
                }
                row.finish();
                storable::row(out.buf.len() - start).map_err(|why| Rejection::RowUnstorable {
                    table: table.name.clone(),
                    reason: why.to_string(),
                })?;
                out.rows.push((output.table, start, out.buf.len()));
            }
        }
        Ok(())
    }
}

/// A value of an event that no supported warehouse could store, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnstorableValue {
    /// A JSON Pointer into the event as the client sent it (`/payload/items/3/sku`, `/source`).
    pub field: String,
    pub table: String,
    pub column: String,
    pub reason: Unstorable,
}

impl<'c> Mapper<'c> {
    /// Whether every value `event` could put in a column is storable, without parsing its
    /// payload: true only when that is certain — no `\u0000` escape in the payload (the only way
    /// JSON text holds a NUL), a payload short enough that no string or re-serialised JSON value
    /// taken from it can reach the length limit (a fourth of it: a number re-serialises at most a
    /// few times longer), envelope fields without NUL and times within range, and an event type
    /// whose columns take no doubles, timestamps or dates from the payload (those have ranges to
    /// check). When it is false,
    /// [`unstorable`](Self::unstorable) decides.
    pub fn surely_storable(&self, event: &Envelope) -> bool {
        let Some(def) = self.catalog.event_type(&event.event_type) else {
            return true;
        };
        let payload = event.payload_json().as_bytes();
        if payload.len() > storable::MAX_TEXT_BYTES / 4
            || memchr::memmem::find(payload, b"\\u0000").is_some()
            || event.source.contains('\0')
            || event.id.as_str().contains('\0')
            || event.occurred_at.is_some_and(|t| storable::timestamp(t).is_err())
        {
            return false;
        }
        def.outputs.iter().flat_map(|o| &o.columns).all(|col| {
            let ranged = matches!(
                col.column.ty,
                ColumnType::Double | ColumnType::Timestamp | ColumnType::Date
            );
            !ranged || matches!(col.source, ValueSource::Envelope(_))
        })
    }

    /// Every value of `event` that would land in a column and that no supported warehouse can
    /// store (at most `limit`), found by the very checks [`Mapper::map`] makes: what the producer
    /// refuses at the door. `payload` is the event's payload, parsed. Values that do not fit
    /// their column for other reasons (a missing field, a wrong type) are not reported here: the
    /// consumer rejects those with the event kept whole in `rejected/`, where a catalog fix can
    /// recover them.
    pub fn unstorable(&self, event: &Envelope, payload: &Value, limit: usize) -> Vec<UnstorableValue> {
        let mut found = Vec::new();
        let Some(def) = self.catalog.event_type(&event.event_type) else {
            return found;
        };
        let (mut scratch, mut cell) = (String::new(), Vec::new());
        for output in &def.outputs {
            let table = self.catalog.table(output.table);
            let items: Vec<(Option<usize>, Option<&Value>)> = match &output.explode {
                None => vec![(None, None)],
                Some(p) => match p.resolve(payload) {
                    Some(Value::Array(items)) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (Some(i), Some(v)))
                        .collect(),
                    _ => Vec::new(),
                },
            };
            for (index, item) in items {
                for col in &output.columns {
                    cell.clear();
                    let mut row = RowWriter::new(&mut cell);
                    let input = resolve(col, event, payload, item);
                    if let Err(CellError::Unstorable(reason)) = write_cell(&mut row, col, input, &mut scratch)
                    {
                        found.push(UnstorableValue {
                            field: field_of(&col.source, output.explode.as_ref(), index),
                            table: table.name.clone(),
                            column: col.column.name.clone(),
                            reason,
                        });
                        if found.len() >= limit {
                            return found;
                        }
                    }
                }
            }
        }
        found
    }
}

/// Where a column's value is in the event as sent.
fn field_of(source: &ValueSource, explode: Option<&crate::catalog::Pointer>, index: Option<usize>) -> String {
    match source {
        ValueSource::Payload(p) => format!("/payload{}", p.as_str()),
        ValueSource::Item(p) => format!(
            "/payload{}/{}{}",
            explode.map_or("", |e| e.as_str()),
            index.unwrap_or(0),
            p.as_str()
        ),
        ValueSource::Envelope(f) => match f {
            EnvelopeField::Id => "/id".into(),
            EnvelopeField::Type => "/type".into(),
            EnvelopeField::Source => "/source".into(),
            EnvelopeField::ReceivedAt => "/received_at".into(),
            EnvelopeField::OccurredAt => "/occurred_at".into(),
        },
    }
}

fn resolve<'v>(
    col: &ColumnSource,
    event: &'v Envelope,
    payload: &'v Value,
    item: Option<&'v Value>,
) -> Input<'v> {
    let from_json = |v: Option<&'v Value>| match v {
        None | Some(Value::Null) => Input::Missing,
        Some(v) => Input::Json(v),
    };
    match &col.source {
        ValueSource::Payload(p) => from_json(p.resolve(payload)),
        ValueSource::Item(p) => from_json(item.and_then(|i| p.resolve(i))),
        ValueSource::Envelope(field) => match field {
            EnvelopeField::Id => Input::Str(event.id.as_str()),
            EnvelopeField::Type => Input::Str(&event.event_type),
            EnvelopeField::Source => Input::Str(&event.source),
            EnvelopeField::ReceivedAt => Input::Time(event.received_at),
            EnvelopeField::OccurredAt => event.occurred_at.map_or(Input::Missing, Input::Time),
        },
    }
}

fn describe(source: &ValueSource) -> String {
    match source {
        ValueSource::Payload(p) => format!("payload pointer {:?}", p.as_str()),
        ValueSource::Item(p) => format!("item pointer {:?}", p.as_str()),
        ValueSource::Envelope(f) => format!("envelope field {f:?}"),
    }
}

enum CellError {
    Missing,
    Invalid(String),
    Unstorable(Unstorable),
}

impl From<Unstorable> for CellError {
    fn from(u: Unstorable) -> Self {
        CellError::Unstorable(u)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn write_cell(
    row: &mut RowWriter<'_>,
    col: &ColumnSource,
    input: Input<'_>,
    scratch: &mut String,
) -> Result<(), CellError> {
    let ty = col.column.ty;
    let wrong = |found: &str| CellError::Invalid(format!("expected {ty}, found {found}"));
    match input {
        Input::Missing if col.column.nullable => {
            row.null();
            Ok(())
        }
        Input::Missing => Err(CellError::Missing),
        Input::Time(t) => match ty {
            ColumnType::Timestamp | ColumnType::Text => {
                storable::timestamp(t)?;
                row.plain_bytes(&t.to_iso_bytes());
                Ok(())
            }
            ColumnType::Date => {
                storable::timestamp(t)?;
                row.plain(&t.format_date());
                Ok(())
            }
            _ => Err(wrong("a timestamp")),
        },
        Input::Str(s) => write_str(row, ty, s, scratch).map_err(|e| e.unwrap_or_else(|| wrong("a string"))),
        Input::Json(v) => match (ty, v) {
            (ColumnType::Json, v) => {
                scratch.clear();
                write!(scratch, "{v}").expect("writing to a String cannot fail");
                storable::json(v, scratch.len())?;
                row.text(scratch);
                Ok(())
            }
            (_, Value::String(s)) => {
                write_str(row, ty, s, scratch).map_err(|e| e.unwrap_or_else(|| wrong("a string")))
            }
            (ColumnType::Text, Value::Number(n)) => {
                row.plain_fmt(format_args!("{n}"));
                Ok(())
            }
            (ColumnType::Text | ColumnType::Boolean, Value::Bool(b)) => {
                row.plain(if *b { "true" } else { "false" });
                Ok(())
            }
            (ColumnType::Bigint, Value::Number(n)) => match n.as_i64() {
                Some(i) => {
                    row.int(i);
                    Ok(())
                }
                None => Err(CellError::Invalid(format!(
                    "expected bigint, found {n} (not a 64-bit integer)"
                ))),
            },
            (ColumnType::Double, Value::Number(n)) => {
                let f = n.as_f64().filter(|f| f.is_finite());
                match f {
                    Some(f) => {
                        storable::double(f)?;
                        row.float(f);
                        Ok(())
                    }
                    None => Err(CellError::Invalid(format!(
                        "expected double, found {n} (out of range)"
                    ))),
                }
            }
            (ColumnType::Timestamp, Value::Number(n)) => {
                let micros = match (col.epoch, n.as_i64()) {
                    (Some(Epoch::Seconds), Some(s)) => s.checked_mul(1_000_000),
                    (Some(Epoch::Millis), Some(ms)) => ms.checked_mul(1_000),
                    (None, _) => {
                        return Err(CellError::Invalid(
                            "expected an RFC 3339 timestamp, found a number (set `epoch` on the column to accept one)"
                                .into(),
                        ));
                    }
                    _ => None,
                };
                match micros {
                    Some(m) => {
                        let t = Timestamp::from_micros(m);
                        storable::timestamp(t)?;
                        row.plain_bytes(&t.to_iso_bytes());
                        Ok(())
                    }
                    None => Err(CellError::Invalid(format!(
                        "expected timestamp, found {n} (out of range)"
                    ))),
                }
            }
            (_, v) => Err(wrong(kind(v))),
        },
    }
}

/// A string into a column; `Err(None)` means "wrong type" for the caller to word.
fn write_str(
    row: &mut RowWriter<'_>,
    ty: ColumnType,
    s: &str,
    _scratch: &mut String,
) -> Result<(), Option<CellError>> {
    let invalid = |what: &str| Some(CellError::Invalid(format!("expected {ty}, found {s:?} ({what})")));
    let unstorable = |u: Unstorable| Some(CellError::Unstorable(u));
    match ty {
        ColumnType::Text => {
            storable::text(s).map_err(unstorable)?;
            row.text(s);
        }
        ColumnType::Bigint => match s.parse::<i64>() {
            Ok(i) => row.int(i),
            Err(_) => return Err(invalid("not a 64-bit integer")),
        },
        ColumnType::Double => match s.parse::<f64>() {
            Ok(f) if f.is_finite() => {
                storable::double(f).map_err(unstorable)?;
                row.float(f);
            }
            _ => return Err(invalid("not a finite number")),
        },
        ColumnType::Boolean => match s {
            "true" => row.plain("true"),
            "false" => row.plain("false"),
            _ => return Err(invalid("not true or false")),
        },
        ColumnType::Timestamp => match Timestamp::parse_rfc3339(s) {
            Ok(t) => {
                storable::timestamp(t).map_err(unstorable)?;
                row.plain_bytes(&t.to_iso_bytes());
            }
            Err(_) => return Err(invalid("not RFC 3339")),
        },
        ColumnType::Date => {
            let date = (s.len() == 10)
                .then(|| time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok())
                .flatten();
            if let Some(date) = date {
                storable::year(date.year(), s).map_err(unstorable)?;
                row.plain(s);
            } else if let Ok(t) = Timestamp::parse_rfc3339(s) {
                storable::timestamp(t).map_err(unstorable)?;
                row.plain(&t.format_date());
            } else {
                return Err(invalid("not YYYY-MM-DD or RFC 3339"));
            }
        }
        ColumnType::Json => return Err(None),
    }
    Ok(())
}
