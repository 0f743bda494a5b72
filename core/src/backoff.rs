//! When to try a failed call again: exponential backoff with full jitter and a cap.
//!
//! Every driver retries with it: the importer asks [`Backoff::retry_at`] (through
//! [`decide`](crate::import::decide)) after a transient load failure and hides the message until
//! then (SQS `ChangeMessageVisibility`); the producer re-puts failed records after
//! [`Backoff::delay`]; the consumer retries object writes, reads and lease calls the same way.
//! Full jitter spreads the retries of many workers that failed together (a warehouse restart, a
//! throttled shard) instead of having them return in lock step.

use std::time::Duration;

use crate::time::Timestamp;

/// Retry policy. `delay = draw × min(cap, base × 2^retry)` with `draw` uniform in `[0, 1)`,
/// supplied by the caller so that core stays deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's delay.
    pub base: Duration,
    /// Largest ceiling any retry may reach.
    pub cap: Duration,
    /// Attempts in all, the first included; after that many the batch is dead-lettered. Zero is
    /// treated as one: every batch is tried at least once.
    pub max_attempts: u32,
}

impl Default for Backoff {
    /// About four minutes of ceilings in all before giving up: long enough to ride out a warehouse
    /// restart or a rolling deploy, short enough that poison reaches the dead-letter queue soon.
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
            max_attempts: 8,
        }
    }
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration, max_attempts: u32) -> Self {
        Backoff {
            base,
            cap,
            max_attempts,
        }
    }

    /// `min(cap, base × 2^retry)` for the `retry`-th retry (0 = the first), saturating: no
    /// overflow for any `retry`, however large.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = if retry >= u128::BITS - 1 {
            u128::MAX
        } else {
            1u128 << retry
        };
        let nanos = self
            .base
            .as_nanos()
            .saturating_mul(factor)
            .min(self.cap.as_nanos());
        duration_from_nanos(nanos)
    }

    /// The jittered delay before the `retry`-th retry: `draw × ceiling(retry)`. A draw outside
    /// `[0, 1)` (or NaN) is clamped into it rather than trusted.
    pub fn delay(&self, retry: u32, draw: f64) -> Duration {
        let ceiling = self.ceiling(retry).as_nanos();
        let draw = if draw.is_nan() { 0.0 } else { draw.clamp(0.0, 1.0) };
        // The float product can round above the ceiling for huge ceilings; `as` saturates and the
        // `min` restores the bound.
        let nanos = ((ceiling as f64) * draw) as u128;
        duration_from_nanos(nanos.min(ceiling))
    }

    /// When to run attempt `failed_attempt + 1` after attempt `failed_attempt` (1-based) failed
    /// transiently, or `None` once `max_attempts` have been made.
    pub fn retry_at(&self, failed_attempt: u32, now: Timestamp, draw: f64) -> Option<Timestamp> {
        let failed_attempt = failed_attempt.max(1);
        if failed_attempt >= self.max_attempts.max(1) {
            return None;
        }
        Some(now.saturating_add(self.delay(failed_attempt - 1, draw)))
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 5)
    }

    #[test]
    fn ceilings_double_until_the_cap() {
        let b = policy();
        let ceilings: Vec<_> = (0..8).map(|r| b.ceiling(r).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn delay_is_the_draw_times_the_ceiling() {
        let b = policy();
        assert_eq!(b.delay(0, 0.0), Duration::ZERO);
        assert_eq!(b.delay(0, 0.5), Duration::from_millis(50));
        assert_eq!(b.delay(3, 0.25), Duration::from_millis(200));
        assert_eq!(b.delay(30, 0.5), Duration::from_millis(2500));
    }

    #[test]
    fn bad_draws_are_clamped() {
        let b = policy();
        assert_eq!(b.delay(0, -1.0), Duration::ZERO);
        assert_eq!(b.delay(0, f64::NAN), Duration::ZERO);
        assert_eq!(b.delay(0, 7.0), Duration::from_millis(100));
        assert_eq!(b.delay(0, f64::INFINITY), Duration::from_millis(100));
    }

    #[test]
    fn huge_attempts_and_durations_saturate() {
        let b = Backoff::new(Duration::MAX, Duration::MAX, u32::MAX);
        assert_eq!(b.ceiling(u32::MAX), Duration::MAX);
        assert!(b.delay(u32::MAX, 0.999_999) <= Duration::MAX);
        let at = b
            .retry_at(u32::MAX - 1, Timestamp::from_micros(i64::MAX - 5), 0.9)
            .unwrap();
        assert_eq!(at, Timestamp::from_micros(i64::MAX));
    }

    #[test]
    fn retry_times_stop_after_max_attempts() {
        let b = policy();
        let now = Timestamp::from_millis(1_000);
        assert_eq!(b.retry_at(1, now, 0.5), Some(Timestamp::from_millis(1_050)));
        assert_eq!(b.retry_at(2, now, 0.5), Some(Timestamp::from_millis(1_100)));
        assert_eq!(b.retry_at(4, now, 0.5), Some(Timestamp::from_millis(1_400)));
        assert_eq!(b.retry_at(5, now, 0.5), None);
        assert_eq!(b.retry_at(6, now, 0.5), None);
        // Attempt 0 is read as the first attempt.
        assert_eq!(b.retry_at(0, now, 0.5), b.retry_at(1, now, 0.5));
        // One attempt (or zero, read as one) means no retries at all.
        assert_eq!(Backoff { max_attempts: 1, ..b }.retry_at(1, now, 0.5), None);
        assert_eq!(Backoff { max_attempts: 0, ..b }.retry_at(1, now, 0.5), None);
    }

    #[test]
    fn a_cap_below_the_base_wins() {
        let b = Backoff::new(Duration::from_secs(10), Duration::from_secs(1), 3);
        assert_eq!(b.ceiling(0), Duration::from_secs(1));
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..10_000_000_000).prop_map(Duration::from_nanos),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            Just(Duration::MAX),
            Just(Duration::ZERO),
        ]
    }

    proptest! {
        #[test]
        fn delay_stays_within_bounds(
            base in any_duration(),
            cap in any_duration(),
            retry in any::<u32>(),
            draw in prop_oneof![0.0f64..1.0, any::<f64>()],
        ) {
            let b = Backoff::new(base, cap, 10);
            let ceiling = b.ceiling(retry);
            let delay = b.delay(retry, draw);
            prop_assert!(ceiling <= cap);
            prop_assert!(delay <= ceiling);
            if retry < 64 {
                let exact = base.as_nanos().saturating_mul(1u128 << retry).min(cap.as_nanos());
                prop_assert_eq!(ceiling.as_nanos(), exact);
            }
        }

        #[test]
        fn ceilings_never_decrease(base in any_duration(), cap in any_duration(), retry in any::<u32>()) {
            let b = Backoff::new(base, cap, 10);
            prop_assert!(b.ceiling(retry) <= b.ceiling(retry.saturating_add(1)));
        }

        #[test]
        fn delay_grows_with_the_draw(retry in 0u32..40, d1 in 0.0f64..1.0, d2 in 0.0f64..1.0) {
            let b = policy();
            let (lo, hi) = if d1 <= d2 { (d1, d2) } else { (d2, d1) };
            prop_assert!(b.delay(retry, lo) <= b.delay(retry, hi));
        }

        #[test]
        fn retry_time_is_never_before_now(
            now in any::<i64>(),
            attempt in any::<u32>(),
            draw in any::<f64>(),
            base in any_duration(),
            cap in any_duration(),
        ) {
            let b = Backoff::new(base, cap, 6);
            let now = Timestamp::from_micros(now);
            match b.retry_at(attempt, now, draw) {
                Some(at) => {
                    prop_assert!(attempt < 6);
                    prop_assert!(at >= now);
                    prop_assert!(at.saturating_since(now) <= cap);
                }
                None => prop_assert!(attempt >= 6),
            }
        }
    }
}
