//! What every simulated part shares: the virtual clock, the seeded fault plan and its draws, the
//! trace, the record of violations, and which component the executor is polling right now.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use microbatch_core::ports::{Checkpoint, Clock, Entropy};
use microbatch_core::position::ShardId;
use microbatch_core::time::Timestamp;

use crate::clock::{SeededEntropy, VirtualClock};

/// Every kind of fault the simulation injects. Each run draws which kinds are on and how often.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// A record of a `PutRecords` call fails (throughput exceeded); the others land.
    PutRecordFailed,
    /// A `PutRecords` call times out although the stream kept the records: the KPL's duplicates.
    PutTimeoutStored,
    /// A consumer worker dies at an await point and a fresh one starts later.
    ConsumerCrash,
    /// Another worker takes a lease behind its holder's back.
    LeaseStolen,
    StorePutFailed,
    /// The object was written but the reply was lost: the writer retries a done write.
    StorePutLostReply,
    StoreSlowPut,
    StoreGetFailed,
    /// S3 → SQS delivers a notification twice.
    QueueDuplicate,
    /// A delete (ack) is lost: the message comes back after its visibility timeout.
    QueueLostAck,
    /// Receives hand out visible messages in random order, not oldest first.
    QueueReorder,
    /// An importer dies at an await point.
    ImporterCrash,
    ImporterCrashBeforeCommit,
    ImporterCrashAfterCommit,
    WarehouseTransient,
    /// The warehouse restarts: the open transaction rolls back, calls fail for a while.
    WarehouseRestart,
    /// The load committed but the client saw a timeout.
    WarehouseCommitLost,
    WarehouseSlowLoad,
    /// A corrupt object (checksum mismatch) or a lying row count: poison for the importer.
    PoisonBatch,
    /// Components' clocks disagree by up to seconds.
    ClockSkew,
    ReshardSplit,
    ReshardMerge,
    /// A window in which every object write is refused as access denied (an IAM policy or a KMS
    /// key broken, then fixed): permanent errors, not transient ones.
    StoreDenied,
    /// A shard iterator expires before it is used (Kinesis: after five minutes).
    CursorExpired,
    /// A read returns no records in the middle of a shard, with a cursor to go on from.
    EmptyPage,
    /// A burst in which every port throttles half of its calls.
    ThrottleBurst,
    /// A lease-table call fails transiently.
    LeaseTableUnavailable,
    /// Listing the stream's shards fails transiently.
    ListShardsFailed,
    /// The warehouse refuses some rows (values the mapper cannot know it refuses), naming the
    /// row or not, as the run draws.
    RefusedRow,
    /// A consumer or importer is stopped gracefully (SIGTERM: the drain path) and started again.
    GracefulStop,
}

