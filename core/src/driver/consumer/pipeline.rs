//! The record pipeline: one user record in, rows in the batcher (and the batches that cut) or a
//! rejected event out, with the checkpoint tracker told what it must hold.
//!
//! Per user record: skip it if a checkpoint inside its aggregate says it was done before; tell
//! the tracker it was read; decode the envelope and map it; add each row to the batcher. A row
//! that opens a buffer holds its position in the tracker until the batch carrying it is durable;
//! a rejected event holds its position until its `rejected/` object is. No I/O happens here: the
//! consumer's worker writes what comes out.

use crate::batcher::{Batch, Batcher};
use crate::catalog::Catalog;
use crate::checkpoint::{CheckpointTracker, TrackerError};
use crate::event::Envelope;
use crate::kpl::{self, UserRecord};
use crate::mapping::{Lineage, MappedRows, Mapper};
use crate::ports::Bytes;
use crate::position::{Position, SequenceNumber, ShardId};
use crate::time::Timestamp;

use super::rejected::rejected_object;

/// A `rejected/` object to write; its position is held until it is durable.
#[derive(Debug)]
pub(super) struct Rejected {
    pub key: String,
    pub body: Bytes,
    pub position: Position,
    pub reason: String,
}

/// What one user record came to.
#[derive(Debug)]
pub(super) enum Processed {
    /// Done before this lease was taken (a checkpoint inside its aggregate).
    Skipped,
    /// Its rows are in the batcher; these batches were cut meanwhile.
    Rows(Vec<Batch>),
    Rejected(Rejected),
}

/// The mapping half of the consumer: the batcher, the checkpoint tracker and the mapper's scratch.
#[derive(Debug)]
pub(super) struct Pipeline<'c> {
    catalog: &'c Catalog,
    pub batcher: Batcher,
    pub tracker: CheckpointTracker,
    mapped: MappedRows,
}

impl<'c> Pipeline<'c> {
    pub fn new(catalog: &'c Catalog, batcher: Batcher) -> Self {
        Pipeline {
            catalog,
            batcher,
            tracker: CheckpointTracker::new(),
            mapped: MappedRows::default(),
        }
    }

    /// The user records of a stream record, or the record itself rejected when it is not a
    /// valid KPL aggregate (poison for this record only: kept, with why, and the shard goes on).
    pub fn deaggregate(
        &mut self,
        shard: &ShardId,
        seq: &SequenceNumber,
        partition_key: &str,
        data: &[u8],
        skip_through: Option<&Position>,
        now: Timestamp,
    ) -> Result<Result<Vec<UserRecord>, Option<Rejected>>, TrackerError> {
        match kpl::decode(partition_key, data) {
            Ok(records) => Ok(Ok(records)),
            Err(e) => {
                let position = Position::new(seq.clone(), 0);
                if skip_through.is_some_and(|done| position <= *done) {
                    return Ok(Err(None));
                }
                let reason = format!("stream record is not a valid KPL aggregate: {e}");
                Ok(Err(Some(self.reject(
                    shard,
                    position,
                    reason,
                    None,
                    Some(data),
                    now,
                )?)))
            }
        }
    }

    /// Maps the user record at `position` (the `sub`-th of its stream record).
    pub fn user_record(
        &mut self,
        shard: &ShardId,
        position: Position,
        data: &[u8],
        skip_through: Option<&Position>,
        now: Timestamp,
    ) -> Result<Processed, TrackerError> {
        if skip_through.is_some_and(|done| position <= *done) {
            return Ok(Processed::Skipped);
        }
        let envelope = match Envelope::decode(data) {
            Ok(env) => env,
            Err(e) => {
                let rejected = self.reject(shard, position, e.to_string(), None, Some(data), now)?;
                return Ok(Processed::Rejected(rejected));
            }
        };
        let mapped = Mapper::new(self.catalog).map(
            &envelope,
            Lineage {
                shard,
                position: &position,
            },
            &mut self.mapped,
        );
        if let Err(rejection) = mapped {
            let rejected = self.reject(shard, position, rejection.to_string(), Some(&envelope), None, now)?;
            return Ok(Processed::Rejected(rejected));
        }
        self.tracker.read(shard, position.clone())?;
        let mut flushed = Vec::new();
        let mut opened = 0;
        for (table, row) in self.mapped.iter() {
            let added = self
                .batcher
                .add(table, shard, &position, envelope.received_at, row, now);
            opened += usize::from(added.opened);
            flushed.extend(added.flushed);
        }
        for _ in 0..opened {
            self.tracker.hold(shard, position.clone());
        }
        Ok(Processed::Rows(flushed))
    }

    fn reject(
        &mut self,
        shard: &ShardId,
        position: Position,
        reason: String,
        event: Option<&Envelope>,
        raw: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<Rejected, TrackerError> {
        self.tracker.read(shard, position.clone())?;
        self.tracker.hold(shard, position.clone());
        let (key, body) = rejected_object(shard, &position, &reason, event, raw, now);
        Ok(Rejected {
            key,
            body,
            position,
            reason,
        })
    }
}
