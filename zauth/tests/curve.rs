//! CURVE over real ZeroMQ sockets on loopback: the right keys connect; a wrong server key and a
//! client key missing from the server's list are refused, each with a message that says so; and
//! a TCP relay between client and server, reading every byte on the wire, finds the message
//! text in clear without CURVE and not with it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zauth::{ClientAuth, CurveClient, CurveKeyPair, Handshake, ServerAuth, ZapHandler};

const WAIT: Duration = Duration::from_secs(5);
const SECRET_TEXT: &[u8] = b"NEW ZQXJ account=ACCT-4711 price=1234.5678";

struct Keys {
    _dir: tempfile::TempDir,
    server_pair: std::path::PathBuf,
    server_pub: std::path::PathBuf,
    client_pair: std::path::PathBuf,
    client_list: std::path::PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = CurveKeyPair::generate().expect("curve");
    let (server_pair, server_pub) =
        zauth::write_key_pair(&dir.path().join("server"), &server, false).expect("write");
    let client = CurveKeyPair::generate().expect("curve");
    let (client_pair, client_pub) =
        zauth::write_key_pair(&dir.path().join("client"), &client, false).expect("write");
    Keys {
        server_pair,
        server_pub,
        client_pair,
        client_list: client_pub,
        _dir: dir,
    }
}

/// A REP echo server under `policy` on loopback; returns its endpoint. It stops with the
/// context.
fn echo_server(ctx: &zmq::Context, policy: &ServerAuth) -> String {
    let rep = ctx.socket(zmq::REP).expect("socket");
    rep.set_linger(0).expect("linger");
    let endpoint = zauth::bind(ctx, &rep, "tcp://127.0.0.1:*", policy).expect("bind");
    std::thread::spawn(move || loop {
        match rep.poll(zmq::POLLIN, 100) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let Ok(msg) = rep.recv_bytes(0) else { return };
        if rep.send(msg, 0).is_err() {
            return;
        }
    });
    endpoint
}

/// One request through `endpoint` with `auth`: the reply, or `None` within the wait.
fn ask(ctx: &zmq::Context, endpoint: &str, auth: &ClientAuth) -> Option<Vec<u8>> {
    let req = ctx.socket(zmq::REQ).expect("socket");
    req.set_linger(0).expect("linger");
    auth.apply(&req).expect("credentials");
    req.connect(endpoint).expect("connect");
    req.send(SECRET_TEXT, 0).expect("send");
    (req.poll(zmq::POLLIN, 2_000).expect("poll") > 0).then(|| req.recv_bytes(0).expect("recv"))
}

fn curve_client(
    _k: &Keys,
    server_pub: &std::path::Path,
    pair: Option<&std::path::Path>,
) -> ClientAuth {
    ClientAuth::default()
        .with_curve(server_pub, pair)
        .expect("client keys")
}

#[test]
fn curve_is_in_the_build() {
    assert!(zauth::curve_available());
    assert_eq!(zmq::has("curve"), Some(true));
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::REP).expect("socket");
    s.set_curve_server(true).expect("CURVE server option");
    CurveKeyPair::generate().expect("a key pair");
}

#[test]
fn right_keys_connect_and_wrong_ones_are_refused_clearly() {
    let k = keys();
    let ctx = zmq::Context::new();
    let policy = ServerAuth {
        curve_key: Some(k.server_pair.clone()),
        curve_clients: Some(k.client_list.clone()),
        ..ServerAuth::default()
    };
    let zap = ZapHandler::start(&ctx, &policy)
        .expect("zap")
        .expect("configured");
    let endpoint = echo_server(&ctx, &policy);
    let c2 = zmq::Context::new();

    // The listed client with the server's public key is served.
    let right = curve_client(&k, &k.server_pub, Some(&k.client_pair));
    assert_eq!(
        zauth::probe(&c2, &endpoint, zmq::REQ, &right, WAIT).expect("probe"),
        Some(Handshake::Succeeded)
    );
    assert_eq!(ask(&c2, &endpoint, &right).as_deref(), Some(SECRET_TEXT));

    // A client key not on the list: ZAP refuses, and the message names the client list.
    let stranger = curve_client(&k, &k.server_pub, None);
    let refused = zauth::probe(&c2, &endpoint, zmq::REQ, &stranger, WAIT).expect("probe");
    assert_eq!(refused, Some(Handshake::Refused { status: 400 }));
    let text = refused.expect("some").to_string();
    assert!(
        text.contains("CURVE client key is not on the server's client list"),
        "{text}"
    );
    assert_eq!(ask(&c2, &endpoint, &stranger), None);

    // A wrong server key: the server cannot open the client's hello and drops the connection;
    // the message names the server key.
    let other = CurveKeyPair::generate().expect("curve");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, other_pub) =
        zauth::write_key_pair(&dir.path().join("other"), &other, false).expect("write");
    let wrong_server = curve_client(&k, &other_pub, Some(&k.client_pair));
    let refused = zauth::probe(
        &c2,
        &endpoint,
        zmq::REQ,
        &wrong_server,
        Duration::from_secs(1),
    )
    .expect("probe");
    assert!(
        matches!(
            refused,
            Some(Handshake::Closed | Handshake::MechanismMismatch)
        ),
        "{refused:?}"
    );
    let text = refused.expect("some").to_string();
    assert!(text.contains("CURVE server key"), "{text}");
    assert_eq!(ask(&c2, &endpoint, &wrong_server), None);

    // No CURVE at all: a mechanism mismatch (or a closed handshake), never served.
    let plain = ClientAuth::default();
    assert_eq!(ask(&c2, &endpoint, &plain), None);
    assert!(
        zap.stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[test]
fn settings_that_cannot_go_together_are_refused() {
    let k = keys();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::REP).expect("socket");
    let no_key = ServerAuth {
        curve_clients: Some(k.client_list.clone()),
        ..ServerAuth::default()
    };
    let err = zauth::bind(&ctx, &s, "tcp://127.0.0.1:*", &no_key).expect_err("refused");
    assert!(
        matches!(err, zauth::AuthError::CurveClientsWithoutKey),
        "{err}"
    );
    let both = ServerAuth {
        curve_key: Some(k.server_pair.clone()),
        plain_credentials: Some(k.server_pair.clone()),
        ..ServerAuth::default()
    };
    let err = zauth::bind(&ctx, &s, "tcp://127.0.0.1:*", &both).expect_err("refused");
    assert!(matches!(err, zauth::AuthError::PlainAndCurve), "{err}");
    // A CURVE key pair alone encrypts but authenticates nobody: remote still needs more.
    let key_only = ServerAuth {
        curve_key: Some(k.server_pair.clone()),
        ..ServerAuth::default()
    };
    let err = zauth::bind(&ctx, &s, "tcp://0.0.0.0:*", &key_only).expect_err("refused");
    assert!(err.to_string().contains("CURVE client-key list"), "{err}");
    let client = ClientAuth {
        plain: Some(("u".into(), "p".into())),
        ..ClientAuth::default()
    };
    let err = client
        .with_curve(&k.server_pub, None)
        .expect_err("one mechanism");
    assert!(matches!(err, zauth::AuthError::PlainAndCurve), "{err}");
    // The client's Debug never shows its secret key.
    let c = CurveClient::from_files(&k.server_pub, Some(&k.client_pair)).expect("keys");
    let secret = zmq::z85_encode(c.key.secret()).expect("z85");
    assert!(!format!("{c:?}").contains(&secret));
}

