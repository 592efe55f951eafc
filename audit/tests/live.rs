//! The live feed and gap fill (Titanic): a subscriber with a tiny receive high-water mark
//! under a burst sees gaps, fills them from `audit serve`, and ends on the journal's head hash.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit::wire::{decode_entries, GapReplyHeader, GapRequest, STATUS_BAD_REQUEST, STATUS_OK};
use audit::{GapFill, Publisher, TailOptions, Writer, KIND_DECISION};
use orders::{encode_decision, Decision, Order, OrderKind, Reason, Side, Symbol};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn decision(i: u64) -> [u8; orders::DECISION_LEN_BYTES] {
    let d = Decision {
        input_seq: i,
        order: Order {
            order_id: 1000 + i,
            ts_ns: i,
            price: 1_852_500 + i as i64,
            qty: 100,
            account: (i % 7) as u32,
            symbol: Symbol::new("AAPL").unwrap(),
            side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            kind: OrderKind::New,
        },
        reason: if i % 3 == 0 {
            Reason::MaxQty
        } else {
            Reason::Accepted
        },
        t_in_ns: i,
        t_decided_ns: i + 1,
        ..Decision::default()
    };
    let mut b = [0u8; orders::DECISION_LEN_BYTES];
    encode_decision(&d, &mut b);
    b
}

/// Starts `audit serve DIR --bind tcp://127.0.0.1:*` and returns it with its endpoint.
fn start_serve(dir: &std::path::Path) -> (Kill, String) {
    let mut child = Command::new(common::audit_bin())
        .arg("serve")
        .arg(dir)
        .args(["--bind", "tcp://127.0.0.1:*"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line.trim().strip_prefix("listening ").unwrap().to_owned();
    (Kill(child), endpoint)
}

#[test]
fn tail_with_a_tiny_hwm_fills_gaps_from_serve_and_ends_on_the_head() {
    const RECORDS: u64 = 30_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let ctx = zmq::Context::new();
    let (mut w, _) = Writer::open(&dir, common::opts(1 << 20)).unwrap();
    let mut publisher = Publisher::bind_with_hwm(&ctx, "tcp://127.0.0.1:*", None, 1).unwrap();
    let (_serve, serve_ep) = start_serve(&dir);
    let tail = Command::new(common::audit_bin())
        .args(["tail", "--quiet", "--rcvhwm", "1", "--idle-poll-ms", "100"])
        .args(["--sub", publisher.endpoint(), "--serve", &serve_ep])
        .args(["--until-seq", &RECORDS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tail = Kill(tail);
    std::thread::sleep(Duration::from_millis(300));
    // The burst: append then publish, as the engine's journal stage does.
    for i in 0..RECORDS {
        let payload = decision(i);
        let a = w.append(KIND_DECISION, i, &payload).unwrap();
        publisher
            .publish(a.seq, &a.hash, KIND_DECISION, i, &payload)
            .unwrap();
        if i % 256 == 255 {
            publisher.flush().unwrap();
        }
    }
    publisher.flush().unwrap();
    let head = w.head_hash();
    // Wait for the tail to finish (bounded).
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = tail.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tail did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut tail.0.stdout.take().unwrap(), &mut out).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut tail.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "tail failed: {err}");
    let summary = out.lines().last().unwrap();
    let field = |name: &str| -> String {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    assert_eq!(field("seq"), RECORDS.to_string(), "{summary}");
    assert_eq!(field("hash"), hex::encode(head), "{summary}");
    let gaps: u64 = field("gaps").parse().unwrap();
    let fetched: u64 = field("fetched").parse().unwrap();
    let live: u64 = field("live").parse().unwrap();
    assert!(gaps >= 1, "no gap seen: {summary}");
    assert!(fetched >= 1, "{summary}");
    assert_eq!(live + fetched, RECORDS, "{summary}");
    eprintln!("{summary} (publisher {:?})", publisher.stats());
}

#[test]
fn tail_in_threads_sees_every_record_once_and_verifies_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let ctx = zmq::Context::new();
    let (mut w, _) = Writer::open(&dir, common::opts(64 * 1024)).unwrap();
    // Records before anyone listens: only the gap-fill service can give them.
    let early = common::append_n(&mut w, 500, 100);
    let mut publisher = Publisher::bind(&ctx, "inproc://feed", Some("inproc://json")).unwrap();
    let json_sub = ctx.socket(zmq::SUB).unwrap();
    json_sub.set_subscribe(b"").unwrap();
    json_sub.connect("inproc://json").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let serve_stop = Arc::clone(&stop);
    let serve_dir = dir.clone();
    let serve_ctx = ctx.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        audit::serve(
            &serve_ctx,
            &serve_dir,
            "inproc://gapfill",
            &serve_stop,
            &mut |ep| tx.send(ep.to_owned()).unwrap(),
        )
        .unwrap()
    });
    rx.recv().unwrap();
    let tail_ctx = ctx.clone();
    let tail = std::thread::spawn(move || {
        let mut opts = TailOptions::new("inproc://feed", "inproc://gapfill");
        opts.until_seq = Some(1500);
        // Long enough that the first live record, not an idle poll, reveals the gap 1..=500.
        opts.idle_poll_ms = 5000;
        let mut seen = Vec::new();
        let stats = audit::tail(&tail_ctx, &opts, &AtomicBool::new(false), &mut |r| {
            seen.push(r.entry.seq)
        })
        .unwrap();
        (stats, seen)
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut written = early;
    for batch in 0..10 {
        let recs = common::append_n(&mut w, 100, 100);
        for r in &recs {
            publisher
                .publish(r.seq, &r.hash, r.kind, r.ts_ns, &r.payload)
                .unwrap();
        }
        publisher.flush().unwrap();
        written.extend(recs);
        std::thread::sleep(Duration::from_millis(if batch % 3 == 0 { 30 } else { 1 }));
    }
    let (stats, seen) = tail.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let served = server.join().unwrap();
    assert_eq!(seen, (1..=1500).collect::<Vec<_>>());
    assert_eq!(stats.last_seq, 1500);
    assert_eq!(stats.head_hash, w.head_hash());
    assert!(stats.gaps >= 1, "{stats:?}");
    assert!(stats.fetched_records >= 500, "{stats:?}");
    assert!(served.requests >= 1);
    // The JSON feed carries one object per published record (a slow joiner may miss the
    // first ones).
    let first: serde_json::Value =
        serde_json::from_slice(&json_sub.recv_bytes(0).unwrap()).unwrap();
    let seq = first["seq"].as_u64().unwrap();
    assert!((501..=1500).contains(&seq));
    assert_eq!(first["hash"], hex::encode(written[seq as usize - 1].hash));
    assert_eq!(publisher.stats().json_messages, 1000);
}

fn ask(gap: &mut GapFill, from: u64, to: u64, max: u32) -> (GapReplyHeader, Vec<(u64, Vec<u8>)>) {
    let mut out = Vec::new();
    let req = GapRequest {
        from_seq: from,
        to_seq: to,
        max_records: max,
    };
    gap.answer(&req.encode(), &mut out);
    let (h, rest) = GapReplyHeader::decode(&out).unwrap();
    let entries = if h.status == STATUS_OK {
        decode_entries(rest, h.count as usize)
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.payload.to_vec()))
            .collect()
    } else {
        Vec::new()
    };
    (h, entries)
}

