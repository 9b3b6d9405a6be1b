//! The benchmark harness of `rcu-rangemap`: the structures compared, behind one trait each,
//! and the workloads' inputs (layouts, addresses, churn operations), generated the same way
//! for every structure from fixed seeds.
//!
//! Used by the comparison runner (`src/main.rs`, which writes `BENCHMARKS.md`), the
//! criterion micro benchmarks (`benches/micro.rs`) and the agreement test
//! (`tests/agree.rs`, which checks that every structure gives the same answers, so a fast
//! wrong answer cannot win).
//!
//! # The structures
//!
//! | name | what | keyed by | lookup |
//! |---|---|---|---|
//! | `rcu_rangemap` | this crate | range | `get`, read the value, drop the guard |
//! | `BTreeMap` | std, no lock: the single-thread floor | start | `range(..=a).next_back()`, check end |
//! | `std RwLock<BTreeMap>` | std lock | start | as above, under the read lock |
//! | `parking_lot RwLock<BTreeMap>` | parking_lot lock | start | as above |
//! | `ArcSwap<BTreeMap>` | copy the whole map per write session | start | as above, under a load guard |
//! | `scc::TreeIndex` | lock-free B+tree | start | `range(..=a).next_back()`, check end (faster than keying by end here) |
//! | `crossbeam SkipMap` | lock-free skip list | end | `lower_bound(Excluded(a))`, check start |
//! | `rangemap in RwLock` | `rangemap::RangeMap` in a parking_lot lock | range | `get_key_value` |
//! | `concread BptreeMap` | COW B+tree, one writer, read transactions | end | read txn, first key above `a` |
//!
//! Every value is a `u64`; the stored value of range `i` after `g` rewrites is
//! [`value_of`]`(i, g)`, so a reader can check that the value it read belongs to the
//! range it found.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Where the layouts start (a typical x86-64 user-space mmap base).
pub const BASE: u64 = 0x5555_0000_0000;
/// The page size every range and gap is a multiple of.
pub const PAGE: u64 = 4096;
/// What [`Structure::lookup`] answers for a miss.
pub const MISS: u64 = u64::MAX;

/// The value of range `idx` after its `generation`-th rewrite.
#[inline]
pub fn value_of(idx: usize, generation: u64) -> u64 {
    ((idx as u64) << 32) | (generation & 0xffff_ffff)
}

/// The range index a value belongs to.
#[inline]
pub fn index_of(value: u64) -> usize {
    (value >> 32) as usize
}

/// `n` ranges from [`BASE`] up: each 1–64 pages long, after a gap of 0–16 pages (0: the
/// range touches the previous one). Sorted, non-overlapping, deterministic in `seed`.
pub fn layout(n: usize, seed: u64) -> Vec<Range<u64>> {
    layout_with(n, seed, 1..=64, 0..=16)
}

/// Like [`layout`] with other range sizes and gaps (in pages).
pub fn layout_with(
    n: usize,
    seed: u64,
    pages: std::ops::RangeInclusive<u64>,
    gaps: std::ops::RangeInclusive<u64>,
) -> Vec<Range<u64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cur = BASE;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = cur + rng.u64(gaps.clone()) * PAGE;
        let end = start + rng.u64(pages.clone()) * PAGE;
        out.push(start..end);
        cur = end;
    }
    out
}

/// `count` addresses that hit: a random range of `ranges`, a random byte inside it.
pub fn hit_addresses(ranges: &[Range<u64>], count: usize, seed: u64) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            let r = &ranges[rng.usize(..ranges.len())];
            rng.u64(r.clone())
        })
        .collect()
}

/// Probe addresses for agreement checks: for every range its first and last byte and its
/// end (the next range's start, or a miss), a byte in each gap, and keys below and above
/// the whole layout.
pub fn probe_addresses(ranges: &[Range<u64>]) -> Vec<u64> {
    let mut out = vec![0, BASE.saturating_sub(1)];
    for (i, r) in ranges.iter().enumerate() {
        out.extend([r.start, r.start + 1, r.end - 1, r.end]);
        if let Some(next) = ranges.get(i + 1) {
            if next.start > r.end {
                out.push(r.end + (next.start - r.end) / 2);
            }
        }
    }
    if let Some(last) = ranges.last() {
        out.extend([last.end + PAGE, u64::MAX - 1]);
    }
    out
}

