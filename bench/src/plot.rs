//! `bench plot RESULTS_DIR --out DIR`: turns a results directory into pictures.
//!
//! Input, one scenario per file stem:
//! - `<scenario>.json`: a replay report. Keys read: `orders`, `accepted`, `rejected`,
//!   `elapsed_s`, `throughput_per_s`, `latency_us` {`p50`, `p90`, `p99`, `p999`, `p9999`, `max`,
//!   `mean`}, and the optional `baseline` (`true` for the seed-design baseline), `schedule`
//!   (`rate max`, `rate 10000/s`; absent counts as `rate max`) and `threading` (`{"mode": …}`).
//!   Other keys (`journal`, …) are ignored. A JSON file without `throughput_per_s` is not a replay report and
//!   is skipped with a note on stderr; a file that is not JSON at all is an error.
//! - `<scenario>.hdr`: the latency histogram in HdrHistogram's own serialization (V2, DEFLATE
//!   compressed, values in ns; `engine::latency::write_hdr`, written beside every `--hgrm`),
//!   read back with the `hdrhistogram` crate's `Deserializer` ([`parse_hdr`]).
//! - `<scenario>.hgrm`: HdrHistogram's standard percentile-distribution text (columns `Value`,
//!   `Percentile`, `TotalCount`, `1/(1-Percentile)`; `#[Mean …]`, `#[Max …]` footer lines), with
//!   values in microseconds. `engine::latency::write_hgrm` writes it from a histogram. Parsed
//!   only for a scenario without a `.hdr` (results written before the `.hdr` existed).
//!
//! Output, in `--out` (default `RESULTS_DIR/plots`), each as PNG and SVG:
//! - `latency.{png,svg}`: one percentile curve per scenario on HdrHistogram's usual axis:
//!   x = 1/(1-p) on a log scale from 50 % to 99.999 %, y = latency in µs (log scale). The curve
//!   comes from the `.hdr` (or `.hgrm`) when there is one, else from the report's five percentiles (drawn
//!   with markers, since they are only five points). Baselines are drawn in red/orange. The
//!   threading modes of one scenario (`tcp-10k-auto`, `tcp-10k-dedicated`) share a colour, side
//!   by side: `dedicated` dashed, the others solid. A `--rate max` curve is labelled
//!   `[queueing]`: an order is stamped when it enters the pipeline and then waits behind the
//!   orders filling the rings, so its latency is mostly that wait. The legend has a panel of its
//!   own, right of the chart, so that it never covers a curve.
//! - `throughput.{png,svg}`: one horizontal bar per scenario (orders/s), grouped by rate (fixed
//!   rates, then `--rate max`), each baseline directly below the scenarios it is compared with.
//!   Only `--rate max` bars carry the ratio ours / baseline: at a fixed rate every scenario that
//!   keeps up runs at that rate, so such bars say `fixed rate` instead.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (crate `dejavu`), so plots render the
//! same on a fresh machine without system fonts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use anyhow::Context as _;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Deserialize;

/// Width of every picture, in pixels.
const PLOT_WIDTH_PX: u32 = 1280;
/// Width of the latency picture's legend panel (right of the chart), in pixels.
const LEGEND_WIDTH_PX: u32 = 520;
/// Height of one legend row, in pixels.
const LEGEND_ROW_PX: i32 = 24;
/// Height of the latency picture, in pixels.
const LATENCY_HEIGHT_PX: u32 = 760;
/// Height of the throughput picture without bars (title, axis, margins), in pixels.
const THROUGHPUT_BASE_HEIGHT_PX: u32 = 160;
/// Height added per bar, in pixels.
const THROUGHPUT_BAR_HEIGHT_PX: u32 = 44;
/// Right end of the percentile axis, in nines: 5 nines = 99.999 %.
const PERCENTILE_AXIS_NINES_MAX: f64 = 5.0;
/// Left end of the percentile axis, in nines: log10(1 / (1 - 0.5)), the median.
const PERCENTILE_AXIS_NINES_MIN: f64 = std::f64::consts::LOG10_2;
const _: () = assert!(PERCENTILE_AXIS_NINES_MIN < PERCENTILE_AXIS_NINES_MAX);
/// Smallest latency drawn on the log axis, in µs (a zero would be minus infinity).
const LATENCY_FLOOR_US: f64 = 0.01;
/// Font family the embedded DejaVu Sans is registered under (plotters' name for sans-serif).
const FONT_FAMILY: &str = "sans-serif";

/// Colours for our scenarios (Tableau 10 without red and orange).
const OURS_COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
];
/// Colours for baselines.
const BASELINE_COLOURS: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(140, 20, 30),
    RGBColor(250, 170, 110),
];

/// Arguments of `bench plot`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// Directory of results: replay reports `<scenario>.json` and latency histograms
    /// `<scenario>.hgrm` (HdrHistogram percentile distribution, values in µs), as written by
    /// `scripts/bench.sh`. The scenario name is the file stem.
    #[arg(value_name = "RESULTS_DIR")]
    pub results_dir: PathBuf,
    /// Directory to write latency.{png,svg} and throughput.{png,svg} into (created if absent)
    /// [default: RESULTS_DIR/plots].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Why a results directory could not be plotted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// A file or directory could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A `.json` file is not valid JSON, or a replay report has a key of the wrong type.
    #[error("{path}: not a readable replay report")]
    Json {
        /// The report.
        path: PathBuf,
        /// What serde_json found, with line and column.
        source: serde_json::Error,
    },
    /// A replay report holds a value outside its domain.
    #[error("{path}: key `{key}` is {value}, expected a finite number >= 0")]
    Value {
        /// The report.
        path: PathBuf,
        /// The key, dotted (`latency_us.p99`).
        key: &'static str,
        /// The value found.
        value: f64,
    },
    /// A `.hgrm` line is not part of a percentile distribution.
    #[error("{path}:{line}: {reason}")]
    Hgrm {
        /// The histogram file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was expected.
        reason: String,
    },
    /// A `.hdr` file is not an HdrHistogram serialized histogram.
    #[error("{path}: not an HdrHistogram V2 histogram: {reason}")]
    Hdr {
        /// The histogram file.
        path: PathBuf,
        /// What the deserializer said.
        reason: String,
    },
    /// Neither reports nor histograms were found.
    #[error("{dir}: no replay reports (*.json) or latency histograms (*.hdr, *.hgrm) to plot")]
    Empty {
        /// The results directory.
        dir: PathBuf,
    },
    /// The embedded font could not be registered with plotters.
    #[error("the embedded DejaVu Sans font could not be loaded")]
    Font,
    /// plotters failed to draw or encode a picture.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The picture being written.
        path: PathBuf,
        /// plotters' error.
        message: String,
    },
}

