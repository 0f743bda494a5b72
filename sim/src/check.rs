//! The invariant checker: what DESIGN.md's contracts mean for one run, checked at every step
//! (checkpoint safety, buffer budget, manifest and row uniqueness) and at quiescence (exactly
//! once, dimensions, dead letters, rejections, deterministic keys).
//!
//! What each stream record should become is computed with the catalog's mapper from the record
//! itself, so the checks follow the stream's actual contents (including the duplicates that
//! producer and client retries put there), not what the workload meant to send.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use microbatch_core::catalog::{Catalog, Mode};
use microbatch_core::csv::parse_rows;
use microbatch_core::event::Envelope;
use microbatch_core::import::parse_message;
use microbatch_core::kpl;
use microbatch_core::mapping::{Lineage, MappedRows, Mapper};
use microbatch_core::ports::{Checkpoint, Observation, Observer};
use microbatch_core::position::{Position, ShardId};
use microbatch_core::time::Timestamp;

use crate::ctx::Ctx;
use crate::world::{Row, World, order_of, refuses};

/// What one user record in the stream should become.
#[derive(Debug, Clone)]
pub enum Expect {
    /// In `rejected/` with this reason (`None`: any reason; the record was not even an envelope),
    /// and the event's id when it was one.
    Rejected(Option<String>, Option<String>),
    /// These rows, `(table, row)` with the row in table column order.
    Rows {
        event_id: String,
        rows: Vec<(String, Row)>,
    },
}

#[derive(Debug, Default)]
struct ShardExpect {
    records_seen: usize,
    positions: Vec<(Position, Arc<Expect>)>,
    verified: usize,
}

/// Checks a run of [`World`].
#[derive(Debug)]
pub struct Checker<'w> {
    world: &'w World,
    catalog: &'w Catalog,
    shards: BTreeMap<ShardId, ShardExpect>,
    mapped: MappedRows,
    /// The last user-record position of each shard's last record, as last computed.
    ends: RefCell<BTreeMap<ShardId, Position>>,
}

/// What a finished run measured.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub accepted: usize,
    pub rejected: usize,
    pub dead_letters: usize,
    pub rows: usize,
    pub stream_records: usize,
    /// Accept → queryable, per accepted event whose rows were loaded.
    pub freshness: Vec<Duration>,
}

impl<'w> Checker<'w> {
    pub fn new(world: &'w World, catalog: &'w Catalog) -> Self {
        Checker {
            world,
            catalog,
            shards: BTreeMap::new(),
            mapped: MappedRows::default(),
            ends: RefCell::new(BTreeMap::new()),
        }
    }

    fn ctx(&self) -> &Ctx {
        &self.world.ctx
    }

    /// Maps the records of `shard` not yet seen.
    fn expand(&mut self, shard: &ShardId) {
        let seen = self.shards.get(shard).map_or(0, |s| s.records_seen);
        let records = self.world.stream.records_from(shard, seen);
        if records.is_empty() {
            return;
        }
        let mapper = Mapper::new(self.catalog);
        let mut out = Vec::new();
        for record in &records {
            let users = match kpl::decode(&record.partition_key, &record.data) {
                Ok(u) => u,
                Err(_) => {
                    out.push((
                        Position::new(record.seq.clone(), 0),
                        Arc::new(Expect::Rejected(None, None)),
                    ));
                    continue;
                }
            };
            for (sub, user) in users.iter().enumerate() {
                let position = Position::new(record.seq.clone(), sub as u32);
                let expect = match Envelope::decode(&user.data) {
                    Err(e) => Expect::Rejected(Some(e.to_string()), None),
                    Ok(env) => match mapper.map(
                        &env,
                        Lineage {
                            shard,
                            position: &position,
                        },
                        &mut self.mapped,
                    ) {
                        Err(rejection) => {
                            Expect::Rejected(Some(rejection.to_string()), Some(env.id.0.clone()))
                        }
                        Ok(()) => Expect::Rows {
                            event_id: env.id.0.clone(),
                            rows: self
                                .mapped
                                .iter()
                                .map(|(t, csv)| {
                                    let row =
                                        parse_rows(csv).ok().and_then(|mut r| r.pop()).unwrap_or_default();
                                    (self.catalog.table(t).name.clone(), row)
                                })
                                .collect(),
                        },
                    },
                };
                out.push((position, Arc::new(expect)));
            }
        }
        let s = self.shards.entry(shard.clone()).or_default();
        s.records_seen += records.len();
        s.positions.extend(out);
    }

