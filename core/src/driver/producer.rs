//! The producer: accepted events in, KPL aggregates on the stream, acknowledgements out only once
//! the stream holds them (contract 1).
//!
//! The HTTP layer calls [`ProducerHandle::submit`] with the events of a request and answers the
//! client when it resolves: `Ok` means every event is durable in the stream; an error means the
//! client must retry (with the same event ids, which makes the retry harmless). Events are
//! aggregated per destination shard, put in batches (several puts in flight), and records that
//! fail are put again with backoff.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

use crate::backoff::Backoff;
use crate::event::Envelope;
use crate::kpl::{Aggregate, Aggregator, AggregatorConfig, KplError, Shard, ShardMap, UserRecord};
use crate::ports::{Clock, Entropy, Observation, Observer, PortError, PutAck, PutRecord, StreamWriter};
use crate::put_pacing::{PutLimits, PutPacing};
use crate::time::Timestamp;

/// Limits of the producer.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub aggregator: AggregatorConfig,
    /// Events accepted but not yet durable, at most; past it `submit` answers
    /// [`SubmitError::Overloaded`] at once (the HTTP layer's 503 with `Retry-After`).
    pub max_pending_events: usize,
    /// Records per `PutRecords` call (Kinesis: 500).
    pub max_put_records: usize,
    /// Bytes per `PutRecords` call (Kinesis: 5 MiB).
    pub max_put_bytes: usize,
    pub max_inflight_puts: usize,
    /// Retries of a failed aggregate before its events are failed back to their clients.
    pub put_retry: Backoff,
    /// How often to refresh the shard map (resharding).
    pub shard_refresh: Duration,
    /// Each shard's write limits, which puts are paced under ([`PutPacing`]); none by default.
    pub put_limits: PutLimits,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            aggregator: AggregatorConfig {
                linger: Duration::from_millis(20),
                ..AggregatorConfig::default()
            },
            max_pending_events: 200_000,
            max_put_records: 500,
            max_put_bytes: 5 << 20,
            max_inflight_puts: 8,
            put_retry: Backoff::new(Duration::from_millis(50), Duration::from_secs(2), 8),
            shard_refresh: Duration::from_secs(30),
            put_limits: PutLimits::default(),
        }
    }
}

/// Why a submission was not acknowledged. Nothing of it may be considered accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the producer is at its limit of pending events; retry later")]
    Overloaded,
    #[error("the producer is shutting down")]
    Closed,
    #[error("an event is too large for a stream record: {0}")]
    TooLarge(String),
    #[error("the stream did not take the events: {0}")]
    Failed(String),
}

struct Submission {
    /// The events, encoded by the submitter: that work spreads over the HTTP handlers' threads
    /// instead of queueing on the one driver task.
    records: Vec<UserRecord>,
    done: oneshot::Sender<Result<(), SubmitError>>,
}

/// Hands events to a running [`Producer`]. Cheap to clone; one per HTTP handler.
#[derive(Clone, Debug)]
pub struct ProducerHandle {
    tx: mpsc::Sender<Submission>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    health: Arc<StreamHealth>,
}

/// What the producer last heard from the stream, shared with every [`ProducerHandle`]: the HTTP
/// layer's readiness says whether the stream takes this producer's calls at all (credentials, key
/// policy, network), not only whether the process is up.
#[derive(Debug, Default)]
struct StreamHealth {
    /// When the current run of failed calls began, in milliseconds since the epoch; 0 while the
    /// last call succeeded.
    failing_since: AtomicI64,
    last_error: Mutex<String>,
}

impl StreamHealth {
    fn succeeded(&self) {
        self.failing_since.store(0, Ordering::Release);
    }

