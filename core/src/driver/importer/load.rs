//! Loading the ready batches of a cycle: together in one warehouse transaction; in halves when
//! that fails, down to each batch alone, so a failure is charged to its own batch while a
//! transient one costs a few more loads rather than one per batch; and, when a batch fails on a row
//! the warehouse refuses, without that row — which goes to `rejected/rows/` with the warehouse's
//! reason — so the batch's other rows still load, exactly once (contract 4).

use super::prepare::Ready;
use super::{Importer, Verdict};
use crate::import::{
    DeadLetterReason, ErrorClass, IsolationOutcome, IsolationStep, RefusedRows, RowIsolation, WarehouseError,
    classify,
};
use crate::ports::{
    Clock, Entropy, LoadOutcome, LoadRequest, Message, ObjectReader, ObjectWriter, Observation, Observer,
    Queue, Warehouse,
};
use crate::time::Timestamp;

impl<'a, Q, O, W, C, E, B> Importer<'a, Q, O, W, C, E, B>
where
    Q: Queue,
    O: ObjectReader + ObjectWriter,
    W: Warehouse,
    C: Clock,
    E: Entropy,
    B: Observer,
{
    /// Loads the ready batches in one warehouse transaction and records each one's verdict. If
    /// the group fails, each half is loaded the same way, down to single batches, so that one
    /// bad batch neither holds the others back nor has its failure charged to them, and a
    /// transient failure of a large cycle (hundreds of tables) is not paid for with one
    /// transaction per batch.
    pub(super) async fn load_group(
        &self,
        messages: &[Message],
        group: &mut Vec<Ready<'_>>,
        verdicts: &mut [Verdict],
    ) {
        if group.is_empty() {
            return;
        }
        self.load_part(messages, group, verdicts).await;
        group.clear();
    }

    async fn load_part(&self, messages: &[Message], group: &[Ready<'_>], verdicts: &mut [Verdict]) {
        if let [ready] = group {
            let verdict = self.load_one(&messages[ready.message], ready).await;
            verdicts[ready.message].merge(verdict);
            return;
        }
        let started = self.clock.now();
        let requests: Vec<LoadRequest<'_>> = group.iter().map(|r| r.request(&[])).collect();
        let result = self.warehouse.load_all(&requests).await;
        drop(requests);
        match result {
            Ok(outcomes) if outcomes.len() == group.len() => {
                for (ready, outcome) in group.iter().zip(outcomes) {
                    self.loaded(ready, outcome, started);
                }
            }
            result => {
                let error = match &result {
                    Ok(outcomes) => format!(
                        "the warehouse returned {} outcomes for {} loads (warehouse adapter bug)",
                        outcomes.len(),
                        group.len()
                    ),
                    Err(e) => e.to_string(),
                };
                self.observer.observe(Observation::PortRetry {
                    service: "warehouse",
                    kind: crate::ports::ErrorKind::Unavailable,
                    error: &format!(
                        "a group of {} loads failed, loading it in halves: {error}",
                        group.len()
                    ),
                });
                let (a, b) = group.split_at(group.len() / 2);
                Box::pin(self.load_part(messages, a, verdicts)).await;
                Box::pin(self.load_part(messages, b, verdicts)).await;
            }
        }
    }

    /// One batch alone; a refused row starts its isolation.
    async fn load_one(&self, message: &Message, ready: &Ready<'_>) -> Verdict {
        let started = self.clock.now();
        match self.warehouse.load(ready.request(&[])).await {
            Ok(outcome) => {
                self.loaded(ready, outcome, started);
                Verdict::Done
            }
            Err(e) if classify(&e) == ErrorClass::Row => self.isolate(message, ready, e).await,
            Err(e) => self.failed(message, ready, e),
        }
    }

    /// Finds the rows the warehouse refuses ([`RowIsolation`]) and loads the others. The refused
    /// rows are written to `rejected/rows/` before each load that leaves them out, so they are
    /// durable when it commits; a crash in between makes a redelivery do it all again.
    async fn isolate(&self, message: &Message, ready: &Ready<'_>, first: WarehouseError) -> Verdict {
        let rows = ready.metadata.row_count;
        let mut isolation = RowIsolation::new(rows, self.config.max_refused_rows, &first);
        loop {
            let started = self.clock.now();
            let (step_result, committing) = match isolation.next() {
                IsolationStep::GiveUp { reason } => {
                    let reason = DeadLetterReason::RowsRefused(reason);
                    return Verdict::DeadLetter {
                        code: reason.code(),
                        reason: reason.to_string(),
                    };
                }
                IsolationStep::Probe { rows, skip } => (
                    self.warehouse
                        .probe(ready.request(&skip), rows)
                        .await
                        .map(|()| None),
                    false,
                ),
                IsolationStep::Load { skip } => {
                    if let Err(verdict) = self.keep_refused(message, ready, &isolation).await {
                        return verdict;
                    }
                    (self.warehouse.load(ready.request(&skip)).await.map(Some), true)
                }
            };
            match step_result {
                Ok(outcome) => {
                    if committing {
                        for (row, reason) in isolation.refused() {
                            self.observer.observe(Observation::RowRefused {
                                key: &ready.location.key,
                                row: *row,
                                reason,
                            });
                        }
                        if let Some(outcome) = outcome {
                            self.loaded(ready, outcome, started);
                        }
                        return Verdict::Done;
                    }
                    let _ = isolation.record(IsolationOutcome::Ok);
                }
                Err(e) => {
                    if let Err(other) = isolation.record(IsolationOutcome::Failed(&e)) {
                        return self.failed(message, ready, other);
                    }
                }
            }
        }
    }

    /// Writes the rows refused so far to `rejected/rows/` (nothing when none are).
    async fn keep_refused(
        &self,
        message: &Message,
        ready: &Ready<'_>,
        isolation: &RowIsolation,
    ) -> Result<(), Verdict> {
        if isolation.refused().is_empty() {
            return Ok(());
        }
        let record = RefusedRows::new(
            &ready.location,
            &ready.table.name,
            isolation.refused(),
            ready.csv.as_deref(),
        );
        let (key, body) = record.object();
        let store = self.store;
        let written = super::with_backoff(
            self.clock,
            self.entropy,
            self.observer,
            &self.config.backoff,
            true,
            || store.put(&key, body.clone(), "application/json"),
        )
        .await;
        written.map_err(|e| {
            self.observer.observe(Observation::retry(&e));
            self.retry_verdict(message.receive_count)
        })
    }

    fn failed(&self, message: &Message, ready: &Ready<'_>, error: WarehouseError) -> Verdict {
        let metadata = Some(Ok(ready.metadata.clone()));
        let schema = Some(Ok((*ready.schema).clone()));
        self.after_failure(
            message,
            ready.object,
            metadata.as_ref(),
            schema.as_ref(),
            Some(&ready.expected),
            error,
        )
    }

    fn loaded(&self, ready: &Ready<'_>, outcome: LoadOutcome, started: Timestamp) {
        let inserted = match outcome {
            LoadOutcome::Loaded { inserted } => inserted,
            LoadOutcome::AlreadyLoaded => 0,
        };
        let meta = &ready.metadata;
        self.observer.observe(Observation::Loaded {
            table: &meta.table,
            key: &ready.location.key,
            rows: meta.row_count,
            inserted,
            duration: self.clock.now().saturating_since(started),
            min_received_at: meta.min_received_at,
            max_received_at: meta.max_received_at,
        });
    }
}
