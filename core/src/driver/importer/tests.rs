//! The importer against a queue, a store and a warehouse in memory, each failing on cue.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use super::*;
use crate::batch::{BatchMetadata, Compression};
use crate::catalog::Source;
use crate::import::RefusedRows;
use crate::ports::{Bytes, LoadOutcome, LoadRequest, NoObserver, ObjectLocation, StoredObject};
use crate::position::{Position, SequenceNumber, ShardId};

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

fn table_t() -> Catalog {
    Catalog::load([Source {
        name: "c.toml".into(),
        text: "[[events]]\ntype = \"e\"\n[[events.outputs]]\ntable = \"t\"\ncolumns = [ { name = \"a\", type = \"text\", pointer = \"/a\" } ]\n".into(),
    }])
    .unwrap()
}

/// A store of ready batches of table `t` (with their schema object), and a queue delivering one
/// notification for each; the warehouse side is [`Groups`].
struct Batches {
    objects: Mutex<BTreeMap<String, StoredObject>>,
    batch_keys: Vec<String>,
    queue: Mutex<Vec<Message>>,
    settled: Mutex<Vec<(String, String)>>,
    /// How many messages each `ack_all` carried.
    ack_calls: Mutex<Vec<usize>>,
    gets: Mutex<Vec<String>>,
    heads: Mutex<Vec<String>>,
    visibility_calls: AtomicUsize,
    visibility: Duration,
    receive_max_asked: AtomicUsize,
}

impl Batches {
    /// `count` batches of `rows` rows each; row `r` of every batch holds `v<r>`.
    fn new(catalog: &Catalog, count: u128, rows: usize, compression: Compression) -> Self {
        use sha2::Digest;
        let shard = ShardId::new("shardId-000000000000");
        let table = catalog.table(catalog.table_id("t").unwrap());
        let columns: Vec<String> = table.column_names().map(str::to_owned).collect();
        let at = Timestamp::from_millis(1_700_000_000_000);
        let mut objects = BTreeMap::new();
        let schema = crate::batch::BatchSchema {
            table: "t".into(),
            columns: columns.clone(),
        };
        let schema_key = crate::keys::schema_key("t", &schema.digest());
        objects.insert(
            schema_key,
            StoredObject {
                body: schema.to_json(),
                metadata: BTreeMap::new(),
            },
        );
        let mut messages = Vec::new();
        let mut batch_keys = Vec::new();
        for i in 0..count {
            let first = Position::new(SequenceNumber::from_u128(2 * i + 1), 0);
            let last = Position::new(SequenceNumber::from_u128(2 * i + 2), 0);
            let mut body = Vec::new();
            for r in 0..rows {
                let mut fields = vec![format!("e{i}-{r}"), r.to_string()];
                fields.extend((2..columns.len()).map(|_| "x".to_owned()));
                *fields.last_mut().unwrap() = format!("v{r}");
                body.extend(fields.join(",").bytes());
                body.push(b'\n');
            }
            let metadata = BatchMetadata {
                table: "t".into(),
                columns_sha256: schema.digest(),
                column_count: columns.len() as u32,
                row_count: rows as u64,
                shard: shard.clone(),
                first: first.clone(),
                last: last.clone(),
                catalog_version: catalog.version().into(),
                sha256: hex::encode(sha2::Sha256::digest(&body)),
                csv_bytes: body.len() as u64,
                min_received_at: at,
                max_received_at: at,
                compression,
                csv: crate::csv::CsvEncoding::CURRENT,
            };
            let key = crate::keys::batch_key("t", at, &shard, &first, &last, compression);
            let stored = compression.compress(body);
            messages.push(Message {
                id: format!("m{i}"),
                receipt: format!("r{i}"),
                body: crate::import::object_created_message("b", &key, stored.len() as u64, i as u64, at),
                receive_count: 1,
            });
            objects.insert(
                key.clone(),
                StoredObject {
                    body: stored,
                    metadata: metadata.to_pairs(),
                },
            );
            batch_keys.push(key);
        }
        Batches {
            objects: Mutex::new(objects),
            batch_keys,
            queue: Mutex::new(messages),
            settled: Mutex::new(Vec::new()),
            ack_calls: Mutex::new(Vec::new()),
            gets: Mutex::new(Vec::new()),
            heads: Mutex::new(Vec::new()),
            visibility_calls: AtomicUsize::new(0),
            visibility: Duration::from_secs(30),
            receive_max_asked: AtomicUsize::new(0),
        }
    }

