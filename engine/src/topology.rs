//! The four stages of the pipeline, and per-stage settings (core map, idle strategies).
//!
//! ```text
//!  ingress ──ring──► risk ──ring──► journal ──ring──► egress
//! ```

use std::fmt;
use std::str::FromStr;

/// One stage of the pipeline; also the name of its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageId {
    /// Reads orders (file replay or ZeroMQ PULL), stamps them, pushes them to risk.
    Ingress,
    /// Sends batches to the risk service, stamps verdicts.
    Risk,
    /// The single writer of the audit journal; publishes records; hands accepted orders on.
    Journal,
    /// Pushes accepted orders downstream.
    Egress,
}

impl StageId {
    /// All stages in pipeline order.
    pub const ALL: [StageId; 4] = [
        StageId::Ingress,
        StageId::Risk,
        StageId::Journal,
        StageId::Egress,
    ];

    /// Lower-case name: thread name, config key, metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            StageId::Ingress => "ingress",
            StageId::Risk => "risk",
            StageId::Journal => "journal",
            StageId::Egress => "egress",
        }
    }

    /// Parses a name produced by [`StageId::as_str`].
    pub fn parse(text: &str) -> Option<StageId> {
        StageId::ALL.into_iter().find(|s| s.as_str() == text.trim())
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PerStage<T> {
    /// The ingress stage's value.
    pub ingress: T,
    /// The risk stage's value.
    pub risk: T,
    /// The journal stage's value.
    pub journal: T,
    /// The egress stage's value.
    pub egress: T,
}

impl<T: Copy> PerStage<T> {
    /// The same value for every stage.
    pub fn all(v: T) -> PerStage<T> {
        PerStage {
            ingress: v,
            risk: v,
            journal: v,
            egress: v,
        }
    }
}

impl<T> PerStage<T> {
    /// The value of one stage.
    pub fn get(&self, s: StageId) -> &T {
        match s {
            StageId::Ingress => &self.ingress,
            StageId::Risk => &self.risk,
            StageId::Journal => &self.journal,
            StageId::Egress => &self.egress,
        }
    }

    /// Applies `f` to every stage's value.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> PerStage<U> {
        PerStage {
            ingress: f(&self.ingress),
            risk: f(&self.risk),
            journal: f(&self.journal),
            egress: f(&self.egress),
        }
    }

    /// The value of one stage, mutably.
    pub fn get_mut(&mut self, s: StageId) -> &mut T {
        match s {
            StageId::Ingress => &mut self.ingress,
            StageId::Risk => &mut self.risk,
            StageId::Journal => &mut self.journal,
            StageId::Egress => &mut self.egress,
        }
    }
}

/// Why a per-stage list did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PerStageError {
    /// `name=value` with an unknown stage name.
    #[error("unknown stage {0:?} (expected ingress, risk, journal or egress)")]
    UnknownStage(String),
    /// A value did not parse.
    #[error("bad value {value:?} for {stage}: {message}")]
    BadValue {
        /// The stage (or `all`).
        stage: String,
        /// The text.
        value: String,
        /// Why.
        message: String,
    },
    /// A positional list without exactly four entries.
    #[error("expected one value, four comma-separated values (ingress,risk,journal,egress) or stage=value pairs, got {0:?}")]
    Shape(String),
    /// A stage named twice.
    #[error("stage {0} given twice")]
    Duplicate(String),
}

