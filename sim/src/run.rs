//! One simulated run: a seed in, a report out. The seed draws the configuration (shards, limits,
//! how many workers), the fault plan, the workload and every fault on the way; the production
//! driver loops run over the simulated world until everything is quiescent, and the checker
//! judges the result.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on;
use microbatch_core::backoff::Backoff;
use microbatch_core::batch::Compression;
use microbatch_core::batcher::BatchPolicy;
use microbatch_core::catalog::Catalog;
use microbatch_core::driver::{Consumer, ConsumerConfig, Importer, ImporterConfig, Producer, ProducerConfig};
use microbatch_core::event::{Envelope, EventId};
use microbatch_core::kpl::AggregatorConfig;
use microbatch_core::ports::{Clock, Entropy};
use microbatch_core::put_pacing::PutLimits;
use microbatch_core::time::Timestamp;
use serde_json::value::RawValue;

use crate::check::{Checker, Outcome, SimObserver};
use crate::clock::{RunError, SeededEntropy, SkewedClock, VirtualClock};
use crate::ctx::{Ctx, Fault, FaultPlan, Sabotage, t0};
use crate::exec::{Component, Task, run};
use crate::workload::{ClientPlan, Workload};
use crate::world::{World, WorldOptions};

/// How to run a seed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A deliberately broken variant (test-only).
    pub sabotage: Sabotage,
    /// Keep the trace lines (they are always hashed).
    pub trace: bool,
    /// Run without any fault (the fault plan is still drawn, so the workload is the same).
    pub no_faults: bool,
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub violations: Vec<String>,
    pub trace_hash: u64,
    pub trace: Vec<String>,
    pub faults: BTreeMap<Fault, u64>,
    pub outcome: Outcome,
    /// Events the workload sent (distinct ids) and submissions made (retries included).
    pub events: usize,
    pub submits: u64,
    /// Virtual time from the start to quiescence.
    pub duration: Duration,
    /// Virtual time from the end of the faults to quiescence.
    pub drain: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The longest the system may take to drain once faults stop (liveness).
pub const DRAIN_BOUND: Duration = Duration::from_secs(600);

const WORKLOAD_STREAM: u64 = 0x005E_ED0F_E7E7_7000;
const DRIVER_STREAM: u64 = 0xD21F_E12E_0000_0001;

struct Setup {
    shards: u32,
    visibility: Duration,
    consumers: usize,
    importers: usize,
    producer: ProducerConfig,
    consumer: ConsumerConfig,
    importer: ImporterConfig,
    same_owner_on_restart: bool,
    warehouse_reads_store: bool,
    names_rows: bool,
}