/// One reader thread of the lookup workloads: run `op` over `list` round and round, 512
/// addresses between looks at `stop`; returns how many it ran.
#[inline]
pub fn lookup_loop<F: Fn(u64) -> u64>(op: &F, list: &[u64], stop: &AtomicBool) -> u64 {
    run_loop(&|run: &[u64]| fold_lookups(run, op), list, stop)
}

/// The sum of `op` over `addrs` (wrapping), as the lookup loops accumulate it.
#[inline]
pub fn fold_lookups<F: Fn(u64) -> u64>(addrs: &[u64], op: &F) -> u64 {
    addrs.iter().fold(0u64, |acc, &a| acc.wrapping_add(op(a)))
}

/// [`lookup_loop`] with `op` taking a run of 512 addresses at once (so that it may hold
/// something across them, as [`OursPinned`] holds a pin). Out of line, so profiles show it
/// as one frame.
#[inline(never)]
pub fn run_loop<F: Fn(&[u64]) -> u64>(op: &F, list: &[u64], stop: &AtomicBool) -> u64 {
    let mut n = 0u64;
    let mut acc = 0u64;
    loop {
        for chunk in list.chunks(512) {
            acc = acc.wrapping_add(op(chunk));
            n += chunk.len() as u64;
            if stop.load(Relaxed) {
                std::hint::black_box(acc);
                return n;
            }
        }
    }
}

/// How long one hand-over of a cache line between two threads takes here, in nanoseconds:
/// two threads pass a counter back and forth, each waiting for its turn and then writing
/// the next value, `handovers` times or for at most 50 ms (if both land on one CPU).
///
/// Every figure with two or more threads depends on this cost: the lookups' count words,
/// a lock's reader count and the root pointer all move between the cores. On a VM it is
/// not a constant. The host may put the two vCPUs on SMT siblings, on cores that share an
/// L3, or farther apart, and may move them while a run goes on: on the AMD VM of
/// 2026-12-01 consecutive probes 0.3 s apart measured ~18, ~38 and ~79 ns (see
/// `benches/analysis.md`, "Rounds"). The runner and the `scaling` binary probe right
/// before and right after each sample of two or more threads and keep the results beside
/// the figures.
pub fn handover_ns(handovers: u64) -> f64 {
    use std::sync::atomic::AtomicU64;
    use std::time::{Duration, Instant};
    /// The counter, alone on its pair of cache lines (the adjacent-line prefetcher).
    #[repr(align(128))]
    struct Line(AtomicU64);
    let line = Line(AtomicU64::new(0));
    let give_up = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_millis(50);
    // Thread `me` (0 or 1) writes the odd or even successors: it waits until the counter
    // shows its turn, then passes it on. Relaxed suffices: the counter is the only datum,
    // and each thread waits for the other's store of it, whatever the order of other
    // memory.
    // Thread 0 starts the clock at its second turn, when both threads are running.
    let turn = |me: u64| {
        let mut next = me;
        let mut spins = 0u32;
        let mut start = None;
        while next < handovers && !give_up.load(Relaxed) {
            if line.0.load(Relaxed) == next {
                if next == 2 {
                    start = Some(Instant::now());
                }
                line.0.store(next + 1, Relaxed);
                next += 2;
            } else {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(4096) && Instant::now() > deadline {
                    give_up.store(true, Relaxed);
                }
            }
        }
        start
    };
    let t0 = Instant::now();
    let start = std::thread::scope(|s| {
        s.spawn(|| turn(1));
        turn(0)
    });
    let end = Instant::now();
    let done = line.0.load(Relaxed);
    match start {
        Some(t) if done > 2 => (end - t).as_nanos() as f64 / (done - 2) as f64,
        // Not even two hand-overs in 50 ms: both threads shared one CPU. The whole wait.
        _ => (end - t0).as_nanos() as f64,
    }
}

/// Hand-overs per probe of [`handover_ns`] in the harness: 2–8 ms at the 18–79 ns seen on
/// the AMD VM.
pub const PROBE_HANDOVERS: u64 = 100_000;

/// Where the host had the two vCPUs during a sample, judged from the [`handover_ns`]
/// probes right before and right after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Both probes at most the run's limit ([`Placement::limit`]).
    Near,
    /// Both probes above it.
    Far,
}

impl Placement {
    /// The limit between near and far for a run's probes: twice their 10th percentile (the
    /// run's fastest placement, give or take). `None` without probes.
    pub fn limit(probes: &[f64]) -> Option<f64> {
        let mut v = probes.to_vec();
        v.sort_by(f64::total_cmp);
        Some(2.0 * *v.get((v.len().checked_sub(1)?) / 10)?)
    }

