//! Redelivery of the journal's tail on a start (at-least-once across a crash), and what it says
//! while it waits for a downstream that is not there.
//!
//! An accepted order's record is in the journal before egress sends it, so after `kill -9` the
//! orders decided last may have been journaled but never sent (still in the egress ring, in
//! ZeroMQ's queue, or in the kernel's socket buffer). On a start with a non-empty journal and a
//! downstream, before the pipeline takes new input, the accepted orders of the journal's last
//! records ([`crate::limits::redelivery_window_records`], collected by recovery's one pass,
//! [`crate::recovery`]) are sent again. Some may arrive twice: the downstream tells them apart
//! by `input_seq` (and order id), as `bench sink` does.
//!
//! The wait for downstream never blocks: each frame is offered without blocking and the socket
//! polled [`EGRESS_POLL_MS`] at a time (each wait counted as an egress back-pressure wait), so a
//! signal (`stop`) ends it promptly. While downstream is not taking frames this says so at once
//! and then every [`WAIT_REPORT_EVERY`], naming the endpoint and how far it got: a start after
//! an earlier run, with no sink up, must not look like a hang. `engine run` binds its ingress
//! and starts its metrics endpoint before this runs, so both answer during the wait.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::frames::EgressEntry;
use crate::limits::EGRESS_POLL_MS;
use crate::out_format::{OutEncoder, OutFormat};

/// How often a redelivery that is waiting for downstream says so again.
pub const WAIT_REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long a wait lasts before it is first reported: a connection being set up (a few ms)
/// is not a missing downstream.
pub const WAIT_REPORT_AFTER: Duration = Duration::from_millis(500);

/// How a redelivery of the journal's tail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// Every accepted order of the tail was handed to ZeroMQ.
    Done {
        /// Orders re-sent.
        sent: u64,
    },
    /// SIGINT/SIGTERM arrived while downstream was not taking frames: the rest was not sent.
    /// Nothing is lost: the orders are in the journal, and the next start re-sends them.
    Stopped {
        /// Orders handed to ZeroMQ before the stop.
        sent: u64,
    },
}

/// Says when a send is waiting for downstream: first once it has waited [`WAIT_REPORT_AFTER`],
/// then every `every`.
#[derive(Debug)]
pub struct WaitReporter {
    endpoint: String,
    total: u64,
    every: Duration,
    started: Option<Instant>,
    last: Option<Instant>,
}

impl WaitReporter {
    /// A reporter for re-sending `total` orders to `endpoint`.
    pub fn new(endpoint: &str, total: u64, every: Duration) -> Self {
        WaitReporter {
            endpoint: endpoint.to_owned(),
            total,
            every,
            started: None,
            last: None,
        }
    }

    /// The line to print now, if one is due: called on every wait with the orders sent so far.
    pub fn on_wait(&mut self, sent: u64, now: Instant) -> Option<String> {
        let started = *self.started.get_or_insert(now);
        if now.saturating_duration_since(started) < WAIT_REPORT_AFTER {
            return None;
        }
        let due = self.last.map_or(true, |last| {
            now.saturating_duration_since(last) >= self.every
        });
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(format!(
            "waiting for downstream {} to take the journal's tail: {sent} of {} accepted \
             orders re-sent, waiting {} s. Start the downstream (e.g. `bench sink --bind {}`), \
             or stop with SIGINT/SIGTERM: nothing is lost, the next start re-sends them",
            self.endpoint,
            self.total,
            now.saturating_duration_since(started).as_secs(),
            self.endpoint,
        ))
    }
}

/// Offers `bytes` to `socket` until it takes them (`Ok(true)`) or `stop` is set (`Ok(false)`),
/// polling [`EGRESS_POLL_MS`] at a time; each wait is counted in `waits` and shown to `report`.
fn send_reporting(
    socket: &zmq::Socket,
    bytes: &[u8],
    waits: &AtomicU64,
    stop: &AtomicBool,
    report: &mut dyn FnMut(Instant),
) -> anyhow::Result<bool> {
    loop {
        match socket.send(bytes, zmq::DONTWAIT) {
            Ok(()) => return Ok(true),
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                if stop.load(Relaxed) {
                    return Ok(false);
                }
                waits.fetch_add(1, Relaxed);
                report(Instant::now());
                match socket.poll(zmq::POLLOUT, EGRESS_POLL_MS) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(e).context("egress poll"),
                }
            }
            Err(e) => return Err(e).context("egress send"),
        }
    }
}

/// Re-sends `tail` to `socket` in frames of at most `max_batch` orders, waiting for downstream
/// as described in the module documentation.
pub fn redeliver_tail(
    socket: &zmq::Socket,
    endpoint: &str,
    tail: &[EgressEntry],
    out_format: OutFormat,
    max_batch: usize,
    stop: &AtomicBool,
    waits: &AtomicU64,
) -> anyhow::Result<Redelivery> {
    // The same messages egress sends (a batch frame, or one order per message).
    let mut frame = OutEncoder::new(out_format, max_batch);
    let mut reporter = WaitReporter::new(endpoint, tail.len() as u64, WAIT_REPORT_EVERY);
    let mut sent = 0u64;
    let mut chunks = tail.chunks(frame.capacity().max(1));
    for chunk in chunks.by_ref() {
        frame.clear();
        for entry in chunk {
            frame.push(entry);
        }
        let mut report = |now: Instant| {
            if let Some(line) = reporter.on_wait(sent, now) {
                tracing::warn!("{line}");
            }
        };
        let taken = send_reporting(socket, frame.finish(), waits, stop, &mut report)
            .context("cannot redeliver accepted orders downstream")?;
        if !taken {
            return Ok(Redelivery::Stopped { sent });
        }
        sent = sent.saturating_add(chunk.len() as u64);
    }
    Ok(Redelivery::Done { sent })
}

