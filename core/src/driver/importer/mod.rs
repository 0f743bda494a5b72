//! The importer: notifications in, idempotent loads into the warehouse, acks out (contract 2 and 4).
//!
//! Per load cycle (one receive, or more: [`ImporterConfig::cycle_max_messages`]): every message's notification is parsed; every object it names is read and
//! decided on ([`prepare`]: load, skip because the manifest has it, retry later, dead-letter);
//! the batches to load are loaded together ([`load`]: one warehouse transaction per group, each
//! group in halves down to each batch alone when it fails, and a batch's refused rows isolated so
//! its other rows load).
//! Meanwhile a heartbeat keeps the messages hidden (a third of the visibility timeout at a time),
//! so no load, however long, is delivered twice. Then each message is settled: acknowledged
//! (batched, at most [`Queue::MAX_BATCH`] a call), hidden until its retry, or dead-lettered with
//! its reason. A message is acknowledged only after every object in it is loaded or skipped, so a
//! crash at any point means a redelivery, which the manifest turns into a skip.

mod load;
mod prepare;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;

use self::prepare::{Prepared, Ready};
use super::retry::with_backoff;
use crate::backoff::Backoff;
use crate::batch::BatchSchema;
use crate::catalog::Catalog;
use crate::import::{WarehouseError, parse_message};
use crate::ports::{
    Clock, DeadLetterNote, Entropy, Message, ObjectReader, ObjectWriter, Observation, Observer, PortError,
    Queue, Warehouse,
};
use crate::time::Timestamp;

/// How the importer receives and retries.
#[derive(Clone, Debug)]
pub struct ImporterConfig {
    /// Messages per receive (SQS: at most 10).
    pub receive_max: usize,
    /// Long-poll wait of a receive.
    pub receive_wait: Duration,
    /// Receive-and-load loops run at once. Loads are dominated by waiting on the warehouse (a
    /// Redshift COPY takes seconds), and many small per-table batches arrive at once when many
    /// tables are active: one loop at a time leaves the warehouse idle between round trips.
    pub concurrency: usize,
    /// Messages one load cycle takes, at most. The first receive waits (long poll); then
    /// receives that do not wait take what else is queued — what arrived while the previous cycle
    /// loaded — until the queue has no more or this many are in hand. With hundreds of active
    /// tables that is one transaction per cycle (on Redshift one COPY per table and one commit)
    /// instead of one per receive, so freshness degrades with load instead of queueing. The
    /// default is one receive's worth.
    pub cycle_max_messages: usize,
    /// Batches of one cycle are loaded together, in one warehouse transaction, up to this many
    /// bytes of CSV: one commit for many small batches (many active tables) instead of one each.
    /// A batch larger than this loads alone; the bound is on what the importer holds at once.
    pub load_group_bytes: usize,
    /// Backoff of failed loads; after `max_attempts` receives a batch is dead-lettered. Keep it
    /// below the queue's own redrive count so the dead letter carries a reason.
    pub backoff: Backoff,
    /// Rows of one batch the warehouse may refuse before the batch, not its rows, is judged at
    /// fault (the table changed under the catalog) and dead-lettered whole.
    pub max_refused_rows: usize,
}

impl Default for ImporterConfig {
    fn default() -> Self {
        ImporterConfig {
            receive_max: 10,
            receive_wait: Duration::from_secs(1),
            cycle_max_messages: 10,
            concurrency: 4,
            load_group_bytes: 8 << 20,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(300), 8),
            max_refused_rows: 100,
        }
    }
}

/// How many messages a load cycle still takes (the policy of [`Importer`]'s receive): another
/// receive only while the last one came back full and the cycle has room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cycle {
    per_receive: usize,
    max: usize,
    taken: usize,
    last: Option<usize>,
}

impl Cycle {
    fn new(per_receive: usize, max: usize) -> Self {
        Cycle {
            per_receive,
            max: max.max(1),
            taken: 0,
            last: None,
        }
    }

    /// What the next receive asks for.
    fn next_receive(&self) -> usize {
        self.per_receive.min(self.max - self.taken).max(1)
    }

    fn took(&mut self, n: usize) {
        self.last = Some(n);
        self.taken += n;
    }

    fn wants_more(&self) -> bool {
        // A short receive means the queue had no more at that moment.
        self.taken < self.max && self.last == Some(self.per_receive)
    }
}

