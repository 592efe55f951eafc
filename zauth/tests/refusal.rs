//! Real ZeroMQ sockets on loopback: a peer from a non-allowed address, or with wrong PLAIN
//! credentials, is refused by the ZAP handler; an allowed peer with the right credentials is served.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use zauth::{ClientAuth, ServerAuth, ZapHandler};

const REPLY_WAIT_MS: i64 = 1_500;

/// A REP echo server bound on loopback under `policy`; returns its endpoint.
fn echo_server(ctx: &zmq::Context, policy: &ServerAuth) -> (String, std::thread::JoinHandle<()>) {
    let rep = ctx.socket(zmq::REP).expect("socket");
    rep.set_linger(0).expect("linger");
    let endpoint = zauth::bind(ctx, &rep, "tcp://127.0.0.1:*", policy).expect("bind");
    let t = std::thread::spawn(move || loop {
        match rep.poll(zmq::POLLIN, 100) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let Ok(msg) = rep.recv_bytes(0) else { return };
        if msg == b"quit" {
            let _ = rep.send("bye", 0);
            return;
        }
        if rep.send(msg, 0).is_err() {
            return;
        }
    });
    (endpoint, t)
}

/// Sends "ping" from `source` (an address on loopback) and reports whether "ping" came back, and
/// whether the client saw an authentication failure event.
fn ping(ctx: &zmq::Context, endpoint: &str, source: &str, auth: &ClientAuth) -> (bool, bool) {
    let req = ctx.socket(zmq::REQ).expect("socket");
    req.set_linger(0).expect("linger");
    auth.apply(&req).expect("credentials");
    let monitor_ep = format!("inproc://monitor-{}", rand_suffix());
    req.monitor(&monitor_ep, zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32)
        .expect("monitor");
    let mon = ctx.socket(zmq::PAIR).expect("pair");
    mon.connect(&monitor_ep).expect("monitor connect");
    let port = endpoint.rsplit(':').next().expect("port");
    req.connect(&format!("tcp://{source}:0;127.0.0.1:{port}"))
        .expect("connect");
    req.send("ping", 0).expect("send");
    let answered = req.poll(zmq::POLLIN, REPLY_WAIT_MS).expect("poll") > 0
        && req.recv_bytes(0).expect("recv") == b"ping";
    let auth_failed = mon.poll(zmq::POLLIN, 200).expect("poll") > 0;
    (answered, auth_failed)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) ^ u64::from(std::process::id()) << 20
}

fn stop(ctx: &zmq::Context, endpoint: &str, auth: &ClientAuth, t: std::thread::JoinHandle<()>) {
    let req = ctx.socket(zmq::REQ).expect("socket");
    req.set_linger(0).expect("linger");
    auth.apply(&req).expect("credentials");
    req.connect(endpoint).expect("connect");
    req.send("quit", 0).expect("send");
    let _ = req.poll(zmq::POLLIN, REPLY_WAIT_MS);
    drop(req);
    // The server thread may be gone already; joining cannot hang past its poll interval.
    std::thread::sleep(Duration::from_millis(10));
    let _ = t.join();
}

#[test]
fn non_allowed_address_is_refused_and_allowed_one_is_served() {
    let ctx = zmq::Context::new();
    let policy = ServerAuth {
        allow: vec!["127.0.0.1/32".parse().expect("net")],
        ..ServerAuth::default()
    };
    let zap = ZapHandler::start(&ctx, &policy)
        .expect("zap")
        .expect("configured");
    let (endpoint, t) = echo_server(&ctx, &policy);
    let none = ClientAuth::default();

    let (answered, auth_failed) = ping(&ctx, &endpoint, "127.0.0.2", &none);
    assert!(!answered, "a peer from 127.0.0.2 must not be served");
    assert!(
        auth_failed,
        "the refused peer sees an authentication failure"
    );
    assert!(
        zap.stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    let (answered, _) = ping(&ctx, &endpoint, "127.0.0.1", &none);
    assert!(answered, "a peer from 127.0.0.1 is allowed");
    stop(&ctx, &endpoint, &none, t);
}

#[test]
fn wrong_credentials_are_refused_and_right_ones_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = dir.path().join("users");
    fs::write(&creds, "engine:correct-horse\n").expect("write");
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o600)).expect("chmod");
    let ctx = zmq::Context::new();
    let policy = ServerAuth {
        plain_credentials: Some(creds),
        ..ServerAuth::default()
    };
    let _zap = ZapHandler::start(&ctx, &policy)
        .expect("zap")
        .expect("configured");
    let (endpoint, t) = echo_server(&ctx, &policy);

    let wrong = ClientAuth {
        plain: Some(("engine".into(), "battery-staple".into())),
        ..ClientAuth::default()
    };
    let (answered, auth_failed) = ping(&ctx, &endpoint, "127.0.0.1", &wrong);
    assert!(!answered, "wrong password must not be served");
    assert!(auth_failed);

    let anonymous = ClientAuth::default();
    let (answered, _) = ping(&ctx, &endpoint, "127.0.0.1", &anonymous);
    assert!(!answered, "a peer without credentials must not be served");

    let right = ClientAuth {
        plain: Some(("engine".into(), "correct-horse".into())),
        ..ClientAuth::default()
    };
    let (answered, auth_failed) = ping(&ctx, &endpoint, "127.0.0.1", &right);
    assert!(answered, "right credentials are served");
    assert!(!auth_failed);
    stop(&ctx, &endpoint, &right, t);
}
