//! The writer maps its segment without read-around (`MADV_RANDOM`): a write fault on a page
//! that is not in the page cache (the first segment is only `fallocate`d) must bring in that
//! page alone. With the default advice a fault read ahead `read_ahead_kb` of the file (8 MiB on
//! this project's VM): thousands of pages allocated and zeroed inside one append, a 19 ms stall
//! of the engine's thread (issue 12). The kernel shows the advice as `rr` in the mapping's
//! `VmFlags` (`/proc/self/smaps`).
#![allow(clippy::unwrap_used)]

/// The `VmFlags` of every mapping of `path` in this process.
fn vm_flags_of(path: &std::path::Path) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let want = path.to_str().unwrap();
    let mut out = Vec::new();
    let mut in_it = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_it = line.ends_with(want);
        } else if in_it {
            if let Some(f) = line.strip_prefix("VmFlags:") {
                out.push(f.trim().to_owned());
            }
        }
    }
    out
}

#[test]
fn segments_are_mapped_without_read_around() {
    let dir = tempfile::tempdir().unwrap();
    let opts = audit::WriterOptions {
        segment_size_bytes: 1 << 20,
        ..Default::default()
    };
    let (mut w, _) = audit::Writer::open(dir.path(), opts).unwrap();
    w.append(audit::KIND_DECISION, 1, b"x").unwrap();
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let flags = vm_flags_of(&seg.canonicalize().unwrap());
    assert_eq!(
        flags.len(),
        1,
        "one mapping of {}: {flags:?}",
        seg.display()
    );
    assert!(
        flags[0].split_whitespace().any(|f| f == "rr"),
        "no MADV_RANDOM on the segment mapping: VmFlags {}",
        flags[0]
    );
    // The same for a segment the writer rolls over to.
    let payload = vec![1u8; 50_000];
    for i in 0..40 {
        w.append(audit::KIND_DECISION, 2 + i, &payload).unwrap();
    }
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 2, "{segs:?}");
    let flags = vm_flags_of(&segs.last().unwrap().canonicalize().unwrap());
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert!(
        flags[0].split_whitespace().any(|f| f == "rr"),
        "{}",
        flags[0]
    );
}

/// Without read-around, a fault on a page that is not in the page cache brings in one page:
/// so the first segment is zero-filled when it is made, as every spare is, and its pages are
/// in the page cache before the first append (`fincore`, util-linux). Before, only the
/// header page was: at `--rate max` the first segment's 16,384 single-page faults cost 10–20 %
/// of the throughput.
#[test]
fn a_new_journal_s_first_segment_is_in_the_page_cache_before_the_first_append() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4u64 << 20;
    let opts = audit::WriterOptions {
        segment_size_bytes: size,
        ..Default::default()
    };
    let (_w, _) = audit::Writer::open(dir.path(), opts).unwrap();
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let out = match std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(&seg)
        .output()
    {
        Ok(o) if o.status.success() => o,
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "prerequisite missing under CI=true: fincore (util-linux): {other:?}"
            );
            eprintln!("SKIP a_new_journal_s_first_segment_is_in_the_page_cache: no fincore");
            return;
        }
    };
    let resident: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(
        resident, size,
        "bytes of the first segment in the page cache"
    );
}