#[test]
fn gap_fill_serves_any_range_of_a_growing_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let mut gap = GapFill::new(&dir);
    // No journal yet: empty answers, not errors.
    let (h, e) = ask(&mut gap, 1, u64::MAX, 0);
    assert_eq!((h.status, h.head_seq, e.len()), (STATUS_OK, 0, 0));
    let (mut w, _) = Writer::open(&dir, common::opts(4096)).unwrap();
    let written = common::append_n(&mut w, 3000, 150);
    let (h, e) = ask(&mut gap, 1, u64::MAX, 0);
    assert_eq!((h.head_seq, h.head_hash), (3000, w.head_hash()));
    assert_eq!(e.len(), 3000);
    // Ranges, bounds and the record limit, across segments and index points.
    for (from, to, max) in [(1, 1, 0), (1025, 1030, 0), (2047, 2050, 2), (2999, 5000, 0)] {
        let (_, e) = ask(&mut gap, from, to, max);
        let expect_to = to.min(3000).min(if max > 0 {
            from + max as u64 - 1
        } else {
            u64::MAX
        });
        assert_eq!(
            e.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (from..=expect_to).collect::<Vec<_>>()
        );
        for (s, p) in &e {
            assert_eq!(p, &written[*s as usize - 1].payload);
        }
    }
    // Past the head: nothing. More records: seen on the next request.
    assert_eq!(ask(&mut gap, 3001, 3001, 0).1.len(), 0);
    common::append_n(&mut w, 10, 150);
    let (h, e) = ask(&mut gap, 3001, u64::MAX, 0);
    assert_eq!((h.head_seq, e.len()), (3010, 10));
    // Malformed requests get status 1 and a message.
    let mut out = Vec::new();
    gap.answer(b"nonsense", &mut out);
    let (h, rest) = GapReplyHeader::decode(&out).unwrap();
    assert_eq!(h.status, STATUS_BAD_REQUEST);
    assert!(String::from_utf8_lossy(rest).contains("32"));
    let (h, _) = ask(&mut gap, 5, 4, 0);
    assert_eq!(h.status, STATUS_BAD_REQUEST);
}

