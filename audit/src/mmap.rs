//! The one place of the workspace that uses `unsafe`: mapping a segment file for writing.
//!
//! Readers (recovery scan, verify, dump, serve) never map files: they use `pread`, so a file
//! truncated or changed under them is an error or a hash mismatch, never a crash.
#![allow(unsafe_code)]

use std::fs::File;

use memmap2::{MmapMut, MmapOptions};
use nix::fcntl::Flock;

/// Proof that a file's blocks were reserved (by `fallocate` or by writing zeros) up to a
/// length; only the writer's allocation function makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allocated {
    pub(crate) len: u64,
}

/// Maps `len` bytes of `file` shared and writable.
///
/// # Safety
///
/// A mapped file that shrinks under the mapping makes every access past its new end raise
/// `SIGBUS`; a page whose block cannot be allocated on first write (full disk, sparse file)
/// raises `SIGBUS` too; and a mapping that someone else writes changes bytes Rust believes
/// this process owns. The caller must guarantee that
/// - `file` is at least `len` bytes long and its blocks are allocated, and
/// - no one truncates or writes the file while the mapping lives.
unsafe fn map_segment(file: &File, len: usize) -> std::io::Result<MmapMut> {
    // SAFETY: the caller upholds the contract above, which is what memmap2 requires of
    // `map_mut` (the file is not resized or modified behind the mapping).
    unsafe { MmapOptions::new().len(len).map_mut(file) }
}

/// Maps an allocated segment file for the journal's single writer.
///
/// `allocated` proves the blocks are reserved (so a full disk was reported when allocating,
/// not as `SIGBUS` mid-append) and `_writer_lock` proves this process holds the journal's
/// exclusive lock (so no other writer maps or changes the file; readers only `pread`).
pub(crate) fn map_writable(
    file: &File,
    allocated: Allocated,
    _writer_lock: &Flock<File>,
) -> std::io::Result<MmapMut> {
    let actual = file.metadata()?.len();
    if actual < allocated.len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "file is {actual} bytes, shorter than the {} to map",
                allocated.len
            ),
        ));
    }
    let len = usize::try_from(allocated.len)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "segment too large"))?;
    // SAFETY: the file is at least `len` bytes and its blocks are allocated (`Allocated` is
    // only made after `fallocate`/zero-fill succeeded), and the exclusive journal lock keeps
    // every other writer out; the journal itself never truncates a segment while it is mapped.
    let map = unsafe { map_segment(file, len) }?;
    // No read-around on faults. The writer touches the mapping front to back, one record at a
    // time; a page of a segment that is only `fallocate`d (the first segment, the tail of a
    // resumed one) is not in the page cache, and a fault there read ahead `read_ahead_kb` of
    // the file (8 MiB on this project's VM): the kernel allocated and zeroed thousands of
    // pages inside one append, 19 ms (issue 12, docs/results.md "Seventh session"). With
    // MADV_RANDOM a fault brings in its own page only. Advice, not a requirement: a kernel
    // that refuses it costs time, never correctness.
    let _ = map.advise(memmap2::Advice::Random);
    Ok(map)
}
