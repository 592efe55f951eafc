//! `bench summary RESULTS_DIR`: the text summary of a benchmark run (`scripts/bench.sh` writes
//! it to `RESULTS_DIR/summary.txt`), the scenarios side by side and the targets checked.
//!
//! It reads the same files as `bench plot` ([`crate::plot::load_scenarios`]) and relies on the
//! suite's scenario names: `<kind>-<rate>[-<threading>]`, e.g. `tcp-10k-auto`,
//! `inline-100k-dedicated`, `tcp-max-auto`, `baseline-10k`. The rate of a row comes from the
//! report's `schedule` (`rate 10000/s`, `rate max`), the requested threading mode from the last
//! part of the name (`auto`, `dedicated`, `shared`), and the mode the engine chose from the
//! report's `threading.mode` when it has one.
//!
//! Three tables:
//! - **fixed rates**: latency from each order's scheduled arrival to its PUSH (the engine and
//!   `bench baseline` measure it the same way, free of coordinated omission), with p50 and p99 as
//!   a ratio to the baseline at the same rate. No throughput ratio: at a fixed rate every
//!   scenario that keeps up runs at that rate, so the ratio says nothing.
//! - **`--rate max`**: throughput, with the ratio to the baseline at max; the latency columns
//!   are labelled queueing: an order is stamped when it enters the pipeline and then waits
//!   behind the orders filling the rings, so the figure is mostly that wait (the baseline, one
//!   order at a time, has no queue: its max-rate latency is one order's).
//! - **targets** ([`TARGETS`]): each with the scenario it reads, the measured figure (ratios
//!   within this run) and `met` / `NOT MET` / `no data`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::plot::{load_scenarios, Report};

/// `bench summary` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SummaryArgs {
    /// Directory of results, as `bench plot` reads it (`<scenario>.json`, `<scenario>.hgrm`).
    #[arg(value_name = "RESULTS_DIR")]
    pub results_dir: PathBuf,
}

/// How a scenario's orders were spaced, from its report's `schedule`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RateClass {
    /// Open loop at a fixed rate (orders per second).
    Fixed(u64),
    /// `--rate max` (also a report without `schedule`, as older reports were always max).
    Max,
    /// Anything else (`pace recorded:…`), shown as written.
    Other(String),
}

impl RateClass {
    /// Parses a report's `schedule`.
    pub fn of(schedule: Option<&str>) -> RateClass {
        let Some(s) = schedule else {
            return RateClass::Max;
        };
        match s.trim().strip_prefix("rate ") {
            Some("max") => RateClass::Max,
            Some(r) => match r.strip_suffix("/s").and_then(|n| n.parse::<u64>().ok()) {
                Some(n) => RateClass::Fixed(n),
                None => RateClass::Other(s.to_owned()),
            },
            None => RateClass::Other(s.to_owned()),
        }
    }

    /// Whether it is `--rate max`.
    pub fn is_max(&self) -> bool {
        matches!(self, RateClass::Max)
    }
}

/// Threading modes a scenario name may end with.
const THREADING_MODES: [&str; 4] = ["auto", "dedicated", "split", "shared"];

/// One scenario with a report.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    report: Report,
    rate: RateClass,
    /// Requested mode (from the name), if any.
    threading: Option<String>,
}

/// Below this share of its rate, a fixed-rate run did not keep up: its latency is mostly the
/// queue it built, and a ratio to it flatters whoever is compared with it.
const KEPT_UP_SHARE_MIN: f64 = 0.95;

impl Row {
    /// `Some(note)` when a fixed-rate run fell behind its rate.
    fn fell_behind(&self) -> Option<String> {
        match self.rate {
            RateClass::Fixed(n) if self.report.throughput_per_s < KEPT_UP_SHARE_MIN * n as f64 => {
                Some(format!(
                    "fell behind: {} of {}",
                    fmt_rate(self.report.throughput_per_s),
                    fmt_rate(n as f64)
                ))
            }
            _ => None,
        }
    }

    fn threading_label(&self) -> String {
        let chosen = self.report.threading_mode();
        match (&self.threading, chosen) {
            (Some(asked), Some(got)) if asked != got => format!("{asked}→{got}"),
            (Some(asked), _) => asked.clone(),
            (None, Some(got)) => got.to_owned(),
            (None, None) => "-".to_owned(),
        }
    }
}

