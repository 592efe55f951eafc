//! A pinned, spinning shared thread keeps the process's other threads off its core
//! (`threading::confine_other_threads`). Its own test binary: it changes the affinity of every
//! thread of the process it runs in.
#![allow(clippy::unwrap_used)]

use engine::threading::{affinity_mask_ids, confine_other_threads};

#[test]
fn confining_moves_every_other_thread_and_new_ones_inherit() {
    let mask = affinity_mask_ids();
    if mask.len() < 2 {
        eprintln!("skipped: one core in the affinity mask, nowhere to move the others");
        return;
    }
    let core = *mask.iter().max().unwrap();
    let others: Vec<usize> = mask.iter().copied().filter(|&c| c != core).collect();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Vec<usize>>();
    // A thread that exists before the confinement and reports its mask after it.
    let before = std::thread::spawn(move || {
        let _ = rx.recv();
        let _ = done_tx.send(affinity_mask_ids());
    });
    let others2 = others.clone();
    let spinner = std::thread::spawn(move || {
        assert!(core_affinity::set_for_current(core_affinity::CoreId {
            id: core
        }));
        let n = confine_other_threads(&others2).unwrap();
        (n, affinity_mask_ids())
    });
    let (n, own) = spinner.join().unwrap();
    assert_eq!(own, vec![core], "the caller keeps its own core");
    assert!(
        n >= 2,
        "at least the test's main thread and the waiting one: {n}"
    );
    tx.send(()).unwrap();
    let seen = done_rx.recv().unwrap();
    before.join().unwrap();
    assert_eq!(
        seen, others,
        "the existing thread was moved off core {core}"
    );
    // A thread created afterwards by a moved thread inherits the mask.
    let later = std::thread::spawn(affinity_mask_ids).join().unwrap();
    assert_eq!(later, others);
}
