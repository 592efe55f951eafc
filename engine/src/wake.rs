//! Wake-up hand-off between neighbouring stages: a parked stage is woken by the stage that
//! gave it work, in microseconds, instead of discovering the work on its next timed wake-up.
//!
//! Each stage thread that parks owns a [`Bell`]: one flag, "I am parked, or about to park".
//! Its neighbours hold a [`Waker`] for it (the bell and the stage's `Thread` handle, taken
//! when the threads are spawned: nothing is allocated per order). After every batch a stage
//! rings both neighbours: the downstream one (it pushed items onto their ring) and the upstream
//! one (it freed room on their ring, which a back-pressured producer waits for).
//!
//! ```text
//!  parking stage (owner of the bell)          neighbour that made progress
//!  ─────────────────────────────────          ────────────────────────────
//!  sleeping.store(true)                       commit the ring chunk (rtrb: release store)
//!  fence(SeqCst)                              fence(SeqCst)
//!  ready()? → re-checks the rings             sleeping.load() == true?
//!    yes: do not park                           → sleeping.swap(false) == true → unpark()
//!    no:  park_timeout(cap)
//!  sleeping.store(false)
//! ```
//! **No lost wake-up:** the two fences order "flag set, then ring read" on the parking side
//! against "ring written, then flag read" on the other (Dekker). Either the parking stage's
//! `ready()` sees the new items, or the neighbour sees the flag and unparks it; `unpark` before
//! `park_timeout` is not lost either (the thread's park token makes the park return at once).
//! A stray token costs one extra empty round, never a missed order. The park is still bounded
//! (`HANDOFF_PARK_MAX_NS`), so duties that no neighbour rings for (the journal's periodic
//! `maintain`, the ingress noticing the stop flag) keep running.
//!
//! Cost on the hot path: per batch, one `SeqCst` fence and one relaxed load per neighbour; an
//! `unpark` (a futex wake, one system call) only when the neighbour is actually parked.
//!
//! A thread that also waits on sockets (a `split` mode thread, whose risk stage awaits a reply
//! or whose egress awaits room downstream: [`crate::threading`]) cannot park and poll at once,
//! so its bell has an eventfd ([`Bell::with_eventfd`]): it polls the descriptor beside its
//! sockets ([`Bell::park_polling`]), and a neighbour that rings writes to it as well as
//! unparking. The protocol above is unchanged; the descriptor is one more way to end the wait.

use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

use crossbeam::utils::CachePadded;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::clock::Clock;
use crate::waitset::WaitSet;

/// The parked side of a hand-off: owned (for parking) by exactly one stage thread.
#[derive(Debug, Default)]
pub struct Bell {
    /// Set while the owner is parked or about to park; on its own cache line, so that the
    /// neighbours' loads do not contend with anything else.
    sleeping: CachePadded<AtomicBool>,
    /// Times a neighbour unparked the owner (cold path; for tests and diagnostics).
    wakeups: AtomicU64,
    /// Written when a neighbour rings, for an owner that polls it beside its sockets.
    event: Option<EventFd>,
}

impl Bell {
    /// A new bell, shared between its owner and the owner's neighbours.
    pub fn new() -> Arc<Bell> {
        Arc::new(Bell::default())
    }

    /// A bell whose owner waits in [`Bell::park_polling`]: a ring also writes its eventfd.
    pub fn with_eventfd() -> std::io::Result<Arc<Bell>> {
        let event =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(std::io::Error::from)?;
        Ok(Arc::new(Bell {
            event: Some(event),
            ..Bell::default()
        }))
    }

    /// Called by the owner thread only, for a bell made by [`Bell::with_eventfd`]: waits on
    /// `waits` (its sockets and deadline) and this bell's eventfd unless `ready()` (called
    /// after the flag is published) reports work. Returns whether it waited. A bell without
    /// an eventfd parks as [`Bell::park`] does, until the deadline of `waits`.
    pub fn park_polling(
        &self,
        waits: &mut WaitSet,
        clock: &Clock,
        ready: impl FnOnce() -> bool,
    ) -> bool {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let park = !ready();
        if park {
            match &self.event {
                Some(e) => {
                    waits.fd(e.as_raw_fd());
                    waits.wait(clock);
                    // Consume the rings that ended it (non-blocking: none is no error).
                    let _ = e.read();
                }
                None => std::thread::park_timeout(Duration::from_nanos(
                    waits.deadline_ns().saturating_sub(clock.now_ns()),
                )),
            }
        }
        self.sleeping.store(false, Ordering::Relaxed);
        park
    }