/// Which figure of a report a target reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Latency p50, µs.
    P50,
    /// Latency p99, µs.
    P99,
    /// Latency p99.9, µs.
    P999,
    /// Orders per second.
    Throughput,
}

impl Figure {
    fn of(self, r: &Report) -> f64 {
        match self {
            Figure::P50 => r.latency_us.p50,
            Figure::P99 => r.latency_us.p99,
            Figure::P999 => r.latency_us.p999,
            Figure::Throughput => r.throughput_per_s,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Figure::P50 => "p50",
            Figure::P99 => "p99",
            Figure::P999 => "p99.9",
            Figure::Throughput => "throughput",
        }
    }

    fn fmt(self, v: f64) -> String {
        match self {
            Figure::Throughput => fmt_rate(v),
            _ => fmt_us(v),
        }
    }
}

/// What a target compares its figure with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// At most this many µs.
    AtMostUs(f64),
    /// At most this multiple of the same figure of the baseline at the same fixed rate.
    AtMostBaseline(f64),
    /// At least this many orders per second.
    AtLeastPerS(f64),
    /// At least this multiple of the same figure of another scenario of this run.
    AtLeastOf(&'static str, f64),
}

/// One target of issue 12, read from one scenario of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// Scenario (file stem) it reads.
    pub scenario: &'static str,
    /// Its figure.
    pub figure: Figure,
    /// The bound.
    pub bound: Bound,
}

/// The targets, in the order they are printed (`threading auto` unless a name says otherwise;
/// docs/results.md has the same list). The inline spin target is read twice: on the default
/// placement (`inline-100k-auto`) and on a tuned host's (`inline-100k-pinned`: the spinning
/// thread pinned alone on a CPU, `scripts/bench.sh`).
pub const TARGETS: [Target; 11] = [
    Target {
        scenario: "tcp-10k-auto",
        figure: Figure::P50,
        bound: Bound::AtMostBaseline(1.25),
    },
    Target {
        scenario: "tcp-10k-auto",
        figure: Figure::P99,
        bound: Bound::AtMostBaseline(3.0),
    },
    Target {
        scenario: "tcp-100k-auto",
        figure: Figure::P99,
        bound: Bound::AtMostUs(500.0),
    },
    Target {
        scenario: "tcp-100k-auto",
        figure: Figure::P999,
        bound: Bound::AtMostUs(2_000.0),
    },
    Target {
        scenario: "inline-100k-auto",
        figure: Figure::P50,
        bound: Bound::AtMostUs(10.0),
    },
    Target {
        scenario: "inline-100k-auto",
        figure: Figure::P99,
        bound: Bound::AtMostUs(100.0),
    },
    Target {
        scenario: "inline-100k-pinned",
        figure: Figure::P50,
        bound: Bound::AtMostUs(10.0),
    },
    Target {
        scenario: "inline-100k-pinned",
        figure: Figure::P99,
        bound: Bound::AtMostUs(100.0),
    },
    Target {
        scenario: "tcp-max-auto",
        figure: Figure::Throughput,
        bound: Bound::AtLeastPerS(1_500_000.0),
    },
    Target {
        scenario: "tcp-max-auto",
        figure: Figure::Throughput,
        bound: Bound::AtLeastOf("tcp-max-dedicated", 0.9),
    },
    Target {
        scenario: "inline-max-auto",
        figure: Figure::Throughput,
        bound: Bound::AtLeastPerS(3_000_000.0),
    },
];

/// A target's outcome in one run.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Met; the measured figure as text.
    Met(String),
    /// Not met; the measured figure and by how much.
    NotMet(String),
    /// A scenario it needs is absent (skipped or failed); which.
    NoData(String),
}

impl Verdict {
    fn columns(&self) -> (String, String) {
        match self {
            Verdict::Met(m) => (m.clone(), "met".to_owned()),
            Verdict::NotMet(m) => (m.clone(), "NOT MET".to_owned()),
            Verdict::NoData(why) => ("-".to_owned(), format!("no data ({why})")),
        }
    }
}

