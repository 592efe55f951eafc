//! The Grafana dashboard in `docs/grafana/engine-dashboard.json` must stay importable and must
//! only query series the engine exports: every metric name and every `label="value"` matcher
//! in its queries is looked up in what a running `engine run` serves on its metrics endpoint
//! (scraped over HTTP after real orders went through it), and every panel is described in
//! `docs/monitoring.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_endpoint::exposition::{parse, scrape, Exposition};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// What a running engine serves once orders have gone through it, in the test binary's
/// lifetime started once: `engine run` with an ingress and a metrics endpoint on free ports,
/// fed one order every 20 ms over a real PUSH socket until the latency gauges have been
/// published (at most once a second, at the end of a batch), scraped, then stopped with
/// SIGTERM. The scrape must be valid OpenMetrics with the OpenMetrics content type, and the
/// counters must have moved by what was sent.
fn running_engine() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (ingress, metrics) = (
            format!("tcp://127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let config = dir.path().join("engine.toml");
        std::fs::write(
            &config,
            format!(
                "[ingress]\nbind = \"{ingress}\"\n[journal]\ndir = \"{}\"\n[metrics]\nbind = \"{metrics}\"\n",
                dir.path().join("journal").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(common::engine_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = common::lines_of(child.stderr.take().unwrap());
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.set_linger(0).unwrap();
        push.connect(&ingress).unwrap();
        let t = Instant::now();
        let mut sent = 0u64;
        let (body, e) = loop {
            let order = orders::Order {
                order_id: sent + 1,
                ts_ns: 0,
                price: 1_852_500,
                qty: if sent % 3 == 2 { 5_000_000 } else { 100 },
                account: 7,
                symbol: orders::Symbol::new("AAPL").unwrap(),
                side: orders::Side::Buy,
                kind: orders::OrderKind::New,
            };
            push.send(engine::frames::encode_ingress_frame(&[order]), 0)
                .unwrap();
            sent += 1;
            std::thread::sleep(Duration::from_millis(20));
            if let Ok(s) = scrape(&metrics, Duration::from_secs(10)) {
                assert_eq!(s.content_type, metrics_endpoint::CONTENT_TYPE);
                let e = parse(&s.body)
                    .unwrap_or_else(|err| panic!("not OpenMetrics: {err}\n{}", s.body));
                let recorded = e.sum("engine_latency_recorded_total");
                let decided = e.value("engine_journal_records_total", &[]).unwrap();
                if recorded > 0.0 && decided >= 3.0 {
                    break (s.body, e);
                }
            }
            let lines: Vec<String> = stderr.try_iter().collect();
            assert!(
                t.elapsed() < LIMIT,
                "the engine's latency gauges never moved; stderr: {lines:#?}"
            );
        };
        if let Some(theirs) = common::reference_openmetrics_families("grafana_dashboard", &body) {
            let ours: Vec<String> = e
                .families
                .iter()
                .map(|f| format!("{} {}", f.name, f.kind))
                .collect();
            assert_eq!(theirs, ours, "the reference parser reads the same families");
        }
        let taken = e.value("engine_ingress_orders_total", &[]).unwrap() as u64;
        assert!((1..=sent).contains(&taken), "{taken} of {sent} orders taken");
        assert_eq!(
            e.value("engine_journal_records_total", &[]),
            Some(e.sum("engine_decisions_total")),
            "every record is one decision"
        );
        assert!(e.value("engine_decisions_total", &[("reason", "max-qty")]).unwrap() >= 1.0);
        assert!(
            e.value("engine_latency_us", &[("outcome", "accepted"), ("quantile", "1")])
                .unwrap()
                > 0.0
        );
        common::signal(&child, nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < LIMIT, "SIGTERM ends the engine");
            std::thread::sleep(Duration::from_millis(20));
        }
        body
    })
}

fn running_engine_exposition() -> Exposition {
    parse(running_engine()).unwrap()
}

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn dashboard() -> Value {
    let path = repo_file("docs/grafana/engine-dashboard.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, rows included, with panels nested in collapsed rows.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"]
        .as_array()
        .expect("dashboard has a panels array")
    {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner.iter());
        }
    }
    out
}