/// A TCP relay on loopback to `target` (`host:port`): copies both directions and keeps every
/// byte that passed, for the test to read.
fn relay(target: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("relay listens");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let Ok(server) = TcpStream::connect(&target) else {
                return;
            };
            for (mut from, mut to) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                let seen = seen2.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            Ok(n) => {
                                seen.lock().expect("lock").extend_from_slice(&buf[..n]);
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

#[test]
fn the_wire_shows_the_message_without_curve_and_not_with_it() {
    let k = keys();
    let needles: [&[u8]; 3] = [b"ZQXJ", b"ACCT-4711", b"1234.5678"];
    for curve in [false, true] {
        let ctx = zmq::Context::new();
        let policy = if curve {
            ServerAuth {
                curve_key: Some(k.server_pair.clone()),
                curve_clients: Some(k.client_list.clone()),
                ..ServerAuth::default()
            }
        } else {
            ServerAuth::default()
        };
        let _zap = ZapHandler::start(&ctx, &policy).expect("zap");
        let endpoint = echo_server(&ctx, &policy);
        let (through, seen) = relay(endpoint.trim_start_matches("tcp://").to_owned());
        let auth = if curve {
            curve_client(&k, &k.server_pub, Some(&k.client_pair))
        } else {
            ClientAuth::default()
        };
        let c2 = zmq::Context::new();
        assert_eq!(
            ask(&c2, &through, &auth).as_deref(),
            Some(SECRET_TEXT),
            "served through the relay (curve {curve})"
        );
        let wire = seen.lock().expect("lock").clone();
        assert!(wire.len() > SECRET_TEXT.len(), "the relay saw the traffic");
        for needle in needles {
            assert_eq!(
                contains(&wire, needle),
                !curve,
                "{:?} in clear on the wire with curve {curve}",
                String::from_utf8_lossy(needle)
            );
        }
        if curve {
            assert!(
                contains(&wire, b"CURVE"),
                "the greeting names the mechanism"
            );
        }
    }
}

/// libzmq applies ZMQ_MAXMSGSIZE to the encrypted frames, handshake included: a server whose
/// requests are limited to 256 bytes (as `audit serve`'s) still lets a CURVE client in, and a
/// 256-byte request still arrives.
#[test]
fn a_small_message_limit_still_lets_curve_in() {
    let k = keys();
    let ctx = zmq::Context::new();
    let policy = ServerAuth {
        curve_key: Some(k.server_pair.clone()),
        ..ServerAuth::default()
    };
    let rep = ctx.socket(zmq::REP).expect("socket");
    rep.set_linger(0).expect("linger");
    rep.set_maxmsgsize(256).expect("limit");
    let endpoint = zauth::bind(&ctx, &rep, "tcp://127.0.0.1:*", &policy).expect("bind");
    // A second bind of the same socket does not widen the limit again.
    zauth::bind(&ctx, &rep, "tcp://127.0.0.1:*", &policy).expect("second bind");
    assert_eq!(
        rep.get_maxmsgsize().expect("limit"),
        zauth::CURVE_HANDSHAKE_BYTES_MAX
    );
    let c2 = zmq::Context::new();
    let req = c2.socket(zmq::REQ).expect("socket");
    req.set_linger(0).expect("linger");
    req.set_maxmsgsize(256).expect("limit");
    curve_client(&k, &k.server_pub, None)
        .apply(&req)
        .expect("curve");
    req.connect(&endpoint).expect("connect");
    req.send(vec![7u8; 256], 0).expect("send");
    assert!(
        rep.poll(zmq::POLLIN, 5_000).expect("poll") > 0,
        "request arrived"
    );
    assert_eq!(rep.recv_bytes(0).expect("recv").len(), 256);
    rep.send(vec![8u8; 256], 0).expect("reply");
    assert!(
        req.poll(zmq::POLLIN, 5_000).expect("poll") > 0,
        "reply arrived"
    );
    assert_eq!(req.recv_bytes(0).expect("recv").len(), 256);
}
