//! The `audit` binary: help, keygen, dump, verify output and exit codes.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use audit::{Writer, KIND_DECISION, KIND_ORDER};
use orders::{encode_decision, encode_order, Decision, Order, OrderKind, Reason, Side, Symbol};

fn audit(args: &[&str]) -> Output {
    Command::new(common::audit_bin())
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_explains_every_subcommand_and_flag() {
    let out = audit(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in ["verify", "dump", "keygen", "serve", "tail", "recover"] {
        assert!(help.contains(cmd), "{help}");
    }
    assert!(
        !help.contains("append-test"),
        "hidden command shown: {help}"
    );
    for (cmd, flags) in [
        (
            "verify",
            &[
                "--pubkey",
                "--expect-head",
                "--threads",
                "--json",
                "--allow-torn-tail",
            ][..],
        ),
        ("dump", &["--from", "--to", "--json"][..]),
        ("keygen", &["--out", "--force", "--in-work-tree"][..]),
        (
            "serve",
            &["--bind", "--allow", "--plain-credentials", "--insecure"][..],
        ),
        (
            "tail",
            &[
                "--sub",
                "--serve",
                "--until-seq",
                "--json",
                "--rcvhwm",
                "--from",
                "--credentials",
                "--request-timeout-ms",
            ][..],
        ),
    ] {
        let out = audit(&[cmd, "--help"]);
        assert!(out.status.success());
        let help = text(&out.stdout);
        for f in flags {
            assert!(help.contains(f), "{cmd} --help lacks {f}: {help}");
        }
    }
    // Usage errors exit 2.
    assert_eq!(audit(&["verify"]).status.code(), Some(2));
    assert_eq!(audit(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn keygen_writes_a_private_secret_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("k");
    let p = prefix.to_str().unwrap();
    let out = audit(&["keygen", "--out", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let secret = tmp.path().join("k.key");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = audit::load_signing_key(&secret).unwrap();
    let public = audit::load_verifying_key(&tmp.path().join("k.pub")).unwrap();
    assert_eq!(key.verifying_key(), public);
    assert!(text(&out.stdout).contains(&hex::encode(audit::key_id(&public))));
    let again = audit(&["keygen", "--out", p]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("k.key"));
    assert!(audit(&["keygen", "--out", p, "--force"]).status.success());
    assert_ne!(
        audit::load_signing_key(&secret).unwrap().to_bytes(),
        key.to_bytes()
    );
}

#[test]
fn keygen_refuses_a_secret_key_inside_a_git_work_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    match Command::new("git")
        .arg("init")
        .arg("-q")
        .arg(&repo)
        .status()
    {
        Ok(s) if s.success() => {}
        other => {
            common::skip(
                "keygen_refuses_a_secret_key_inside_a_git_work_tree",
                &format!("`git init` is unavailable: {other:?}"),
            );
            return;
        }
    }
    // A prefix in a subdirectory of the work tree, relative to it (as the README's user types it).
    std::fs::create_dir(repo.join("sub")).unwrap();
    let refused = Command::new(common::audit_bin())
        .current_dir(&repo)
        .args(["keygen", "--out", "sub/audit"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let err = text(&refused.stderr);
    assert!(err.contains("git work tree"), "{err}");
    assert!(err.contains("--in-work-tree"), "{err}");
    assert!(!repo.join("sub/audit.key").exists());
    assert!(!repo.join("sub/audit.pub").exists());

    // Outside the work tree (a sibling directory, created private): written.
    let keys = tmp.path().join("keys");
    let ok = audit(&["keygen", "--out", keys.join("audit").to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(keys.join("audit.key").exists());
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // Forced: written, with a warning.
    let forced = Command::new(common::audit_bin())
        .current_dir(&repo)
        .args(["keygen", "--out", "sub/audit", "--in-work-tree"])
        .output()
        .unwrap();
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(text(&forced.stderr).contains("never commit"));
    assert!(repo.join("sub/audit.key").exists());
}

fn sample_journal(dir: &std::path::Path) -> [u8; 32] {
    let (mut w, _) = Writer::open(dir, common::opts(4096)).unwrap();
    let order = Order {
        order_id: 42,
        ts_ns: 7,
        price: 1_852_500,
        qty: 100,
        account: 3,
        symbol: Symbol::new("AAPL").unwrap(),
        side: Side::Buy,
        kind: OrderKind::New,
    };
    for (i, reason) in [Reason::Accepted, Reason::RiskTimeout]
        .into_iter()
        .enumerate()
    {
        let d = Decision {
            input_seq: i as u64,
            order,
            reason,
            t_in_ns: 100,
            t_decided_ns: 200,
            ..Decision::default()
        };
        let mut b = [0u8; orders::DECISION_LEN_BYTES];
        encode_decision(&d, &mut b);
        w.append(KIND_DECISION, 1_700_000_000_000_000_000 + i as u64, &b)
            .unwrap();
    }
    let mut b = [0u8; orders::ORDER_LEN_BYTES];
    encode_order(&order, &mut b);
    w.append(KIND_ORDER, 3, &b).unwrap();
    w.append(99, 4, &[0xde, 0xad]).unwrap();
    w.head_hash()
}

#[test]
fn dump_decodes_decisions_and_orders_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    sample_journal(&dir);
    let d = dir.to_str().unwrap();
    let out = audit(&["dump", d]);
    assert!(out.status.success());
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("seq=1 "), "{}", lines[0]);
    for part in [
        "kind=decision",
        "order_id=42",
        "symbol=AAPL",
        "side=BUY",
        "qty=100",
        "price=185.25",
        "verdict=accepted",
    ] {
        assert!(lines[0].contains(part), "{part} missing: {}", lines[0]);
    }
    assert!(
        lines[1].contains("verdict=rejected reason=risk-timeout"),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("kind=order") && lines[2].contains("order_id=42"));
    assert!(lines[3].contains("kind=kind-99 ") && lines[3].contains("payload=dead"));
    // Ranges and JSON.
    let out = audit(&["dump", d, "--from", "2", "--to", "3", "--json"]);
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["seq"], 2);
    assert_eq!(rows[0]["order_id"], 42);
    assert_eq!(rows[0]["verdict"], "rejected");
    assert_eq!(rows[0]["reason"], "risk-timeout");
    assert_eq!(rows[1]["kind_name"], "order");
    // A damaged journal: dump stops with exit 1 at the bad record.
    let spans = common::spans(&dir);
    let mut b = std::fs::read(&spans[1].file).unwrap();
    b[spans[1].start + 40] ^= 1;
    std::fs::write(&spans[1].file, b).unwrap();
    let out = audit(&["dump", d]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert!(text(&out.stderr).contains("seq 2"), "{}", text(&out.stderr));
    // No journal: exit 2.
    assert_eq!(audit(&["dump", "/nonexistent/j"]).status.code(), Some(2));
}

#[test]
fn verify_prints_the_summary_in_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let head = sample_journal(&dir);
    let d = dir.to_str().unwrap();
    let out = audit(&["verify", d]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    for part in [
        "audit verify: OK",
        "segments     1",
        "records      4 (seq 1 ..= 4)",
        "first time   1700000000000000000 ns (2023-11-14T22:13:20.000000000Z)",
        "last time    4 ns",
        &format!("head hash    {}", hex::encode(head)),
        "checkpoints  none",
    ] {
        assert!(s.contains(part), "{part} missing:\n{s}");
    }
    let out = audit(&["verify", d, "--json", "--threads", "1"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["records"], 4);
    assert_eq!(v["last_seq"], 4);
    assert_eq!(v["head_hash"], hex::encode(head));
    // Progress bars never go to a pipe.
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn recover_cuts_a_torn_tail_that_verify_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let written = common::write_journal(&dir, 30, 100, 8192);
    let d = dir.to_str().unwrap();
    // A crash mid-append: the last record's length word never written.
    let last = common::spans(&dir).last().unwrap().clone();
    let mut b = std::fs::read(&last.file).unwrap();
    b[last.start..last.start + 4].fill(0);
    std::fs::write(&last.file, b).unwrap();
    let out = audit(&["verify", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("incomplete record"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        audit(&["verify", d, "--allow-torn-tail"]).status.code(),
        Some(0)
    );
    let out = audit(&["recover", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("records      29"), "{s}");
    assert!(
        s.contains("(the record that would have been seq 30)"),
        "{s}"
    );
    assert!(s.contains(&hex::encode(written[28].hash)), "{s}");
    assert_eq!(audit(&["verify", d]).status.code(), Some(0));
    // Damage is refused with exit 1.
    let first = &common::spans(&dir)[3];
    let mut b = std::fs::read(&first.file).unwrap();
    b[first.start + 40] ^= 1;
    std::fs::write(&first.file, b).unwrap();
    let out = audit(&["recover", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("seq 4"), "{}", text(&out.stderr));
}
