//! A writer process killed with SIGKILL at random moments, again and again: every sequence
//! number it reported as appended is present with its content, the journal verifies, and
//! the next writer continues the chain.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use audit::{VerifyOptions, Writer};
use rand::{Rng, SeedableRng};

const KILLS: usize = 24;
const MAX_PAYLOAD_BYTES: usize = 200;

#[test]
fn sigkill_mid_stream_loses_nothing_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5EED);
    let mut reported_max = 0u64;
    let mut cuts = 0;
    for round in 0..KILLS {
        let durability = ["none", "interval:50:5", "none", "always"][round % 4];
        let mut child = Command::new(common::audit_bin())
            .arg("append-test")
            .arg(&dir)
            .args(["--count", "1000000", "--vary"])
            .args(["--payload-bytes", &MAX_PAYLOAD_BYTES.to_string()])
            // Small segments: kills land during roll-overs too.
            .args(["--segment-size-bytes", "16384"])
            .args(["--durability", durability])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Let it append a random number of records, then kill it at a random moment.
        let wait_lines = rng.gen_range(1..400);
        let mut last = 0u64;
        for _ in 0..wait_lines {
            match lines.next() {
                Some(l) => last = l.unwrap().parse().unwrap(),
                None => break,
            }
        }
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..3000)));
        child.kill().unwrap(); // SIGKILL
                               // Whatever it printed before dying was reported as appended.
        for l in lines {
            match l {
                Ok(l) if !l.is_empty() => last = l.parse().unwrap(),
                _ => break,
            }
        }
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the writer finished before the kill"
        );
        assert!(last > reported_max, "round {round}: nothing appended");
        reported_max = last;

        // Reopen: recovery keeps every reported record, the chain continues.
        let (w, rec) = Writer::open(&dir, common::opts(16384)).unwrap();
        assert!(
            rec.next_seq > reported_max,
            "round {round}: reported {reported_max}, recovered up to {}",
            rec.next_seq - 1
        );
        if rec.truncated_bytes > 0 {
            cuts += 1;
        }
        drop(w);
        let report = audit::verify(&dir, &VerifyOptions::default()).unwrap();
        assert_eq!(report.last_seq, Some(rec.next_seq - 1));
        reported_max = rec.next_seq - 1;
    }
    // Every record has exactly the content the writer derived from its sequence number.
    let all = common::read_all(&dir);
    assert_eq!(all.len() as u64, reported_max);
    for r in &all {
        let len = audit::testing::payload_len_for(r.seq, MAX_PAYLOAD_BYTES);
        assert_eq!(
            r.payload,
            audit::testing::payload_for(r.seq, len),
            "seq {}",
            r.seq
        );
        assert_eq!((r.kind, r.ts_ns), (7, r.seq));
    }
    eprintln!(
        "{KILLS} kills, {} records, {cuts} torn tails cut",
        all.len()
    );
}
