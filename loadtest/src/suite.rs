//! The runs: one open-loop run against a target (latency, throughput, freshness, exactly-once),
//! backlog drains for scaling (tables, shards, event size, consumer RSS under its budget), and the
//! baseline comparisons.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::calls::{self, Calls, scrape_all};
use crate::fresh::{Tracker, Verdict};
use crate::load::{LoadResult, OpenLoop, open_loop, saturate};
use crate::report::{Point, percentiles_ms};
use crate::target::aws::Emulator;
use crate::target::{Embedded, EmulatedAws, Settings, Target, WarehouseKind, cpu_seconds, peak_rss};
use crate::workload::{SizeMix, Workload};

/// What every run shares.
#[derive(Debug, Clone)]
pub struct Env {
    pub bin: PathBuf,
    pub pg_url: String,
    pub poll: Duration,
    /// The emulator an `aws` target runs on (`--target aws`).
    pub emulator: Option<Arc<Emulator>>,
}

impl Env {
    /// Where backlog drains run: the emulated AWS stack when the run has an emulator, else the
    /// embedded one with the SQLite warehouse.
    pub fn drain_target(&self) -> anyhow::Result<Box<dyn Target>> {
        if self.emulator.is_some() {
            self.aws_target()
        } else {
            self.target(false)
        }
    }

    /// The emulated AWS deployment on [`Env::emulator`].
    pub fn aws_target(&self) -> anyhow::Result<Box<dyn Target>> {
        let emulator = self
            .emulator
            .clone()
            .context("no emulator: the aws target needs one")?;
        Ok(Box::new(EmulatedAws::new(
            self.bin.clone(),
            emulator,
            self.pg_url.clone(),
        )?))
    }