/// Latency percentiles of a replay report, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct LatencyUs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Largest latency seen.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The parts of a replay report that the plots use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Report {
    /// Orders replayed.
    pub orders: u64,
    /// Orders accepted, when the report says.
    #[serde(default)]
    pub accepted: Option<u64>,
    /// Orders rejected, when the report says.
    #[serde(default)]
    pub rejected: Option<u64>,
    /// Wall time of the replay, in seconds.
    pub elapsed_s: f64,
    /// Orders per second.
    pub throughput_per_s: f64,
    /// Latency percentiles.
    pub latency_us: LatencyUs,
    /// Whether this is the seed-design baseline.
    #[serde(default)]
    pub baseline: bool,
    /// The schedule (`rate max`, `rate 10000/s`, `pace recorded:10`), when the report says.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The engine's thread map (`{"mode": "shared", …}`), when the report has one.
    #[serde(default)]
    pub threading: Option<serde_json::Value>,
}

impl Report {
    /// How the orders were spaced (no `schedule`: `--rate max`, as in older reports).
    pub fn rate_class(&self) -> crate::summary::RateClass {
        crate::summary::RateClass::of(self.schedule.as_deref())
    }

    /// The threading mode the engine ran in, when the report says (`threading.mode`, or
    /// `threading` itself when it is a string).
    pub fn threading_mode(&self) -> Option<&str> {
        match self.threading.as_ref()? {
            serde_json::Value::String(s) => Some(s),
            v => v.get("mode")?.as_str(),
        }
    }
}

/// One row of a percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PercentilePoint {
    /// Latency, in the file's unit (µs).
    pub value: f64,
    /// Fraction of samples at or below `value`, in `[0, 1]`.
    pub percentile: f64,
    /// Samples at or below `value`.
    pub total_count: u64,
}

/// A parsed `.hgrm` file.
#[derive(Debug, Clone, PartialEq)]
pub struct PercentileDistribution {
    /// Rows, percentile non-decreasing.
    pub points: Vec<PercentilePoint>,
    /// The `#[Max = …]` footer value, when present.
    pub max: Option<f64>,
}

/// Everything known about one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// File stem.
    pub name: String,
    /// `<name>.json`, when present and a replay report.
    pub report: Option<Report>,
    /// `<name>.hgrm`, when present.
    pub distribution: Option<PercentileDistribution>,
}

impl Scenario {
    /// Whether the report marks this scenario as the baseline (or its name says so when there is
    /// no report).
    pub fn is_baseline(&self) -> bool {
        match &self.report {
            Some(r) => r.baseline,
            None => self.name.to_ascii_lowercase().contains("baseline"),
        }
    }
}

/// Pictures written by [`plot_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Every file written, PNG and SVG.
    pub files: Vec<PathBuf>,
}

/// `bench plot`: reads `args.results_dir`, writes the pictures, prints their paths.
pub fn run(args: PlotArgs) -> anyhow::Result<ExitCode> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.results_dir.join("plots"));
    // Every PlotError names the file (and line) it is about.
    let written = plot_dir(&args.results_dir, &out)?;
    let mut stdout = io::stdout().lock();
    for f in &written.files {
        writeln!(stdout, "wrote {}", f.display()).context("writing to stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads every scenario of `results_dir` and writes `latency.{png,svg}` (when any scenario has
/// latencies) and `throughput.{png,svg}` (when any has a report) into `out_dir`.
pub fn plot_dir(results_dir: &Path, out_dir: &Path) -> Result<Written, PlotError> {
    let scenarios = load_scenarios(results_dir)?;
    if scenarios.is_empty() {
        return Err(PlotError::Empty {
            dir: results_dir.to_path_buf(),
        });
    }
    register_embedded_font()?;
    fs::create_dir_all(out_dir).map_err(|source| PlotError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();

    let curves = latency_curves(&scenarios);
    if !curves.is_empty() {
        let size = (PLOT_WIDTH_PX + LEGEND_WIDTH_PX, LATENCY_HEIGHT_PX);
        let png = out_dir.join("latency.png");
        draw_png(&png, size, |root| {
            draw_latency(root, &curves).map_err(|e| e.to_string())
        })?;
        files.push(png);
        let svg = out_dir.join("latency.svg");
        draw_svg(&svg, size, |root| {
            draw_latency(root, &curves).map_err(|e| e.to_string())
        })?;
        files.push(svg);
    }

    let bars = throughput_bars(&scenarios);
    if !bars.is_empty() {
        let height = THROUGHPUT_BASE_HEIGHT_PX + THROUGHPUT_BAR_HEIGHT_PX * bars.len() as u32;
        let size = (PLOT_WIDTH_PX, height);
        let png = out_dir.join("throughput.png");
        draw_png(&png, size, |root| {
            draw_throughput(root, &bars).map_err(|e| e.to_string())
        })?;
        files.push(png);
        let svg = out_dir.join("throughput.svg");
        draw_svg(&svg, size, |root| {
            draw_throughput(root, &bars).map_err(|e| e.to_string())
        })?;
        files.push(svg);
    }
    Ok(Written { files })
}

/// Reads `<scenario>.json` and `<scenario>.hgrm` files of `dir`, sorted by scenario name.
pub fn load_scenarios(dir: &Path) -> Result<Vec<Scenario>, PlotError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PlotError::Io { path, source }
    };
    let mut by_name: BTreeMap<String, Scenario> = BTreeMap::new();
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        paths.push(entry.map_err(io_err(dir))?.path());
    }
    paths.sort();
    for path in paths {
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if !path.is_file() {
            continue;
        }
        match ext {
            "json" => {
                let text = fs::read_to_string(&path).map_err(io_err(&path))?;
                match parse_report(&path, &text)? {
                    Some(report) => {
                        scenario_entry(&mut by_name, stem).report = Some(report);
                    }
                    None => tracing::info!(
                        "skipping {}: not a replay report (no `throughput_per_s`)",
                        path.display()
                    ),
                }
            }
            "hdr" => {
                let bytes = fs::read(&path).map_err(io_err(&path))?;
                let dist = parse_hdr(&path, &bytes)?;
                scenario_entry(&mut by_name, stem).distribution = Some(dist);
            }
            // The text is read back only for a scenario without its `.hdr` (results written
            // before the engine wrote both).
            "hgrm" if path.with_extension("hdr").is_file() => {}
            "hgrm" => {
                let text = fs::read_to_string(&path).map_err(io_err(&path))?;
                let dist = parse_hgrm(&path, &text)?;
                scenario_entry(&mut by_name, stem).distribution = Some(dist);
            }
            _ => {}
        }
    }
    Ok(by_name.into_values().collect())
}

