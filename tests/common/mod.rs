//! Helpers shared by the test binaries (`stress`, `snapshots`, `conversions`, `retain`):
//! each includes this file as `mod common;`, so an item one of them does not use is allowed
//! to go unused.
#![allow(dead_code)]

/// Whether to run short: under Miri, or when `RCU_RANGEMAP_SMALL` is set.
pub fn small() -> bool {
    cfg!(miri) || std::env::var_os("RCU_RANGEMAP_SMALL").is_some()
}

/// SplitMix64: a tiny deterministic generator (seeded per thread).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for tests (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True once in `one_in` on average.
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// The ranges `map` covers inside `0..top`, adjacent entries merged, all from one published
/// version (read through `gaps`, which takes one).
pub fn covered<V>(map: &rcu_rangemap::RangeMap<u64, V>, top: u64) -> Vec<std::ops::Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    for g in map.gaps(0..top).chain(std::iter::once(top..top)) {
        if g.start > at {
            out.push(at..g.start);
        }
        at = g.end;
    }
    out
}

/// Sets its flag when dropped: a writer side that stops a reader thread through it stops
/// the reader however it ends, so a failed assertion fails the test instead of leaving a
/// thread scope waiting for a reader that never stops.
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}