    /// Near if both probes are at most `limit`, far if both are above; `None` if they
    /// disagree (the host moved the vCPUs during the sample, or was about to).
    pub fn of(before: f64, after: f64, limit: f64) -> Option<Placement> {
        if before.max(after) <= limit {
            Some(Placement::Near)
        } else if before.min(after) > limit {
            Some(Placement::Far)
        } else {
            None
        }
    }
}

/// Age `s` as the runner's flat-out W2 phase does: `count` one-op sessions from `ops`
/// (cycled) while one reader per list in `addrs` looks up, so the blocks each session
/// retires wait out the readers' grace periods before they can be reused.
pub fn churn_beside_readers<S: Concurrent>(s: &S, ops: &[Op], count: usize, addrs: &[Vec<u64>]) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        for list in addrs {
            let stop = &stop;
            sc.spawn(move || lookup_loop(&|a| s.lookup(a), list, stop));
        }
        for i in 0..count {
            s.churn(std::slice::from_ref(&ops[i % ops.len()]));
        }
        stop.store(true, Relaxed);
    });
}

/// One churn operation: remove range `idx` and re-insert it with `value`.
#[derive(Clone, Debug)]
pub struct Op {
    /// The range (as in the layout).
    pub range: Range<u64>,
    /// Its new value.
    pub value: u64,
}

/// `count` churn operations on random ranges of `ranges`, each giving its range a new
/// value ([`value_of`] with a generation counting up from 1).
pub fn churn_ops(ranges: &[Range<u64>], count: usize, seed: u64) -> Vec<Op> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|g| {
            let idx = rng.usize(..ranges.len());
            Op {
                range: ranges[idx].clone(),
                value: value_of(idx, g as u64 + 1),
            }
        })
        .collect()
}

/// A structure compared in the lookup and churn workloads.
pub trait Structure: Sized + Send + Sync {
    /// The name in tables.
    const NAME: &'static str;
    /// Build from `ranges`, range `i` holding [`value_of`]`(i, 0)`.
    fn build(ranges: &[Range<u64>]) -> Self;
    /// The range holding `addr` and its value.
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)>;
    /// The hot path of the lookup workloads: find the range holding `addr`, read its value
    /// (or [`MISS`]), release whatever the lookup held.
    fn lookup(&self, addr: u64) -> u64;
    /// One write session (a lock hold, transaction, or copy) applying `ops` in order: each
    /// removes its range and re-inserts it with the new value. Single-thread use.
    fn churn_mut(&mut self, ops: &[Op]);
    /// [`lookup`](Self::lookup) over a run of addresses, summed (wrapping): what the
    /// lookup workloads' threads call.
    #[inline]
    fn lookup_run(&self, addrs: &[u64]) -> u64 {
        fold_lookups(addrs, &|a| self.lookup(a))
    }
    /// Internal counters worth reporting (ours: the lock statistics), if any.
    fn diag(&self) -> Option<String> {
        None
    }
}

/// A structure readers and one writer can share.
pub trait Concurrent: Structure {
    /// [`Structure::churn_mut`] through a shared reference.
    fn churn(&self, ops: &[Op]);
}

macro_rules! churn_mut_via_shared {
    () => {
        fn churn_mut(&mut self, ops: &[Op]) {
            Concurrent::churn(self, ops)
        }
    };
}

// ---------------------------------------------------------------------------------------
// rcu_rangemap

/// This crate's map.
pub struct Ours(pub rcu_rangemap::RangeMap<u64, u64>);

impl Structure for Ours {
    const NAME: &'static str = "rcu_rangemap";
    fn build(ranges: &[Range<u64>]) -> Self {
        let map = rcu_rangemap::RangeMap::new();
        let mut w = map.write();
        for (i, r) in ranges.iter().enumerate() {
            assert!(w.try_insert(r.clone(), value_of(i, 0)).is_ok());
        }
        w.commit();
        Ours(map)
    }
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)> {
        self.0.get(addr).map(|g| (g.range(), *g))
    }
    #[inline]
    fn lookup(&self, addr: u64) -> u64 {
        match self.0.get(addr) {
            Some(g) => *g,
            None => MISS,
        }
    }
    fn diag(&self) -> Option<String> {
        Some(self.stats_line())
    }
    churn_mut_via_shared!();
}

