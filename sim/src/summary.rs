//! Many seeds: run them on every core (each run stays single-threaded and deterministic) and add
//! their reports up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::ctx::Fault;
use crate::run::{Options, Report, run_seed};
use crate::workload::catalog;

/// The sum of many runs.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub seeds: u64,
    pub events: u64,
    pub accepted: u64,
    pub submits: u64,
    pub stream_records: u64,
    pub rows: u64,
    pub rejected: u64,
    pub dead_letters: u64,
    pub faults: BTreeMap<Fault, u64>,
    /// Seeds with violations, with their first violation, in seed order.
    pub failures: Vec<(u64, String)>,
    /// Accept → queryable, in milliseconds: how many events took each.
    pub freshness_ms: BTreeMap<u64, u64>,
    pub max_drain: Duration,
    pub max_duration: Duration,
    pub virtual_time: Duration,
}

impl Summary {
    pub fn add(&mut self, r: &Report) {
        self.seeds += 1;
        self.events += r.events as u64;
        self.accepted += r.outcome.accepted as u64;
        self.submits += r.submits;
        self.stream_records += r.outcome.stream_records as u64;
        self.rows += r.outcome.rows as u64;
        self.rejected += r.outcome.rejected as u64;
        self.dead_letters += r.outcome.dead_letters as u64;
        for (f, n) in &r.faults {
            *self.faults.entry(*f).or_default() += n;
        }
        if let Some(v) = r.violations.first() {
            let at = self.failures.partition_point(|(s, _)| *s < r.seed);
            self.failures.insert(at, (r.seed, v.clone()));
        }
        for d in &r.outcome.freshness {
            *self.freshness_ms.entry(d.as_millis() as u64).or_default() += 1;
        }
        if r.passed() {
            self.max_drain = self.max_drain.max(r.drain);
        }
        self.max_duration = self.max_duration.max(r.duration);
        self.virtual_time += r.duration;
    }

    /// The `q` quantile of freshness (0 < q ≤ 1).
    pub fn freshness(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.freshness_ms.values().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ms, n) in &self.freshness_ms {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_millis(*ms));
            }
        }
        None
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let secs = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2}s", d.as_secs_f64()));
        let _ = writeln!(s, "seeds          {}", self.seeds);
        let _ = writeln!(
            s,
            "events         {} sent, {} accepted, {} submissions (retries included)",
            self.events, self.accepted, self.submits
        );
        let _ = writeln!(
            s,
            "pipeline       {} stream records, {} warehouse rows, {} rejected, {} dead letters",
            self.stream_records, self.rows, self.rejected, self.dead_letters
        );
        let _ = writeln!(
            s,
            "freshness      p50 {}  p99 {}  max {}  (virtual accept → queryable)",
            secs(self.freshness(0.5)),
            secs(self.freshness(0.99)),
            secs(self.freshness(1.0))
        );
        let _ = writeln!(
            s,
            "virtual time   {:.1} h in all; longest run {:.0}s; longest drain after faults stop {:.0}s (bound {}s)",
            self.virtual_time.as_secs_f64() / 3600.0,
            self.max_duration.as_secs_f64(),
            self.max_drain.as_secs_f64(),
            crate::run::DRAIN_BOUND.as_secs()
        );
        let total: u64 = self.faults.values().sum();
        let _ = writeln!(s, "faults         {total} injected");
        for f in Fault::ALL {
            let _ = writeln!(
                s,
                "  {:<34} {}",
                f.name(),
                self.faults.get(&f).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(s, "violations     {} seed(s)", self.failures.len());
        for (seed, v) in self.failures.iter().take(20) {
            let _ = writeln!(s, "  seed {seed}: {v}");
        }
        s
    }
}

/// Runs `seeds` on `jobs` threads; `each` sees every report as it comes (in completion order).
pub fn run_seeds(
    seeds: Range<u64>,
    options: &Options,
    jobs: usize,
    mut each: impl FnMut(&Report),
) -> Summary {
    let next = AtomicU64::new(seeds.start);
    let (tx, rx) = mpsc::channel::<Report>();
    let mut summary = Summary::default();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                let catalog = catalog();
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        return;
                    }
                    let report = run_seed(seed, &catalog, options);
                    if tx.send(report).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        for report in rx {
            summary.add(&report);
            each(&report);
        }
    });
    summary
}
