//! `engine replay` end to end with the real binaries: one decision record per order, in order;
//! journal before egress; resume after kill -9; bad input; refusal to mix runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use orders::Reason;

const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Guarantee 1: every input order ends with exactly one decision record, in decision order;
/// `audit verify` passes; the report agrees with the journal.
fn every_order_gets_exactly_one_record_in_order(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    let flow = gen_orders(3_000, 10, 0);
    write_orders(&file, &flow);
    let journal = dir.path().join("journal");
    let rep = dir.path().join("report.json");
    let hgrm = dir.path().join("latency.hgrm");
    let out = run_with_timeout(
        replay_cmd_in(mode, &file, &journal, &rep)
            .args(["--max-batch", "64", "--warmup", "100", "--hgrm"])
            .arg(&hgrm),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("p99.99") && table.contains("max-qty"),
        "{table}"
    );

    audit_verify(&journal);
    let ds = decisions(&journal);
    assert_eq!(ds.len(), flow.len(), "one record per order");
    for (i, (seq, d)) in ds.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "dense journal sequence");
        assert_eq!(d.input_seq, i as u64, "records in input (= decision) order");
        assert_eq!(d.order, flow[i], "the full order is recorded");
        let expect = if flow[i].qty > 100_000 {
            Reason::MaxQty
        } else {
            Reason::Accepted
        };
        assert_eq!(d.reason, expect, "order {i}");
        assert!(d.t_decided_ns >= d.t_in_ns);
    }
    let r = report(&rep);
    assert_eq!(r["orders"], 3_000);
    assert_eq!(r["accepted"], 2_700);
    assert_eq!(r["rejected"], 300);
    assert_eq!(r["rejected_by_reason"]["max-qty"], 300);
    assert_eq!(r["journal"]["records"], 3_000);
    assert_eq!(r["recorded"], 2_900, "warm-up orders are left out");
    assert!(r["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    assert!(r["latency_us"]["max"].as_f64().unwrap() >= r["latency_us"]["p99"].as_f64().unwrap());
    assert!(r["throughput_per_s"].as_f64().unwrap() > 0.0);
    let head = r["journal"]["head_hash"].as_str().unwrap();
    assert_eq!(head.len(), 64);
    let reader = audit::Reader::open(&journal).unwrap();
    let last = reader.iter_from(3_000).next().unwrap().unwrap();
    assert_eq!(
        head,
        last.hash
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    // Batches are bounded by --max-batch.
    assert!(r["risk"]["mean_batch"].as_f64().unwrap() <= 64.0);
    // The percentile file is in the HdrHistogram text format, counting the recorded orders.
    let h = std::fs::read_to_string(&hgrm).unwrap();
    assert!(h.contains("Value") && h.contains("Percentile"), "{h}");
    assert!(h.contains("Total count    =         2900]"), "{h}");
}

in_each_threading_mode!(every_order_gets_exactly_one_record_in_order);

/// Guarantee 2: an accepted order reaches the sink only after its record is in the journal.
/// The sink checks, at the moment each order arrives, that the journal already holds its
/// accepted decision with the same order; afterwards every received journal_seq is checked
/// again and the sink saw every accepted order exactly once, in journal order.
fn accepted_orders_reach_the_sink_only_after_their_record(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    let flow = gen_orders(2_000, 7, 0);
    write_orders(&file, &flow);
    let journal = dir.path().join("journal");
    let dump = dir.path().join("received.csv");
    let sink = Sink::start(
        "tcp://127.0.0.1:*",
        &[
            "--verify-journal",
            journal.to_str().unwrap(),
            "--dump",
            dump.to_str().unwrap(),
            "--idle-exit-ms",
            "3000",
        ],
        dir.path().join("sink.json"),
    );
    let rep = dir.path().join("report.json");
    let out = run_with_timeout(
        replay_cmd_in(mode, &file, &journal, &rep).args([
            "--out",
            &sink.endpoint,
            "--max-batch",
            "32",
        ]),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, s) = sink.finish(Duration::from_secs(60));
    let accepted = report(&rep)["accepted"].as_u64().unwrap();
    assert_eq!(accepted, flow.len() as u64 - flow.len() as u64 / 7);
    assert!(status.success(), "sink: {s}");
    assert_eq!(s["journal_checked"], accepted);
    assert_eq!(s["journal_mismatches"], 0, "{s}");
    assert_eq!(s["unique"], accepted);
    assert_eq!(s["duplicates"], 0);
    assert_eq!(s["out_of_order"], 0);

    // Offline: each received (input_seq, journal_seq) names an accepted record of that order.
    let ds = decisions(&journal);
    let text = std::fs::read_to_string(&dump).unwrap();
    let mut seen = HashSet::new();
    for line in text.lines() {
        let v: Vec<u64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        let (input_seq, journal_seq, order_id) = (v[0], v[1], v[2]);
        let (seq, d) = ds[journal_seq as usize - 1];
        assert_eq!(seq, journal_seq);
        assert_eq!(d.input_seq, input_seq);
        assert_eq!(d.order.order_id, order_id);
        assert!(d.reason.is_accepted());
        assert!(seen.insert(input_seq), "exactly once");
    }
    assert_eq!(seen.len() as u64, accepted);
}

in_each_threading_mode!(accepted_orders_reach_the_sink_only_after_their_record);

/// The ordering check has teeth: verified against a journal that does not hold these
/// decisions, the sink reports every order as a violation and fails.
#[test]
fn the_sink_journal_check_catches_orders_without_their_record() {
    let dir = tempfile::tempdir().unwrap();
    // A journal from a different flow (other order ids).
    let other = dir.path().join("other.csv");
    write_orders(&other, &gen_orders(500, 0, 10_000));
    let other_journal = dir.path().join("other-journal");
    let out = run_with_timeout(
        replay_cmd(&other, &other_journal, &dir.path().join("r0.json")),
        RUN_LIMIT,
    );
    assert!(out.status.success());
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(200, 0, 0));
    let sink = Sink::start(
        "tcp://127.0.0.1:*",
        &[
            "--verify-journal",
            other_journal.to_str().unwrap(),
            "--expect",
            "200",
        ],
        dir.path().join("sink.json"),
    );
    let out = run_with_timeout(
        replay_cmd(
            &file,
            &dir.path().join("journal"),
            &dir.path().join("r.json"),
        )
        .args(["--out", &sink.endpoint]),
        RUN_LIMIT,
    );
    assert!(out.status.success());
    let (status, s) = sink.finish(Duration::from_secs(60));
    assert!(!status.success());
    assert_eq!(s["journal_mismatches"], 200, "{s}");
}

/// Guarantee 5: kill -9 mid-replay, then --resume on the same journal: the chain and sequence
/// continue, no order is decided twice, none is missing.
fn kill_9_then_resume_continues_the_chain_without_gaps_or_repeats(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    let flow = gen_orders(4_000, 9, 0);
    write_orders(&file, &flow);
    let journal = dir.path().join("journal");
    // 4 000 orders at 4 000/s: about a second; killed after ~0.4 s.
    let mut child = replay_cmd_in(mode, &file, &journal, &dir.path().join("r1.json"))
        .args(["--rate", "4000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    // Wait until some records exist, then kill -9.
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let n = audit::Reader::open(&journal)
            .map(|r| r.iter_from(1).count())
            .unwrap_or(0);
        if n >= 800 || t.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed");
    let before = decisions(&journal);
    assert!(
        !before.is_empty() && before.len() < flow.len(),
        "killed mid-replay ({} records)",
        before.len()
    );

    let rep = dir.path().join("r2.json");
    let out = run_with_timeout(
        replay_cmd_in(mode, &file, &journal, &rep).arg("--resume"),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&rep);
    assert_eq!(r["resumed"], true);
    assert_eq!(r["start_index"], before.len() as u64);
    assert_eq!(r["orders"], (flow.len() - before.len()) as u64);

    audit_verify(&journal);
    let all = decisions(&journal);
    assert_eq!(all.len(), flow.len(), "none missing, none twice");
    for (i, (seq, d)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(d.input_seq, i as u64);
        assert_eq!(d.order, flow[i]);
    }
    // The records from before the kill are untouched.
    assert_eq!(&all[..before.len()], &before[..]);

    // A finished journal resumes to nothing.
    let out = run_with_timeout(
        replay_cmd_in(mode, &file, &journal, &dir.path().join("r3.json")).arg("--resume"),
        RUN_LIMIT,
    );
    assert!(out.status.success());
    assert_eq!(report(&dir.path().join("r3.json"))["orders"], 0);
    assert_eq!(decisions(&journal).len(), flow.len());
}

in_each_threading_mode!(kill_9_then_resume_continues_the_chain_without_gaps_or_repeats);

/// Without --resume a non-empty journal is refused (runs are never mixed), and resuming a
/// journal written from another file is refused too; neither touches the journal.
#[test]
fn a_used_journal_needs_resume_and_the_same_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(300, 0, 0));
    let journal = dir.path().join("journal");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r1.json")),
        RUN_LIMIT,
    );
    assert!(out.status.success());
    let head = report(&dir.path().join("r1.json"))["journal"]["head_hash"].clone();

    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r2.json")),
        RUN_LIMIT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already holds 300 records") && err.contains("--resume"),
        "{err}"
    );

    let other = dir.path().join("other.csv");
    write_orders(&other, &gen_orders(400, 0, 5_000));
    let out = run_with_timeout(
        replay_cmd(&other, &journal, &dir.path().join("r3.json")).arg("--resume"),
        RUN_LIMIT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was not written from"), "{err}");

    audit_verify(&journal);
    assert_eq!(decisions(&journal).len(), 300);
    let reader = audit::Reader::open(&journal).unwrap();
    let last = reader.iter_from(300).next().unwrap().unwrap();
    let hex: String = last.hash.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(serde_json::Value::String(hex), head);
}

