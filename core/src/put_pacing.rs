//! Pacing the producer's puts per shard under the stream's write limits (Kinesis: 1 MiB and
//! 1,000 records a second per shard), so that a hot shard is slowed here instead of throttled
//! there — a throttled record costs a round trip and a retry, and a throttled producer backs up.
//!
//! A token bucket per shard, for bytes and for records, each holding at most one second of its
//! rate. A put may start while both buckets are not in debt; it then takes its bytes and one
//! record, possibly into debt (an aggregate can be as large as a whole second's bytes), and the
//! shard waits until the debt is repaid. The producer asks [`PutPacing::wait`] before it puts an
//! aggregate and tells [`PutPacing::took`] when it does.

use std::collections::HashMap;
use std::time::Duration;

use crate::position::ShardId;
use crate::time::Timestamp;

/// Write limits of one shard; 0 is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutLimits {
    pub bytes_per_sec: u64,
    pub records_per_sec: u64,
}

impl PutLimits {
    /// Kinesis' per-shard write limits.
    pub const KINESIS: PutLimits = PutLimits {
        bytes_per_sec: 1 << 20,
        records_per_sec: 1000,
    };
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    bytes: f64,
    records: f64,
    at: Timestamp,
}

/// The buckets of every shard the producer puts to.
#[derive(Debug, Default)]
pub struct PutPacing {
    limits: PutLimits,
    shards: HashMap<ShardId, Bucket>,
}

impl PutPacing {
    pub fn new(limits: PutLimits) -> Self {
        PutPacing {
            limits,
            shards: HashMap::new(),
        }
    }

    fn limited(&self) -> bool {
        self.limits.bytes_per_sec > 0 || self.limits.records_per_sec > 0
    }

    /// The shard's buckets as of `now`: refilled, capped at one second of each rate.
    fn current(&self, shard: &ShardId, now: Timestamp) -> Option<Bucket> {
        let b = self.shards.get(shard)?;
        let secs = now.saturating_since(b.at).as_secs_f64();
        let fill = |level: f64, rate: u64| {
            if rate == 0 {
                0.0
            } else {
                (level + secs * rate as f64).min(rate as f64)
            }
        };
        Some(Bucket {
            bytes: fill(b.bytes, self.limits.bytes_per_sec),
            records: fill(b.records, self.limits.records_per_sec),
            at: now,
        })
    }

    /// `None` when a put to `shard` may start now; else when it may.
    pub fn wait(&self, shard: &ShardId, now: Timestamp) -> Option<Timestamp> {
        if !self.limited() {
            return None;
        }
        let b = self.current(shard, now)?;
        let owed = |level: f64, rate: u64| {
            if level >= 0.0 || rate == 0 {
                0.0
            } else {
                -level / rate as f64
            }
        };
        let secs = owed(b.bytes, self.limits.bytes_per_sec).max(owed(b.records, self.limits.records_per_sec));
        // Rounded up to the microsecond, so that the wake-up finds the debt repaid.
        (secs > 0.0).then(|| now.saturating_add(Duration::from_micros((secs * 1e6).ceil() as u64)))
    }

    /// A put of one record of `bytes` to `shard` started at `now`.
    pub fn took(&mut self, shard: &ShardId, bytes: usize, now: Timestamp) {
        if !self.limited() {
            return;
        }
        let full = Bucket {
            bytes: self.limits.bytes_per_sec as f64,
            records: self.limits.records_per_sec as f64,
            at: now,
        };
        let mut b = self.current(shard, now).unwrap_or(full);
        if self.limits.bytes_per_sec > 0 {
            b.bytes -= bytes as f64;
        }
        if self.limits.records_per_sec > 0 {
            b.records -= 1.0;
        }
        self.shards.insert(shard.clone(), b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn a_shard_gets_its_bytes_per_second_and_no_more() {
        let mut p = PutPacing::new(PutLimits::KINESIS);
        let s = ShardId::new("s");
        let mut now = t(0);
        let mut put = 0usize;
        // 100 KiB aggregates for ten seconds, each as soon as the pacing allows.
        while now < t(10_000) {
            match p.wait(&s, now) {
                None => {
                    p.took(&s, 100 << 10, now);
                    put += 100 << 10;
                }
                Some(at) => now = at,
            }
        }
        // One second's burst plus ten seconds of the rate, and one aggregate of debt.
        let most = 11 * (1 << 20) + (100 << 10);
        assert!(put <= most && put >= 10 * (1 << 20), "{put}");
        let other = ShardId::new("other");
        assert_eq!(p.wait(&other, now), None, "shards are paced apart");
    }

    #[test]
    fn small_records_are_held_to_the_record_rate() {
        let mut p = PutPacing::new(PutLimits::KINESIS);
        let s = ShardId::new("s");
        for _ in 0..1000 {
            assert_eq!(p.wait(&s, t(0)), None);
            p.took(&s, 10, t(0));
        }
        assert_eq!(p.wait(&s, t(0)), None, "a full second's records, not yet in debt");
        p.took(&s, 10, t(0));
        assert_eq!(p.wait(&s, t(0)), Some(t(1)), "one record's debt: a millisecond");
    }

    #[test]
    fn a_whole_second_of_bytes_in_one_record_waits_it_off() {
        let mut p = PutPacing::new(PutLimits::KINESIS);
        let s = ShardId::new("s");
        p.took(&s, 1 << 20, t(0));
        assert_eq!(p.wait(&s, t(0)), None, "the bucket was full: not in debt");
        p.took(&s, 1 << 20, t(0));
        assert_eq!(p.wait(&s, t(0)), Some(t(1000)));
        assert_eq!(p.wait(&s, t(1000)), None);
    }

    #[test]
    fn no_limits_never_wait() {
        let mut p = PutPacing::new(PutLimits::default());
        let s = ShardId::new("s");
        for _ in 0..10_000 {
            p.took(&s, 1 << 20, t(0));
        }
        assert_eq!(p.wait(&s, t(0)), None);
    }
}
