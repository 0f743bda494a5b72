//! The importer: notifications in, idempotent loads into the warehouse, acks out (contract 2 and 4).
//!
//! For each queue message: parse the notification; for each object it names, read the object and
//! its metadata, ask [`decide`] whether to load, skip (the manifest has it), retry later or
//! dead-letter; verify the content; load in one transaction with its manifest row. The message is
//! acknowledged only after every object in it is loaded or skipped, so a crash at any point means
//! a redelivery, which the manifest turns into a skip.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;

use crate::batch::BatchMetadata;
use crate::catalog::Catalog;
use crate::import::{
    Backoff, Decision, ImportInput, WarehouseError, classify, decide, parse_message, verify,
};
use crate::ports::{
    Clock, Entropy, LoadOutcome, LoadRequest, Message, ObjectStore, Observation, Observer, PortError, Queue,
    Warehouse,
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
        for message in &messages {
            self.handle(message).await?;
        }
        Ok(messages.len())
    }

    async fn handle(&self, message: &Message) -> Result<(), ImporterError> {
        let verdict = match parse_message(&message.body) {
            Err(e) => Verdict::DeadLetter(e.to_string()),
            Ok(notification) => {
                for ignored in &notification.ignored {
                    self.observer.observe(Observation::LoadSkipped {
                        key: "",
                        reason: &ignored.to_string(),
                    });
                }
                let mut verdict = Verdict::Done;
                for object in &notification.objects {
                    match self.import_object(message, object).await {
                        Verdict::Done => {}
                        Verdict::RetryAt(at) => {
                            if verdict == Verdict::Done {
                                verdict = Verdict::RetryAt(at);
                            }
                        }
                        dead @ Verdict::DeadLetter(_) => {
                            verdict = dead;
                            break;
                        }
                    }
                }
                verdict
            }
        };
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
        Ok(())
    }

    async fn import_object(&self, message: &Message, object: &crate::import::ObjectRef) -> Verdict {
        let key = object.key.as_str();
        let stored = match self.store.get(key).await {
            Ok(s) => s,
            Err(e) => {
                self.observer.observe(Observation::PortRetry {
                    service: e.service,
                    error: &e.message,
                });
                return self.retry_verdict(message.receive_count);
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
                    return self.after_failure(message, object, metadata.as_ref(), expected.as_deref(), e);
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
            other => return self.verdict_of(key, other),
        }
        let (Some(stored), Some(Ok(meta)), Some(table)) = (stored.as_ref(), metadata.as_ref(), table) else {
            return Verdict::DeadLetter("load decided without metadata (importer bug)".into());
        };
        if let Err(reason) = verify(meta, &stored.body) {
            let reason = reason.to_string();
            return Verdict::DeadLetter(reason);
        }
        let started = self.clock.now();
        let request = LoadRequest {
            key,
            metadata: meta,
            table,
            body: &stored.body,
        };
        match self.warehouse.load(request).await {
            Ok(outcome) => {
                let inserted = match outcome {
                    LoadOutcome::Loaded { inserted } => inserted,
                    LoadOutcome::AlreadyLoaded => 0,
                };
                self.observer.observe(Observation::Loaded {
                    table: &meta.table,
                    key,
                    rows: meta.row_count,
                    inserted,
                    duration: self.clock.now().saturating_since(started),
                    min_received_at: meta.min_received_at,
                    max_received_at: meta.max_received_at,
                });
                Verdict::Done
            }
            Err(e) => self.after_failure(message, object, metadata.as_ref(), expected.as_deref(), e),
        }
    }

    fn after_failure(
        &self,
        message: &Message,
        object: &crate::import::ObjectRef,
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
        async fn load(&self, _: LoadRequest<'_>) -> Result<LoadOutcome, WarehouseError> {
            Ok(LoadOutcome::AlreadyLoaded)
        }
    }

    #[test]
    fn a_stale_receipt_is_not_fatal() {
        let text = "[[events]]\ntype = \"e\"\n[[events.outputs]]\ntable = \"t\"\ncolumns = [ { name = \"a\", type = \"text\", pointer = \"/a\" } ]\n";
        let catalog = Catalog::load([Source {
            name: "c.toml".into(),
            text: text.into(),
        }])
        .unwrap();
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
        let catalog = Catalog::load([Source {
            name: "c.toml".into(),
            text: "[[events]]\ntype = \"e\"\n[[events.outputs]]\ntable = \"t\"\ncolumns = [ { name = \"a\", type = \"text\", pointer = \"/a\" } ]\n".into(),
        }])
        .unwrap();
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
}