/// On a start with a non-empty journal (`records_before > 0`) and a downstream: re-sends the
/// accepted orders of the journal's tail, saying what it did. Returns `false` when a signal
/// stopped it: the caller then ends (exit 0, an orderly stop: nothing was taken in, and the
/// orders not re-sent are still in the journal for the next start to re-send).
pub fn on_start(
    egress: Option<(&zmq::Socket, &str)>,
    tail: &[EgressEntry],
    records_before: u64,
    out_format: OutFormat,
    max_batch: usize,
    stop: &AtomicBool,
    waits: &AtomicU64,
) -> anyhow::Result<bool> {
    let Some((sock, endpoint)) = egress else {
        return Ok(true);
    };
    if records_before == 0 {
        return Ok(true);
    }
    tracing::info!(
        endpoint = %endpoint,
        orders = tail.len(),
        "re-sending the accepted orders of the journal's tail to {endpoint} \
         (at-least-once): {} orders; an absent downstream is waited for, SIGINT/SIGTERM stops",
        tail.len()
    );
    match redeliver_tail(sock, endpoint, tail, out_format, max_batch, stop, waits)? {
        Redelivery::Done { sent } => {
            tracing::info!(
                endpoint = %endpoint,
                sent,
                "resumed: re-sent {sent} accepted orders from the journal's tail \
                 (at-least-once)"
            );
            Ok(true)
        }
        Redelivery::Stopped { sent } => {
            tracing::info!(
                endpoint = %endpoint,
                sent,
                "stopped by signal while re-sending the journal's tail: downstream took \
                 {sent} accepted orders before the stop and was not taking more ({} waits); \
                 nothing is lost: the orders are in the journal and the next start re-sends them",
                waits.load(Relaxed)
            );
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_reported_after_half_a_second_then_every_period() {
        let mut r = WaitReporter::new("tcp://127.0.0.1:5600", 10, Duration::from_secs(5));
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // A connection being set up is not reported.
        assert_eq!(r.on_wait(0, t0), None);
        assert_eq!(r.on_wait(0, ms(10)), None);
        let first = r.on_wait(0, ms(500)).expect("reported after half a second");
        assert!(first.contains("tcp://127.0.0.1:5600"), "{first}");
        assert!(first.contains("0 of 10"), "{first}");
        assert!(
            first.contains("bench sink --bind tcp://127.0.0.1:5600"),
            "{first}"
        );
        assert_eq!(r.on_wait(0, ms(600)), None);
        assert_eq!(r.on_wait(0, ms(5_490)), None);
        let again = r.on_wait(4, ms(5_500)).expect("again");
        assert!(again.contains("4 of 10"), "{again}");
        assert!(again.contains("waiting 5 s"), "{again}");
        assert_eq!(r.on_wait(4, ms(6_500)), None);
        assert!(r.on_wait(4, ms(10_500)).is_some());
    }

    #[test]
    fn a_stop_ends_the_wait_for_an_absent_downstream() {
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).expect("socket");
        push.set_immediate(true).expect("immediate");
        // Nobody binds this path (an inproc connect would queue before its bind).
        let tmp = tempfile::tempdir().expect("tempdir");
        let nobody = format!("ipc://{}", tmp.path().join("nobody.ipc").display());
        push.connect(&nobody).expect("connect");
        let tail = vec![EgressEntry::default(); 3];
        let stop = AtomicBool::new(true);
        let waits = AtomicU64::new(0);
        let r = redeliver_tail(&push, &nobody, &tail, OutFormat::Batch, 2, &stop, &waits)
            .expect("redeliver");
        assert_eq!(r, Redelivery::Stopped { sent: 0 });
    }

    #[test]
    fn the_tail_goes_out_in_frames_of_max_batch() {
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL).expect("socket");
        pull.bind("inproc://redelivery-frames").expect("bind");
        let push = ctx.socket(zmq::PUSH).expect("socket");
        push.connect("inproc://redelivery-frames").expect("connect");
        let tail = vec![EgressEntry::default(); 5];
        let stop = AtomicBool::new(false);
        let waits = AtomicU64::new(0);
        let r = redeliver_tail(
            &push,
            "inproc://redelivery-frames",
            &tail,
            OutFormat::Batch,
            2,
            &stop,
            &waits,
        )
        .expect("redeliver");
        assert_eq!(r, Redelivery::Done { sent: 5 });
        let sizes: Vec<usize> = (0..3)
            .map(|_| pull.recv_bytes(0).expect("frame").len())
            .collect();
        assert!(sizes[0] == sizes[1] && sizes[2] < sizes[0], "{sizes:?}");
    }
}
