//! The engine's `[security]` settings with real sockets and processes (issue 7, docs/security.md):
//! the risk REQ and egress PUSH log in with PLAIN credentials; the bound sockets (ingress PULL)
//! authenticate their peers through ZAP; a remote endpoint without authentication is refused
//! by key; no password or signing key ever shows in the engine's output.
//!
//! "Remote" on one machine: servers bind `tcp://0.0.0.0:*` (not loopback by the scope rule, so
//! authentication is required) and clients reach them on 127.0.0.1; a client from another
//! address connects from 127.0.0.2 (`tcp://127.0.0.2:0;127.0.0.1:PORT`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const RUN_LIMIT: Duration = Duration::from_secs(60);
const USER: &str = "engine";
const PASSWORD: &str = "correct-horse-7f3a";
const WRONG: &str = "battery-staple-91c2";

/// A mode-0600 file with `text`.
fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Server user list, the right client file and a wrong one.
fn credentials(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        private_file(dir, "users", &format!("{USER}:{PASSWORD}\n")),
        private_file(dir, "right", &format!("{USER}:{PASSWORD}\n")),
        private_file(dir, "wrong", &format!("{USER}:{WRONG}\n")),
    )
}

/// `tcp://0.0.0.0:PORT` as reached on loopback.
fn via_loopback(bound: &str) -> String {
    bound.replace("0.0.0.0", "127.0.0.1")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn risk_server_with_plain_credentials_serves_the_right_ones_and_names_the_wrong_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (users, right, wrong) = credentials(dir.path());
    let limits = dir.path().join("limits.toml");
    write_builtin_limits(&limits);
    let server = RiskServer::start_with(
        &limits,
        "tcp://0.0.0.0:*",
        &[OsStr::new("--plain-credentials"), users.as_os_str()],
        None,
    );
    let endpoint = via_loopback(&server.endpoint);
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(300, 0, 0));

    // The right credentials: every order decided by the server.
    let rep = dir.path().join("right.json");
    let out = run_with_timeout(
        replay_cmd(&file, &dir.path().join("j-right"), &rep)
            .args(["--risk", &endpoint, "--credentials"])
            .arg(&right),
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&rep);
    assert_eq!(r["accepted"], 300, "{r}");
    assert_eq!(r["risk"]["timeouts"], 0, "{r}");

    // A wrong password: refused at start-up, naming the endpoint; nothing decided.
    let journal = dir.path().join("j-wrong");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("wrong.json"))
            .args(["--risk", &endpoint, "--credentials"])
            .arg(&wrong),
        RUN_LIMIT,
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains(&format!(
            "risk service {endpoint} refused the connection (ZAP status 400)"
        )),
        "{t}"
    );
    assert!(t.contains("--credentials"), "names the way out: {t}");
    assert!(
        !t.contains(WRONG) && !t.contains(PASSWORD),
        "no password in output: {t}"
    );
    assert!(!journal.exists() || decisions(&journal).is_empty());

    // No credentials at all: the mechanism mismatch is named.
    let out = run_with_timeout(
        replay_cmd(
            &file,
            &dir.path().join("j-none"),
            &dir.path().join("none.json"),
        )
        .args(["--risk", &endpoint]),
        RUN_LIMIT,
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    // A mechanism mismatch, or (when the server noticed it first on every attempt) a closed
    // handshake: both say credentials are required.
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("requires credentials (PLAIN)"), "{t}");
}

