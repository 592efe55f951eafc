//! What a command says at its end about what to do next (issue 16): short, with the paths of
//! this run, so that a newcomer's next command is one copy away.

use std::fmt::Write as _;
use std::path::Path;

/// The `next:` lines after `engine replay`: verify the journal (against the public key when
/// checkpoints were signed), and where the report and the histogram went, and how to plot them.
pub fn after_replay(
    journal: &Path,
    signed: bool,
    report: Option<&Path>,
    hgrm: Option<&Path>,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "next: audit verify {}{}    (prove the journal offline)",
        journal.display(),
        if signed { " --pubkey KEY.pub" } else { "" }
    );
    if let Some(r) = report {
        let _ = write!(s, "\n      {}    (this run's report, JSON)", r.display());
    }
    if let Some(h) = hgrm {
        let _ = write!(
            s,
            "\n      bench plot DIR    (pictures of the report + .hgrm pairs in DIR, such as {}; \
             scripts/bench.sh makes a full set)",
            h.display()
        );
    } else {
        let _ = write!(
            s,
            "\n      --report FILE --hgrm FILE    (keep the figures; `bench plot` draws them)"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_names_this_runs_paths() {
        let h = after_replay(
            Path::new("./j"),
            true,
            Some(Path::new("r.json")),
            Some(Path::new("r.hgrm")),
        );
        assert!(h.starts_with("next: audit verify ./j --pubkey"), "{h}");
        assert!(
            h.contains("r.json") && h.contains("r.hgrm") && h.contains("bench plot"),
            "{h}"
        );
        let h = after_replay(Path::new("./j"), false, None, None);
        assert!(h.starts_with("next: audit verify ./j "), "{h}");
        assert!(
            !h.contains("--pubkey") && h.contains("--report FILE"),
            "{h}"
        );
    }
}
