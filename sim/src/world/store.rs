//! An object store whose batch puts notify the queue, as S3 → SQS does; with failed, slow and
//! reply-lost puts, failed gets, windows of access denied, throttle bursts, and poison (objects
//! whose bytes do not match their metadata).
//!
//! It keeps, for the checks, an index of what is durable: every row of every load object by the
//! stream position it came from, every `rejected/` record by its position, and every row the
//! importer kept in `rejected/rows/` because the warehouse refused it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use microbatch_core::batch::{BatchMetadata, BatchSchema};
use microbatch_core::csv::parse_rows;
use microbatch_core::import::{RefusedRows, object_created_message};
use microbatch_core::keys;
use microbatch_core::ports::{
    Bytes, Clock, ObjectLocation, ObjectReader, ObjectWriter, PortError, StoredObject,
};
use microbatch_core::position::{Position, SequenceNumber, ShardId};

use super::{MemQueue, lock};
use crate::ctx::{Ctx, Fault, Sabotage};

type Row = Vec<Option<String>>;

/// A load object as it was meant to be: its rows, table and whether the stored copy is poison.
#[derive(Debug, Clone)]
pub struct LoadObject {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    pub sha256: String,
    /// Why the importer must dead-letter it (the start of the reason), if it is poison.
    pub poison: Option<&'static str>,
}

/// A row as the durable index knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurableRow {
    pub table: String,
    pub row_index: i64,
    pub key: String,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, StoredObject>,
    loads: BTreeMap<String, LoadObject>,
    /// Keys chosen as poison stay poison whoever writes them again.
    poison: BTreeMap<String, &'static str>,
    rows_at: BTreeMap<(ShardId, Position), BTreeSet<DurableRow>>,
    rejected_at: BTreeMap<(ShardId, Position), String>,
    /// Rows kept in `rejected/rows/`: (batch key, row) → reason.
    refused: BTreeMap<(String, u64), String>,
    sequencer: u64,
    conflicts: Vec<String>,
}

/// The bucket every simulated object lives in.
pub const BUCKET: &str = "sim-bucket";

/// An in-memory bucket.
#[derive(Debug)]
pub struct MemStore {
    ctx: Arc<Ctx>,
    queue: Arc<MemQueue>,
    state: Mutex<State>,
    /// Whether poison may be a corrupt body. Not when the warehouse reads the objects itself:
    /// S3 checks the bytes it stores against the writer's checksum, so only lying metadata is
    /// left for it to find (by its row count).
    corrupt_bodies: bool,
}

fn col(columns: &[String], name: &str) -> Option<usize> {
    columns.iter().position(|c| c == name)
}

impl MemStore {
    pub fn new(ctx: Arc<Ctx>, queue: Arc<MemQueue>, corrupt_bodies: bool) -> Self {
        MemStore {
            ctx,
            queue,
            state: Mutex::new(State::default()),
            corrupt_bodies,
        }
    }

    /// Keys under a prefix.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        lock(&self.state)
            .objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn object(&self, key: &str) -> Option<StoredObject> {
        lock(&self.state).objects.get(key).cloned()
    }

    pub fn loads(&self) -> BTreeMap<String, LoadObject> {
        lock(&self.state).loads.clone()
    }

    /// The durable rows of the record at `position` of `shard`.
    pub fn rows_at(&self, shard: &ShardId, position: &Position) -> BTreeSet<DurableRow> {
        lock(&self.state)
            .rows_at
            .get(&(shard.clone(), position.clone()))
            .cloned()
            .unwrap_or_default()
    }

    /// The reason stored in `rejected/` for the record at `position`, if any.
    pub fn rejected_at(&self, shard: &ShardId, position: &Position) -> Option<String> {
        lock(&self.state)
            .rejected_at
            .get(&(shard.clone(), position.clone()))
            .cloned()
    }

    pub fn rejected(&self) -> BTreeMap<(ShardId, Position), String> {
        lock(&self.state).rejected_at.clone()
    }

    /// The rows the importer kept in `rejected/rows/`: (batch key, row in the batch) → reason.
    pub fn refused(&self) -> BTreeMap<(String, u64), String> {
        lock(&self.state).refused.clone()
    }

    /// Keys written twice with different content (deterministic keys broken).
    pub fn conflicts(&self) -> Vec<String> {
        lock(&self.state).conflicts.clone()
    }