/// A downstream PULL in this process that requires PLAIN credentials; counts the orders of the
/// egress frames it receives.
struct SecureSink {
    endpoint: String,
    orders: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SecureSink {
    fn start(users: &Path) -> SecureSink {
        let users = users.to_owned();
        let orders = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o2, s2) = (orders.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let ctx = zmq::Context::new();
            let policy = zauth::ServerAuth {
                plain_credentials: Some(users),
                ..zauth::ServerAuth::default()
            };
            let _zap = zauth::ZapHandler::start(&ctx, &policy).unwrap();
            let pull = ctx.socket(zmq::PULL).unwrap();
            pull.set_linger(0).unwrap();
            let ep = zauth::bind(&ctx, &pull, "tcp://0.0.0.0:*", &policy).unwrap();
            tx.send(ep).unwrap();
            while !s2.load(Relaxed) {
                if pull.poll(zmq::POLLIN, 20).unwrap() == 0 {
                    continue;
                }
                let msg = pull.recv_bytes(0).unwrap();
                let frame = engine::frames::EgressFrame::parse(&msg).expect("an egress frame");
                o2.fetch_add(frame.len() as u64, Relaxed);
            }
        });
        let endpoint = via_loopback(&rx.recv_timeout(Duration::from_secs(10)).unwrap());
        SecureSink {
            endpoint,
            orders,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SecureSink {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn egress_logs_in_to_a_sink_that_requires_credentials_and_stops_clearly_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (users, right, wrong) = credentials(dir.path());
    let sink = SecureSink::start(&users);
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(200, 0, 0));

    let out = run_with_timeout(
        replay_cmd(
            &file,
            &dir.path().join("j-right"),
            &dir.path().join("r.json"),
        )
        .args(["--out", &sink.endpoint, "--credentials"])
        .arg(&right),
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out));
    let t = Instant::now();
    while sink.orders.load(Relaxed) < 200 {
        assert!(
            t.elapsed() < RUN_LIMIT,
            "the sink got {}",
            sink.orders.load(Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Refused: egress would wait for ever; the engine stops at once with exit 1 instead.
    let journal = dir.path().join("j-wrong");
    let started = Instant::now();
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("w.json"))
            .args(["--rate", "1000", "--out", &sink.endpoint, "--credentials"])
            .arg(&wrong),
        RUN_LIMIT,
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "egress {} refused the connection (ZAP status 400)",
            sink.endpoint
        )),
        "{t}"
    );
    assert!(
        !t.contains(WRONG) && !t.contains(PASSWORD),
        "no password in output: {t}"
    );
    eprintln!(
        "refused egress stopped the engine after {:?}",
        started.elapsed()
    );
    assert_eq!(
        sink.orders.load(Relaxed),
        200,
        "nothing reached the sink without credentials"
    );
    // Stopped like a crash: the journal is intact (a torn tail at most).
    if journal.exists() {
        let out = run_with_timeout(
            Command::new(other_bin("audit"))
                .arg("verify")
                .arg(&journal)
                .arg("--allow-torn-tail"),
            RUN_LIMIT,
        );
        assert!(out.status.success(), "{}", text(&out));
    }
}

#[test]
fn run_refuses_a_remote_ingress_without_authentication_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"tcp://0.0.0.0:*\"\n[journal]\ndir = \"{}\"\n",
            dir.path().join("journal").display()
        ),
    )
    .unwrap();
    let out = run_with_timeout(
        Command::new(engine_bin())
            .arg("run")
            .arg("--config")
            .arg(&config),
        RUN_LIMIT,
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("ingress.bind: tcp://0.0.0.0:* is not loopback or ipc"),
        "{t}"
    );
    assert!(t.contains("security.insecure"), "names the way out: {t}");
    assert!(!dir.path().join("journal").exists(), "nothing touched");
}