fn find<'a>(rows: &'a [Row], name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.name == name)
}

/// The baseline at a fixed rate (the first by name).
fn baseline_at<'a>(rows: &'a [Row], rate: &RateClass) -> Option<&'a Row> {
    rows.iter().find(|r| r.report.baseline && &r.rate == rate)
}

/// The baseline at `--rate max`: one order at a time, so its latency has no queue in it.
fn baseline_unqueued(rows: &[Row]) -> Option<&Row> {
    rows.iter()
        .find(|r| r.report.baseline && r.rate == RateClass::Max)
}

/// Checks one target against the rows of a run.
fn verdict(t: &Target, rows: &[Row]) -> Verdict {
    let Some(row) = find(rows, t.scenario) else {
        return Verdict::NoData(format!("{} missing: skipped or failed", t.scenario));
    };
    let v = t.figure.of(&row.report);
    let shown = t.figure.fmt(v);
    let (ok, text) = match t.bound {
        Bound::AtMostUs(max) => (v <= max, format!("{shown} ({:.2}× the bound)", v / max)),
        Bound::AtLeastPerS(min) => (v >= min, format!("{shown} ({:.2}× the bound)", v / min)),
        Bound::AtMostBaseline(k) => {
            let Some(base) = baseline_at(rows, &row.rate) else {
                return Verdict::NoData(format!(
                    "no baseline at the rate of {} in this run",
                    t.scenario
                ));
            };
            // A baseline that fell behind its rate measured its own queue: a ratio to that
            // flatters anything. Compare with its latency where it queues nothing instead: at
            // --rate max it sends one order at a time, so each order's latency is its own.
            let (base, note) = if base.fell_behind().is_some() {
                let Some(unqueued) = baseline_unqueued(rows) else {
                    return Verdict::NoData(format!(
                        "{} fell behind its rate, and no baseline ran at --rate max to compare \
                         with",
                        base.name
                    ));
                };
                (
                    unqueued,
                    format!(
                        " ({} fell behind its rate: compared with the baseline's unqueued \
                         latency, one order at a time at --rate max)",
                        base.name
                    ),
                )
            } else {
                (base, String::new())
            };
            let b = t.figure.of(&base.report);
            let ratio = if b > 0.0 { v / b } else { f64::INFINITY };
            let text = format!(
                "{shown} = {ratio:.2}× {} {}{note}",
                base.name,
                t.figure.fmt(b)
            );
            (ratio <= k, text)
        }
        Bound::AtLeastOf(other, k) => {
            let Some(o) = find(rows, other) else {
                return Verdict::NoData(format!("{other} missing: skipped or failed"));
            };
            let b = t.figure.of(&o.report);
            let ratio = if b > 0.0 { v / b } else { f64::INFINITY };
            (
                ratio >= k,
                format!("{shown} = {ratio:.2}× {other} {}", t.figure.fmt(b)),
            )
        }
    };
    if ok {
        Verdict::Met(text)
    } else {
        Verdict::NotMet(text)
    }
}

/// The target as a sentence: `tcp-10k-auto p50 ≤ 1.25× baseline at the same rate`.
fn describe(t: &Target) -> String {
    let bound = match t.bound {
        Bound::AtMostUs(us) => format!("≤ {}", fmt_us(us)),
        Bound::AtMostBaseline(k) => format!("≤ {k}× baseline at the same rate"),
        Bound::AtLeastPerS(n) => format!("≥ {}", fmt_rate(n)),
        Bound::AtLeastOf(other, k) => format!("≥ {k}× {other}"),
    };
    format!("{} {} {bound}", t.scenario, t.figure.name())
}

