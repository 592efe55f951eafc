//! systemd readiness (`Type=notify`, deploy/systemd/) with the real binaries: each of
//! `engine run`, `risk-server` and `audit serve` is started with `NOTIFY_SOCKET` pointing at a
//! unix datagram socket of this test, and `READY=1` must arrive, and only once its TCP ports
//! accept connections (checked the moment the datagram is read). Without `NOTIFY_SOCKET` they
//! start as before (the other tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const READY_LIMIT: Duration = Duration::from_secs(60);

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `cmd` with `NOTIFY_SOCKET` set, waits for `READY=1` and checks at that moment that
/// every port in `ports` accepts a TCP connection. Returns the child and the datagrams seen.
fn start_and_wait_ready(dir: &Path, mut cmd: Command, ports: &[u16]) -> (Kill, Vec<String>) {
    let sock_path = dir.join(format!("notify-{}.sock", ports[0]));
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut child = Kill(
        cmd.env("NOTIFY_SOCKET", &sock_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + READY_LIMIT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "no READY=1 within {READY_LIMIT:?}: {seen:?}"
        );
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("exited before READY=1 ({status}): {seen:?}");
        }
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let ready = text.lines().any(|l| l == "READY=1");
        seen.push(text);
        if ready {
            for port in ports {
                TcpStream::connect(("127.0.0.1", *port))
                    .unwrap_or_else(|e| panic!("READY=1 came before port {port} answered: {e}"));
            }
            return (child, seen);
        }
    }
}

#[test]
fn engine_run_risk_server_and_audit_serve_notify_readiness_once_their_ports_answer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // risk-server
    let limits = d.join("limits.toml");
    write_builtin_limits(&limits);
    let risk_port = free_port();
    let mut cmd = Command::new(other_bin("risk-server"));
    cmd.arg("--config")
        .arg(&limits)
        .args(["--bind", &format!("tcp://127.0.0.1:{risk_port}")]);
    let (_risk, seen) = start_and_wait_ready(d, cmd, &[risk_port]);
    assert_eq!(seen.len(), 1, "{seen:?}");

    // engine run: ingress and metrics, the journal recovered, the risk-server above reached.
    let journal = d.join("journal");
    let (ingress, metrics) = (free_port(), free_port());
    let config = d.join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"tcp://127.0.0.1:{ingress}\"\n[risk]\nmode = \"remote\"\n\
             endpoints = [\"tcp://127.0.0.1:{risk_port}\"]\n[journal]\ndir = \"{}\"\n\
             [metrics]\nbind = \"127.0.0.1:{metrics}\"\n",
            journal.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(engine_bin());
    cmd.arg("run").arg("--config").arg(&config);
    let (_engine, seen) = start_and_wait_ready(d, cmd, &[ingress, metrics]);
    assert_eq!(seen.len(), 1, "{seen:?}");

    // audit serve on the engine's journal.
    let serve_port = free_port();
    let mut cmd = Command::new(other_bin("audit"));
    cmd.arg("serve")
        .arg(&journal)
        .args(["--bind", &format!("tcp://127.0.0.1:{serve_port}")]);
    let (_serve, seen) = start_and_wait_ready(d, cmd, &[serve_port]);
    assert_eq!(seen.len(), 1, "{seen:?}");
}

/// The units of deploy/systemd/ hold what a tuned host needs, and `systemd-analyze verify`
/// (where installed) finds nothing to say about them, with the binaries' paths pointed at the
/// ones just built. verify exits 0 even for unknown keys or bad values (it only warns), so any
/// output fails the test too.
#[test]
fn deploy_units_hold_the_required_settings_and_verify_cleanly() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let units = ["titanic-engine", "titanic-risk", "titanic-audit-serve"];
    for name in units {
        let text = std::fs::read_to_string(deploy.join(format!("{name}.service"))).unwrap();
        let mut all = text.clone();
        let dropin = deploy.join(format!("{name}.service.d"));
        if let Ok(dir) = std::fs::read_dir(&dropin) {
            for f in dir {
                all.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
            }
        }
        let has = |line: &str| all.lines().any(|l| l.trim() == line);
        let starts = |prefix: &str| all.lines().any(|l| l.trim().starts_with(prefix));
        assert!(has("Type=notify"), "{name}: Type=notify");
        assert!(has("Restart=on-failure"), "{name}: Restart=on-failure");
        assert!(has("LimitMEMLOCK=infinity"), "{name}: LimitMEMLOCK");
        assert!(
            starts("CPUAffinity="),
            "{name}: CPUAffinity (unit or drop-in)"
        );
        assert!(
            all.lines()
                .any(|l| l.starts_with("ExecStartPre=-") && l.contains("tune-host.sh --check")),
            "{name}: ExecStartPre running tune-host.sh --check in warn mode"
        );
    }
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        skip(
            "deploy_units_hold_the_required_settings_and_verify_cleanly",
            "systemd-analyze is not installed (apt-get install systemd)",
        );
        return;
    };
    assert!(version.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tune = repo.join("scripts/tune-host.sh");
    let bins = [
        ("/usr/local/bin/engine", engine_bin()),
        ("/usr/local/bin/risk-server", other_bin("risk-server")),
        ("/usr/local/bin/audit", other_bin("audit")),
        ("/usr/local/lib/titanic/tune-host.sh", tune),
    ];
    let mut paths = Vec::new();
    for name in units {
        let mut text = std::fs::read_to_string(deploy.join(format!("{name}.service"))).unwrap();
        for (from, to) in &bins {
            text = text.replace(from, to.to_str().unwrap());
        }
        let p = tmp.path().join(format!("{name}.service"));
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warns: {said}"
    );
}