    /// Called by the owner thread only: parks for at most `timeout` unless `ready()` (called
    /// after the flag is published) reports work. Returns whether it parked.
    pub fn park(&self, timeout: Duration, ready: impl FnOnce() -> bool) -> bool {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let park = !ready();
        if park {
            std::thread::park_timeout(timeout);
        }
        self.sleeping.store(false, Ordering::Relaxed);
        park
    }

    /// Times a neighbour woke the owner.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

/// A neighbour's handle on a parked stage: its bell and its thread.
#[derive(Debug, Clone)]
pub struct Waker {
    bell: Arc<Bell>,
    thread: Thread,
}

impl Waker {
    /// A waker for the thread `thread` that parks on `bell`.
    pub fn new(bell: Arc<Bell>, thread: Thread) -> Waker {
        Waker { bell, thread }
    }

    /// Wakes the owner if it is parked (or about to park). Call after committing to the ring
    /// the owner reads from, or after freeing room on the ring it writes to.
    #[inline]
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        self.wake_fenced();
    }

    /// [`Waker::wake`] when the caller has already issued a `SeqCst` fence after its commit.
    #[inline]
    pub fn wake_fenced(&self) {
        if self.bell.sleeping.load(Ordering::Relaxed)
            && self.bell.sleeping.swap(false, Ordering::Relaxed)
        {
            self.bell.wakeups.fetch_add(1, Ordering::Relaxed);
            self.ring();
        }
    }

    /// Unparks the owner whatever its flag says: at the end of a stream (a ring end dropped).
    pub fn wake_now(&self) {
        self.ring();
    }

    fn ring(&self) {
        if let Some(e) = &self.bell.event {
            // Fails only when the counter would overflow, i.e. it is already far from zero:
            // the owner's wait ends anyway.
            let _ = e.write(1);
        }
        self.thread.unpark();
    }
}

/// The neighbours a stage rings after each batch.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// The stage feeding this one (woken when this stage frees room on its ring).
    pub upstream: Option<Waker>,
    /// The stage this one feeds (woken when this stage pushes onto its ring).
    pub downstream: Option<Waker>,
}

impl Links {
    /// No neighbours to wake.
    pub fn none() -> Links {
        Links::default()
    }

    /// After a batch: wakes whichever neighbour is parked (one fence for both).
    #[inline]
    pub fn wake(&self) {
        if self.upstream.is_none() && self.downstream.is_none() {
            return;
        }
        fence(Ordering::SeqCst);
        if let Some(w) = &self.downstream {
            w.wake_fenced();
        }
        if let Some(w) = &self.upstream {
            w.wake_fenced();
        }
    }

