//! Security on remote links, with the real `audit` processes and real sockets: a remote
//! endpoint without authentication refuses to start; PLAIN credentials and the address
//! allow-list let the right client in and refuse the others promptly (no hang); journal files
//! and keys are private; the signing key never shows in output or `Debug`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use audit::{CheckpointPolicy, Durability, Publisher, Writer, WriterOptions};
use zauth::{ServerAuth, ZapHandler};

/// A refused client must give up within this (it is refused at the handshake, or times out
/// after 3 requests of `--request-timeout-ms`).
const REFUSAL_BOUND: Duration = Duration::from_secs(20);

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Runs a command to completion within `limit` (killing it and failing the test otherwise);
/// returns its status, stdout, stderr and how long it took.
fn run_bounded(cmd: &mut Command, limit: Duration) -> (ExitStatus, String, String, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    (status, out_t.join().unwrap(), err_t.join().unwrap(), took)
}

/// Starts `audit serve DIR ARGS...`; returns it (stderr still piped) and its bound endpoint.
fn start_serve(dir: &Path, args: &[&str]) -> (Kill, ChildStderr, String) {
    let mut child = Command::new(common::audit_bin())
        .arg("serve")
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    if line.is_empty() {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        panic!("audit serve {args:?} did not start: {err}");
    }
    let endpoint = line.trim().strip_prefix("listening ").unwrap().to_owned();
    (Kill(child), stderr, endpoint)
}

fn tail_cmd(sub: &str, serve: &str, until: u64, credentials: Option<&Path>) -> Command {
    let mut c = Command::new(common::audit_bin());
    c.args(["tail", "--quiet", "--request-timeout-ms", "300"])
        .args(["--sub", sub, "--serve", serve, "--until-seq"])
        .arg(until.to_string());
    if let Some(p) = credentials {
        c.arg("--credentials").arg(p);
    }
    c
}

fn summary_field(out: &str, name: &str) -> String {
    let summary = out.lines().last().unwrap_or_default();
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {summary:?}"))
        .to_owned()
}

/// `tcp://127.0.0.1:PORT` as seen from source address 127.0.0.2 (ZeroMQ's `source;dest`).
fn from_127_0_0_2(endpoint: &str) -> String {
    format!(
        "tcp://127.0.0.2:0;{}",
        endpoint.strip_prefix("tcp://").unwrap()
    )
}

