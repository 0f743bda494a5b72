//! The checkpoint tracker: how far each shard may be checkpointed (contract 3).
//!
//! The consumer tells it every record it reads ([`read`](CheckpointTracker::read)), every
//! position a buffer starts holding rows from ([`hold`](CheckpointTracker::hold), when the
//! batcher reports a buffer opened) and every batch made durable
//! ([`release`](CheckpointTracker::release), with the batch's first position). The safe
//! checkpoint is the last record read before the oldest position still held: every record up to
//! it has all its rows in durable objects, or produced none. Records without rows never hold a
//! shard back.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::position::{Position, ShardId};

#[derive(Debug, Default)]
struct ShardTrack {
    /// Positions read and not yet checkpointed, in order.
    read: VecDeque<Position>,
    /// Positions whose rows are buffered or in flight, with how many buffers hold each.
    held: BTreeMap<Position, u32>,
    /// The last checkpoint handed out.
    checkpointed: Option<Position>,
}

/// Per-shard checkpoint safety.
#[derive(Debug, Default)]
pub struct CheckpointTracker {
    shards: HashMap<ShardId, ShardTrack>,
}

/// A tracker call that does not fit what came before: a driver bug, reported, never ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    #[error("shard {shard}: read {position} after {previous} (records must be read in order)")]
    OutOfOrder {
        shard: ShardId,
        position: Position,
        previous: Position,
    },
    #[error("shard {shard}: released {position}, which was not held")]
    NotHeld { shard: ShardId, position: Position },
}

impl CheckpointTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking a shard from its stored checkpoint (after a lease is taken).
    pub fn start(&mut self, shard: ShardId, from: Option<Position>) {
        self.shards.insert(
            shard,
            ShardTrack {
                checkpointed: from,
                ..ShardTrack::default()
            },
        );
    }

    /// Forgets a shard (lease lost or shard finished).
    pub fn stop(&mut self, shard: &ShardId) {
        self.shards.remove(shard);
    }

    /// A user record was read (and mapped, whatever it produced).
    pub fn read(&mut self, shard: &ShardId, position: Position) -> Result<(), TrackerError> {
        let track = self.shards.entry(shard.clone()).or_default();
        if let Some(previous) = track.read.back().or(track.checkpointed.as_ref())
            && *previous >= position
        {
            return Err(TrackerError::OutOfOrder {
                shard: shard.clone(),
                position,
                previous: previous.clone(),
            });
        }
        track.read.push_back(position);
        Ok(())
    }

    /// A buffer started holding rows from `position`.
    pub fn hold(&mut self, shard: &ShardId, position: Position) {
        *self
            .shards
            .entry(shard.clone())
            .or_default()
            .held
            .entry(position)
            .or_insert(0) += 1;
    }

    /// The batch that started at `position` is durable.
    pub fn release(&mut self, shard: &ShardId, position: &Position) -> Result<(), TrackerError> {
        let not_held = || TrackerError::NotHeld {
            shard: shard.clone(),
            position: position.clone(),
        };
        let track = self.shards.get_mut(shard).ok_or_else(not_held)?;
        let count = track.held.get_mut(position).ok_or_else(not_held)?;
        *count -= 1;
        if *count == 0 {
            track.held.remove(position);
        }
        Ok(())
    }

    /// The highest position that is safe to checkpoint, if it is newer than the last one handed
    /// out; the caller writes it to the lease store and the tracker forgets what lies before.
    pub fn advance(&mut self, shard: &ShardId) -> Option<Position> {
        let track = self.shards.get_mut(shard)?;
        let oldest_held = track.held.keys().next();
        let mut safe = None;
        while let Some(front) = track.read.front() {
            if oldest_held.is_some_and(|h| front >= h) {
                break;
            }
            safe = track.read.pop_front();
        }
        if safe.is_some() {
            track.checkpointed = safe.clone();
        }
        safe
    }

    /// The last checkpoint handed out for a shard.
    pub fn checkpointed(&self, shard: &ShardId) -> Option<&Position> {
        self.shards.get(shard)?.checkpointed.as_ref()
    }

    /// Nothing read is waiting and nothing is held: everything read is checkpointed.
    pub fn is_idle(&self, shard: &ShardId) -> bool {
        self.shards
            .get(shard)
            .is_none_or(|t| t.read.is_empty() && t.held.is_empty())
    }

    /// Records read but not yet safe to checkpoint: a lag metric.
    pub fn pending_records(&self, shard: &ShardId) -> usize {
        self.shards.get(shard).map_or(0, |t| t.read.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::SequenceNumber;
    use proptest::prelude::*;

    fn p(seq: u128) -> Position {
        Position::new(SequenceNumber::from_u128(seq), 0)
    }

    #[test]
    fn waits_for_the_oldest_held_record() {
        let s = ShardId::new("s");
        let mut t = CheckpointTracker::new();
        for i in 1..=4 {
            t.read(&s, p(i)).unwrap();
        }
        t.hold(&s, p(2));
        t.hold(&s, p(3));
        assert_eq!(t.advance(&s), Some(p(1)), "1 produced no rows");
        assert_eq!(t.advance(&s), None);
        t.release(&s, &p(3)).unwrap();
        assert_eq!(t.advance(&s), None, "2 is still held");
        t.release(&s, &p(2)).unwrap();
        assert_eq!(t.advance(&s), Some(p(4)));
        assert_eq!(t.checkpointed(&s), Some(&p(4)));
    }

    #[test]
    fn sub_sequences_count_as_positions() {
        let s = ShardId::new("s");
        let mut t = CheckpointTracker::new();
        let sub = |n| Position::new(SequenceNumber::from_u128(7), n);
        for n in 0..3 {
            t.read(&s, sub(n)).unwrap();
        }
        t.hold(&s, sub(2));
        assert_eq!(t.advance(&s), Some(sub(1)));
    }

    #[test]
    fn misuse_is_an_error_naming_the_shard() {
        let s = ShardId::new("s");
        let mut t = CheckpointTracker::new();
        t.start(s.clone(), Some(p(5)));
        assert_eq!(
            t.read(&s, p(5)).unwrap_err().to_string(),
            "shard s: read 5 after 5 (records must be read in order)"
        );
        assert_eq!(
            t.release(&s, &p(9)).unwrap_err().to_string(),
            "shard s: released 9, which was not held"
        );
    }

    proptest! {
        /// Whatever the interleaving, the checkpoint never passes a record that still has rows
        /// held, and it reaches the last record once everything is released.
        #[test]
        fn never_passes_a_held_record(script in prop::collection::vec((any::<bool>(), 0u8..3, any::<prop::sample::Index>()), 1..150)) {
            let s = ShardId::new("s");
            let mut t = CheckpointTracker::new();
            let mut seq = 0u128;
            let mut held: Vec<u128> = Vec::new();
            for (holds, tables, release) in script {
                seq += 1;
                t.read(&s, p(seq)).unwrap();
                if holds {
                    for _ in 0..tables {
                        t.hold(&s, p(seq));
                        held.push(seq);
                    }
                }
                if !held.is_empty() && release.index(3) == 0 {
                    let i = release.index(held.len());
                    t.release(&s, &p(held.swap_remove(i))).unwrap();
                }
                if let Some(cp) = t.advance(&s) {
                    prop_assert!(held.iter().all(|h| p(*h) > cp), "checkpoint {cp} passes a held record");
                }
            }
            for h in held.drain(..) {
                t.release(&s, &p(h)).unwrap();
            }
            t.advance(&s);
            prop_assert_eq!(t.checkpointed(&s), Some(&p(seq)));
        }
    }
}
