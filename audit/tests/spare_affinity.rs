//! The thread that prepares the next segment runs where [`audit::Writer::set_background_cpus`]
//! says, not on the appending thread's core. A new thread inherits its creator's affinity:
//! without the setting, an appender pinned alone on a core (the engine's spinning thread,
//! `--pin`) got the preparer on that same core, and every zero-fill of a segment took
//! milliseconds of its time slices (issue 12: p99 of 2–4 ms instead of 10–20 µs).
//! Its own test binary: it pins its threads.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

fn mask() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

fn pin_to(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(core).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

/// The `Cpus_allowed_list` of every `audit-spare` thread of this process right now.
fn spare_masks() -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").into_iter().flatten() {
        let Ok(e) = e else { continue };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        if status.lines().any(|l| l == "Name:\taudit-spare") {
            if let Some(m) = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            {
                v.push(m.trim().to_owned());
            }
        }
    }
    v
}

/// Appends to a journal from a thread pinned on `core` until the spare is started (half of
/// the first 64 MiB segment), then watches the spare thread while it zero-fills; returns the
/// masks it was seen with (the last one is the one it settled on).
fn spare_masks_seen(core: usize, background: Option<Vec<usize>>) -> Vec<String> {
    std::thread::spawn(move || {
        pin_to(core);
        let dir = tempfile::tempdir().unwrap();
        let opts = audit::WriterOptions {
            segment_size_bytes: 64 << 20,
            ..Default::default()
        };
        let (mut w, _) = audit::Writer::open(dir.path(), opts).unwrap();
        if let Some(cpus) = background {
            w.set_background_cpus(cpus);
        }
        let payload = vec![7u8; 60_000];
        let mut seen = Vec::new();
        for i in 0..2_000u64 {
            w.append(audit::KIND_DECISION, i + 1, &payload).unwrap();
            let now = spare_masks();
            if !now.is_empty() {
                seen.extend(now);
                break;
            }
        }
        assert!(!seen.is_empty(), "no audit-spare thread seen");
        // It sets its own mask first thing: watch it until it stops changing or ends.
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(200) {
            let now = spare_masks();
            if now.is_empty() {
                break;
            }
            if now.last() != seen.last() {
                seen.extend(now);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        drop(w);
        seen
    })
    .join()
    .unwrap()
}

#[test]
fn the_segment_preparer_runs_on_the_cpus_given_not_on_the_pinned_appenders() {
    let mask = mask();
    if mask.len() < 2 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prerequisite missing under CI=true: two CPUs in the affinity mask"
        );
        eprintln!("SKIP the_segment_preparer_runs_on_the_cpus_given: one CPU in the mask");
        return;
    }
    let core = *mask.iter().max().unwrap();
    let others: Vec<usize> = mask.iter().copied().filter(|&c| c != core).collect();
    let want: Vec<String> = others.iter().map(|c| c.to_string()).collect();

    // Without the setting the preparer inherits the pinned appender's one core: the defect.
    let inherited = spare_masks_seen(core, None);
    assert_eq!(
        inherited.last().unwrap(),
        &core.to_string(),
        "{inherited:?}"
    );

    // With it, the preparer moves to the other CPUs.
    let moved = spare_masks_seen(core, Some(others.clone()));
    let last = moved.last().unwrap();
    let cpus: Vec<usize> = last
        .split(',')
        .flat_map(|r| match r.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()).collect(),
            None => vec![r.parse::<usize>().unwrap()],
        })
        .collect();
    assert_eq!(
        cpus, others,
        "moved to {last}, wanted {want:?} (seen {moved:?})"
    );
    assert!(!cpus.contains(&core));
}
