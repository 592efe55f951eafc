//! `engine replay --threading shared --idle spin --pin N` keeps the engine's other threads off
//! core N (its own test binary: `threading_confine.rs` changes its own process's affinity,
//! which children would inherit).
#![allow(clippy::unwrap_used)]

use engine::threading::affinity_mask_ids;

mod common;

/// `engine replay --threading shared --idle spin --pin N`: while it runs, its spinning thread
/// is alone on core N and every other thread of the process is on the other cores.
#[test]
fn a_pinned_spinning_engine_keeps_its_other_threads_off_the_spinners_core() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mask = affinity_mask_ids();
    if mask.len() < 2 {
        eprintln!("skipped: one core in the affinity mask, nowhere to move the others");
        return;
    }
    let core = *mask.iter().max().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    common::write_orders(&file, &common::gen_orders(3_000, 0, 0));
    let mut child = common::replay_cmd_in(
        "shared",
        &file,
        &dir.path().join("journal"),
        &dir.path().join("r.json"),
    )
    .args(["--risk", "inline", "--idle", "spin", "--rate", "1000"])
    .args(["--pin", &core.to_string()])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id();
    // Each thread's allowed CPUs, by name, once the spinning thread is up and has moved the rest.
    let allowed = |pid: u32| -> Vec<(String, String)> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
        {
            let Ok(e) = e else { continue };
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            let get = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|x| x.trim().to_owned())
                    .unwrap_or_default()
            };
            v.push((get("Name:"), get("Cpus_allowed_list:")));
        }
        v
    };
    let want = core.to_string();
    let t = Instant::now();
    let threads = loop {
        let v = allowed(pid);
        let spinner_alone = v.iter().filter(|(_, c)| *c == want).count() == 1;
        // The main thread and the spinning one at least (the snapshot thread, …).
        if spinner_alone && v.len() >= 2 && v.iter().all(|(_, c)| !c.is_empty()) {
            break v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the other threads were not moved off core {core}: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "on core {core} (the process's other threads kept off it)"
        )),
        "{err}"
    );
    let on_core: Vec<&(String, String)> = threads.iter().filter(|(_, c)| *c == want).collect();
    assert_eq!(on_core.len(), 1, "{threads:?}");
    assert_eq!(on_core[0].0, "engine", "the shared thread: {threads:?}");
    for (name, cpus) in &threads {
        if name != "engine" || cpus != &want {
            assert!(
                !cpus
                    .split(',')
                    .any(|r| r == want || r.ends_with(&format!("-{want}"))),
                "{name} may still run on core {core}: {cpus}"
            );
        }
    }
}
