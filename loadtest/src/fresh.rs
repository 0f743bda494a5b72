//! Accept → queryable freshness, and the exactly-once check.
//!
//! Every event carries its intended send time. While the load runs, the tracker polls the
//! warehouse: the manifest says which tables just got loads, and for each of them it reads the
//! rows at or above the table's watermark (its lowest sequence number not seen yet). The first
//! poll that sees an event gives its freshness (seen − intended send), so freshness includes the
//! poll interval. At the end every table is read whole: lost = accepted and not there,
//! duplicated = rows beyond the first per sequence number.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::load::{Fate, histogram, unix_us};
use crate::probe::Probe;
use crate::workload::{Workload, table_name};

#[derive(Debug)]
pub struct Tracker {
    workload: Arc<Workload>,
    start_unix_us: u64,
    /// Unix µs an event was first seen in the warehouse; 0 while not seen.
    first_seen: Vec<u64>,
    per_table: Vec<Vec<u64>>,
    watermark: Vec<usize>,
    /// Freshness in µs.
    pub freshness: Histogram<u64>,
    /// Freshness by the second (of the run) the event was due.
    pub timeline: Vec<Histogram<u64>>,
    pub seen: Arc<AtomicU64>,
    pub polls: u64,
}

/// The exactly-once verdict of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Verdict {
    pub accepted: u64,
    pub found: u64,
    /// Accepted and not in the warehouse.
    pub lost: u64,
    /// Rows beyond the first per event.
    pub duplicated: u64,
    /// In the warehouse though its request was refused or unanswered (an unanswered request may
    /// have been accepted; a refused one must not).
    pub refused_but_loaded: u64,
    pub unknown_loaded: u64,
}

impl Tracker {
    pub fn new(workload: Arc<Workload>, total: u64, start_unix_us: u64) -> Self {
        let mut per_table = vec![Vec::new(); workload.tables];
        for seq in 0..total {
            per_table[workload.table_of(seq)].push(seq);
        }
        Tracker {
            watermark: vec![0; workload.tables],
            workload,
            start_unix_us,
            first_seen: vec![0; total as usize],
            per_table,
            freshness: histogram(),
            timeline: Vec::new(),
            seen: Arc::new(AtomicU64::new(0)),
            polls: 0,
        }
    }

    fn table_index(&self, name: &str) -> Option<usize> {
        name.strip_prefix("lt_t")
            .and_then(|n| n.parse().ok())
            .filter(|&k| k < self.workload.tables)
    }

    /// One poll of the tables that just got loads.
    pub async fn poll(&mut self, probe: &Probe, fates: Option<&[Fate]>) -> anyhow::Result<()> {
        self.polls += 1;
        let tables = probe.recent_tables().await?;
        for name in tables {
            let Some(k) = self.table_index(&name) else {
                continue;
            };
            let seqs = &self.per_table[k];
            let mut w = self.watermark[k];
            while w < seqs.len() {
                let seq = seqs[w] as usize;
                let settled = self.first_seen[seq] != 0
                    || fates.is_some_and(|f| matches!(f[seq], Fate::Refused | Fate::Unknown));
                if !settled {
                    break;
                }
                w += 1;
            }
            self.watermark[k] = w;
            let Some(&min_seq) = seqs.get(w) else { continue };
            let rows = probe.rows_since(&name, min_seq as i64).await?;
            let now = unix_us();
            for (seq, sent_us) in rows {
                let Some(slot) = self.first_seen.get_mut(seq as usize) else {
                    continue;
                };
                if *slot == 0 {
                    *slot = now;
                    self.seen.fetch_add(1, Ordering::Relaxed);
                    let fresh = now.saturating_sub(sent_us as u64).max(1);
                    let _ = self.freshness.record(fresh);
                    let second = (sent_us as u64).saturating_sub(self.start_unix_us) / 1_000_000;
                    while self.timeline.len() <= second as usize {
                        self.timeline.push(histogram());
                    }
                    let _ = self.timeline[second as usize].record(fresh);
                }
            }
        }
        Ok(())
    }

    /// Polls every `every` until `stop` turns true.
    pub async fn run(
        mut self,
        probe: Probe,
        every: Duration,
        mut stop: watch::Receiver<bool>,
        mut fates: watch::Receiver<Option<Arc<Vec<Fate>>>>,
    ) -> anyhow::Result<Self> {
        loop {
            let known = fates.borrow_and_update().clone();
            self.poll(&probe, known.as_deref().map(Vec::as_slice)).await?;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return Ok(self),
            }
        }
    }

    /// Reads every table whole and compares with what was accepted.
    pub async fn verdict(&self, probe: &Probe, fates: &[Fate]) -> anyhow::Result<Verdict> {
        let mut count = vec![0u8; fates.len()];
        let mut v = Verdict::default();
        for k in 0..self.workload.tables {
            for seq in probe.all_seqs(&table_name(k)).await? {
                let Some(c) = count.get_mut(seq as usize) else {
                    continue;
                };
                *c = c.saturating_add(1);
            }
        }
        for (seq, fate) in fates.iter().enumerate() {
            let c = u64::from(count[seq]);
            v.duplicated += c.saturating_sub(1);
            if c > 0 {
                v.found += 1;
            }
            match fate {
                Fate::Accepted => {
                    v.accepted += 1;
                    if c == 0 {
                        v.lost += 1;
                    }
                }
                Fate::Refused if c > 0 => v.refused_but_loaded += 1,
                Fate::Unknown if c > 0 => v.unknown_loaded += 1,
                _ => {}
            }
        }
        Ok(v)
    }
}
