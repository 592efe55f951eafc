//! Issue 15 item 3: the workspace logs through `tracing` only. This guard reads every `.rs`
//! file under each crate's `src/` and fails on a write to stderr (`eprintln!`, `eprint!`,
//! `std::io::stderr`, `dbg!`) in non-test code outside the one allowed site:
//! `orders::logging::print_final_error`, the CLI's final error print, which each binary's
//! `main.rs` calls (listed in [`FINAL_ERROR_CALLERS`]). Comments, string literals and
//! `#[cfg(test)]` items are not code that ships, and are skipped.

use std::path::{Path, PathBuf};

/// Crates whose `src/` is scanned.
const CRATES: &[&str] = &["orders", "zauth", "audit", "risk", "engine", "bench"];

/// Tokens that write to stderr (or that open it for writing).
const FORBIDDEN: &[&str] = &["eprintln!", "eprint!", "stderr()", "io::stderr", "dbg!"];

/// The allowed sites: (file, token, how many times). `print_final_error`'s one write, and
/// `init`'s and `progress_on_terminal`'s terminal checks of stderr.
const ALLOWED: &[(&str, &str, usize)] = &[
    ("orders/src/logging.rs", "stderr()", 3),
    ("orders/src/logging.rs", "io::stderr", 4),
];

/// The binaries' `main.rs` files: each ends a failed run through `print_final_error`.
const FINAL_ERROR_CALLERS: &[&str] = &[
    "engine/src/main.rs",
    "risk/src/main.rs",
    "audit/src/main.rs",
    "bench/src/main.rs",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("orders lives in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `text` with comments and the contents of string and char literals replaced by spaces
/// (newlines kept, so that line numbers stay right).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && is_raw_start(&b, i) {
            // r"…" or r#"…"#: ends at a quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            out.push('"');
            for _ in i + 1..=j {
                out.push(' ');
            }
            i = j + 1;
            while i < b.len() {
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
            out.push('"');
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && is_char_literal(&b, i) {
            // 'x', '\n', '\u{..}' (a lifetime has no closing quote).
            out.push('\'');
            i += 1;
            while i < b.len() && b[i] != '\'' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push('\'');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `r` at `i` starts a raw string (not the end of an identifier such as `for`).
fn is_raw_start(b: &[char], i: usize) -> bool {
    let prev_ident = i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_');
    if prev_ident {
        return false;
    }
    let mut j = i + 1;
    while b.get(j) == Some(&'#') {
        j += 1;
    }
    b.get(j) == Some(&'"')
}

fn is_char_literal(b: &[char], i: usize) -> bool {
    matches!(
        (b.get(i + 1), b.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// `code` (from [`code_only`]) with every `#[cfg(test)]` item blanked: the attribute, then the
/// item up to its closing brace (or `;`).
fn without_test_items(code: &str) -> String {
    let mut out: Vec<char> = code.chars().collect();
    let attr: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + attr.len() <= out.len() {
        if out[i..i + attr.len()] != attr[..] {
            i += 1;
            continue;
        }
        let mut j = i + attr.len();
        let mut depth = 0usize;
        while j < out.len() {
            match out[j] {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                ';' if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        let end = (j + 1).min(out.len());
        for c in &mut out[i..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = j + 1;
    }
    out.into_iter().collect()
}

/// Every (line number, token) of [`FORBIDDEN`] in the shipped code of `text`.
fn stderr_writes(text: &str) -> Vec<(usize, &'static str)> {
    let code = without_test_items(&code_only(text));
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        for tok in FORBIDDEN {
            let mut from = 0;
            while let Some(k) = line[from..].find(tok) {
                let at = from + k;
                // Not the tail of a longer name (`my_dbg!`, `std_io::stderr`).
                let before = line[..at].chars().next_back();
                let ident_before = before.is_some_and(|c| c.is_alphanumeric() || c == '_');
                if !ident_before {
                    found.push((n + 1, *tok));
                }
                from = at + tok.len();
            }
        }
    }
    found
}

#[test]
fn no_stderr_writes_outside_the_final_error_print() {
    let root = workspace();
    let mut files = Vec::new();
    for c in CRATES {
        rust_files(&root.join(c).join("src"), &mut files);
    }
    assert!(files.len() > 50, "the scan found the sources: {files:?}");
    let mut bad = Vec::new();
    let mut allowed_seen = vec![0usize; ALLOWED.len()];
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .expect("under the workspace")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).expect("readable source");
        for (line, tok) in stderr_writes(&text) {
            match ALLOWED
                .iter()
                .position(|(file, t, _)| *file == rel && *t == tok)
            {
                Some(k) => allowed_seen[k] += 1,
                None => bad.push(format!("{rel}:{line}: {tok}")),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "stderr is written outside orders::logging (log through tracing instead, or end \
         the command through orders::logging::print_final_error):\n{}",
        bad.join("\n")
    );
    for ((file, tok, want), seen) in ALLOWED.iter().zip(&allowed_seen) {
        assert_eq!(
            seen, want,
            "{file}: {tok} is allowed {want} time(s) and found {seen} (update ALLOWED)"
        );
    }
}

#[test]
fn every_binary_ends_a_failure_through_the_final_error_print() {
    let root = workspace();
    for f in FINAL_ERROR_CALLERS {
        let text = std::fs::read_to_string(root.join(f)).expect("main.rs");
        assert!(
            text.contains("orders::logging::init(") && text.contains("print_final_error("),
            "{f}: sets up orders::logging and prints its final error through it"
        );
    }
}

/// The scanner itself: it finds what it must and skips comments, strings and test code, so
/// that the guard above can fail.
#[test]
fn the_scanner_finds_stderr_writes_in_code_only() {
    let src = r##"
fn a() {
    eprintln!("x {}", 1);
    let s = "eprintln!(\"no\")"; // eprintln!("comment")
    /* eprint!("block") */
    let r = r#"eprint!("raw")"#;
    let c = '"';
    let _ = std::io::stderr().write_all(b"y");
    eprint!("z");
}
#[cfg(test)]
mod tests {
    fn t() { eprintln!("SKIP in a test is fine"); let s = "}"; }
}
fn b() { dbg!(1); }
"##;
    let found = stderr_writes(src);
    assert_eq!(
        found,
        vec![
            (3, "eprintln!"),
            (8, "stderr()"),
            (8, "io::stderr"),
            (9, "eprint!"),
            (15, "dbg!")
        ],
        "{}",
        without_test_items(&code_only(src))
    );
}