#[test]
fn serve_refuses_a_remote_endpoint_without_authentication_unless_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    for ep in ["tcp://0.0.0.0:*", "tcp://*:*"] {
        let (status, _, err, _) = run_bounded(
            Command::new(common::audit_bin())
                .arg("serve")
                .arg(&dir)
                .args(["--bind", ep]),
            REFUSAL_BOUND,
        );
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains("--insecure"), "{err}");
        assert!(err.contains("refusing to bind"), "{err}");
    }
    // The operator's explicit choice: it starts, and says what it does.
    let (child, mut stderr, ep) = start_serve(&dir, &["--bind", "tcp://0.0.0.0:*", "--insecure"]);
    assert!(ep.starts_with("tcp://0.0.0.0:"), "{ep}");
    drop(child);
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(
        err.lines()
            .any(|l| l.contains(" WARN ") && l.contains("--insecure: ")),
        "{err}"
    );
    // An allow-list is authentication enough (a ZAP handler checks every peer).
    let (_child, _, ep) = start_serve(
        &dir,
        &["--bind", "tcp://0.0.0.0:*", "--allow", "10.0.0.0/8"],
    );
    assert!(ep.starts_with("tcp://0.0.0.0:"), "{ep}");
    // So is a plain address, one host (zauth::parse_allow, as for every --allow; issue 13).
    let (host, _, ep) = start_serve(&dir, &["--bind", "tcp://0.0.0.0:*", "--allow", "10.0.0.1"]);
    assert!(ep.starts_with("tcp://0.0.0.0:"), "{ep}");
    drop(host);
    // A malformed network and a credentials file others can read are refused.
    let (status, _, err, _) = run_bounded(
        Command::new(common::audit_bin())
            .arg("serve")
            .arg(&dir)
            .args(["--bind", "tcp://0.0.0.0:*", "--allow", "10.0.0.0/33"]),
        REFUSAL_BOUND,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--allow") && err.contains("is not a network"),
        "{err}"
    );
    let creds = private_file(tmp.path(), "creds", "ops:s3cret\n");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, _, err, _) = run_bounded(
        Command::new(common::audit_bin())
            .arg("serve")
            .arg(&dir)
            .args(["--bind", "tcp://127.0.0.1:*", "--plain-credentials"])
            .arg(&creds),
        REFUSAL_BOUND,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn plain_credentials_let_the_right_tail_in_and_refuse_wrong_or_missing_ones() {
    const RECORDS: u64 = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let users = private_file(tmp.path(), "users", "# who may read\nops:s3cret-Pa55\n");
    let good = private_file(tmp.path(), "good", "ops:s3cret-Pa55\n");
    let bad = private_file(tmp.path(), "bad", "ops:wrong-Pa55word\n");
    let (mut w, _) = Writer::open(&dir, common::opts(1 << 20)).unwrap();
    common::append_n(&mut w, 200, 80);
    // This process is the journal's writer: its feed requires the same credentials.
    let policy = ServerAuth {
        plain_credentials: Some(users.clone()),
        ..ServerAuth::default()
    };
    let ctx = zmq::Context::new();
    let zap = ZapHandler::start(&ctx, &policy).unwrap().unwrap();
    let mut publisher = Publisher::bind_secure(&ctx, "tcp://127.0.0.1:*", None, &policy).unwrap();
    let sub = publisher.endpoint().to_owned();
    let (_serve, _, serve) = start_serve(
        &dir,
        &[
            "--bind",
            "tcp://127.0.0.1:*",
            "--plain-credentials",
            users.to_str().unwrap(),
        ],
    );

    // Wrong password, to the gap-fill service (no feed listening at NOWHERE, so the service is
    // the only server that can refuse): refused at the handshake, at once; the password is
    // not printed.
    const NOWHERE: &str = "tcp://127.0.0.1:1";
    let (status, _, err, took) = run_bounded(
        &mut tail_cmd(NOWHERE, &serve, 200, Some(&bad)),
        REFUSAL_BOUND,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{serve} refused the connection (ZAP status 400)")),
        "{err}"
    );
    assert!(!err.contains("wrong-Pa55word"), "{err}");
    eprintln!("wrong credentials refused by audit serve after {took:?}");
    // The same against the feed.
    let (status, _, err, _) =
        run_bounded(&mut tail_cmd(&sub, &serve, 200, Some(&bad)), REFUSAL_BOUND);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("refused the connection (ZAP status 400)"),
        "{err}"
    );
    assert!(
        zap.stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // No credentials at all: the handshake fails (mechanism mismatch) or, at worst, the
    // requests time out; either way the tail ends, with exit 2.
    let (status, _, err, took) =
        run_bounded(&mut tail_cmd(NOWHERE, &serve, 200, None), REFUSAL_BOUND);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("security mechanism mismatch") || err.contains("no answer"),
        "{err}"
    );
    eprintln!("missing credentials refused after {took:?}");

    // The right credentials: live records from the feed, the rest from the service, the
    // chain verified up to the journal's head.
    let mut tail = Kill(
        tail_cmd(&sub, &serve, RECORDS, Some(&good))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = tail.0.try_wait().unwrap() {
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
    tail.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    tail.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(summary_field(&out, "seq"), RECORDS.to_string());
    assert_eq!(summary_field(&out, "hash"), hex::encode(w.head_hash()));
    let live: u64 = summary_field(&out, "live").parse().unwrap();
    assert!(
        live > 0,
        "nothing came through the authenticated feed: {out}"
    );
    assert!(
        zap.stats()
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[test]
fn the_allow_list_refuses_a_client_from_another_address() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let (mut w, _) = Writer::open(&dir, common::opts(1 << 20)).unwrap();
    common::append_n(&mut w, 50, 80);
    let policy = ServerAuth {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        ..ServerAuth::default()
    };
    let ctx = zmq::Context::new();
    let zap = ZapHandler::start(&ctx, &policy).unwrap().unwrap();
    let publisher = Publisher::bind_secure(&ctx, "tcp://127.0.0.1:*", None, &policy).unwrap();
    let sub = publisher.endpoint().to_owned();
    let (serve_child, mut serve_err, serve) = start_serve(
        &dir,
        &["--bind", "tcp://127.0.0.1:*", "--allow", "127.0.0.1/32"],
    );
    // From 127.0.0.2 to the gap-fill service (the feed from 127.0.0.1, allowed): refused by
    // the service's ZAP handler.
    let (status, _, err, took) = run_bounded(
        &mut tail_cmd(&sub, &from_127_0_0_2(&serve), 50, None),
        REFUSAL_BOUND,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{} refused the connection (ZAP status 400)",
            from_127_0_0_2(&serve)
        )),
        "{err}"
    );
    eprintln!("127.0.0.2 refused by audit serve after {took:?}");
    // From 127.0.0.2 to the feed: refused by this process's ZAP handler.
    let (status, _, err, took) = run_bounded(
        &mut tail_cmd(&from_127_0_0_2(&sub), &serve, 50, None),
        REFUSAL_BOUND,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{} refused the connection (ZAP status 400)",
            from_127_0_0_2(&sub)
        )),
        "{err}"
    );
    assert!(
        zap.stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    eprintln!("127.0.0.2 refused by the feed after {took:?}");
    // From 127.0.0.1: served, and the chain ends on the head.
    let (status, out, err, _) = run_bounded(&mut tail_cmd(&sub, &serve, 50, None), REFUSAL_BOUND);
    assert!(status.success(), "{err}");
    assert_eq!(summary_field(&out, "seq"), "50");
    assert_eq!(summary_field(&out, "hash"), hex::encode(w.head_hash()));
    // Stopped with SIGTERM, the service reports what its ZAP handler decided.
    let pid = nix::unistd::Pid::from_raw(serve_child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut err = String::new();
    serve_err.read_to_string(&mut err).unwrap();
    let counts = err
        .lines()
        .find_map(|l| {
            l.split_once(" INFO audit: authentication: ")
                .map(|(_, r)| r)
        })
        .unwrap_or_else(|| panic!("no authentication counts: {err}"));
    let numbers: Vec<u64> = counts
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        numbers.len() == 2 && numbers[0] >= 1 && numbers[1] >= 1,
        "{counts}"
    );
    drop(serve_child);
}