fn scenario_entry<'a>(map: &'a mut BTreeMap<String, Scenario>, name: &str) -> &'a mut Scenario {
    map.entry(name.to_owned()).or_insert_with(|| Scenario {
        name: name.to_owned(),
        report: None,
        distribution: None,
    })
}

/// Parses a replay report. `Ok(None)` when the JSON is valid but not a replay report (no
/// `throughput_per_s` key at the top level).
pub fn parse_report(path: &Path, text: &str) -> Result<Option<Report>, PlotError> {
    let json_err = |source| PlotError::Json {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(json_err)?;
    if value.get("throughput_per_s").is_none() {
        return Ok(None);
    }
    let report: Report = serde_json::from_value(value).map_err(json_err)?;
    let l = &report.latency_us;
    let checks: [(&'static str, f64); 9] = [
        ("elapsed_s", report.elapsed_s),
        ("throughput_per_s", report.throughput_per_s),
        ("latency_us.p50", l.p50),
        ("latency_us.p90", l.p90),
        ("latency_us.p99", l.p99),
        ("latency_us.p999", l.p999),
        ("latency_us.p9999", l.p9999),
        ("latency_us.max", l.max),
        ("latency_us.mean", l.mean),
    ];
    for (key, value) in checks {
        if !value.is_finite() || value < 0.0 {
            return Err(PlotError::Value {
                path: path.to_path_buf(),
                key,
                value,
            });
        }
    }
    Ok(Some(report))
}

/// Reads a histogram in HdrHistogram's serialized form (`engine::latency::write_hdr`: V2,
/// compressed or not; values in ns) and gives its percentile distribution in µs, with the same
/// iteration (5 ticks per half distance) as the `.hgrm` text.
pub fn parse_hdr(path: &Path, bytes: &[u8]) -> Result<PercentileDistribution, PlotError> {
    let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| PlotError::Hdr {
            path: path.to_path_buf(),
            reason: format!("{e:?}"),
        })?;
    const SCALE: f64 = 1e3; // ns → µs
    let mut points = Vec::new();
    let mut total: u64 = 0;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total = total.saturating_add(v.count_since_last_iteration());
            points.push(PercentilePoint {
                value: v.value_iterated_to() as f64 / SCALE,
                percentile: v.quantile_iterated_to(),
                total_count: total,
            });
        }
    }
    Ok(PercentileDistribution {
        points,
        max: (!h.is_empty()).then(|| h.max() as f64 / SCALE),
    })
}

/// Parses HdrHistogram's percentile-distribution text.
///
/// Accepts the standard four columns (`Value Percentile TotalCount 1/(1-Percentile)`, the last
/// omitted or `inf`/`∞` on the 100 % row) and the five-column variant of the Rust crate's CLI
/// example (`Value QuantileValue QuantileIteration TotalCount 1/(1-Quantile)`), told apart by
/// the header line. Blank lines and `#` lines are skipped; `#[Max = x, …]` gives the maximum.
pub fn parse_hgrm(path: &Path, text: &str) -> Result<PercentileDistribution, PlotError> {
    let err = |line: usize, reason: String| PlotError::Hgrm {
        path: path.to_path_buf(),
        line,
        reason,
    };
    // Column indices of (percentile, total count); the value is always column 0.
    let mut columns = (1usize, 2usize);
    let mut points: Vec<PercentilePoint> = Vec::new();
    let mut max = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("#[Max") {
            let number = rest
                .trim_start()
                .strip_prefix('=')
                .and_then(|r| r.split(',').next())
                .map(str::trim)
                .and_then(|n| n.parse::<f64>().ok())
                .ok_or_else(|| err(line_no, "expected `#[Max = <number>, ...]`".into()))?;
            max = Some(number);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields[0] == "Value" {
            let find = |names: &[&str]| fields.iter().position(|f| names.contains(f));
            match (
                find(&["Percentile", "QuantileIteration"]),
                find(&["TotalCount"]),
            ) {
                (Some(p), Some(c)) => columns = (p, c),
                _ => {
                    return Err(err(
                        line_no,
                        "header has no `Percentile` and `TotalCount` columns".into(),
                    ))
                }
            }
            continue;
        }
        let (p_col, c_col) = columns;
        if fields.len() <= p_col.max(c_col) {
            return Err(err(
                line_no,
                format!(
                    "expected at least {} columns (Value, Percentile, TotalCount), got {}",
                    p_col.max(c_col) + 1,
                    fields.len()
                ),
            ));
        }
        let value: f64 = fields[0]
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                err(
                    line_no,
                    format!("Value {:?} is not a number >= 0", fields[0]),
                )
            })?;
        let percentile: f64 = fields[p_col]
            .parse()
            .ok()
            .filter(|p| (0.0..=1.0).contains(p))
            .ok_or_else(|| {
                err(
                    line_no,
                    format!("Percentile {:?} is not a fraction in [0, 1]", fields[p_col]),
                )
            })?;
        let total_count: u64 = fields[c_col].parse().map_err(|_| {
            err(
                line_no,
                format!("TotalCount {:?} is not a whole number", fields[c_col]),
            )
        })?;
        if let Some(prev) = points.last() {
            if percentile < prev.percentile || total_count < prev.total_count {
                return Err(err(
                    line_no,
                    "Percentile and TotalCount must not decrease".into(),
                ));
            }
        }
        points.push(PercentilePoint {
            value,
            percentile,
            total_count,
        });
    }
    if points.is_empty() {
        return Err(err(
            text.lines().count().max(1),
            "no percentile rows".into(),
        ));
    }
    Ok(PercentileDistribution { points, max })
}

// ---- what is drawn -------------------------------------------------------------------------

/// One latency curve: points in (nines, µs) space.
#[derive(Debug, Clone)]
struct Curve {
    label: String,
    baseline: bool,
    /// Scenario name without its threading mode: curves of one group share a colour.
    group: String,
    /// Drawn dashed (`dedicated`).
    dashed: bool,
    /// From the report's five percentiles rather than a full distribution.
    sparse: bool,
    points: Vec<(f64, f64)>,
}

