//! `bench convert` through the real binary: lossless CSV ↔ binary, LOBSTER import, and clear
//! errors with a non-zero exit code.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use orders::files::{Format, LoadOptions, OrderFile};

fn bench(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&std::ffi::OsStr]) -> String {
    let out = bench(args);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fail(args: &[&std::ffi::OsStr]) -> String {
    let out = bench(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bench {args:?} must fail with exit code 1"
    );
    String::from_utf8(out.stderr).unwrap()
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
}

/// A missing prerequisite: fails under CI (`CI=true`, where ../shared is laid beside the
/// clone), else prints a SKIP line past the harness's output capture.
fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "prerequisite missing under CI=true: {why}"
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP LOBSTER conversion tests: {why}");
}

fn lobster_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lobster");
    if dir.is_dir() {
        Some(dir)
    } else {
        skip(&format!("LOBSTER data not found at {}", dir.display()));
        None
    }
}

#[test]
fn csv_to_binary_to_csv_is_byte_identical_for_generated_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for seed in ["1", "7"] {
        let csv = d.join(format!("gen{seed}.csv"));
        let bin = d.join(format!("gen{seed}.bin"));
        let back = d.join(format!("back{seed}.csv"));
        let direct = d.join(format!("direct{seed}.bin"));
        ok(args![
            "gen", "--orders", "5000", "--seed", seed, "--out", &csv
        ]);
        let out = ok(args!["convert", &csv, &bin]);
        assert!(
            out.contains("5000 orders") && out.contains("(binary)"),
            "{out}"
        );
        ok(args!["convert", &bin, &back]);
        assert_eq!(std::fs::read(&csv).unwrap(), std::fs::read(&back).unwrap());
        // `gen` straight to binary writes the same bytes as the conversion.
        ok(args![
            "gen", "--orders", "5000", "--seed", seed, "--out", &direct
        ]);
        assert_eq!(
            std::fs::read(&bin).unwrap(),
            std::fs::read(&direct).unwrap()
        );
        // And binary → binary, with an explicit --format and an odd extension.
        let odd = d.join(format!("odd{seed}.dat"));
        ok(args!["convert", &bin, &odd, "--format", "binary"]);
        assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(&odd).unwrap());
    }
}

#[test]
fn lobster_files_convert_with_symbol_and_accounts() {
    let Some(dir) = lobster_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = dir.join("AMZN_2012-06-21_34200000_57600000_message_1.csv.gz");
    let bin = tmp.path().join("amzn.bin");
    let out = ok(args!["convert", &src, &bin, "--lobster-accounts", "4"]);
    assert!(
        out.contains("(lobster, gzipped)") && out.contains("57515 orders"),
        "{out}"
    );
    let f = OrderFile::open(&bin, &LoadOptions::default()).unwrap();
    assert_eq!(f.format(), Format::Binary);
    assert_eq!(f.len(), 57_515);
    assert!(f
        .iter()
        .all(|o| o.symbol.as_str() == "AMZN" && (1..=4).contains(&o.account)));
    let direct = OrderFile::open(
        &src,
        &LoadOptions {
            lobster_accounts: 4,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert!(direct.iter().eq(f.iter()));

    // --symbol overrides the name; --input-format skips detection.
    let csv = tmp.path().join("x.csv");
    ok(args![
        "convert",
        &dir.join("AAPL_2012-06-21_34200000_57600000_message_10.csv.gz"),
        &csv,
        "--symbol",
        "aapl.x",
        "--input-format",
        "lobster"
    ]);
    let f = OrderFile::open(&csv, &LoadOptions::default()).unwrap();
    assert_eq!(f.len(), 999);
    assert_eq!(f.get(0).symbol.as_str(), "AAPL.X");
}

#[test]
fn bad_input_fails_with_location_and_exit_code_1() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let bad = d.join("bad.csv");
    std::fs::write(
        &bad,
        "order_id,account,symbol,side,qty,price\n1,1,AAPL,B,10,1\n2,1,AAPL,B,10,1.000001\n3,1,AAPL,B,10,2\n",
    )
    .unwrap();
    let out_path = d.join("out.bin");
    let err = fail(args!["convert", &bad, &out_path]);
    assert!(
        err.starts_with("bench: error: cannot convert")
            && err.contains("bad.csv: line 3, column 6 (price)")
            && err.contains("at most 4 decimal places"),
        "{err}"
    );
    assert!(!out_path.exists(), "nothing is written on failure");

    // --max-errors skips, counts, and says where each skipped line is.
    let out = bench(args!["convert", &bad, &out_path, "--max-errors", "1"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("2 orders, 1 bad lines skipped"), "{stdout}");
    assert!(
        stderr.contains(" WARN ")
            && stderr.contains("skipped ")
            && stderr.contains("bad.csv: line 3, column 6 (price)"),
        "{stderr}"
    );

    let err = fail(args!["convert", &bad, &d.join("out.txt")]);
    assert!(err.contains("--format csv|binary"), "{err}");

    let err = fail(args!["convert", &d.join("missing.csv"), &out_path]);
    assert!(err.contains("missing.csv: cannot open"), "{err}");

    let empty = d.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let err = fail(args!["convert", &empty, &d.join("e.csv")]);
    assert!(err.contains("empty.bin: file is empty"), "{err}");

    let err = fail(args![
        "convert",
        &bad,
        &out_path,
        "--symbol",
        "WAY_TOO_LONG"
    ]);
    assert!(err.contains("bad --symbol"), "{err}");

    // Usage errors are clap's (exit code 2).
    let out = bench(args!["convert", "--format", "xml", "a", "b"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_explains_every_flag() {
    for (sub, flags) in [
        (
            "convert",
            &[
                "--format",
                "--input-format",
                "--symbol",
                "--max-errors",
                "--lobster-accounts",
            ][..],
        ),
        (
            "gen",
            &[
                "--orders",
                "--accounts",
                "--symbols",
                "--seed",
                "--out",
                "--format",
                "--cancel-share",
                "--fill-share",
                "--breach-share",
            ][..],
        ),
    ] {
        let help = ok(args![sub, "--help"]);
        for flag in flags {
            assert!(help.contains(flag), "{sub} --help lacks {flag}");
        }
    }
}
