//! Account names (issue 14 item 5): CSV order files with `ACC11`-style accounts, interned to
//! ids of the named range and recorded in the journal (kind 4) before their first use; `audit
//! verify` passes, `audit dump` shows the names, a resume keeps the ids of the names across
//! restarts (with snapshots and segments the restart does not read), limits keyed by name
//! reject the right orders, and a standalone risk-server refuses limits it cannot apply.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use orders::NAMED_ACCOUNT_BASE as BASE;

const LIMIT: Duration = Duration::from_secs(120);

const LIMITS: &str = r#"
[global]
unknown_account = "defaults"
unknown_symbol = "defaults"
[defaults]
max_order_qty = 100000
max_order_notional = 100000000
max_long_qty = 100000000
max_short_qty = 100000000
credit_limit_notional = 1000000000
[accounts.ACC12]
max_order_qty = 10
"#;

/// One CSV row per `(order_id, account, side, qty)`, all new orders on one symbol.
fn write_csv(path: &Path, rows: &[(u64, &str, &str, u64)]) {
    let mut text = String::from("order_id,account,symbol,side,qty,price\n");
    for (id, account, side, qty) in rows {
        text.push_str(&format!("{id},{account},S0001,{side},{qty},10.5\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// A flow over two names, a name only one file uses, and numeric accounts; sides in every
/// spelling of the source design.
fn flow(n: u64, names: &[&'static str]) -> Vec<(u64, &'static str, &'static str, u64)> {
    let accounts: Vec<&str> = names.iter().copied().chain(["3", "5"]).collect();
    let sides = ["B", "S", "1", "2", "BUY", "SELL"];
    (0..n)
        .map(|i| {
            (
                i + 1,
                accounts[(i as usize * 7 + i as usize / 3) % accounts.len()],
                sides[i as usize % sides.len()],
                1 + (i * 13) % 40,
            )
        })
        .collect()
}

struct Rec {
    seq: u64,
    kind: u16,
    payload: Vec<u8>,
}

fn records(dir: &Path) -> Vec<Rec> {
    audit::Reader::open(dir)
        .unwrap()
        .iter_from(1)
        .map(|r| {
            let r = r.unwrap();
            Rec {
                seq: r.seq,
                kind: r.kind,
                payload: r.payload,
            }
        })
        .collect()
}

/// The names the journal binds (each binding's first record), checking every decision's
/// named account was bound by an earlier record.
fn names_bound_before_use(dir: &Path) -> BTreeMap<String, u32> {
    let mut bound: HashMap<u32, String> = HashMap::new();
    let mut by_name = BTreeMap::new();
    let mut named_decisions = 0;
    for r in records(dir) {
        match r.kind {
            audit::KIND_ACCOUNT_NAME => {
                let n = orders::decode_account_name_record(&r.payload).unwrap();
                let prev = bound.insert(n.id, n.name.to_owned());
                assert!(prev.is_none() || prev.as_deref() == Some(n.name), "rebound");
                by_name.insert(n.name.to_owned(), n.id);
            }
            audit::KIND_DECISION => {
                let d = orders::decode_decision(&r.payload).unwrap();
                if orders::is_named_account(d.order.account) {
                    named_decisions += 1;
                    assert!(
                        bound.contains_key(&d.order.account),
                        "record {}: account {} used before its name was journaled",
                        r.seq,
                        d.order.account
                    );
                }
            }
            _ => {}
        }
    }
    assert!(named_decisions > 0, "the flow uses names");
    by_name
}

fn dump(dir: &Path, json: bool) -> String {
    let mut c = Command::new(other_bin("audit"));
    c.arg("dump").arg(dir);
    if json {
        c.arg("--json");
    }
    let out = run_with_timeout(&mut c, LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn replay(file: &Path, journal: &Path, limits: &Path, extra: &[&str]) -> String {
    let out = run_with_timeout(
        replay_cmd(file, journal, &journal.with_extension("json"))
            .args(["--risk", "inline", "--limits"])
            .arg(limits)
            .args(["--segment-size-bytes", "65536"])
            .args(extra),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn csv_names_are_journaled_before_use_verified_dumped_and_limited_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("o.csv");
    let rows = flow(600, &["ACC11", "ACC12"]);
    write_csv(&file, &rows);
    let limits = tmp.path().join("limits.toml");
    std::fs::write(&limits, LIMITS).unwrap();
    let journal = tmp.path().join("j");
    replay(&file, &journal, &limits, &[]);
    audit_verify(&journal);

    // The limits file's name first (interned at start-up), then the file's in first-seen
    // order; all of them recorded before any decision uses them.
    let names = names_bound_before_use(&journal);
    assert_eq!(names["ACC12"], BASE);
    assert_eq!(names["ACC11"], BASE + 1);

    // audit dump shows the name records and the name of each decision's account.
    let text = dump(&journal, false);
    assert!(
        text.contains("kind=account-name")
            && text.contains("account=2147483648 account_name=ACC12"),
        "{text}"
    );
    let mut per_order = HashMap::new();
    for line in text.lines().filter(|l| l.contains("kind=decision")) {
        let field = |k: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(k))
                .map(str::to_owned)
        };
        let id: u64 = field("order_id=").unwrap().parse().unwrap();
        per_order.insert(id, (field("account_name="), field("reason=").unwrap()));
    }
    assert_eq!(per_order.len(), rows.len());
    let json = dump(&journal, true);
    let first_named = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["kind_name"] == "decision" && v["account"].as_u64() >= Some(BASE as u64))
        .unwrap();
    assert!(first_named["account_name"].is_string(), "{first_named}");

    // The limit keyed by name rejects exactly ACC12's orders above 10, and nothing else for
    // quantity.
    for (id, account, _, qty) in &rows {
        let (name, reason) = &per_order[id];
        let name = name.as_deref();
        let numeric = account.parse::<u32>().is_ok();
        assert_eq!(
            name.is_none(),
            numeric,
            "order {id}: {account} shown as {name:?}"
        );
        if !numeric {
            assert_eq!(name, Some(*account));
        }
        let over = *account == "ACC12" && *qty > 10;
        assert_eq!(
            reason == "max-qty",
            over,
            "order {id} ({account}, qty {qty}): {reason}"
        );
    }
}

#[test]
fn a_resume_keeps_the_ids_of_names_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = tmp.path().join("limits.toml");
    std::fs::write(&limits, LIMITS).unwrap();
    // Run 1: 2,000 orders over ACC11 and ACC12 in 64 KiB segments with snapshots, so the
    // restart reads only the tail (the segments before the newest snapshot are not read).
    let first = flow(2000, &["ACC11", "ACC12"]);
    let file1 = tmp.path().join("a.csv");
    write_csv(&file1, &first);
    let journal = tmp.path().join("j");
    replay(
        &file1,
        &journal,
        &limits,
        &["--snapshot-every-records", "128"],
    );
    let before = names_bound_before_use(&journal);
    assert!(
        std::fs::read_dir(&journal)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("seg".as_ref()))
            .count()
            >= 4
    );

    // Run 2 resumes with a file that continues run 1's: its first orders differ in names
    // (a new name, `ZED`, comes first in it, so its own first-seen order differs from the
    // journal's), the last order run 1 decided is the same, then more orders.
    let mut second: Vec<(u64, &str, &str, u64)> = first.clone();
    second[0].1 = "ZED";
    second.extend(
        flow(300, &["ZED", "ACC11", "ACC12"])
            .into_iter()
            .map(|(i, a, s, q)| (2000 + i, a, s, q)),
    );
    let file2 = tmp.path().join("b.csv");
    write_csv(&file2, &second);
    let stderr = replay(
        &file2,
        &journal,
        &limits,
        &["--resume", "--snapshot-every-records", "128"],
    );
    assert!(
        stderr.contains("from snapshot"),
        "restart from a snapshot: {stderr}"
    );
    assert!(
        stderr.contains("(1 new, journaled)"),
        "ZED is the only new name: {stderr}"
    );
    audit_verify(&journal);
    let after = names_bound_before_use(&journal);
    assert_eq!(after["ACC11"], before["ACC11"]);
    assert_eq!(after["ACC12"], before["ACC12"]);
    assert_eq!(after["ZED"], BASE + 2, "the next id");

    // Every decision of run 2 carries the id its name had in run 1.
    let dumped = dump(&journal, false);
    let mut seen = 0;
    for line in dumped.lines().filter(|l| l.contains("kind=decision")) {
        let id: u64 = line
            .split(' ')
            .find_map(|f| f.strip_prefix("order_id="))
            .unwrap()
            .parse()
            .unwrap();
        if id <= 2000 {
            continue;
        }
        seen += 1;
        let account = line
            .split(' ')
            .find_map(|f| f.strip_prefix("account="))
            .unwrap();
        let expected = second[(id - 1) as usize].1;
        match line
            .split(' ')
            .find_map(|f| f.strip_prefix("account_name="))
        {
            Some(name) => {
                assert_eq!(name, expected);
                assert_eq!(account.parse::<u32>().unwrap(), after[name]);
            }
            None => assert_eq!(account, expected),
        }
    }
    assert_eq!(seen, 300);

    // Recovery found the whole table in the tail it read.
    let r = engine::recovery::recover(
        &journal,
        audit::WriterOptions {
            segment_size_bytes: 65536,
            ..audit::WriterOptions::default()
        },
        &engine::recovery::RecoverySpec::default(),
    )
    .unwrap();
    assert!(r.recovery.verified_from_seq > 1, "a tail-only read");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.account_names.len(), 3);
    assert_eq!(r.account_names.id("ZED"), Some(BASE + 2));
}

#[test]
fn a_full_table_and_mixed_ranges_are_refused_not_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = tmp.path().join("limits.toml");
    std::fs::write(&limits, LIMITS).unwrap();
    let file = tmp.path().join("o.csv");
    write_csv(&file, &flow(50, &["ACC11", "ACC12", "ACC13"]));
    let out = run_with_timeout(
        replay_cmd(&file, &tmp.path().join("j"), &tmp.path().join("r.json"))
            .args(["--risk", "inline", "--limits"])
            .arg(&limits)
            .args(["--max-account-names", "2"]),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("account name table is full (2 names)"),
        "{stderr}"
    );

    // An account number of the named range in a file without names, against a journal
    // whose table gives that id to a name: refused (it would be taken for the name).
    let journal = tmp.path().join("j2");
    let rows = flow(20, &["ACC11"]);
    write_csv(&file, &rows);
    replay(&file, &journal, &limits, &[]);
    let numbers = tmp.path().join("n.csv");
    let mut rows: Vec<_> = rows
        .into_iter()
        .map(|mut r| {
            if r.1 == "ACC11" {
                r.1 = "2147483649";
            }
            r
        })
        .collect();
    rows.push((21, "3", "B", 1));
    write_csv(&numbers, &rows);
    let out = run_with_timeout(
        replay_cmd(&numbers, &journal, &tmp.path().join("r2.json"))
            .args(["--risk", "inline", "--limits"])
            .arg(&limits)
            .arg("--resume"),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("uses account number 2147483649")
            && stderr.contains("give the account by name"),
        "{stderr}"
    );
}

#[test]
fn a_remote_risk_server_learns_the_table_and_applies_limits_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = tmp.path().join("limits.toml");
    std::fs::write(&limits, LIMITS).unwrap();
    let server = RiskServer::start(&limits);
    let file = tmp.path().join("o.csv");
    let rows = flow(400, &["ACC11", "ACC12"]);
    write_csv(&file, &rows);
    let journal = tmp.path().join("j");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &tmp.path().join("r.json")).args(["--risk", &server.endpoint]),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("sent the account name table (2 names)"),
        "{stderr}"
    );
    audit_verify(&journal);
    // The server applies ACC12's limit (max_order_qty 10) to the id the engine gave ACC12,
    // and nothing else is rejected for quantity.
    let names = names_bound_before_use(&journal);
    let acc12 = names["ACC12"];
    let mut checked = 0;
    for r in records(&journal) {
        if r.kind != audit::KIND_DECISION {
            continue;
        }
        let d = orders::decode_decision(&r.payload).unwrap();
        let over = d.order.account == acc12 && d.order.qty > 10;
        assert_eq!(
            d.reason == orders::Reason::MaxQty,
            over,
            "order {} (account {}, qty {}): {:?}",
            d.order.order_id,
            d.order.account,
            d.order.qty,
            d.reason
        );
        assert_ne!(d.reason, orders::Reason::UnknownAccount, "{d:?}");
        checked += 1;
    }
    assert_eq!(checked, rows.len());
}

