//! Issue 14 item 5: JSON orders without `order_id` on `engine run`'s PULL get `2^63 +
//! input_seq` (`orders::order_ids`), with the real binary: the ids are in the journal and on the
//! JSON egress, they survive a `kill -9` and restart without reuse, the tail the restart
//! re-sends carries the same ids (so an old consumer dedupes by `order_id`), and an explicit
//! `order_id` works as before (its repeat is still caught as a duplicate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use orders::Reason;

const LIMIT: Duration = Duration::from_secs(30);
const ASSIGNED: u64 = 1 << 63;

struct Service {
    child: Child,
    ingress: String,
    next_input_seq: u64,
    stderr: Receiver<String>,
}

fn start_service(config: &Path) -> Service {
    let mut child = Command::new(engine_bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let line = wait_for_line(&stderr, "ingress bound to ", LIMIT);
    let ingress = line
        .split("ingress bound to ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let next_input_seq = line
        .split("next input_seq ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Service {
        child,
        ingress,
        next_input_seq,
        stderr,
    }
}

/// The order ids of the JSON egress messages received within `limit` until `until` holds.
fn receive_until(
    pull: &zmq::Socket,
    got: &mut Vec<u64>,
    until: impl Fn(&[u64]) -> bool,
    limit: Duration,
) {
    let t = Instant::now();
    while !until(got) {
        assert!(t.elapsed() < limit, "egress stalled; got {got:?}");
        if pull.poll(zmq::POLLIN, 100).unwrap() == 0 {
            continue;
        }
        let msg = pull.recv_bytes(0).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&msg).unwrap();
        got.push(v["order_id"].as_u64().expect("order_id is a u64"));
    }
}

fn json_order(id: Option<u64>) -> String {
    let id = id.map_or(String::new(), |id| format!(r#""order_id":{id},"#));
    // The same content every time: identical orders without an id are distinct orders.
    format!(r#"{{{id}"account":7,"symbol":"AAPL","side":"B","quantity":100,"price":185.25}}"#)
}

#[test]
fn json_orders_without_an_id_get_restart_safe_ids() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).unwrap();
    pull.bind("tcp://127.0.0.1:*").unwrap();
    let downstream = pull.get_last_endpoint().unwrap().unwrap();
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"tcp://127.0.0.1:*\"\n[journal]\ndir = \"{}\"\n[egress]\nconnect = \"{downstream}\"\nformat = \"json\"\n",
            journal.display(),
        ),
    )
    .unwrap();

    // Run 1: 20 identical orders without an id, an explicit id twice (the repeat is a
    // duplicate), an explicit id in the reserved range (refused, never decided).
    let svc = start_service(&config);
    assert_eq!(svc.next_input_seq, 0);
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.connect(&svc.ingress).unwrap();
    for _ in 0..20 {
        push.send(json_order(None).as_str(), 0).unwrap();
    }
    push.send(json_order(Some(5)).as_str(), 0).unwrap();
    push.send(json_order(Some(5)).as_str(), 0).unwrap();
    push.send(json_order(Some(ASSIGNED + 3)).as_str(), 0)
        .unwrap();
    let mut egress = Vec::new();
    receive_until(&pull, &mut egress, |g| g.len() >= 21, LIMIT);
    let first_run: Vec<u64> = egress.clone();
    assert_eq!(
        first_run,
        (0..20).map(|s| ASSIGNED + s).chain([5]).collect::<Vec<_>>(),
        "2^63 + input_seq for each order without an id, the explicit id as sent"
    );
    // More orders, and kill -9 while they are in flight.
    for _ in 0..2000 {
        push.send(json_order(None).as_str(), 0).unwrap();
    }
    // Some of them decided and sent downstream, the rest still in flight.
    receive_until(&pull, &mut egress, |g| g.len() >= 21 + 50, LIMIT);
    signal(&svc.child, Signal::SIGKILL);
    let mut child = svc.child;
    child.wait().unwrap();
    drop(push);

    // Run 2 on the same journal: input_seq continues after the last journaled decision.
    let before_restart = decisions(&journal);
    eprintln!(
        "kill -9 with {} of 2022 orders journaled",
        before_restart.len()
    );
    let svc = start_service(&config);
    assert_eq!(svc.next_input_seq, before_restart.len() as u64);
    let resumed_at = svc.next_input_seq;
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.connect(&svc.ingress).unwrap();
    for _ in 0..10 {
        push.send(json_order(None).as_str(), 0).unwrap();
    }
    receive_until(
        &pull,
        &mut egress,
        |g| g.iter().filter(|&&id| id >= ASSIGNED + resumed_at).count() >= 10,
        LIMIT,
    );
    signal(&svc.child, Signal::SIGTERM);
    let mut child = svc.child;
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < LIMIT, "SIGTERM must end the service");
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<String> = svc.stderr.iter().collect();
    assert!(status.success(), "{lines:#?}");

    audit_verify(&journal);
    let ds = decisions(&journal);
    assert_eq!(ds.len() as u64, resumed_at + 10);
    // The first run's decisions are unchanged by the restart.
    assert_eq!(&ds[..before_restart.len()], &before_restart[..]);
    let mut accepted = BTreeSet::new();
    for (i, (_, d)) in ds.iter().enumerate() {
        assert_eq!(d.input_seq, i as u64, "input_seq is dense");
        match d.input_seq {
            20 => assert_eq!((d.order.order_id, d.reason), (5, Reason::Accepted)),
            21 => assert_eq!(
                (d.order.order_id, d.reason),
                (5, Reason::DuplicateOrderId),
                "an explicit id's repeat is still a duplicate"
            ),
            s => {
                assert_eq!(d.order.order_id, ASSIGNED + s, "{d:?}");
                assert_eq!(d.reason, Reason::Accepted, "no false duplicate: {d:?}");
            }
        }
        if d.reason == Reason::Accepted {
            assert!(accepted.insert(d.order.order_id), "id reused: {d:?}");
        }
    }
    // Downstream: every accepted id arrived; what came twice is the tail the restart re-sent,
    // with the same ids (an old consumer dedupes by order_id); nothing else.
    let mut counts = BTreeMap::<u64, u32>::new();
    for id in &egress {
        *counts.entry(*id).or_default() += 1;
    }
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), accepted);
    assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
    assert!(
        counts
            .iter()
            .all(|(&id, &n)| n == 1 || id < ASSIGNED + resumed_at),
        "only orders decided before the kill are re-sent"
    );
}
