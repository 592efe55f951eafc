//! Helpers for tests that run the real `risk-server` binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use orders::{Order, OrderKind, Side, Symbol};

/// How long a server gets to print its endpoint (debug build, busy 2-core box).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub const LIMITS: &str = r#"
[global]
duplicate_horizon_orders = 10000
[defaults]
max_order_qty = 1000
max_order_notional = 1000000
max_long_qty = 3000
max_short_qty = 3000
credit_limit_notional = 2000000
collar_bps = 1000
max_orders_per_s = 1000
burst_orders = 50
[symbols.AAPL]
reference_price = 585.33
[symbols.MSFT]
reference_price = 30.0
"#;

/// A running `risk-server`; killed when dropped.
pub struct ServerProc {
    pub child: Child,
    pub endpoints: Vec<String>,
    pub stderr_path: PathBuf,
}

impl ServerProc {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoints[0]
    }

    /// Waits for the process to exit (with a bound) and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "risk-server did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_risk-server")
}

/// Starts `risk-server --config <config> <extra…>` and waits for its "listening on" lines
/// (`expect_endpoints` of them).
pub fn start(dir: &Path, config: &Path, extra: &[&str], expect_endpoints: usize) -> ServerProc {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stderr_path = dir.join(format!("server-{n}.stderr"));
    let mut cmd = Command::new(bin());
    cmd.arg("--config").arg(config);
    if !extra.contains(&"--bind") {
        cmd.args(["--bind", "tcp://127.0.0.1:*"]);
    }
    cmd.args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut endpoints = Vec::new();
    let deadline = Instant::now() + START_TIMEOUT;
    while endpoints.len() < expect_endpoints {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(ep) = line.strip_prefix("listening on ") {
                    endpoints.push(ep.to_owned());
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "risk-server printed no endpoint; stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        }
    }
    ServerProc {
        child,
        endpoints,
        stderr_path,
    }
}

/// One JSON request over a fresh REQ socket (with a receive timeout), reply as text.
pub fn request_text(ctx: &zmq::Context, endpoint: &str, body: &[u8]) -> String {
    let s = ctx.socket(zmq::REQ).unwrap();
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(10_000).unwrap();
    s.connect(endpoint).unwrap();
    s.send(body, 0).unwrap();
    let reply = s.recv_bytes(0).expect("reply within 10 s");
    String::from_utf8(reply).unwrap()
}

/// An admin request; the reply parsed as JSON.
pub fn admin(ctx: &zmq::Context, endpoint: &str, body: &str) -> serde_json::Value {
    let text = request_text(ctx, endpoint, body.as_bytes());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

pub fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

pub fn new_order(id: u64, account: u32, symbol: &str, side: Side, qty: u64, price: i64) -> Order {
    Order {
        order_id: id,
        ts_ns: 0,
        price,
        qty,
        account,
        symbol: sym(symbol),
        side,
        kind: OrderKind::New,
    }
}

pub fn event(kind: OrderKind, id: u64, symbol: &str, qty: u64, price: i64) -> Order {
    Order {
        order_id: id,
        ts_ns: 0,
        price,
        qty,
        account: 0,
        symbol: sym(symbol),
        side: Side::Buy,
        kind,
    }
}

/// Writes the limits to `dir/limits.toml`.
pub fn write_limits(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("limits.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Polls `f` every 20 ms until it returns true or `within` passes.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