impl Fault {
    pub const ALL: [Fault; 30] = [
        Fault::PutRecordFailed,
        Fault::PutTimeoutStored,
        Fault::ConsumerCrash,
        Fault::LeaseStolen,
        Fault::StorePutFailed,
        Fault::StorePutLostReply,
        Fault::StoreSlowPut,
        Fault::StoreGetFailed,
        Fault::QueueDuplicate,
        Fault::QueueLostAck,
        Fault::QueueReorder,
        Fault::ImporterCrash,
        Fault::ImporterCrashBeforeCommit,
        Fault::ImporterCrashAfterCommit,
        Fault::WarehouseTransient,
        Fault::WarehouseRestart,
        Fault::WarehouseCommitLost,
        Fault::WarehouseSlowLoad,
        Fault::PoisonBatch,
        Fault::ClockSkew,
        Fault::ReshardSplit,
        Fault::ReshardMerge,
        Fault::StoreDenied,
        Fault::CursorExpired,
        Fault::EmptyPage,
        Fault::ThrottleBurst,
        Fault::LeaseTableUnavailable,
        Fault::ListShardsFailed,
        Fault::RefusedRow,
        Fault::GracefulStop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::PutRecordFailed => "stream.put_record_failed",
            Fault::PutTimeoutStored => "stream.put_timeout_but_stored",
            Fault::ConsumerCrash => "consumer.crash",
            Fault::LeaseStolen => "lease.stolen",
            Fault::StorePutFailed => "store.put_failed",
            Fault::StorePutLostReply => "store.put_reply_lost",
            Fault::StoreSlowPut => "store.slow_put",
            Fault::StoreGetFailed => "store.get_failed",
            Fault::QueueDuplicate => "queue.duplicate",
            Fault::QueueLostAck => "queue.lost_ack",
            Fault::QueueReorder => "queue.reorder",
            Fault::ImporterCrash => "importer.crash",
            Fault::ImporterCrashBeforeCommit => "importer.crash_before_commit",
            Fault::ImporterCrashAfterCommit => "importer.crash_after_commit",
            Fault::WarehouseTransient => "warehouse.transient",
            Fault::WarehouseRestart => "warehouse.restart",
            Fault::WarehouseCommitLost => "warehouse.commit_reply_lost",
            Fault::WarehouseSlowLoad => "warehouse.slow_load",
            Fault::PoisonBatch => "store.poison_batch",
            Fault::ClockSkew => "clock.skew",
            Fault::ReshardSplit => "stream.split",
            Fault::ReshardMerge => "stream.merge",
            Fault::StoreDenied => "store.denied_window",
            Fault::CursorExpired => "stream.cursor_expired",
            Fault::EmptyPage => "stream.empty_page",
            Fault::ThrottleBurst => "all.throttle_burst",
            Fault::LeaseTableUnavailable => "lease.table_unavailable",
            Fault::ListShardsFailed => "stream.list_shards_failed",
            Fault::RefusedRow => "warehouse.refused_row",
            Fault::GracefulStop => "process.graceful_stop",
        }
    }

    /// The probability per opportunity at intensity 1 (for the scheduled kinds, the mean count
    /// per run; for the switches, whether they are on).
    fn base_rate(self) -> f64 {
        match self {
            Fault::PutRecordFailed => 0.05,
            Fault::PutTimeoutStored => 0.04,
            Fault::ConsumerCrash => 0.004,
            Fault::LeaseStolen => 1.5,
            Fault::StorePutFailed => 0.05,
            Fault::StorePutLostReply => 0.04,
            Fault::StoreSlowPut => 0.04,
            Fault::StoreGetFailed => 0.03,
            Fault::QueueDuplicate => 0.06,
            Fault::QueueLostAck => 0.05,
            Fault::QueueReorder => 1.0,
            Fault::ImporterCrash => 0.004,
            Fault::ImporterCrashBeforeCommit => 0.03,
            Fault::ImporterCrashAfterCommit => 0.03,
            Fault::WarehouseTransient => 0.06,
            Fault::WarehouseRestart => 0.01,
            Fault::WarehouseCommitLost => 0.04,
            Fault::WarehouseSlowLoad => 0.04,
            Fault::PoisonBatch => 0.02,
            Fault::ClockSkew => 1.0,
            Fault::ReshardSplit => 1.0,
            Fault::ReshardMerge => 0.7,
            Fault::StoreDenied => 1.0,
            Fault::CursorExpired => 0.03,
            Fault::EmptyPage => 0.05,
            Fault::ThrottleBurst => 1.5,
            Fault::LeaseTableUnavailable => 0.03,
            Fault::ListShardsFailed => 0.1,
            Fault::RefusedRow => 1.0,
            Fault::GracefulStop => 1.5,
        }
    }
}