    /// Whether what the record at `position` became is durable; the violation if not.
    fn durable(&self, shard: &ShardId, position: &Position, expect: &Expect) -> Result<(), String> {
        let store = &self.world.store;
        match expect {
            Expect::Rejected(reason, _) => match (store.rejected_at(shard, position), reason) {
                (None, _) => Err(format!("the rejection of {shard} {position} is not in rejected/")),
                (Some(got), Some(want)) if &got != want => Err(format!(
                    "rejected/ has {shard} {position} with reason {got:?}, expected {want:?}"
                )),
                _ => Ok(()),
            },
            Expect::Rows { event_id, rows } => {
                let durable = store.rows_at(shard, position);
                let mut index: BTreeMap<&str, i64> = BTreeMap::new();
                for (table, _) in rows {
                    let i = index.entry(table.as_str()).or_insert(-1);
                    *i += 1;
                    if !durable.iter().any(|d| d.table == *table && d.row_index == *i) {
                        return Err(format!(
                            "row {table}[{i}] of event {event_id} ({shard} {position}) is in no object"
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// Checks the checkpoints written since the last call: none may pass a record whose rows
    /// (or rejection) are not durable (contract 3).
    pub fn after_poll(&mut self) {
        for (shard, checkpoint) in self.ctx().take_checkpoints() {
            self.expand(&shard);
            if checkpoint == Checkpoint::ShardEnd {
                let closed = self
                    .world
                    .stream
                    .snapshot()
                    .iter()
                    .any(|s| s.info.id == shard && s.info.closed);
                if !closed {
                    self.ctx()
                        .violation(format!("checkpoint safety: {shard} marked SHARD_END while open"));
                }
            }
            let Some(s) = self.shards.get(&shard) else {
                continue;
            };
            let mut verified = s.verified;
            let mut failure = None;
            while let Some((position, expect)) = s.positions.get(verified) {
                let passed = match &checkpoint {
                    Checkpoint::TrimHorizon => false,
                    Checkpoint::At(p) => position <= p,
                    Checkpoint::ShardEnd => true,
                };
                if !passed {
                    break;
                }
                if let Err(e) = self.durable(&shard, position, expect) {
                    failure = Some(e);
                    break;
                }
                verified += 1;
            }
            self.shards.get_mut(&shard).expect("present").verified = verified;
            if let Some(e) = failure {
                self.ctx().violation(format!(
                    "checkpoint safety: {shard} checkpointed at {} but {e}",
                    describe(&checkpoint)
                ));
            }
        }
    }

    /// Whether every shard is checkpointed to its end, the queue is empty and nothing is in
    /// flight: the run may stop.
    pub fn quiescent(&self) -> bool {
        if self.world.queue.depth() > 0 {
            return false;
        }
        let leases = self.world.leases.snapshot();
        let deleted = self.world.leases.deleted();
        for (id, closed, last) in self.world.stream.tails() {
            let lease = leases.iter().find(|l| l.shard == id);
            let done = match lease.map(|l| &l.checkpoint) {
                // Only finished leases are deleted.
                None if deleted.contains(&id) => true,
                Some(Checkpoint::ShardEnd) => true,
                _ if closed => false,
                None | Some(Checkpoint::TrimHorizon) => last.is_none(),
                Some(Checkpoint::At(p)) => last.is_some_and(|r| {
                    let mut ends = self.ends.borrow_mut();
                    let end = match ends.get(&id) {
                        Some(e) if e.seq == r.seq => e.clone(),
                        _ => {
                            let n = kpl::decode(&r.partition_key, &r.data).map_or(1, |u| u.len().max(1));
                            let e = Position::new(r.seq.clone(), n as u32 - 1);
                            ends.insert(id.clone(), e.clone());
                            e
                        }
                    };
                    *p == end
                }),
            };
            if !done {
                return false;
            }
        }
        true
    }

    /// The checks at quiescence; returns what the run measured.
    pub fn finish(&mut self, accepted: &BTreeMap<String, Timestamp>) -> Outcome {
        let world = self.world;
        let ctx: &Ctx = &world.ctx;
        let mut v: Vec<String> = Vec::new();
        let stream = world.stream.snapshot();
        for s in &stream {
            self.expand(&s.info.id);
        }
        // 1. Stream → store: every record's rows are in objects, every rejection in rejected/.
        let mut by_event: BTreeMap<&str, Vec<(&ShardId, &Position, &Expect)>> = BTreeMap::new();
        let mut expected_at: BTreeMap<(ShardId, Position), &Expect> = BTreeMap::new();
        let mut rejected = 0;
        for (shard, s) in &self.shards {
            for (position, expect) in &s.positions {
                if let Err(e) = self.durable(shard, position, expect) {
                    v.push(format!("stream → store: {e}"));
                }
                expected_at.insert((shard.clone(), position.clone()), expect);
                match &**expect {
                    Expect::Rows { event_id, .. } => {
                        by_event
                            .entry(event_id.as_str())
                            .or_default()
                            .push((shard, position, expect));
                    }
                    Expect::Rejected(_, id) => {
                        rejected += 1;
                        if let Some(id) = id {
                            by_event
                                .entry(id.as_str())
                                .or_default()
                                .push((shard, position, expect));
                        }
                    }
                }
            }
        }
        for ((shard, position), reason) in world.store.rejected() {
            if !matches!(
                expected_at.get(&(shard.clone(), position.clone())),
                Some(Expect::Rejected(..))
            ) {
                v.push(format!(
                    "rejected/ holds {shard} {position} ({reason}), which is no rejected record"
                ));
            }
        }
        for c in world.store.conflicts() {
            v.push(format!("deterministic keys: {c}"));
        }
        // 2. Objects → warehouse: healthy objects loaded once, poison ones dead-lettered.
        let loads = world.store.loads();
        let manifest = world.warehouse.manifest();
        let dead = world.queue.dead_letters();
        let mut dead_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in &dead {
            match parse_message(&d.body) {
                Ok(n) => {
                    for o in n.objects {
                        dead_keys.entry(o.key).or_default().push(d.reason.clone());
                    }
                }
                Err(e) => v.push(format!("dead letter with an unreadable body: {e}")),
            }
        }
        for (key, reasons) in &dead_keys {
            match loads.get(key).and_then(|o| o.poison) {
                Some(want) => {
                    // The importer names it (`row count mismatch: …`); a warehouse that reads the
                    // object itself names it inside its refusal.
                    if let Some(r) = reasons.iter().find(|r| !r.contains(want)) {
                        v.push(format!(
                            "poison {key} dead-lettered with reason {r:?}, expected {want}"
                        ));
                    }
                }
                None => v.push(format!(
                    "dead-letter queue holds a healthy batch {key}: {}",
                    reasons.join("; ")
                )),
            }
        }
        for (key, object) in &loads {
            let loaded = manifest
                .get(&(key.clone(), object.sha256.clone()))
                .copied()
                .unwrap_or(0);
            match object.poison {
                Some(reason) if !dead_keys.contains_key(key) => v.push(format!(
                    "poison batch {key} ({reason}) is not in the dead-letter queue"
                )),
                Some(_) if loaded > 0 => v.push(format!("poison batch {key} was loaded")),
                None if loaded == 0 => v.push(format!("batch {key} was never loaded")),
                None if loaded > 1 => v.push(format!("batch {key} was loaded {loaded} times")),
                _ => {}
            }
        }
        for (key, _) in manifest.keys() {
            if !loads.contains_key(key) {
                v.push(format!("the manifest holds {key}, which no object has"));
            }
        }
        // Object rows by table: the candidates for the warehouse, and the content check.
        let mut candidates: BTreeMap<&str, BTreeMap<(String, i64), Vec<&Row>>> = BTreeMap::new();
        let mut in_poison: BTreeSet<(String, String, i64)> = BTreeSet::new();
        let mut in_good: BTreeSet<(String, String, i64, String, String)> = BTreeSet::new();
        // Rows the warehouse refuses: never loaded, each kept in `rejected/rows/` by its batch.
        let refusing = world.warehouse.refuses_rows();
        let mut in_refused: BTreeSet<(String, String, i64)> = BTreeSet::new();
        let mut refused_expected: BTreeSet<(String, u64)> = BTreeSet::new();
        for (key, object) in &loads {
            let Some(table) = self
                .catalog
                .table_id(&object.table)
                .map(|t| self.catalog.table(t))
            else {
                v.push(format!("{key}: unknown table {}", object.table));
                continue;
            };
            if !object.columns.iter().map(String::as_str).eq(table.column_names()) {
                v.push(format!("{key}: columns are not the table's"));
                continue;
            }
            for (n, row) in object.rows.iter().enumerate() {
                let (eid, ri) = (field(row, 0), field(row, 1).parse::<i64>().unwrap_or(-1));
                // Content: the row is what the mapper makes of the record at its position.
                let position = Position::new(
                    microbatch_core::position::SequenceNumber::parse(&field(row, 4))
                        .unwrap_or_else(|_| microbatch_core::position::SequenceNumber::from_u128(0)),
                    field(row, 5).parse().unwrap_or(0),
                );
                let want = expected_at
                    .get(&(ShardId(field(row, 3)), position))
                    .and_then(|e| match e {
                        Expect::Rows { rows, .. } => {
                            let mut i = -1;
                            rows.iter()
                                .filter(|(t, _)| *t == object.table)
                                .find(|_| {
                                    i += 1;
                                    i == ri
                                })
                                .map(|(_, r)| r)
                        }
                        Expect::Rejected(..) => None,
                    });
                if want != Some(row) {
                    v.push(format!(
                        "{key}: row {}[{ri}] of event {eid} is not what its record maps to",
                        object.table
                    ));
                }
                if object.poison.is_some() {
                    in_poison.insert((object.table.clone(), eid, ri));
                } else if refusing && refuses(&object.table, &eid, ri) {
                    refused_expected.insert((key.clone(), n as u64));
                    in_refused.insert((object.table.clone(), eid, ri));
                } else {
                    in_good.insert((
                        object.table.clone(),
                        eid.clone(),
                        ri,
                        field(row, 4),
                        field(row, 5),
                    ));
                    candidates
                        .entry(object.table.as_str())
                        .or_default()
                        .entry((eid, ri))
                        .or_default()
                        .push(row);
                }
            }
        }
        let refused = world.store.refused();
        for (key, row) in &refused_expected {
            if !refused.contains_key(&(key.clone(), *row)) {
                v.push(format!(
                    "refused row {row} of {key} is not in rejected/rows/ (the warehouse refused it)"
                ));
            }
        }
        for ((key, row), reason) in &refused {
            if !refused_expected.contains(&(key.clone(), *row)) {
                v.push(format!(
                    "rejected/rows/ holds row {row} of {key} ({reason}), which the warehouse never refused"
                ));
            }
        }
        let tables = world.warehouse.tables();
        let mut total_rows = 0;
        for table in self.catalog.tables() {
            let data = tables.get(&table.name).cloned().unwrap_or_default();
            let cands = candidates.remove(table.name.as_str()).unwrap_or_default();
            match &table.mode {
                Mode::Append => {
                    total_rows += data.rows.len();
                    let mut seen = BTreeSet::new();
                    for row in &data.rows {
                        let k = (field(row, 0), field(row, 1).parse::<i64>().unwrap_or(-1));
                        match cands.get(&k) {
                            Some(c) if c.contains(&row) => {}
                            Some(_) => v.push(format!("{}: row {k:?} has content no object has", table.name)),
                            None => v.push(format!("{}: row {k:?} comes from no healthy object", table.name)),
                        }
                        if !seen.insert(k.clone()) {
                            v.push(format!("exactly once: {} holds row {k:?} twice", table.name));
                        }
                    }
                    for k in cands.keys() {
                        if !seen.contains(k) {
                            v.push(format!("exactly once: {} lacks row {k:?}", table.name));
                        }
                    }
                }
                Mode::Upsert { key } => {
                    total_rows += data.latest.len();
                    let key_cols: Vec<usize> = key
                        .iter()
                        .map(|c| table.column_names().position(|n| n == c).expect("key column"))
                        .collect();
                    // The latest write per key among the stream's records whose rows reached a
                    // healthy object (a poison batch's rows are in the dead-letter queue instead).
                    let mut latest: BTreeMap<Vec<Option<String>>, &Row> = BTreeMap::new();
                    for s in self.shards.values() {
                        for (position, expect) in &s.positions {
                            let Expect::Rows { rows, event_id } = &**expect else {
                                continue;
                            };
                            let mut i = -1;
                            for (t, row) in rows {
                                if *t != table.name {
                                    continue;
                                }
                                i += 1;
                                let healthy = in_good.contains(&(
                                    t.clone(),
                                    event_id.clone(),
                                    i,
                                    position.seq.to_string(),
                                    position.sub.to_string(),
                                ));
                                if !healthy {
                                    continue;
                                }
                                let k: Vec<Option<String>> =
                                    key_cols.iter().map(|&c| row[c].clone()).collect();
                                if latest.get(&k).is_none_or(|r| order_of(row) > order_of(r)) {
                                    latest.insert(k, row);
                                }
                            }
                        }
                    }
                    let got: BTreeMap<&Vec<Option<String>>, &Row> =
                        data.latest.iter().map(|(k, (_, r))| (k, r)).collect();
                    for (k, want) in &latest {
                        match got.get(k) {
                            Some(r) if r == want => {}
                            Some(r) => v.push(format!(
                                "dimension {}: key {k:?} holds event {} but the latest write is event {}",
                                table.name,
                                field(r, 0),
                                field(want, 0)
                            )),
                            None => v.push(format!("dimension {}: key {k:?} is missing", table.name)),
                        }
                    }
                    for k in got.keys() {
                        if !latest.contains_key(*k) {
                            v.push(format!("dimension {}: key {k:?} was never written", table.name));
                        }
                    }
                }
            }
        }
        // 3. Accepted → stream → warehouse (contract 1 and 2).
        let visible = world.warehouse.visible();
        let loaded: BTreeSet<(&str, &str, i64)> = tables
            .iter()
            .flat_map(|(t, d)| {
                d.rows.iter().map(move |r| {
                    (
                        t.as_str(),
                        r[0].as_deref().unwrap_or_default(),
                        r[1].as_deref().and_then(|v| v.parse().ok()).unwrap_or(-1),
                    )
                })
            })
            .collect();
        let mut freshness = Vec::new();
        for (id, at) in accepted {
            let Some(copies) = by_event.get(id.as_str()) else {
                v.push(format!("accepted event {id} is not in the stream"));
                continue;
            };
            let mut missing = None;
            for (_, _, expect) in copies.iter().take(1) {
                let Expect::Rows { rows, .. } = expect else {
                    continue;
                };
                let mut index: BTreeMap<&str, i64> = BTreeMap::new();
                for (t, _) in rows {
                    let i = index.entry(t.as_str()).or_insert(-1);
                    *i += 1;
                    let append = self
                        .catalog
                        .table_id(t)
                        .is_some_and(|id| self.catalog.table(id).mode == Mode::Append);
                    let present = loaded.contains(&(t.as_str(), id.as_str(), *i));
                    let kept_out = in_poison.contains(&(t.clone(), id.clone(), *i))
                        || in_refused.contains(&(t.clone(), id.clone(), *i));
                    if append && !present && !kept_out {
                        missing = Some(format!("{t}[{i}]"));
                    }
                }
            }
            if let Some(m) = missing {
                v.push(format!("accepted event {id}: row {m} is not in the warehouse"));
            }
            if let Some(seen) = visible.get(id) {
                freshness.push(seen.saturating_since(*at));
            }
        }
        for text in v {
            ctx.violation(text);
        }
        if ctx.max_buffer_bytes() == usize::MAX {
            ctx.violation("buffer accounting overflowed");
        }
        Outcome {
            accepted: accepted.len(),
            rejected,
            dead_letters: dead.len(),
            rows: total_rows,
            stream_records: world.stream.record_count(),
            freshness,
        }
    }
}

fn field(row: &Row, i: usize) -> String {
    row.get(i).cloned().flatten().unwrap_or_default()
}

fn describe(c: &Checkpoint) -> String {
    match c {
        Checkpoint::TrimHorizon => "TRIM_HORIZON".into(),
        Checkpoint::At(p) => p.to_string(),
        Checkpoint::ShardEnd => "SHARD_END".into(),
    }
}

/// Turns a driver's observations into trace lines and per-step checks (the buffer budget).
#[derive(Debug)]
pub struct SimObserver<'c> {
    ctx: &'c Ctx,
    name: String,
    budget: usize,
}

impl<'c> SimObserver<'c> {
    pub fn new(ctx: &'c Ctx, name: impl Into<String>, budget: usize) -> Self {
        SimObserver {
            ctx,
            name: name.into(),
            budget,
        }
    }
}

impl Observer for SimObserver<'_> {
    fn observe(&self, o: Observation<'_>) {
        let ctx = self.ctx;
        let n = &self.name;
        match o {
            Observation::BufferBytes { allocated, in_flight } => {
                ctx.buffer_bytes(allocated + in_flight);
                if allocated + in_flight > self.budget {
                    ctx.violation(format!(
                        "bounded memory: {n} buffers {allocated} bytes and writes {in_flight} bytes, \
                         over its budget of {}",
                        self.budget
                    ));
                }
            }
            Observation::EventsAccepted { count } => ctx.trace(n, format_args!("accepted {count}")),
            Observation::EventsFailed { count } => ctx.trace(n, format_args!("failed {count}")),
            Observation::AggregatePut { user_records, .. } => {
                ctx.trace(n, format_args!("put aggregate of {user_records}"))
            }
            Observation::RecordsRead { shard, records, .. } => {
                if records > 0 {
                    ctx.trace(n, format_args!("read {records} from {shard}"))
                }
            }
            Observation::EventRejected { shard, reason } => {
                ctx.trace(n, format_args!("rejected on {shard}: {reason}"))
            }
            Observation::BatchFlushed {
                table, rows, reason, ..
            } => ctx.trace(n, format_args!("flush {table} {rows} rows ({reason})")),
            Observation::BatchWritten { key, .. } => ctx.trace(n, format_args!("wrote {key}")),
            Observation::WriteFailed {
                key,
                error,
                attempt,
                stalled,
            } => ctx.trace(
                n,
                format_args!("write {key} failed (attempt {attempt}, stalled {stalled}): {error}"),
            ),
            Observation::LeaseDeleted { shard } => ctx.trace(n, format_args!("deleted lease {shard}")),
            Observation::RowRefused { key, row, reason } => {
                ctx.trace(n, format_args!("row {row} of {key} refused: {reason}"))
            }
            Observation::Checkpointed { shard, position, .. } => {
                ctx.trace(n, format_args!("checkpoint {shard} {}", describe(position)))
            }
            Observation::LeaseTaken { shard } => ctx.trace(n, format_args!("took {shard}")),
            Observation::LeaseLost { shard } => ctx.trace(n, format_args!("lost {shard}")),
            Observation::Loaded {
                key, rows, inserted, ..
            } => ctx.trace(n, format_args!("loaded {key} {rows} rows, {inserted} new")),
            Observation::LoadSkipped { key, reason } => ctx.trace(n, format_args!("skip {key}: {reason}")),
            Observation::LoadRetry {
                key, attempt, error, ..
            } => ctx.trace(n, format_args!("retry {key} after attempt {attempt}: {error}")),
            Observation::DeadLettered { key, code, reason } => {
                ctx.trace(n, format_args!("dead-letter {key} ({code}): {reason}"))
            }
            Observation::PortRetry { service, kind, error } => {
                ctx.trace(n, format_args!("{service} retry ({kind}): {error}"))
            }
        }
    }
}
