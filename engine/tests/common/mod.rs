//! Helpers shared by the engine's integration tests: the real binaries, order files, journals.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use orders::{Decision, Order, OrderKind, Side, Symbol};

/// The engine binary of this crate.
pub fn engine_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_engine"))
}

/// `audit`, `risk-server` and `bench` from their crates, built once per test binary with the
/// profile this test was built with. Their paths come from cargo itself (the
/// `compiler-artifact` messages of the build name each executable), never from a guess about
/// the target directory, so `CARGO_TARGET_DIR`, `--target` and `--release` all find the binary
/// that was just built. The build's progress goes to the test's stderr.
pub fn other_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<std::collections::HashMap<String, PathBuf>> = OnceLock::new();
    let bins = BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--message-format=json-render-diagnostics",
            "--bin",
            "audit",
            "--bin",
            "risk-server",
            "--bin",
            "bench",
            "-p",
            "audit",
            "-p",
            "risk",
            "-p",
            "bench",
        ]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let out = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo build runs");
        assert!(out.status.success(), "building the other binaries failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact")
            .filter_map(|m| {
                let exe = m["executable"].as_str()?;
                Some((m["target"]["name"].as_str()?.to_owned(), PathBuf::from(exe)))
            })
            .collect()
    });
    let p = bins
        .get(name)
        .unwrap_or_else(|| panic!("cargo built no binary named {name}: {bins:?}"));
    assert!(p.exists(), "{} missing after cargo build", p.display());
    p.clone()
}

/// A deterministic order flow: new orders over 4 accounts and 3 symbols with prices around a
/// reference; every `reject_every`-th order has a quantity above the built-in 100 000 limit
/// (max-qty), so the flow mixes acceptances and rejections.
pub fn gen_orders(n: usize, reject_every: usize, id_base: u64) -> Vec<Order> {
    let syms = ["AAPL", "MSFT", "IBM"];
    (0..n)
        .map(|i| Order {
            order_id: id_base + i as u64 + 1,
            ts_ns: 1_000_000 * i as u64,
            price: 1_000_000 + (i % 7) as i64 * 100,
            qty: if reject_every > 0 && i % reject_every == reject_every - 1 {
                5_000_000
            } else {
                10 + (i % 5) as u64
            },
            account: 1 + (i % 4) as u32,
            symbol: Symbol::new(syms[i % 3]).unwrap(),
            side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            kind: OrderKind::New,
        })
        .collect()
}

/// Writes `orders` as a CSV order file.
pub fn write_orders(path: &Path, orders: &[Order]) {
    orders::files::write_csv(path, orders.iter().copied()).expect("write csv");
}

/// Runs a command to completion with a deadline; panics (after killing it) on timeout.
pub fn run_with_timeout(mut cmd: impl std::borrow::BorrowMut<Command>, limit: Duration) -> Output {
    let cmd = cmd.borrow_mut();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out_rx = lines_of(child.stdout.take().unwrap());
    let err_rx = lines_of(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out: Vec<String> = out_rx.try_iter().collect();
            let err: Vec<String> = err_rx.try_iter().collect();
            panic!("{cmd:?} did not finish within {limit:?}\nstdout:\n{out:#?}\nstderr:\n{err:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let collect = |rx: mpsc::Receiver<String>| {
        let mut s = String::new();
        // The reader threads end at EOF, which follows the exit.
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
            s.push_str(&l);
            s.push('\n');
        }
        s.into_bytes()
    };
    Output {
        status,
        stdout: collect(out_rx),
        stderr: collect(err_rx),
    }
}

/// Reads lines of a child's stream on a thread; returns a receiver of lines.
pub fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns it.
pub fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) if l.contains(needle) => return l,
            Ok(l) => seen.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("no line with {needle:?} within {limit:?}; saw {seen:?}");
}

/// A `bench sink` process.
pub struct Sink {
    pub child: Child,
    pub endpoint: String,
    pub report: PathBuf,
    pub stderr: mpsc::Receiver<String>,
}

impl Sink {
    pub fn start(bind: &str, extra: &[&str], report: PathBuf) -> Sink {
        let mut child = Command::new(other_bin("bench"))
            .arg("sink")
            .args(["--bind", bind, "--report"])
            .arg(&report)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sink");
        let out = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let line = wait_for_line(&out, "sink: bound to ", Duration::from_secs(20));
        let endpoint = line.trim_start_matches("sink: bound to ").trim().to_owned();
        Sink {
            child,
            endpoint,
            report,
            stderr,
        }
    }