    fn failed(&self, now: Timestamp, error: &PortError) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error.to_string();
        }
        let _ = self.failing_since.compare_exchange(
            0,
            now.as_millis().max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

impl ProducerHandle {
    /// Resolves once every event is durable in the stream, or with why not.
    pub async fn submit(&self, events: Vec<Envelope>) -> Result<(), SubmitError> {
        let n = events.len();
        if n == 0 {
            return Ok(());
        }
        // Reserve room first, so concurrent submits cannot overshoot the limit together.
        let before = self.pending.fetch_add(n, Ordering::AcqRel);
        if before + n > self.max_pending {
            self.pending.fetch_sub(n, Ordering::AcqRel);
            return Err(SubmitError::Overloaded);
        }
        let records = events
            .iter()
            .map(|event| UserRecord::new(event.id.as_str(), event.encode()))
            .collect();
        let (done, rx) = oneshot::channel();
        if let Err(e) = self.tx.clone().try_send(Submission { records, done }) {
            self.pending.fetch_sub(n, Ordering::AcqRel);
            return Err(if e.is_full() {
                SubmitError::Overloaded
            } else {
                SubmitError::Closed
            });
        }
        let result = rx.await.unwrap_or(Err(SubmitError::Closed));
        self.pending.fetch_sub(n, Ordering::AcqRel);
        result
    }

    /// Events accepted and not yet durable (a readiness and metrics figure).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Since when the stream has been failing the producer's calls — whole `PutRecords` calls and
    /// shard listings; a throttled record is an answer, not a failure — and the last error; `None`
    /// once a call succeeds. An idle producer still hears from the stream at every shard refresh.
    pub fn stream_failing_since(&self) -> Option<(Timestamp, String)> {
        let since = self.health.failing_since.load(Ordering::Acquire);
        if since == 0 {
            return None;
        }
        let error = self
            .health
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        Some((Timestamp::from_millis(since), error))
    }
}

struct Waiting {
    events: usize,
    remaining: usize,
    error: Option<SubmitError>,
    done: Option<oneshot::Sender<Result<(), SubmitError>>>,
}

struct Retry {
    at: Timestamp,
    aggregate: Aggregate<u64>,
    attempt: u32,
}

type PutFuture<'a> = Pin<Box<dyn Future<Output = (Vec<(Aggregate<u64>, u32)>, PutResults)> + Send + 'a>>;
type PutResults = Result<Vec<Result<PutAck, PortError>>, PortError>;

/// The producer driver.
pub struct Producer<'a, S, C, E, B> {
    stream: &'a S,
    clock: &'a C,
    entropy: &'a E,
    observer: &'a B,
    config: ProducerConfig,
    rx: mpsc::Receiver<Submission>,
    aggregator: Aggregator<u64>,
    waiting: HashMap<u64, Waiting>,
    next_id: u64,
    ready: VecDeque<(Aggregate<u64>, u32)>,
    retries: Vec<Retry>,
    inflight: FuturesUnordered<PutFuture<'a>>,
    next_refresh: Timestamp,
    closed: bool,
    health: Arc<StreamHealth>,
    pacing: PutPacing,
}

impl<S, C, E, B> std::fmt::Debug for Producer<'_, S, C, E, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("waiting", &self.waiting.len())
            .field("ready", &self.ready.len())
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

/// Turns the stream's open shards into the aggregator's routing map.
fn shard_map(shards: Vec<crate::ports::ShardInfo>) -> Result<ShardMap, PortError> {
    let open = shards
        .into_iter()
        .filter(|s| !s.closed)
        .map(|s| Shard {
            id: s.id,
            range: s.range,
        })
        .collect();
    ShardMap::new(open).map_err(|e| PortError::invalid("stream", e.to_string()))
}

