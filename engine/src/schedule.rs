//! When the replay ingress sends each order: the open-loop schedule.
//!
//! Latency is measured from an order's **scheduled** send time, not from the moment the
//! ingress managed to send it, so a stalled pipeline cannot hide its own queueing
//! (coordinated omission): if the ingress falls behind, the wait shows in the latency.
//!
//! ```text
//!  --rate max          t_sched(k) = the moment order k is pushed (no schedule)
//!  --rate N            t_sched(k) = t0 + k × 1e9 / N
//!  --pace recorded:X   t_sched(k) = t0 + (ts(k) − ts(0)) / X   (ts made monotonic)
//! ```
//! `k` counts from the first order of this run (after `--resume`, from the resume point).

use std::fmt;
use std::str::FromStr;

/// Nanoseconds per second.
const NS_PER_S: u128 = 1_000_000_000;

/// How replayed orders are spaced in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// As fast as the pipeline takes them; latency starts when an order is pushed.
    Max,
    /// Open loop at a fixed rate (orders per second, > 0).
    Rate {
        /// Orders per second.
        per_s: u64,
    },
    /// The file's own timestamps, divided by `speedup` (> 0).
    Recorded {
        /// How many times faster than recorded.
        speedup: f64,
    },
}

impl Schedule {
    /// What threading `auto` makes of a replay on this schedule whose checks are inline (or
    /// not) ([`crate::threading::choose`]): as fast as possible is bulk work, any pace is paced.
    pub fn workload(&self, checks_inline: bool) -> crate::threading::Workload {
        crate::threading::Workload::of(matches!(self, Schedule::Max), checks_inline)
    }

    /// Offset in ns from `t0` of the `k`-th order of the run, or `None` for [`Schedule::Max`].
    /// `ts_first` is the (monotonic) file timestamp of the run's first order, `ts_k` that of
    /// order `k`.
    #[inline]
    pub fn offset_ns(&self, k: u64, ts_first: u64, ts_k: u64) -> Option<u64> {
        match *self {
            Schedule::Max => None,
            Schedule::Rate { per_s } => {
                let off = k as u128 * NS_PER_S / per_s.max(1) as u128;
                Some(u64::try_from(off).unwrap_or(u64::MAX))
            }
            Schedule::Recorded { speedup } => {
                let delta = ts_k.saturating_sub(ts_first) as f64;
                let off = delta / speedup;
                Some(if off >= u64::MAX as f64 {
                    u64::MAX
                } else {
                    off as u64
                })
            }
        }
    }

    /// Whether the schedule needs the file's timestamps.
    pub fn uses_timestamps(&self) -> bool {
        matches!(self, Schedule::Recorded { .. })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Max => f.write_str("rate max"),
            Schedule::Rate { per_s } => write!(f, "rate {per_s}/s"),
            Schedule::Recorded { speedup } => write!(f, "pace recorded:{speedup}"),
        }
    }
}

/// Why a `--rate` or `--pace` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// `--rate` that is neither `max` nor a positive integer.
    #[error("rate {0:?} is not `max` or a positive number of orders per second")]
    Rate(String),
    /// `--pace` that is not `recorded` or `recorded:X` with X > 0.
    #[error("pace {0:?} is not `recorded` or `recorded:SPEEDUP` with SPEEDUP > 0")]
    Pace(String),
}

/// A `--rate` value: `max` or orders per second (`100000`, `100k`, `1.2M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// As fast as possible.
    Max,
    /// Orders per second.
    PerSecond(u64),
}

impl FromStr for Rate {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        let err = || ScheduleError::Rate(t.to_owned());
        let (num, mult) = match t.chars().last() {
            Some('k' | 'K') => (&t[..t.len() - 1], 1_000.0),
            Some('m' | 'M') => (&t[..t.len() - 1], 1_000_000.0),
            _ => (t, 1.0),
        };
        let v: f64 = num.parse().map_err(|_| err())?;
        let per_s = v * mult;
        if !per_s.is_finite() || !(1.0..=1e12).contains(&per_s) || per_s.fract() != 0.0 {
            return Err(err());
        }
        Ok(Rate::PerSecond(per_s as u64))
    }
}

/// Parses `recorded` or `recorded:SPEEDUP` into a speed-up factor.
pub fn parse_pace(s: &str) -> Result<f64, ScheduleError> {
    let t = s.trim();
    let err = || ScheduleError::Pace(t.to_owned());
    match t.split_once(':') {
        None if t == "recorded" => Ok(1.0),
        Some(("recorded", x)) => {
            let v: f64 = x.trim().parse().map_err(|_| err())?;
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(err())
            }
        }
        _ => Err(err()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rate_offsets_are_exact() {
        let s = Schedule::Rate { per_s: 100_000 };
        assert_eq!(s.offset_ns(0, 0, 0), Some(0));
        assert_eq!(s.offset_ns(1, 0, 0), Some(10_000));
        assert_eq!(s.offset_ns(100_000, 0, 0), Some(1_000_000_000));
        // 3 per second: no drift from rounding each step.
        let s = Schedule::Rate { per_s: 3 };
        assert_eq!(s.offset_ns(3, 0, 0), Some(1_000_000_000));
        assert_eq!(s.offset_ns(1, 0, 0), Some(333_333_333));
        assert_eq!(Schedule::Max.offset_ns(5, 0, 0), None);
    }

    #[test]
    fn recorded_offsets_scale_and_never_go_negative() {
        let s = Schedule::Recorded { speedup: 2.0 };
        assert_eq!(s.offset_ns(7, 1_000, 3_000), Some(1_000));
        assert_eq!(
            s.offset_ns(7, 5_000, 3_000),
            Some(0),
            "earlier ts clamps to 0"
        );
        let s = Schedule::Recorded { speedup: 1e-300 };
        assert_eq!(s.offset_ns(1, 0, 10), Some(u64::MAX), "saturates");
        assert!(s.uses_timestamps());
    }

    #[test]
    fn parses_rates_and_paces() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("100000".parse::<Rate>(), Ok(Rate::PerSecond(100_000)));
        assert_eq!("100k".parse::<Rate>(), Ok(Rate::PerSecond(100_000)));
        assert_eq!("1.2M".parse::<Rate>(), Ok(Rate::PerSecond(1_200_000)));
        for bad in ["0", "-5", "fast", "1.5", "", "nan"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!(parse_pace("recorded"), Ok(1.0));
        assert_eq!(parse_pace("recorded:10"), Ok(10.0));
        assert_eq!(parse_pace("recorded:0.5"), Ok(0.5));
        for bad in [
            "recorded:0",
            "recorded:-1",
            "recorded:x",
            "live",
            "recorded:inf",
        ] {
            assert!(parse_pace(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn rate_offsets_are_monotonic(per_s in 1u64..10_000_000, k in 0u64..1_000_000_000) {
            let s = Schedule::Rate { per_s };
            prop_assert!(s.offset_ns(k + 1, 0, 0) >= s.offset_ns(k, 0, 0));
        }
    }
}
