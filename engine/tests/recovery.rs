//! Restart from the journal's tail (issue 13 item 1): risk-state snapshots written while the
//! engine runs, covered by the chain; restart loads the newest and replays only the records
//! after it, in one pass that also finds the head, the newest decision and the orders to
//! re-send; an unusable snapshot falls back, loudly, to an older one or to the whole journal,
//! and the state is always exactly that of a full replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use engine::recovery::{recover, RecoverySpec, RiskSource};

const EVERY: u64 = 128;
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orders.csv")
}

fn limits() -> risk::Limits {
    risk::Limits::from_toml_str(engine::app::BUILT_IN_LIMITS_TOML, "built-in").unwrap()
}

/// The example flow (2,000 orders: news, cancels, fills, several rejection reasons) through
/// the engine with inline risk and a snapshot every 128 decisions, in small segments.
fn journal_with_snapshots(dir: &Path, file: &Path, every: u64) -> PathBuf {
    let journal = dir.join("journal");
    let out = run_with_timeout(
        replay_cmd(file, &journal, &dir.join("r.json"))
            .args(["--risk", "inline", "--segment-size-bytes", "65536"])
            .args(["--snapshot-every-records", &every.to_string()]),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    journal
}

/// The risk state a replay of every decision of the journal builds.
fn full_replay(journal: &Path) -> risk::Checker {
    let mut c = risk::Checker::new(limits());
    risk::replay_journal(&mut c, journal).unwrap();
    c
}

fn spec() -> RecoverySpec {
    RecoverySpec {
        limits: Some(limits()),
        redelivery_window: 0,
    }
}

fn opts() -> audit::WriterOptions {
    audit::WriterOptions {
        segment_size_bytes: 65536,
        ..audit::WriterOptions::default()
    }
}

fn copy_journal(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    to.to_path_buf()
}

fn snapshot_records(journal: &Path) -> Vec<(u64, audit::SnapshotRecord)> {
    audit::Reader::open(journal)
        .unwrap()
        .iter_from(1)
        .map(|r| r.unwrap())
        .filter(|r| r.kind == audit::KIND_SNAPSHOT)
        .map(|r| (r.seq, audit::SnapshotRecord::decode(&r.payload).unwrap()))
        .collect()
}

/// Snapshots are written every N decisions, named by records of the chain; older files are
/// pruned (two recorded ones kept); `audit verify` checks the files against their records.
/// Restart loads the newest and replays only the decisions after it, reading only the last
/// segments, and the state is byte for byte that of a full replay.
#[test]
fn restart_loads_the_newest_snapshot_and_replays_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_snapshots(dir.path(), &examples(), EVERY);
    let records = snapshot_records(&journal);
    assert_eq!(records.len(), 2_000 / EVERY as usize, "{records:?}");
    for (seq, r) in &records {
        assert!(r.covered_seq < *seq);
    }
    let files = audit::snapshot::list_snapshots(&journal).unwrap();
    assert_eq!(files.len(), 2, "older snapshots pruned: {files:?}");
    let newest = records.last().unwrap().1;
    assert_eq!(files[1].0, newest.covered_seq);
    let out = run_with_timeout(
        std::process::Command::new(other_bin("audit"))
            .arg("verify")
            .arg(&journal),
        RUN_LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "snapshots    {} records: 2 files match",
            records.len()
        )),
        "{text}"
    );

    let r = recover(&journal, opts(), &spec()).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(
        r.risk_source,
        RiskSource::Snapshot {
            path: files[1].1.clone(),
            covered_seq: newest.covered_seq
        }
    );
    // 2,000 decisions, a snapshot every 128: 80 after the newest one.
    assert_eq!(r.decisions_replayed, 2_000 % EVERY);
    let segments = std::fs::read_dir(&journal)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert!(
        r.recovery.segments_verified <= 2 && segments > 4,
        "read {} of {segments} segments",
        r.recovery.segments_verified
    );
    assert_eq!(r.last.unwrap().input_seq, 1_999);
    let full = full_replay(&journal);
    let rebuilt = r.checker.unwrap();
    assert_eq!(rebuilt.state_bytes(), full.state_bytes());
    assert_eq!(rebuilt.snapshot(), full.snapshot());
}