impl Ours {
    /// The map's lock statistics as one line.
    pub fn stats_line(&self) -> String {
        let s = self.0.stats();
        format!(
            "fast-path successes {}, refusals {}, retries {}, misses {}, grants after waiting \
             for the session {}, slow-path grants {}",
            s.success, s.abort, s.retry, s.miss, s.waited, s.slow
        )
    }
}

/// This crate's map, read under one `EpochPin` per [`PINNED_RUN`] lookups
/// (`RangeMap::pin`) instead of one pin per lookup; writes as [`Ours`].
pub struct OursPinned(pub Ours);

/// Lookups [`OursPinned`] makes under one pin.
pub const PINNED_RUN: usize = 64;

impl Structure for OursPinned {
    const NAME: &'static str = "rcu_rangemap (pin per 64)";
    fn build(ranges: &[Range<u64>]) -> Self {
        OursPinned(Ours::build(ranges))
    }
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)> {
        self.0 .0.pin().get(addr).map(|g| (g.range(), *g))
    }
    fn lookup(&self, addr: u64) -> u64 {
        self.lookup_run(std::slice::from_ref(&addr))
    }
    #[inline]
    fn lookup_run(&self, addrs: &[u64]) -> u64 {
        addrs.chunks(PINNED_RUN).fold(0u64, |acc, run| {
            let pinned = self.0 .0.pin();
            acc.wrapping_add(fold_lookups(run, &|a| match pinned.get(a) {
                Some(g) => *g,
                None => MISS,
            }))
        })
    }
    churn_mut_via_shared!();
}

impl Concurrent for OursPinned {
    fn churn(&self, ops: &[Op]) {
        self.0.churn(ops)
    }
}

impl Concurrent for Ours {
    fn churn(&self, ops: &[Op]) {
        let mut w = self.0.write();
        for op in ops {
            let gone = w.remove_entry(op.range.start);
            debug_assert!(gone.is_some_and(|(r, _)| r == op.range));
            let ok = w.try_insert(op.range.clone(), op.value).is_ok();
            debug_assert!(ok);
        }
        w.commit();
    }
}

// ---------------------------------------------------------------------------------------
// The BTreeMap family: keyed by start, value (end, value).

type Tree = BTreeMap<u64, (u64, u64)>;

fn tree_build(ranges: &[Range<u64>]) -> Tree {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| (r.start, (r.end, value_of(i, 0))))
        .collect()
}

#[inline]
fn tree_get(t: &Tree, addr: u64) -> Option<(Range<u64>, u64)> {
    match t.range(..=addr).next_back() {
        Some((&s, &(e, v))) if addr < e => Some((s..e, v)),
        _ => None,
    }
}

#[inline]
fn tree_lookup(t: &Tree, addr: u64) -> u64 {
    match t.range(..=addr).next_back() {
        Some((_, &(e, v))) if addr < e => v,
        _ => MISS,
    }
}

fn tree_churn(t: &mut Tree, ops: &[Op]) {
    for op in ops {
        let gone = t.remove(&op.range.start);
        debug_assert!(gone.is_some());
        t.insert(op.range.start, (op.range.end, op.value));
    }
}

/// `std::collections::BTreeMap`, no lock: the single-thread floor.
pub struct Floor(pub Tree);

impl Structure for Floor {
    const NAME: &'static str = "BTreeMap (no lock)";
    fn build(ranges: &[Range<u64>]) -> Self {
        Floor(tree_build(ranges))
    }
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)> {
        tree_get(&self.0, addr)
    }
    #[inline]
    fn lookup(&self, addr: u64) -> u64 {
        tree_lookup(&self.0, addr)
    }
    fn churn_mut(&mut self, ops: &[Op]) {
        tree_churn(&mut self.0, ops)
    }
}

/// `std::sync::RwLock<BTreeMap>`.
pub struct StdRw(pub std::sync::RwLock<Tree>);

impl Structure for StdRw {
    const NAME: &'static str = "std RwLock<BTreeMap>";
    fn build(ranges: &[Range<u64>]) -> Self {
        StdRw(std::sync::RwLock::new(tree_build(ranges)))
    }
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)> {
        tree_get(&self.0.read().unwrap(), addr)
    }
    #[inline]
    fn lookup(&self, addr: u64) -> u64 {
        tree_lookup(&self.0.read().unwrap(), addr)
    }
    churn_mut_via_shared!();
}

impl Concurrent for StdRw {
    fn churn(&self, ops: &[Op]) {
        tree_churn(&mut self.0.write().unwrap(), ops)
    }
}

