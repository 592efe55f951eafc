//! `risk-server --allow` takes a plain address as well as a network (issue 13 item 17): the
//! same parser as the engine's `security.allow`, `audit serve` and `bench sink`
//! (`zauth::parse_allow`).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn a_plain_address_is_allowed_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    // Refused before with "invalid IP address syntax".
    let server = start(dir.path(), &cfg, &["--allow", "127.0.0.1"], 1);
    let ctx = zmq::Context::new();
    let reply = request_text(
        &ctx,
        server.endpoint(),
        br#"{"symbol":"AAPL","quantity":1,"price":585.33}"#,
    );
    assert_eq!(reply, "OK");
    drop(server);

    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["--bind", "tcp://127.0.0.1:*", "--allow", "localhost"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--allow") && err.contains("is not a network"),
        "{err}"
    );
}
