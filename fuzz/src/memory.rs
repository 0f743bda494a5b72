//! How much memory one input costs: the system allocator, counting per thread the bytes live
//! and their high-water mark, so [`crate::check`] can bound what an input makes a parser hold.
//! Per thread, because the tests run edges on several threads at once; an edge's work stays on
//! its thread (the HTTP edge runs its server on a current-thread runtime for that reason).
#![allow(unsafe_code)] // a global allocator is an `unsafe impl`; it only forwards to `System`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

#[derive(Debug)]
pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    // `try_with`: a thread's last frees run after its locals are gone.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are plain
// thread-local cells that allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most this thread held above where it stood when the mark was set.
#[derive(Debug)]
pub struct Mark(isize);

impl Mark {
    pub fn set() -> Mark {
        let live = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(live));
        Mark(live)
    }

    pub fn peak_above(&self) -> usize {
        (PEAK.with(Cell::get) - self.0).max(0) as usize
    }
}

/// What one input may cost: a parser may hold a few copies of its input in parsed form, plus a
/// fixed allowance for tables, buffers and a connection's settings, never more.
pub fn bound(input_len: usize) -> usize {
    64 * input_len + 16 * 1024 * 1024
}
