//! The importer: notifications in, idempotent loads into the warehouse, acks out (contract 2 and 4).
//!
//! For each queue message: parse the notification; for each object it names, read the object and
//! its metadata, ask [`decide`] whether to load, skip (the manifest has it), retry later or
//! dead-letter; verify the content. The batches of one receive that are to load go to the
//! warehouse together ([`Warehouse::load_all`]: one transaction, each batch with its manifest
//! row); if that group fails, each batch is loaded alone, so a failure is charged to its own
//! batch. A message is acknowledged only after every object in it is loaded or skipped, so a crash
//! at any point means a redelivery, which the manifest turns into a skip.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;

use crate::batch::BatchMetadata;
use crate::catalog::{Catalog, Table};
use crate::import::{
    Backoff, Decision, ImportInput, ObjectRef, WarehouseError, classify, decide, parse_message, verify,
};
use crate::ports::{
    Clock, Entropy, LoadOutcome, LoadRequest, Message, ObjectStore, Observation, Observer, PortError, Queue,
    StoredObject, Warehouse,
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
    /// Batches of one receive are loaded together, in one warehouse transaction, up to this many
    /// bytes of CSV: one commit for many small batches (many active tables) instead of one each.
    /// A batch larger than this loads alone; the bound is on what the importer holds at once.
    pub load_group_bytes: usize,
    /// Backoff of failed loads; after `max_attempts` receives a batch is dead-lettered. Keep it
    /// below the queue's own redrive count so the dead letter carries a reason.
    pub backoff: Backoff,
}

impl Default for ImporterConfig {
    fn default() -> Self {
        ImporterConfig {
            receive_max: 10,
            receive_wait: Duration::from_secs(1),
            concurrency: 4,
            load_group_bytes: 8 << 20,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(300), 8),
        }
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
    DeadLetter(String),
}

impl Verdict {
    /// Adds what one more of the message's objects came to: a dead letter wins, then the first
    /// retry time.
    fn merge(&mut self, other: Verdict) {
        match (&*self, other) {
            (Verdict::DeadLetter(_), _) | (_, Verdict::Done) | (Verdict::RetryAt(_), Verdict::RetryAt(_)) => {
            }
            (_, other) => *self = other,
        }
    }
}

/// A batch that passed every check, waiting to be loaded with the others of its receive.
struct Ready<'n> {
    /// Its message's index in the receive.
    message: usize,
    object: &'n ObjectRef,
    stored: StoredObject,
    metadata: BatchMetadata,
    table: &'n Table,
    expected: Vec<String>,
}

impl Ready<'_> {
    fn request(&self) -> LoadRequest<'_> {
        LoadRequest {
            key: &self.object.key,
            metadata: &self.metadata,
            table: self.table,
            body: &self.stored.body,
        }
    }
}

