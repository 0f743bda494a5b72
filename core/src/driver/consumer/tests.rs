//! The consumer driven by hand: a manual clock, and ports that fail, expire and hang on cue.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use futures::executor::block_on;
use serde_json::value::RawValue;

use super::*;
use crate::batch::BatchMetadata;
use crate::catalog::Source;
use crate::event::{Envelope, EventId};
use crate::kpl::{self, HashKeyRange, UserRecord};
use crate::lease::Lease;
use crate::ports::{Cursor, ErrorKind, NoObserver, ReadBatch, ShardInfo};
use crate::position::SequenceNumber;

/// A clock that moves only when the test says; sleepers wake when it does.
#[derive(Default)]
struct TestClock {
    now: Mutex<Timestamp>,
    sleepers: Mutex<Vec<Waker>>,
}

impl TestClock {
    fn at(t0: Timestamp) -> Self {
        TestClock {
            now: Mutex::new(t0),
            sleepers: Mutex::default(),
        }
    }

    fn set(&self, t: Timestamp) {
        *self.now.lock().unwrap() = t;
        for w in self.sleepers.lock().unwrap().drain(..) {
            w.wake();
        }
    }

    fn advance(&self, d: Duration) {
        let now = *self.now.lock().unwrap();
        self.set(now.saturating_add(d));
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap()
    }
    fn sleep_until(&self, deadline: Timestamp) -> impl Future<Output = ()> + Send {
        futures::future::poll_fn(move |cx| {
            if self.now() >= deadline {
                Poll::Ready(())
            } else {
                self.sleepers.lock().unwrap().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// A clock for `step`-driven tests: every sleep is over at once.
struct StillClock(Mutex<Timestamp>);

impl StillClock {
    fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap() = t;
    }
}

impl Clock for StillClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
    fn sleep_until(&self, _: Timestamp) -> impl Future<Output = ()> + Send {
        futures::future::ready(())
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

fn t0() -> Timestamp {
    Timestamp::from_millis(1_714_564_800_000)
}

/// Events of type `e` into table `t`, one text column `v`.
fn one_table() -> Catalog {
    Catalog::load([Source {
        name: "c.toml".into(),
        text: "[[events]]\ntype = \"e\"\n[[events.outputs]]\ntable = \"t\"\ncolumns = [ { name = \"v\", type = \"text\", pointer = \"/v\" } ]\n".into(),
    }])
    .unwrap()
}

/// `n` stream records, each one event of [`one_table`] with `v` = `value`.
fn records(n: u128, value: &str) -> Vec<StreamRecord> {
    (0..n)
        .map(|i| {
            let event = Envelope {
                id: EventId(format!("evt-{i}")),
                event_type: "e".into(),
                source: "test".into(),
                received_at: t0(),
                occurred_at: None,
                payload: RawValue::from_string(format!(r#"{{"v":"{value}"}}"#)).unwrap(),
            };
            StreamRecord {
                seq: SequenceNumber::from_u128(1000 + i),
                partition_key: "pk".into(),
                data: kpl::encode(&[UserRecord::new("pk", event.encode())]),
                arrived_at: t0(),
            }
        })
        .collect()
}

/// One open shard `s` over fixed records, read through cursors `"<index>@<generation>"`. It can
/// cut reads to `page` records, say how far behind the tip a read is, hand out empty pages
/// between records and expire every cursor after `expire_after` reads.
#[derive(Default)]
struct Shard {
    records: Vec<StreamRecord>,
    page: Option<usize>,
    /// Every other read returns no records (but moves nothing): Kinesis's empty pages.
    empty_pages: bool,
    expire_after: Option<usize>,
    reads: AtomicUsize,
    opens: Mutex<Vec<ReadFrom>>,
}

impl Shard {
    fn over(records: Vec<StreamRecord>) -> Self {
        Shard {
            records,
            ..Shard::default()
        }
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

fn the_shard() -> ShardInfo {
    ShardInfo {
        id: ShardId::new("s"),
        parent: None,
        adjacent_parent: None,
        range: HashKeyRange::FULL,
        closed: false,
    }
}

impl StreamReader for Shard {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        Ok(vec![the_shard()])
    }
    async fn open(&self, _: &ShardId, from: &ReadFrom) -> Result<Cursor, PortError> {
        self.opens.lock().unwrap().push(from.clone());
        let start = match from {
            ReadFrom::Oldest => 0,
            ReadFrom::At(seq) => self.records.partition_point(|r| &r.seq < seq),
            ReadFrom::After(seq) => self.records.partition_point(|r| &r.seq <= seq),
        };
        Ok(Cursor(format!("{start}@{}", self.reads())))
    }
    async fn read(&self, _: &ShardId, cursor: &Cursor, limit: usize) -> Result<ReadBatch, PortError> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        let (start, issued) = cursor.0.split_once('@').unwrap();
        let (start, issued): (usize, usize) = (start.parse().unwrap(), issued.parse().unwrap());
        if self.expire_after.is_some_and(|e| n - issued > e) {
            return Err(PortError::expired("stream", "ExpiredIteratorException"));
        }
        let take = if self.empty_pages && n.is_multiple_of(2) {
            0
        } else {
            limit.min(self.page.unwrap_or(usize::MAX))
        };
        let records: Vec<StreamRecord> = self.records[start..].iter().take(take).cloned().collect();
        let end = start + records.len();
        Ok(ReadBatch {
            millis_behind_latest: Some(if end < self.records.len() { 5_000 } else { 0 }),
            next: Some(Cursor(format!("{end}@{issued}"))),
            records,
        })
    }
}

/// What a store was asked to write, and whether it answers.
#[derive(Default)]
struct Store {
    /// Batch writes finish only when the test opens their gate, one by one.
    gated: bool,
    gates: Mutex<Vec<(bool, Option<Waker>)>>,
    /// Every write fails with this until cleared.
    failing: Mutex<Option<PortError>>,
    batches: Mutex<BTreeMap<String, (Bytes, BatchMetadata)>>,
    others: Mutex<BTreeMap<String, Bytes>>,
    /// The order of every successful write (keys).
    order: Mutex<Vec<String>>,
}

impl Store {
    fn gated() -> Self {
        Store {
            gated: true,
            ..Store::default()
        }
    }
    fn open(&self, i: usize) {
        let mut gates = self.gates.lock().unwrap();
        gates[i].0 = true;
        if let Some(w) = gates[i].1.take() {
            w.wake();
        }
    }
    fn started(&self) -> usize {
        self.gates.lock().unwrap().len()
    }
    fn fail_with(&self, error: Option<PortError>) {
        *self.failing.lock().unwrap() = error;
    }
    /// Every row written, over all batch objects (decompressed).
    fn rows(&self) -> Vec<Vec<Option<String>>> {
        let mut rows = Vec::new();
        for (body, meta) in self.batches.lock().unwrap().values() {
            let csv = meta.compression.decompress(body, meta.csv_bytes).unwrap();
            rows.extend(crate::csv::parse_rows(&csv).unwrap());
        }
        rows
    }
}

impl ObjectWriter for Store {
    fn bucket(&self) -> &str {
        "test-bucket"
    }
    fn put_batch(
        &self,
        key: &str,
        body: Bytes,
        metadata: &BatchMetadata,
    ) -> impl Future<Output = Result<(), PortError>> + Send {
        let gate = self.gated.then(|| {
            let mut gates = self.gates.lock().unwrap();
            gates.push((false, None));
            gates.len() - 1
        });
        let (key, metadata) = (key.to_owned(), metadata.clone());
        async move {
            if let Some(i) = gate {
                futures::future::poll_fn(|cx: &mut Context<'_>| {
                    let mut gates = self.gates.lock().unwrap();
                    if gates[i].0 {
                        Poll::Ready(())
                    } else {
                        gates[i].1 = Some(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await;
            }
            if let Some(e) = self.failing.lock().unwrap().clone() {
                return Err(e);
            }
            self.order.lock().unwrap().push(key.clone());
            self.batches.lock().unwrap().insert(key, (body, metadata));
            Ok(())
        }
    }
    async fn put(&self, key: &str, body: Bytes, _: &str) -> Result<(), PortError> {
        if let Some(e) = self.failing.lock().unwrap().clone() {
            return Err(e);
        }
        self.order.lock().unwrap().push(key.to_owned());
        self.others.lock().unwrap().insert(key.to_owned(), body);
        Ok(())
    }
}

/// A lease table; `list` can be made to fail.
#[derive(Default)]
struct Table {
    leases: Mutex<BTreeMap<ShardId, Lease>>,
    list_failures: AtomicUsize,
}

impl Table {
    fn set_owner(&self, owner: Option<&str>) {
        let mut t = self.leases.lock().unwrap();
        let l = t.get_mut(&ShardId::new("s")).unwrap();
        l.owner = owner.map(str::to_owned);
        l.counter += 1;
    }
    fn lease(&self) -> Lease {
        self.leases.lock().unwrap()[&ShardId::new("s")].clone()
    }
    fn conditional(&self, seen: &Lease, f: impl FnOnce(&mut Lease)) -> Result<Lease, PortError> {
        let mut t = self.leases.lock().unwrap();
        let l = t.get_mut(&seen.shard).unwrap();
        if l.counter != seen.counter || l.owner != seen.owner {
            return Err(PortError::conflict(
                "leases",
                format!("lease for shard {} changed", seen.shard),
            ));
        }
        f(l);
        l.counter += 1;
        Ok(l.clone())
    }
}

impl LeaseStore for Table {
    async fn list(&self) -> Result<Vec<Lease>, PortError> {
        if self
            .list_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(PortError::unavailable("leases", "ProvisionedThroughputExceeded"));
        }
        Ok(self.leases.lock().unwrap().values().cloned().collect())
    }
    async fn create(&self, lease: &Lease) -> Result<(), PortError> {
        self.leases
            .lock()
            .unwrap()
            .entry(lease.shard.clone())
            .or_insert_with(|| lease.clone());
        Ok(())
    }
    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, PortError> {
        self.conditional(lease, |l| l.owner = Some(owner.into()))
    }
    async fn renew(&self, lease: &Lease) -> Result<Lease, PortError> {
        self.conditional(lease, |_| {})
    }
    async fn checkpoint(&self, lease: &Lease, c: &Checkpoint) -> Result<Lease, PortError> {
        self.conditional(lease, |l| l.checkpoint = c.clone())
    }
    async fn release(&self, lease: &Lease) -> Result<(), PortError> {
        self.conditional(lease, |l| l.owner = None).map(|_| ())
    }
    async fn delete(&self, lease: &Lease) -> Result<(), PortError> {
        self.conditional(lease, |_| {})?;
        self.leases.lock().unwrap().remove(&lease.shard);
        Ok(())
    }
}

/// Records every observation's kind, and the write failures.
#[derive(Default)]
struct Seen {
    failures: Mutex<Vec<(String, ErrorKind, bool)>>,
    retries: AtomicUsize,
}

impl Observer for Seen {
    fn observe(&self, o: Observation<'_>) {
        match o {
            Observation::WriteFailed {
                key, error, stalled, ..
            } => self
                .failures
                .lock()
                .unwrap()
                .push((key.to_owned(), error.kind, stalled)),
            Observation::PortRetry { .. } => {
                self.retries.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

fn config() -> ConsumerConfig {
    ConsumerConfig {
        owner: "w".into(),
        pacing: ReadPacing {
            calls_per_sec: 0.0,
            bytes_per_sec: 0,
        },
        ..ConsumerConfig::default()
    }
}

/// Found by the simulation (seed 130 of `microbatch-sim`): a batch write still in flight
/// when the lease was lost finished after this worker had taken the lease again and buffered
/// the same record anew; the stale write released the new buffer's hold, so the checkpoint
/// could pass a record whose rows were only in memory (and the real release then failed with
/// "released …, which was not held", stopping the consumer).
#[test]
fn a_write_from_an_earlier_tenure_releases_nothing() {
    let catalog = one_table();
    let stream = Shard::over(records(1, "x"));
    let store = Store::gated();
    let leases = Table::default();
    let clock = StillClock(Mutex::new(t0()));
    let at = |secs: u64| clock.set(t0().saturating_add(Duration::from_secs(secs)));
    let config = ConsumerConfig {
        batch: BatchPolicy {
            max_rows: 1,
            ..BatchPolicy::default()
        },
        lease_sync: Duration::from_secs(1),
        checkpoint_every: Duration::ZERO,
        ..config()
    };
    let mut consumer = Consumer::new(
        &stream,
        &store,
        &leases,
        &clock,
        &Half,
        &NoObserver,
        &catalog,
        config,
    )
    .unwrap();
    // Take the lease, read the record, start writing its batch (write 0, held up).
    block_on(consumer.step()).unwrap();
    assert_eq!(store.started(), 1);
    // The lease is stolen: the worker notices and drops the shard.
    leases.set_owner(Some("thief"));
    at(2);
    block_on(consumer.step()).unwrap();
    assert_eq!(consumer.shards().count(), 0);
    // The thief lets it go; the worker takes it again and writes the record anew (write 1).
    leases.set_owner(None);
    at(4);
    block_on(consumer.step()).unwrap();
    assert_eq!(store.started(), 2);
    // The first write finishes now. It must not let the checkpoint pass the record, whose
    // second write is still in flight.
    store.open(0);
    at(5);
    block_on(consumer.step()).unwrap();
    assert_eq!(leases.lease().checkpoint, Checkpoint::TrimHorizon);
    // Once the second write is durable, the checkpoint moves.
    store.open(1);
    at(6);
    block_on(consumer.step()).unwrap();
    assert_eq!(
        leases.lease().checkpoint,
        Checkpoint::At(Position::new(SequenceNumber::from_u128(1000), 0))
    );
}

/// Found by the loadtest (consumer peak RSS 238 MiB under a 64 MiB budget): batches cut from
/// the buffers were written 32 at a time whatever their size, so memory was the budget plus
/// every write in flight. Writes now wait while buffered + in-flight bytes exceed the budget.
#[test]
fn writes_in_flight_count_against_the_budget() {
    let catalog = one_table();
    let big = "x".repeat(1000);
    let stream = Shard::over(records(10, &big));
    let store = Store::gated();
    let leases = Table::default();
    let clock = StillClock(Mutex::new(t0()));
    // One row per batch; each batch's buffer is 4 KiB, so two fit in the 8 KiB budget.
    let config = ConsumerConfig {
        batch: BatchPolicy {
            max_rows: 1,
            max_bytes: 4096,
            budget_bytes: 8192,
            ..BatchPolicy::default()
        },
        ..config()
    };
    let mut consumer = Consumer::new(
        &stream,
        &store,
        &leases,
        &clock,
        &Half,
        &NoObserver,
        &catalog,
        config,
    )
    .unwrap();
    let mut step = Box::pin(consumer.step());
    assert!(
        step.as_mut().now_or_never().is_none(),
        "waits for writes to finish"
    );
    assert_eq!(store.started(), 2, "two 4 KiB batches fill the 8 KiB budget");
    store.open(0);
    assert!(step.as_mut().now_or_never().is_none());
    assert_eq!(store.started(), 3, "one write done makes room for one more");
    // Each finished write lets one more start, until every record is read.
    let mut opened = 1;
    let done = loop {
        store.open(opened);
        opened += 1;
        if let Some(done) = step.as_mut().now_or_never() {
            break done;
        }
    };
    done.unwrap();
    assert_eq!((store.started(), opened), (10, 8), "two writes still in flight");
    drop(step);
    assert_eq!(consumer.inflight_bytes(), 8192);
}

/// A read cut short by a byte limit, behind the tip, is followed as soon as the pace allows;
/// one at the tip waits the idle poll.
#[test]
fn a_read_cut_short_behind_the_tip_is_followed_at_once() {
    let catalog = one_table();
    let stream = Shard {
        page: Some(2),
        ..Shard::over(records(5, "x"))
    };
    let store = Store::default();
    let leases = Table::default();
    let clock = StillClock(Mutex::new(t0()));
    let config = ConsumerConfig {
        idle_poll: Duration::from_secs(1),
        pacing: ReadPacing::default(),
        ..config()
    };
    let mut consumer = Consumer::new(
        &stream,
        &store,
        &leases,
        &clock,
        &Half,
        &NoObserver,
        &catalog,
        config,
    )
    .unwrap();
    // Five calls a second: one read every 200 ms while behind.
    for (n, ms) in [(1, 0), (2, 200), (3, 400)] {
        clock.set(t0().saturating_add(Duration::from_millis(ms)));
        block_on(consumer.step()).unwrap();
        assert_eq!(stream.reads(), n, "at {ms} ms");
    }
    // The third read reached the tip: the next waits for the idle poll, not the pace.
    clock.set(t0().saturating_add(Duration::from_millis(600)));
    block_on(consumer.step()).unwrap();
    assert_eq!(stream.reads(), 3);
    clock.set(t0().saturating_add(Duration::from_millis(1_400)));
    block_on(consumer.step()).unwrap();
    assert_eq!(stream.reads(), 4);
}

/// Found in review: the result of a write was discarded, and a write that failed permanently
/// (S3 AccessDenied, a disabled KMS key) released its hold as if durable, so the checkpoint
/// passed a batch that was never stored. Now it is retried until it succeeds, the shard is not
/// read meanwhile, every attempt is reported as stalling it, and the checkpoint waits.
#[test]
fn a_permanent_write_error_never_lets_the_checkpoint_pass() {
    let catalog = one_table();
    let stream = Shard {
        page: Some(1),
        ..Shard::over(records(3, "x"))
    };
    let store = Store::default();
    store.fail_with(Some(PortError::denied("store", "AccessDenied: s3:PutObject")));
    let leases = Table::default();
    let clock = StillClock(Mutex::new(t0()));
    let seen = Seen::default();
    let config = ConsumerConfig {
        batch: BatchPolicy {
            max_rows: 1,
            ..BatchPolicy::default()
        },
        checkpoint_every: Duration::ZERO,
        ..config()
    };
    let mut consumer =
        Consumer::new(&stream, &store, &leases, &clock, &Half, &seen, &catalog, config).unwrap();
    for s in 0..10 {
        clock.set(t0().saturating_add(Duration::from_secs(s)));
        block_on(consumer.step()).unwrap();
    }
    assert_eq!(
        leases.lease().checkpoint,
        Checkpoint::TrimHorizon,
        "nothing is durable"
    );
    assert_eq!(stream.reads(), 1, "the stalled shard is not read on");
    let failures = seen.failures.lock().unwrap().clone();
    assert!(failures.len() >= 5, "every attempt is reported: {failures:?}");
    assert!(
        failures
            .iter()
            .all(|(key, kind, stalled)| key.starts_with("loads/t/")
                && *kind == ErrorKind::Denied
                && *stalled)
    );
    // Fixed: the write goes through, the shard reads on, the checkpoint moves past all three.
    store.fail_with(None);
    for s in 10..20 {
        clock.set(t0().saturating_add(Duration::from_secs(s)));
        block_on(consumer.step()).unwrap();
    }
    assert_eq!(store.rows().len(), 3);
    assert_eq!(
        leases.lease().checkpoint,
        Checkpoint::At(Position::new(SequenceNumber::from_u128(1002), 0))
    );
}

/// A transient failure is retried too, without stalling the shard.
#[test]
fn a_throttled_write_is_retried_and_reading_goes_on() {
    let catalog = one_table();
    let stream = Shard {
        page: Some(1),
        ..Shard::over(records(3, "x"))
    };
    let store = Store::default();
    store.fail_with(Some(PortError::throttled("store", "SlowDown")));
    let leases = Table::default();
    let clock = StillClock(Mutex::new(t0()));
    let seen = Seen::default();
    let config = ConsumerConfig {
        batch: BatchPolicy {
            max_rows: 1,
            ..BatchPolicy::default()
        },
        ..config()
    };
    let mut consumer =
        Consumer::new(&stream, &store, &leases, &clock, &Half, &seen, &catalog, config).unwrap();
    for s in 0..4 {
        clock.set(t0().saturating_add(Duration::from_secs(s)));
        block_on(consumer.step()).unwrap();
    }
    assert!(stream.reads() >= 3, "not stalled: {} reads", stream.reads());
    assert!(
        seen.failures
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, stalled)| !stalled)
    );
    store.fail_with(None);
    for s in 4..8 {
        clock.set(t0().saturating_add(Duration::from_secs(s)));
        block_on(consumer.step()).unwrap();
    }
    assert_eq!(store.rows().len(), 3);
}

/// Shard iterators expire (Kinesis: after five minutes) and pages may be empty in the middle of
/// a shard. Reads go on from each read's cursor through the empty pages, and an expired cursor
/// is re-opened after the last record delivered: every record once, none twice.
#[test]
fn a_cursor_that_expires_mid_shard_loses_and_repeats_nothing() {
    let catalog = one_table();
    let stream = Shard {
        page: Some(3),
        empty_pages: true,
        expire_after: Some(2),
        ..Shard::over(records(20, "x"))
    };
    let store = Store::default();
    let leases = Table::default();
    let clock = StillClock(Mutex::new(t0()));
    let config = ConsumerConfig {
        batch: BatchPolicy {
            max_rows: 1,
            ..BatchPolicy::default()
        },
        ..config()
    };
    let mut consumer = Consumer::new(
        &stream,
        &store,
        &leases,
        &clock,
        &Half,
        &NoObserver,
        &catalog,
        config,
    )
    .unwrap();
    for s in 0..60 {
        clock.set(t0().saturating_add(Duration::from_secs(s)));
        block_on(consumer.step()).unwrap();
    }
    let mut ids: Vec<String> = store.rows().into_iter().map(|r| r[0].clone().unwrap()).collect();
    ids.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("evt-{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "every record exactly once");
    let opens = stream.opens.lock().unwrap().clone();
    assert!(opens.len() > 3, "cursors expired and were re-opened: {opens:?}");
    assert!(
        opens[1..].iter().all(|from| matches!(from, ReadFrom::After(_))),
        "re-opened after the last record delivered: {opens:?}"
    );
}

/// Found in review: renewals ran in the same loop as reads and writes, so a store slow enough
/// to fill the budget held the renewals back until the lease expired. The lease loop renews on
/// its own timer whatever the worker is waiting for.
#[test]
fn leases_are_renewed_while_every_write_hangs() {
    let catalog = one_table();
    let stream = Shard::over(records(10, &"x".repeat(1000)));
    let store = Store::gated();
    let leases = Table::default();
    let clock = TestClock::at(t0());
    let config = ConsumerConfig {
        batch: BatchPolicy {
            max_rows: 1,
            max_bytes: 4096,
            budget_bytes: 8192,
            ..BatchPolicy::default()
        },
        lease_sync: Duration::from_secs(1),
        failover: Duration::from_secs(3),
        ..config()
    };
    let consumer = Consumer::new(
        &stream,
        &store,
        &leases,
        &clock,
        &Half,
        &NoObserver,
        &catalog,
        config,
    )
    .unwrap();
    let mut run = Box::pin(consumer.run(std::future::pending()));
    let mut cx = Context::from_waker(Waker::noop());
    let mut counters = Vec::new();
    for _ in 0..30 {
        assert!(run.as_mut().poll(&mut cx).is_pending());
        counters.push(leases.lease().counter);
        clock.advance(Duration::from_millis(500));
    }
    assert_eq!(
        store.started(),
        2,
        "the worker waits for the writes the whole time"
    );
    assert!(
        counters.last() > counters.get(counters.len() / 2),
        "renewed meanwhile: {counters:?}"
    );
    assert_eq!(leases.lease().owner.as_deref(), Some("w"));
}

/// Transient failures of the lease table are retried, never fatal.
#[test]
fn a_lease_table_that_fails_for_a_while_is_waited_out() {
    let catalog = one_table();
    let stream = Shard::over(records(2, "x"));
    let store = Store::default();
    let leases = Table::default();
    leases.list_failures.store(3, Ordering::SeqCst);
    let clock = StillClock(Mutex::new(t0()));
    let seen = Seen::default();
    let mut consumer =
        Consumer::new(&stream, &store, &leases, &clock, &Half, &seen, &catalog, config()).unwrap();
    for s in 0..10 {
        clock.set(t0().saturating_add(Duration::from_secs(s)));
        block_on(consumer.step()).unwrap();
    }
    assert!(seen.retries.load(Ordering::SeqCst) >= 3);
    assert_eq!(
        consumer.shards().count(),
        1,
        "the lease was taken once the table answered"
    );
}

/// `consumer.compression` compresses batches; the key says so, the metadata's checksum and size
/// are of the CSV, and the schema object goes first, once.
#[test]
fn batches_are_compressed_as_configured_and_their_schema_written_first() {
    for compression in [Compression::Gzip, Compression::Zstd] {
        let catalog = one_table();
        let stream = Shard::over(records(4, "x"));
        let store = Store::default();
        let leases = Table::default();
        let clock = StillClock(Mutex::new(t0()));
        let config = ConsumerConfig {
            batch: BatchPolicy {
                max_rows: 2,
                ..BatchPolicy::default()
            },
            compression,
            ..config()
        };
        let mut consumer = Consumer::new(
            &stream,
            &store,
            &leases,
            &clock,
            &Half,
            &NoObserver,
            &catalog,
            config,
        )
        .unwrap();
        for s in 0..3 {
            clock.set(t0().saturating_add(Duration::from_secs(s)));
            block_on(consumer.step()).unwrap();
        }
        let batches = store.batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 2);
        for (key, (body, meta)) in &batches {
            assert!(key.ends_with(compression.extension()), "{key}");
            assert_eq!(meta.compression, compression);
            let csv = compression.decompress(body, meta.csv_bytes).unwrap();
            assert_eq!(crate::import::verify(meta, &csv), Ok(()));
        }
        // Every batch started before one of its table's succeeded carries the schema, so no batch
        // object is ever there before its schema object.
        let order = store.order.lock().unwrap().clone();
        assert!(order[0].starts_with("schemas/t/"), "{order:?}");
        assert_eq!(store.others.lock().unwrap().len(), 1, "one schema object");
    }
}