#[test]
fn run_ingress_under_security_takes_orders_only_from_allowed_logged_in_peers() {
    let dir = tempfile::tempdir().unwrap();
    let (users, right, wrong) = credentials(dir.path());
    let journal = dir.path().join("journal");
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"tcp://0.0.0.0:*\"\n[journal]\ndir = \"{}\"\n\
             [security]\nallow = [\"127.0.0.1/32\"]\nplain_credentials = \"{}\"\ncredentials = \"{}\"\n",
            journal.display(),
            users.display(),
            right.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(engine_bin())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    let line = wait_for_line(&stderr, "ingress bound to ", RUN_LIMIT);
    let bound = line
        .split("ingress bound to ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let ingress = via_loopback(&bound);
    let ctx = zmq::Context::new();
    let auth = |path: &Path| zauth::ClientAuth::from_file(path).unwrap();
    let wait = Duration::from_secs(10);

    // Refused: a wrong password, no credentials, the right ones from a non-allowed address.
    let refused = zauth::probe(&ctx, &ingress, zmq::PUSH, &auth(&wrong), wait).unwrap();
    assert!(
        matches!(refused, Some(zauth::Handshake::Refused { .. })),
        "{refused:?}"
    );
    let none = zauth::probe(
        &ctx,
        &ingress,
        zmq::PUSH,
        &zauth::ClientAuth::default(),
        wait,
    );
    assert!(
        matches!(
            none.unwrap(),
            Some(zauth::Handshake::MechanismMismatch | zauth::Handshake::Closed)
        ),
        "no credentials refused"
    );
    let from_127_0_0_2 = format!("tcp://127.0.0.2:0;{}", ingress.trim_start_matches("tcp://"));
    let elsewhere = zauth::probe(&ctx, &from_127_0_0_2, zmq::PUSH, &auth(&right), wait).unwrap();
    assert!(
        matches!(elsewhere, Some(zauth::Handshake::Refused { .. })),
        "{elsewhere:?}"
    );

    // Let in: the right credentials from 127.0.0.1; its orders are decided.
    let push = ctx.socket(zmq::PUSH).unwrap();
    auth(&right).apply(&push).unwrap();
    let watch = zauth::HandshakeWatch::start(&ctx, &push).unwrap();
    push.connect(&ingress).unwrap();
    assert_eq!(
        zauth::wait_decisive(&watch, wait).unwrap(),
        Some(zauth::Handshake::Succeeded)
    );
    let flow = gen_orders(3, 0, 0);
    push.send(engine::frames::encode_ingress_frame(&flow), 0)
        .unwrap();
    drop(push);
    // Bounded wait for the decisions, then an orderly stop.
    let t = Instant::now();
    while !journal.exists() || decisions(&journal).len() < 3 {
        assert!(t.elapsed() < RUN_LIMIT, "the orders were never decided");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        decisions(&journal).len(),
        3,
        "only the logged-in peer's orders"
    );
    let mut all: Vec<String> = stdout.iter().collect();
    all.extend(stderr.iter());
    let all = all.join("\n");
    assert!(
        !all.contains(PASSWORD) && !all.contains(WRONG),
        "no password in output: {all}"
    );
}

#[test]
fn no_password_or_signing_key_in_the_output_even_at_debug() {
    let dir = tempfile::tempdir().unwrap();
    let (_users, right, _wrong) = credentials(dir.path());
    let prefix = dir.path().join("audit");
    let out = run_with_timeout(
        Command::new(other_bin("audit"))
            .arg("keygen")
            .arg("--out")
            .arg(&prefix),
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out));
    let key_file = prefix.with_extension("key");
    let secret = std::fs::read_to_string(&key_file).unwrap();
    let secret = secret.trim();
    assert!(secret.len() >= 64, "a hex key");
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(50, 0, 0));
    let out = run_with_timeout(
        replay_cmd(
            &file,
            &dir.path().join("journal"),
            &dir.path().join("r.json"),
        )
        .env("RUST_LOG", "trace")
        .arg("--checkpoint-key")
        .arg(&key_file)
        .arg("--credentials")
        .arg(&right),
        RUN_LIMIT,
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains(secret), "the signing key shows in the output");
    assert!(!t.contains(PASSWORD), "the password shows in the output");
}

/// The real `bench sink` with `--plain-credentials`: the engine's egress logs in with the
/// right file and every accepted order arrives once; a sink bound on a non-loopback endpoint
/// without any authentication refuses to start.
#[test]
fn bench_sink_with_plain_credentials_takes_the_engines_login() {
    let dir = tempfile::tempdir().unwrap();
    let (users, right, _wrong) = credentials(dir.path());
    let n = 300;
    let sink = Sink::start(
        "tcp://0.0.0.0:*",
        &[
            "--plain-credentials",
            users.to_str().unwrap(),
            "--expect",
            &n.to_string(),
        ],
        dir.path().join("sink.json"),
    );
    let endpoint = via_loopback(&sink.endpoint);
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(n, 0, 0));
    let out = run_with_timeout(
        replay_cmd(&file, &dir.path().join("j"), &dir.path().join("r.json"))
            .args(["--out", &endpoint, "--credentials"])
            .arg(&right),
        RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out));
    let (status, report) = sink.finish(RUN_LIMIT);
    assert!(status.success(), "{report}");
    assert_eq!(report["unique"], n as u64, "{report}");
    assert_eq!(report["duplicates"], 0u64, "{report}");

    let out = run_with_timeout(
        Command::new(other_bin("bench")).args([
            "sink",
            "--bind",
            "tcp://0.0.0.0:*",
            "--expect",
            "1",
        ]),
        RUN_LIMIT,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0.0.0.0"), "{}", text(&out));
}