    pub fn target(&self, postgres: bool) -> anyhow::Result<Box<dyn Target>> {
        let warehouse = if postgres {
            WarehouseKind::Postgres {
                url: self.pg_url.clone(),
                schema: "microbatch_loadtest".into(),
            }
        } else {
            WarehouseKind::Sqlite
        };
        Ok(Box::new(Embedded::new(self.bin.clone(), warehouse)?))
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// The result of one open-loop run.
#[derive(Debug)]
pub struct OpenRun {
    pub target: String,
    pub load: LoadResult,
    pub tracker: Tracker,
    pub verdict: Verdict,
    pub peaks: Vec<(String, u64)>,
    pub points: Vec<Point>,
    /// Mean stream record bytes / 1 MiB (from the local stream file), if readable.
    pub stream_fill: Option<f64>,
    pub objects: Option<PathBuf>,
    /// From the target's start to the end of the run (before the stop).
    pub secs: f64,
    /// The AWS calls every process counted ([`Target::metrics_addrs`]); `None` when the target
    /// serves no metrics (the embedded one).
    pub calls: Option<Calls>,
    /// CPU seconds each process used, by role.
    pub cpu: Vec<(String, f64)>,
}

/// Starts `target`, runs the open loop while tracking freshness (crashing the target
/// `crash_at` into the load, if given: [`Target::crash`]), waits for the stragglers, checks
/// exactly-once, stops the target.
pub async fn open_run(
    env: &Env,
    mut target: Box<dyn Target>,
    settings: &Settings,
    workload: Arc<Workload>,
    cfg: &OpenLoop,
    crash_at: Option<Duration>,
) -> anyhow::Result<(OpenRun, Box<dyn Target>)> {
    target
        .start(settings)
        .await
        .with_context(|| format!("starting {}", target.name()))?;
    // Calls are counted from here: what the processes did while starting is not the run's.
    let addrs = target.metrics_addrs();
    let pages_before = if addrs.is_empty() {
        Vec::new()
    } else {
        scrape_all(&addrs).await?
    };
    let started = Instant::now();
    let probe = target.warehouse_probe().await?;
    let total = (cfg.rate * cfg.duration.as_secs_f64()).round() as u64;
    let acked = Arc::new(AtomicU64::new(0));
    let start_us = crate::load::unix_us() + 50_000;
    let tracker = Tracker::new(workload.clone(), total, start_us);
    let seen = tracker.seen.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (fates_tx, fates_rx) = watch::channel(None);
    let tracking = tokio::spawn(tracker.run(probe.clone(), env.poll, stop_rx, fates_rx));
    let progress = bar(total, "acked");
    let ticker = {
        let (progress, acked, seen) = (progress.clone(), acked.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                progress.set_position(acked.load(Ordering::Relaxed));
                progress.set_message(format!("queryable {}", seen.load(Ordering::Relaxed)));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let addr = target.producer_addr();
    let crash = async {
        let at = crash_at?;
        tokio::time::sleep(at).await;
        Some(target.crash().await)
    };
    let (load, crashed) = tokio::join!(open_loop(addr, workload.clone(), cfg, acked), crash);
    let load = match (load, crashed.transpose()) {
        (Ok(l), Ok(crashed)) => {
            if let Some(roles) = crashed {
                progress.println(format!("killed {}", roles.join(" and ")));
            }
            l
        }
        (Err(e), _) | (_, Err(e)) => {
            ticker.abort();
            let _ = target.stop().await;
            return Err(e);
        }
    };
    let _ = fates_tx.send(Some(Arc::new(load.fates.clone())));
    // Wait until every accepted event is queryable (or long past the flush interval).
    let deadline =
        Instant::now() + Duration::from_millis(settings.flush_interval_ms) + Duration::from_secs(60);
    while seen.load(Ordering::Relaxed) < load.events_accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let tracker = tracking.await??;
    ticker.abort();
    progress.finish_and_clear();
    let verdict = tracker.verdict(&probe, &load.fates).await?;
    probe.close().await;
    let secs = started.elapsed().as_secs_f64();
    let addrs = target.metrics_addrs();
    let calls = if addrs.is_empty() {
        None
    } else {
        Some(calls::between(&pages_before, &scrape_all(&addrs).await?))
    };
    let cpu = target
        .processes()
        .iter()
        .map(|p| (p.role.clone(), cpu_seconds(p.pid).unwrap_or(0.0)))
        .collect();
    let peaks = target.stop().await?;
    let stream_fill = match target.data_dir() {
        Some(dir) => stream_fill(&dir.join("data").join("stream.db")).await.ok(),
        None => None,
    };
    let points = load
        .timeline
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let [p50, _, p99, _] = percentiles_ms(&s.latency);
            let fresh = tracker.timeline.get(i).map_or(f64::NAN, |h| percentiles_ms(h)[2]);
            Point {
                second: i as f64,
                events_per_s: s.events_acked as f64,
                ack_p50_ms: p50,
                ack_p99_ms: p99,
                fresh_p99_ms: fresh,
            }
        })
        .collect();
    let objects = target.data_dir().map(|d| d.join("data").join("objects"));
    Ok((
        OpenRun {
            target: target.name(),
            load,
            tracker,
            verdict,
            peaks,
            points,
            stream_fill,
            objects,
            secs,
            calls,
            cpu,
        },
        target,
    ))
}

/// Mean stream record size (data + partition key) / the 1 MiB record limit.
pub async fn stream_fill(path: &std::path::Path) -> anyhow::Result<f64> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await?;
    let avg: Option<f64> =
        sqlx::query_scalar("SELECT AVG(length(data) + length(partition_key)) FROM records")
            .fetch_one(&pool)
            .await?;
    pool.close().await;
    Ok(avg.unwrap_or(0.0) / microbatch_core::kpl::KINESIS_MAX_RECORD_BYTES as f64)
}

/// A backlog drain: fill the stream through the producer alone, then start the consumer and the
/// importer and time until every accepted event is loaded.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    pub events: u64,
    pub fill_events_per_s: f64,
    pub drain_events_per_s: f64,
    pub drain_mib_per_s: f64,
    pub consumer_peak_rss: u64,
    /// Batches loaded (one object, one queue message, one manifest row each).
    pub batches: u64,
    pub verdict: Verdict,
}

