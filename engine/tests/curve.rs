//! CURVE on the engine's links with the real binaries (issue 15, docs/security.md "CURVE"):
//! keys made by `audit curve-keygen`; a `risk-server` and a `bench sink` on `tcp://0.0.0.0:*`
//! that accept only the engine's public key; `engine replay` with the servers' public keys.
//! A TCP relay in this test sits on the risk link and keeps every byte: with CURVE no order's
//! 48-byte encoding, symbol or price is on the wire; without CURVE they are (so the check can
//! fail). A wrong server key and an engine key missing from the server's list stop the start
//! with a message that says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const RUN_LIMIT: Duration = Duration::from_secs(60);

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `audit curve-keygen --out DIR/NAME`: returns (`NAME.curve`, `NAME.curve.pub`).
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = run_with_timeout(
        Command::new(other_bin("audit"))
            .arg("curve-keygen")
            .arg("--out")
            .arg(dir.join(name)),
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out));
    (
        dir.join(format!("{name}.curve")),
        dir.join(format!("{name}.curve.pub")),
    )
}

/// A TCP relay on loopback to `target` (`host:port`), keeping every byte both ways.
fn relay(target: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let Ok(server) = TcpStream::connect(&target) else {
                return;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let seen = seen2.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            Ok(n) => {
                                seen.lock().unwrap().extend_from_slice(&buf[..n]);
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    (format!("tcp://{addr}"), seen)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What a reader of the risk wire would look for: each order's 48-byte encoding, the
/// symbols, and the first order's price as the little-endian i64 it is sent as.
fn needles(orders: &[orders::Order]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for o in orders.iter().take(3) {
        let mut rec = [0u8; 48];
        orders::codec::encode_order(o, &mut rec);
        out.push((format!("order {} encoded", o.order_id), rec.to_vec()));
    }
    out.push(("symbol MSFT".into(), b"MSFT".to_vec()));
    out.push((
        format!("price {} ticks", orders[0].price),
        orders[0].price.to_le_bytes().to_vec(),
    ));
    out
}

#[test]
fn curve_on_the_risk_and_egress_links_hides_the_orders_and_refuses_wrong_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (risk_pair, risk_pub) = keygen(d, "risk");
    let (sink_pair, sink_pub) = keygen(d, "sink");
    let (engine_pair, engine_pub) = keygen(d, "engine");
    let (stranger_pair, _) = keygen(d, "stranger");
    let limits = d.join("limits.toml");
    write_builtin_limits(&limits);
    let n = 200;
    let flow = gen_orders(n, 0, 0);
    let file = d.join("orders.csv");
    write_orders(&file, &flow);
    let needles = needles(&flow);

    // CURVE on: the risk-server and the sink accept only the engine's key.
    let server = RiskServer::start_with(
        &limits,
        "tcp://0.0.0.0:*",
        &[
            OsStr::new("--curve-key"),
            risk_pair.as_os_str(),
            OsStr::new("--curve-clients"),
            engine_pub.as_os_str(),
        ],
        None,
    );
    let risk_port = server.endpoint.rsplit(':').next().unwrap().to_owned();
    let (through, seen) = relay(format!("127.0.0.1:{risk_port}"));
    let sink = Sink::start(
        "tcp://0.0.0.0:*",
        &[
            "--curve-key",
            sink_pair.to_str().unwrap(),
            "--curve-clients",
            engine_pub.to_str().unwrap(),
            "--expect",
            &n.to_string(),
        ],
        d.join("sink.json"),
    );
    let sink_ep = sink.endpoint.replace("0.0.0.0", "127.0.0.1");
    let rep = d.join("curve.json");
    let out = run_with_timeout(
        replay_cmd(&file, &d.join("j-curve"), &rep)
            .args(["--risk", &through, "--out", &sink_ep, "--curve-key"])
            .arg(&engine_pair)
            .arg("--risk-server-key")
            .arg(&risk_pub)
            .arg("--egress-server-key")
            .arg(&sink_pub),
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&rep);
    assert_eq!(r["accepted"], n as u64, "{r}");
    let (status, sink_report) = sink.finish(RUN_LIMIT);
    assert!(status.success(), "{sink_report}");
    assert_eq!(sink_report["unique"], n as u64, "{sink_report}");
    let wire = seen.lock().unwrap().clone();
    assert!(wire.len() > n * 48, "the relay carried the batches");
    assert!(contains(&wire, b"CURVE"), "the greeting names CURVE");
    for (what, bytes) in &needles {
        assert!(!contains(&wire, bytes), "{what} in clear on a CURVE link");
    }

    // A wrong risk server key: the start stops and says which key to look at.
    let out = run_with_timeout(
        replay_cmd(&file, &d.join("j-wrong-server"), &d.join("w.json"))
            .args(["--risk", &through, "--curve-key"])
            .arg(&engine_pair)
            .arg("--risk-server-key")
            .arg(&sink_pub),
        RUN_LIMIT,
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("the CURVE server key given is not this server's"),
        "{t}"
    );
    assert!(t.contains("--risk-server-key"), "names the flag: {t}");

    // An engine key the server does not list: refused by ZAP, named as such.
    let out = run_with_timeout(
        replay_cmd(&file, &d.join("j-stranger"), &d.join("s.json"))
            .args(["--risk", &through, "--curve-key"])
            .arg(&stranger_pair)
            .arg("--risk-server-key")
            .arg(&risk_pub),
        RUN_LIMIT,
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("refused the connection (ZAP status 400)")
            && t.contains("CURVE client key is not on the server's client list"),
        "{t}"
    );
    drop(server);

    // CURVE off (a loopback risk-server, no authentication): the same reader sees the orders.
    let plain_server = RiskServer::start(&limits);
    let port = plain_server.endpoint.rsplit(':').next().unwrap().to_owned();
    let (through, seen) = relay(format!("127.0.0.1:{port}"));
    let rep = d.join("clear.json");
    let out = run_with_timeout(
        replay_cmd(&file, &d.join("j-clear"), &rep).args(["--risk", &through]),
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(report(&rep)["accepted"], n as u64);
    let wire = seen.lock().unwrap().clone();
    for (what, bytes) in &needles {
        assert!(
            contains(&wire, bytes),
            "{what} not found in clear without CURVE"
        );
    }
}

#[test]
fn curve_keygen_writes_private_z85_files_and_refuses_a_git_work_tree() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (pair, public) = keygen(dir.path(), "k");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&pair), 0o600);
    assert_eq!(mode(&public), 0o644);
    let key = zauth::read_key_pair(&pair).unwrap();
    assert_eq!(zauth::read_public_key(&public).unwrap(), key.public);
    // Never overwritten silently.
    let out = run_with_timeout(
        Command::new(other_bin("audit"))
            .arg("curve-keygen")
            .arg("--out")
            .arg(dir.path().join("k")),
        RUN_LIMIT,
    );
    assert!(!out.status.success(), "{}", text(&out));
    // Inside a git work tree: refused, unless --in-work-tree.
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    let out = run_with_timeout(
        Command::new(other_bin("audit"))
            .arg("curve-keygen")
            .arg("--out")
            .arg(repo.join("k")),
        RUN_LIMIT,
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("inside the git work tree"), "{t}");
    assert!(!repo.join("k.curve").exists());
    let out = run_with_timeout(
        Command::new(other_bin("audit"))
            .arg("curve-keygen")
            .arg("--in-work-tree")
            .arg("--out")
            .arg(repo.join("k")),
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("never commit it"));
    // The secret never shows in the output.
    let secret = zmq::z85_encode(
        zauth::read_key_pair(&repo.join("k.curve"))
            .unwrap()
            .secret(),
    )
    .unwrap();
    assert!(!text(&out).contains(&secret));
}