/// A clean stop writes a last snapshot of the head (when enough decisions were made since the
/// last one): a restart then replays nothing.
#[test]
fn a_clean_stop_snapshots_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_snapshots(dir.path(), &examples(), 1_000);
    let records = snapshot_records(&journal);
    // At 1,000 and the final one at 2,000 (the last decision, record 2,001 minus the one snapshot
    // record before it).
    assert_eq!(records.len(), 2, "{records:?}");
    let r = recover(&journal, opts(), &spec()).unwrap();
    assert_eq!(r.decisions_replayed, 0);
    assert_eq!(
        r.checker.unwrap().state_bytes(),
        full_replay(&journal).state_bytes()
    );
}

/// An unusable snapshot falls back, with a warning that names the file, and the state is
/// still exactly that of a full replay: a file whose content is not what its record says (an
/// older snapshot copied over it), a missing file, no file at all, a file that does not
/// restore. `audit verify` reports the changed file.
#[test]
fn an_unusable_snapshot_falls_back_loudly_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_snapshots(dir.path(), &examples(), EVERY);
    let full = full_replay(&journal).state_bytes();
    let files = audit::snapshot::list_snapshots(&journal).unwrap();
    let (older, newest) = (files[0].clone(), files[1].clone());
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();

    // 1. The newest file holds the older state: it restores, but its hash is not its record's.
    let swapped = copy_journal(&journal, &dir.path().join("swapped"));
    std::fs::copy(&older.1, swapped.join(name(&newest.1))).unwrap();
    {
        // (The writer it holds is closed at the end of the block: the engine opens it below.)
        let r = recover(&swapped, opts(), &spec()).unwrap();
        let text = r.warnings.join("\n");
        assert!(
            text.contains(&name(&newest.1)) && text.contains("SHA-256"),
            "{text}"
        );
        assert_eq!(
            r.risk_source,
            RiskSource::Snapshot {
                path: swapped.join(name(&older.1)),
                covered_seq: older.0
            }
        );
        assert_eq!(r.checker.unwrap().state_bytes(), full);
    }
    let out = run_with_timeout(
        std::process::Command::new(other_bin("audit"))
            .arg("verify")
            .arg(&swapped),
        RUN_LIMIT,
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("snapshot file differs from its record")
            && report.contains(&name(&newest.1)),
        "{report}"
    );

    // 2. The newest file is missing: the older one, and a warning naming the missing file.
    let missing = copy_journal(&journal, &dir.path().join("missing"));
    std::fs::remove_file(missing.join(name(&newest.1))).unwrap();
    let r = recover(&missing, opts(), &spec()).unwrap();
    let text = r.warnings.join("\n");
    assert!(text.contains(&name(&newest.1)), "{text}");
    assert!(
        matches!(r.risk_source, RiskSource::Snapshot { covered_seq, .. } if covered_seq == older.0)
    );
    assert_eq!(r.checker.unwrap().state_bytes(), full);

    // 3. No snapshot file at all: the whole journal, and a warning.
    let none = copy_journal(&journal, &dir.path().join("none"));
    for f in &files {
        std::fs::remove_file(none.join(name(&f.1))).unwrap();
    }
    let r = recover(&none, opts(), &spec()).unwrap();
    assert!(
        r.warnings.join("\n").contains(&name(&newest.1)),
        "{:?}",
        r.warnings
    );
    assert_eq!(r.risk_source, RiskSource::FullReplay);
    assert_eq!(r.decisions_replayed, 2_000);
    assert_eq!(r.checker.unwrap().state_bytes(), full);

    // 4. The newest file does not restore (truncated): the older one.
    let short = copy_journal(&journal, &dir.path().join("short"));
    let bytes = std::fs::read(&newest.1).unwrap();
    std::fs::write(short.join(name(&newest.1)), &bytes[..bytes.len() / 2]).unwrap();
    let r = recover(&short, opts(), &spec()).unwrap();
    assert!(
        r.warnings.join("\n").contains(&name(&newest.1)),
        "{:?}",
        r.warnings
    );
    assert!(
        matches!(r.risk_source, RiskSource::Snapshot { covered_seq, .. } if covered_seq == older.0)
    );
    assert_eq!(r.checker.unwrap().state_bytes(), full);

    // 5. A newer file whose record was never appended (a crash between writing it and the
    //    journal stage appending its record): not used, the newest recorded one is.
    let orphan = copy_journal(&journal, &dir.path().join("orphan"));
    let head = audit::Reader::open(&orphan).unwrap().iter_from(1).count() as u64;
    let orphan_name = audit::snapshot::snapshot_file_name(head);
    std::fs::copy(&newest.1, orphan.join(&orphan_name)).unwrap();
    let r = recover(&orphan, opts(), &spec()).unwrap();
    let text = r.warnings.join("\n");
    assert!(
        text.contains(&orphan_name) && text.contains("no journal record names it"),
        "{text}"
    );
    assert!(
        matches!(r.risk_source, RiskSource::Snapshot { covered_seq, .. } if covered_seq == newest.0)
    );
    assert_eq!(r.checker.unwrap().state_bytes(), full);

    // The engine says so on restart, and goes on.
    let out = run_with_timeout(
        replay_cmd(&examples(), &swapped, &dir.path().join("r2.json")).args([
            "--risk",
            "inline",
            "--segment-size-bytes",
            "65536",
            "--resume",
        ]),
        RUN_LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains(" WARN ") && l.contains("risk snapshot"))
            && err.contains(&name(&newest.1)),
        "{err}"
    );
}