/// Guarantee 6 (files): a malformed order line is reported with file, line and column and
/// nothing is journaled; with --max-errors it is skipped and counted.
#[test]
fn bad_order_lines_are_named_and_nothing_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(50, 0, 0));
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("51,1,AAPL,BUY,ten,100.5,0,new\n");
    std::fs::write(&file, text).unwrap();
    let journal = dir.path().join("journal");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r.json")),
        RUN_LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("orders.csv") && err.contains("52"),
        "names file and line: {err}"
    );
    assert!(err.contains("qty"), "names the column: {err}");
    assert!(!journal.exists(), "nothing journaled");

    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r.json")).args(["--max-errors", "1"]),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each skipped line is reported with its place (issue 13 item 17), not only counted.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(" WARN ")
            && err.contains("skipped ")
            && err.contains("orders.csv: line 52, column ")
            && err.contains("(qty)"),
        "{err}"
    );
    let r = report(&dir.path().join("r.json"));
    assert_eq!(r["orders"], 50);
    assert_eq!(r["bad_input"], 1);
    audit_verify(&journal);
}

/// Bad flags are reported together, before anything is opened.
#[test]
fn bad_flags_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(10, 0, 0));
    let journal = dir.path().join("journal");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r.json")).args([
            "--durability",
            "sometimes",
            "--idle",
            "nap",
            "--out",
            "localhost:1",
            "--max-batch",
            "0",
        ]),
        RUN_LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["--durability", "--idle", "--out", "--max-batch"] {
        assert!(err.contains(key), "{key} missing from {err}");
    }
    assert!(!journal.exists());
}

