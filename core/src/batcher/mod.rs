//! The batcher: rows in, batches out, one buffer per table and shard.
//!
//! The consumer adds each mapped row with [`Batcher::add`] and calls [`Batcher::tick`] when the
//! next deadline passes; both return the batches to write. A buffer is cut when its
//! [`BatchPolicy`] says so (rows, bytes, age), and early when the memory budget across all
//! buffers would otherwise be exceeded, oldest buffer first (contract 5).
//!
//! Buffers are per table *and shard* so that a batch names exactly one shard's sequence range:
//! its object key then determines its content, a replay after a crash rewrites the same key with
//! the same bytes, and a lost lease drains just that shard.

mod batch;
mod policy;

use std::collections::HashMap;
use std::sync::Arc;

pub use batch::Batch;
pub use policy::{BatchPolicy, FlushReason, PolicyError};

use crate::batch::columns_digest;
use crate::catalog::{Catalog, TableId};
use crate::position::{Position, ShardId};
use crate::time::Timestamp;

#[derive(Debug)]
struct TableInfo {
    name: Arc<str>,
    columns: Arc<[String]>,
    columns_sha256: Arc<str>,
}

#[derive(Debug)]
struct Buffer {
    data: Vec<u8>,
    rows: usize,
    first: Position,
    /// The ordinal of the buffer's first row among its position's rows for this table (non-zero
    /// when an earlier buffer was cut between rows of that position).
    first_row: u32,
    /// The ordinal of the last row among its position's rows.
    last_row: u32,
    last: Position,
    first_received_at: Timestamp,
    min_received_at: Timestamp,
    max_received_at: Timestamp,
    opened_at: Timestamp,
}

/// What [`Batcher::add`] did.
/// One row being added, with its ordinal among its position's rows for its table.
struct Row<'a> {
    position: &'a Position,
    ordinal: u32,
    received_at: Timestamp,
    bytes: &'a [u8],
}

#[derive(Debug, Default)]
pub struct Added {
    /// The row opened a new buffer (or went out alone): the checkpoint tracker must hold its
    /// position until the batch that carries it is durable.
    pub opened: bool,
    /// Batches cut by this add, to be written.
    pub flushed: Vec<Batch>,
}

/// Per-table, per-shard row buffers under one memory budget.
#[derive(Debug)]
pub struct Batcher {
    policy: BatchPolicy,
    tables: Vec<TableInfo>,
    catalog_version: Arc<str>,
    buffers: HashMap<(TableId, ShardId), Buffer>,
    /// Per table and shard: the position of the last row added and how many rows of that
    /// position were added, across cuts. One event can make several rows of one table (an
    /// exploded array), and a cut between them must not give two batches the same key.
    cursors: HashMap<(TableId, ShardId), (Position, u32)>,
    /// Sum of the buffers' allocated capacity.
    allocated: usize,
}

impl Batcher {
    pub fn new(policy: BatchPolicy, catalog: &Catalog) -> Result<Self, PolicyError> {
        policy.validate()?;
        let tables = catalog
            .tables()
            .iter()
            .map(|t| {
                let columns: Arc<[String]> = t.column_names().map(str::to_owned).collect();
                TableInfo {
                    name: t.name.as_str().into(),
                    columns_sha256: columns_digest(&columns).into(),
                    columns,
                }
            })
            .collect();
        Ok(Batcher {
            policy,
            tables,
            catalog_version: catalog.version().into(),
            buffers: HashMap::new(),
            cursors: HashMap::new(),
            allocated: 0,
        })
    }

    pub fn policy(&self) -> &BatchPolicy {
        &self.policy
    }

    /// Bytes allocated by all buffers now; never above the budget.
    pub fn allocated_bytes(&self) -> usize {
        self.allocated
    }

    /// Rows buffered now, across all tables and shards.
    pub fn buffered_rows(&self) -> usize {
        self.buffers.values().map(|b| b.rows).sum()
    }