    fn key(&self, i: usize) -> String {
        self.batch_keys[i].clone()
    }

    fn settled(&self) -> Vec<(String, String)> {
        let mut s = self.settled.lock().unwrap().clone();
        s.sort();
        s
    }

    fn object(&self, key: &str) -> Option<StoredObject> {
        self.objects.lock().unwrap().get(key).cloned()
    }
}

impl Queue for Batches {
    fn visibility_timeout(&self) -> Duration {
        self.visibility
    }
    async fn receive(&self, max: usize, _: Duration) -> Result<Vec<Message>, PortError> {
        self.receive_max_asked.store(max, Ordering::SeqCst);
        let mut q = self.queue.lock().unwrap();
        let n = max.min(q.len());
        Ok(q.drain(..n).collect())
    }
    async fn ack(&self, m: &Message) -> Result<(), PortError> {
        self.settled.lock().unwrap().push((m.id.clone(), "ack".into()));
        Ok(())
    }
    async fn ack_all(&self, messages: &[&Message]) -> Vec<Result<(), PortError>> {
        self.ack_calls.lock().unwrap().push(messages.len());
        let mut settled = self.settled.lock().unwrap();
        settled.extend(messages.iter().map(|m| (m.id.clone(), "ack".into())));
        vec![Ok(()); messages.len()]
    }
    async fn set_visibility(&self, m: &Message, hidden: Duration) -> Result<(), PortError> {
        if hidden == self.visibility {
            self.visibility_calls.fetch_add(1, Ordering::SeqCst);
        } else {
            self.settled.lock().unwrap().push((m.id.clone(), "retry".into()));
        }
        Ok(())
    }
    async fn dead_letter(&self, m: &Message, note: DeadLetterNote<'_>) -> Result<(), PortError> {
        self.settled
            .lock()
            .unwrap()
            .push((m.id.clone(), format!("dead letter {}", note.code)));
        Ok(())
    }
}

impl ObjectReader for Batches {
    async fn head(&self, at: &ObjectLocation) -> Result<Option<BTreeMap<String, String>>, PortError> {
        self.heads.lock().unwrap().push(at.key.clone());
        Ok(self.object(&at.key).map(|o| o.metadata))
    }
    async fn get(&self, at: &ObjectLocation) -> Result<Option<StoredObject>, PortError> {
        self.gets.lock().unwrap().push(at.key.clone());
        Ok(self.object(&at.key))
    }
}

impl ObjectWriter for Batches {
    fn bucket(&self) -> &str {
        "b"
    }
    async fn put_batch(&self, _: &str, _: Bytes, _: &BatchMetadata) -> Result<(), PortError> {
        Ok(())
    }
    async fn put(&self, key: &str, body: Bytes, _: &str) -> Result<(), PortError> {
        self.objects.lock().unwrap().insert(
            key.to_owned(),
            StoredObject {
                body: body.to_vec(),
                metadata: BTreeMap::new(),
            },
        );
        Ok(())
    }
}

/// A warehouse that records its groups, refuses (as poison) every group holding `bad`, and
/// refuses every row holding `refuse` (naming the row when `names_rows`).
#[derive(Default)]
struct Groups {
    bad: Option<String>,
    refuse: Option<String>,
    names_rows: bool,
    reads_store: bool,
    calls: Mutex<Vec<Vec<String>>>,
    probes: AtomicUsize,
    /// Rows committed, per key.
    committed: Mutex<BTreeMap<String, Vec<String>>>,
    /// A load takes this long (by the test clock).
    slow: Option<(&'static TestClock, Duration)>,
}

impl Groups {
    /// The rows of `req` a load would take (without its skipped rows), or the refusal.
    fn rows_of(
        &self,
        req: &LoadRequest<'_>,
        range: Option<Range<u64>>,
    ) -> Result<Vec<String>, WarehouseError> {
        let Some(body) = req.body else {
            return Ok(Vec::new());
        };
        let rows = crate::csv::parse_rows(body).unwrap();
        let mut taken = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let i = i as u64;
            if req.skip_rows.contains(&i) || range.as_ref().is_some_and(|r| !r.contains(&i)) {
                continue;
            }
            let value = row.last().cloned().flatten().unwrap_or_default();
            if self.refuse.as_deref() == Some(value.as_str()) {
                let e = WarehouseError::with_sqlstate("22P02", format!("invalid input syntax: {value:?}"));
                return Err(if self.names_rows { e.at_row(i) } else { e });
            }
            taken.push(value);
        }
        Ok(taken)
    }
}