    fn index_load(
        s: &mut State,
        key: &str,
        body: &[u8],
        metadata: &BatchMetadata,
    ) -> Result<LoadObject, String> {
        let schema_key = keys::schema_key(&metadata.table, &metadata.columns_sha256);
        let schema = s
            .objects
            .get(&schema_key)
            .ok_or_else(|| format!("object {key} was written before its schema object {schema_key}"))?;
        let schema =
            BatchSchema::from_json(&schema.body, metadata).map_err(|e| format!("object {key}: {e}"))?;
        let csv = metadata
            .compression
            .decompress(body, metadata.csv_bytes)
            .map_err(|e| format!("object {key}: {e}"))?;
        let rows = parse_rows(&csv).map_err(|e| format!("object {key} is not CSV: {e}"))?;
        let cols = &schema.columns;
        let (Some(ri), Some(sh), Some(sq), Some(sub)) = (
            col(cols, "_row_index"),
            col(cols, "_shard"),
            col(cols, "_sequence"),
            col(cols, "_sub_sequence"),
        ) else {
            return Err(format!("object {key} lacks lineage columns"));
        };
        for row in &rows {
            let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let position = Position::new(
                SequenceNumber::parse(&field(sq)).map_err(|e| format!("object {key}: {e}"))?,
                field(sub)
                    .parse()
                    .map_err(|_| format!("object {key}: bad sub-sequence"))?,
            );
            s.rows_at
                .entry((ShardId(field(sh)), position))
                .or_default()
                .insert(DurableRow {
                    table: metadata.table.clone(),
                    row_index: field(ri).parse().unwrap_or(-1),
                    key: key.to_owned(),
                });
        }
        Ok(LoadObject {
            table: metadata.table.clone(),
            columns: cols.clone(),
            rows,
            sha256: metadata.sha256.clone(),
            poison: None,
        })
    }
}

impl MemStore {
    /// The faults every write meets; `Ok(true)` when the write must be dropped silently (the
    /// sabotage of a consumer that ignores a refused write).
    fn write_faults(&self) -> Result<bool, PortError> {
        if self.ctx.in_window(Fault::StoreDenied) {
            if self.ctx.sabotage == Sabotage::IgnoreWriteError {
                return Ok(true);
            }
            return Err(PortError::denied(
                "store",
                "AccessDenied: the KMS key is disabled (kms:GenerateDataKey)",
            ));
        }
        if self.ctx.throttled() {
            return Err(PortError::throttled("store", "503 SlowDown (burst)"));
        }
        if self.ctx.chance(Fault::StorePutFailed) {
            return Err(PortError::unavailable("store", "500 InternalError"));
        }
        Ok(false)
    }
}

impl ObjectWriter for MemStore {
    fn bucket(&self) -> &str {
        BUCKET
    }

    async fn put_batch(&self, key: &str, body: Bytes, metadata: &BatchMetadata) -> Result<(), PortError> {
        if self.ctx.chance(Fault::StoreSlowPut) {
            self.ctx.latency(1_000, 15_000).await;
        } else {
            self.ctx.latency(1, 40).await;
        }
        if self.write_faults()? {
            return Ok(());
        }
        let size = body.len() as u64;
        let seq = {
            let mut s = lock(&self.state);
            let mut object = match Self::index_load(&mut s, key, &body, metadata) {
                Ok(o) => o,
                Err(e) => {
                    drop(s);
                    self.ctx
                        .violation(format!("the consumer wrote a bad object: {e}"));
                    return Ok(());
                }
            };
            if let Some(old) = s.loads.get(key).map(|o| o.sha256.clone())
                && old != object.sha256
            {
                s.conflicts
                    .push(format!("{key} written with sha256 {old} then {}", object.sha256));
            }
            let mut poison = s.poison.get(key).copied();
            // Only a first write can be poison: a key once loaded stays loaded (the importer skips
            // it by its manifest before it reads the bytes again).
            if poison.is_none() && !s.loads.contains_key(key) && self.ctx.chance(Fault::PoisonBatch) {
                poison = Some(if self.ctx.unit() < 0.5 && self.corrupt_bodies {
                    "checksum mismatch"
                } else {
                    "row count mismatch"
                });
                s.poison.insert(key.to_owned(), poison.expect("set"));
            }
            let mut stored_body = body.to_vec();
            let mut pairs = metadata.to_pairs();
            match poison {
                Some("checksum mismatch") => {
                    // A flipped byte of the content (or content where there was none), stored
                    // the way the batch was: the importer finds the checksum wrong, not the
                    // compression.
                    let mut csv = metadata
                        .compression
                        .decompress(&body, metadata.csv_bytes)
                        .unwrap_or_default();
                    match csv.first_mut() {
                        Some(b) => *b ^= 0x20,
                        None => csv.push(b'x'),
                    }
                    pairs.insert("csv-bytes".into(), csv.len().to_string());
                    stored_body = metadata.compression.compress(csv);
                }
                Some(_) => {
                    pairs.insert("rows".into(), (metadata.row_count + 1).to_string());
                }
                None => {}
            }
            object.poison = poison;
            s.loads.insert(key.to_owned(), object);
            s.objects.insert(
                key.to_owned(),
                StoredObject {
                    body: stored_body,
                    metadata: pairs,
                },
            );
            s.sequencer += 1;
            s.sequencer
        };
        self.queue.send(object_created_message(
            BUCKET,
            key,
            size,
            seq,
            self.ctx.clock.now(),
        ));
        if self.ctx.chance(Fault::StorePutLostReply) {
            return Err(PortError::unavailable("store", "connection reset"));
        }
        Ok(())
    }

