//! Object writes in flight: batches (with their schema object the first time a table is
//! written) and rejected events, the memory they hold, and what a failed write means.
//!
//! **A write is never given up.** Its position is held in the checkpoint tracker until it is
//! durable (contract 3), so dropping it would stall the shard anyway, and releasing its hold
//! would lose data. A failed write goes back in flight after a backoff, forever. What the
//! failure *is* decides the rest ([`after_failure`]):
//!
//! - transient (throttled, unavailable): retried quietly; the shard reads on;
//! - anything else (access denied, a disabled KMS key, metadata refused): the shard **stalls** —
//!   it is not read until the write succeeds, since every later batch would fail the same way —
//!   and every attempt is reported ([`Observation::WriteFailed`] with `stalled`: the metric and
//!   log line that page an operator, naming the key and the error). Other shards go on.
//!
//! A write whose shard was lost meanwhile is dropped at its next failure: the new owner reads
//! the records again from the checkpoint and writes them itself.
//!
//! [`Observation::WriteFailed`]: crate::ports::Observation::WriteFailed

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;

use crate::backoff::Backoff;
use crate::batch::BatchMetadata;
use crate::ports::{Bytes, Clock, ObjectWriter, PortError};
use crate::position::{Position, ShardId};

/// What is written.
#[derive(Clone, Debug)]
pub(super) enum Body {
    /// A batch object with its metadata; `schema` is its schema object `(key, JSON)`, put first,
    /// until one write of the table's schema has succeeded in this process.
    Batch {
        metadata: Box<BatchMetadata>,
        schema: Option<(String, Bytes)>,
        table: Arc<str>,
    },
    /// A `rejected/` event, and why it was rejected.
    Rejected { reason: String },
}

/// One object write and where it stands.
#[derive(Clone, Debug)]
pub(super) struct Write {
    pub key: String,
    pub body: Bytes,
    pub kind: Body,
    pub shard: ShardId,
    /// The position the tracker holds for it (a batch's first, a rejected event's own).
    pub hold: Position,
    /// Which tenure of the shard's lease it was made under.
    pub tenure: u64,
    /// Memory it holds, counted against the budget until it is done.
    pub bytes: usize,
    /// Attempts made.
    pub attempt: u32,
    /// Whether it has failed in a way that stalls its shard.
    pub stalled: bool,
}

type WriteFuture<'a> = Pin<Box<dyn Future<Output = (Write, Result<(), PortError>)> + Send + 'a>>;

/// What to do after a failed attempt: when to try again, and whether the shard stalls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Retry {
    pub delay: Duration,
    pub stalls: bool,
}

/// The decision after attempt `write.attempt` failed with `error`.
pub(super) fn after_failure(attempt: u32, error: &PortError, backoff: &Backoff, draw: f64) -> Retry {
    Retry {
        delay: backoff.delay(attempt.saturating_sub(1), draw),
        stalls: !error.is_transient(),
    }
}

/// The writes in flight.
pub(super) struct Writes<'a> {
    inflight: FuturesUnordered<WriteFuture<'a>>,
    /// Bytes of the writes in flight.
    bytes: usize,
    /// Per shard: writes failing in a way that stalls it.
    stalled: BTreeMap<ShardId, usize>,
    /// Tables whose schema object has been written by this process.
    schemas: HashSet<Arc<str>>,
}

impl std::fmt::Debug for Writes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes")
            .field("inflight", &self.inflight.len())
            .field("bytes", &self.bytes)
            .field("stalled", &self.stalled)
            .finish_non_exhaustive()
    }
}

impl<'a> Writes<'a> {
    pub fn new() -> Self {
        Writes {
            inflight: FuturesUnordered::new(),
            bytes: 0,
            stalled: BTreeMap::new(),
            schemas: HashSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a write of `shard` is failing in a way that keeps it from being read.
    pub fn stalls(&self, shard: &ShardId) -> bool {
        self.stalled.get(shard).is_some_and(|n| *n > 0)
    }

    /// Whether the schema object of `table` still has to be written.
    pub fn needs_schema(&self, table: &str) -> bool {
        !self.schemas.contains(table)
    }

    /// The futures in flight, to poll for the next finished write.
    pub fn inflight(&mut self) -> &mut FuturesUnordered<WriteFuture<'a>> {
        &mut self.inflight
    }

    /// Starts `write`, after `delay` when it is a retry.
    pub fn start<S: ObjectWriter, C: Clock>(
        &mut self,
        store: &'a S,
        clock: &'a C,
        write: Write,
        delay: Duration,
    ) {
        if write.attempt == 0 {
            self.bytes += write.bytes;
        }
        self.inflight.push(Box::pin(async move {
            if !delay.is_zero() {
                clock.sleep(delay).await;
            }
            let result = put(store, &write).await;
            (write, result)
        }));
    }

    /// A write is done for good (durable, or dropped): its memory and its stall go.
    pub fn finish(&mut self, write: &Write, succeeded: bool) {
        self.bytes -= write.bytes;
        if write.stalled {
            self.unstall(&write.shard);
        }
        if succeeded && let Body::Batch { table, .. } = &write.kind {
            self.schemas.insert(table.clone());
        }
    }

    /// `write` failed in a way that stalls its shard (counted once per write).
    pub fn stall(&mut self, write: &mut Write) {
        if !write.stalled {
            write.stalled = true;
            *self.stalled.entry(write.shard.clone()).or_default() += 1;
        }
    }

    fn unstall(&mut self, shard: &ShardId) {
        if let Some(n) = self.stalled.get_mut(shard) {
            *n -= 1;
            if *n == 0 {
                self.stalled.remove(shard);
            }
        }
    }
}

async fn put<S: ObjectWriter>(store: &S, write: &Write) -> Result<(), PortError> {
    match &write.kind {
        Body::Batch { metadata, schema, .. } => {
            if let Some((key, json)) = schema {
                store.put(key, json.clone(), "application/json").await?;
            }
            store.put_batch(&write.key, write.body.clone(), metadata).await
        }
        Body::Rejected { .. } => {
            store
                .put(&write.key, write.body.clone(), "application/json")
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_failures_stall_and_every_failure_backs_off() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10), u32::MAX);
        let denied = PortError::denied("store", "AccessDenied");
        let slow = PortError::throttled("store", "SlowDown");
        assert_eq!(
            after_failure(1, &denied, &backoff, 0.5),
            Retry {
                delay: Duration::from_millis(50),
                stalls: true
            }
        );
        assert_eq!(
            after_failure(4, &slow, &backoff, 0.5),
            Retry {
                delay: Duration::from_millis(400),
                stalls: false
            }
        );
        // However long it fails, it is retried at the cap, never given up.
        assert_eq!(
            after_failure(u32::MAX, &denied, &backoff, 1.0).delay,
            Duration::from_secs(10)
        );
    }
}
