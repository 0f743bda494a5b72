//! The seeded scheduler: components (driver loops, clients, the chaos monkey) polled in a fixed
//! order on one thread, virtual time advanced only when all of them wait, and crashes.
//!
//! A crash drops a component's future where it waits (at an await point) and, after a restart
//! delay, starts a fresh one from its factory: whatever the component held in memory is gone, and
//! the new one knows only what the stores kept.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Context;

use futures::task::{ArcWake, waker_ref};
use microbatch_core::ports::Clock;
use microbatch_core::time::Timestamp;

use crate::clock::RunError;
use crate::ctx::{Ctx, Fault};

struct Flag(AtomicBool);

impl ArcWake for Flag {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.store(true, Ordering::SeqCst);
    }
}

/// A task of a simulated run.
pub type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

type Factory<'a> = Box<dyn FnMut(u32) -> Task<'a> + 'a>;

/// One simulated process: a factory of its task, called again after each crash with the
/// incarnation number (0 first).
pub struct Component<'a> {
    pub name: String,
    index: usize,
    crash: Option<Fault>,
    start: Factory<'a>,
    task: Option<Task<'a>>,
    flag: Arc<Flag>,
    incarnation: u32,
}

impl std::fmt::Debug for Component<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("name", &self.name)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl<'a> Component<'a> {
    /// A component that crashes with `crash`'s probability at each await point (never if `None`).
    pub fn new(
        ctx: &Ctx,
        name: impl Into<String>,
        crash: Option<Fault>,
        mut start: impl FnMut(u32) -> Task<'a> + 'a,
    ) -> Self {
        let name = name.into();
        let index = ctx.register(&name);
        let task = Some(start(0));
        Component {
            name,
            index,
            crash,
            start: Box::new(start),
            task,
            flag: Arc::new(Flag(AtomicBool::new(true))),
            incarnation: 0,
        }
    }

    pub fn incarnations(&self) -> u32 {
        self.incarnation + 1
    }

    fn restart(&mut self, ctx: &Ctx) {
        // Dropping the future is the crash: it stops at the await point where it waited.
        self.task = None;
        self.incarnation += 1;
        ctx.trace(
            &self.name,
            format_args!("crashed; incarnation {} will start", self.incarnation),
        );
        self.task = Some((self.start)(self.incarnation));
        self.flag.0.store(true, Ordering::SeqCst);
    }
}

/// Runs the components until `done()` holds (checked whenever all of them wait), calling
/// `after_poll` after every poll (the per-step checks).
pub fn run(
    ctx: &Ctx,
    components: &mut [Component<'_>],
    limit: Timestamp,
    mut after_poll: impl FnMut(),
    mut done: impl FnMut() -> bool,
) -> Result<(), RunError> {
    loop {
        let mut polled = true;
        while polled {
            polled = false;
            for c in components.iter_mut() {
                let Some(task) = c.task.as_mut() else {
                    continue;
                };
                if !c.flag.0.swap(false, Ordering::SeqCst) {
                    continue;
                }
                polled = true;
                ctx.set_current(c.index);
                let waker = waker_ref(&c.flag);
                let mut cx = Context::from_waker(&waker);
                let ready = task.as_mut().poll(&mut cx).is_ready();
                ctx.set_current(usize::MAX);
                if ready {
                    c.task = None;
                } else {
                    let requested = ctx.take_crash_requests().contains(&c.index);
                    if requested || c.crash.is_some_and(|f| ctx.chance(f)) {
                        c.restart(ctx);
                    }
                }
                after_poll();
            }
        }
        if done() {
            return Ok(());
        }
        let now = ctx.clock.now();
        if now > limit {
            return Err(RunError::TimedOut(now));
        }
        if !ctx.clock.advance() {
            return Err(RunError::Deadlock);
        }
    }
}
