//! CURVE on the audit journal's sockets (docs/security.md, "CURVE"): the live PUB feed of a
//! writer in this process and the real `audit serve` share one key pair and accept only the
//! listed client key; the real `audit tail` with that key follows the journal to its head
//! (records from the encrypted feed and from the service); a tail with another client key is
//! refused at once with exit 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audit::{Publisher, Writer};
use zauth::{CurveKeyPair, ServerAuth, ZapHandler};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keys(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = CurveKeyPair::generate().unwrap();
    zauth::write_key_pair(&dir.join(name), &key, false).unwrap()
}

fn tail(sub: &str, serve: &str, until: u64, server_pub: &Path, key: &Path) -> Command {
    let mut c = Command::new(common::audit_bin());
    c.args(["tail", "--quiet", "--request-timeout-ms", "300"])
        .args(["--sub", sub, "--serve", serve, "--until-seq"])
        .arg(until.to_string())
        .arg("--curve-server-key")
        .arg(server_pub)
        .arg("--curve-key")
        .arg(key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn curve_feed_and_service_serve_the_listed_tail_and_refuse_another_key() {
    const RECORDS: u64 = 600;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (server_pair, server_pub) = keys(t, "host");
    let (client_pair, client_pub) = keys(t, "tail");
    let (stranger_pair, _) = keys(t, "stranger");
    let dir = t.join("j");
    let (mut w, _) = Writer::open(&dir, common::opts(1 << 20)).unwrap();
    common::append_n(&mut w, 200, 80);
    let policy = ServerAuth {
        curve_key: Some(server_pair.clone()),
        curve_clients: Some(client_pub.clone()),
        ..ServerAuth::default()
    };
    let ctx = zmq::Context::new();
    let _zap = ZapHandler::start(&ctx, &policy).unwrap().unwrap();
    let mut publisher = Publisher::bind_secure(&ctx, "tcp://0.0.0.0:*", None, &policy).unwrap();
    let sub = publisher.endpoint().replace("0.0.0.0", "127.0.0.1");
    let mut serve = Command::new(common::audit_bin())
        .arg("serve")
        .arg(&dir)
        .args(["--bind", "tcp://0.0.0.0:*", "--curve-key"])
        .arg(&server_pair)
        .arg("--curve-clients")
        .arg(&client_pub)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _serve = Kill(serve);
    let endpoint = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("audit serve did not start: {line:?}"))
        .replace("0.0.0.0", "127.0.0.1");

    // Another client key: refused by the service's ZAP handler, exit 2, at once.
    let started = Instant::now();
    let out = tail(
        "tcp://127.0.0.1:1",
        &endpoint,
        200,
        &server_pub,
        &stranger_pair,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("refused the connection (ZAP status 400)")
            && err.contains("CURVE client key is not on the server's client list (--curve-key)"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // The listed key: live records from the encrypted feed, the rest from the service.
    let mut child = Kill(
        tail(&sub, &endpoint, RECORDS, &server_pub, &client_pair)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tail did not finish");
        let n = (RECORDS + 1 - w.next_seq()).min(10);
        for r in common::append_n(&mut w, n, 80) {
            publisher
                .publish(r.seq, &r.hash, r.kind, r.ts_ns, &r.payload)
                .unwrap();
        }
        publisher.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    let summary = out.lines().last().unwrap_or_default().to_owned();
    let field = |name: &str| {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {summary:?}"))
            .to_owned()
    };
    assert_eq!(field("seq"), RECORDS.to_string());
    assert_eq!(field("hash"), hex::encode(w.head_hash()));
    let live: u64 = field("live").parse().unwrap();
    assert!(live > 0, "nothing came through the CURVE feed: {out}");
}