/// `parking_lot::RwLock<BTreeMap>`.
pub struct PlRw(pub parking_lot::RwLock<Tree>);

impl Structure for PlRw {
    const NAME: &'static str = "parking_lot RwLock<BTreeMap>";
    fn build(ranges: &[Range<u64>]) -> Self {
        PlRw(parking_lot::RwLock::new(tree_build(ranges)))
    }
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)> {
        tree_get(&self.0.read(), addr)
    }
    #[inline]
    fn lookup(&self, addr: u64) -> u64 {
        tree_lookup(&self.0.read(), addr)
    }
    churn_mut_via_shared!();
}

impl Concurrent for PlRw {
    fn churn(&self, ops: &[Op]) {
        tree_churn(&mut self.0.write(), ops)
    }
}

/// `arc_swap::ArcSwap<BTreeMap>`: a write session copies the whole map, edits the copy
/// and swaps it in (writes are serialised by the caller: one writer).
pub struct Swap(pub ArcSwap<Tree>);

impl Structure for Swap {
    const NAME: &'static str = "ArcSwap<BTreeMap> (copy per write)";
    fn build(ranges: &[Range<u64>]) -> Self {
        Swap(ArcSwap::from_pointee(tree_build(ranges)))
    }
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)> {
        tree_get(&self.0.load(), addr)
    }
    #[inline]
    fn lookup(&self, addr: u64) -> u64 {
        tree_lookup(&self.0.load(), addr)
    }
    churn_mut_via_shared!();
}

impl Concurrent for Swap {
    fn churn(&self, ops: &[Op]) {
        let mut copy: Tree = (**self.0.load()).clone();
        tree_churn(&mut copy, ops);
        self.0.store(Arc::new(copy));
    }
}

// ---------------------------------------------------------------------------------------
// Ordered concurrent maps. Keyed by range end, the range holding `a` is the first entry
// whose end is above `a`, if its start is at or below `a`; keyed by start, the last entry
// whose start is at or below `a`, if its end is above `a`.

/// `scc::TreeIndex<start, (end, value)>`, looked up with `range(..=a).next_back()`.
///
/// Keyed by start rather than by end (first key above `a`, as for the skip list): scc
/// finds the start of a forward range by walking leaves backwards, and the end-keyed form
/// measured ~30% slower at N = 100k (9,400 against 6,500 instructions per lookup).
pub struct Scc(pub scc::TreeIndex<u64, (u64, u64)>);

impl Structure for Scc {
    const NAME: &'static str = "scc::TreeIndex";
    fn build(ranges: &[Range<u64>]) -> Self {
        let t = scc::TreeIndex::new();
        for (i, r) in ranges.iter().enumerate() {
            assert!(t.insert_sync(r.start, (r.end, value_of(i, 0))).is_ok());
        }
        Scc(t)
    }
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)> {
        let guard = scc::Guard::new();
        match self.0.range(..=addr, &guard).next_back() {
            Some((&s, &(e, v))) if addr < e => Some((s..e, v)),
            _ => None,
        }
    }
    #[inline]
    fn lookup(&self, addr: u64) -> u64 {
        let guard = scc::Guard::new();
        match self.0.range(..=addr, &guard).next_back() {
            Some((_, &(e, v))) if addr < e => v,
            _ => MISS,
        }
    }
    churn_mut_via_shared!();
}

impl Concurrent for Scc {
    fn churn(&self, ops: &[Op]) {
        for op in ops {
            let gone = self.0.remove_sync(&op.range.start);
            debug_assert!(gone);
            let ok = self
                .0
                .insert_sync(op.range.start, (op.range.end, op.value))
                .is_ok();
            debug_assert!(ok);
        }
    }
}

/// `crossbeam_skiplist::SkipMap<end, (start, value)>`.
pub struct Skip(pub crossbeam_skiplist::SkipMap<u64, (u64, u64)>);

impl Structure for Skip {
    const NAME: &'static str = "crossbeam SkipMap";
    fn build(ranges: &[Range<u64>]) -> Self {
        let m = crossbeam_skiplist::SkipMap::new();
        for (i, r) in ranges.iter().enumerate() {
            m.insert(r.end, (r.start, value_of(i, 0)));
        }
        Skip(m)
    }
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)> {
        let e = self.0.lower_bound(Excluded(&addr))?;
        let (s, v) = *e.value();
        (s <= addr).then(|| (s..*e.key(), v))
    }
    #[inline]
    fn lookup(&self, addr: u64) -> u64 {
        match self.0.lower_bound(Excluded(&addr)) {
            Some(e) => {
                let (s, v) = *e.value();
                if s <= addr {
                    v
                } else {
                    MISS
                }
            }
            None => MISS,
        }
    }
    churn_mut_via_shared!();
}