    /// Adds one CSV row of `table` from the record at `position` in `shard`.
    pub fn add(
        &mut self,
        table: TableId,
        shard: &ShardId,
        position: &Position,
        received_at: Timestamp,
        row: &[u8],
        now: Timestamp,
    ) -> Added {
        let key = (table, shard.clone());
        // The row's ordinal among the rows of its position for this table.
        let ordinal = match self.cursors.get_mut(&key) {
            Some((p, n)) if p == position => {
                *n += 1;
                *n - 1
            }
            _ => {
                self.cursors.insert(key.clone(), (position.clone(), 1));
                0
            }
        };
        let row = Row {
            position,
            ordinal,
            received_at,
            bytes: row,
        };
        self.add_row(key, &row, now, Added::default())
    }

    fn add_row(&mut self, key: (TableId, ShardId), row: &Row<'_>, now: Timestamp, mut added: Added) -> Added {
        // A cut made now, before the row is added, falls between two rows of the row's record
        // if the buffer cut ends with that record.
        let cut_at = Some((&key.1, row.position));
        if row.bytes.len() > self.policy.max_bytes {
            // Too big for any buffer: it goes out alone, so no buffer ever outgrows max_bytes.
            let mut data = Vec::with_capacity(row.bytes.len());
            data.extend_from_slice(row.bytes);
            let alone = Buffer {
                data,
                rows: 1,
                first: row.position.clone(),
                first_row: row.ordinal,
                last: row.position.clone(),
                last_row: row.ordinal,
                first_received_at: row.received_at,
                min_received_at: row.received_at,
                max_received_at: row.received_at,
                opened_at: now,
            };
            added.opened = true;
            added
                .flushed
                .push(self.seal(key.0, key.1.clone(), alone, FlushReason::Oversize, cut_at));
            return added;
        }
        // A row that would push its buffer past max_bytes closes the buffer first.
        if let Some(buf) = self.buffers.get(&key)
            && buf.data.len() + row.bytes.len() > self.policy.max_bytes
        {
            added
                .flushed
                .push(self.flush_key(&key, FlushReason::Bytes, cut_at));
        }
        let (cap, len) = self
            .buffers
            .get(&key)
            .map_or((0, 0), |b| (b.data.capacity(), b.data.len()));
        let new_cap = self.policy.grow_to(cap, len + row.bytes.len());
        let growth = new_cap - cap;
        // Make room under the budget, oldest buffers first, before allocating.
        while self.allocated + growth > self.policy.budget_bytes {
            let Some(victim) = self.oldest_other_than(&key) else {
                break;
            };
            added
                .flushed
                .push(self.flush_key(&victim, FlushReason::Budget, cut_at));
        }
        if self.allocated + growth > self.policy.budget_bytes && self.buffers.contains_key(&key) {
            // Only this buffer is left and it cannot grow: cut it and start afresh.
            added
                .flushed
                .push(self.flush_key(&key, FlushReason::Budget, cut_at));
            return self.add_row(key, row, now, added);
        }
        let buf = self.buffers.entry(key.clone()).or_insert_with(|| {
            added.opened = true;
            Buffer {
                data: Vec::new(),
                rows: 0,
                first: row.position.clone(),
                first_row: row.ordinal,
                last: row.position.clone(),
                last_row: row.ordinal,
                first_received_at: row.received_at,
                min_received_at: row.received_at,
                max_received_at: row.received_at,
                opened_at: now,
            }
        });
        if growth > 0 {
            buf.data.reserve_exact(new_cap - buf.data.len());
        }
        self.allocated += buf.data.capacity() - cap;
        buf.data.extend_from_slice(row.bytes);
        buf.rows += 1;
        buf.last = row.position.clone();
        buf.last_row = row.ordinal;
        buf.min_received_at = buf.min_received_at.min(row.received_at);
        buf.max_received_at = buf.max_received_at.max(row.received_at);
        if let Some(reason) = self.policy.due(buf.rows, buf.data.len(), buf.opened_at, now)
            && reason != FlushReason::Age
        {
            // Whether more rows of this record follow is not known here; if they do, the next
            // batch's key says it starts inside the record, which keeps the two apart.
            added.flushed.push(self.flush_key(&key, reason, None));
        }
        added
    }

