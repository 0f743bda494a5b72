//! Reading one shard: where the next read starts, with which cursor, and when it may run.
//!
//! The consumer keeps a [`ShardRead`] per shard it holds and asks it what to do
//! ([`ShardRead::action`]: open a cursor, or read from the one it has) and when
//! ([`ShardRead::next_at`]); it tells it what came back. Everything a Kinesis reader must get
//! right lives here, where a unit test reaches it:
//!
//! - **Cursors.** A read continues from the cursor the previous one returned, through empty
//!   pages in the middle of a shard. An expired cursor (Kinesis: five minutes) is re-opened
//!   `AFTER_SEQUENCE_NUMBER` the last record delivered (or where the shard was started, if none
//!   was), so nothing is lost or repeated.
//! - **Pacing.** Reads of a shard stay within [`ReadPacing`]: at most `calls_per_sec` calls and
//!   `bytes_per_sec` bytes a second (Kinesis: 5 and 2 MiB, shared by every reader of the shard).
//!   A read behind the tip follows at once when the pace allows; one at the tip waits the idle
//!   poll.
//! - **Backoff.** Throttling and unavailability back off exponentially with jitter (reset by the
//!   next success) instead of hammering the shard at a fixed pace.
//! - **The end.** A read without a next cursor ends the shard; so does a shard the stream no
//!   longer has when its cursor is opened (trimmed past its retention).

use std::time::Duration;

use crate::backoff::Backoff;
use crate::ports::{Cursor, ErrorKind, PortError, ReadFrom};
use crate::position::SequenceNumber;
use crate::time::Timestamp;

/// How fast one shard may be read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadPacing {
    /// Read calls a second, at most (Kinesis: 5 per shard, for all readers together).
    pub calls_per_sec: f64,
    /// Bytes a second, at most (Kinesis: 2 MiB per shard).
    pub bytes_per_sec: u64,
}

impl Default for ReadPacing {
    fn default() -> Self {
        ReadPacing {
            calls_per_sec: 5.0,
            bytes_per_sec: 2 << 20,
        }
    }
}

impl ReadPacing {
    /// The earliest next call after one that started at `at` and read `bytes`.
    fn next_call(&self, at: Timestamp, bytes: usize) -> Timestamp {
        let per_call = if self.calls_per_sec > 0.0 {
            Duration::from_secs_f64(1.0 / self.calls_per_sec)
        } else {
            Duration::ZERO
        };
        let for_bytes = if self.bytes_per_sec > 0 {
            Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64)
        } else {
            Duration::ZERO
        };
        at.saturating_add(per_call.max(for_bytes))
    }
}

/// What to call next for a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadAction {
    /// Get a cursor (`GetShardIterator`) at this position.
    Open(ReadFrom),
    /// Read (`GetRecords`) from this cursor.
    Read(Cursor),
}

/// What a successful read brought.
#[derive(Clone, Debug)]
pub struct ReadResult<'a> {
    pub records: usize,
    pub bytes: usize,
    pub last: Option<&'a SequenceNumber>,
    pub millis_behind_latest: Option<u64>,
    pub next: Option<Cursor>,
}

/// A read failure the consumer cannot retry around: it stops with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading shard: {0}")]
pub struct ReadFatal(pub PortError);

/// The read state of one shard.
#[derive(Clone, Debug)]
pub struct ShardRead {
    /// Where a cursor is opened (again): the start, then after the last record delivered.
    from: ReadFrom,
    cursor: Option<Cursor>,
    next_at: Timestamp,
    /// Consecutive failed calls, for the backoff.
    failures: u32,
    ended: bool,
}

impl ShardRead {
    /// Starts reading at `from`, at once.
    pub fn new(from: ReadFrom, now: Timestamp) -> Self {
        ShardRead {
            from,
            cursor: None,
            next_at: now,
            failures: 0,
            ended: false,
        }
    }

    /// Everything in the shard has been read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// When the next call may run.
    pub fn next_at(&self) -> Timestamp {
        self.next_at
    }