impl Concurrent for Skip {
    fn churn(&self, ops: &[Op]) {
        for op in ops {
            let gone = self.0.remove(&op.range.end);
            debug_assert!(gone.is_some());
            self.0.insert(op.range.end, (op.range.start, op.value));
        }
    }
}

/// `rangemap::RangeMap` in a `parking_lot::RwLock`. (Values are all distinct, so its
/// coalescing of equal neighbours never triggers.)
pub struct RangeMapRw(pub parking_lot::RwLock<rangemap::RangeMap<u64, u64>>);

impl Structure for RangeMapRw {
    const NAME: &'static str = "rangemap in parking_lot RwLock";
    fn build(ranges: &[Range<u64>]) -> Self {
        let mut m = rangemap::RangeMap::new();
        for (i, r) in ranges.iter().enumerate() {
            m.insert(r.clone(), value_of(i, 0));
        }
        RangeMapRw(parking_lot::RwLock::new(m))
    }
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)> {
        self.0
            .read()
            .get_key_value(&addr)
            .map(|(r, &v)| (r.clone(), v))
    }
    #[inline]
    fn lookup(&self, addr: u64) -> u64 {
        self.0.read().get(&addr).copied().unwrap_or(MISS)
    }
    churn_mut_via_shared!();
}

impl Concurrent for RangeMapRw {
    fn churn(&self, ops: &[Op]) {
        let mut m = self.0.write();
        for op in ops {
            m.remove(op.range.clone());
            m.insert(op.range.clone(), op.value);
        }
    }
}

/// `concread::bptree::BptreeMap<end, (start, value)>`: one writer transaction per session,
/// one read transaction per lookup.
pub struct Concread(pub concread::bptree::BptreeMap<u64, (u64, u64)>);

impl Structure for Concread {
    const NAME: &'static str = "concread BptreeMap";
    fn build(ranges: &[Range<u64>]) -> Self {
        let m = concread::bptree::BptreeMap::new();
        let mut w = m.write();
        for (i, r) in ranges.iter().enumerate() {
            w.insert(r.end, (r.start, value_of(i, 0)));
        }
        w.commit();
        Concread(m)
    }
    fn get(&self, addr: u64) -> Option<(Range<u64>, u64)> {
        let r = self.0.read();
        match r.range((Excluded(addr), Unbounded)).next() {
            Some((&e, &(s, v))) if s <= addr => Some((s..e, v)),
            _ => None,
        }
    }
    #[inline]
    fn lookup(&self, addr: u64) -> u64 {
        let r = self.0.read();
        match r.range((Excluded(addr), Unbounded)).next() {
            Some((_, &(s, v))) if s <= addr => v,
            _ => MISS,
        }
    }
    churn_mut_via_shared!();
}

impl Concurrent for Concread {
    fn churn(&self, ops: &[Op]) {
        let mut w = self.0.write();
        for op in ops {
            let gone = w.remove(&op.range.end);
            debug_assert!(gone.is_some());
            w.insert(op.range.end, (op.range.start, op.value));
        }
        w.commit();
    }
}

// ---------------------------------------------------------------------------------------
// W4: allocators.

/// An address allocator in the allocator churn workload (W4): first fit, page aligned.
pub trait Allocator: Sized {
    /// The name in tables.
    const NAME: &'static str;
    /// An allocator over `space` with `taken` already allocated (exact placements).
    fn build(space: Range<u64>, taken: &[Range<u64>]) -> Self;
    /// Allocate `size` bytes, page aligned, at the lowest place that fits.
    fn alloc(&mut self, size: u64) -> Option<Range<u64>>;
    /// Free an allocation (as returned by `alloc`, or one of `taken`).
    fn free(&mut self, r: Range<u64>);
}

/// This crate's map used as an allocator: one session per allocation
/// (`Writer::find_gap` then `try_insert`), one per free (`remove_entry`).
pub struct OursAlloc {
    map: rcu_rangemap::RangeMap<u64, u64>,
    space: Range<u64>,
}