/// Stopped half way and resumed with snapshots on, the engine decides exactly as in one
/// uninterrupted run (inline risk: the state after the restart is the snapshot's plus the tail).
#[test]
fn a_resumed_run_with_snapshots_decides_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let all = std::fs::read_to_string(examples()).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let half = dir.path().join("half.csv");
    std::fs::write(&half, lines[..1_101].join("\n") + "\n").unwrap();
    let first = dir.path().join("first");
    std::fs::create_dir_all(&first).unwrap();
    let journal = journal_with_snapshots(&first, &half, EVERY);
    let out = run_with_timeout(
        replay_cmd(&examples(), &journal, &dir.path().join("r2.json"))
            .args([
                "--risk",
                "inline",
                "--segment-size-bytes",
                "65536",
                "--resume",
            ])
            .args(["--snapshot-every-records", &EVERY.to_string()]),
        RUN_LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("from snapshot"), "{err}");
    let once = dir.path().join("once");
    std::fs::create_dir_all(&once).unwrap();
    let uninterrupted = journal_with_snapshots(&once, &examples(), EVERY);
    let d = |j: &Path| -> Vec<_> {
        audit::Reader::open(j)
            .unwrap()
            .iter_from(1)
            .map(|r| r.unwrap())
            .filter(|r| r.kind == audit::KIND_DECISION)
            .map(|r| {
                let d = orders::decode_decision(&r.payload).unwrap();
                (d.input_seq, d.order, d.reason)
            })
            .collect()
    };
    assert_eq!(d(&journal), d(&uninterrupted));
    audit_verify(&journal);
}

/// `kill -9` at random moments of a run that snapshots every 100 decisions (so kills land
/// while a snapshot file is written, before its record is appended, between the two): after
/// each kill the journal and its snapshot files verify; each restart recovers from the
/// newest usable snapshot (an unrecorded one is passed over); at the end every order has
/// exactly one decision, the same as in an uninterrupted run, and the rebuilt risk state is
/// that of a full replay.
#[test]
fn kill_9_while_snapshotting_loses_nothing_and_recovers_the_same_state() {
    use std::process::Stdio;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    let n = 3_000;
    write_orders(&file, &gen_orders(n, 7, 0));
    let journal = dir.path().join("journal");
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..12 {
        let mut cmd = replay_cmd(&file, &journal, &dir.path().join(format!("r{i}.json")));
        cmd.args([
            "--risk",
            "inline",
            "--rate",
            "3000",
            "--snapshot-every-records",
            "100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if i > 0 {
            cmd.arg("--resume");
        }
        let mut child = cmd.spawn().unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(60 + seed % 190));
        let _ = child.kill();
        child.wait().unwrap();
        if !journal.exists() {
            continue;
        }
        let out = run_with_timeout(
            std::process::Command::new(other_bin("audit"))
                .arg("verify")
                .arg(&journal)
                .arg("--allow-torn-tail"),
            RUN_LIMIT,
        );
        assert!(
            out.status.success(),
            "after kill {i}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("final.json")).args([
            "--risk",
            "inline",
            "--resume",
            "--snapshot-every-records",
            "100",
        ]),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    audit_verify(&journal);
    let decided = |j: &Path| -> Vec<_> {
        audit::Reader::open(j)
            .unwrap()
            .iter_from(1)
            .map(|r| r.unwrap())
            .filter(|r| r.kind == audit::KIND_DECISION)
            .map(|r| {
                let d = orders::decode_decision(&r.payload).unwrap();
                (d.input_seq, d.order, d.reason)
            })
            .collect()
    };
    let once = dir.path().join("once");
    let out = run_with_timeout(
        replay_cmd(&file, &once, &dir.path().join("once.json")).args(["--risk", "inline"]),
        RUN_LIMIT,
    );
    assert!(out.status.success());
    let resumed = decided(&journal);
    assert_eq!(resumed.len(), n, "one decision per order");
    assert_eq!(
        resumed,
        decided(&once),
        "the same decisions as an uninterrupted run"
    );
    assert!(
        !snapshot_records(&journal).is_empty(),
        "snapshots were written"
    );
    let r = recover(&journal, audit::WriterOptions::default(), &spec()).unwrap();
    assert!(
        matches!(r.risk_source, RiskSource::Snapshot { .. }),
        "{:?}",
        r.risk_source
    );
    assert_eq!(
        r.checker.unwrap().state_bytes(),
        full_replay(&journal).state_bytes()
    );
}