    /// At the end of a stage (its ring ends dropped): unparks both neighbours so that they
    /// notice at once.
    pub fn wake_now(&self) {
        for w in [&self.upstream, &self.downstream].into_iter().flatten() {
            w.wake_now();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    /// `split` mode's bell: a thread waiting in `park_polling` on a socket that never becomes
    /// ready, with a 10 s deadline, is woken by the neighbour's push through the eventfd; and
    /// a bell whose owner is not waiting gets no write (the flag says so), so the next wait
    /// is not cut short by a stale ring.
    #[test]
    fn a_polling_thread_is_woken_through_the_eventfd() {
        let ctx = zmq::Context::new();
        let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(4);
        let bell = Bell::with_eventfd().unwrap();
        let (parked_tx, parked_rx) = mpsc::channel();
        let consumer = {
            let bell = Arc::clone(&bell);
            let quiet = ctx.socket(zmq::PULL).unwrap();
            quiet.bind("inproc://bell-quiet").unwrap();
            std::thread::spawn(move || {
                let clock = Clock::new();
                let mut told = false;
                let mut waits = WaitSet::new(0);
                loop {
                    if let Ok(v) = rx.pop() {
                        return v;
                    }
                    waits.clear(clock.now_ns() + 10_000_000_000);
                    waits.socket(&quiet, zmq::POLLIN);
                    bell.park_polling(&mut waits, &clock, || {
                        if !told {
                            told = true;
                            let _ = parked_tx.send(());
                        }
                        !rx.is_empty()
                    });
                }
            })
        };
        let waker = Waker::new(Arc::clone(&bell), consumer.thread().clone());
        parked_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        tx.push(7).unwrap();
        waker.wake();
        assert_eq!(consumer.join().unwrap(), 7);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "woken by the eventfd, not by the 10 s deadline: {:?}",
            t.elapsed()
        );
        assert_eq!(bell.wakeups(), 1);
        // Nobody waits now: a ring is a no-op.
        waker.wake();
        assert_eq!(bell.wakeups(), 1, "no sleeper, no ring");
    }

    /// A consumer parked with a 10 s timeout is woken by the producer's push well before it.
    #[test]
    fn a_parked_consumer_is_woken_by_the_producer_long_before_its_timeout() {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(4);
        let bell = Bell::new();
        let (parked_tx, parked_rx) = mpsc::channel();
        let consumer = {
            let bell = Arc::clone(&bell);
            std::thread::spawn(move || {
                let t = Instant::now();
                // Park until an item is there (or 10 s pass); tell the test once parked.
                let mut told = false;
                loop {
                    if let Ok(v) = rx.pop() {
                        return (v, t.elapsed());
                    }
                    bell.park(Duration::from_secs(10), || {
                        if !told {
                            told = true;
                            let _ = parked_tx.send(());
                        }
                        !rx.is_empty()
                    });
                }
            })
        };
        let waker = Waker::new(Arc::clone(&bell), consumer.thread().clone());
        parked_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // Give the consumer time to be inside park_timeout (not needed for correctness).
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        tx.push(42).unwrap();
        waker.wake();
        let (v, _) = consumer.join().unwrap();
        assert_eq!(v, 42);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "woken by the hand-off, not by the 10 s timeout: {:?}",
            t.elapsed()
        );
        assert_eq!(bell.wakeups(), 1, "one unpark for one sleep");
    }

    /// Producer and consumer racing many times: every item arrives although the consumer
    /// parks for 10 s each time it finds the ring empty (a lost wake-up would hang for 10 s).
    #[test]
    fn no_wake_up_is_lost_under_racing() {
        const ITEMS: u64 = 20_000;
        let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(8);
        let bell = Bell::new();
        let consumer = {
            let bell = Arc::clone(&bell);
            std::thread::spawn(move || {
                let mut next = 0;
                while next < ITEMS {
                    match rx.pop() {
                        Ok(v) => {
                            assert_eq!(v, next);
                            next += 1;
                        }
                        Err(_) => {
                            bell.park(Duration::from_secs(10), || !rx.is_empty());
                        }
                    }
                }
                next
            })
        };
        let waker = Waker::new(Arc::clone(&bell), consumer.thread().clone());
        let t = Instant::now();
        for i in 0..ITEMS {
            while tx.push(i).is_err() {
                std::thread::yield_now();
            }
            waker.wake();
        }
        assert_eq!(consumer.join().unwrap(), ITEMS);
        // Generous: 20 000 items take milliseconds; one lost wake-up alone would take 10 s.
        assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    }

    #[test]
    fn park_does_not_sleep_when_work_is_already_there() {
        let bell = Bell::new();
        let t = Instant::now();
        assert!(!bell.park(Duration::from_secs(10), || true));
        assert!(t.elapsed() < Duration::from_secs(2));
        // A wake with nobody parked is a no-op (no token left behind, no count).
        let w = Waker::new(Arc::clone(&bell), std::thread::current());
        w.wake();
        assert_eq!(bell.wakeups(), 0);
    }

    #[test]
    fn wake_now_ends_a_park_whatever_the_flag() {
        let bell = Bell::new();
        let parked = {
            let bell = Arc::clone(&bell);
            std::thread::spawn(move || {
                let t = Instant::now();
                bell.park(Duration::from_secs(10), || false);
                t.elapsed()
            })
        };
        let links = Links {
            upstream: Some(Waker::new(Arc::clone(&bell), parked.thread().clone())),
            downstream: None,
        };
        std::thread::sleep(Duration::from_millis(50));
        links.wake_now();
        assert!(parked.join().unwrap() < Duration::from_secs(2));
    }
}