impl Allocator for OursAlloc {
    const NAME: &'static str = "rcu_rangemap (Writer::find_gap)";
    fn build(space: Range<u64>, taken: &[Range<u64>]) -> Self {
        let map = rcu_rangemap::RangeMap::new();
        let mut w = map.write();
        for r in taken {
            assert!(w.try_insert(r.clone(), r.start).is_ok());
        }
        w.commit();
        OursAlloc { map, space }
    }
    fn alloc(&mut self, size: u64) -> Option<Range<u64>> {
        let mut w = self.map.write();
        let r = w.find_gap(self.space.clone(), size, PAGE, rcu_rangemap::Fit::Lowest)?;
        let ok = w.try_insert(r.clone(), r.start).is_ok();
        debug_assert!(ok);
        Some(r)
    }
    fn free(&mut self, r: Range<u64>) {
        let gone = self.map.write().remove_entry(r.start);
        debug_assert!(gone.is_some_and(|(g, _)| g == r));
    }
}

/// This crate's `allocator::AddressAllocator` (the same map, plus argument checks and the
/// exact-range check on free).
pub struct OursAddressAllocator(pub rcu_rangemap::allocator::AddressAllocator<u64>);

impl Allocator for OursAddressAllocator {
    const NAME: &'static str = "rcu_rangemap::allocator::AddressAllocator";
    fn build(space: Range<u64>, taken: &[Range<u64>]) -> Self {
        let a = rcu_rangemap::allocator::AddressAllocator::new(space).unwrap();
        for r in taken {
            a.reserve(r.clone()).unwrap();
        }
        OursAddressAllocator(a)
    }
    fn alloc(&mut self, size: u64) -> Option<Range<u64>> {
        self.0
            .allocate(size, PAGE, rcu_rangemap::allocator::Placement::Lowest)
            .ok()
    }
    fn free(&mut self, r: Range<u64>) {
        let ok = self.0.free(r).is_ok();
        debug_assert!(ok);
    }
}

/// `vm_allocator::AddressAllocator` (rust-vmm), `AllocPolicy::FirstMatch`; `&mut`, no lock.
pub struct VmAlloc(pub vm_allocator::AddressAllocator);

impl Allocator for VmAlloc {
    const NAME: &'static str = "vm_allocator::AddressAllocator";
    fn build(space: Range<u64>, taken: &[Range<u64>]) -> Self {
        let mut a =
            vm_allocator::AddressAllocator::new(space.start, space.end - space.start).unwrap();
        for r in taken {
            a.allocate(
                r.end - r.start,
                PAGE,
                vm_allocator::AllocPolicy::ExactMatch(r.start),
            )
            .unwrap();
        }
        VmAlloc(a)
    }
    fn alloc(&mut self, size: u64) -> Option<Range<u64>> {
        let r = self
            .0
            .allocate(size, PAGE, vm_allocator::AllocPolicy::FirstMatch)
            .ok()?;
        Some(r.start()..r.end() + 1)
    }
    fn free(&mut self, r: Range<u64>) {
        let ri = vm_allocator::RangeInclusive::new(r.start, r.end - 1).unwrap();
        let ok = self.0.free(&ri).is_ok();
        debug_assert!(ok);
    }
}

/// Not an allocator: the floor that W4-scaling is read against. An unlocked std `BTreeMap`
/// keyed by start that, per step, removes the random allocation and inserts the same range
/// again (whatever size was asked for): the two tree edits of a step at the same N, with no
/// search, no copy, no lock. How its cost grows from N = 1k to 100k is what the machine's
/// caches make two O(log n) edits cost.
pub struct FloorAlloc {
    map: std::collections::BTreeMap<u64, u64>,
    freed: Option<Range<u64>>,
}

impl FloorAlloc {
    /// The ranges in its tree, in order.
    pub fn ranges(&self) -> Vec<Range<u64>> {
        self.map.iter().map(|(&s, &e)| s..e).collect()
    }
}

impl Allocator for FloorAlloc {
    const NAME: &'static str = "BTreeMap (no lock): remove + re-insert, no search";
    fn build(_space: Range<u64>, taken: &[Range<u64>]) -> Self {
        FloorAlloc {
            map: taken.iter().map(|r| (r.start, r.end)).collect(),
            freed: None,
        }
    }
    fn alloc(&mut self, _size: u64) -> Option<Range<u64>> {
        let r = self.freed.take()?;
        let was = self.map.insert(r.start, r.end);
        debug_assert!(was.is_none());
        Some(r)
    }
    fn free(&mut self, r: Range<u64>) {
        let end = self.map.remove(&r.start);
        debug_assert_eq!(end, Some(r.end));
        self.freed = Some(r);
    }
}