impl<'a, S, C, E, B> Producer<'a, S, C, E, B>
where
    S: StreamWriter,
    C: Clock,
    E: Entropy,
    B: Observer,
{
    /// Reads the shard map and returns the driver with the handle that feeds it.
    pub async fn start(
        stream: &'a S,
        clock: &'a C,
        entropy: &'a E,
        observer: &'a B,
        config: ProducerConfig,
    ) -> Result<(Self, ProducerHandle), PortError> {
        let map = shard_map(stream.shards().await?)?;
        let aggregator = Aggregator::new(config.aggregator.clone(), map)
            .map_err(|e| PortError::invalid("producer", e.to_string()))?;
        // The channel only carries submissions already counted against max_pending_events.
        let (tx, rx) = mpsc::channel(config.max_pending_events.max(1));
        let health = Arc::new(StreamHealth::default());
        let handle = ProducerHandle {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
            max_pending: config.max_pending_events,
            health: health.clone(),
        };
        let producer = Producer {
            stream,
            clock,
            entropy,
            observer,
            rx,
            aggregator,
            waiting: HashMap::new(),
            next_id: 0,
            ready: VecDeque::new(),
            retries: Vec::new(),
            inflight: FuturesUnordered::new(),
            next_refresh: clock.now().saturating_add(config.shard_refresh),
            closed: false,
            health,
            pacing: PutPacing::new(config.put_limits),
            config,
        };
        Ok((producer, handle))
    }

    /// Runs until `stop` resolves and then until every accepted event is durable or failed.
    pub async fn run(mut self, stop: impl Future<Output = ()> + Send) {
        let mut stop = std::pin::pin!(stop.fuse());
        loop {
            let now = self.clock.now();
            self.due(now).await;
            self.launch();
            if self.closed && self.is_idle() {
                return;
            }
            let wake = self.next_wake();
            let sleep = self.clock.sleep_until(wake).fuse();
            let mut sleep = std::pin::pin!(sleep);
            if self.closed {
                futures::select_biased! {
                    done = self.inflight.select_next_some() => self.settle(done),
                    () = sleep => {}
                }
                continue;
            }
            futures::select_biased! {
                done = self.inflight.select_next_some() => self.settle(done),
                sub = self.rx.next() => match sub {
                    Some(sub) => self.accept(sub),
                    None => self.close(),
                },
                () = stop => self.close(),
                () = sleep => {}
            }
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.rx.close();
        // Submissions already queued were counted as pending: take them too.
        while let Some(Some(sub)) = self.rx.next().now_or_never() {
            self.accept(sub);
        }
        let all = self.aggregator.flush_all();
        self.ready.extend(all.into_iter().map(|a| (a, 0)));
    }

    fn is_idle(&self) -> bool {
        self.inflight.is_empty()
            && self.ready.is_empty()
            && self.retries.is_empty()
            && self.aggregator.is_empty()
    }

    fn next_wake(&self) -> Timestamp {
        let mut wake = self.next_refresh;
        if let Some(t) = self.aggregator.next_due() {
            wake = wake.min(t);
        }
        if let Some(t) = self.retries.iter().map(|r| r.at).min() {
            wake = wake.min(t);
        }
        let now = self.clock.now();
        if let Some(t) = self
            .ready
            .iter()
            .filter_map(|(a, _)| self.pacing.wait(&a.shard_id, now))
            .min()
        {
            wake = wake.min(t);
        }
        wake
    }

    /// Takes one submission: its events go into aggregates; full ones become ready.
    fn accept(&mut self, sub: Submission) {
        let id = self.next_id;
        self.next_id += 1;
        let now = self.clock.now();
        let n = sub.records.len();
        let mut waiting = Waiting {
            events: n,
            remaining: n,
            error: None,
            done: Some(sub.done),
        };
        let mut added = 0;
        for record in sub.records {
            match self.aggregator.add(record, id, now) {
                Ok(full) => {
                    added += 1;
                    self.ready.extend(full.into_iter().map(|a| (a, 0)));
                }
                Err(e) => {
                    waiting.error = Some(match e {
                        KplError::RecordTooLarge { .. } => SubmitError::TooLarge(e.to_string()),
                        other => SubmitError::Failed(other.to_string()),
                    });
                    break;
                }
            }
        }
        // Events never added are settled now; the added ones settle with their aggregates.
        waiting.remaining = added;
        if added < n && waiting.remaining == 0 {
            let result = Err(waiting.error.take().unwrap_or(SubmitError::Closed));
            if let Some(done) = waiting.done.take() {
                let _ = done.send(result);
            }
            return;
        }
        self.waiting.insert(id, waiting);
    }

    async fn due(&mut self, now: Timestamp) {
        let lingered = self.aggregator.take_due(now);
        self.ready.extend(lingered.into_iter().map(|a| (a, 0)));
        let (due, later): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut self.retries)
            .into_iter()
            .partition(|r| r.at <= now);
        self.retries = later;
        self.ready
            .extend(due.into_iter().map(|r| (r.aggregate, r.attempt)));
        if now >= self.next_refresh {
            self.next_refresh = now.saturating_add(self.config.shard_refresh);
            match self.stream.shards().await {
                Ok(shards) => {
                    self.health.succeeded();
                    if let Ok(map) = shard_map(shards)
                        && &map != self.aggregator.shard_map()
                    {
                        let regrouped = self.aggregator.set_shard_map(map);
                        self.ready.extend(regrouped.into_iter().map(|a| (a, 0)));
                    }
                }
                Err(e) => {
                    self.observer.observe(Observation::retry(&e));
                    self.health.failed(now, &e);
                }
            }
        }
    }

    /// Starts puts of ready aggregates, up to the in-flight limit, of shards the pacing lets
    /// put now; the others wait in order.
    fn launch(&mut self) {
        let now = self.clock.now();
        while !self.ready.is_empty() && self.inflight.len() < self.config.max_inflight_puts.max(1) {
            let mut call = Vec::new();
            let mut bytes = 0;
            let mut i = 0;
            while let Some((agg, _)) = self.ready.get(i) {
                let size = agg.data.len() + agg.partition_key.len();
                if !call.is_empty()
                    && (call.len() >= self.config.max_put_records || bytes + size > self.config.max_put_bytes)
                {
                    break;
                }
                if self.pacing.wait(&agg.shard_id, now).is_some() {
                    i += 1;
                    continue;
                }
                self.pacing.took(&agg.shard_id, size, now);
                bytes += size;
                call.push(self.ready.remove(i).expect("an index below the length"));
            }
            if call.is_empty() {
                return;
            }
            let records: Vec<PutRecord> = call
                .iter()
                .map(|(a, _)| PutRecord {
                    partition_key: a.partition_key.clone(),
                    explicit_hash_key: Some(a.explicit_hash_key.clone()),
                    data: a.data.clone(),
                })
                .collect();
            let stream = self.stream;
            self.inflight.push(Box::pin(async move {
                let result = stream.put_records(records).await;
                (call, result)
            }));
        }
    }

    fn settle(&mut self, (call, result): (Vec<(Aggregate<u64>, u32)>, PutResults)) {
        let now = self.clock.now();
        match &result {
            Ok(_) => self.health.succeeded(),
            Err(e) => self.health.failed(now, e),
        }
        let results: Vec<Result<PutAck, PortError>> = match result {
            Ok(per_record) if per_record.len() == call.len() => per_record,
            Ok(per_record) => {
                let e = PortError::unavailable(
                    "stream",
                    format!("{} results for {} records", per_record.len(), call.len()),
                );
                vec![Err(e); call.len()]
            }
            Err(e) => vec![Err(e); call.len()],
        };
        for ((aggregate, attempt), result) in call.into_iter().zip(results) {
            match result {
                Ok(ack) => {
                    self.observer.observe(Observation::AggregatePut {
                        user_records: aggregate.user_records,
                        user_bytes: aggregate.user_bytes,
                        record_bytes: aggregate.data.len() + aggregate.partition_key.len(),
                    });
                    if ack.shard != aggregate.shard_id {
                        // The map is stale (a reshard): refresh it before the next aggregate.
                        self.next_refresh = now;
                    }
                    self.finish(&aggregate.tokens, None);
                }
                Err(e) => {
                    self.observer.observe(Observation::retry(&e));
                    let next = attempt + 1;
                    if e.is_transient() && next < self.config.put_retry.max_attempts {
                        let at =
                            now.saturating_add(self.config.put_retry.delay(attempt, self.entropy.unit()));
                        self.retries.push(Retry {
                            at,
                            aggregate,
                            attempt: next,
                        });
                    } else {
                        self.finish(&aggregate.tokens, Some(SubmitError::Failed(e.to_string())));
                    }
                }
            }
        }
    }

    fn finish(&mut self, tokens: &[u64], error: Option<SubmitError>) {
        for id in tokens {
            let Some(w) = self.waiting.get_mut(id) else {
                continue;
            };
            w.remaining -= 1;
            if w.error.is_none() {
                w.error.clone_from(&error);
            }
            if w.remaining == 0 {
                let w = self.waiting.remove(id).expect("present");
                let count = w.events;
                match &w.error {
                    None => self.observer.observe(Observation::EventsAccepted { count }),
                    Some(_) => self.observer.observe(Observation::EventsFailed { count }),
                }
                if let Some(done) = w.done {
                    let _ = done.send(w.error.map_or(Ok(()), Err));
                }
            }
        }
    }
}