#[test]
fn the_documents_state_the_limits_and_flags_the_code_uses() {
    use audit::limits::*;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let feed = std::fs::read_to_string(root.join("docs/formats/audit-feed.md")).unwrap();
    let security = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let spaced = |n: usize| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        out
    };
    for needle in [
        format!("{SERVE_REQUEST_BYTES_MAX} bytes per request"),
        format!("{PUB_INBOUND_BYTES_MAX} bytes (`PUB_INBOUND_BYTES_MAX`)"),
        format!(
            "{} bytes, one full batch",
            spaced(TAIL_FEED_MESSAGE_BYTES_MAX)
        ),
        format!("{} MiB, one full reply", TAIL_REPLY_BYTES_MAX >> 20),
        format!("at most {} KiB", SERVE_ERROR_TEXT_BYTES_MAX >> 10),
        "--credentials FILE".to_owned(),
        "--plain-credentials FILE".to_owned(),
        "--allow CIDR".to_owned(),
        "--insecure".to_owned(),
    ] {
        let flat = feed.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(&needle), "audit-feed.md lacks {needle:?}");
    }
    for needle in [
        format!("at most {} KiB of a key file", KEY_FILE_BYTES_MAX >> 10),
        zauth::ZAP_ENDPOINT.to_owned(),
        format!("domain `{}`", zauth::ZAP_DOMAIN),
        "curve_is_in_the_default_build".to_owned(),
        "without_a_handler_libzmq_lets_anyone_in".to_owned(),
    ] {
        let flat = security.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(&needle.split_whitespace().collect::<Vec<_>>().join(" ")),
            "security.md lacks {needle:?}"
        );
    }
}

#[test]
fn publisher_refuses_remote_endpoints_by_default_and_auth_without_a_zap_handler() {
    let ctx = zmq::Context::new();
    let err = Publisher::bind(&ctx, "tcp://0.0.0.0:*", None).unwrap_err();
    assert!(err.to_string().contains("--insecure"), "{err}");
    // The JSON endpoint is held to the same rule.
    let err = Publisher::bind(&ctx, "tcp://127.0.0.1:*", Some("tcp://*:*")).unwrap_err();
    assert!(err.to_string().contains("--insecure"), "{err}");
    let allow = ServerAuth {
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        ..ServerAuth::default()
    };
    let err = Publisher::bind_secure(&ctx, "tcp://127.0.0.1:*", None, &allow).unwrap_err();
    assert!(
        matches!(err, audit::JournalError::NoZapHandler { .. }),
        "{err}"
    );
    let _zap = ZapHandler::start(&ctx, &allow).unwrap();
    let p =
        Publisher::bind_secure(&ctx, "tcp://0.0.0.0:*", Some("tcp://127.0.0.1:*"), &allow).unwrap();
    assert!(p.endpoint().starts_with("tcp://0.0.0.0:"));
    let insecure = ServerAuth {
        insecure: true,
        ..ServerAuth::default()
    };
    Publisher::bind_secure(&ctx, "tcp://0.0.0.0:*", None, &insecure).unwrap();
    // Loopback, ipc and inproc need nothing.
    let tmp = tempfile::tempdir().unwrap();
    let ipc = format!("ipc://{}", tmp.path().join("feed").display());
    Publisher::bind(&ctx, "tcp://127.0.0.1:*", Some(&ipc)).unwrap();
    Publisher::bind(&ctx, "inproc://feed", None).unwrap();
}