/// A fixed-rate replay is open loop: it takes about orders / rate, and latency is measured
/// from the schedule.
#[test]
fn fixed_rate_replay_follows_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(1_000, 0, 0));
    let rep = dir.path().join("r.json");
    let t = Instant::now();
    let out = run_with_timeout(
        replay_cmd(&file, &dir.path().join("journal"), &rep).args(["--rate", "2000"]),
        RUN_LIMIT,
    );
    assert!(out.status.success());
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "1 000 orders at 2 000/s"
    );
    let r = report(&rep);
    assert_eq!(r["orders"], 1_000);
    let elapsed = r["elapsed_s"].as_f64().unwrap();
    assert!(elapsed >= 0.49, "{elapsed}");
    assert_eq!(r["schedule"], "rate 2000/s");
}

/// Guarantee 6 (journal): a journal damaged in the middle is refused with an error that names
/// it; the engine neither repairs nor appends to it.
#[test]
fn a_damaged_journal_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(600, 0, 0));
    let journal = dir.path().join("journal");
    // Stop after 300 orders: replay the first half of the file only.
    let half = dir.path().join("half.csv");
    write_orders(&half, &gen_orders(300, 0, 0));
    let out = run_with_timeout(
        replay_cmd(&half, &journal, &dir.path().join("r1.json")),
        RUN_LIMIT,
    );
    assert!(out.status.success());
    // Flip one byte in the middle of the records.
    let seg = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 1 << 20)
        .max()
        .expect("a segment file");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[20_000] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();

    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r2.json")).arg("--resume"),
        RUN_LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("journal"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "left exactly as found");
}

