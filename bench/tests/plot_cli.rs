//! `bench plot` as a user runs it: the real binary on a results directory written the way the
//! suite writes it (reports as JSON, latencies as HdrHistogram percentile text).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use hdrhistogram::Histogram;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .output()
        .expect("the bench binary runs")
}

fn report(throughput: f64, p50_us: f64, baseline: bool) -> String {
    format!(
        r#"{{"orders": 50000, "accepted": 49000, "rejected": 1000, "elapsed_s": 1.0,
           "throughput_per_s": {throughput}, "baseline": {baseline},
           "latency_us": {{"p50": {p50_us}, "p90": {}, "p99": {}, "p999": {}, "p9999": {},
                          "max": {}, "mean": {p50_us}}},
           "journal": {{"records": 50000}}}}"#,
        p50_us * 2.0,
        p50_us * 4.0,
        p50_us * 8.0,
        p50_us * 16.0,
        p50_us * 32.0
    )
}

fn write_scenario(dir: &Path, name: &str, median_ns: u64, throughput: f64, baseline: bool) {
    fs::write(
        dir.join(format!("{name}.json")),
        report(throughput, median_ns as f64 / 1000.0, baseline),
    )
    .unwrap();
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    for i in 0..20_000u64 {
        h.record(median_ns / 2 + (i * 104_729) % median_ns).unwrap();
    }
    let mut f = fs::File::create(dir.join(format!("{name}.hgrm"))).unwrap();
    engine::latency::write_hgrm(&h, &mut f).unwrap();
}

#[test]
fn plot_writes_the_four_pictures_and_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    write_scenario(dir.path(), "synthetic-max", 15_000, 1_500_000.0, false);
    write_scenario(dir.path(), "synthetic-max-baseline", 150_000, 8_000.0, true);
    let out = dir.path().join("pictures");
    let o = bench(&[
        "plot",
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for name in [
        "latency.png",
        "latency.svg",
        "throughput.png",
        "throughput.svg",
    ] {
        let path = out.join(name);
        assert!(
            stdout.contains(&format!("wrote {}", path.display())),
            "{stdout}"
        );
        assert!(
            fs::metadata(&path).unwrap().len() > 1000,
            "{name} has content"
        );
    }
    let svg = fs::read_to_string(out.join("throughput.svg")).unwrap();
    assert!(svg.contains("synthetic-max-baseline"));
    assert!(
        svg.contains("188 × synthetic-max-baseline"),
        "ratio is printed"
    );
}

#[test]
fn plot_defaults_to_a_plots_dir_inside_the_results() {
    let dir = tempfile::tempdir().unwrap();
    write_scenario(dir.path(), "only", 10_000, 100_000.0, false);
    let o = bench(&["plot", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.path().join("plots/latency.png").is_file());
    assert!(dir.path().join("plots/throughput.svg").is_file());
}

#[test]
fn plot_errors_name_the_directory_or_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let o = bench(&["plot", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no replay reports"), "{err}");

    fs::write(
        dir.path().join("broken.hgrm"),
        "       Value     Percentile TotalCount 1/(1-Percentile)\n\n  12.5 0.5 oops 2.0\n",
    )
    .unwrap();
    let o = bench(&["plot", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broken.hgrm:3: TotalCount \"oops\""), "{err}");

    let o = bench(&["plot", dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing"));
}

#[test]
fn plot_help_explains_its_arguments() {
    let o = bench(&["plot", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for word in ["RESULTS_DIR", "--out", ".hgrm", ".json", "plots"] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }
}