/// The W4 setup: `n` live allocations of 1–16 pages with gaps of 0–16 pages (the
/// fragmented lower half of the space) and an equally large free upper half.
pub fn alloc_setup(n: usize, seed: u64) -> (Range<u64>, Vec<Range<u64>>) {
    let taken = layout_with(n, seed, 1..=16, 0..=16);
    let used = taken.last().map_or(PAGE, |r| r.end) - BASE;
    (BASE..BASE + 2 * used, taken)
}

/// The W4 step driver: keeps the live allocations, frees a random one and allocates
/// 1–16 pages, first fit.
pub struct AllocChurn {
    /// The live allocations, in no order.
    pub live: Vec<Range<u64>>,
    rng: fastrand::Rng,
}

impl AllocChurn {
    /// Start from the setup's live allocations.
    pub fn new(live: Vec<Range<u64>>, seed: u64) -> Self {
        AllocChurn {
            live,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// One step on `a`: free a random live allocation, allocate 1–16 pages. Returns the
    /// new allocation.
    #[inline]
    pub fn step<A: Allocator>(&mut self, a: &mut A) -> Range<u64> {
        let i = self.rng.usize(..self.live.len());
        let size = self.rng.u64(1..=16) * PAGE;
        let old = self.live.swap_remove(i);
        a.free(old);
        let r = a.alloc(size).expect("the free upper half never runs out");
        self.live.push(r.clone());
        r
    }
}

// ---------------------------------------------------------------------------------------
// A counting global allocator, for the binaries that measure memory.

pub use counting::Counting;

/// A counting global allocator: every call forwarded to the system allocator; counted while
/// [`COUNTING`](counting::COUNTING) is set (one relaxed load per call otherwise). A binary
/// installs it with `#[global_allocator] static GLOBAL: Counting = Counting;`.
pub mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

    /// The allocator (see the module docs).
    pub struct Counting;

    /// Whether allocations are counted now.
    pub static COUNTING: AtomicBool = AtomicBool::new(false);
    /// Bytes allocated minus bytes freed while counting.
    pub static NET_BYTES: AtomicI64 = AtomicI64::new(0);
    /// Allocation counts by size (in bytes, up to 1024; larger ones in the last slot).
    pub static SIZES: [AtomicU64; 1026] = [const { AtomicU64::new(0) }; 1026];

    // SAFETY: forwards every call to the system allocator unchanged; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            if COUNTING.load(Relaxed) {
                NET_BYTES.fetch_add(l.size() as i64, Relaxed);
                SIZES[l.size().min(1025)].fetch_add(1, Relaxed);
            }
            // SAFETY: caller contract of `GlobalAlloc::alloc`.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            if COUNTING.load(Relaxed) {
                NET_BYTES.fetch_sub(l.size() as i64, Relaxed);
            }
            // SAFETY: caller contract of `GlobalAlloc::dealloc`.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            if COUNTING.load(Relaxed) {
                NET_BYTES.fetch_add(new as i64 - l.size() as i64, Relaxed);
                SIZES[new.min(1025)].fetch_add(1, Relaxed);
            }
            // SAFETY: caller contract of `GlobalAlloc::realloc`.
            unsafe { System.realloc(p, l, new) }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_handover_probe_counts_time_per_handover() {
        // 2,000 hand-overs take microseconds when the threads run on two CPUs, and the
        // probe gives up after 50 ms when they share one: either way a positive, finite
        // time, and never more than the whole 50 ms (plus scheduling slack) per hand-over.
        let ns = super::handover_ns(2_000);
        assert!(ns.is_finite() && ns > 0.0, "{ns}");
        assert!(ns < 1e9, "{ns}");
    }

    #[test]
    fn placement_needs_both_probes_on_one_side() {
        use super::Placement::{self, *};
        assert_eq!(Placement::limit(&[]), None);
        // Ten probes: the 10th percentile is the smallest.
        let probes = [
            30.0, 200.0, 31.0, 35.0, 170.0, 33.0, 180.0, 32.0, 400.0, 34.0,
        ];
        assert_eq!(Placement::limit(&probes), Some(60.0));
        assert_eq!(Placement::of(30.0, 60.0, 60.0), Some(Near));
        assert_eq!(Placement::of(61.0, 200.0, 60.0), Some(Far));
        assert_eq!(Placement::of(30.0, 200.0, 60.0), None);
        assert_eq!(Placement::of(200.0, 30.0, 60.0), None);
    }
}