    async fn put(&self, key: &str, body: Bytes, _content_type: &str) -> Result<(), PortError> {
        self.ctx.latency(1, 40).await;
        if self.write_faults()? {
            return Ok(());
        }
        let refused_rows = key.starts_with("rejected/rows/");
        if (self.ctx.sabotage == Sabotage::DropRejected && key.starts_with("rejected/") && !refused_rows)
            || (self.ctx.sabotage == Sabotage::DropRefusedRows && refused_rows)
        {
            return Ok(());
        }
        {
            let mut s = lock(&self.state);
            if refused_rows {
                match serde_json::from_slice::<RefusedRows>(&body) {
                    Ok(record) => {
                        for row in record.rows {
                            s.refused.insert((record.key.clone(), row.row), row.reason);
                        }
                    }
                    Err(e) => s.conflicts.push(format!("{key}: unreadable refused rows: {e}")),
                }
            } else if key.starts_with("rejected/") {
                let parsed: Option<(ShardId, Position, String)> =
                    serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| {
                            let seq = SequenceNumber::parse(v["sequence"].as_str()?).ok()?;
                            let sub = u32::try_from(v["sub_sequence"].as_u64()?).ok()?;
                            Some((
                                ShardId::new(v["shard"].as_str()?),
                                Position::new(seq, sub),
                                v["reason"].as_str()?.to_owned(),
                            ))
                        });
                match parsed {
                    Some((shard, position, reason)) => {
                        s.rejected_at.insert((shard, position), reason);
                    }
                    None => s.conflicts.push(format!("{key}: unreadable rejected record")),
                }
            }
            s.objects.insert(
                key.to_owned(),
                StoredObject {
                    body: body.to_vec(),
                    metadata: BTreeMap::new(),
                },
            );
        }
        if self.ctx.chance(Fault::StorePutLostReply) {
            return Err(PortError::unavailable("store", "connection reset"));
        }
        Ok(())
    }
}

impl MemStore {
    fn read_faults(&self, at: &ObjectLocation) -> Result<(), PortError> {
        if at.bucket != BUCKET {
            return Err(PortError::not_found(
                "store",
                format!("NoSuchBucket: {}", at.bucket),
            ));
        }
        if self.ctx.throttled() {
            return Err(PortError::throttled("store", "503 SlowDown (burst)"));
        }
        if self.ctx.chance(Fault::StoreGetFailed) {
            return Err(PortError::unavailable("store", "500 InternalError"));
        }
        Ok(())
    }
}

impl ObjectReader for MemStore {
    async fn head(&self, at: &ObjectLocation) -> Result<Option<BTreeMap<String, String>>, PortError> {
        self.ctx.latency(1, 10).await;
        self.read_faults(at)?;
        Ok(lock(&self.state).objects.get(&at.key).map(|o| o.metadata.clone()))
    }

    async fn get(&self, at: &ObjectLocation) -> Result<Option<StoredObject>, PortError> {
        self.ctx.latency(1, 20).await;
        self.read_faults(at)?;
        Ok(lock(&self.state).objects.get(&at.key).cloned())
    }
}