/// A deliberately broken variant of the system, to prove the simulation catches it. Each is
/// injected in the simulated world where that models the breakage faithfully. Test-only: the
/// CLI hides its flag and runs without sabotage unless told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Sabotage {
    #[default]
    None,
    /// The lease store records the last record *read* as the checkpoint, whatever the consumer
    /// asked: a consumer that checkpoints before its buffers are flushed.
    CheckpointBeforeFlush,
    /// The warehouse loads without looking at its load manifest.
    SkipManifestCheck,
    /// The queue deletes a message when it hands it out: the importer's ack comes before its
    /// commit.
    AckBeforeCommit,
    /// The warehouse inserts rows without the `(event id, row index)` dedupe.
    SkipRowDedupe,
    /// The store drops `rejected/` writes on the floor (but answers Ok).
    DropRejected,
    /// While the store denies writes, it answers Ok instead (and stores nothing): a consumer that
    /// ignores a permanent write error.
    IgnoreWriteError,
    /// The warehouse refuses a batch with a refused row as a whole (a batch-level error): an
    /// importer that loads nothing of a batch with one bad row.
    RefuseWholeBatch,
    /// The store drops the importer's `rejected/rows/` writes (but answers Ok).
    DropRefusedRows,
    /// The stream re-opens a cursor at the tip instead of where asked: a consumer that re-opens
    /// an expired cursor at `LATEST`.
    ReopenAtLatest,
    /// An empty page in the middle of a shard comes without a next cursor: a reader that takes
    /// an empty page for the end of the shard.
    EmptyPageEndsShard,
}

impl Sabotage {
    pub const ALL: [Sabotage; 10] = [
        Sabotage::CheckpointBeforeFlush,
        Sabotage::SkipManifestCheck,
        Sabotage::AckBeforeCommit,
        Sabotage::SkipRowDedupe,
        Sabotage::DropRejected,
        Sabotage::IgnoreWriteError,
        Sabotage::RefuseWholeBatch,
        Sabotage::DropRefusedRows,
        Sabotage::ReopenAtLatest,
        Sabotage::EmptyPageEndsShard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sabotage::None => "none",
            Sabotage::CheckpointBeforeFlush => "checkpoint-before-flush",
            Sabotage::SkipManifestCheck => "skip-manifest-check",
            Sabotage::AckBeforeCommit => "ack-before-commit",
            Sabotage::SkipRowDedupe => "skip-row-dedupe",
            Sabotage::DropRejected => "drop-rejected",
            Sabotage::IgnoreWriteError => "ignore-write-error",
            Sabotage::RefuseWholeBatch => "refuse-whole-batch",
            Sabotage::DropRefusedRows => "drop-refused-rows",
            Sabotage::ReopenAtLatest => "reopen-at-latest",
            Sabotage::EmptyPageEndsShard => "empty-page-ends-shard",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        std::iter::once(Sabotage::None)
            .chain(Sabotage::ALL)
            .find(|s| s.name() == name)
    }
}

/// How often each fault happens in one run.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    rates: BTreeMap<Fault, f64>,
}

impl FaultPlan {
    /// No faults at all.
    pub fn none() -> Self {
        FaultPlan {
            rates: BTreeMap::new(),
        }
    }

    /// Draws the plan of a run: each kind is on with probability 0.6 (so some runs have few
    /// faults and each kind is sometimes alone), at an intensity shared by the run.
    pub fn draw(rng: &SeededEntropy) -> Self {
        let intensity = 0.25 + 1.75 * rng.unit();
        let mut rates = BTreeMap::new();
        for fault in Fault::ALL {
            if rng.unit() < 0.6 {
                let rate = match fault {
                    Fault::QueueReorder | Fault::ClockSkew | Fault::RefusedRow => 1.0,
                    Fault::LeaseStolen
                    | Fault::ReshardSplit
                    | Fault::ReshardMerge
                    | Fault::StoreDenied
                    | Fault::ThrottleBurst
                    | Fault::GracefulStop => fault.base_rate() * (0.5 + rng.unit()),
                    _ => (fault.base_rate() * intensity).min(0.5),
                };
                rates.insert(fault, rate);
            }
        }
        FaultPlan { rates }
    }

    pub fn rate(&self, fault: Fault) -> f64 {
        self.rates.get(&fault).copied().unwrap_or(0.0)
    }