impl Warehouse for Groups {
    fn needs_body(&self) -> bool {
        !self.reads_store
    }
    async fn migrate(&self, _: &Catalog) -> Result<(), WarehouseError> {
        Ok(())
    }
    async fn is_loaded(&self, key: &str, _: &str) -> Result<bool, WarehouseError> {
        Ok(self.committed.lock().unwrap().contains_key(key))
    }
    async fn load_all(&self, requests: &[LoadRequest<'_>]) -> Result<Vec<LoadOutcome>, WarehouseError> {
        if let Some((clock, d)) = self.slow {
            clock.sleep(d).await;
        }
        let keys: Vec<String> = requests.iter().map(|r| r.key().to_owned()).collect();
        let poisoned = keys.iter().any(|k| Some(k) == self.bad.as_ref());
        self.calls.lock().unwrap().push(keys);
        if poisoned {
            return Err(WarehouseError::with_sqlstate("42P01", "relation does not exist"));
        }
        let mut loads = Vec::new();
        for req in requests {
            loads.push((req.key().to_owned(), self.rows_of(req, None)?));
        }
        let mut committed = self.committed.lock().unwrap();
        Ok(loads
            .into_iter()
            .map(|(key, rows)| {
                let inserted = rows.len() as u64;
                committed.insert(key, rows);
                LoadOutcome::Loaded { inserted }
            })
            .collect())
    }
    async fn probe(&self, request: LoadRequest<'_>, rows: Range<u64>) -> Result<(), WarehouseError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        self.rows_of(&request, Some(rows)).map(|_| ())
    }
}

fn step_once(batches: &Batches, warehouse: &Groups, catalog: &Catalog, config: ImporterConfig) -> usize {
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
        importer.step().await.unwrap()
    })
}

fn grouped(bytes: usize) -> ImporterConfig {
    ImporterConfig {
        load_group_bytes: bytes,
        ..ImporterConfig::default()
    }
}