/// --fresh starts the journal over (the README's re-runnable main job), but only deletes
/// journal files: a directory with anything else in it is refused untouched.
#[test]
fn fresh_starts_over_but_only_deletes_journal_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(200, 0, 0));
    let journal = dir.path().join("journal");
    for _ in 0..2 {
        let out = run_with_timeout(
            replay_cmd(&file, &journal, &dir.path().join("r.json")).arg("--fresh"),
            RUN_LIMIT,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(decisions(&journal).len(), 200, "a new journal each time");
        audit_verify(&journal);
    }
    std::fs::write(journal.join("notes.txt"), "mine").unwrap();
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r.json")).arg("--fresh"),
        RUN_LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notes.txt"), "{err}");
    assert_eq!(decisions(&journal).len(), 200, "nothing deleted");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r.json")).args(["--fresh", "--resume"]),
        RUN_LIMIT,
    );
    assert!(!out.status.success());
}

/// With a checkpoint key the final head is signed at the end of the run, so `audit verify
/// --pubkey` can prove the tail was not cut off.
#[test]
fn a_checkpoint_key_anchors_the_final_head() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("audit");
    let out = run_with_timeout(
        std::process::Command::new(other_bin("audit"))
            .args(["keygen", "--out"])
            .arg(&keys),
        RUN_LIMIT,
    );
    assert!(out.status.success());
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(300, 0, 0));
    let journal = dir.path().join("journal");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r.json"))
            .arg("--checkpoint-key")
            .arg(keys.with_extension("key"))
            .args(["--durability", "interval:100:5"]),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_with_timeout(
        std::process::Command::new(other_bin("audit"))
            .arg("verify")
            .arg(&journal)
            .arg("--pubkey")
            .arg(keys.with_extension("pub")),
        RUN_LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("newest at seq 300"), "{text}");
}

/// `--risk inline` is the embedded service's checks as a direct call: for the same input and
/// limits (the example file, with its mix of new orders, cancels and fills and several
/// rejection reasons, and the built-in limits) the two journals hold the same decisions, in
/// either threading mode.
#[test]
fn inline_and_embedded_risk_give_identical_journals() {
    let dir = tempfile::tempdir().unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orders.csv");
    let run = |risk: &str, mode: &str| {
        let journal = dir.path().join(format!("journal-{risk}-{mode}"));
        let rep = dir.path().join(format!("{risk}-{mode}.json"));
        let out = run_with_timeout(
            replay_cmd_in(mode, &file, &journal, &rep).args(["--risk", risk]),
            RUN_LIMIT,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        audit_verify(&journal);
        decisions(&journal)
            .into_iter()
            .map(|(seq, d)| (seq, d.input_seq, d.order, d.reason))
            .collect::<Vec<_>>()
    };
    let embedded = run("embedded", "dedicated");
    let reasons: std::collections::BTreeSet<_> = embedded.iter().map(|d| d.3).collect();
    assert!(
        embedded.len() >= 1_000 && reasons.len() >= 3,
        "a varied flow: {} decisions, reasons {reasons:?}",
        embedded.len()
    );
    for mode in ["dedicated", "split", "shared"] {
        let inline = run("inline", mode);
        assert_eq!(inline.len(), embedded.len());
        for (a, b) in inline.iter().zip(&embedded) {
            assert_eq!(a, b, "inline ({mode}) and embedded decide alike");
        }
    }
}