/// Issue 13 item 1: `engine replay --resume` of a binary order file reads the records from the
/// resume point only. A bad record among the orders already decided is not read (the resume
/// decides the rest); one after the resume point stops the resume with the same error a
/// fresh run gives (record index and byte offset); a fresh run still validates every record.
#[test]
fn a_resume_reads_the_binary_input_from_its_resume_point_only() {
    let tmp = tempfile::tempdir().unwrap();
    let all = gen_orders(300, 7, 0);
    let first = tmp.path().join("first.bin");
    orders::files::write_binary(&first, all[..200].iter().copied()).unwrap();
    let journal = tmp.path().join("journal");
    let out = run_with_timeout(
        replay_cmd(&first, &journal, &tmp.path().join("r1.json")).args(["--risk", "inline"]),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The whole flow, with the kind byte of record 10 (decided) and of record 250 (not yet)
    // damaged.
    let whole = tmp.path().join("whole.bin");
    orders::files::write_binary(&whole, all.iter().copied()).unwrap();
    let mut bytes = std::fs::read(&whole).unwrap();
    let kind_of = |i: usize| 24 + i * 48 + 45;
    bytes[kind_of(10)] = 77;
    let before = tmp.path().join("bad-before.bin");
    std::fs::write(&before, &bytes).unwrap();
    bytes[kind_of(250)] = 78;
    let after = tmp.path().join("bad-after.bin");
    std::fs::write(&after, &bytes).unwrap();

    // Damage after the resume point: refused, named, and nothing decided.
    let j2 = copy_journal(&journal, &tmp.path().join("j2"));
    let out = run_with_timeout(
        replay_cmd(&after, &j2, &tmp.path().join("r2.json")).args(["--risk", "inline", "--resume"]),
        RUN_LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("record 250 (byte offset 12024): bad kind value 78"),
        "{err}"
    );
    assert_eq!(decisions(&j2).len(), 200);

    // Damage before it only: not read; the resume decides orders 200..300.
    let out = run_with_timeout(
        replay_cmd(&before, &journal, &tmp.path().join("r3.json"))
            .args(["--risk", "inline", "--resume"]),
        RUN_LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("read orders 199..300 of"), "{err}");
    let d = decisions(&journal);
    assert_eq!(d.len(), 300);
    for (k, (_, dec)) in d.iter().enumerate() {
        assert_eq!((dec.input_seq, dec.order), (k as u64, all[k]));
    }
    audit_verify(&journal);

    // A fresh run reads every record: the damage at record 10 is an error before anything.
    let j4 = tmp.path().join("j4");
    let out = run_with_timeout(
        replay_cmd(&before, &j4, &tmp.path().join("r4.json")).args(["--risk", "inline", "--fresh"]),
        RUN_LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("record 10 (byte offset 504): bad kind value 77"),
        "{err}"
    );
}