/// `engine run` with JSON orders whose `account` is a name: interned on the fly, each name's
/// record in the journal before the first decision using it, the ids kept across a restart,
/// the limit keyed by name applied (embedded risk), a full table refusing the order (counted
/// as a bad message, never reusing an id).
#[test]
fn engine_run_takes_json_orders_with_account_names() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = tmp.path().join("journal");
    let limits = tmp.path().join("limits.toml");
    std::fs::write(&limits, LIMITS).unwrap();
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.bind("tcp://127.0.0.1:*").unwrap();
    let downstream = pull.get_last_endpoint().unwrap().unwrap();
    let config = tmp.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"tcp://127.0.0.1:*\"\n[risk]\nmode = \"embedded\"\nlimits = \"{}\"\n\
             [journal]\ndir = \"{}\"\nsegment_size_bytes = 65536\nmax_account_names = 4\n\
             [egress]\nconnect = \"{downstream}\"\nformat = \"json\"\n",
            limits.display(),
            journal.display(),
        ),
    )
    .unwrap();
    let run = |orders: &[(&str, u64)], expect_accepted: usize| {
        let (child, stderr, ingress) = start_engine_run(&config, LIMIT);
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.connect(&ingress).unwrap();
        for (account, qty) in orders {
            let account = if account.parse::<u64>().is_ok() {
                account.to_string()
            } else {
                format!("{account:?}")
            };
            let msg = format!(
                r#"{{"account":{account},"symbol":"S0001","side":"BUY","quantity":{qty},"price":10.5}}"#
            );
            push.send(msg.as_str(), 0).unwrap();
        }
        receive_then_stop(&pull, child, expect_accepted);
        stderr.iter().collect::<Vec<String>>()
    };

    // Run 1: ACC12 (limits file: max_order_qty 10) and two new names; one order over
    // ACC12's limit; an account number of the named range (refused: send the name).
    let first = [
        ("ACC11", 50),
        ("ACC12", 5),
        ("ACC12", 50),
        ("desk-7", 1),
        ("7", 1),
        ("ACC11", 2),
        ("2147483650", 1),
    ];
    let log = run(&first, 5);
    audit_verify(&journal);
    let names = names_bound_before_use(&journal);
    assert_eq!(
        names,
        BTreeMap::from([
            ("ACC12".to_owned(), BASE),
            ("ACC11".to_owned(), BASE + 1),
            ("desk-7".to_owned(), BASE + 2)
        ])
    );
    assert!(
        log.iter().any(|l| l.contains("account names are the ids")
            || l.contains("are the ids of account names")),
        "the number of the named range is refused: {log:#?}"
    );
    let decided: Vec<(u32, orders::Reason)> = records(&journal)
        .iter()
        .filter(|r| r.kind == audit::KIND_DECISION)
        .map(|r| {
            let d = orders::decode_decision(&r.payload).unwrap();
            (d.order.account, d.reason)
        })
        .collect();
    use orders::Reason::{Accepted, MaxQty};
    assert_eq!(
        decided,
        [
            (BASE + 1, Accepted),
            (BASE, Accepted),
            (BASE, MaxQty),
            (BASE + 2, Accepted),
            (7, Accepted),
            (BASE + 1, Accepted),
        ]
    );

    // Run 2 on the same journal: the names keep their ids; a new one gets the next; the
    // table (capacity 4) is then full and a fifth name is refused, not given a used id.
    run(&[("desk-7", 1), ("NEW", 1), ("ACC11", 1), ("FIFTH", 1)], 3);
    audit_verify(&journal);
    let names = names_bound_before_use(&journal);
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(names["NEW"], BASE + 3);
    let tail: Vec<u32> = records(&journal)
        .iter()
        .filter(|r| r.kind == audit::KIND_DECISION)
        .skip(6)
        .map(|r| orders::decode_decision(&r.payload).unwrap().order.account)
        .collect();
    assert_eq!(tail, [BASE + 2, BASE + 3, BASE + 1]);
    let text = dump(&journal, false);
    assert!(text.contains("account_name=NEW"), "{text}");
}