/// Every PromQL expression: panel targets and query variables.
fn exprs(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let e = t["expr"].as_str().expect("every target has an expr");
            out.push(e.to_owned());
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str()) {
            out.push(q.to_owned());
        }
    }
    out
}

/// Identifiers (`[A-Za-z_:][A-Za-z0-9_:]*`) of an expression that start with `engine_`.
/// Label names and PromQL functions never do, so these are exactly the metric names.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            // Skip `$__rate_interval` and friends: a `$` right before is a Grafana variable.
            let is_var = start > 0 && bytes[start - 1] == b'$';
            let word = &expr[start..i];
            if !is_var && word.starts_with("engine_") {
                out.push(word.to_owned());
            }
        } else if c == b'"' {
            // Skip string literals (label values, legend-like text).
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// Exact-match label matchers `name="value"` of an expression (not `=~`, `!=`, `!~`).
fn equality_matchers(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(eq) = rest.find("=\"") {
        let before = &rest[..eq];
        let negated_or_regex = before.ends_with('!') || before.ends_with('=');
        let name: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let after = &rest[eq + 2..];
        let end = after.find('"').expect("closed label value");
        if !negated_or_regex && !name.is_empty() {
            out.push((name, after[..end].to_owned()));
        }
        rest = &after[end + 1..];
    }
    out
}

#[test]
fn extractor_finds_names_and_matchers() {
    let e = r#"sum by (reason) (rate(engine_decisions_total{instance=~"$instance",reason="accepted"}[$__rate_interval])) / engine_ring_depth{ring!="x"}"#;
    assert_eq!(
        metric_names(e),
        vec!["engine_decisions_total", "engine_ring_depth"]
    );
    assert_eq!(
        equality_matchers(e),
        vec![("reason".to_owned(), "accepted".to_owned())]
    );
    assert!(metric_names(r#"rate(x{l="engine_fake"}[$__range])"#).is_empty());
}

#[test]
fn dashboard_queries_only_metrics_the_engine_renders() {
    let d = dashboard();
    let rendered = running_engine();
    let exposition = running_engine_exposition();
    let exported: BTreeSet<&str> = exposition.sample_names();

    let all = exprs(&d);
    assert!(!all.is_empty(), "the dashboard has queries");
    let mut used = BTreeSet::new();
    for e in &all {
        let names = metric_names(e);
        assert!(!names.is_empty(), "query uses no engine metric: {e}");
        for n in names {
            assert!(
                exported.contains(n.as_str()),
                "dashboard queries {n}, which the running engine does not serve (exported: {exported:?})\n  in: {e}"
            );
            used.insert(n);
        }
        for (label, value) in equality_matchers(e) {
            if label == "instance" || label == "job" {
                continue; // added by Prometheus at scrape time
            }
            let needle = format!("{label}=\"{value}\"");
            assert!(
                rendered.contains(&needle),
                "dashboard matches {needle}, which the running engine never serves\n  in: {e}"
            );
        }
    }
    // And the other way round: every exported family is on the dashboard.
    let unused: Vec<&&str> = exported.iter().filter(|n| !used.contains(**n)).collect();
    assert!(
        unused.is_empty(),
        "metrics exported but not on the dashboard: {unused:?}"
    );
}

#[test]
fn dashboard_is_importable_anywhere() {
    let d = dashboard();
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "the Prometheus data source is an import input"
    );
    assert!(d["id"].is_null(), "no instance-specific dashboard id");
    assert!(
        d["schemaVersion"].as_u64().expect("schemaVersion") >= 36,
        "Grafana 9+ schema"
    );
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));

    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        let gp = &p["gridPos"];
        let (x, w) = (gp["x"].as_u64().unwrap(), gp["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {id} is wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {} uses the input data source",
            p["title"]
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has a query", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}");
        }
    }
}

#[test]
fn every_panel_is_described_in_the_monitoring_doc() {
    let d = dashboard();
    let path = repo_file("docs/monitoring.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for p in panels(&d) {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().expect("panel title");
        assert!(
            doc.contains(&format!("### {title}")),
            "docs/monitoring.md has no `### {title}` section"
        );
    }
    // The doc names every sample name the running engine serves too.
    for name in running_engine_exposition().sample_names() {
        assert!(
            doc.contains(name),
            "docs/monitoring.md does not mention {name}"
        );
    }
}