/// What [`Importer::prepare`] made of an object.
enum Prepared<'n> {
    Load(Box<Ready<'n>>),
    Settled(Verdict),
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
    O: ObjectStore,
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
        })
    }

    /// Runs [`ImporterConfig::concurrency`] receive-and-load loops until `stop` resolves or one
    /// fails. Loads in flight at `stop` are abandoned: their transactions roll back and their
    /// messages come back after the visibility timeout (a redelivery, which loads or skips).
    pub async fn run(&self, stop: impl Future<Output = ()> + Send) -> Result<(), ImporterError> {
        let mut stop = std::pin::pin!(stop.fuse());
        if (&mut stop).now_or_never().is_some() {
            return Ok(());
        }
        let loops = (0..self.config.concurrency.max(1)).map(|_| async {
            loop {
                self.step().await?;
            }
        });
        let all = futures::future::try_join_all(loops).fuse();
        let mut all = std::pin::pin!(all);
        futures::select_biased! {
            result = all => result.map(|_: Vec<()>| ()),
            () = stop => Ok(()),
        }
    }

    /// Receives once and handles what came; returns how many messages.
    ///
    /// Each object of each message is read, checked and decided on first; the ones to load are
    /// loaded together, up to [`ImporterConfig::load_group_bytes`] per warehouse transaction, and
    /// only then is each message acknowledged, delayed or dead-lettered.
    pub async fn step(&self) -> Result<usize, ImporterError> {
        let messages = match self
            .queue
            .receive(self.config.receive_max, self.config.receive_wait)
            .await
        {
            Ok(m) => m,
            Err(e) if e.retryable => {
                self.observer.observe(Observation::PortRetry {
                    service: e.service,
                    error: &e.message,
                });
                self.clock
                    .sleep(self.config.backoff.delay(0, self.entropy.unit()))
                    .await;
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        };
        let notifications: Vec<_> = messages.iter().map(|m| parse_message(&m.body)).collect();
        let mut verdicts = vec![Verdict::Done; messages.len()];
        let mut group: Vec<Ready<'_>> = Vec::new();
        for (i, (message, parsed)) in messages.iter().zip(&notifications).enumerate() {
            let notification = match parsed {
                Ok(n) => n,
                Err(e) => {
                    verdicts[i] = Verdict::DeadLetter(e.to_string());
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
                        let bytes: usize = group.iter().map(|r| r.stored.body.len()).sum();
                        if !group.is_empty() && bytes + ready.stored.body.len() > self.config.load_group_bytes
                        {
                            self.load_group(&messages, &mut group, &mut verdicts).await;
                        }
                        group.push(*ready);
                    }
                    Prepared::Settled(verdict) => verdicts[i].merge(verdict),
                }
                if matches!(verdicts[i], Verdict::DeadLetter(_)) {
                    break;
                }
            }
        }
        self.load_group(&messages, &mut group, &mut verdicts).await;
        let done: Vec<&Message> = messages
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| **v == Verdict::Done)
            .map(|(m, _)| m)
            .collect();
        if !done.is_empty() {
            let acks = self.queue.ack_all(&done).await;
            for (i, message) in done.iter().enumerate() {
                match acks.get(i) {
                    Some(Ok(())) => {}
                    // Retried one at a time; a stale receipt is reported there too.
                    Some(Err(e)) if e.retryable => self.settle(message, Verdict::Done).await,
                    Some(Err(e)) => self.observer.observe(Observation::PortRetry {
                        service: e.service,
                        error: &e.message,
                    }),
                    None => self.settle(message, Verdict::Done).await,
                }
            }
        }
        for (message, verdict) in messages.iter().zip(verdicts) {
            if verdict != Verdict::Done {
                self.settle(message, verdict).await;
            }
        }
        Ok(messages.len())
    }

    /// Acknowledges, delays or dead-letters `message` as its verdict says.
    async fn settle(&self, message: &Message, verdict: Verdict) {
        // Queue calls are retried: losing an ack only means a redelivery (a skip), but a lost
        // dead-letter must not happen, and it won't, since the message stays until it succeeds.
        let (clock, entropy, observer, retry) =
            (self.clock, self.entropy, self.observer, &self.config.backoff);
        let result = match &verdict {
            Verdict::Done => {
                super::retry::with_backoff(clock, entropy, observer, retry, true, || self.queue.ack(message))
                    .await
            }
            Verdict::RetryAt(at) => {
                let delay = at.saturating_since(self.clock.now());
                super::retry::with_backoff(clock, entropy, observer, retry, true, || {
                    self.queue.retry_after(message, delay)
                })
                .await
            }
            Verdict::DeadLetter(reason) => {
                self.observer.observe(Observation::DeadLettered {
                    key: &message.id,
                    reason,
                });
                super::retry::with_backoff(clock, entropy, observer, retry, true, || {
                    self.queue.dead_letter(message, reason)
                })
                .await
            }
        };
        // Whatever failed here, the message stays in the queue and comes back when its visibility
        // lapses (or was already redelivered: a stale receipt, when another importer holds it).
        // Either way nothing is lost and the manifest turns the redelivery into a skip, so a queue
        // error is reported, never fatal.
        if let Err(e) = result {
            self.observer.observe(Observation::PortRetry {
                service: e.service,
                error: &e.message,
            });
        }
    }

    /// Reads one object and its metadata and decides on it; what passes every check (content
    /// included) is ready to load.
    async fn prepare<'n>(&self, message: &Message, index: usize, object: &'n ObjectRef) -> Prepared<'n>
    where
        'a: 'n,
    {
        let key = object.key.as_str();
        let stored = match self.store.get(key).await {
            Ok(s) => s,
            Err(e) => {
                self.observer.observe(Observation::PortRetry {
                    service: e.service,
                    error: &e.message,
                });
                return Prepared::Settled(self.retry_verdict(message.receive_count));
            }
        };
        let metadata: Option<Result<BatchMetadata, _>> = stored
            .as_ref()
            .map(|s| BatchMetadata::from_pairs(s.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        let table = match &metadata {
            Some(Ok(m)) => self.catalog.table_id(&m.table).map(|id| self.catalog.table(id)),
            _ => None,
        };
        let expected: Option<Vec<String>> = table.map(|t| t.column_names().map(str::to_owned).collect());
        let already_loaded = match &metadata {
            Some(Ok(m)) => match self.warehouse.is_loaded(key, &m.sha256).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    return Prepared::Settled(self.after_failure(
                        message,
                        object,
                        metadata.as_ref(),
                        expected.as_deref(),
                        e,
                    ));
                }
            },
            _ => false,
        };
        let input = ImportInput {
            object,
            metadata: metadata.as_ref(),
            expected_columns: expected.as_deref(),
            catalog_version: self.catalog.version(),
            already_loaded,
            attempt: message.receive_count,
            last_error: None,
            now: self.clock.now(),
            draw: self.entropy.unit(),
        };
        match decide(&input, &self.config.backoff) {
            Decision::Load => {}
            other => return Prepared::Settled(self.verdict_of(key, other)),
        }
        let (Some(stored), Some(Ok(metadata)), Some(table), Some(expected)) =
            (stored, metadata, table, expected)
        else {
            return Prepared::Settled(Verdict::DeadLetter(
                "load decided without metadata (importer bug)".into(),
            ));
        };
        if let Err(reason) = verify(&metadata, &stored.body) {
            return Prepared::Settled(Verdict::DeadLetter(reason.to_string()));
        }
        Prepared::Load(Box::new(Ready {
            message: index,
            object,
            stored,
            metadata,
            table,
            expected,
        }))
    }

    /// Loads the ready batches in one warehouse transaction and records each one's verdict. If
    /// the group fails, each batch is loaded alone, so that one bad batch neither holds the
    /// others back nor has its failure charged to them.
    async fn load_group(&self, messages: &[Message], group: &mut Vec<Ready<'_>>, verdicts: &mut [Verdict]) {
        if group.is_empty() {
            return;
        }
        let started = self.clock.now();
        let requests: Vec<LoadRequest<'_>> = group.iter().map(Ready::request).collect();
        let result = self.warehouse.load_all(&requests).await;
        drop(requests);
        match result {
            Ok(outcomes) if outcomes.len() == group.len() => {
                for (ready, outcome) in group.iter().zip(outcomes) {
                    self.loaded(ready, outcome, started);
                }
            }
            result => {
                if group.len() > 1 {
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
                        error: &format!(
                            "a group of {} loads failed, loading each alone: {error}",
                            group.len()
                        ),
                    });
                }
                for ready in group.iter() {
                    let started = self.clock.now();
                    let verdict = match self.warehouse.load(ready.request()).await {
                        Ok(outcome) => {
                            self.loaded(ready, outcome, started);
                            Verdict::Done
                        }
                        Err(e) => {
                            let metadata = Some(Ok(ready.metadata.clone()));
                            self.after_failure(
                                &messages[ready.message],
                                ready.object,
                                metadata.as_ref(),
                                Some(&ready.expected),
                                e,
                            )
                        }
                    };
                    verdicts[ready.message].merge(verdict);
                }
            }
        }
        group.clear();
    }

    fn loaded(&self, ready: &Ready<'_>, outcome: LoadOutcome, started: Timestamp) {
        let inserted = match outcome {
            LoadOutcome::Loaded { inserted } => inserted,
            LoadOutcome::AlreadyLoaded => 0,
        };
        let meta = &ready.metadata;
        self.observer.observe(Observation::Loaded {
            table: &meta.table,
            key: &ready.object.key,
            rows: meta.row_count,
            inserted,
            duration: self.clock.now().saturating_since(started),
            min_received_at: meta.min_received_at,
            max_received_at: meta.max_received_at,
        });
    }

    fn after_failure(
        &self,
        message: &Message,
        object: &ObjectRef,
        metadata: Option<&Result<BatchMetadata, crate::batch::MetadataError>>,
        expected: Option<&[String]>,
        error: WarehouseError,
    ) -> Verdict {
        let transient = classify(&error) == crate::import::ErrorClass::Transient;
        self.observer.observe(Observation::LoadRetry {
            key: &object.key,
            attempt: message.receive_count,
            error: &error.to_string(),
            transient,
        });
        let input = ImportInput {
            object,
            metadata,
            expected_columns: expected,
            catalog_version: self.catalog.version(),
            already_loaded: false,
            attempt: message.receive_count,
            last_error: Some(&error),
            now: self.clock.now(),
            draw: self.entropy.unit(),
        };
        self.verdict_of(&object.key, decide(&input, &self.config.backoff))
    }

    fn retry_verdict(&self, attempt: u32) -> Verdict {
        let at = self
            .config
            .backoff
            .retry_at(attempt, self.clock.now(), self.entropy.unit());
        // A store that keeps failing is not the batch's fault: keep retrying at the cap.
        Verdict::RetryAt(at.unwrap_or_else(|| self.clock.now().saturating_add(self.config.backoff.cap)))
    }

    fn verdict_of(&self, key: &str, decision: Decision) -> Verdict {
        match decision {
            Decision::Load => Verdict::Done,
            Decision::Skip { reason } => {
                self.observer.observe(Observation::LoadSkipped {
                    key,
                    reason: &reason.to_string(),
                });
                Verdict::Done
            }
            Decision::RetryAt { at, .. } => Verdict::RetryAt(at),
            Decision::DeadLetter { reason } => Verdict::DeadLetter(reason.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::catalog::Source;
    use crate::ports::{NoObserver, StoredObject};

    struct Now;
    impl Clock for Now {
        fn now(&self) -> Timestamp {
            Timestamp::from_millis(1_000)
        }
        fn sleep_until(&self, _: Timestamp) -> impl Future<Output = ()> + Send {
            std::future::ready(())
        }
    }
    struct Half;
    impl Entropy for Half {
        fn unit(&self) -> f64 {
            0.5
        }
        fn fill(&self, buf: &mut [u8]) {
            buf.fill(7);
        }
    }

    /// A queue that delivers one message, then fails every ack / delay / dead-letter as a stale
    /// receipt does (another importer received the message since).
    struct StaleQueue(Mutex<Option<Message>>);
    impl Queue for StaleQueue {
        async fn receive(&self, _: usize, _: Duration) -> Result<Vec<Message>, PortError> {
            Ok(self.0.lock().unwrap().take().into_iter().collect())
        }
        async fn ack(&self, _: &Message) -> Result<(), PortError> {
            Err(PortError::permanent("queue", "stale receipt"))
        }
        async fn retry_after(&self, _: &Message, _: Duration) -> Result<(), PortError> {
            Err(PortError::permanent("queue", "stale receipt"))
        }
        async fn dead_letter(&self, _: &Message, _: &str) -> Result<(), PortError> {
            Err(PortError::permanent("queue", "stale receipt"))
        }
    }
    struct NoObjects;
    impl ObjectStore for NoObjects {
        async fn put_batch(
            &self,
            _: &str,
            _: crate::ports::Bytes,
            _: &BatchMetadata,
        ) -> Result<(), PortError> {
            Ok(())
        }
        async fn put(&self, _: &str, _: Vec<u8>, _: &str) -> Result<(), PortError> {
            Ok(())
        }
        async fn get(&self, _: &str) -> Result<Option<StoredObject>, PortError> {
            Ok(None)
        }
    }
    struct Empty;
    impl Warehouse for Empty {
        async fn migrate(&self, _: &Catalog) -> Result<(), WarehouseError> {
            Ok(())
        }
        async fn is_loaded(&self, _: &str, _: &str) -> Result<bool, WarehouseError> {
            Ok(false)
        }
        async fn load_all(&self, requests: &[LoadRequest<'_>]) -> Result<Vec<LoadOutcome>, WarehouseError> {
            Ok(vec![LoadOutcome::AlreadyLoaded; requests.len()])
        }
    }

    #[test]
    fn a_stale_receipt_is_not_fatal() {
        let catalog = table_t();
        let message = Message {
            id: "m".into(),
            receipt: "r".into(),
            body: "not json".into(),
            receive_count: 1,
        };
        let queue = StaleQueue(Mutex::new(Some(message)));
        futures::executor::block_on(async {
            let importer = Importer::start(
                &queue,
                &NoObjects,
                &Empty,
                &Now,
                &Half,
                &NoObserver,
                &catalog,
                ImporterConfig::default(),
            )
            .await
            .unwrap();
            assert_eq!(
                importer.step().await.unwrap(),
                1,
                "the message was handled and the importer goes on"
            );
            assert_eq!(importer.step().await.unwrap(), 0);
        });
    }

    /// A queue whose receives never return, counting the receivers waiting at once.
    #[derive(Default)]
    struct Waiting(std::sync::atomic::AtomicUsize);
    impl Queue for Waiting {
        async fn receive(&self, _: usize, _: Duration) -> Result<Vec<Message>, PortError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending().await
        }
        async fn ack(&self, _: &Message) -> Result<(), PortError> {
            Ok(())
        }
        async fn retry_after(&self, _: &Message, _: Duration) -> Result<(), PortError> {
            Ok(())
        }
        async fn dead_letter(&self, _: &Message, _: &str) -> Result<(), PortError> {
            Ok(())
        }
    }

    #[test]
    fn the_configured_number_of_loops_receive_at_once() {
        let catalog = table_t();
        let queue = Waiting::default();
        let config = ImporterConfig {
            concurrency: 3,
            ..ImporterConfig::default()
        };
        let importer = futures::executor::block_on(Importer::start(
            &queue,
            &NoObjects,
            &Empty,
            &Now,
            &Half,
            &NoObserver,
            &catalog,
            config,
        ))
        .unwrap();
        let mut run = Box::pin(importer.run(std::future::pending()));
        assert!(run.as_mut().now_or_never().is_none());
        assert_eq!(queue.0.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// A store of ready batches of table `t`, a queue delivering one notification for each, and a
    /// warehouse that records its groups and refuses (as poison) every group holding `bad`.
    struct Batches {
        objects: std::collections::BTreeMap<String, StoredObject>,
        queue: Mutex<Vec<Message>>,
        settled: Mutex<Vec<(String, &'static str)>>,
        /// How many messages each `ack_all` carried.
        ack_calls: Mutex<Vec<usize>>,
    }

    impl Batches {
        fn new(catalog: &Catalog, count: u128) -> Self {
            use sha2::Digest;
            let shard = crate::position::ShardId::new("shardId-000000000000");
            let columns: Vec<String> = catalog
                .table(catalog.table_id("t").unwrap())
                .column_names()
                .map(str::to_owned)
                .collect();
            let at = Timestamp::from_millis(1_700_000_000_000);
            let mut objects = std::collections::BTreeMap::new();
            let mut messages = Vec::new();
            for i in 0..count {
                let first =
                    crate::position::Position::new(crate::position::SequenceNumber::from_u128(2 * i + 1), 0);
                let last =
                    crate::position::Position::new(crate::position::SequenceNumber::from_u128(2 * i + 2), 0);
                let mut body = Vec::new();
                for _ in 0..2 {
                    body.extend(
                        std::iter::repeat_n("x", columns.len())
                            .collect::<Vec<_>>()
                            .join(",")
                            .bytes(),
                    );
                    body.push(b'\n');
                }
                let metadata = BatchMetadata {
                    table: "t".into(),
                    columns: columns.clone(),
                    row_count: 2,
                    shard: shard.clone(),
                    first: first.clone(),
                    last: last.clone(),
                    catalog_version: catalog.version().into(),
                    sha256: hex::encode(sha2::Sha256::digest(&body)),
                    min_received_at: at,
                    max_received_at: at,
                    compression: Default::default(),
                };
                let key = crate::batch::object_key("t", at, &shard, &first, &last, Default::default());
                messages.push(Message {
                    id: format!("m{i}"),
                    receipt: format!("r{i}"),
                    body: crate::import::object_created_message("b", &key, body.len() as u64, i as u64, at),
                    receive_count: 1,
                });
                objects.insert(
                    key,
                    StoredObject {
                        body,
                        metadata: metadata.to_pairs(),
                    },
                );
            }
            Batches {
                objects,
                queue: Mutex::new(messages),
                settled: Mutex::new(Vec::new()),
                ack_calls: Mutex::new(Vec::new()),
            }
        }

        fn key(&self, i: usize) -> String {
            self.objects.keys().nth(i).unwrap().clone()
        }
    }

    impl Queue for Batches {
        async fn receive(&self, max: usize, _: Duration) -> Result<Vec<Message>, PortError> {
            let mut q = self.queue.lock().unwrap();
            let n = max.min(q.len());
            Ok(q.drain(..n).collect())
        }
        async fn ack(&self, m: &Message) -> Result<(), PortError> {
            self.settled.lock().unwrap().push((m.id.clone(), "ack"));
            Ok(())
        }
        async fn ack_all(&self, messages: &[&Message]) -> Vec<Result<(), PortError>> {
            self.ack_calls.lock().unwrap().push(messages.len());
            let mut settled = self.settled.lock().unwrap();
            settled.extend(messages.iter().map(|m| (m.id.clone(), "ack")));
            vec![Ok(()); messages.len()]
        }
        async fn retry_after(&self, m: &Message, _: Duration) -> Result<(), PortError> {
            self.settled.lock().unwrap().push((m.id.clone(), "retry"));
            Ok(())
        }
        async fn dead_letter(&self, m: &Message, _: &str) -> Result<(), PortError> {
            self.settled.lock().unwrap().push((m.id.clone(), "dead letter"));
            Ok(())
        }
    }

    impl ObjectStore for Batches {
        async fn put_batch(
            &self,
            _: &str,
            _: crate::ports::Bytes,
            _: &BatchMetadata,
        ) -> Result<(), PortError> {
            Ok(())
        }
        async fn put(&self, _: &str, _: Vec<u8>, _: &str) -> Result<(), PortError> {
            Ok(())
        }
        async fn get(&self, key: &str) -> Result<Option<StoredObject>, PortError> {
            Ok(self.objects.get(key).cloned())
        }
    }

    #[derive(Default)]
    struct Groups {
        bad: Option<String>,
        calls: Mutex<Vec<Vec<String>>>,
    }
    impl Warehouse for Groups {
        async fn migrate(&self, _: &Catalog) -> Result<(), WarehouseError> {
            Ok(())
        }
        async fn is_loaded(&self, _: &str, _: &str) -> Result<bool, WarehouseError> {
            Ok(false)
        }
        async fn load_all(&self, requests: &[LoadRequest<'_>]) -> Result<Vec<LoadOutcome>, WarehouseError> {
            let keys: Vec<String> = requests.iter().map(|r| r.key.to_owned()).collect();
            let poisoned = keys.iter().any(|k| Some(k) == self.bad.as_ref());
            self.calls.lock().unwrap().push(keys);
            if poisoned {
                return Err(WarehouseError::with_sqlstate(
                    "22P02",
                    "invalid input syntax for type bigint",
                ));
            }
            Ok(vec![LoadOutcome::Loaded { inserted: 2 }; requests.len()])
        }
    }

    fn table_t() -> Catalog {
        Catalog::load([Source {
            name: "c.toml".into(),
            text: "[[events]]\ntype = \"e\"\n[[events.outputs]]\ntable = \"t\"\ncolumns = [ { name = \"a\", type = \"text\", pointer = \"/a\" } ]\n".into(),
        }])
        .unwrap()
    }

    fn step_once(batches: &Batches, warehouse: &Groups, catalog: &Catalog, load_group_bytes: usize) {
        let config = ImporterConfig {
            load_group_bytes,
            ..ImporterConfig::default()
        };
        futures::executor::block_on(async {
            let importer = Importer::start(
                batches,
                batches,
                warehouse,
                &Now,
                &Half,
                &NoObserver,
                catalog,
                config,
            )
            .await
            .unwrap();
            assert_eq!(importer.step().await.unwrap(), batches.objects.len());
        });
    }

    #[test]
    fn the_batches_of_a_receive_load_in_one_group() {
        let catalog = table_t();
        let batches = Batches::new(&catalog, 4);
        let warehouse = Groups::default();
        step_once(&batches, &warehouse, &catalog, 8 << 20);
        let keys: Vec<String> = (0..4).map(|i| batches.key(i)).collect();
        assert_eq!(
            *warehouse.calls.lock().unwrap(),
            vec![keys],
            "one transaction for the four"
        );
        assert_eq!(
            batches
                .settled
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, s)| *s == "ack")
                .count(),
            4
        );
    }

    #[test]
    fn groups_stop_at_their_byte_bound() {
        let catalog = table_t();
        let batches = Batches::new(&catalog, 4);
        let one = batches.objects.values().next().unwrap().body.len();
        let warehouse = Groups::default();
        // Room for two batches per group, not three.
        step_once(&batches, &warehouse, &catalog, 2 * one + 1);
        let sizes: Vec<usize> = warehouse.calls.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2]);
    }

    #[test]
    fn a_failed_group_loads_each_batch_alone() {
        let catalog = table_t();
        let batches = Batches::new(&catalog, 3);
        let bad = batches.key(1);
        let warehouse = Groups {
            bad: Some(bad.clone()),
            ..Groups::default()
        };
        step_once(&batches, &warehouse, &catalog, 8 << 20);
        let calls = warehouse.calls.lock().unwrap().clone();
        let (k0, k2) = (batches.key(0), batches.key(2));
        assert_eq!(
            calls,
            vec![
                vec![k0.clone(), bad.clone(), k2.clone()],
                vec![k0],
                vec![bad],
                vec![k2]
            ],
            "the group, then each batch alone"
        );
        let mut settled = batches.settled.lock().unwrap().clone();
        settled.sort();
        assert_eq!(
            settled,
            vec![
                ("m0".into(), "ack"),
                ("m1".into(), "dead letter"),
                ("m2".into(), "ack")
            ],
            "only the bad batch's message is dead-lettered"
        );
        assert_eq!(*batches.ack_calls.lock().unwrap(), vec![2]);
    }
}