/// `p` as nines: log10(1 / (1 - p)); 0.5 → 0.301, 0.99 → 2, 0.99999 → 5.
fn nines(p: f64) -> f64 {
    -(1.0 - p).log10()
}

fn latency_curves(scenarios: &[Scenario]) -> Vec<Curve> {
    let mut curves = Vec::new();
    for s in scenarios {
        let (points, sparse) = match (&s.distribution, &s.report) {
            (Some(d), _) => (
                d.points
                    .iter()
                    .filter(|p| p.percentile >= 0.5 && p.percentile < 1.0)
                    .map(|p| (nines(p.percentile), p.value))
                    .filter(|(x, _)| *x <= PERCENTILE_AXIS_NINES_MAX + 1e-9)
                    .collect::<Vec<_>>(),
                false,
            ),
            (None, Some(r)) => {
                let l = &r.latency_us;
                (
                    [
                        (0.5, l.p50),
                        (0.9, l.p90),
                        (0.99, l.p99),
                        (0.999, l.p999),
                        (0.9999, l.p9999),
                    ]
                    .iter()
                    .map(|&(p, v)| (nines(p), v))
                    .collect(),
                    true,
                )
            }
            (None, None) => continue,
        };
        if points.is_empty() {
            continue;
        }
        let max = s
            .report
            .as_ref()
            .map(|r| r.latency_us.max)
            .or_else(|| s.distribution.as_ref().and_then(|d| d.max))
            .or_else(|| {
                s.distribution
                    .as_ref()
                    .and_then(|d| d.points.last())
                    .map(|p| p.value)
            });
        let p99 = s.report.as_ref().map(|r| r.latency_us.p99).or_else(|| {
            s.distribution.as_ref().and_then(|d| {
                d.points
                    .iter()
                    .find(|p| p.percentile >= 0.99)
                    .map(|p| p.value)
            })
        });
        let mut label = s.name.clone();
        if s.is_baseline() && !s.name.to_ascii_lowercase().contains("baseline") {
            label.push_str(" [baseline]");
        }
        if s.report.as_ref().is_some_and(|r| r.rate_class().is_max()) {
            label.push_str(" [queueing]");
        }
        let (group, mode) = split_threading(&s.name);
        let mut facts = Vec::new();
        if let Some(p99) = p99 {
            facts.push(format!("p99 {}", fmt_us(p99)));
        }
        if let Some(max) = max {
            facts.push(format!("max {}", fmt_us(max)));
        }
        if sparse {
            facts.push("5 points".to_owned());
        }
        if !facts.is_empty() {
            let _ = write!(label, " ({})", facts.join(", "));
        }
        curves.push(Curve {
            label,
            baseline: s.is_baseline(),
            group: group.to_owned(),
            dashed: mode == Some("dedicated"),
            sparse,
            points,
        });
    }
    curves
}

/// `tcp-10k-dedicated` → (`tcp-10k`, Some(`dedicated`)); a name without a mode is its own group.
fn split_threading(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('-') {
        Some((group, mode)) if ["auto", "dedicated", "split", "shared"].contains(&mode) => {
            (group, Some(mode))
        }
        _ => (name, None),
    }
}

/// One throughput bar.
#[derive(Debug, Clone)]
struct Bar {
    name: String,
    baseline: bool,
    /// At a fixed rate (no ratio: it runs at that rate if it keeps up).
    fixed_rate: bool,
    per_s: f64,
    /// Ours / baseline, when there is a baseline to compare with.
    ratio: Option<(f64, String)>,
}

/// Scenario name with the word `baseline` removed: the key that pairs a baseline with ours.
fn pairing_key(name: &str) -> String {
    name.split(['-', '_', '.'])
        .filter(|t| !t.eq_ignore_ascii_case("baseline") && !t.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Bars in drawing order (top to bottom), by rate class (fixed rates from the lowest, then
/// `--rate max`, then other schedules): for each pairing key, our scenarios then the baselines
/// with that key; then the class's baselines paired with none of ours. A `--rate max` bar is
/// compared with its paired baseline, else with the only `--rate max` baseline; a fixed-rate
/// bar with none.
fn throughput_bars(scenarios: &[Scenario]) -> Vec<Bar> {
    let with_report: Vec<(&Scenario, &Report)> = scenarios
        .iter()
        .filter_map(|s| s.report.as_ref().map(|r| (s, r)))
        .collect();
    let baselines: Vec<(&Scenario, &Report)> = with_report
        .iter()
        .copied()
        .filter(|(s, _)| s.is_baseline())
        .collect();
    let max_baselines: Vec<(&Scenario, &Report)> = baselines
        .iter()
        .copied()
        .filter(|(_, r)| r.rate_class().is_max())
        .collect();
    let only_max_baseline = (max_baselines.len() == 1).then(|| max_baselines[0]);
    let mut classes: Vec<crate::summary::RateClass> =
        with_report.iter().map(|(_, r)| r.rate_class()).collect();
    classes.sort();
    classes.dedup();

    let bar = |s: &Scenario, r: &Report, ratio| Bar {
        name: s.name.clone(),
        baseline: s.is_baseline(),
        fixed_rate: matches!(r.rate_class(), crate::summary::RateClass::Fixed(_)),
        per_s: r.throughput_per_s,
        ratio,
    };
    let mut bars = Vec::new();
    let mut placed = vec![false; baselines.len()];
    for class in classes {
        let ours: Vec<(&Scenario, &Report)> = with_report
            .iter()
            .copied()
            .filter(|(s, r)| !s.is_baseline() && r.rate_class() == class)
            .collect();
        let mut keys: Vec<String> = Vec::new();
        for (o, _) in &ours {
            let k = pairing_key(&o.name);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        for key in keys {
            let paired: Vec<usize> = (0..baselines.len())
                .filter(|&i| {
                    !placed[i]
                        && baselines[i].1.rate_class() == class
                        && pairing_key(&baselines[i].0.name) == key
                })
                .collect();
            let reference = if class.is_max() {
                paired.first().map(|&i| baselines[i]).or(only_max_baseline)
            } else {
                None
            };
            for (o, r) in ours.iter().filter(|(o, _)| pairing_key(&o.name) == key) {
                let ratio = reference
                    .filter(|(_, br)| br.throughput_per_s > 0.0)
                    .map(|(b, br)| (r.throughput_per_s / br.throughput_per_s, b.name.clone()));
                bars.push(bar(o, r, ratio));
            }
            for i in paired {
                let (b, r) = baselines[i];
                bars.push(bar(b, r, None));
                placed[i] = true;
            }
        }
        for (i, (b, r)) in baselines.iter().enumerate() {
            if !placed[i] && r.rate_class() == class {
                bars.push(bar(b, r, None));
                placed[i] = true;
            }
        }
    }
    bars
}

// ---- formatting ----------------------------------------------------------------------------

/// `0.5 µs`, `12.3 µs`, `850 µs`, `1.25 ms`, `100 ms`, `1.5 s`.
fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{} s", trim_float(us / 1_000_000.0))
    } else if us >= 1_000.0 {
        format!("{} ms", trim_float(us / 1_000.0))
    } else {
        format!("{} µs", trim_float(us))
    }
}

/// Three significant digits at most, trailing zeros dropped.
fn trim_float(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else if v >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// `950/s`, `12.5 k/s`, `1.2 M/s`.
fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{} M/s", trim_float(per_s / 1e6))
    } else if per_s >= 1e3 {
        format!("{} k/s", trim_float(per_s / 1e3))
    } else {
        format!("{}/s", trim_float(per_s))
    }
}

/// Axis label of a point in nines: 0.301 → `50%`, 3 → `99.9%`, 5 → `99.999%`.
fn fmt_nines(x: f64) -> String {
    let pct = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.round() as i64 - 2).max(0) as usize;
    format!("{pct:.decimals$}%")
}