fn setup(rng: &SeededEntropy) -> Setup {
    let r = |lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo + 1);
    let max_bytes = r(2_048, 32_768) as usize;
    let mut setup = Setup {
        shards: r(1, 4) as u32,
        visibility: Duration::from_secs(if rng.unit() < 0.3 { 5 } else { 30 }),
        consumers: r(1, 2) as usize,
        importers: r(1, 2) as usize,
        producer: ProducerConfig {
            aggregator: AggregatorConfig {
                max_aggregate_bytes: r(4_096, 64_000) as usize,
                max_records: r(1, 50) as usize,
                linger: Duration::from_millis(r(5, 60)),
            },
            max_pending_events: r(20, 400) as usize,
            max_put_records: r(1, 10) as usize,
            max_put_bytes: 5 << 20,
            max_inflight_puts: r(1, 4) as usize,
            put_retry: Backoff::new(Duration::from_millis(50), Duration::from_secs(1), r(3, 8) as u32),
            shard_refresh: Duration::from_secs(r(2, 10)),
            put_limits: PutLimits::default(),
        },
        consumer: ConsumerConfig {
            owner: String::new(),
            batch: BatchPolicy {
                max_rows: r(3, 200) as usize,
                max_bytes,
                max_age: Duration::from_millis(r(300, 3_000)),
                budget_bytes: max_bytes * r(1, 4) as usize,
            },
            compression: Compression::None,
            read_limit: r(1, 40) as usize,
            idle_poll: Duration::from_millis(r(50, 300)),
            lease_sync: Duration::from_millis(r(500, 3_000)),
            failover: Duration::from_secs(10),
            max_leases: 1024,
            checkpoint_every: Duration::from_millis(r(100, 1_000)),
            max_inflight_writes: r(1, 8) as usize,
            write_retry: Backoff::new(Duration::from_millis(50), Duration::from_secs(2), u32::MAX),
            ..ConsumerConfig::default()
        },
        importer: ImporterConfig {
            receive_max: r(1, 10) as usize,
            receive_wait: Duration::from_secs(1),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(60), 10),
            concurrency: 1,
            load_group_bytes: 8 << 20,
            max_refused_rows: 100,
            cycle_max_messages: 10,
        },
        same_owner_on_restart: rng.unit() < 0.3,
        warehouse_reads_store: false,
        names_rows: true,
    };
    // Drawn last, so the draws before it (and every seed's configuration so far) stay as they were.
    let loops = r(1, 4) as u32;
    setup.importer.concurrency = loops as usize;
    // An importer crash abandons the message of every loop, and each comes back as one more
    // receive: more loops, more attempts burnt by crashes alone. The budget grows with the loops
    // (staying under the queue's own redrive count of 25) so that faults alone never exhaust it.
    setup.importer.backoff = Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(60),
        10 + 4 * (loops - 1),
    );
    // Load groups: every batch alone, a few batches per transaction, or all of a receive.
    setup.importer.load_group_bytes = match r(0, 2) {
        0 => 1,
        1 => max_bytes,
        _ => 8 << 20,
    };
    // Drawn after the above for the same reason.
    setup.consumer.compression = Compression::ALL[r(0, 2) as usize];
    setup.warehouse_reads_store = rng.unit() < 0.3;
    setup.names_rows = rng.unit() < 0.6;
    setup.consumer.pacing.calls_per_sec = [0.0, 5.0, 20.0][r(0, 2) as usize];
    setup.consumer.shard_sync = Duration::from_millis(r(1_000, 30_000));
    // Puts paced per shard, slow enough here that the pacing holds aggregates back.
    if rng.unit() < 0.5 {
        setup.producer.put_limits = PutLimits {
            bytes_per_sec: r(16 << 10, 256 << 10),
            records_per_sec: r(5, 200),
        };
    }
    // Load cycles that take what queued up (several receives), half the time. A crash abandons
    // every message of a cycle in hand, and a cycle holds them longer: a few more attempts, as
    // for the loops above, still under the queue's redrive count of 25.
    if rng.unit() < 0.5 {
        setup.importer.cycle_max_messages = r(10, 60) as usize;
        let attempts = (setup.importer.backoff.max_attempts + 4).min(24);
        setup.importer.backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60), attempts);
    }
    setup
}

/// When a consumer or importer is stopped gracefully: drawn once per component, inside the
/// fault window.
fn graceful_stops(ctx: &Ctx, faults_end: Timestamp) -> Vec<Timestamp> {
    let rate = ctx.plan.rate(Fault::GracefulStop);
    let n = (rate + ctx.unit()).floor() as u64;
    let window = faults_end.saturating_since(t0()).as_millis() as u64;
    let mut stops: Vec<Timestamp> = (0..n)
        .map(|_| t0().saturating_add(Duration::from_millis(ctx.below(window))))
        .collect();
    stops.sort();
    stops
}

/// Resolves at the first stop still ahead (in true time), counting it; never if none is.
fn next_stop<'c>(ctx: &'c Ctx, stops: &[Timestamp]) -> impl std::future::Future<Output = ()> + Send + 'c {
    let next = stops.iter().copied().find(|t| *t > ctx.clock.now());
    async move {
        match next {
            Some(at) if ctx.faults_active() => {
                ctx.clock.sleep_until(at).await;
                if ctx.faults_active() {
                    ctx.count(Fault::GracefulStop);
                    return;
                }
                std::future::pending().await
            }
            _ => std::future::pending().await,
        }
    }
}