/// `engine run` with a remote risk-server whose limits are keyed by name, on a fresh journal:
/// no name is known at start-up, so none is sent then; each name interned from a JSON order
/// reaches the server before the batch that holds the order, and the server applies ACC12's
/// limit (max_order_qty 10) to it instead of refusing it `unknown-account`. A second engine
/// run on the same journal (table sent at start-up) against a restarted server adds a name
/// later too.
#[test]
fn engine_run_sends_names_interned_later_to_a_remote_risk_server() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = tmp.path().join("journal");
    let limits = tmp.path().join("limits.toml");
    std::fs::write(&limits, LIMITS).unwrap();
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.bind("tcp://127.0.0.1:*").unwrap();
    let downstream = pull.get_last_endpoint().unwrap().unwrap();
    let run = |endpoint: &str, orders: &[(&str, u64)], expect_accepted: usize| {
        let config = tmp.path().join("engine.toml");
        std::fs::write(
            &config,
            format!(
                "[ingress]\nbind = \"tcp://127.0.0.1:*\"\n[risk]\nmode = \"remote\"\n\
                 endpoints = [\"{endpoint}\"]\n[journal]\ndir = \"{}\"\n\
                 [egress]\nconnect = \"{downstream}\"\nformat = \"json\"\n",
                journal.display(),
            ),
        )
        .unwrap();
        // `_stderr` keeps the reader of the engine's log alive (its pipe never fills).
        let (child, _stderr, ingress) = start_engine_run(&config, LIMIT);
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.connect(&ingress).unwrap();
        for (account, qty) in orders {
            let msg = format!(
                r#"{{"account":"{account}","symbol":"S0001","side":"BUY","quantity":{qty},"price":10.5}}"#
            );
            push.send(msg.as_str(), 0).unwrap();
            // One order per batch, so that a name's first order is not alone in proving it.
            std::thread::sleep(Duration::from_millis(20));
        }
        receive_then_stop(&pull, child, expect_accepted);
    };
    let decided = || -> Vec<(u32, orders::Reason)> {
        records(&journal)
            .iter()
            .filter(|r| r.kind == audit::KIND_DECISION)
            .map(|r| {
                let d = orders::decode_decision(&r.payload).unwrap();
                (d.order.account, d.reason)
            })
            .collect()
    };
    use orders::Reason::{Accepted, MaxQty};

    let server = RiskServer::start(&limits);
    run(
        &server.endpoint,
        &[("ACC11", 50), ("ACC12", 5), ("ACC12", 50), ("ACC11", 2)],
        3,
    );
    audit_verify(&journal);
    let names = names_bound_before_use(&journal);
    assert_eq!(
        decided(),
        [
            (names["ACC11"], Accepted),
            (names["ACC12"], Accepted),
            (names["ACC12"], MaxQty),
            (names["ACC11"], Accepted),
        ]
    );
    drop(server);

    // A restarted server: the table goes at start-up, a new name later.
    let server = RiskServer::start(&limits);
    run(&server.endpoint, &[("desk-9", 20), ("ACC12", 20)], 1);
    audit_verify(&journal);
    let names = names_bound_before_use(&journal);
    let all = decided();
    assert_eq!(
        all[4..],
        [(names["desk-9"], Accepted), (names["ACC12"], MaxQty)]
    );
}

