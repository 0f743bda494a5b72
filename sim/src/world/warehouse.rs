//! A transactional warehouse: tables, the load manifest, dedupe and upserts, all-or-nothing; with
//! transient errors, restarts that roll back the open transaction, commits whose reply is lost,
//! slow loads, importer crashes just before or just after a commit, and rows it refuses (as
//! PostgreSQL refuses a value the mapper could not know about), naming the row or not.
//!
//! A run draws whether it reads the batches from the store itself (as Redshift's COPY does) or
//! takes the bytes the importer read.
//!
//! Tables are multisets, as a COPY target is: the dedupe on `(_event_id, _row_index)` is part of
//! the load statement, and a row that gets in twice is there twice for the checks to see.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use microbatch_core::catalog::{Catalog, Mode};
use microbatch_core::csv::parse_rows_as;
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use microbatch_core::ports::{Clock, LoadOutcome, LoadRequest, ObjectReader, Warehouse};
use microbatch_core::time::Timestamp;

use super::{MemStore, lock};
use crate::ctx::{Ctx, Fault, Sabotage};

pub type Row = Vec<Option<String>>;
/// Which of two upserts of one key wins: (`_received_at`, sequence length, sequence, sub).
pub type Order = (String, usize, String, i64);

/// The position of the lineage columns in every table (they come first, in this order).
pub const EVENT_ID: usize = 0;
pub const ROW_INDEX: usize = 1;
pub const RECEIVED_AT: usize = 2;
pub const SEQUENCE: usize = 4;
pub const SUB_SEQUENCE: usize = 5;

/// The upsert order of a row in table column order.
pub fn order_of(row: &Row) -> Order {
    let seq = row[SEQUENCE].clone().unwrap_or_default();
    (
        row[RECEIVED_AT].clone().unwrap_or_default(),
        seq.len(),
        seq,
        num(&row[SUB_SEQUENCE]),
    )
}

fn num(v: &Option<String>) -> i64 {
    v.as_deref().unwrap_or("0").parse::<i64>().unwrap_or(0)
}

#[derive(Debug, Default, Clone)]
pub struct TableData {
    /// Append tables: every row, in insert order.
    pub rows: Vec<Row>,
    index: BTreeMap<(String, i64), usize>,
    /// Upsert tables: by key values; the row and its order.
    pub latest: BTreeMap<Vec<Option<String>>, (Order, Row)>,
}

#[derive(Debug, Default)]
struct State {
    tables: BTreeMap<String, TableData>,
    /// The manifest table: `(key, sha256)` rows, as many as were inserted.
    manifest: BTreeMap<(String, String), u32>,
    /// When each event's rows were first all queryable (the last first insert of its rows).
    visible: BTreeMap<String, Timestamp>,
    down_until: Option<Timestamp>,
    injected: BTreeMap<String, u32>,
    commits: u64,
}

/// An in-memory warehouse.
#[derive(Debug)]
pub struct MemWarehouse {
    ctx: Arc<Ctx>,
    state: Mutex<State>,
    /// Where it reads batches from when it does so itself.
    store: Option<Arc<MemStore>>,
    /// Whether a refusal names the row.
    names_rows: bool,
}