/// A failure that stops the importer.
#[derive(Debug, thiserror::Error)]
pub enum ImporterError {
    #[error("warehouse migration failed: {0}")]
    Migrate(WarehouseError),
    #[error("{0}")]
    Port(#[from] PortError),
}

/// What one message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Done,
    RetryAt(Timestamp),
    DeadLetter { code: &'static str, reason: String },
}

impl Verdict {
    /// Adds what one more of the message's objects came to: a dead letter wins, then the first
    /// retry time.
    fn merge(&mut self, other: Verdict) {
        match (&*self, other) {
            (Verdict::DeadLetter { .. }, _)
            | (_, Verdict::Done)
            | (Verdict::RetryAt(_), Verdict::RetryAt(_)) => {}
            (_, other) => *self = other,
        }
    }
}

/// The importer driver.
pub struct Importer<'a, Q, O, W, C, E, B> {
    queue: &'a Q,
    store: &'a O,
    warehouse: &'a W,
    clock: &'a C,
    entropy: &'a E,
    observer: &'a B,
    catalog: &'a Catalog,
    config: ImporterConfig,
    /// Schema objects read so far, by bucket and digest: they are content-addressed, so never
    /// stale.
    schemas: Mutex<HashMap<(String, String), Arc<BatchSchema>>>,
}