    pub fn is_on(&self, fault: Fault) -> bool {
        self.rate(fault) > 0.0
    }
}

/// FNV-1a over the trace text: stable across platforms and Rust versions.
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct State {
    counts: BTreeMap<Fault, u64>,
    hash: Fnv,
    lines: Option<Vec<String>>,
    violations: Vec<String>,
    crash_requests: Vec<usize>,
    checkpoints: Vec<(ShardId, Checkpoint)>,
    max_buffer_bytes: usize,
    accepted: BTreeMap<String, Timestamp>,
    submits: u64,
    /// Windows of the scheduled faults that last a while (store denial, throttle bursts).
    windows: BTreeMap<Fault, Vec<(Timestamp, Timestamp)>>,
}

/// The shared context of one run.
#[derive(Debug)]
pub struct Ctx {
    pub clock: VirtualClock,
    pub plan: FaultPlan,
    pub sabotage: Sabotage,
    active: AtomicBool,
    rng: SeededEntropy,
    current: AtomicUsize,
    names: Mutex<Vec<String>>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("the simulation runs on one thread")
}

impl Ctx {
    pub fn new(
        clock: VirtualClock,
        plan: FaultPlan,
        sabotage: Sabotage,
        seed: u64,
        keep_trace: bool,
    ) -> Self {
        Ctx {
            clock,
            plan,
            sabotage,
            active: AtomicBool::new(true),
            rng: SeededEntropy::new(seed ^ 0xFA17_FA17_FA17_FA17),
            current: AtomicUsize::new(usize::MAX),
            names: Mutex::new(Vec::new()),
            state: Mutex::new(State {
                lines: keep_trace.then(Vec::new),
                ..State::default()
            }),
        }
    }

    /// A context without faults, for tests that only need the world to work.
    pub fn quiet(clock: VirtualClock) -> Self {
        Ctx::new(clock, FaultPlan::none(), Sabotage::None, 0, false)
    }

    pub fn faults_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Stops every fault from now on: the liveness phase.
    pub fn stop_faults(&self) {
        self.active.store(false, Ordering::Relaxed);
        self.trace("world", format_args!("faults stop"));
    }

    /// A uniform draw from the fault stream (whether or not faults are active).
    pub fn unit(&self) -> f64 {
        self.rng.unit()
    }

