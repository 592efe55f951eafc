//! `engine replay --hgrm FILE` also writes the histogram in HdrHistogram's own serialization
//! beside it (`FILE` with the extension `.hdr`, V2 compressed), and the real `bench plot` draws
//! from it (docs/engine.md, bench/src/plot.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn replay_writes_a_v2_histogram_beside_the_hgrm_and_bench_plot_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    std::fs::create_dir(&results).unwrap();
    let file = dir.path().join("orders.csv");
    let n = 2_000;
    write_orders(&file, &gen_orders(n, 0, 0));
    let hgrm = results.join("run.hgrm");
    let out = run_with_timeout(
        replay_cmd(&file, &dir.path().join("j"), &results.join("run.json"))
            .args(["--warmup", "0", "--hgrm"])
            .arg(&hgrm),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(results.join("run.hdr")).expect("run.hdr beside run.hgrm");
    let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .expect("HdrHistogram V2");
    assert_eq!(h.len(), n as u64, "one sample per order");
    // The text says the same total.
    let text = std::fs::read_to_string(&hgrm).unwrap();
    assert!(
        text.contains(&format!("Total count    = {:12}", h.len())),
        "{text}"
    );
    let plots = dir.path().join("plots");
    let out = run_with_timeout(
        Command::new(other_bin("bench"))
            .arg("plot")
            .arg(&results)
            .arg("--out")
            .arg(&plots),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(plots.join("latency.svg").is_file());
    // A corrupt .hdr is named, not silently replaced by the text.
    std::fs::write(results.join("run.hdr"), b"garbage").unwrap();
    let out = run_with_timeout(
        Command::new(other_bin("bench"))
            .arg("plot")
            .arg(&results)
            .arg("--out")
            .arg(&plots),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an HdrHistogram V2 histogram"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