    pub fn due(&self, now: Timestamp) -> bool {
        !self.ended && self.next_at <= now
    }

    pub fn action(&self) -> ReadAction {
        match &self.cursor {
            Some(c) => ReadAction::Read(c.clone()),
            None => ReadAction::Open(self.from.clone()),
        }
    }

    /// A cursor was opened; the read follows at once.
    pub fn opened(&mut self, cursor: Cursor) {
        self.cursor = Some(cursor);
        self.failures = 0;
    }

    /// A read that `started` at some time returned: move the cursor on and schedule the next.
    pub fn read(
        &mut self,
        result: ReadResult<'_>,
        started: Timestamp,
        now: Timestamp,
        pacing: &ReadPacing,
        idle_poll: Duration,
        read_limit: usize,
    ) {
        self.failures = 0;
        if let Some(last) = result.last {
            self.from = ReadFrom::After(last.clone());
        }
        self.cursor = result.next;
        if self.cursor.is_none() {
            self.ended = true;
            return;
        }
        // Byte limits cut reads short of the record limit, so a short read means the tip only
        // when the stream cannot say how far behind it is.
        let caught_up = match result.millis_behind_latest {
            Some(behind) => behind == 0,
            None => result.records < read_limit,
        };
        let wanted = if caught_up {
            now.saturating_add(idle_poll)
        } else {
            now
        };
        self.next_at = wanted.max(pacing.next_call(started, result.bytes));
    }