    pub fn below(&self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.rng.next_u64() % n }
    }

    pub fn millis(&self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }

    /// Whether `fault` strikes now; counted and traced when it does.
    pub fn chance(&self, fault: Fault) -> bool {
        if !self.faults_active() {
            return false;
        }
        let p = self.plan.rate(fault);
        if p <= 0.0 || self.rng.unit() >= p {
            return false;
        }
        self.count(fault);
        true
    }

    /// Opens a window of `fault` from now for `length` (counted once).
    pub fn open_window(&self, fault: Fault, length: Duration) {
        let now = self.clock.now();
        lock(&self.state)
            .windows
            .entry(fault)
            .or_default()
            .push((now, now.saturating_add(length)));
        self.count(fault);
    }

    /// Whether a window of `fault` is open now (and faults are on).
    pub fn in_window(&self, fault: Fault) -> bool {
        if !self.faults_active() {
            return false;
        }
        let now = self.clock.now();
        lock(&self.state)
            .windows
            .get(&fault)
            .is_some_and(|ws| ws.iter().any(|(from, to)| *from <= now && now < *to))
    }

    /// Whether a port call is throttled now: half of them during a burst.
    pub fn throttled(&self) -> bool {
        self.in_window(Fault::ThrottleBurst) && self.rng.unit() < 0.5
    }

    /// Counts and traces a fault that was scheduled rather than drawn.
    pub fn count(&self, fault: Fault) {
        *lock(&self.state).counts.entry(fault).or_default() += 1;
        self.trace("fault", format_args!("{}", fault.name()));
    }

    pub fn fault_counts(&self) -> BTreeMap<Fault, u64> {
        lock(&self.state).counts.clone()
    }

    /// Sleeps a random latency of `lo..=hi` milliseconds (a port call taking time).
    pub async fn latency(&self, lo: u64, hi: u64) {
        let d = self.millis(lo, hi);
        if !d.is_zero() {
            self.clock.sleep(d).await;
        }
    }

    // -- components and crashes -----------------------------------------------------------------

    pub fn register(&self, name: &str) -> usize {
        let mut names = lock(&self.names);
        names.push(name.to_owned());
        names.len() - 1
    }

    pub fn set_current(&self, index: usize) {
        self.current.store(index, Ordering::Relaxed);
    }

    /// The component being polled (whose port call this is).
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    fn current_name(&self) -> String {
        let i = self.current();
        lock(&self.names)
            .get(i)
            .cloned()
            .unwrap_or_else(|| "world".into())
    }

    /// Asks the executor to crash the component being polled at its next await point.
    pub fn crash_current(&self) {
        let i = self.current();
        lock(&self.state).crash_requests.push(i);
    }

    pub fn take_crash_requests(&self) -> Vec<usize> {
        std::mem::take(&mut lock(&self.state).crash_requests)
    }

    // -- trace ----------------------------------------------------------------------------------

    /// Adds a line to the trace (hashed always, kept when asked for).
    pub fn trace(&self, component: &str, text: fmt::Arguments<'_>) {
        let now = self.clock.now();
        let mut s = lock(&self.state);
        let t = now.as_micros();
        let line = format!(
            "{:>6}.{:06} {component:<12} {text}",
            t / 1_000_000 - T0_SECS,
            t % 1_000_000
        );
        let _ = s.hash.write_str(&line);
        let _ = s.hash.write_char('\n');
        if let Some(lines) = s.lines.as_mut() {
            lines.push(line);
        }
    }

    /// Traces a line in the name of the component being polled.
    pub fn trace_here(&self, text: fmt::Arguments<'_>) {
        let name = self.current_name();
        self.trace(&name, text);
    }

    pub fn trace_hash(&self) -> u64 {
        lock(&self.state).hash.0
    }

    pub fn take_trace(&self) -> Vec<String> {
        lock(&self.state).lines.take().unwrap_or_default()
    }

    // -- findings -------------------------------------------------------------------------------

    pub fn violation(&self, text: impl Into<String>) {
        let text = text.into();
        self.trace("VIOLATION", format_args!("{text}"));
        lock(&self.state).violations.push(text);
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    pub fn has_violations(&self) -> bool {
        !lock(&self.state).violations.is_empty()
    }

    pub fn log_checkpoint(&self, shard: ShardId, checkpoint: Checkpoint) {
        lock(&self.state).checkpoints.push((shard, checkpoint));
    }

    pub fn take_checkpoints(&self) -> Vec<(ShardId, Checkpoint)> {
        std::mem::take(&mut lock(&self.state).checkpoints)
    }

    pub fn buffer_bytes(&self, allocated: usize) {
        let mut s = lock(&self.state);
        s.max_buffer_bytes = s.max_buffer_bytes.max(allocated);
    }

    pub fn max_buffer_bytes(&self) -> usize {
        lock(&self.state).max_buffer_bytes
    }

    /// An event's submission resolved Ok (the first time counts).
    pub fn accepted(&self, id: &str, at: Timestamp) {
        lock(&self.state).accepted.entry(id.to_owned()).or_insert(at);
    }

    pub fn accepted_events(&self) -> BTreeMap<String, Timestamp> {
        lock(&self.state).accepted.clone()
    }

    pub fn submitted(&self) {
        lock(&self.state).submits += 1;
    }

    pub fn submits(&self) -> u64 {
        lock(&self.state).submits
    }
}

/// The simulated epoch (2024-05-01T12:00:00Z), in seconds; traces count from it.
pub const T0_SECS: i64 = 1_714_564_800;

/// Where every run starts.
pub fn t0() -> Timestamp {
    Timestamp::from_micros(T0_SECS * 1_000_000)
}
