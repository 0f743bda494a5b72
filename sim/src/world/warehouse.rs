//! A transactional warehouse: tables, the load manifest, dedupe and upserts, all-or-nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use microbatch_core::catalog::{Catalog, Mode};
use microbatch_core::csv::parse_rows;
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use microbatch_core::ports::{LoadOutcome, LoadRequest, Warehouse};

use super::lock;

type Row = Vec<Option<String>>;
/// Which of two upserts of one key wins: (`_received_at`, sequence length, sequence, sub).
type Order = (String, usize, String, i64);

#[derive(Debug, Default)]
struct Table {
    /// Append tables: by (`_event_id`, `_row_index`).
    rows: BTreeMap<(String, i64), Row>,
    /// Upsert tables: by key values; the row and its (`_received_at`, sequence, sub) order.
    latest: BTreeMap<Vec<Option<String>>, (Order, Row)>,
}

#[derive(Debug, Default)]
struct State {
    tables: BTreeMap<String, Table>,
    manifest: BTreeSet<(String, String)>,
}

/// An in-memory warehouse.
#[derive(Debug, Default)]
pub struct MemWarehouse {
    state: Mutex<State>,
}

impl MemWarehouse {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows of a table, in key order, each as its column values in table order.
    pub fn rows(&self, table: &str) -> Vec<Row> {
        let s = lock(&self.state);
        let Some(t) = s.tables.get(table) else {
            return Vec::new();
        };
        t.rows
            .values()
            .cloned()
            .chain(t.latest.values().map(|(_, r)| r.clone()))
            .collect()
    }

    pub fn manifest_len(&self) -> usize {
        lock(&self.state).manifest.len()
    }
}

fn bad(message: String) -> WarehouseError {
    WarehouseError::with_sqlstate("22P04", message)
}

impl Warehouse for MemWarehouse {
    async fn migrate(&self, catalog: &Catalog) -> Result<(), WarehouseError> {
        let mut s = lock(&self.state);
        for t in catalog.tables() {
            s.tables.entry(t.name.clone()).or_default();
        }
        Ok(())
    }

    async fn is_loaded(&self, key: &str, sha256: &str) -> Result<bool, WarehouseError> {
        Ok(lock(&self.state)
            .manifest
            .contains(&(key.to_owned(), sha256.to_owned())))
    }

    async fn load(&self, req: LoadRequest<'_>) -> Result<LoadOutcome, WarehouseError> {
        let manifest_key = (req.key.to_owned(), req.metadata.sha256.clone());
        let rows = parse_rows(req.body).map_err(|e| bad(e.to_string()))?;
        // Map the batch's columns onto the table's, by name.
        let table_cols: Vec<&str> = req.table.column_names().collect();
        let index: Vec<usize> = req
            .metadata
            .columns
            .iter()
            .map(|c| {
                table_cols
                    .iter()
                    .position(|t| t == c)
                    .ok_or_else(|| bad(format!("no column {c}")))
            })
            .collect::<Result<_, _>>()?;
        let col = |name: &str| {
            table_cols
                .iter()
                .position(|t| *t == name)
                .expect("lineage column")
        };
        let (ev, ri, ra, sq, sub) = (
            col("_event_id"),
            col("_row_index"),
            col("_received_at"),
            col("_sequence"),
            col("_sub_sequence"),
        );
        let mut s = lock(&self.state);
        if s.manifest.contains(&manifest_key) {
            return Ok(LoadOutcome::AlreadyLoaded);
        }
        let mut staged = Vec::with_capacity(rows.len());
        for r in rows {
            if r.len() != index.len() {
                return Err(bad(format!(
                    "row has {} fields, expected {}",
                    r.len(),
                    index.len()
                )));
            }
            let mut row = vec![None; table_cols.len()];
            for (v, &i) in r.into_iter().zip(&index) {
                row[i] = v;
            }
            staged.push(row);
        }
        let table = s.tables.get_mut(&req.table.name).ok_or_else(|| {
            WarehouseError::new(
                WarehouseErrorKind::Database,
                format!("relation {} does not exist", req.table.name),
            )
        })?;
        let mut inserted = 0;
        let num = |v: &Option<String>| v.as_deref().unwrap_or("0").parse::<i64>().unwrap_or(0);
        for row in staged {
            match &req.table.mode {
                Mode::Append => {
                    let k = (row[ev].clone().unwrap_or_default(), num(&row[ri]));
                    if let std::collections::btree_map::Entry::Vacant(e) = table.rows.entry(k) {
                        e.insert(row);
                        inserted += 1;
                    }
                }
                Mode::Upsert { key } => {
                    let k: Vec<Option<String>> = key.iter().map(|c| row[col(c)].clone()).collect();
                    let seq = row[sq].clone().unwrap_or_default();
                    let order = (
                        row[ra].clone().unwrap_or_default(),
                        seq.len(),
                        seq,
                        num(&row[sub]),
                    );
                    let newer = table.latest.get(&k).is_none_or(|(o, _)| order > *o);
                    if newer {
                        table.latest.insert(k, (order, row));
                        inserted += 1;
                    }
                }
            }
        }
        s.manifest.insert(manifest_key);
        Ok(LoadOutcome::Loaded { inserted })
    }
}