#[test]
fn journal_files_are_private_and_the_signing_key_never_shows_in_debug() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let key = audit::generate_signing_key();
    let secret_hex = hex::encode(key.to_bytes());
    let secret_list = format!("{:?}", key.to_bytes());
    let leaks = |text: &str| text.contains(&secret_hex) || text.contains(&secret_list);
    let policy = CheckpointPolicy {
        signing_key: key.clone(),
        every_records: 10,
        every_ms: 0,
    };
    let opts = WriterOptions {
        segment_size_bytes: 4096,
        durability: Durability::None,
        checkpoint: Some(policy.clone()),
    };
    for text in [
        format!("{policy:?}"),
        format!("{policy:#?}"),
        format!("{opts:?}"),
        format!("{opts:#?}"),
    ] {
        assert!(!leaks(&text), "secret key in {text}");
    }
    let (mut w, _) = Writer::open(&dir, opts).unwrap();
    common::append_n(&mut w, 200, 100);
    w.sync().unwrap();
    assert!(
        !leaks(&format!("{w:?}")),
        "secret key in the writer's Debug"
    );
    assert!(
        !leaks(&format!("{w:#?}")),
        "secret key in the writer's Debug"
    );
    drop(w);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        names.push(p.file_name().unwrap().to_string_lossy().into_owned());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    // Segments, the lock and the checkpoint file were all checked.
    assert!(common::segments(&dir).len() > 1, "{names:?}");
    assert!(names.iter().any(|n| n.contains("checkpoint")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("lock")), "{names:?}");
}

#[test]
fn the_binary_never_prints_the_secret_key() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("k");
    let dir = tmp.path().join("j");
    let run = |args: &[&str]| {
        let (status, out, err, _) = run_bounded(
            Command::new(common::audit_bin()).args(args),
            Duration::from_secs(60),
        );
        (status, format!("{out}{err}"))
    };
    let (status, out) = run(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(status.success(), "{out}");
    let key_file = tmp.path().join("k.key");
    let secret = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(secret.len(), 64);
    assert!(!out.contains(&secret), "keygen printed the secret key");
    let (status, out) = run(&[
        "append-test",
        dir.to_str().unwrap(),
        "--count",
        "50",
        "--segment-size-bytes",
        "4096",
        "--checkpoint-key",
        key_file.to_str().unwrap(),
        "--checkpoint-every",
        "10",
    ]);
    assert!(status.success(), "{out}");
    assert!(!out.contains(&secret));
    let (status, out) = run(&[
        "verify",
        dir.to_str().unwrap(),
        "--pubkey",
        tmp.path().join("k.pub").to_str().unwrap(),
    ]);
    assert!(status.success(), "{out}");
    assert!(!out.contains(&secret));
    // A damaged key file is named, its content is not quoted.
    // Two non-hex characters that no temporary path holds (`tempfile` names are
    // alphanumeric: "Zq" once appeared in the directory's name and failed the check below).
    let damaged = format!("{}@@", &secret[..62]);
    std::fs::write(&key_file, &damaged).unwrap();
    let (status, out) = run(&[
        "append-test",
        dir.to_str().unwrap(),
        "--count",
        "1",
        "--checkpoint-key",
        key_file.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("k.key") && out.contains("not a hex key"),
        "{out}"
    );
    assert!(!out.contains(&secret[..16]) && !out.contains("@@"), "{out}");
    // A key file others can read is refused before it is read.
    std::fs::write(&key_file, &secret).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (status, out) = run(&[
        "append-test",
        dir.to_str().unwrap(),
        "--count",
        "1",
        "--checkpoint-key",
        key_file.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("chmod 600"), "{out}");
    // A huge file is not read whole.
    std::fs::write(&key_file, vec![b'a'; 1 << 20]).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = audit::load_signing_key(&key_file).unwrap_err().to_string();
    assert!(err.contains("not a key file"), "{err}");
}