    /// A call failed: back off, re-open, end or stop, as the error says.
    pub fn failed(
        &mut self,
        error: &PortError,
        opening: bool,
        now: Timestamp,
        backoff: &Backoff,
        draw: f64,
    ) -> Result<(), ReadFatal> {
        match error.kind {
            ErrorKind::Throttled | ErrorKind::Unavailable => {
                self.next_at = now.saturating_add(backoff.delay(self.failures, draw));
                self.failures = self.failures.saturating_add(1);
            }
            // Open a new cursor where the last read left off, at once.
            ErrorKind::Expired => self.cursor = None,
            // The shard is gone (trimmed after its retention): nothing is left to read in it.
            ErrorKind::NotFound if opening => self.ended = true,
            // A cursor the stream no longer knows: open a new one; if the shard is gone, the
            // open says so.
            ErrorKind::NotFound => self.cursor = None,
            ErrorKind::Denied | ErrorKind::Invalid | ErrorKind::Conflict => {
                return Err(ReadFatal(error.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn seq(n: u128) -> SequenceNumber {
        SequenceNumber::from_u128(n)
    }

    const IDLE: Duration = Duration::from_millis(1000);

    fn result<'a>(
        records: usize,
        bytes: usize,
        last: Option<&'a SequenceNumber>,
        behind: u64,
        next: &str,
    ) -> ReadResult<'a> {
        ReadResult {
            records,
            bytes,
            last,
            millis_behind_latest: Some(behind),
            next: Some(Cursor(next.into())),
        }
    }

    #[test]
    fn reads_follow_the_returned_cursor_through_empty_pages() {
        let pacing = ReadPacing::default();
        let mut r = ShardRead::new(ReadFrom::Oldest, t(0));
        assert_eq!(r.action(), ReadAction::Open(ReadFrom::Oldest));
        r.opened(Cursor("c0".into()));
        let s5 = seq(5);
        r.read(
            result(3, 300, Some(&s5), 9_000, "c1"),
            t(0),
            t(10),
            &pacing,
            IDLE,
            100,
        );
        assert_eq!(r.action(), ReadAction::Read(Cursor("c1".into())));
        // An empty page behind the tip: go on from its cursor, not from the old one.
        r.read(
            result(0, 0, None, 8_000, "c2"),
            t(200),
            t(210),
            &pacing,
            IDLE,
            100,
        );
        assert_eq!(r.action(), ReadAction::Read(Cursor("c2".into())));
        assert_eq!(r.next_at(), t(400), "behind: at once, within 5 calls a second");
    }

    #[test]
    fn an_expired_cursor_reopens_after_the_last_record_delivered() {
        let pacing = ReadPacing::default();
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), u32::MAX);
        let mut r = ShardRead::new(ReadFrom::At(seq(3)), t(0));
        r.opened(Cursor("c0".into()));
        let expired = PortError::expired("stream", "ExpiredIteratorException");
        r.failed(&expired, false, t(5), &backoff, 0.5).unwrap();
        assert_eq!(
            r.action(),
            ReadAction::Open(ReadFrom::At(seq(3))),
            "nothing delivered yet: where the shard started"
        );
        r.opened(Cursor("c1".into()));
        let s7 = seq(7);
        r.read(
            result(2, 10, Some(&s7), 0, "c2"),
            t(10),
            t(10),
            &pacing,
            IDLE,
            100,
        );
        r.failed(&expired, false, t(20), &backoff, 0.5).unwrap();
        assert_eq!(r.action(), ReadAction::Open(ReadFrom::After(seq(7))));
    }

    #[test]
    fn reads_are_paced_by_calls_and_bytes() {
        let pacing = ReadPacing {
            calls_per_sec: 5.0,
            bytes_per_sec: 1_000,
        };
        let mut r = ShardRead::new(ReadFrom::Oldest, t(0));
        r.opened(Cursor("c".into()));
        let s = seq(1);
        r.read(
            result(1, 10, Some(&s), 5_000, "c"),
            t(0),
            t(1),
            &pacing,
            IDLE,
            100,
        );
        assert_eq!(r.next_at(), t(200), "5 calls a second");
        r.read(
            result(1, 3_000, Some(&s), 5_000, "c"),
            t(200),
            t(201),
            &pacing,
            IDLE,
            100,
        );
        assert_eq!(r.next_at(), t(3_200), "3,000 bytes at 1,000 a second");
        r.read(result(0, 0, None, 0, "c"), t(3_200), t(3_201), &pacing, IDLE, 100);
        assert_eq!(r.next_at(), t(4_201), "at the tip: the idle poll");
    }

    #[test]
    fn throttling_backs_off_and_a_success_resets_it() {
        let pacing = ReadPacing::default();
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), u32::MAX);
        let mut r = ShardRead::new(ReadFrom::Oldest, t(0));
        r.opened(Cursor("c".into()));
        let throttled = PortError::throttled("stream", "ProvisionedThroughputExceededException");
        let mut delays = Vec::new();
        for i in 0..4 {
            let now = t(i * 10_000);
            r.failed(&throttled, false, now, &backoff, 0.999).unwrap();
            delays.push(r.next_at().as_millis() - now.as_millis());
        }
        assert_eq!(delays, [99, 199, 399, 799]);
        r.read(
            result(0, 0, None, 0, "c"),
            t(50_000),
            t(50_000),
            &pacing,
            IDLE,
            100,
        );
        r.failed(&throttled, false, t(60_000), &backoff, 0.999).unwrap();
        assert_eq!(r.next_at().as_millis(), 60_099, "back to the first step");
    }

    #[test]
    fn the_end_of_a_shard() {
        let pacing = ReadPacing::default();
        let mut r = ShardRead::new(ReadFrom::Oldest, t(0));
        r.opened(Cursor("c".into()));
        r.read(
            ReadResult {
                records: 0,
                bytes: 0,
                last: None,
                millis_behind_latest: Some(0),
                next: None,
            },
            t(0),
            t(0),
            &pacing,
            IDLE,
            100,
        );
        assert!(r.ended() && !r.due(t(10_000)));
        let backoff = Backoff::default();
        let mut gone = ShardRead::new(ReadFrom::Oldest, t(0));
        gone.failed(
            &PortError::not_found("stream", "no such shard"),
            true,
            t(0),
            &backoff,
            0.5,
        )
        .unwrap();
        assert!(gone.ended());
        let denied = PortError::denied("stream", "AccessDeniedException");
        assert!(r.failed(&denied, false, t(0), &backoff, 0.5).is_err());
    }
}