fn rows_of(dir: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let scenarios = load_scenarios(dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(scenarios
        .into_iter()
        .filter_map(|s| {
            let report = s.report?;
            let rate = RateClass::of(report.schedule.as_deref());
            let last = s.name.rsplit('-').next().unwrap_or("");
            let threading = THREADING_MODES
                .contains(&last)
                .then(|| last.to_owned())
                .filter(|_| !report.baseline);
            Some(Row {
                name: s.name,
                report,
                rate,
                threading,
            })
        })
        .collect())
}

/// The summary text of the scenarios in `dir`.
pub fn summarize(dir: &std::path::Path) -> anyhow::Result<String> {
    let mut rows = rows_of(dir)?;
    // Rate, then ours before the baseline, then name: auto and dedicated of one scenario sit
    // next to each other, the baseline at that rate right below them.
    rows.sort_by(|a, b| {
        (&a.rate, a.report.baseline, &a.name).cmp(&(&b.rate, b.report.baseline, &b.name))
    });
    let mut out = String::new();
    let w = 26;

    let fixed: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.rate, RateClass::Fixed(_)))
        .collect();
    if !fixed.is_empty() {
        let _ = writeln!(
            out,
            "Fixed open-loop rates: latency in µs from each order's scheduled arrival to its PUSH \
             (no coordinated omission); ratios to the baseline at the same rate, this run"
        );
        let _ = writeln!(
            out,
            "{:<w$} {:<18}{:>9}{:>11}{:>10}{:>10}{:>10}{:>10}{:>12}{:>12}  note",
            "scenario",
            "threading",
            "orders",
            "orders/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "p50/base",
            "p99/base"
        );
        for r in &fixed {
            let l = &r.report.latency_us;
            let base = (!r.report.baseline)
                .then(|| baseline_at(&rows, &r.rate))
                .flatten();
            let ratio = |ours: f64, theirs: f64| {
                if theirs > 0.0 {
                    format!("{:.2}×", ours / theirs)
                } else {
                    "-".to_owned()
                }
            };
            let note = match (r.fell_behind(), base.and_then(|b| b.fell_behind())) {
                (Some(n), _) => format!("{n}: latency is its queue"),
                (None, Some(_)) => {
                    "the baseline fell behind: its ratios flatter this row".to_owned()
                }
                (None, None) => String::new(),
            };
            let (r50, r99) = match base {
                Some(b) => (
                    ratio(l.p50, b.report.latency_us.p50),
                    ratio(l.p99, b.report.latency_us.p99),
                ),
                None => ("-".to_owned(), "-".to_owned()),
            };
            let _ = writeln!(
                out,
                "{:<w$} {:<18}{:>9}{:>11.0}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>12}{:>12}  {}",
                r.name,
                r.threading_label(),
                r.report.orders,
                r.report.throughput_per_s,
                l.p50,
                l.p99,
                l.p999,
                l.max,
                r50,
                r99,
                note
            );
        }
        out.push('\n');
    }

    let max: Vec<&Row> = rows
        .iter()
        .filter(|r| !matches!(r.rate, RateClass::Fixed(_)))
        .collect();
    if !max.is_empty() {
        let base_max = rows.iter().find(|r| r.report.baseline && r.rate.is_max());
        let _ = writeln!(
            out,
            "--rate max (and other schedules): throughput; the latency columns are QUEUEING, not \
             per-order latency (an order is stamped as it enters and waits behind the orders \
             filling the rings; the baseline, one order at a time, has no queue)"
        );
        let _ = writeln!(
            out,
            "{:<w$} {:<18}{:>9}{:>12}{:>14}{:>16}{:>16}  schedule",
            "scenario",
            "threading",
            "orders",
            "orders/s",
            "× base max",
            "queueing p50",
            "queueing p99",
        );
        for r in &max {
            let ratio = match base_max {
                Some(b)
                    if r.rate.is_max() && !r.report.baseline && b.report.throughput_per_s > 0.0 =>
                {
                    format!(
                        "{:.1}×",
                        r.report.throughput_per_s / b.report.throughput_per_s
                    )
                }
                _ => "-".to_owned(),
            };
            let schedule = match &r.rate {
                RateClass::Other(s) => s.clone(),
                _ => "rate max".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<w$} {:<18}{:>9}{:>12.0}{:>14}{:>16.1}{:>16.1}  {}",
                r.name,
                r.threading_label(),
                r.report.orders,
                r.report.throughput_per_s,
                ratio,
                r.report.latency_us.p50,
                r.report.latency_us.p99,
                schedule
            );
        }
        out.push('\n');
    }

    let _ = writeln!(
        out,
        "Targets (docs/results.md; threading auto unless a scenario names a mode; ratios within this run)"
    );
    let _ = writeln!(out, "{:<56}{:<51} verdict", "target", "measured");
    for t in &TARGETS {
        let (measured, verdict) = verdict(t, &rows).columns();
        // A long measurement still leaves a space before its verdict.
        let _ = writeln!(out, "{:<56}{:<51} {}", describe(t), measured, verdict);
    }
    Ok(out)
}

