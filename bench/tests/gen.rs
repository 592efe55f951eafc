//! `bench gen` through the real binary: deterministic for a seed, and its distributions match
//! what `docs/formats/orders.md` says.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use bench::gen::{classify_breach, reference_of, Breach};
use orders::files::{LoadOptions, OrderFile};
use orders::{Order, OrderKind};

fn gen(out: &Path, extra: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("gen")
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bench gen failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn load(p: &Path) -> Vec<Order> {
    OrderFile::open(p, &LoadOptions::default())
        .unwrap()
        .iter()
        .collect()
}

#[test]
fn same_seed_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for ext in ["csv", "bin"] {
        let a = d.join(format!("a.{ext}"));
        let b = d.join(format!("b.{ext}"));
        let c = d.join(format!("c.{ext}"));
        let flags = ["--orders", "3000", "--seed", "42", "--symbols", "30"];
        gen(&a, &flags);
        gen(&b, &flags);
        gen(&c, &["--orders", "3000", "--seed", "43", "--symbols", "30"]);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    }
}

struct Shares {
    cancel: f64,
    fill: f64,
    breach: f64,
}

fn check_distributions(orders: &[Order], want: &Shares, accounts: u32, symbols: u32) {
    const TOLERANCE: f64 = 0.02;
    let n = orders.len() as f64;
    let count = |k| orders.iter().filter(|o| o.kind == k).count() as f64;
    let mut breaches: HashMap<Breach, f64> = HashMap::new();
    for o in orders {
        if let Some(b) = classify_breach(o) {
            *breaches.entry(b).or_default() += 1.0;
        }
    }
    let breach: f64 = breaches.values().sum();
    let close = |what: &str, got: f64, want: f64| {
        assert!(
            (got - want).abs() <= TOLERANCE,
            "{what}: share {got:.4}, documented {want:.4}"
        );
    };
    close("cancel", count(OrderKind::Cancel) / n, want.cancel);
    close("fill", count(OrderKind::Fill) / n, want.fill);
    close("breach", breach / n, want.breach);
    for b in [Breach::GiantQty, Breach::OffCollar, Breach::Restricted] {
        let got = breaches.get(&b).copied().unwrap_or(0.0) / n;
        close(&format!("{b:?}"), got, want.breach / 3.0);
    }

    // Accounts 1..=A, symbols S0001..S{S} (plus RESTR).
    assert!(orders.iter().all(|o| (1..=accounts).contains(&o.account)));
    assert!(orders.iter().all(|o| reference_of(&o.symbol).is_some()));
    let mut by_symbol: HashMap<&str, f64> = HashMap::new();
    let normal_new: Vec<&Order> = orders
        .iter()
        .filter(|o| o.kind == OrderKind::New && classify_breach(o).is_none())
        .collect();
    for o in &normal_new {
        *by_symbol.entry(o.symbol.as_str()).or_default() += 1.0;
    }
    // Zipf, exponent 1: P(S0001) = 1 / H(S).
    let harmonic: f64 = (1..=symbols).map(|k| 1.0 / k as f64).sum();
    let top = by_symbol.get("S0001").copied().unwrap_or(0.0) / normal_new.len() as f64;
    close("S0001 popularity", top, 1.0 / harmonic);
    let second = by_symbol.get("S0002").copied().unwrap_or(0.0) / normal_new.len() as f64;
    close("S0002 popularity", second, 0.5 / harmonic);

    // Log-normal sizes with median 100.
    let mut qty: Vec<u64> = normal_new.iter().map(|o| o.qty).collect();
    qty.sort_unstable();
    let median = qty[qty.len() / 2];
    assert!((90..=110).contains(&median), "median qty {median}");
    assert!(qty.iter().all(|&q| (1..=10_000).contains(&q)));

    // Normal orders within 2.55 % of the reference, off-collar ones at least 10 % away.
    for o in orders.iter().filter(|o| o.kind == OrderKind::New) {
        let r = reference_of(&o.symbol).unwrap();
        let ppm = (o.price - r).abs() * 1_000_000 / r;
        match classify_breach(o) {
            None | Some(Breach::GiantQty) => assert!(ppm <= 25_500, "{o:?}"),
            Some(Breach::OffCollar) => assert!(ppm >= 100_000, "{o:?}"),
            Some(Breach::Restricted) => assert!(ppm <= 10_000, "{o:?}"),
        }
    }
}

#[test]
fn default_distributions_match_the_docs() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("flow.bin");
    let out = gen(&p, &["--orders", "20000", "--seed", "5"]);
    assert!(out.contains("wrote 20000 events"), "{out}");
    let orders = load(&p);
    assert_eq!(orders.len(), 20_000);
    check_distributions(
        &orders,
        &Shares {
            cancel: 0.15,
            fill: 0.10,
            breach: 0.02,
        },
        16,
        20,
    );
}

#[test]
fn custom_shares_are_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("flow.csv");
    gen(
        &p,
        &[
            "--orders",
            "20000",
            "--accounts",
            "5",
            "--symbols",
            "100",
            "--cancel-share",
            "0.3",
            "--fill-share",
            "0.2",
            "--breach-share",
            "0.09",
        ],
    );
    let orders = load(&p);
    check_distributions(
        &orders,
        &Shares {
            cancel: 0.3,
            fill: 0.2,
            breach: 0.09,
        },
        5,
        100,
    );
}

#[test]
fn bad_flags_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    for (flags, expect) in [
        (
            &["--cancel-share", "0.7", "--fill-share", "0.4"][..],
            "below 1",
        ),
        (&["--breach-share=-0.1"][..], "--breach-share"),
        (&["--symbols", "10000"][..], "--symbols"),
        (&["--accounts", "0"][..], "--accounts"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_bench"))
            .arg("gen")
            .arg("--out")
            .arg(tmp.path().join("x.csv"))
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{flags:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expect), "{flags:?}: {err}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["gen", "--out"])
        .arg(tmp.path().join("x.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--format"));
    assert!(!tmp.path().join("x.csv").exists());
}
