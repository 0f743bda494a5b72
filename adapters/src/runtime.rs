//! The real clock and randomness behind core's `Clock` and `Entropy` ports.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use microbatch_core::event::{EventId, IdSource, uuid_v7};
use microbatch_core::ports::{Clock, Entropy};
use microbatch_core::time::Timestamp;

/// Wall-clock time and tokio timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp::from_micros(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }

    fn sleep_until(&self, deadline: Timestamp) -> impl Future<Output = ()> + Send {
        let wait = deadline.saturating_since(self.now());
        tokio::time::sleep(wait)
    }
}

/// The operating system's random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn unit(&self) -> f64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fill(&self, buf: &mut [u8]) {
        getrandom::fill(buf).expect("the operating system's random source is available");
    }
}

/// UUIDv7 event ids from the system clock and OS randomness.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsIds;

/// Random bytes for ids, fetched from the OS a few hundred ids at a time: one `getrandom` call per
/// id cost a system call per event on the batched ingest path.
struct IdPool {
    bytes: [u8; 10 * 256],
    used: usize,
}

thread_local! {
    static ID_POOL: std::cell::RefCell<IdPool> = const {
        std::cell::RefCell::new(IdPool { bytes: [0; 10 * 256], used: 10 * 256 })
    };
}

impl IdSource for OsIds {
    fn next_id(&mut self, now: Timestamp) -> EventId {
        let random = ID_POOL.with_borrow_mut(|pool| {
            if pool.used + 10 > pool.bytes.len() {
                OsEntropy.fill(&mut pool.bytes);
                pool.used = 0;
            }
            let mut random = [0u8; 10];
            random.copy_from_slice(&pool.bytes[pool.used..pool.used + 10]);
            pool.used += 10;
            random
        });
        uuid_v7(now, random)
    }
}

/// Turns transparent huge pages off for this process (and its children), where the OS has them.
///
/// The allocator asks for huge pages on its arenas (`madvise(MADV_HUGEPAGE)`), and the kernel then
/// backs a 2 MiB page for every arena touched at all: the consumer's RSS measured 60–100 MiB above
/// what it had allocated, which defeats its memory budget (contract 5). Small pages cost a little
/// TLB efficiency and make RSS track what is in use. Returns whether the setting took.
pub fn disable_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // PR_SET_THP_DISABLE: a flag of the whole process, whichever thread sets it.
        rustix::thread::disable_transparent_huge_pages(true).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// mimalloc's option index of `purge_delay` (`mi_option_purge_delay` in mimalloc.h, between
/// `eager_commit_delay` = 14 and `use_numa_nodes` = 16, which libmimalloc-sys names; it does not
/// name this one). A test checks it reads mimalloc's documented default.
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes the allocator give freed memory back to the OS at once, instead of after mimalloc's
/// purge delay (1 s, and ten times that for whole arenas). The consumer frees a flush's batch
/// buffers every flush interval; with the delay, the memory of several flushes stayed resident:
/// consumer RSS 148–178 MiB against 100–120 MiB without it, at a 64 MiB buffer budget
/// (docs/PERFORMANCE.md). It costs the producer 10–15 % of its throughput (more `madvise`
/// calls), so a producer-only process does without. `MIMALLOC_PURGE_DELAY` in the environment
/// wins. Call it in `main`, before any thread starts. Returns whether the setting was made.
#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
pub fn purge_freed_memory_promptly() -> bool {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return false;
    }
    // SAFETY: `mi_option_set` writes one option of mimalloc's global table and takes plain
    // integers; it is not thread-safe, which is why it runs before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let mut ids = OsIds;
        let a = ids.next_id(Timestamp::from_millis(1));
        let b = ids.next_id(Timestamp::from_millis(2));
        assert!(a < b);
        assert_ne!(
            ids.next_id(Timestamp::from_millis(3)),
            ids.next_id(Timestamp::from_millis(3))
        );
        // Across refills of the pool too.
        let many: std::collections::HashSet<EventId> = (0..1000)
            .map(|_| ids.next_id(Timestamp::from_millis(3)))
            .collect();
        assert_eq!(many.len(), 1000);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_turned_off_for_the_process() {
        assert!(disable_transparent_huge_pages());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(status.contains("THP_enabled:\t0"), "{status}");
    }

    #[tokio::test]
    async fn sleeps_until_the_deadline() {
        let start = SystemClock.now();
        SystemClock
            .sleep_until(start.saturating_add(Duration::from_millis(20)))
            .await;
        assert!(SystemClock.now() >= start.saturating_add(Duration::from_millis(20)));
        let u = OsEntropy.unit();
        assert!((0.0..1.0).contains(&u));
    }

    #[cfg(feature = "mimalloc")]
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads and writes of mimalloc's option table; no other test touches it.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "mimalloc's documented purge_delay default (ms)");
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert!(purge_freed_memory_promptly());
            // SAFETY: as above.
            assert_eq!(
                unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
                0
            );
        }
    }
}