/// Runs one seed with a catalog loaded once per thread.
pub fn run_seed(seed: u64, catalog: &Catalog, options: &Options) -> Report {
    let rng = SeededEntropy::new(seed);
    let drawn = FaultPlan::draw(&rng);
    let plan = if options.no_faults {
        FaultPlan::none()
    } else {
        drawn
    };
    let setup = setup(&rng);
    let workload = Workload::draw(&SeededEntropy::new(seed ^ WORKLOAD_STREAM));
    let clock = VirtualClock::starting_at(t0());
    let ctx = Arc::new(Ctx::new(
        clock.clone(),
        plan,
        options.sabotage,
        seed,
        options.trace,
    ));
    let world = World::with(
        ctx.clone(),
        WorldOptions {
            shards: setup.shards,
            visibility: setup.visibility,
            max_receives: 25,
            warehouse_reads_store: setup.warehouse_reads_store,
            names_rows: setup.names_rows,
        },
    );
    let entropy = SeededEntropy::new(seed ^ DRIVER_STREAM);
    let faults_end =
        t0().saturating_add(workload.span.max(Duration::from_secs(20)) + Duration::from_secs(10));
    let limit = faults_end.saturating_add(DRAIN_BOUND);
    ctx.trace(
        "world",
        format_args!(
            "seed {seed}: {} shards, {} consumers, {} importers, {} clients, {} events, {:?} objects, \
             warehouse reads the store: {}, faults {:?}",
            setup.shards,
            setup.consumers,
            setup.importers,
            workload.clients.len(),
            workload.events,
            setup.consumer.compression,
            setup.warehouse_reads_store,
            ctx.plan
        ),
    );

    // A clock per component, skewed when the plan says so.
    let skewed = |name: &str| {
        let offset = if ctx.plan.is_on(Fault::ClockSkew) && !options.no_faults {
            let off = ctx.below(6_001) as i64 - 3_000;
            ctx.count(Fault::ClockSkew);
            ctx.trace(name, format_args!("clock skew {off} ms"));
            off * 1_000
        } else {
            0
        };
        SkewedClock::new(clock.clone(), offset)
    };
    let frontend_clock = skewed("frontend");
    let producer_clock = skewed("producer");
    let consumer_clocks: Vec<SkewedClock> = (0..setup.consumers)
        .map(|i| skewed(&format!("consumer-{i}")))
        .collect();
    let importer_clocks: Vec<SkewedClock> = (0..setup.importers)
        .map(|i| skewed(&format!("importer-{i}")))
        .collect();
    let budget = setup.consumer.batch.budget_bytes;
    let producer_observer = SimObserver::new(&ctx, "producer", usize::MAX);
    let consumer_observers: Vec<SimObserver<'_>> = (0..setup.consumers)
        .map(|i| SimObserver::new(&ctx, format!("consumer-{i}"), budget))
        .collect();
    let importer_observers: Vec<SimObserver<'_>> = (0..setup.importers)
        .map(|i| SimObserver::new(&ctx, format!("importer-{i}"), usize::MAX))
        .collect();

    let (producer, handle) = block_on(Producer::start(
        &*world.stream,
        &producer_clock,
        &entropy,
        &producer_observer,
        setup.producer.clone(),
    ))
    .expect("the producer starts");

    let checker = RefCell::new(Checker::new(&world, catalog));
    let clients_left = Cell::new(workload.clients.len());
    let chaos_done = Cell::new(false);
    let stamp = Cell::new(0i64);
    let mut components: Vec<Component<'_>> = Vec::new();

    let mut producer = Some(producer);
    components.push(Component::new(&ctx, "producer", None, move |_| {
        let p = producer.take().expect("the producer never crashes");
        Box::pin(async move { p.run(std::future::pending()).await })
    }));
    for (i, plan) in workload.clients.iter().enumerate() {
        let mut plan = Some(plan.clone());
        let (handle, ctx, clock, frontend, clients_left, stamp) = (
            handle.clone(),
            &*ctx,
            &clock,
            &frontend_clock,
            &clients_left,
            &stamp,
        );
        components.push(Component::new(ctx, format!("client-{i}"), None, move |_| {
            let plan: ClientPlan = plan.take().expect("clients never crash");
            let handle = handle.clone();
            Box::pin(async move {
                for request in plan.requests {
                    clock.sleep_until(t0().saturating_add(request.at)).await;
                    let mut resend = request.resend;
                    loop {
                        let now = frontend.now();
                        let events: Vec<Envelope> = request
                            .events
                            .iter()
                            .map(|e| {
                                stamp.set(stamp.get() + 1);
                                let received_at = Timestamp::from_micros(now.as_micros() + stamp.get());
                                Envelope {
                                    id: EventId(e.id.clone()),
                                    event_type: e.event_type.clone(),
                                    source: "sim".into(),
                                    received_at,
                                    occurred_at: e.occurred_before.map(|d| {
                                        Timestamp::from_micros(received_at.as_micros() - d.as_micros() as i64)
                                    }),
                                    payload: RawValue::from_string(e.payload.clone())
                                        .expect("generated JSON"),
                                }
                            })
                            .collect();
                        ctx.submitted();
                        match handle.submit(events).await {
                            Ok(()) => {
                                let at = clock.now();
                                for e in &request.events {
                                    ctx.accepted(&e.id, at);
                                }
                                if resend {
                                    // The answer was lost: the client sends the same events again.
                                    resend = false;
                                    ctx.trace_here(format_args!(
                                        "resends a request it did not hear back from"
                                    ));
                                    continue;
                                }
                                break;
                            }
                            Err(e) => {
                                ctx.trace_here(format_args!("submit failed: {e}"));
                                clock.sleep(ctx.millis(100, 3_000)).await;
                            }
                        }
                    }
                }
                clients_left.set(clients_left.get() - 1);
            })
        }));
    }
    for i in 0..setup.consumers {
        let (world, ctx, clock, observer, entropy) = (
            &world,
            &*ctx,
            &consumer_clocks[i],
            &consumer_observers[i],
            &entropy,
        );
        let config = setup.consumer.clone();
        let same_owner = setup.same_owner_on_restart;
        let stops = graceful_stops(ctx, faults_end);
        components.push(Component::new(
            ctx,
            format!("consumer-{i}"),
            Some(Fault::ConsumerCrash),
            move |incarnation| {
                let mut config = config.clone();
                let stops = stops.clone();
                let delay = (incarnation > 0).then(|| ctx.millis(100, 5_000));
                Box::pin(async move {
                    if let Some(d) = delay {
                        clock.sleep(d).await;
                    }
                    // Each life ends with a graceful stop (the drain path) or a crash.
                    for life in 0.. {
                        config.owner = if same_owner {
                            format!("consumer-{i}")
                        } else {
                            format!("consumer-{i}.{incarnation}.{life}")
                        };
                        ctx.trace_here(format_args!("starts as {}", config.owner));
                        let consumer = match Consumer::new(
                            &*world.stream,
                            &*world.store,
                            &world.leases,
                            clock,
                            entropy,
                            observer,
                            catalog,
                            config.clone(),
                        ) {
                            Ok(c) => c,
                            Err(e) => {
                                ctx.violation(format!("the consumer does not start: {e}"));
                                return;
                            }
                        };
                        let stop = next_stop(ctx, &stops);
                        if let Err(e) = consumer.run(stop).await {
                            ctx.violation(format!("the consumer stopped: {e}"));
                            return;
                        }
                        ctx.trace_here(format_args!("drained and stopped gracefully"));
                        clock.sleep(ctx.millis(100, 3_000)).await;
                    }
                }) as Task<'_>
            },
        ));
    }
    for i in 0..setup.importers {
        let (world, ctx, clock, observer, entropy) = (
            &world,
            &*ctx,
            &importer_clocks[i],
            &importer_observers[i],
            &entropy,
        );
        let config = setup.importer.clone();
        let stops = graceful_stops(ctx, faults_end);
        components.push(Component::new(
            ctx,
            format!("importer-{i}"),
            Some(Fault::ImporterCrash),
            move |incarnation| {
                let config = config.clone();
                let stops = stops.clone();
                let delay = (incarnation > 0).then(|| ctx.millis(100, 5_000));
                Box::pin(async move {
                    if let Some(d) = delay {
                        clock.sleep(d).await;
                    }
                    loop {
                        let importer = match Importer::start(
                            &*world.queue,
                            &*world.store,
                            &world.warehouse,
                            clock,
                            entropy,
                            observer,
                            catalog,
                            config.clone(),
                        )
                        .await
                        {
                            Ok(i) => i,
                            Err(e) => {
                                ctx.violation(format!("the importer does not start: {e}"));
                                return;
                            }
                        };
                        if let Err(e) = importer.run(next_stop(ctx, &stops)).await {
                            ctx.violation(format!("the importer stopped: {e}"));
                            return;
                        }
                        ctx.trace_here(format_args!("finished its receives and stopped gracefully"));
                        clock.sleep(ctx.millis(100, 3_000)).await;
                    }
                }) as Task<'_>
            },
        ));
    }
    {
        // The chaos monkey: reshards and lease steals at drawn times, then the end of faults.
        let (world, ctx, clock, chaos_done) = (&world, &*ctx, &clock, &chaos_done);
        let window = faults_end.saturating_since(t0()).as_millis() as u64;
        let mut acts: Vec<(u64, Fault)> = Vec::new();
        for fault in [
            Fault::ReshardSplit,
            Fault::ReshardMerge,
            Fault::LeaseStolen,
            Fault::StoreDenied,
            Fault::ThrottleBurst,
        ] {
            let rate = ctx.plan.rate(fault);
            let n = (rate + ctx.unit()).floor() as u64;
            for _ in 0..n {
                acts.push((ctx.below(window), fault));
            }
        }
        acts.sort();
        let mut acts = Some(acts);
        components.push(Component::new(ctx, "chaos", None, move |_| {
            let acts = acts.take().expect("chaos never crashes");
            Box::pin(async move {
                for (at, fault) in acts {
                    clock
                        .sleep_until(t0().saturating_add(Duration::from_millis(at)))
                        .await;
                    let pick = ctx.below(1 << 20);
                    let done = match fault {
                        Fault::ReshardSplit => world.stream.open_shards() < 8 && world.stream.split(pick),
                        Fault::ReshardMerge => world.stream.merge(pick),
                        Fault::StoreDenied => {
                            ctx.open_window(fault, ctx.millis(1_000, 20_000));
                            false
                        }
                        Fault::ThrottleBurst => {
                            ctx.open_window(fault, ctx.millis(200, 5_000));
                            false
                        }
                        _ => world.leases.steal(pick),
                    };
                    if done && fault != Fault::LeaseStolen {
                        ctx.count(fault);
                    }
                }
                clock.sleep_until(faults_end).await;
                ctx.stop_faults();
                chaos_done.set(true);
            })
        }));
    }

    let result = run(
        &ctx,
        &mut components,
        limit,
        || checker.borrow_mut().after_poll(),
        || clients_left.get() == 0 && chaos_done.get() && checker.borrow().quiescent(),
    );
    let end = clock.now();
    match result {
        Ok(()) => {}
        Err(RunError::TimedOut(_)) => ctx.violation(format!(
            "liveness: not drained {}s after the faults stopped (queue depth {}, stream tails {:?}, leases {:?})",
            DRAIN_BOUND.as_secs(),
            world.queue.depth(),
            world
                .stream
                .tails()
                .iter()
                .map(|(id, closed, last)| format!(
                    "{id}{}:{}",
                    if *closed { " (closed)" } else { "" },
                    last.as_ref().map_or("-".into(), |r| r.seq.to_string())
                ))
                .collect::<Vec<_>>(),
            world
                .leases
                .snapshot()
                .iter()
                .map(|l| format!("{}:{:?}@{:?}", l.shard, l.checkpoint, l.owner))
                .collect::<Vec<_>>()
        )),
        Err(RunError::Deadlock) => ctx.violation("liveness: every component waits and no timer is set"),
    }
    let outcome = if result.is_ok() {
        checker.borrow_mut().finish(&ctx.accepted_events())
    } else {
        Outcome::default()
    };
    drop(components);
    ctx.trace(
        "world",
        format_args!(
            "end: {} accepted, {} rows, {} rejected, {} dead letters",
            outcome.accepted, outcome.rows, outcome.rejected, outcome.dead_letters
        ),
    );
    Report {
        seed,
        violations: ctx.violations(),
        trace_hash: ctx.trace_hash(),
        trace: ctx.take_trace(),
        faults: ctx.fault_counts(),
        outcome,
        events: workload.events,
        submits: ctx.submits(),
        duration: end.saturating_since(t0()),
        drain: end.saturating_since(faults_end),
    }
}
