//! `--threading auto` as the real binary decides it: the mode in the report is the one
//! `threading::choose` gives for this process's affinity mask (the child inherits it) and the
//! run's workload: a replay at `--rate max` with `--risk inline` is split-bulk work, the same
//! with embedded risk is bulk, a paced replay is paced.
#![allow(clippy::unwrap_used)]

use engine::threading::{choose, cores_in_affinity_mask, ThreadingKind, Workload};

mod common;

#[test]
fn auto_decides_from_the_cores_and_the_workload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    common::write_orders(&file, &common::gen_orders(2_000, 0, 0));
    let cores = cores_in_affinity_mask();
    for (i, (risk, rate, workload)) in [
        ("inline", "max", Workload::BulkInline),
        ("embedded", "max", Workload::Bulk),
        ("inline", "20000", Workload::Paced),
    ]
    .into_iter()
    .enumerate()
    {
        let report = dir.path().join(format!("r{i}.json"));
        let out = common::replay_cmd(&file, &dir.path().join(format!("j{i}")), &report)
            .args(["--risk", risk, "--rate", rate])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = common::report(&report);
        let want = choose(ThreadingKind::Auto, cores, workload);
        assert_eq!(
            r["threading"]["mode"],
            want.as_str(),
            "--risk {risk} --rate {rate} on {cores} core(s): {}",
            r["threading"]
        );
        assert_eq!(r["threading"]["requested"], "auto");
        assert_eq!(r["orders"], 2_000);
        assert_eq!(r["journal"]["records"], 2_000, "one decision per order");
    }
}
