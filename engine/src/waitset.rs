//! What a shared duty-cycle thread waits on when none of its stages has work: the ZeroMQ
//! sockets its stages own (a risk reply, room downstream, input on the PULL socket) and the
//! earliest deadline (an order due in a replay, a risk timeout, journal maintenance), in one
//! `ppoll(2)` with nanosecond resolution.
//!
//! `zmq_poll` would do for the sockets, but its timeout is in milliseconds: a replay at
//! 100 k orders/s has an order due every 10 µs, and waiting for a risk reply in milliseconds
//! would make every order late. So the thread polls the sockets' notification descriptors
//! (`ZMQ_FD`) itself. libzmq's rule for them: the descriptor only says "the socket's state may
//! have changed"; the state itself is read with `ZMQ_EVENTS`, which also re-arms it. So
//! [`WaitSet::socket`] reads `ZMQ_EVENTS` first, and a socket that is already ready makes the
//! wait return at once instead of polling at all (no lost wake-up: any change after that read
//! signals the descriptor).
//!
//! This is the engine crate's one `unsafe` block: `ppoll` needs borrowed file descriptors, and
//! the descriptor of a ZeroMQ socket is a plain integer owned by libzmq.

#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, RawFd};

use nix::poll::{PollFd, PollFlags};
use nix::sys::time::TimeSpec;

use crate::clock::Clock;

/// Sockets a thread can wait on at once: one per stage at most, and the thread's bell
/// ([`crate::wake::Bell::park_polling`]).
pub const WAIT_SOCKETS_MAX: usize = 5;

/// One round's wait: sockets and the earliest deadline (see the module docs).
#[derive(Debug, Clone)]
pub struct WaitSet {
    fds: [RawFd; WAIT_SOCKETS_MAX],
    len: usize,
    deadline_ns: u64,
    ready_now: bool,
}

impl WaitSet {
    /// An empty set whose wait ends at `deadline_ns` at the latest.
    pub fn new(deadline_ns: u64) -> WaitSet {
        WaitSet {
            fds: [-1; WAIT_SOCKETS_MAX],
            len: 0,
            deadline_ns,
            ready_now: false,
        }
    }

    /// Starts a new round, ending at `deadline_ns` at the latest.
    pub fn clear(&mut self, deadline_ns: u64) {
        self.len = 0;
        self.deadline_ns = deadline_ns;
        self.ready_now = false;
    }

    /// Wait no later than `t_ns`.
    #[inline]
    pub fn deadline(&mut self, t_ns: u64) {
        self.deadline_ns = self.deadline_ns.min(t_ns);
    }

    /// The earliest deadline so far.
    pub fn deadline_ns(&self) -> u64 {
        self.deadline_ns
    }

    /// Whether something registered was already ready (the wait returns at once).
    pub fn ready_now(&self) -> bool {
        self.ready_now
    }

    /// Sockets registered so far.
    pub fn sockets(&self) -> usize {
        self.len
    }

    /// Wait until `socket` is ready for `events` (`POLLIN` and/or `POLLOUT`). A socket that is
    /// ready already, or whose state cannot be read (the error shows at its next operation),
    /// makes the wait return at once.
    pub fn socket(&mut self, socket: &zmq::Socket, events: zmq::PollEvents) {
        match socket.get_events() {
            Ok(now) if now.intersects(events) => self.ready_now = true,
            Ok(_) => match socket.get_fd() {
                Ok(fd) if self.len < WAIT_SOCKETS_MAX => {
                    self.fds[self.len] = fd;
                    self.len += 1;
                }
                _ => self.ready_now = true,
            },
            Err(_) => self.ready_now = true,
        }
    }

    /// Also end the wait when the descriptor `fd` becomes readable (an eventfd that the caller
    /// owns and keeps open until the wait returns).
    pub fn fd(&mut self, fd: RawFd) {
        if self.len < WAIT_SOCKETS_MAX {
            self.fds[self.len] = fd;
            self.len += 1;
        } else {
            self.ready_now = true;
        }
    }

    /// Blocks until a registered socket may be ready or the deadline (on `clock`) has come,
    /// whichever is first; returns at once if something was ready already. A signal ends the
    /// wait early (the caller's loop notices the stop flag).
    pub fn wait(&self, clock: &Clock) {
        if self.ready_now {
            return;
        }
        let left_ns = self.deadline_ns.saturating_sub(clock.now_ns());
        if left_ns == 0 {
            return;
        }
        let timeout = TimeSpec::from_duration(std::time::Duration::from_nanos(left_ns));
        let mut pfds: [PollFd<'_>; WAIT_SOCKETS_MAX] = std::array::from_fn(|i| {
            // SAFETY: each registered descriptor is the `ZMQ_FD` of a socket that the caller's
            // stages own and keep open for this whole call (`wait` borrows the set, the stages
            // are not touched until it returns; libzmq closes it only with the socket), or the
            // eventfd of the calling thread's bell, which outlives the call ([`WaitSet::fd`]). Unused
            // slots (index ≥ `len`) borrow descriptor 0 only to fill the array and are never
            // passed to `ppoll` (`-1` may not be borrowed).
            let fd = unsafe { BorrowedFd::borrow_raw(self.fds[i].max(0)) };
            PollFd::new(fd, PollFlags::POLLIN)
        });
        // EINTR (a signal) and other errors just end this wait: the loop checks again.
        let _ = nix::poll::ppoll(&mut pfds[..self.len], Some(timeout), None);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_deadline_alone_sleeps_until_it() {
        let clock = Clock::new();
        let t = clock.now_ns();
        let mut w = WaitSet::new(t + 2_000_000);
        w.deadline(t + 3_000_000);
        assert_eq!(w.deadline_ns(), t + 2_000_000, "the earliest wins");
        w.wait(&clock);
        assert!(clock.now_ns() >= t + 2_000_000);
    }

    #[test]
    fn a_message_arriving_ends_the_wait_before_the_deadline() {
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.bind("inproc://waitset-test").unwrap();
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.connect("inproc://waitset-test").unwrap();
        let clock = Clock::new();
        let t = clock.now_ns();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            push.send("x", 0).unwrap();
            push
        });
        let mut w = WaitSet::new(t + 10_000_000_000);
        w.socket(&pull, zmq::POLLIN);
        assert!(!w.ready_now());
        // The first wake-up may be the connection itself; wait until the message is there.
        let mut msg = zmq::Message::new();
        loop {
            w.wait(&clock);
            if pull.recv(&mut msg, zmq::DONTWAIT).is_ok() {
                break;
            }
            w.clear(t + 10_000_000_000);
            w.socket(&pull, zmq::POLLIN);
        }
        let took = clock.now_ns() - t;
        assert!(
            took < 5_000_000_000,
            "woken by the message, not the deadline: {took} ns"
        );
        assert_eq!(&*msg, b"x");
        drop(sender.join().unwrap());
        // Now a message is waiting? No: it was taken. A ready socket returns at once.
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.connect("inproc://waitset-test").unwrap();
        push.send("y", 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        w.clear(clock.now_ns() + 10_000_000_000);
        w.socket(&pull, zmq::POLLIN);
        assert!(w.ready_now(), "a queued message is seen through ZMQ_EVENTS");
    }
}
