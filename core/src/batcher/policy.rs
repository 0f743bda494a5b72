//! When a buffer must be cut: the rules alone, apart from the [`Batcher`](super::Batcher) that
//! holds the buffers (in the manner of Vector's batcher config beside its driver).

use std::time::Duration;

use crate::time::Timestamp;

/// Limits for the consumer's per-table buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Flush a buffer when it holds this many rows.
    pub max_rows: usize,
    /// Flush a buffer before it would grow past this many bytes.
    pub max_bytes: usize,
    /// Flush a buffer this long after its first row arrived: the latency bound.
    pub max_age: Duration,
    /// Memory for all buffers together (allocated bytes, not just used ones); the oldest buffers
    /// are flushed early rather than let the total pass it.
    pub budget_bytes: usize,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_rows: 500_000,
            max_bytes: 16 << 20,
            max_age: Duration::from_secs(1),
            budget_bytes: 128 << 20,
        }
    }
}

/// A policy that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("batch policy: {0} must be greater than zero")]
    Zero(&'static str),
    #[error("batch policy: budget_bytes ({budget}) must be at least max_bytes ({max_bytes})")]
    BudgetBelowBuffer { budget: usize, max_bytes: usize },
}

/// Why a buffer was flushed; a metric label and a log field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlushReason {
    Rows,
    Bytes,
    Age,
    Budget,
    /// A row larger than `max_bytes` on its own, sent as a batch of one.
    Oversize,
    /// Shutdown or a shard handed over.
    Drain,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Rows => "rows",
            FlushReason::Bytes => "bytes",
            FlushReason::Age => "age",
            FlushReason::Budget => "budget",
            FlushReason::Oversize => "oversize",
            FlushReason::Drain => "drain",
        }
    }
}

impl BatchPolicy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.max_rows == 0 {
            return Err(PolicyError::Zero("max_rows"));
        }
        if self.max_bytes == 0 {
            return Err(PolicyError::Zero("max_bytes"));
        }
        if self.max_age.is_zero() {
            return Err(PolicyError::Zero("max_age"));
        }
        if self.budget_bytes < self.max_bytes {
            return Err(PolicyError::BudgetBelowBuffer {
                budget: self.budget_bytes,
                max_bytes: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Whether a buffer that now holds `rows` rows and `bytes` bytes, opened at `opened_at`, is due.
    pub fn due(
        &self,
        rows: usize,
        bytes: usize,
        opened_at: Timestamp,
        now: Timestamp,
    ) -> Option<FlushReason> {
        if rows >= self.max_rows {
            Some(FlushReason::Rows)
        } else if bytes >= self.max_bytes {
            Some(FlushReason::Bytes)
        } else if rows > 0 && now.saturating_since(opened_at) >= self.max_age {
            Some(FlushReason::Age)
        } else {
            None
        }
    }

    /// The capacity to grow a buffer of capacity `cap` to so that it holds `needed` bytes:
    /// doubling (amortised appends) but never past `max_bytes` unless one row is bigger.
    pub fn grow_to(&self, cap: usize, needed: usize) -> usize {
        if needed <= cap {
            return cap;
        }
        cap.saturating_mul(2)
            .max(needed)
            .max(4096)
            .min(self.max_bytes.max(needed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_bad_limit() {
        let p = BatchPolicy {
            budget_bytes: 10,
            max_bytes: 20,
            ..BatchPolicy::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "batch policy: budget_bytes (10) must be at least max_bytes (20)"
        );
        let p = BatchPolicy {
            max_age: Duration::ZERO,
            ..BatchPolicy::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "batch policy: max_age must be greater than zero"
        );
        assert_eq!(BatchPolicy::default().validate(), Ok(()));
    }

    #[test]
    fn due_checks_rows_then_bytes_then_age() {
        let p = BatchPolicy {
            max_rows: 10,
            max_bytes: 100,
            max_age: Duration::from_secs(1),
            budget_bytes: 1000,
        };
        let t0 = Timestamp::from_millis(0);
        assert_eq!(p.due(10, 0, t0, t0), Some(FlushReason::Rows));
        assert_eq!(p.due(1, 100, t0, t0), Some(FlushReason::Bytes));
        assert_eq!(p.due(1, 1, t0, Timestamp::from_millis(999)), None);
        assert_eq!(
            p.due(1, 1, t0, Timestamp::from_millis(1000)),
            Some(FlushReason::Age)
        );
        assert_eq!(p.due(0, 0, t0, Timestamp::from_millis(5000)), None);
    }

    #[test]
    fn growth_doubles_up_to_the_buffer_limit() {
        let p = BatchPolicy {
            max_bytes: 10_000,
            ..BatchPolicy::default()
        };
        assert_eq!(p.grow_to(0, 10), 4096);
        assert_eq!(p.grow_to(4096, 4097), 8192);
        assert_eq!(p.grow_to(8192, 8193), 10_000);
        assert_eq!(p.grow_to(0, 20_000), 20_000);
        assert_eq!(p.grow_to(100, 50), 100);
    }
}
