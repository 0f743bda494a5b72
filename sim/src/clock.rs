//! Virtual time: a clock that only moves when every task is waiting, straight to the next timer.
//!
//! [`run_until`] drives a set of futures on a single-threaded executor; whenever all of them are
//! stalled it advances the [`VirtualClock`] to the earliest pending deadline and wakes its
//! sleepers. No wall-clock time passes, so hours of pipeline time run in milliseconds and a run
//! depends on nothing but its inputs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use std::sync::atomic::{AtomicBool, Ordering};

use futures::task::{ArcWake, waker_ref};
use microbatch_core::ports::{Clock, Entropy};
use microbatch_core::time::Timestamp;

#[derive(Debug, Default)]
struct State {
    now: Timestamp,
    seq: u64,
    timers: BinaryHeap<Reverse<(Timestamp, u64)>>,
    wakers: Vec<(u64, Waker)>,
}

/// A clock shared by every simulated component.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock {
    state: Arc<Mutex<State>>,
}

impl VirtualClock {
    pub fn starting_at(now: Timestamp) -> Self {
        let clock = VirtualClock::default();
        clock.state.lock().expect("clock lock").now = now;
        clock
    }

    /// Moves to the earliest pending deadline and wakes everything due; false if none is pending.
    pub fn advance(&self) -> bool {
        let mut s = self.state.lock().expect("clock lock");
        let Some(Reverse((deadline, _))) = s.timers.peek().copied() else {
            return false;
        };
        s.now = s.now.max(deadline);
        let now = s.now;
        let mut due = Vec::new();
        while let Some(Reverse((d, id))) = s.timers.peek().copied() {
            if d > now {
                break;
            }
            s.timers.pop();
            due.push(id);
        }
        let wakers: Vec<Waker> = {
            let (wake, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut s.wakers)
                .into_iter()
                .partition(|(id, _)| due.contains(id));
            s.wakers = keep;
            wake.into_iter().map(|(_, w)| w).collect()
        };
        drop(s);
        for w in wakers {
            w.wake();
        }
        true
    }
}

/// A sleep in virtual time.
#[derive(Debug)]
pub struct Sleep {
    clock: VirtualClock,
    deadline: Timestamp,
    registered: Option<u64>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.clock.state.lock().expect("clock lock");
        if s.now >= self.deadline {
            return Poll::Ready(());
        }
        let id = match self.registered {
            Some(id) => id,
            None => {
                s.seq += 1;
                let id = s.seq;
                let deadline = self.deadline;
                s.timers.push(Reverse((deadline, id)));
                id
            }
        };
        s.wakers.retain(|(i, _)| *i != id);
        s.wakers.push((id, cx.waker().clone()));
        drop(s);
        self.registered = Some(id);
        Poll::Pending
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        self.state.lock().expect("clock lock").now
    }

    fn sleep_until(&self, deadline: Timestamp) -> impl Future<Output = ()> + Send {
        Sleep {
            clock: self.clone(),
            deadline,
            registered: None,
        }
    }
}

/// Seeded randomness (SplitMix64): the same seed, the same draws.
#[derive(Debug)]
pub struct SeededEntropy {
    state: Mutex<u64>,
}

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        SeededEntropy {
            state: Mutex::new(seed),
        }
    }

    pub fn next_u64(&self) -> u64 {
        let mut s = self.state.lock().expect("entropy lock");
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Entropy for SeededEntropy {
    fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fill(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Why a simulated run ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// Every task waits and no timer is pending: nothing can ever happen again.
    Deadlock,
    /// Virtual time passed the limit before the condition held.
    TimedOut(Timestamp),
}

struct Flag(AtomicBool);

impl ArcWake for Flag {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.store(true, Ordering::SeqCst);
    }
}

/// A task of a simulated run.
pub type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Runs `tasks` until `done()` holds, advancing virtual time whenever every task waits.
///
/// Tasks are polled in their order whenever woken, on this thread: the interleaving, and so the
/// run, is a function of the tasks alone. `done` is checked each time the tasks stall. Tasks
/// still pending at the end are dropped (a crash, from their point of view).
pub fn run_until<'a>(
    clock: &VirtualClock,
    mut tasks: Vec<Task<'a>>,
    limit: Timestamp,
    mut done: impl FnMut() -> bool,
) -> Result<(), RunError> {
    let flags: Vec<Arc<Flag>> = tasks
        .iter()
        .map(|_| Arc::new(Flag(AtomicBool::new(true))))
        .collect();
    let mut finished = vec![false; tasks.len()];
    loop {
        let mut polled = true;
        while polled {
            polled = false;
            for (i, task) in tasks.iter_mut().enumerate() {
                if finished[i] || !flags[i].0.swap(false, Ordering::SeqCst) {
                    continue;
                }
                polled = true;
                let waker = waker_ref(&flags[i]);
                let mut cx = Context::from_waker(&waker);
                if task.as_mut().poll(&mut cx).is_ready() {
                    finished[i] = true;
                }
            }
        }
        if done() {
            return Ok(());
        }
        if finished.iter().all(|f| *f) {
            return Err(RunError::Deadlock);
        }
        if clock.now() > limit {
            return Err(RunError::TimedOut(clock.now()));
        }
        if !clock.advance() {
            return Err(RunError::Deadlock);
        }
    }
}

/// A component's own clock: the shared virtual time off by a fixed skew, as a machine's clock
/// is. Sleeps end when the component's clock reaches the deadline.
#[derive(Debug, Clone)]
pub struct SkewedClock {
    base: VirtualClock,
    offset_micros: i64,
}

impl SkewedClock {
    pub fn new(base: VirtualClock, offset_micros: i64) -> Self {
        SkewedClock { base, offset_micros }
    }

    pub fn offset_micros(&self) -> i64 {
        self.offset_micros
    }
}

impl Clock for SkewedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.base.now().as_micros() + self.offset_micros)
    }

    fn sleep_until(&self, deadline: Timestamp) -> impl Future<Output = ()> + Send {
        self.base
            .sleep_until(Timestamp::from_micros(deadline.as_micros() - self.offset_micros))
    }
}
