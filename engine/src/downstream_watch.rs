//! Says when the run is waiting for its downstream (issue 16): egress never drops an order, so
//! with no sink on the egress endpoint (or one that stopped reading) the pipeline backs up and
//! the engine would otherwise wait in silence.
//!
//! A thread of its own samples counters the stages keep anyway — the accepted orders journaled
//! but not yet handed to ZeroMQ (the `journal_egress` ring depth) and the frames ZeroMQ took —
//! every [`SAMPLE_EVERY`]; nothing is added to the order path. When orders wait for egress and
//! no frame is taken for [`STALL_AFTER`], it prints
//! `waiting for downstream ENDPOINT …` with what to do, again every
//! [`REPORT_EVERY`] while it lasts, and one line when frames flow again.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// How often the counters are read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How long egress must wait without a frame taken before it is reported.
pub const STALL_AFTER: Duration = Duration::from_secs(1);
/// How often a continuing wait is reported again.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// What the watcher concluded from one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to say.
    Quiet,
    /// Egress has waited this long with no frame taken: say so.
    Waiting(Duration),
    /// Frames are taken again after a reported wait.
    Flowing,
}

/// The watcher's state, fed with samples of (orders waiting for egress, frames taken).
#[derive(Debug)]
pub struct Watch {
    last_frames: u64,
    /// Since when egress has waited with no frame taken.
    stalled_since: Option<Instant>,
    last_report: Option<Instant>,
}

impl Watch {
    /// A watcher starting from the counters' current values.
    pub fn new(frames: u64) -> Self {
        Watch {
            last_frames: frames,
            stalled_since: None,
            last_report: None,
        }
    }

    /// One sample at `now`: `pending` accepted orders not yet handed to ZeroMQ, `frames` taken
    /// so far.
    pub fn sample(&mut self, pending: u64, frames: u64, now: Instant) -> Verdict {
        let took = frames != self.last_frames;
        self.last_frames = frames;
        if took {
            self.stalled_since = None;
            return if self.last_report.take().is_some() {
                Verdict::Flowing
            } else {
                Verdict::Quiet
            };
        }
        if pending == 0 {
            // Idle (nothing to send) is not waiting.
            self.stalled_since = None;
            return Verdict::Quiet;
        }
        let since = *self.stalled_since.get_or_insert(now);
        let stalled = now.saturating_duration_since(since);
        let due = self
            .last_report
            .map_or(true, |l| now.saturating_duration_since(l) >= REPORT_EVERY);
        if stalled >= STALL_AFTER && due {
            self.last_report = Some(now);
            Verdict::Waiting(stalled)
        } else {
            Verdict::Quiet
        }
    }
}

/// A watcher for a run's egress target: `None` when it sends nowhere.
pub fn start_for(
    egress: &crate::config::EgressTarget,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<DownstreamWatch>> {
    use anyhow::Context as _;
    match egress {
        crate::config::EgressTarget::Push { endpoint, .. } => Ok(Some(
            DownstreamWatch::start(endpoint, Arc::clone(metrics))
                .context("cannot start the downstream watcher thread")?,
        )),
        crate::config::EgressTarget::None => Ok(None),
    }
}

/// The watcher thread; stopped (and joined) by [`DownstreamWatch::stop`] or on drop.
#[derive(Debug)]
pub struct DownstreamWatch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl DownstreamWatch {
    /// Starts watching the egress counters of `metrics` for a downstream at `endpoint`.
    pub fn start(endpoint: &str, metrics: Arc<Metrics>) -> std::io::Result<DownstreamWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let endpoint = endpoint.to_owned();
        let handle = std::thread::Builder::new()
            .name("downstream-watch".into())
            .spawn(move || {
                let frames = &metrics.egress.frames;
                let mut w = Watch::new(frames.load(Relaxed));
                while !stop2.load(Relaxed) {
                    std::thread::sleep(SAMPLE_EVERY);
                    let pending = metrics.ring_depths().journal_egress;
                    let v = w.sample(pending, frames.load(Relaxed), Instant::now());
                    match v {
                        Verdict::Quiet => {}
                        Verdict::Waiting(d) => tracing::warn!(
                            endpoint = %endpoint,
                            waited_s = d.as_secs(),
                            "waiting for downstream {endpoint}: no egress frame taken for \
                             {} s, and the wait backs up to the ingress (nothing is dropped). Is \
                             a sink bound there (e.g. `bench sink --bind {endpoint}`)?",
                            d.as_secs()
                        ),
                        Verdict::Flowing => {
                            tracing::info!(
                                endpoint = %endpoint,
                                "downstream {endpoint} is taking frames again"
                            )
                        }
                    }
                }
            })?;
        Ok(DownstreamWatch {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for DownstreamWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_egress_is_reported_after_a_second_then_every_five() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = Watch::new(0);
        // Idle: nothing pending, no frames: nothing to say however long.
        assert_eq!(w.sample(0, 0, at(5_000)), Verdict::Quiet);
        // Orders wait for egress, no frame is taken.
        assert_eq!(w.sample(20, 0, at(5_200)), Verdict::Quiet);
        assert_eq!(w.sample(20, 0, at(6_000)), Verdict::Quiet);
        assert_eq!(
            w.sample(20, 0, at(6_200)),
            Verdict::Waiting(Duration::from_secs(1))
        );
        assert_eq!(w.sample(40, 0, at(9_000)), Verdict::Quiet);
        assert!(matches!(w.sample(50, 0, at(11_200)), Verdict::Waiting(d) if d.as_secs() == 6));
        // Frames flow again: said once.
        assert_eq!(w.sample(10, 3, at(11_400)), Verdict::Flowing);
        assert_eq!(w.sample(0, 4, at(11_600)), Verdict::Quiet);
    }

    #[test]
    fn a_busy_egress_taking_frames_is_not_reported() {
        let t0 = Instant::now();
        let mut w = Watch::new(0);
        for i in 1..100u64 {
            let v = w.sample(500, i, t0 + Duration::from_millis(i * 200));
            assert_eq!(v, Verdict::Quiet, "sample {i}");
        }
    }
}