pub async fn drain(
    env: &Env,
    tables: usize,
    shards: u32,
    sizes: SizeMix,
    events: u64,
    budget_bytes: usize,
) -> anyhow::Result<Drain> {
    let workload = Arc::new(Workload::new(
        tables,
        sizes,
        &format!("d{}", crate::load::unix_us()),
    ));
    let mut target = env.drain_target()?;
    let settings = Settings {
        catalog_toml: workload.catalog_toml(),
        shards,
        flush_interval_ms: 1000,
        buffer_budget_bytes: budget_bytes,
        split: true,
        producer_only: true,
    };
    target.start(&settings).await?;
    let probe = target.warehouse_probe().await?;
    let rate = 1e7;
    // Bodies stay under the producer's 1 MiB limit.
    let largest = match sizes {
        SizeMix::Mixed => 4096,
        SizeMix::Fixed(n) => n.max(1),
    };
    let batch = if matches!(sizes, SizeMix::Mixed) {
        500
    } else {
        (900 * 1024 / largest).clamp(1, 500)
    };
    let cfg = OpenLoop {
        rate,
        duration: Duration::from_secs_f64(events as f64 / rate),
        batch,
        connections: 4,
    };
    let fill = open_loop(
        target.producer_addr(),
        workload.clone(),
        &cfg,
        Arc::new(AtomicU64::new(0)),
    )
    .await?;
    let accepted = fill.events_accepted as i64;
    let bytes: u64 = (0..events)
        .filter(|&s| fill.fates[s as usize] == crate::load::Fate::Accepted)
        .map(|s| workload.size_of(s) as u64)
        .sum();
    let started = Instant::now();
    target.start_rest().await?;
    let progress = bar(accepted as u64, &format!("drain {tables}t"));
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut consumer_peak = 0;
    loop {
        let loaded = probe.loaded_rows().await.unwrap_or(0);
        progress.set_position(loaded as u64);
        for p in target.processes() {
            if p.role.starts_with("consume") {
                consumer_peak = consumer_peak.max(peak_rss(p.pid).unwrap_or(0));
            }
        }
        if loaded >= accepted {
            break;
        }
        if Instant::now() > deadline {
            let _ = target.stop().await;
            bail!(
                "drain of {accepted} events into {tables} tables did not finish within 600 s ({loaded} loaded)"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let tracker = Tracker::new(workload.clone(), events, fill.start_unix_us);
    let verdict = tracker.verdict(&probe, &fill.fates).await?;
    let batches = probe.loaded_batches().await? as u64;
    probe.close().await;
    let peaks = target.stop().await?;
    for (role, peak) in peaks {
        if role.starts_with("consume") {
            consumer_peak = consumer_peak.max(peak);
        }
    }
    Ok(Drain {
        events: accepted as u64,
        fill_events_per_s: fill.accepted_per_s(),
        drain_events_per_s: accepted as f64 / secs,
        drain_mib_per_s: bytes as f64 / (1 << 20) as f64 / secs,
        consumer_peak_rss: consumer_peak,
        batches,
        verdict,
    })
}

/// Closed-loop throughput of a server at `addr` for `bodies`.
pub async fn throughput(
    addr: SocketAddr,
    bodies: &Arc<Vec<(Bytes, &'static str, u64)>>,
    connections: usize,
    duration: Duration,
    what: &str,
) -> anyhow::Result<LoadResult> {
    let acked = Arc::new(AtomicU64::new(0));
    let progress = bar(duration.as_secs(), what);
    let ticker = {
        let progress = progress.clone();
        let started = Instant::now();
        let acked = acked.clone();
        tokio::spawn(async move {
            loop {
                progress.set_position(started.elapsed().as_secs());
                progress.set_message(format!("{} events acked", acked.load(Ordering::Relaxed)));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let r = saturate(addr, bodies.clone(), connections, duration, acked).await;
    ticker.abort();
    progress.finish_and_clear();
    r
}

/// Pre-built request bodies: `count` requests of `batch` events each (distinct ids).
pub fn bodies(workload: &Workload, count: u64, batch: usize) -> Arc<Vec<(Bytes, &'static str, u64)>> {
    Arc::new(
        (0..count)
            .map(|i| {
                let (body, ct) = workload.body(i * batch as u64, batch, crate::load::unix_us());
                (Bytes::from(body), ct, batch as u64)
            })
            .collect(),
    )
}

/// A child process of this binary serving the bare axum baseline.
pub async fn spawn_bare_axum() -> anyhow::Result<(tokio::process::Child, SocketAddr)> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["bare-axum", "--listen", &addr.to_string()])
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !crate::target::readyz(addr).await {
        if Instant::now() > deadline {
            bail!("the bare axum baseline did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((child, addr))
}

/// The fraction of requests answered 202.
pub fn accepted_share(r: &LoadResult) -> f64 {
    let ok = r.statuses.get(&202).copied().unwrap_or(0);
    ok as f64 / r.requests.max(1) as f64
}

/// The percentiles line of a histogram, for the report.
pub fn describe_ms(h: &hdrhistogram::Histogram<u64>) -> String {
    let [p50, p90, p99, max] = percentiles_ms(h);
    format!(
        "p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({} samples)",
        h.len()
    )
}
