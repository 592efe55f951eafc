//! One time line for every stage: wall-clock nanoseconds since the Unix epoch, read from the
//! monotonic clock.
//!
//! Decisions carry epoch timestamps (`t_in_ns`, `t_decided_ns`), but the wall clock may step
//! (NTP). The [`Clock`] reads the epoch once at start-up and adds the monotonic time elapsed
//! since, so timestamps of one run never go backwards and differences between them are exact.
//! `Instant::now` is a vDSO `clock_gettime(CLOCK_MONOTONIC)`: no syscall, ~20 ns.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A copyable monotonic clock that reports nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_epoch_ns: u64,
}

impl Clock {
    /// Anchors a new clock at the current wall-clock time.
    pub fn new() -> Clock {
        let base = Instant::now();
        // A clock before 1970 is a broken host; 0 keeps timestamps monotonic anyway.
        let base_epoch_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
            .unwrap_or(0);
        Clock {
            base,
            base_epoch_ns,
        }
    }

    /// Nanoseconds since the Unix epoch, monotonic within this clock.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        let elapsed = self.base.elapsed().as_nanos();
        self.base_epoch_ns
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_near_wall_clock() {
        let c = Clock::new();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(b >= a);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64;
        // Within a second of the wall clock (the test box is not stepping its clock).
        assert!(wall.abs_diff(b) < 1_000_000_000);
        // Copies share the time line.
        let d = c;
        assert!(d.now_ns() >= b);
    }
}