/// A queue that delivers one message, then fails every ack / delay / dead-letter as a stale
/// receipt does (another importer received the message since).
struct StaleQueue(Mutex<Option<Message>>);
impl Queue for StaleQueue {
    fn visibility_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
    async fn receive(&self, _: usize, _: Duration) -> Result<Vec<Message>, PortError> {
        Ok(self.0.lock().unwrap().take().into_iter().collect())
    }
    async fn ack(&self, _: &Message) -> Result<(), PortError> {
        Err(PortError::conflict("queue", "stale receipt"))
    }
    async fn set_visibility(&self, _: &Message, _: Duration) -> Result<(), PortError> {
        Err(PortError::conflict("queue", "stale receipt"))
    }
    async fn dead_letter(&self, _: &Message, _: DeadLetterNote<'_>) -> Result<(), PortError> {
        Err(PortError::conflict("queue", "stale receipt"))
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
    let store = Batches::new(&catalog, 0, 1, Compression::None);
    let warehouse = Groups::default();
    futures::executor::block_on(async {
        let importer = Importer::start(
            &queue,
            &store,
            &warehouse,
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
struct Waiting(AtomicUsize);
impl Queue for Waiting {
    fn visibility_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
    async fn receive(&self, _: usize, _: Duration) -> Result<Vec<Message>, PortError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
    async fn ack(&self, _: &Message) -> Result<(), PortError> {
        Ok(())
    }
    async fn set_visibility(&self, _: &Message, _: Duration) -> Result<(), PortError> {
        Ok(())
    }
    async fn dead_letter(&self, _: &Message, _: DeadLetterNote<'_>) -> Result<(), PortError> {
        Ok(())
    }
}

#[test]
fn the_configured_number_of_loops_receive_at_once_and_a_stop_ends_the_waits() {
    let catalog = table_t();
    let queue = Waiting::default();
    let store = Batches::new(&catalog, 0, 1, Compression::None);
    let config = ImporterConfig {
        concurrency: 3,
        ..ImporterConfig::default()
    };
    let warehouse = Groups::default();
    let importer = futures::executor::block_on(Importer::start(
        &queue,
        &store,
        &warehouse,
        &Now,
        &Half,
        &NoObserver,
        &catalog,
        config,
    ))
    .unwrap();
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    let mut run = Box::pin(importer.run(async {
        let _ = stop_rx.await;
    }));
    assert!(run.as_mut().now_or_never().is_none());
    assert_eq!(queue.0.load(Ordering::SeqCst), 3);
    stop_tx.send(()).unwrap();
    assert!(
        matches!(run.as_mut().now_or_never(), Some(Ok(()))),
        "a receive is cut short by a stop"
    );
}

#[test]
fn the_batches_of_a_receive_load_in_one_group() {
    let catalog = table_t();
    let batches = Batches::new(&catalog, 4, 2, Compression::None);
    let warehouse = Groups::default();
    assert_eq!(step_once(&batches, &warehouse, &catalog, grouped(8 << 20)), 4);
    let keys: Vec<String> = (0..4).map(|i| batches.key(i)).collect();
    assert_eq!(
        *warehouse.calls.lock().unwrap(),
        vec![keys],
        "one transaction for the four"
    );
    assert_eq!(batches.settled().iter().filter(|(_, s)| s == "ack").count(), 4);
}

#[test]
fn groups_stop_at_their_byte_bound() {
    let catalog = table_t();
    let batches = Batches::new(&catalog, 4, 2, Compression::None);
    let one = batches.object(&batches.key(0)).unwrap().body.len();
    let warehouse = Groups::default();
    // Room for two batches per group, not three.
    step_once(&batches, &warehouse, &catalog, grouped(2 * one + 1));
    let sizes: Vec<usize> = warehouse.calls.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![2, 2]);
}

#[test]
fn a_failed_group_loads_in_halves_down_to_the_bad_batch() {
    let catalog = table_t();
    let batches = Batches::new(&catalog, 3, 2, Compression::None);
    let bad = batches.key(1);
    let warehouse = Groups {
        bad: Some(bad.clone()),
        ..Groups::default()
    };
    step_once(&batches, &warehouse, &catalog, grouped(8 << 20));
    let calls = warehouse.calls.lock().unwrap().clone();
    let (k0, k2) = (batches.key(0), batches.key(2));
    assert_eq!(
        calls,
        vec![
            vec![k0.clone(), bad.clone(), k2.clone()],
            vec![k0],
            vec![bad.clone(), k2.clone()],
            vec![bad],
            vec![k2]
        ],
        "the group, then its halves, down to the bad batch alone"
    );
    assert_eq!(
        batches.settled(),
        vec![
            ("m0".into(), "ack".into()),
            ("m1".into(), "dead letter warehouse_rejected".into()),
            ("m2".into(), "ack".into())
        ],
        "only the bad batch's message is dead-lettered"
    );
    assert_eq!(*batches.ack_calls.lock().unwrap(), vec![2]);
}

/// Found in review: one value PostgreSQL refuses (a NUL in a json value, SQLSTATE 22P05) sank
/// the whole batch into the dead-letter queue with every good event in it. Now the refused row
/// goes to `rejected/rows/` with the warehouse's reason, and the others load.
#[test]
fn a_refused_row_goes_to_rejected_and_the_others_load() {
    for names_rows in [true, false] {
        let catalog = table_t();
        let batches = Batches::new(&catalog, 2, 10, Compression::None);
        let warehouse = Groups {
            refuse: Some("v7".into()),
            names_rows,
            ..Groups::default()
        };
        step_once(&batches, &warehouse, &catalog, grouped(8 << 20));
        let committed = warehouse.committed.lock().unwrap().clone();
        for i in 0..2 {
            let rows = &committed[&batches.key(i)];
            let want: Vec<String> = (0..10).filter(|r| *r != 7).map(|r| format!("v{r}")).collect();
            assert_eq!(rows, &want, "named: {names_rows}");
            let refused = batches
                .object(&crate::keys::refused_rows_key(&batches.key(i)))
                .expect("the refused row is kept");
            let refused: RefusedRows = serde_json::from_slice(&refused.body).unwrap();
            assert_eq!(refused.rows.len(), 1);
            assert_eq!(refused.rows[0].row, 7);
            assert!(
                refused.rows[0].reason.contains("invalid input syntax"),
                "{:?}",
                refused.rows[0]
            );
            assert!(refused.rows[0].csv.as_deref().unwrap().contains("v7"));
        }
        assert_eq!(
            batches.settled(),
            vec![("m0".into(), "ack".into()), ("m1".into(), "ack".into())]
        );
        let probes = warehouse.probes.load(Ordering::SeqCst);
        if names_rows {
            assert_eq!(probes, 0, "a named row needs no bisection");
        } else {
            assert!(probes > 0, "an unnamed one is found by probing");
        }
    }
}

#[test]
fn a_batch_whose_every_row_is_refused_is_dead_lettered() {
    let catalog = table_t();
    let batches = Batches::new(&catalog, 1, 10, Compression::None);
    let warehouse = Groups {
        refuse: Some("v0".into()),
        names_rows: true,
        ..Groups::default()
    };
    // No refused row allowed: the first is one too many.
    let config = ImporterConfig {
        max_refused_rows: 0,
        ..ImporterConfig::default()
    };
    step_once(&batches, &warehouse, &catalog, config);
    assert_eq!(
        batches.settled(),
        vec![("m0".into(), "dead letter rows_refused".into())]
    );
}

#[test]
fn compressed_batches_are_decompressed_and_checked() {
    for compression in [Compression::Gzip, Compression::Zstd] {
        let catalog = table_t();
        let batches = Batches::new(&catalog, 2, 3, compression);
        let warehouse = Groups::default();
        step_once(&batches, &warehouse, &catalog, grouped(8 << 20));
        let committed = warehouse.committed.lock().unwrap().clone();
        assert_eq!(committed[&batches.key(0)], ["v0", "v1", "v2"]);
        // A corrupt object is poison, named as such.
        let batches = Batches::new(&catalog, 1, 3, compression);
        let key = batches.key(0);
        batches.objects.lock().unwrap().get_mut(&key).unwrap().body[12] ^= 0xff;
        step_once(&batches, &Groups::default(), &catalog, grouped(8 << 20));
        let settled = batches.settled();
        assert!(
            settled[0].1 == "dead letter corrupt_compression"
                || settled[0].1 == "dead letter checksum_mismatch",
            "{settled:?}"
        );
    }
}

#[test]
fn a_warehouse_that_reads_the_store_gets_no_bytes() {
    let catalog = table_t();
    let batches = Batches::new(&catalog, 2, 3, Compression::Zstd);
    let warehouse = Groups {
        reads_store: true,
        ..Groups::default()
    };
    step_once(&batches, &warehouse, &catalog, grouped(8 << 20));
    let gets = batches.gets.lock().unwrap().clone();
    assert!(
        gets.iter().all(|k| k.starts_with("schemas/")),
        "only the schema object is read: {gets:?}"
    );
    assert_eq!(gets.len(), 1, "and once, from then on from the cache");
    assert_eq!(batches.heads.lock().unwrap().len(), 2);
    assert_eq!(batches.settled().len(), 2);
}

#[test]
fn a_missing_schema_object_is_retried() {
    let catalog = table_t();
    let batches = Batches::new(&catalog, 1, 3, Compression::None);
    batches
        .objects
        .lock()
        .unwrap()
        .retain(|k, _| !k.starts_with("schemas/"));
    step_once(&batches, &Groups::default(), &catalog, grouped(8 << 20));
    assert_eq!(batches.settled(), vec![("m0".into(), "retry".into())]);
}

#[test]
fn receives_ask_for_no_more_than_the_queue_takes_at_once() {
    let catalog = table_t();
    let batches = Batches::new(&catalog, 0, 1, Compression::None);
    let config = ImporterConfig {
        receive_max: 50,
        ..ImporterConfig::default()
    };
    step_once(&batches, &Groups::default(), &catalog, config);
    assert_eq!(batches.receive_max_asked.load(Ordering::SeqCst), 10);
}

/// A clock for the heartbeat test: sleepers wake when the test moves it.
#[derive(Default)]
struct TestClock {
    now: Mutex<Timestamp>,
    sleepers: Mutex<Vec<Waker>>,
}

impl TestClock {
    fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap();
        *now = now.saturating_add(d);
        drop(now);
        for w in self.sleepers.lock().unwrap().drain(..) {
            w.wake();
        }
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

/// A load longer than the visibility timeout: the heartbeat keeps the message hidden the whole
/// time (SQS would hand it to another importer otherwise), and stops once it is settled.
#[test]
fn the_heartbeat_keeps_a_long_load_hidden() {
    static CLOCK: std::sync::LazyLock<TestClock> = std::sync::LazyLock::new(TestClock::default);
    let catalog = table_t();
    let batches = Batches::new(&catalog, 1, 3, Compression::None);
    let warehouse = Groups {
        slow: Some((&CLOCK, Duration::from_secs(100))),
        ..Groups::default()
    };
    let importer = futures::executor::block_on(Importer::start(
        &batches,
        &batches,
        &warehouse,
        &*CLOCK,
        &Half,
        &NoObserver,
        &catalog,
        ImporterConfig::default(),
    ))
    .unwrap();
    let mut step = Box::pin(importer.step());
    let mut cx = Context::from_waker(Waker::noop());
    let mut done = false;
    for _ in 0..120 {
        if step.as_mut().poll(&mut cx).is_ready() {
            done = true;
            break;
        }
        CLOCK.advance(Duration::from_secs(1));
    }
    assert!(done);
    // 100 s of load with a 30 s visibility: extended every 10 s.
    let beats = batches.visibility_calls.load(Ordering::SeqCst);
    assert!((9..=11).contains(&beats), "{beats} heartbeats");
    assert_eq!(batches.settled(), vec![("m0".into(), "ack".into())]);
}

#[test]
fn a_cycle_receives_again_while_the_queue_hands_over_full_batches() {
    let mut c = Cycle::new(10, 35);
    assert_eq!(c.next_receive(), 10);
    c.took(10);
    assert!(c.wants_more());
    c.took(10);
    c.took(10);
    assert_eq!(c.next_receive(), 5, "no more than the cycle's room");
    c.took(5);
    assert!(!c.wants_more(), "the cycle is full");
    let mut c = Cycle::new(10, 100);
    c.took(10);
    c.took(3);
    assert!(!c.wants_more(), "a short receive: the queue is drained");
    let mut c = Cycle::new(10, 10);
    c.took(10);
    assert!(!c.wants_more(), "the default: one receive per cycle");
}

#[test]
fn a_cycle_loads_what_queued_up_in_one_group() {
    let catalog = table_t();
    let batches = Batches::new(&catalog, 25, 1, Compression::None);
    let warehouse = Groups::default();
    let config = ImporterConfig {
        cycle_max_messages: 100,
        ..grouped(8 << 20)
    };
    assert_eq!(step_once(&batches, &warehouse, &catalog, config), 25);
    let sizes: Vec<usize> = warehouse.calls.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![25], "three receives, one transaction");
    assert_eq!(batches.settled().iter().filter(|(_, s)| s == "ack").count(), 25);
}

#[test]
fn a_large_failed_group_costs_a_few_loads_not_one_per_batch() {
    let catalog = table_t();
    let batches = Batches::new(&catalog, 64, 1, Compression::None);
    let bad = batches.key(17);
    let warehouse = Groups {
        bad: Some(bad.clone()),
        ..Groups::default()
    };
    let config = ImporterConfig {
        cycle_max_messages: 100,
        ..grouped(8 << 20)
    };
    step_once(&batches, &warehouse, &catalog, config);
    let calls = warehouse.calls.lock().unwrap().len();
    // The group, and per level of halving one failing and one good half: 1 + 2·6.
    assert_eq!(calls, 13, "not 1 + 64");
    let settled = batches.settled();
    assert_eq!(settled.iter().filter(|(_, s)| s == "ack").count(), 63);
    assert_eq!(
        settled
            .iter()
            .filter(|(_, s)| s.starts_with("dead letter"))
            .count(),
        1
    );
}