/// `bench summary`: prints the summary of a results directory.
pub fn run(args: SummaryArgs) -> anyhow::Result<ExitCode> {
    let text = summarize(&args.results_dir)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `850 µs`, `1.25 ms`.
fn fmt_us(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// `1.50 M/s`, `13.1 k/s`.
fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0}/s")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::fs;
    use std::path::Path;

    fn write(dir: &Path, name: &str, schedule: &str, tp: f64, p50: f64, p99: f64, baseline: bool) {
        fs::write(
            dir.join(format!("{name}.json")),
            format!(
                r#"{{"orders": 20000, "elapsed_s": 2.0, "throughput_per_s": {tp}, "schedule": "{schedule}",
                    "baseline": {baseline},
                    "latency_us": {{"p50": {p50}, "p90": {p50}, "p99": {p99}, "p999": {}, "p9999": {},
                                   "max": {}, "mean": {p50}}}}}"#,
                p99 * 2.0,
                p99 * 3.0,
                p99 * 4.0
            ),
        )
        .unwrap();
    }

    fn run_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        write(
            p,
            "baseline-10k",
            "rate 10000/s",
            10_000.0,
            80.0,
            120.0,
            true,
        );
        write(
            p,
            "tcp-10k-auto",
            "rate 10000/s",
            10_000.0,
            90.0,
            500.0,
            false,
        );
        write(
            p,
            "tcp-10k-dedicated",
            "rate 10000/s",
            10_000.0,
            120.0,
            300.0,
            false,
        );
        write(
            p,
            "tcp-100k-auto",
            "rate 100000/s",
            100_000.0,
            60.0,
            450.0,
            false,
        );
        write(p, "baseline-max", "rate max", 13_000.0, 70.0, 100.0, true);
        write(
            p,
            "tcp-max-auto",
            "rate max",
            1_600_000.0,
            900.0,
            2_000.0,
            false,
        );
        write(
            p,
            "tcp-max-dedicated",
            "rate max",
            2_000_000.0,
            800.0,
            1_900.0,
            false,
        );
        d
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{text}"))
    }

    #[test]
    fn fixed_rate_rows_have_latency_ratios_and_no_throughput_ratio() {
        let d = run_dir();
        let s = summarize(d.path()).unwrap();
        let row = line(&s, "tcp-10k-auto ");
        assert!(row.contains("1.12×"), "p50 90/80: {row}");
        assert!(row.contains("4.17×"), "p99 500/120: {row}");
        // 10 k/s ÷ 10 k/s would be "1.0×": not printed for fixed rates.
        assert!(!row.contains("1.0×"), "{row}");
        let fixed_table: &str = s.split("--rate max").next().unwrap();
        assert!(!fixed_table.contains("× base"), "{fixed_table}");
        // The baseline sits right below ours at its rate.
        let names: Vec<&str> = s
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        let i = names
            .iter()
            .position(|n| *n == "tcp-10k-dedicated")
            .unwrap();
        assert_eq!(names[i + 1], "baseline-10k");
    }

    #[test]
    fn max_rate_latency_is_labelled_queueing_and_has_the_throughput_ratio() {
        let d = run_dir();
        let s = summarize(d.path()).unwrap();
        assert!(s.contains("QUEUEING"));
        assert!(s.contains("queueing p50"));
        let row = line(&s, "tcp-max-auto ");
        assert!(row.contains("123.1×"), "1.6 M / 13 k: {row}");
    }

    #[test]
    fn targets_are_marked_met_not_met_or_no_data() {
        let d = run_dir();
        let s = summarize(d.path()).unwrap();
        let t = line(&s, "tcp-10k-auto p50");
        assert!(t.ends_with("met") && !t.contains("NOT"), "{t}");
        let t = line(&s, "tcp-10k-auto p99");
        assert!(t.ends_with("NOT MET"), "{t}");
        let t = line(&s, "tcp-100k-auto p99 ");
        assert!(t.ends_with("met") && !t.contains("NOT"), "{t}");
        let t = line(&s, "tcp-100k-auto p99.9");
        assert!(
            t.ends_with("met") && !t.contains("NOT"),
            "p99.9 900 µs: {t}"
        );
        let t = line(&s, "tcp-10k-dedicated");
        assert!(!t.contains("met"), "targets read auto rows only: {t}");
        let t = line(&s, "tcp-max-auto throughput ≥ 1.50 M/s");
        assert!(t.ends_with("met") && !t.contains("NOT"), "{t}");
        let t = line(&s, "tcp-max-auto throughput ≥ 0.9× tcp-max-dedicated");
        assert!(t.ends_with("NOT MET"), "1.6 / 2.0 = 0.8: {t}");
        let t = line(&s, "inline-100k-auto p50");
        assert!(t.contains("no data (inline-100k-auto missing"), "{t}");
        let t = line(&s, "inline-max-auto");
        assert!(t.contains("no data"), "{t}");
    }

    #[test]
    fn a_fixed_rate_run_that_fell_behind_is_marked_and_so_is_a_ratio_to_it() {
        let d = run_dir();
        write(
            d.path(),
            "baseline-10k",
            "rate 10000/s",
            6_000.0,
            80.0,
            120.0,
            true,
        );
        let s = summarize(d.path()).unwrap();
        let row = line(&s, "baseline-10k ");
        assert!(row.contains("fell behind: 6.0 k/s of 10.0 k/s"), "{row}");
        let row = line(&s, "tcp-10k-auto ");
        assert!(
            row.ends_with("the baseline fell behind: its ratios flatter this row"),
            "{row}"
        );
        let t = line(&s, "tcp-10k-auto p50");
        assert!(
            t.contains("baseline-max 70.0 µs (baseline-10k fell behind its rate: compared with"),
            "{t}"
        );
        // Nothing unqueued to compare with: no verdict rather than a flattering one.
        fs::remove_file(d.path().join("baseline-max.json")).unwrap();
        let s = summarize(d.path()).unwrap();
        let t = line(&s, "tcp-10k-auto p50");
        assert!(
            t.contains("no data (baseline-10k fell behind its rate, and no baseline ran at"),
            "{t}"
        );
    }

    /// A baseline that fell behind measured its queue (hundreds of ms): the targets compare
    /// with the baseline's unqueued latency at --rate max instead, which can fail them.
    #[test]
    fn a_baseline_that_fell_behind_is_replaced_by_its_unqueued_latency() {
        let d = run_dir();
        write(
            d.path(),
            "baseline-10k",
            "rate 10000/s",
            7_500.0,
            200_000.0,
            500_000.0,
            true,
        );
        write(
            d.path(),
            "baseline-max",
            "rate max",
            7_000.0,
            100.0,
            150.0,
            true,
        );
        let s = summarize(d.path()).unwrap();
        // tcp-10k-auto: p50 90 µs, p99 500 µs.
        let t = line(&s, "tcp-10k-auto p50");
        assert!(
            t.contains("= 0.90× baseline-max 100.0 µs (baseline-10k fell behind"),
            "{t}"
        );
        assert!(t.ends_with("met"), "{t}");
        let t = line(&s, "tcp-10k-auto p99");
        assert!(t.contains("= 3.33× baseline-max"), "{t}");
        assert!(t.ends_with("NOT MET"), "{t}");
    }

    #[test]
    fn rate_classes() {
        assert_eq!(RateClass::of(Some("rate max")), RateClass::Max);
        assert_eq!(RateClass::of(None), RateClass::Max);
        assert_eq!(
            RateClass::of(Some("rate 10000/s")),
            RateClass::Fixed(10_000)
        );
        assert_eq!(
            RateClass::of(Some("pace recorded:10")),
            RateClass::Other("pace recorded:10".into())
        );
        assert!(RateClass::Fixed(1) < RateClass::Fixed(2));
        assert!(RateClass::Fixed(u64::MAX) < RateClass::Max);
    }
}