// ---- drawing -------------------------------------------------------------------------------

fn register_embedded_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
            && plotters::style::register_font(FONT_FAMILY, FontStyle::Bold, dejavu::sans::bold())
                .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// An axis whose grid lines and labels sit exactly at the given values, linear or log10
/// (plotters' `with_key_points` cannot be combined with a label formatter on `f64` axes).
#[derive(Debug, Clone)]
struct KeyedAxis {
    range: std::ops::Range<f64>,
    keys: Vec<f64>,
    log: bool,
}

impl KeyedAxis {
    /// A log10 axis over `lo..hi` (both > 0) with keys at 1, 2 and 5 times each power of ten.
    fn log_1_2_5(lo: f64, hi: f64) -> Self {
        let mut keys = Vec::new();
        for decade in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
            for m in [1.0, 2.0, 5.0] {
                let k = m * 10f64.powi(decade);
                if (lo..=hi).contains(&k) {
                    keys.push(k);
                }
            }
        }
        KeyedAxis {
            range: lo..hi,
            keys,
            log: true,
        }
    }

    fn position(&self, v: f64) -> f64 {
        if self.log {
            v.max(f64::MIN_POSITIVE).log10()
        } else {
            v
        }
    }
}

impl Ranged for KeyedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let start = self.position(self.range.start);
        let span = self.position(self.range.end) - start;
        let fraction = (self.position(*value) - start) / span;
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.keys.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

fn draw_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    draw(&root)
        .and_then(|()| root.present().map_err(|e| e.to_string()))
        .map_err(|message| PlotError::Draw {
            path: path.to_path_buf(),
            message,
        })
}

fn draw_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    draw(&root)
        .and_then(|()| root.present().map_err(|e| e.to_string()))
        .map_err(|message| PlotError::Draw {
            path: path.to_path_buf(),
            message,
        })
}

fn colour(index: usize, baseline: bool) -> RGBColor {
    if baseline {
        BASELINE_COLOURS[index % BASELINE_COLOURS.len()]
    } else {
        OURS_COLOURS[index % OURS_COLOURS.len()]
    }
}

/// Colours of the curves, in order: ours by group (the threading modes of one scenario share
/// one), baselines by their own index.
fn curve_colours(curves: &[Curve]) -> Vec<RGBColor> {
    let mut groups: Vec<&str> = Vec::new();
    let mut base_i = 0usize;
    curves
        .iter()
        .map(|c| {
            if c.baseline {
                base_i += 1;
                colour(base_i - 1, true)
            } else {
                let i = groups
                    .iter()
                    .position(|g| *g == c.group)
                    .unwrap_or_else(|| {
                        groups.push(&c.group);
                        groups.len() - 1
                    });
                colour(i, false)
            }
        })
        .collect()
}

fn draw_latency<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    curves: &[Curve],
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (width, _) = root.dim_in_pixel();
    let (plot_area, legend_area) = root.split_horizontally(width.saturating_sub(LEGEND_WIDTH_PX));
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for c in curves {
        for &(_, v) in &c.points {
            lo = lo.min(v.max(LATENCY_FLOOR_US));
            hi = hi.max(v.max(LATENCY_FLOOR_US));
        }
    }
    // Half a decade of room below and above, so curves never sit on the frame.
    let (y_lo, y_hi) = (lo / 1.5, hi * 1.5);
    let x_keys: Vec<f64> = std::iter::once(PERCENTILE_AXIS_NINES_MIN)
        .chain((1..=PERCENTILE_AXIS_NINES_MAX as u32).map(f64::from))
        .collect();
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(
            "Latency by percentile (HdrHistogram)",
            (FONT_FAMILY, 28).into_font().style(FontStyle::Bold),
        )
        .margin(16)
        .margin_right(48)
        .x_label_area_size(56)
        .y_label_area_size(90)
        .build_cartesian_2d(
            KeyedAxis {
                range: PERCENTILE_AXIS_NINES_MIN..PERCENTILE_AXIS_NINES_MAX,
                keys: x_keys,
                log: false,
            },
            KeyedAxis::log_1_2_5(y_lo, y_hi),
        )?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .x_label_formatter(&|x| fmt_nines(*x))
        .y_label_formatter(&|y| trim_float(*y))
        .label_style((FONT_FAMILY, 16))
        .axis_desc_style((FONT_FAMILY, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.15))
        .draw()?;
    let colours = curve_colours(curves);
    for (c, &colour) in curves.iter().zip(&colours) {
        let clamp = |&(x, y): &(f64, f64)| (x, y.max(LATENCY_FLOOR_US));
        let style = colour.stroke_width(if c.baseline { 3 } else { 2 });
        if c.dashed {
            chart.draw_series(DashedLineSeries::new(
                c.points.iter().map(clamp),
                10,
                6,
                style,
            ))?;
        } else {
            chart.draw_series(LineSeries::new(c.points.iter().map(clamp), style))?;
        }
        if c.sparse {
            chart.draw_series(
                c.points
                    .iter()
                    .map(clamp)
                    .map(|p| Circle::new(p, 4, colour.filled())),
            )?;
        }
    }
    draw_legend(&legend_area, curves, &colours)
}