    /// Cuts every buffer older than `max_age`.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Batch> {
        let due: Vec<(TableId, ShardId)> = self
            .buffers
            .iter()
            .filter(|(_, b)| self.policy.due(b.rows, b.data.len(), b.opened_at, now).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Batch> = due
            .iter()
            .map(|k| self.flush_key(k, FlushReason::Age, None))
            .collect();
        out.sort_by(|a, b| (a.opened_at, a.table_id, &a.shard).cmp(&(b.opened_at, b.table_id, &b.shard)));
        out
    }

    /// When the oldest buffer falls due, if any is open: the driver sleeps until then.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.buffers
            .values()
            .map(|b| b.opened_at.saturating_add(self.policy.max_age))
            .min()
    }

    /// Cuts every buffer (shutdown).
    pub fn flush_all(&mut self) -> Vec<Batch> {
        self.flush_where(|_| true)
    }

    /// Cuts every buffer of one shard (the shard is being handed over or has ended).
    pub fn flush_shard(&mut self, shard: &ShardId) -> Vec<Batch> {
        self.flush_where(|s| s == shard)
    }

    /// Drops one shard's buffered rows without writing them: its lease was lost, so another
    /// worker will read them again from the last checkpoint.
    pub fn discard_shard(&mut self, shard: &ShardId) -> usize {
        self.cursors.retain(|(_, s), _| s != shard);
        let keys: Vec<_> = self.buffers.keys().filter(|(_, s)| s == shard).cloned().collect();
        let mut rows = 0;
        for k in keys {
            if let Some(b) = self.buffers.remove(&k) {
                self.allocated -= b.data.capacity();
                rows += b.rows;
            }
        }
        rows
    }

    fn flush_where(&mut self, pick: impl Fn(&ShardId) -> bool) -> Vec<Batch> {
        let mut keys: Vec<_> = self.buffers.keys().filter(|(_, s)| pick(s)).cloned().collect();
        keys.sort();
        keys.iter()
            .map(|k| self.flush_key(k, FlushReason::Drain, None))
            .collect()
    }

    fn oldest_other_than(&self, key: &(TableId, ShardId)) -> Option<(TableId, ShardId)> {
        self.buffers
            .iter()
            .filter(|(k, _)| *k != key)
            .min_by(|(ka, a), (kb, b)| {
                (a.opened_at, std::cmp::Reverse(a.data.capacity()), *ka).cmp(&(
                    b.opened_at,
                    std::cmp::Reverse(b.data.capacity()),
                    *kb,
                ))
            })
            .map(|(k, _)| k.clone())
    }

    /// Cuts a buffer. `cut_at` is the shard and position of the row being added when the cut
    /// happens inside [`add`](Self::add) (more rows of that position may follow); `None` when
    /// it happens between records (tick, drain).
    fn flush_key(
        &mut self,
        key: &(TableId, ShardId),
        reason: FlushReason,
        cut_at: Option<(&ShardId, &Position)>,
    ) -> Batch {
        let buf = self
            .buffers
            .remove(key)
            .expect("flush_key is called for open buffers only");
        self.allocated -= buf.data.capacity();
        self.seal(key.0, key.1.clone(), buf, reason, cut_at)
    }

    fn seal(
        &self,
        table_id: TableId,
        shard: ShardId,
        buf: Buffer,
        reason: FlushReason,
        cut_at: Option<(&ShardId, &Position)>,
    ) -> Batch {
        let info = &self.tables[table_id.0 as usize];
        // The batch may end between two rows of its last position: say which row it ends at, so
        // that the rest of that position's rows, cut into the next batch, never share its key.
        let mid_position = cut_at.is_some_and(|(s, p)| *s == shard && *p == buf.last);
        Batch {
            table_id,
            table: info.name.clone(),
            columns: info.columns.clone(),
            columns_sha256: info.columns_sha256.clone(),
            shard,
            first: buf.first,
            first_row: buf.first_row,
            last: buf.last,
            last_row: mid_position.then_some(buf.last_row),
            rows: buf.rows as u64,
            sha256: Batch::checksum(&buf.data),
            data: buf.data,
            first_received_at: buf.first_received_at,
            min_received_at: buf.min_received_at,
            max_received_at: buf.max_received_at,
            opened_at: buf.opened_at,
            reason,
            catalog_version: self.catalog_version.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