/// Parses a per-stage setting from the command line:
/// - `V` — the same value for every stage;
/// - `V1,V2,V3,V4` — ingress, risk, journal, egress in order;
/// - `stage=V,stage=V` — named stages; the others keep `default`.
pub fn parse_per_stage<T: Copy + FromStr>(
    text: &str,
    default: T,
) -> Result<PerStage<T>, PerStageError>
where
    T::Err: fmt::Display,
{
    let parse_one = |stage: &str, v: &str| {
        v.trim().parse::<T>().map_err(|e| PerStageError::BadValue {
            stage: stage.to_owned(),
            value: v.to_owned(),
            message: e.to_string(),
        })
    };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.iter().any(|p| p.contains('=')) {
        let mut out = PerStage::all(default);
        let mut seen = Vec::new();
        for p in parts {
            let (name, v) = p
                .split_once('=')
                .ok_or_else(|| PerStageError::Shape(text.to_owned()))?;
            let stage = StageId::parse(name)
                .ok_or_else(|| PerStageError::UnknownStage(name.trim().to_owned()))?;
            if seen.contains(&stage) {
                return Err(PerStageError::Duplicate(stage.to_string()));
            }
            seen.push(stage);
            *out.get_mut(stage) = parse_one(stage.as_str(), v)?;
        }
        Ok(out)
    } else if parts.len() == 1 {
        Ok(PerStage::all(parse_one("all", parts[0])?))
    } else if parts.len() == StageId::ALL.len() {
        let mut out = PerStage::all(default);
        for (stage, v) in StageId::ALL.into_iter().zip(parts) {
            *out.get_mut(stage) = parse_one(stage.as_str(), v)?;
        }
        Ok(out)
    } else {
        Err(PerStageError::Shape(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_positional_and_named() {
        assert_eq!(parse_per_stage::<u32>("3", 0), Ok(PerStage::all(3)));
        let p = parse_per_stage::<u32>("0,1,1,0", 9).expect("positional");
        assert_eq!((p.ingress, p.risk, p.journal, p.egress), (0, 1, 1, 0));
        let n = parse_per_stage::<u32>("risk=1, journal=0", 7).expect("named");
        assert_eq!((n.ingress, n.risk, n.journal, n.egress), (7, 1, 0, 7));
    }

    #[test]
    fn names_the_problem() {
        assert!(matches!(
            parse_per_stage::<u32>("1,2", 0),
            Err(PerStageError::Shape(_))
        ));
        assert!(matches!(
            parse_per_stage::<u32>("risky=1", 0),
            Err(PerStageError::UnknownStage(s)) if s == "risky"
        ));
        assert!(matches!(
            parse_per_stage::<u32>("risk=x", 0),
            Err(PerStageError::BadValue { stage, .. }) if stage == "risk"
        ));
        assert!(matches!(
            parse_per_stage::<u32>("risk=1,risk=2", 0),
            Err(PerStageError::Duplicate(_))
        ));
    }

    #[test]
    fn stage_names_round_trip() {
        for s in StageId::ALL {
            assert_eq!(StageId::parse(s.as_str()), Some(s));
            assert_eq!(*PerStage::all(5u8).get(s), 5);
        }
    }
}

/// Parses a kernel CPU list such as `2-3,6` (as in `/sys/devices/system/cpu/isolated`).
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    out.extend(a..=b.min(a.saturating_add(4096)));
                }
            }
            None => {
                if let Ok(c) = part.trim().parse() {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// Start-up warnings about the placement of the stages (never errors): a stage pinned to a core
/// the kernel does not isolate (other work will run there and cost tail latency), and a `spin`
/// stage that does not have a core to itself (it would steal the core from whatever shares it).
/// `isolated` is the kernel's isolated CPU list.
pub fn placement_warnings(
    cores: &PerStage<Option<usize>>,
    idle: &PerStage<crate::idle::IdleKind>,
    isolated: &[usize],
) -> Vec<String> {
    let mut out = Vec::new();
    for s in StageId::ALL {
        let core = *cores.get(s);
        if let Some(c) = core {
            if !isolated.contains(&c) {
                out.push(format!(
                    "stage {} is pinned to core {c}, which is not isolated (isolcpus): other work \
                     will share it (scripts/tune-host.sh --check)",
                    s.as_str()
                ));
            }
        }
        if *idle.get(s) == crate::idle::IdleKind::Spin {
            let shared = match core {
                None => true,
                Some(c) => StageId::ALL
                    .into_iter()
                    .any(|o| o != s && *cores.get(o) == Some(c)),
            };
            if shared {
                out.push(format!(
                    "stage {} spins without a core of its own: it will take CPU time from the \
                     threads that share its core (pin it alone to an isolated core, or use backoff)",
                    s.as_str()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod placement_tests {
    use super::*;
    use crate::idle::IdleKind;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("2-3,6\n"), vec![2, 3, 6]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("x,1"), vec![1]);
    }

    #[test]
    fn warns_on_unisolated_cores_and_shared_spinners() {
        let mut cores = PerStage::all(None);
        cores.ingress = Some(2);
        cores.risk = Some(2);
        let mut idle = PerStage::all(IdleKind::Backoff);
        idle.risk = IdleKind::Spin;
        idle.egress = IdleKind::Spin;
        let w = placement_warnings(&cores, &idle, &[]);
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].contains("ingress is pinned to core 2, which is not isolated"));
        assert!(w
            .iter()
            .any(|m| m.contains("risk spins without a core of its own")));
        assert!(w
            .iter()
            .any(|m| m.contains("egress spins without a core of its own")));
        // Isolated and alone: nothing to say.
        let mut cores = PerStage::all(None);
        cores.risk = Some(3);
        let mut idle = PerStage::all(IdleKind::Backoff);
        idle.risk = IdleKind::Spin;
        assert!(placement_warnings(&cores, &idle, &[3]).is_empty());
    }
}