/// Whether the warehouse refuses this row (when the run refuses rows at all): a fixed property
/// of the row, so every attempt refuses it again, and the checks can tell which rows it is.
pub fn refuses(table: &str, event_id: &str, row_index: i64) -> bool {
    let h = table
        .bytes()
        .chain([0])
        .chain(event_id.bytes())
        .chain(row_index.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    h % 23 == 0
}

fn bad(message: String) -> WarehouseError {
    WarehouseError::with_sqlstate("22P04", message)
}

/// Injected failures per key stop at this many, so a transient fault stays transient (the
/// importer gives up after its attempts, which would turn a healthy batch into a dead letter).
const MAX_INJECTED_PER_KEY: u32 = 4;

impl MemWarehouse {
    /// A warehouse loading the bytes it is given, or (`store` given) reading them itself.
    pub fn new(ctx: Arc<Ctx>, store: Option<Arc<MemStore>>, names_rows: bool) -> Self {
        MemWarehouse {
            ctx,
            state: Mutex::new(State::default()),
            store,
            names_rows,
        }
    }

    /// Whether the run refuses rows.
    pub fn refuses_rows(&self) -> bool {
        self.ctx.plan.is_on(Fault::RefusedRow)
    }

    /// A batch's rows as the COPY reads them: from the request, or from the store.
    async fn body(&self, req: &LoadRequest<'_>) -> Result<Vec<u8>, WarehouseError> {
        if let Some(body) = req.body {
            return Ok(body.to_vec());
        }
        let Some(store) = &self.store else {
            return Err(bad(
                "a load without its bytes for a warehouse that needs them".into()
            ));
        };
        let object = store
            .get(req.location)
            .await
            .map_err(|e| {
                WarehouseError::new(
                    WarehouseErrorKind::Io,
                    format!("COPY could not read {}: {e}", req.location),
                )
            })?
            .ok_or_else(|| bad(format!("COPY: {} does not exist", req.location)))?;
        let csv = req
            .metadata
            .compression
            .decompress(&object.body, req.metadata.csv_bytes)
            .map_err(|e| bad(format!("COPY: {e}")))?;
        // What a warehouse reading the object checks instead of the checksum: the rows its COPY
        // read against the metadata (Redshift: `pg_last_copy_count()`).
        let rows = parse_rows_as(&csv, req.metadata.csv)
            .map_err(|e| bad(format!("COPY: {e}")))?
            .len() as u64;
        if rows != req.metadata.row_count {
            return Err(bad(format!(
                "row count mismatch: COPY read {rows} rows, the metadata says {}",
                req.metadata.row_count
            )));
        }
        Ok(csv)
    }

    pub fn tables(&self) -> BTreeMap<String, TableData> {
        lock(&self.state).tables.clone()
    }

    /// Rows of a table, each as its column values in table order.
    pub fn rows(&self, table: &str) -> Vec<Row> {
        let s = lock(&self.state);
        let Some(t) = s.tables.get(table) else {
            return Vec::new();
        };
        t.rows
            .iter()
            .cloned()
            .chain(t.latest.values().map(|(_, r)| r.clone()))
            .collect()
    }

    pub fn manifest(&self) -> BTreeMap<(String, String), u32> {
        lock(&self.state).manifest.clone()
    }

    pub fn manifest_len(&self) -> usize {
        lock(&self.state).manifest.values().map(|&n| n as usize).sum()
    }

    pub fn visible(&self) -> BTreeMap<String, Timestamp> {
        lock(&self.state).visible.clone()
    }

    pub fn commits(&self) -> u64 {
        lock(&self.state).commits
    }

    /// A fault for a load of `keys` (one transaction), unless one of them has had its share;
    /// each of them is charged with it.
    fn inject(&self, keys: &[&str], fault: Fault) -> bool {
        let mut s = lock(&self.state);
        if keys
            .iter()
            .any(|k| s.injected.get(*k).copied().unwrap_or(0) >= MAX_INJECTED_PER_KEY)
        {
            return false;
        }
        drop(s);
        if !self.ctx.chance(fault) {
            return false;
        }
        s = lock(&self.state);
        for key in keys {
            *s.injected.entry((*key).to_owned()).or_default() += 1;
        }
        true
    }

    fn check_up(&self, key: &str) -> Result<(), WarehouseError> {
        let now = self.ctx.clock.now();
        let down = {
            let s = lock(&self.state);
            // A batch that has had its share of injected failures gets through an outage too:
            // the importer gives up after its attempts, and an outage longer than its whole
            // retry budget would dead-letter a healthy batch by design, not by a bug.
            s.down_until.is_some_and(|t| now < t)
                && s.injected.get(key).copied().unwrap_or(0) < MAX_INJECTED_PER_KEY
        };
        if down {
            *lock(&self.state).injected.entry(key.to_owned()).or_default() += 1;
            return Err(WarehouseError::new(
                WarehouseErrorKind::Connection,
                "connection refused (the database system is starting up)",
            ));
        }
        if self.inject(&[key], Fault::WarehouseTransient) {
            return Err(WarehouseError::with_sqlstate(
                "40001",
                "could not serialize access due to concurrent update",
            ));
        }
        Ok(())
    }

    /// Applies a group of loads as one transaction: every table must be there before any is
    /// written.
    fn apply_all(
        &self,
        requests: &[LoadRequest<'_>],
        staged: Vec<Vec<Row>>,
    ) -> Result<Vec<LoadOutcome>, WarehouseError> {
        {
            let s = lock(&self.state);
            if let Some(missing) = requests.iter().find(|r| !s.tables.contains_key(&r.table.name)) {
                return Err(WarehouseError::new(
                    WarehouseErrorKind::Database,
                    format!("relation {} does not exist", missing.table.name),
                ));
            }
        }
        requests
            .iter()
            .zip(staged)
            .map(|(req, rows)| self.apply(req, rows))
            .collect()
    }

    /// Applies one load of a transaction; the outcome and how many rows were new.
    fn apply(&self, req: &LoadRequest<'_>, staged: Vec<Row>) -> Result<LoadOutcome, WarehouseError> {
        let now = self.ctx.clock.now();
        let manifest_key = (req.key().to_owned(), req.metadata.sha256.clone());
        let table_cols: Vec<&str> = req.table.column_names().collect();
        let mut s = lock(&self.state);
        if self.ctx.sabotage != Sabotage::SkipManifestCheck && s.manifest.contains_key(&manifest_key) {
            return Ok(LoadOutcome::AlreadyLoaded);
        }
        let Some(mut table) = s.tables.remove(&req.table.name) else {
            return Err(WarehouseError::new(
                WarehouseErrorKind::Database,
                format!("relation {} does not exist", req.table.name),
            ));
        };
        let mut inserted = 0;
        let mut duplicates = Vec::new();
        let mut newly: Vec<String> = Vec::new();
        for row in staged {
            let event = row[EVENT_ID].clone().unwrap_or_default();
            match &req.table.mode {
                Mode::Append => {
                    let k = (event.clone(), num(&row[ROW_INDEX]));
                    if let Some(&at) = table.index.get(&k) {
                        if self.ctx.sabotage == Sabotage::SkipRowDedupe {
                            duplicates.push(format!(
                                "{}[{}] row {:?} (was row {at})",
                                req.table.name, k.1, k.0
                            ));
                        } else {
                            continue;
                        }
                    }
                    table.index.insert(k, table.rows.len());
                    table.rows.push(row);
                    inserted += 1;
                    newly.push(event);
                }
                Mode::Upsert { key } => {
                    let k: Vec<Option<String>> = key
                        .iter()
                        .map(|c| row[table_cols.iter().position(|t| t == c).expect("key column")].clone())
                        .collect();
                    let order = order_of(&row);
                    if table.latest.get(&k).is_none_or(|(o, _)| order > *o) {
                        table.latest.insert(k, (order, row));
                        inserted += 1;
                        newly.push(event);
                    }
                }
            }
        }
        s.tables.insert(req.table.name.clone(), table);
        *s.manifest.entry(manifest_key.clone()).or_default() += 1;
        let twice = s.manifest[&manifest_key] > 1;
        for e in newly {
            let v = s.visible.entry(e).or_insert(now);
            *v = (*v).max(now);
        }
        s.commits += 1;
        drop(s);
        if twice {
            self.ctx.violation(format!(
                "load manifest: {} committed twice (sha256 {})",
                manifest_key.0, manifest_key.1
            ));
        }
        for d in duplicates {
            self.ctx.violation(format!("exactly once: row loaded twice: {d}"));
        }
        Ok(LoadOutcome::Loaded { inserted })
    }
}

impl MemWarehouse {
    fn refusing(&self) -> Option<(bool, bool)> {
        self.refuses_rows()
            .then_some((self.names_rows, self.ctx.sabotage == Sabotage::RefuseWholeBatch))
    }
}

impl Warehouse for MemWarehouse {
    fn needs_body(&self) -> bool {
        self.store.is_none()
    }

    async fn probe(
        &self,
        request: LoadRequest<'_>,
        rows: std::ops::Range<u64>,
    ) -> Result<(), WarehouseError> {
        self.ctx.latency(1, 20).await;
        self.check_up(request.key())?;
        let body = self.body(&request).await?;
        stage(&self.ctx, &request, &body, Some(&rows), self.refusing()).map(|_| ())
    }

    async fn migrate(&self, catalog: &Catalog) -> Result<(), WarehouseError> {
        let mut s = lock(&self.state);
        for t in catalog.tables() {
            s.tables.entry(t.name.clone()).or_default();
        }
        Ok(())
    }

    async fn is_loaded(&self, key: &str, sha256: &str) -> Result<bool, WarehouseError> {
        self.ctx.latency(1, 20).await;
        self.check_up(key)?;
        Ok(lock(&self.state)
            .manifest
            .contains_key(&(key.to_owned(), sha256.to_owned())))
    }

    async fn load_all(&self, requests: &[LoadRequest<'_>]) -> Result<Vec<LoadOutcome>, WarehouseError> {
        self.ctx.latency(1, 20).await;
        let keys: Vec<&str> = requests.iter().map(|r| r.key()).collect();
        for key in &keys {
            self.check_up(key)?;
        }
        let mut staged = Vec::with_capacity(requests.len());
        for req in requests {
            let body = self.body(req).await?;
            staged.push(stage(&self.ctx, req, &body, None, self.refusing())?);
        }
        // The transaction runs for a while; a crash or a restart meanwhile rolls it back.
        if self.ctx.chance(Fault::ImporterCrashBeforeCommit) {
            self.ctx.crash_current();
        }
        if self.ctx.chance(Fault::WarehouseSlowLoad) {
            self.ctx.latency(2_000, 20_000).await;
        } else {
            self.ctx.latency(5, 80).await;
        }
        if self.inject(&keys, Fault::WarehouseRestart) {
            let until = self.ctx.clock.now().saturating_add(self.ctx.millis(500, 5_000));
            lock(&self.state).down_until = Some(until);
            return Err(WarehouseError::new(
                WarehouseErrorKind::Connection,
                "server closed the connection unexpectedly",
            ));
        }
        for key in &keys {
            self.check_up(key)?;
        }
        let outcomes = self.apply_all(requests, staged)?;
        if self.ctx.chance(Fault::ImporterCrashAfterCommit) {
            self.ctx.crash_current();
            self.ctx.latency(1, 10).await;
        }
        if self.inject(&keys, Fault::WarehouseCommitLost) {
            self.ctx.latency(100, 3_000).await;
            return Err(WarehouseError::new(
                WarehouseErrorKind::Timeout,
                "statement timeout waiting for the reply",
            ));
        }
        Ok(outcomes)
    }
}

/// A batch's rows in its table's column order, as the COPY would read them: without the rows
/// it skips, within `only` (a probe), and refusing the rows [`refuses`] names when `refusing`.
fn stage(
    ctx: &Ctx,
    req: &LoadRequest<'_>,
    body: &[u8],
    only: Option<&std::ops::Range<u64>>,
    refusing: Option<(bool, bool)>,
) -> Result<Vec<Row>, WarehouseError> {
    let rows = parse_rows_as(body, req.metadata.csv).map_err(|e| bad(e.to_string()))?;
    // Map the batch's columns onto the table's, by name.
    let table_cols: Vec<&str> = req.table.column_names().collect();
    let index: Vec<usize> = req
        .columns
        .iter()
        .map(|c| {
            table_cols
                .iter()
                .position(|t| t == c)
                .ok_or_else(|| bad(format!("no column {c}")))
        })
        .collect::<Result<_, _>>()?;
    let mut staged = Vec::with_capacity(rows.len());
    for (n, r) in rows.into_iter().enumerate() {
        let n = n as u64;
        if req.skip_rows.contains(&n) || only.is_some_and(|o| !o.contains(&n)) {
            continue;
        }
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
        if let Some((names_rows, whole_batch)) = refusing
            && refuses(
                &req.table.name,
                row[EVENT_ID].as_deref().unwrap_or_default(),
                num(&row[ROW_INDEX]),
            )
        {
            ctx.count(Fault::RefusedRow);
            if whole_batch {
                // The sabotage: a refused row reported as if the whole file were bad.
                return Err(bad("COPY: bad file format".into()));
            }
            let e = WarehouseError::with_sqlstate(
                "22P02",
                format!("invalid input syntax for the column (row {n} refused by the simulation)"),
            );
            return Err(if names_rows { e.at_row(n) } else { e });
        }
        staged.push(row);
    }
    Ok(staged)
}