/// The legend in its own panel: one row per curve, a line in its colour and style, its label.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    curves: &[Curve],
    colours: &[RGBColor],
) -> DrawResult<DB> {
    let text = |s: &str, x: i32, y: i32, size: u32| {
        Text::new(
            s.to_owned(),
            (x, y),
            (FONT_FAMILY, size).into_font().color(&BLACK).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Left,
                    plotters::style::text_anchor::VPos::Center,
                ),
            ),
        )
    };
    let top = 70;
    area.draw(&text("scenarios", 8, top, 18))?;
    area.draw(&text(
        "dashed: dedicated threads; [queueing]: --rate max",
        8,
        top + LEGEND_ROW_PX,
        14,
    ))?;
    for (i, (c, &colour)) in curves.iter().zip(colours).enumerate() {
        let y = top + LEGEND_ROW_PX * (i as i32 + 2) + LEGEND_ROW_PX / 2;
        let style = colour.stroke_width(3);
        if c.dashed {
            for x in [8, 22] {
                area.draw(&PathElement::new(vec![(x, y), (x + 8, y)], style))?;
            }
        } else {
            area.draw(&PathElement::new(vec![(8, y), (38, y)], style))?;
        }
        area.draw(&text(&c.label, 46, y, 15))?;
    }
    Ok(())
}

