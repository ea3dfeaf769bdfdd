//! The table's file as 64-bit words, each accessed atomically: the crate's only `unsafe`.
//!
//! Other processes write the file while this one reads or writes it (the router's processes
//! through a mapping they inherited, the collector through its own), so no Rust reference to
//! its bytes is ever made: every access is an atomic operation on one aligned word, within the
//! mapping's length (checked here, on every access).

use memmap2::{Mmap, MmapMut};
use std::sync::atomic::{AtomicU64, Ordering};

/// A mapped file of `len / 8` words.
pub struct Words {
    ptr: *mut u64,
    words: usize,
    _map: Mapping,
}

enum Mapping {
    Shared(#[allow(dead_code)] MmapMut),
    ReadOnly(#[allow(dead_code)] Mmap),
}

// SAFETY: the mapping lives as long as the struct and is only accessed through atomics, which
// are safe to share between threads.
unsafe impl Send for Words {}
// SAFETY: as above.
unsafe impl Sync for Words {}

impl Words {
    /// Maps `len` bytes of `file` shared and writable: what the router's master makes before
    /// it forks, so every http process writes the same pages.
    pub(crate) fn shared(file: &std::fs::File, len: usize) -> std::io::Result<Words> {
        // SAFETY: the file may change under the mapping (other processes write it): nothing
        // reads it through a slice, only through the atomic word accessors below.
        let mut map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(file)? };
        let ptr = map.as_mut_ptr().cast::<u64>();
        Ok(Words { ptr, words: len / 8, _map: Mapping::Shared(map) })
    }

    /// Maps `len` bytes of `file` read-only: the collector. Only loads are made on it.
    pub(crate) fn read_only(file: &std::fs::File, len: usize) -> std::io::Result<Words> {
        // SAFETY: as in `shared`: the router's processes write it while it is read, only ever
        // through atomic loads.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        let ptr = map.as_ptr().cast::<u64>().cast_mut();
        Ok(Words { ptr, words: len / 8, _map: Mapping::ReadOnly(map) })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words, "word {i} past the table's {} words", self.words);
        // SAFETY: `i` is within the mapping (checked above), which is page-aligned, so the word
        // is 8-byte aligned; the mapping outlives `&self`; every access to the memory is atomic.
        // On a read-only mapping only `load` is ever called (the writers below are reached
        // only through `Table`, which maps shared).
        unsafe { AtomicU64::from_ptr(self.ptr.add(i)) }
    }

    pub fn load(&self, i: usize) -> u64 {
        self.word(i).load(Ordering::Relaxed)
    }

    /// A load that sees everything stored before the matching [`Words::publish`].
    pub fn load_acquire(&self, i: usize) -> u64 {
        self.word(i).load(Ordering::Acquire)
    }

    pub(crate) fn store(&self, i: usize, v: u64) {
        self.word(i).store(v, Ordering::Relaxed);
    }

    /// Stores `v` after every store before it (an entry's name before its ready state).
    pub(crate) fn publish(&self, i: usize, v: u64) {
        self.word(i).store(v, Ordering::Release);
    }

    /// Sets word `i` to `new` if it is `current`; whether it did.
    pub(crate) fn claim(&self, i: usize, current: u64, new: u64) -> bool {
        self.word(i).compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub(crate) fn add(&self, i: usize, v: u64) {
        self.word(i).fetch_add(v, Ordering::Relaxed);
    }
}
