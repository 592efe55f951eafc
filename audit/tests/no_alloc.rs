//! The hot path allocates nothing: `Writer::append` (within a segment, under every durability
//! policy) and `Publisher::publish` on the binary feed. A counting allocator counts the
//! allocations made by the test's own thread (the writer's background segment preparer and
//! ZeroMQ's threads are not counted; libzmq allocates with C malloc, outside Rust's allocator).
#![allow(clippy::unwrap_used)]
// Test-only exception to the crate's "unsafe only for the mmap" rule: hooking the global
// allocator to count allocations needs an `unsafe impl GlobalAlloc`; it forwards to `System`.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use audit::{Durability, Publisher, Writer, WriterOptions};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY (test-only allocator): forwards every call to the system allocator unchanged and only
// bumps a thread-local counter, which needs no allocation itself (const-initialised Cell).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

#[test]
fn append_and_publish_do_not_allocate() {
    let tmp = tempfile::tempdir().unwrap();
    for durability in ["none", "interval:100:1000", "always"] {
        let dir = tmp.path().join(durability);
        let opts = WriterOptions {
            segment_size_bytes: 64 << 20,
            durability: durability.parse::<Durability>().unwrap(),
            checkpoint: None,
        };
        let (mut w, _) = Writer::open(&dir, opts).unwrap();
        let payload = [7u8; 128];
        w.append(1, 0, &payload).unwrap();
        let n = if durability == "always" { 200 } else { 20_000 };
        let before = allocs();
        for i in 0..n {
            w.append(1, i, &payload).unwrap();
        }
        assert_eq!(allocs() - before, 0, "append allocated under {durability}");
    }
    let ctx = zmq::Context::new();
    let mut p = Publisher::bind(&ctx, "inproc://no-alloc", None).unwrap();
    let payload = [7u8; 80];
    let before = allocs();
    for seq in 1..=10_000u64 {
        p.publish(seq, &[1u8; 32], 1, seq, &payload).unwrap();
    }
    p.flush().unwrap();
    assert_eq!(allocs() - before, 0, "publish allocated");
    assert_eq!(p.stats().records, 10_000);
    // The counter does count: building a JSON object (the cold path) allocates.
    let before = allocs();
    let _ = audit::record_json(1, &[0u8; 32], 1, 1, &payload);
    assert!(allocs() > before);
}