fn draw_throughput<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    bars: &[Bar],
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let n = bars.len();
    let top = bars.iter().map(|b| b.per_s).fold(0.0f64, f64::max);
    // Room on the right for the value and ratio labels.
    let x_hi = if top > 0.0 { top * 1.45 } else { 1.0 };
    // Row i (from the top) spans [n-1-i, n-i) on the y axis.
    let row_centres: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
    let names: Vec<String> = bars.iter().map(|b| b.name.clone()).collect();
    let name_of = move |y: &f64| -> String {
        let row_from_bottom = y.floor() as usize;
        names
            .get(n.saturating_sub(1 + row_from_bottom))
            .cloned()
            .unwrap_or_default()
    };
    let longest = bars.iter().map(|b| b.name.len()).max().unwrap_or(8) as u32;
    let mut chart = ChartBuilder::on(root)
        .caption(
            "Throughput per scenario (orders/s); baselines in red; ratios at --rate max only",
            (FONT_FAMILY, 28).into_font().style(FontStyle::Bold),
        )
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size((longest * 9 + 24).min(PLOT_WIDTH_PX / 2))
        .build_cartesian_2d(
            0.0..x_hi,
            KeyedAxis {
                range: 0.0..n as f64,
                keys: row_centres,
                log: false,
            },
        )?;
    chart
        .configure_mesh()
        .x_desc("orders per second")
        .x_label_formatter(&|x| fmt_rate(*x))
        .y_label_formatter(&name_of)
        .label_style((FONT_FAMILY, 16))
        .axis_desc_style((FONT_FAMILY, 18))
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.15))
        .draw()?;
    let (mut ours_i, mut base_i) = (0usize, 0usize);
    for (i, bar) in bars.iter().enumerate() {
        let index = if bar.baseline {
            &mut base_i
        } else {
            &mut ours_i
        };
        let colour = colour(*index, bar.baseline);
        *index += 1;
        let y0 = (n - 1 - i) as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y0 + 0.15), (bar.per_s, y0 + 0.85)],
            colour.filled(),
        )))?;
        let mut text = fmt_rate(bar.per_s);
        if let Some((ratio, against)) = &bar.ratio {
            let _ = write!(text, "  ({} × {against})", trim_float(*ratio));
        } else if bar.fixed_rate {
            text.push_str("  (fixed rate)");
        }
        chart.draw_series(std::iter::once(Text::new(
            text,
            (bar.per_s + x_hi * 0.01, y0 + 0.5),
            (FONT_FAMILY, 16).into_font().color(&BLACK).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Left,
                    plotters::style::text_anchor::VPos::Center,
                ),
            ),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn report_json(throughput: f64, p50: f64, baseline: bool) -> String {
        format!(
            r#"{{"orders": 100000, "accepted": 99000, "rejected": 1000, "elapsed_s": 0.5,
               "throughput_per_s": {throughput}, "baseline": {baseline},
               "latency_us": {{"p50": {p50}, "p90": {}, "p99": {}, "p999": {}, "p9999": {}, "max": {}, "mean": {}}},
               "journal": {{"records": 100000, "bytes": 12800000}}}}"#,
            p50 * 1.5,
            p50 * 3.0,
            p50 * 6.0,
            p50 * 10.0,
            p50 * 20.0,
            p50 * 1.2
        )
    }

    /// A histogram of ns around `median_ns`, with a tail.
    fn histogram(median_ns: u64, samples: u64) -> hdrhistogram::Histogram<u64> {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for i in 0..samples {
            // Deterministic spread: most near the median, 1 % up to 20× it.
            let v = if i % 100 == 0 {
                median_ns * (2 + i % 19)
            } else {
                median_ns / 2 + (i * 7919) % median_ns
            };
            h.record(v).unwrap();
        }
        h
    }

    fn write_results(dir: &Path) {
        for (name, median_ns, tp, baseline) in [
            ("rate-max-embedded", 20_000u64, 2_400_000.0, false),
            ("rate-max-tcp", 45_000, 900_000.0, false),
            ("baseline", 140_000, 8_100.0, true),
        ] {
            fs::write(
                dir.join(format!("{name}.json")),
                report_json(tp, median_ns as f64 / 1000.0, baseline),
            )
            .unwrap();
            let mut f = fs::File::create(dir.join(format!("{name}.hgrm"))).unwrap();
            engine::latency::write_hgrm(&histogram(median_ns, 200_000), &mut f).unwrap();
        }
        // A report with no histogram: its curve comes from the five percentiles.
        fs::write(
            dir.join("rate-100k.json"),
            report_json(100_000.0, 12.0, false),
        )
        .unwrap();
        // Not a replay report: skipped.
        fs::write(dir.join("suite.json"), r#"{"started": "now"}"#).unwrap();
    }

    #[test]
    fn writes_png_and_svg_naming_every_scenario() {
        let dir = tempfile::tempdir().unwrap();
        write_results(dir.path());
        let out = dir.path().join("plots");
        let written = plot_dir(dir.path(), &out).unwrap();
        let names = [
            "latency.png",
            "latency.svg",
            "throughput.png",
            "throughput.svg",
        ];
        assert_eq!(
            written.files,
            names.iter().map(|n| out.join(n)).collect::<Vec<_>>()
        );
        for f in &written.files {
            let len = fs::metadata(f).unwrap().len();
            assert!(len > 1000, "{} is {len} bytes", f.display());
        }
        for png in ["latency.png", "throughput.png"] {
            let bytes = fs::read(out.join(png)).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png} is a PNG");
        }
        let latency = fs::read_to_string(out.join("latency.svg")).unwrap();
        let throughput = fs::read_to_string(out.join("throughput.svg")).unwrap();
        for name in ["rate-max-embedded", "rate-max-tcp", "baseline", "rate-100k"] {
            assert!(latency.contains(name), "latency.svg names {name}");
            assert!(throughput.contains(name), "throughput.svg names {name}");
        }
        assert!(!latency.contains("suite"), "non-reports are skipped");
        let labels = svg_texts(&latency);
        for tick in ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
            assert!(
                labels.iter().any(|l| l == tick),
                "x tick {tick} in {labels:?}"
            );
        }
        // Ours beside the baseline, with the ratio: 2.4 M / 8.1 k = 296.
        assert!(throughput.contains("296 × baseline"), "{throughput}");
        assert!(throughput.contains("8.1 k/s"));
    }

    /// The text of every `<text>` element of an SVG.
    fn svg_texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn empty_dir_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = plot_dir(dir.path(), &dir.path().join("plots")).unwrap_err();
        assert!(matches!(err, PlotError::Empty { .. }));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }

    /// `bench plot` reads the `.hdr` (HdrHistogram's V2 serialization) and gives the same
    /// distribution as the histogram; beside a `.hgrm` that says otherwise, the `.hdr` wins.
    #[test]
    fn hdr_files_are_read_back_and_win_over_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let h = histogram(20_000, 10_000);
        let mut f = fs::File::create(dir.path().join("s.hdr")).unwrap();
        engine::latency::write_hdr(&h, &mut f).unwrap();
        drop(f);
        // A text distribution of another histogram under the same name.
        let mut f = fs::File::create(dir.path().join("s.hgrm")).unwrap();
        engine::latency::write_hgrm(&histogram(900_000, 100), &mut f).unwrap();
        drop(f);
        let scenarios = load_scenarios(dir.path()).unwrap();
        assert_eq!(scenarios.len(), 1);
        let d = scenarios[0].distribution.as_ref().unwrap();
        let last = d.points.last().unwrap();
        assert_eq!(last.percentile, 1.0);
        assert_eq!(last.total_count, 10_000);
        assert!((d.max.unwrap() - h.max() as f64 / 1000.0).abs() < 1e-9);
        let median = d.points.iter().find(|p| p.percentile >= 0.5).unwrap();
        let expected = h.value_at_quantile(0.5) as f64 / 1000.0;
        assert!((median.value - expected).abs() / expected < 0.01);
        // The same rows as the text of the same histogram.
        let mut text = Vec::new();
        engine::latency::write_hgrm(&h, &mut text).unwrap();
        let from_text = parse_hgrm(Path::new("x.hgrm"), &String::from_utf8(text).unwrap()).unwrap();
        assert_eq!(from_text.points.len(), d.points.len());
        // Garbage is named.
        fs::write(dir.path().join("s.hdr"), b"not a histogram").unwrap();
        let err = load_scenarios(dir.path()).unwrap_err();
        assert!(matches!(err, PlotError::Hdr { .. }), "{err}");
    }

    #[test]
    fn hgrm_round_trips_through_writer_and_parser() {
        let h = histogram(20_000, 10_000);
        let mut text = Vec::new();
        engine::latency::write_hgrm(&h, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let d = parse_hgrm(Path::new("x.hgrm"), &text).unwrap();
        let last = d.points.last().unwrap();
        assert_eq!(last.percentile, 1.0);
        assert_eq!(last.total_count, 10_000);
        let max_us = h.max() as f64 / 1000.0;
        assert!((d.max.unwrap() - max_us).abs() < 0.001);
        let median = d.points.iter().find(|p| p.percentile >= 0.5).unwrap();
        let expected = h.value_at_quantile(0.5) as f64 / 1000.0;
        assert!((median.value - expected).abs() / expected < 0.01);
    }

    #[test]
    fn hgrm_reads_java_output_and_the_rust_cli_variant() {
        let java = "       Value     Percentile TotalCount 1/(1-Percentile)\n\n\
                    \x20     10.000 0.000000000000          1           1.00\n\
                    \x20     20.000 0.500000000000          5           2.00\n\
                    \x20     90.000 1.000000000000         10\n\
                    #[Mean    =       30.000, StdDeviation   =       20.000]\n\
                    #[Max     =       90.000, Total count    =           10]\n";
        let d = parse_hgrm(Path::new("j.hgrm"), java).unwrap();
        assert_eq!(d.points.len(), 3);
        assert_eq!(d.max, Some(90.0));
        let rust = "       Value QuantileValue QuantileIteration TotalCount 1/(1-Quantile)\n\n\
                    \x20        10 0.10000 0.00000          1           1.00\n\
                    \x20        20 0.50000 0.50000          5           2.00\n\
                    \x20        90 1.00000 1.00000         10              ∞\n";
        let d = parse_hgrm(Path::new("r.hgrm"), rust).unwrap();
        assert_eq!(d.points[0].percentile, 0.0);
        assert_eq!(d.points[2].total_count, 10);
    }

    #[test]
    fn bad_hgrm_lines_are_named() {
        let cases = [
            ("  10.0 0.5\n", 1, "at least 3 columns"),
            ("  abc 0.5 1 2.0\n", 1, "Value"),
            ("  10.0 1.5 1 2.0\n", 1, "Percentile"),
            ("  10.0 0.5 x 2.0\n", 1, "TotalCount"),
            (
                "  10.0 0.5 5 2.0\n\n  11.0 0.4 6 2.0\n",
                3,
                "must not decrease",
            ),
            ("#[Max = oops]\n", 1, "#[Max"),
            ("\n", 1, "no percentile rows"),
        ];
        for (text, line, what) in cases {
            let err = parse_hgrm(Path::new("bad.hgrm"), text).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("bad.hgrm:{line}: ")), "{msg}");
            assert!(msg.contains(what), "{msg} should mention {what}");
        }
    }

    #[test]
    fn bad_reports_are_named() {
        let p = Path::new("r.json");
        let chain = |e: PlotError| format!("{:#}", anyhow::Error::from(e));
        let err = chain(parse_report(p, "{not json").unwrap_err());
        assert!(
            err.starts_with("r.json: not a readable replay report: "),
            "{err}"
        );
        assert!(err.contains("line 1 column"), "{err}");
        let err = chain(parse_report(p, r#"{"throughput_per_s": 1}"#).unwrap_err());
        assert!(err.contains("missing field"), "{err}");
        let neg = report_json(-5.0, 10.0, false);
        let err = parse_report(p, &neg).unwrap_err();
        assert!(
            err.to_string().contains("`throughput_per_s` is -5"),
            "{err}"
        );
        assert_eq!(parse_report(p, r#"{"other": 1}"#).unwrap(), None);
    }

    #[test]
    fn baselines_sit_below_the_scenarios_they_pair_with() {
        let s = |name: &str, tp: f64, baseline: bool| Scenario {
            name: name.into(),
            report: Some(
                parse_report(Path::new("x"), &report_json(tp, 10.0, baseline))
                    .unwrap()
                    .unwrap(),
            ),
            distribution: None,
        };
        let bars = throughput_bars(&[
            s("lobster-aapl", 1e6, false),
            s("lobster-aapl-baseline", 1e4, true),
            s("synthetic", 2e6, false),
            s("synthetic-baseline", 2e4, true),
        ]);
        let order: Vec<&str> = bars.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "lobster-aapl",
                "lobster-aapl-baseline",
                "synthetic",
                "synthetic-baseline"
            ]
        );
        assert_eq!(bars[0].ratio.as_ref().unwrap().0, 100.0);
        assert_eq!(bars[2].ratio.as_ref().unwrap().1, "synthetic-baseline");
        assert!(bars[1].ratio.is_none());
    }

    fn scheduled(name: &str, schedule: &str, tp: f64, p50: f64, baseline: bool) -> Scenario {
        let mut json: serde_json::Value =
            serde_json::from_str(&report_json(tp, p50, baseline)).unwrap();
        json["schedule"] = schedule.into();
        Scenario {
            name: name.into(),
            report: parse_report(Path::new("x"), &json.to_string()).unwrap(),
            distribution: None,
        }
    }

    #[test]
    fn only_max_rate_bars_carry_a_ratio_and_baselines_sit_below_their_rate() {
        let bars = throughput_bars(&[
            scheduled("baseline-10k", "rate 10000/s", 10_000.0, 80.0, true),
            scheduled("baseline-max", "rate max", 13_000.0, 80.0, true),
            scheduled("tcp-10k-auto", "rate 10000/s", 10_000.0, 90.0, false),
            scheduled("tcp-10k-dedicated", "rate 10000/s", 9_990.0, 95.0, false),
            scheduled("tcp-max-auto", "rate max", 1.3e6, 900.0, false),
        ]);
        let order: Vec<&str> = bars.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "tcp-10k-auto",
                "tcp-10k-dedicated",
                "baseline-10k",
                "tcp-max-auto",
                "baseline-max"
            ]
        );
        assert!(bars[0].ratio.is_none() && bars[0].fixed_rate);
        assert!(bars[1].ratio.is_none());
        let (ratio, against) = bars[3].ratio.clone().unwrap();
        assert_eq!(against, "baseline-max");
        assert_eq!(ratio, 100.0);
    }

    #[test]
    fn threading_modes_share_a_colour_dedicated_is_dashed_and_max_rate_is_queueing() {
        let s = [
            scheduled("tcp-10k-auto", "rate 10000/s", 10_000.0, 90.0, false),
            scheduled("tcp-10k-dedicated", "rate 10000/s", 10_000.0, 95.0, false),
            scheduled("tcp-max-auto", "rate max", 1.3e6, 900.0, false),
            scheduled("baseline-10k", "rate 10000/s", 10_000.0, 80.0, true),
        ];
        let curves = latency_curves(&s);
        let colours = curve_colours(&curves);
        assert_eq!(colours[0], colours[1], "auto and dedicated side by side");
        assert_ne!(colours[0], colours[2]);
        assert_eq!(colours[3], BASELINE_COLOURS[0]);
        assert!(!curves[0].dashed && curves[1].dashed);
        assert!(
            curves[2].label.contains("[queueing]"),
            "{}",
            curves[2].label
        );
        assert!(!curves[0].label.contains("queueing"));
    }

    #[test]
    fn the_legend_sits_right_of_the_chart_not_over_the_curves() {
        let dir = tempfile::tempdir().unwrap();
        write_results(dir.path());
        let out = dir.path().join("plots");
        plot_dir(dir.path(), &out).unwrap();
        let svg = fs::read_to_string(out.join("latency.svg")).unwrap();
        let label_x: Vec<f64> = svg
            .split("<text")
            .skip(1)
            .filter(|t| t.contains("rate-max-tcp [queueing] ("))
            .filter_map(|t| {
                let x = t.split("x=\"").nth(1)?.split('"').next()?;
                x.parse().ok()
            })
            .collect();
        assert!(!label_x.is_empty(), "the label is drawn");
        for x in label_x {
            assert!(x >= f64::from(PLOT_WIDTH_PX), "legend text at x = {x}");
        }
    }

    #[test]
    fn log_axis_keys_are_1_2_5_per_decade() {
        let axis = KeyedAxis::log_1_2_5(3.0, 700.0);
        assert_eq!(axis.keys, [5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]);
        assert_eq!(axis.map(&3.0, (0, 100)), 0);
        assert_eq!(axis.map(&700.0, (0, 100)), 100);
        // Equal ratios take equal room.
        let a = axis.map(&10.0, (0, 1000)) - axis.map(&5.0, (0, 1000));
        let b = axis.map(&200.0, (0, 1000)) - axis.map(&100.0, (0, 1000));
        assert!((a - b).abs() <= 1, "{a} vs {b}");
    }

    #[test]
    fn axis_labels() {
        assert_eq!(fmt_nines(PERCENTILE_AXIS_NINES_MIN), "50%");
        assert_eq!(fmt_nines(1.0), "90%");
        assert_eq!(fmt_nines(2.0), "99%");
        assert_eq!(fmt_nines(3.0), "99.9%");
        assert_eq!(fmt_nines(5.0), "99.999%");
        assert_eq!(fmt_us(850.0), "850 µs");
        assert_eq!(fmt_us(1250.0), "1.25 ms");
        assert_eq!(fmt_us(0.5), "0.5 µs");
        assert_eq!(fmt_rate(1_200_000.0), "1.2 M/s");
        assert_eq!(fmt_rate(8_100.0), "8.1 k/s");
    }
}