    /// Waits for the sink to exit; returns its status and report.
    pub fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, serde_json::Value) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let errs: Vec<String> = self.stderr.try_iter().collect();
                panic!("sink did not finish within {limit:?}: {errs:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let errs: Vec<String> = self.stderr.try_iter().collect();
        let text = std::fs::read_to_string(&self.report)
            .unwrap_or_else(|e| panic!("sink report: {e}; stderr {errs:?}"));
        (status, serde_json::from_str(&text).unwrap())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every decision in a journal, in record order, with its sequence number.
pub fn decisions(dir: &Path) -> Vec<(u64, Decision)> {
    let reader = audit::Reader::open(dir).expect("open journal");
    reader
        .iter_from(1)
        .map(|r| {
            let r = r.expect("intact record");
            assert_eq!(r.kind, audit::KIND_DECISION, "only decisions expected");
            (r.seq, orders::decode_decision(&r.payload).expect("decodes"))
        })
        .collect()
}

/// `audit verify DIR` must pass.
pub fn audit_verify(dir: &Path) {
    let out = run_with_timeout(
        Command::new(other_bin("audit")).arg("verify").arg(dir),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "audit verify failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a JSON report.
pub fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written")).expect("json")
}

/// The engine's replay command with test defaults (backoff idle, no progress bar).
pub fn replay_cmd(file: &Path, journal: &Path, report: &Path) -> Command {
    let mut c = Command::new(engine_bin());
    c.arg("replay")
        .arg(file)
        .arg("--journal")
        .arg(journal)
        .arg("--report")
        .arg(report)
        .arg("--no-progress");
    c
}

/// [`replay_cmd`] in one threading mode (`--threading MODE`).
pub fn replay_cmd_in(mode: &str, file: &Path, journal: &Path, report: &Path) -> Command {
    let mut c = replay_cmd(file, journal, report);
    c.args(["--threading", mode]);
    c
}

/// Runs a guarantee test (a function taking the threading mode) once in each mode:
/// `NAME::dedicated`, `NAME::split` and `NAME::shared`.
#[macro_export]
macro_rules! in_each_threading_mode {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn dedicated() {
                super::$name("dedicated")
            }
            #[test]
            fn split() {
                super::$name("split")
            }
            #[test]
            fn shared() {
                super::$name("shared")
            }
        }
    )+};
}

/// Sends a signal to a child.
/// `engine run --config CONFIG`, its stderr read line by line: the child, those lines, and the
/// endpoint its ingress bound (from its `ingress bound to ENDPOINT; …` line, within `limit`).
pub fn start_engine_run(config: &Path, limit: Duration) -> (Child, mpsc::Receiver<String>, String) {
    let mut child = Command::new(engine_bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let line = wait_for_line(&stderr, "ingress bound to ", limit);
    let ingress = line
        .split("ingress bound to ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (child, stderr, ingress)
}

pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("kill");
}

/// A risk-server process on a free port.
pub struct RiskServer {
    pub child: Child,
    pub endpoint: String,
}

impl RiskServer {
    pub fn start(limits: &Path) -> RiskServer {
        RiskServer::start_with(limits, "tcp://127.0.0.1:*", &[], None)
    }

    /// A risk-server bound to `bind` with extra flags (`--recover-from`, `--plain-credentials`,
    /// ...); its stderr lines go to `stderr` when given (else nowhere).
    pub fn start_with(
        limits: &Path,
        bind: &str,
        extra: &[&std::ffi::OsStr],
        stderr: Option<&mut Option<mpsc::Receiver<String>>>,
    ) -> RiskServer {
        let mut child = Command::new(other_bin("risk-server"))
            .arg("--config")
            .arg(limits)
            .args(["--bind", bind])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(if stderr.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn risk-server");
        let out = lines_of(child.stdout.take().unwrap());
        if let Some(slot) = stderr {
            *slot = Some(lines_of(child.stderr.take().unwrap()));
        }
        let line = wait_for_line(&out, "listening on ", Duration::from_secs(20));
        let endpoint = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .to_owned();
        RiskServer { child, endpoint }
    }

    /// One JSON admin request (`{"admin":"stats"}`, `{"admin":"snapshot"}`) on the server's
    /// REP socket; `None` if it does not answer within `limit`.
    pub fn admin(&self, request: &str, limit: Duration) -> Option<serde_json::Value> {
        admin_request(&self.endpoint, request, limit)
    }
}

/// One JSON admin request to a risk-server at `endpoint` over a fresh REQ socket.
pub fn admin_request(endpoint: &str, request: &str, limit: Duration) -> Option<serde_json::Value> {
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::REQ).unwrap();
    s.set_linger(0).unwrap();
    s.connect(endpoint).unwrap();
    s.send(request.as_bytes(), 0).unwrap();
    let ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
    if s.poll(zmq::POLLIN, ms).unwrap() == 0 {
        return None;
    }
    let reply = s.recv_bytes(0).unwrap();
    Some(serde_json::from_slice(&reply).expect("admin replies are JSON"))
}

impl Drop for RiskServer {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The engine's built-in limits as a file (for a risk-server that decides like the embedded one).
pub fn write_builtin_limits(path: &Path) {
    std::fs::write(path, engine::app::BUILT_IN_LIMITS_TOML).unwrap();
}

/// A missing prerequisite (root for a tmpfs, python3, the shared data). Under CI (`CI=true`),
/// which installs everything the tests need, the test fails; elsewhere it prints a SKIP line
/// straight to stderr, past the test harness's output capture, so that it is seen.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: prerequisite missing under CI=true: {why}"
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// Parses an OpenMetrics text exposition with the reference implementation's parser (the
/// Python client's `prometheus_client.openmetrics.parser`, independent of ours): panics with
/// its complaint if it refuses the text, else returns `name type` of every family it read.
/// `None` (after a skip message; a failure under `CI=true`) when python3 or the module is
/// missing: `python3 -m pip install prometheus-client` (scripts/ci.sh installs it).
pub fn reference_openmetrics_families(test: &str, text: &str) -> Option<Vec<String>> {
    use std::io::Write as _;
    const SCRIPT: &str = "import sys\n\
        try:\n    from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        except ImportError:\n    sys.exit(3)\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n    print(f.name, f.type)\n";
    let child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            skip(test, &format!("python3 is not runnable ({e})"));
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect(),
        ),
        Some(3) => {
            skip(
                test,
                "python3 has no prometheus_client: python3 -m pip install prometheus-client",
            );
            None
        }
        _ => panic!(
            "the reference OpenMetrics parser refuses the exposition: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