#[test]
fn gap_fill_replies_are_bounded_in_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let (mut w, _) = Writer::open(&dir, common::opts(1 << 20)).unwrap();
    for i in 0..200u64 {
        w.append(1, i, &vec![9u8; 60_000]).unwrap();
    }
    let mut gap = GapFill::new(&dir);
    let mut out = Vec::new();
    gap.answer(
        &GapRequest {
            from_seq: 1,
            to_seq: u64::MAX,
            max_records: 0,
        }
        .encode(),
        &mut out,
    );
    let (h, _) = GapReplyHeader::decode(&out).unwrap();
    assert!(out.len() <= audit::limits::SERVE_REPLY_BYTES_MAX);
    assert!(h.count > 0 && h.count < 200, "{}", h.count);
}

#[test]
fn serve_answers_bad_requests_over_the_socket_and_tail_rejects_a_forged_feed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let ctx = zmq::Context::new();
    let (mut w, _) = Writer::open(&dir, common::opts(4096)).unwrap();
    let recs = common::append_n(&mut w, 20, 50);
    let (_serve, ep) = start_serve(&dir);
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_rcvtimeo(5000).unwrap();
    req.connect(&ep).unwrap();
    req.send(&b"hello"[..], 0).unwrap();
    let (h, rest) = {
        let reply = req.recv_bytes(0).unwrap();
        let (h, rest) = GapReplyHeader::decode(&reply).unwrap();
        (h, rest.to_vec())
    };
    assert_eq!(h.status, STATUS_BAD_REQUEST);
    assert!(!rest.is_empty());
    // A publisher that sends a record with a wrong hash: the tail stops with exit 1.
    let mut publisher = Publisher::bind(&ctx, "tcp://127.0.0.1:*", None).unwrap();
    let mut tail = Kill(
        Command::new(common::audit_bin())
            .args(["tail", "--quiet", "--until-seq", "25"])
            .args(["--sub", publisher.endpoint(), "--serve", &ep])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        // Keep sending the forged record 21 until the subscriber is connected and stops.
        publisher.publish(21, &[7u8; 32], 1, 0, b"forged").unwrap();
        publisher.flush().unwrap();
        if let Some(s) = tail.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tail did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut tail.0.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("hash chain broken at seq 21"), "{err}");
    assert_eq!(recs.len(), 20);
}

#[test]
fn tail_from_a_later_seq_anchors_on_the_served_hash_and_catches_up_without_a_feed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let ctx = zmq::Context::new();
    let (mut w, _) = Writer::open(&dir, common::opts(8192)).unwrap();
    let written = common::append_n(&mut w, 300, 80);
    let _silent = Publisher::bind(&ctx, "inproc://silent", None).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (serve_stop, serve_dir, serve_ctx) = (Arc::clone(&stop), dir.clone(), ctx.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        audit::serve(
            &serve_ctx,
            &serve_dir,
            "inproc://gap2",
            &serve_stop,
            &mut |ep| tx.send(ep.to_owned()).unwrap(),
        )
        .unwrap()
    });
    rx.recv().unwrap();
    let mut opts = TailOptions::new("inproc://silent", "inproc://gap2");
    opts.from_seq = 100;
    opts.until_seq = Some(200);
    opts.idle_poll_ms = 20;
    let mut seen = Vec::new();
    let stats = audit::tail(&ctx, &opts, &AtomicBool::new(false), &mut |r| {
        assert!(!r.live);
        seen.push(r.entry.seq)
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert_eq!(seen, (100..=200).collect::<Vec<_>>());
    assert_eq!(stats.head_hash, written[199].hash);
    assert_eq!((stats.live_records, stats.fetched_records), (0, 101));
}

#[test]
fn serve_and_tail_stop_cleanly_on_sigterm() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let (mut w, _) = Writer::open(&dir, common::opts(8192)).unwrap();
    let written = common::append_n(&mut w, 40, 80);
    let (serve, ep) = start_serve(&dir);
    let mut tail = Kill(
        Command::new(common::audit_bin())
            .args(["tail", "--quiet", "--idle-poll-ms", "50"])
            .args(["--sub", "tcp://127.0.0.1:1", "--serve", &ep])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Let both block in their waits (poll), then signal them: a signal interrupts the wait
    // (EINTR), which must end them cleanly, not as an error.
    std::thread::sleep(Duration::from_millis(600));
    for child in [&tail.0, &serve.0] {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = tail.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tail ignored SIGTERM");
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
    assert!(out.contains("head seq=40"), "{out}");
    assert!(out.contains(&hex::encode(written[39].hash)), "{out}");
    let mut serve = serve;
    let status = serve.0.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = serve.0.stderr.take() {
        e.read_to_string(&mut err).unwrap();
    }
    assert!(status.success(), "serve: {status:?} {err}");
}