impl<Q, O, W, C, E, B> std::fmt::Debug for Importer<'_, Q, O, W, C, E, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<'a, Q, O, W, C, E, B> Importer<'a, Q, O, W, C, E, B>
where
    Q: Queue,
    O: ObjectReader + ObjectWriter,
    W: Warehouse,
    C: Clock,
    E: Entropy,
    B: Observer,
{
    /// Runs the warehouse migrations, then returns the driver.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        queue: &'a Q,
        store: &'a O,
        warehouse: &'a W,
        clock: &'a C,
        entropy: &'a E,
        observer: &'a B,
        catalog: &'a Catalog,
        config: ImporterConfig,
    ) -> Result<Self, ImporterError> {
        warehouse.migrate(catalog).await.map_err(ImporterError::Migrate)?;
        Ok(Importer {
            queue,
            store,
            warehouse,
            clock,
            entropy,
            observer,
            catalog,
            config,
            schemas: Mutex::new(HashMap::new()),
        })
    }

    /// Runs [`ImporterConfig::concurrency`] receive-and-load loops until `stop` resolves or one
    /// fails. At `stop`, each loop finishes the receive in hand (its loads and settlements)
    /// before it returns, so a graceful shutdown leaves nothing to redeliver.
    pub async fn run(&self, stop: impl Future<Output = ()> + Send) -> Result<(), ImporterError> {
        let stop = stop.shared();
        let loops = (0..self.config.concurrency.max(1)).map(|_| {
            let stop = stop.clone();
            async move {
                loop {
                    if stop.peek().is_some() {
                        return Ok::<(), ImporterError>(());
                    }
                    // Receiving is the one wait a stop may cut short: nothing is held yet.
                    let received = {
                        let receive = self.receive().fuse();
                        let mut receive = std::pin::pin!(receive);
                        let mut stopped = stop.clone().fuse();
                        futures::select_biased! {
                            () = stopped => return Ok(()),
                            messages = receive => messages?,
                        }
                    };
                    self.handle(received).await;
                }
            }
        });
        futures::future::try_join_all(loops).await.map(|_| ())
    }

    /// Receives once and handles what came; returns how many messages.
    pub async fn step(&self) -> Result<usize, ImporterError> {
        let messages = self.receive().await?;
        let n = messages.len();
        self.handle(messages).await;
        Ok(n)
    }

    /// One load cycle's messages: a waiting receive, then ([`Cycle`]) receives that do not wait
    /// while the queue keeps handing over full batches.
    async fn receive(&self) -> Result<Vec<Message>, ImporterError> {
        let per_receive = self.config.receive_max.clamp(1, Q::MAX_BATCH);
        let mut cycle = Cycle::new(per_receive, self.config.cycle_max_messages);
        let mut messages = self
            .receive_once(cycle.next_receive(), self.config.receive_wait)
            .await?;
        cycle.took(messages.len());
        while cycle.wants_more() {
            let more = self.receive_once(cycle.next_receive(), Duration::ZERO).await?;
            cycle.took(more.len());
            messages.extend(more);
        }
        Ok(messages)
    }

    async fn receive_once(&self, max: usize, wait: Duration) -> Result<Vec<Message>, ImporterError> {
        match self.queue.receive(max, wait).await {
            Ok(m) => Ok(m),
            Err(e) if e.is_transient() => {
                self.observer.observe(Observation::retry(&e));
                self.clock
                    .sleep(self.config.backoff.delay(0, self.entropy.unit()))
                    .await;
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Loads what the messages announce, with the heartbeat going, then settles each message.
    async fn handle(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let verdicts = {
            let work = self.work(&messages).fuse();
            let heartbeat = self.heartbeat(&messages).fuse();
            let mut work = std::pin::pin!(work);
            let mut heartbeat = std::pin::pin!(heartbeat);
            futures::select_biased! {
                verdicts = work => verdicts,
                () = heartbeat => unreachable!("the heartbeat never ends"),
            }
        };
        self.settle_all(&messages, verdicts).await;
    }

    /// Every object of every message read, decided on and (the loadable ones) loaded.
    async fn work(&self, messages: &[Message]) -> Vec<Verdict> {
        let notifications: Vec<_> = messages.iter().map(|m| parse_message(&m.body)).collect();
        let mut verdicts = vec![Verdict::Done; messages.len()];
        let mut group: Vec<Ready<'_>> = Vec::new();
        for (i, (message, parsed)) in messages.iter().zip(&notifications).enumerate() {
            let notification = match parsed {
                Ok(n) => n,
                Err(e) => {
                    let reason = crate::import::DeadLetterReason::MalformedNotification(e.clone());
                    verdicts[i] = Verdict::DeadLetter {
                        code: reason.code(),
                        reason: reason.to_string(),
                    };
                    continue;
                }
            };
            for ignored in &notification.ignored {
                self.observer.observe(Observation::LoadSkipped {
                    key: "",
                    reason: &ignored.to_string(),
                });
            }
            for object in &notification.objects {
                match self.prepare(message, i, object).await {
                    Prepared::Load(ready) => {
                        let bytes: usize = group.iter().map(Ready::size).sum();
                        if !group.is_empty() && bytes + ready.size() > self.config.load_group_bytes {
                            self.load_group(messages, &mut group, &mut verdicts).await;
                        }
                        group.push(*ready);
                    }
                    Prepared::Settled(verdict) => verdicts[i].merge(verdict),
                }
                if matches!(verdicts[i], Verdict::DeadLetter { .. }) {
                    break;
                }
            }
        }
        self.load_group(messages, &mut group, &mut verdicts).await;
        verdicts
    }

    /// Keeps `messages` hidden while their loads run: every third of the visibility timeout,
    /// hides them for a whole one again. Never returns.
    async fn heartbeat(&self, messages: &[Message]) {
        let visibility = self.queue.visibility_timeout();
        if visibility < Duration::from_secs(1) {
            return std::future::pending().await;
        }
        loop {
            self.clock.sleep(visibility / 3).await;
            for message in messages {
                if let Err(e) = self.queue.set_visibility(message, visibility).await {
                    // A lost heartbeat costs at most a redelivery, which the manifest skips.
                    self.observer.observe(Observation::retry(&e));
                }
            }
        }
    }

    /// Acknowledges the done messages (in batches the queue takes), then delays or
    /// dead-letters the others.
    async fn settle_all(&self, messages: &[Message], verdicts: Vec<Verdict>) {
        let done: Vec<&Message> = messages
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| **v == Verdict::Done)
            .map(|(m, _)| m)
            .collect();
        for chunk in done.chunks(Q::MAX_BATCH) {
            let acks = self.queue.ack_all(chunk).await;
            for (i, message) in chunk.iter().enumerate() {
                match acks.get(i) {
                    Some(Ok(())) => {}
                    // Retried one at a time; a stale receipt is reported there too.
                    Some(Err(e)) if e.is_transient() => self.settle(message, Verdict::Done).await,
                    Some(Err(e)) => self.observer.observe(Observation::retry(e)),
                    None => self.settle(message, Verdict::Done).await,
                }
            }
        }
        for (message, verdict) in messages.iter().zip(verdicts) {
            if verdict != Verdict::Done {
                self.settle(message, verdict).await;
            }
        }
    }

    /// Acknowledges, delays or dead-letters `message` as its verdict says.
    async fn settle(&self, message: &Message, verdict: Verdict) {
        // Queue calls are retried: losing an ack only means a redelivery (a skip), but a lost
        // dead-letter must not happen, and it won't, since the message stays until it succeeds.
        let (clock, entropy, observer, retry) =
            (self.clock, self.entropy, self.observer, &self.config.backoff);
        let result = match &verdict {
            Verdict::Done => {
                with_backoff(clock, entropy, observer, retry, true, || self.queue.ack(message)).await
            }
            Verdict::RetryAt(at) => {
                let delay = at.saturating_since(self.clock.now());
                with_backoff(clock, entropy, observer, retry, true, || {
                    self.queue.set_visibility(message, delay)
                })
                .await
            }
            Verdict::DeadLetter { code, reason } => {
                self.observer.observe(Observation::DeadLettered {
                    key: &message.id,
                    code,
                    reason,
                });
                with_backoff(clock, entropy, observer, retry, true, || {
                    self.queue.dead_letter(message, DeadLetterNote { code, reason })
                })
                .await
            }
        };
        // Whatever failed here, the message stays in the queue and comes back when its visibility
        // lapses (or was already redelivered: a stale receipt, when another importer holds it).
        // Either way nothing is lost and the manifest turns the redelivery into a skip, so a queue
        // error is reported, never fatal.
        if let Err(e) = result {
            self.observer.observe(Observation::retry(&e));
        }
    }

    /// When to try a batch again after `attempt` failed for a reason that is not its own (the
    /// store could not be read): with backoff, and at the cap once the attempts run out.
    fn retry_verdict(&self, attempt: u32) -> Verdict {
        let at = self
            .config
            .backoff
            .retry_at(attempt, self.clock.now(), self.entropy.unit());
        Verdict::RetryAt(at.unwrap_or_else(|| self.clock.now().saturating_add(self.config.backoff.cap)))
    }
}