/// A crash in the middle of a segment's prologue leaves the last segment with part of the
/// table: recovery sees it from `table_len`, reads every record for the table instead, and
/// says so; the names keep their ids.
#[test]
fn a_partial_prologue_falls_back_to_reading_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let opts = audit::WriterOptions {
        segment_size_bytes: 4096,
        ..audit::WriterOptions::default()
    };
    let (mut w, _) = audit::Writer::open(&dir, opts.clone()).unwrap();
    let mut table = orders::AccountNames::with_capacity(3);
    for name in ["A", "B", "C"] {
        let (id, _) = table.intern(name).unwrap();
        let payload = table.record_of(id).unwrap();
        w.append(audit::KIND_ACCOUNT_NAME, 1, &payload).unwrap();
        w.push_prologue(audit::KIND_ACCOUNT_NAME, &payload).unwrap();
    }
    // Decisions until the second segment starts (with the prologue), then stop.
    let order = orders::Order {
        order_id: 1,
        ts_ns: 0,
        price: 10,
        qty: 1,
        account: BASE + 2,
        symbol: orders::Symbol::new("S1").unwrap(),
        side: orders::Side::Buy,
        kind: orders::OrderKind::New,
    };
    let mut buf = [0u8; orders::DECISION_LEN_BYTES];
    let mut input_seq = 0;
    loop {
        let d = orders::Decision {
            input_seq,
            order,
            reason: orders::Reason::Accepted,
            t_in_ns: 0,
            t_decided_ns: 0,
            t_checked_ns: 0,
            risk_session: 0,
            risk_batch: 0,
            risk_batch_orders: 0,
        };
        orders::encode_decision(&d, &mut buf);
        w.append(audit::KIND_DECISION, 1, &buf).unwrap();
        input_seq += 1;
        if w.current_segment().unwrap().file_name().unwrap() != "00000000000000000001.seg" {
            break;
        }
    }
    let last = w.current_segment().unwrap().to_path_buf();
    drop(w);
    // The intact journal: the whole table from its last segment alone.
    let spec = engine::recovery::RecoverySpec::default();
    let r = engine::recovery::recover(&dir, opts.clone(), &spec).unwrap();
    assert!(r.recovery.verified_from_seq > 1);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.account_names, table);
    drop(r);
    // Keep only the first prologue record of the last segment (record of 80 bytes at 128:
    // the newest name, C, whose table_len is 3): a crash there wrote nothing after it.
    let mut bytes = std::fs::read(&last).unwrap();
    bytes[128 + 80..].fill(0);
    std::fs::write(&last, bytes).unwrap();
    let r = engine::recovery::recover(&dir, opts, &spec).unwrap();
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("1 of 3 names") && w.contains("reading every record")),
        "{:?}",
        r.warnings
    );
    assert_eq!(r.account_names, table);
}

/// Takes `accepted` messages from `pull` (failing after `LIMIT`), lets the refused orders be
/// decided too, then stops `engine run` with SIGTERM and checks it exits cleanly.
fn receive_then_stop(pull: &zmq::Socket, mut child: std::process::Child, accepted: usize) {
    let t = std::time::Instant::now();
    let mut got = 0;
    while got < accepted {
        assert!(t.elapsed() < LIMIT, "egress stalled at {got}");
        if pull.poll(zmq::POLLIN, 100).unwrap() > 0 {
            pull.recv_bytes(0).unwrap();
            got += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert!(child.wait().unwrap().success());
}
