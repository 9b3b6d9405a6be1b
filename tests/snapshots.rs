//! Readers checked against a log of every committed state.
//!
//! One writer thread runs sessions (overwrites that trim and split, range removals, entry
//! removals, put-backs that publish nothing, in-place changes through `get_mut`, fills
//! found with its own `find_gap`), a third of its edits at the key where a reader's walk
//! goes on next, and another thread runs `shrink_to_fit` beside it (every entry moves to a
//! new block, the nodes are rebuilt; the state stays the same). Before each commit the
//! writer appends the state the session leaves (read from its own view) to a log, and
//! after the commit it bumps a counter. Every value is unique (a fresh id per entry and per
//! split piece), so a `(range, id)` names one entry of one state.
//!
//! A reader brackets each step with two loads of the counter, `before` and `after`: the
//! published state during the step is one of the log's states `before ..= after + 1` (the
//! writer publishes state `c + 1` only after it bumped the counter to `c`, and bumps it
//! only after the commit). Each answer must then fit one of those states exactly:
//!
//! - an iterator step (`next`, `next_back`, mixed, on `overlapping` or `iter`, also with
//!   commits let through between steps): the entry yielded is in one of them with that id,
//!   and in one of them it is there with everything between the iterator's cursor and it
//!   free (so no entry that stayed is skipped, none is yielded twice, the two ends never
//!   cross); `None` only if one of them has the rest of the window free. A guard held
//!   while commits land: every state committed meanwhile keeps its entry;
//! - `gaps` (both directions) and a `clone` of the map: exactly one of them;
//! - `find_gap`: exactly the lowest or highest fit in one of them;
//! - `get`, `try_get`, `Pinned::get`, `Pinned::try_get` (the pin held across commits):
//!   the entry of one of them, or vacant in one of them; `len` the length of one of them;
//!   `try_get` refused as `Locked` only if some session ran meanwhile.
//!
//! Five shapes: `u8` keys over the whole key space (the last range may end at `u8::MAX`),
//! `u64` and `u128` keys in the last 256 keys below their `MAX`, a tiny `u16` map whose
//! root leaf splits and merges back, and a `u64` map deep enough for three levels (under
//! Miri: the first two, over their last 63 keys, and the tiny one). Set
//! `RCU_RANGEMAP_SMALL` (or run under Miri) for a short run, or
//! `RCU_RANGEMAP_SOAK_MS` to run each test that many milliseconds. With the
//! `delay-injection` feature, lookups also stall between the descent and the count, where
//! a commit detaches the entry found.
//!
//! Orderings: the log's counter and the session counts are SeqCst (see `Log`); every
//! Relaxed atomic here is a statistic, a hint (`Log::cursors`), an id source or the stop
//! flag, none of which hands data over (the states go through the log's lock).

mod common;
use common::{small, Rng};
use rcu_rangemap::{Fit, Key, RangeMap, TryGetError};
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Barrier, RwLock};
use std::thread;
use std::time::{Duration, Instant};

/// A value the writer may change in two steps (`get_mut`): `check` is always `!id` when
/// read under a guard.
#[derive(Clone, Debug)]
struct Val {
    id: u64,
    check: u64,
}

impl Val {
    fn new(id: u64) -> Self {
        Val { id, check: !id }
    }
    /// The id, after checking the value is whole.
    fn id(&self) -> u64 {
        assert_eq!(self.check, !self.id, "torn value {self:?}");
        self.id
    }
}

/// Key types under test, from `u128` (`Key::to_u128` is the way back).
trait TestKey: Key {
    fn from_u128(x: u128) -> Self;
}
impl TestKey for u8 {
    fn from_u128(x: u128) -> Self {
        u8::try_from(x).expect("a u8 key")
    }
}
impl TestKey for u16 {
    fn from_u128(x: u128) -> Self {
        u16::try_from(x).expect("a u16 key")
    }
}
impl TestKey for u64 {
    fn from_u128(x: u128) -> Self {
        u64::try_from(x).expect("a u64 key")
    }
}
impl TestKey for u128 {
    fn from_u128(x: u128) -> Self {
        x
    }
}

/// One committed state: `(lo, hi, id)` in key order, as offsets from the base.
type State = Vec<(u64, u64, u64)>;

/// The entry of `s` holding `k`.
fn holding(s: &State, k: u64) -> Option<(u64, u64, u64)> {
    let i = s.partition_point(|e| e.1 <= k);
    s.get(i).copied().filter(|e| e.0 <= k)
}

/// Whether `a..b` is free in `s` (an empty range is).
fn free(s: &State, a: u64, b: u64) -> bool {
    if a >= b {
        return true;
    }
    let i = s.partition_point(|e| e.1 <= a);
    s.get(i).map_or(true, |e| e.0 >= b)
}

/// Whether `s` holds an entry `lo..hi` (with any id).
fn has_range(s: &State, lo: u64, hi: u64) -> bool {
    holding(s, lo).is_some_and(|e| (e.0, e.1) == (lo, hi))
}

/// The free ranges of `s` inside `a..b`.
fn gaps(s: &State, a: u64, b: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = a;
    for &(lo, hi, _) in s {
        if hi <= at || lo >= b {
            continue;
        }
        if lo > at {
            out.push((at, lo));
        }
        at = hi;
    }
    if at < b {
        out.push((at, b));
    }
    out
}

/// The lowest or highest place of `size` keys aligned to `align` that is free in `s`
/// inside `a..b` (offsets; the base is a multiple of every `align` used).
fn fit_in(s: &State, a: u64, b: u64, size: u64, align: u64, fit: Fit) -> Option<(u64, u64)> {
    let g = gaps(s, a, b);
    let place = |&(g0, g1): &(u64, u64)| match fit {
        Fit::Lowest => {
            let st = g0.div_ceil(align) * align;
            (st + size <= g1).then_some((st, st + size))
        }
        Fit::Highest => {
            let st = (g1.checked_sub(size)? / align) * align;
            (st >= g0).then_some((st, st + size))
        }
    };
    match fit {
        Fit::Lowest => g.iter().find_map(place),
        Fit::Highest => g.iter().rev().find_map(place),
    }
}

/// The writer's log of committed states and its commit counter.
struct Log {
    /// `(number of the first state kept, the states from it on)`.
    states: RwLock<(u64, VecDeque<Arc<State>>)>,
    /// Number of the last state whose commit returned. Stored after the commit; a reader
    /// that loads `c` sees state `c` (or a later one) published.
    committed: AtomicU64,
    /// Per reader: the oldest state its current step may ask for (`u64::MAX`: none). The
    /// writer drops the states before every reader's.
    active: Vec<AtomicU64>,
    /// Writer sessions (and `shrink_to_fit` calls) begun, and ended: see [`Log::quiet`].
    begun: AtomicU64,
    ended: AtomicU64,
    /// Per reader: the key where its walk goes on, for the writer to edit there.
    cursors: Vec<AtomicU64>,
}

impl Log {
    /// Start a step of reader `t`: the number of the state committed last, which it and
    /// every later state stay in the log until the reader's next step.
    fn enter(&self, t: usize) -> u64 {
        // SeqCst, all of `enter`'s and `prune`'s accesses: if `prune` reads `active` before
        // our store, it stored `committed` before that read, so our load below sees its
        // value or a later one, and it drops only states before its value.
        let c = self.committed.load(SeqCst);
        self.active[t].store(c, SeqCst);
        self.committed.load(SeqCst)
    }

    /// The counter, after a step.
    fn now(&self) -> u64 {
        self.committed.load(SeqCst)
    }

    /// The states a step bracketed by `before` (from `enter`) and `after` may have seen.
    fn window(&self, before: u64, after: u64) -> Vec<Arc<State>> {
        let st = self.states.read().unwrap();
        let (first, states) = (&st.0, &st.1);
        let last = (after + 1).min(first + states.len() as u64 - 1);
        (before..=last)
            .map(|i| states[(i - first) as usize].clone())
            .collect()
    }

    /// Append the state the session about to commit leaves.
    fn push(&self, s: State) {
        self.states.write().unwrap().1.push_back(Arc::new(s));
    }

    /// After commit `c`: publish the counter, and drop the states no reader can ask for.
    fn after_commit(&self, c: u64) {
        self.committed.store(c, SeqCst);
        let keep = self.active.iter().map(|a| a.load(SeqCst)).fold(c, u64::min);
        let mut st = self.states.write().unwrap();
        while st.0 < keep {
            st.1.pop_front();
            st.0 += 1;
        }
    }

    /// Around a writer session or a `shrink_to_fit` (before it starts, after it ends).
    fn begin(&self) {
        self.begun.fetch_add(1, SeqCst);
    }
    fn end(&self) {
        self.ended.fetch_add(1, SeqCst);
    }

    /// `Some(n)` if `n` sessions have begun and all of them ended. A step between two equal
    /// `Some` answers met no session at all: every entry was readable throughout.
    fn quiet(&self) -> Option<u64> {
        // SeqCst: a session that began before the first load is counted in it, and if it
        // had not ended by the second, the two differ.
        let b = self.begun.load(SeqCst);
        (self.ended.load(SeqCst) == b).then_some(b)
    }

    fn last(&self) -> Arc<State> {
        self.states.read().unwrap().1.back().unwrap().clone()
    }
}

/// Sets `stop` when dropped (also while unwinding), so that no thread waits for a
/// panicked one.
struct StopOnDrop<'a>(&'a AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    /// Key of offset 0: a multiple of every `align` used (16).
    base: u128,
    /// Ranges lie inside offsets `0..span`.
    span: u64,
    /// Widest range the writer makes.
    width: u64,
    /// Sessions at most (fewer if the time runs out).
    sessions: u64,
    /// Sessions the writer may run per reader step (beyond a head start).
    pace: u64,
    /// Check the published map against the log after every this many commits.
    verify_every: u64,
    seed: u64,
}

impl Shape {
    /// The keys `0..hot` that half the edits and half the reads go to.
    fn hot(&self) -> u64 {
        (8 * self.width).min(self.span)
    }
}

struct Counts {
    steps: AtomicU64,
    walks: AtomicU64,
    held: AtomicU64,
    gaps: AtomicU64,
    fits: AtomicU64,
    lookups: AtomicU64,
    locked: AtomicU64,
    clones: AtomicU64,
    shrinks: AtomicU64,
    holds: AtomicU64,
    straddles: AtomicU64,
    progress: AtomicU64,
}

fn run<K: TestKey>(shape: Shape) {
    let Shape {
        base, span, width, ..
    } = shape;
    let key = |x: u64| K::from_u128(base + u128::from(x));
    let off = |k: K| u64::try_from(k.to_u128() - base).expect("an offset");
    let map: RangeMap<K, Val> = RangeMap::new();
    let next_id = AtomicU64::new(1);
    let fresh = || Val::new(next_id.fetch_add(1, Relaxed));
    // The session's view, as a state.
    let view = |w: &rcu_rangemap::Writer<'_, K, Val>| -> State {
        w.overlapping(key(0)..key(span))
            .map(|(r, v)| (off(r.start), off(r.end), v.id()))
            .collect()
    };
    let published = |map: &RangeMap<K, Val>| -> State {
        map.iter()
            .map(|g| (off(g.range().start), off(g.range().end), g.id()))
            .collect()
    };
    let mut rng = Rng(shape.seed);
    let hot = shape.hot();
    // Fill densely: ranges of 1..=width keys, now and then a one-key hole.
    let first = {
        let mut w = map.write();
        let mut at = 0;
        while at < span {
            let end = (at + 1 + rng.below(width)).min(span);
            w.try_insert(key(at)..key(end), fresh()).unwrap();
            at = end + u64::from(rng.chance(4));
        }
        let s = view(&w);
        w.commit();
        s
    };
    let readers = if cfg!(miri) { 1 } else { 2 };
    let log = Log {
        states: RwLock::new((0, VecDeque::from([Arc::new(first)]))),
        committed: AtomicU64::new(0),
        active: (0..readers).map(|_| AtomicU64::new(u64::MAX)).collect(),
        begun: AtomicU64::new(0),
        ended: AtomicU64::new(0),
        cursors: (0..readers).map(|_| AtomicU64::new(0)).collect(),
    };
    let stop = AtomicBool::new(false);
    let counts = &Counts {
        steps: AtomicU64::new(0),
        walks: AtomicU64::new(0),
        held: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
        fits: AtomicU64::new(0),
        lookups: AtomicU64::new(0),
        locked: AtomicU64::new(0),
        clones: AtomicU64::new(0),
        shrinks: AtomicU64::new(0),
        holds: AtomicU64::new(0),
        straddles: AtomicU64::new(0),
        progress: AtomicU64::new(0),
    };
    let barrier = Barrier::new(readers + 1);
    // `RCU_RANGEMAP_SOAK_MS`: run this long instead, with no cap on sessions (a soak).
    let soak: Option<u64> = std::env::var("RCU_RANGEMAP_SOAK_MS")
        .ok()
        .map(|ms| ms.parse().expect("RCU_RANGEMAP_SOAK_MS: milliseconds"));
    let cap = Duration::from_millis(soak.unwrap_or(if small() { 400 } else { 1500 }));
    let sessions = if soak.is_some() {
        u64::MAX
    } else if cfg!(miri) {
        12
    } else if small() {
        shape.sessions / 20
    } else {
        shape.sessions
    };

    let done = thread::scope(|s| {
        for t in 0..readers {
            let (map, log, stop, barrier) = (&map, &log, &stop, &barrier);
            s.spawn(move || {
                let _stop = StopOnDrop(stop);
                barrier.wait();
                reader(map, log, stop, counts, shape, t, key, off);
            });
        }
        if !cfg!(miri) {
            // Relocation beside the writer: every entry moves to a new block (and the
            // nodes are rebuilt) while readers walk; the state stays the same.
            let (map, log, stop) = (&map, &log, &stop);
            s.spawn(move || {
                let _stop = StopOnDrop(stop);
                while !stop.load(Relaxed) {
                    log.begin();
                    map.shrink_to_fit();
                    log.end();
                    counts.shrinks.fetch_add(1, Relaxed);
                    // Let a few hundred sessions go by between two.
                    for _ in 0..64 {
                        if stop.load(Relaxed) {
                            break;
                        }
                        thread::sleep(Duration::from_micros(500));
                    }
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        barrier.wait();
        let start = Instant::now();
        let mut c = 0;
        loop {
            let elapsed = start.elapsed();
            // Not before the readers walked and looked up at least once each.
            let readers_ran = counts.walks.load(Relaxed) > 0 && counts.lookups.load(Relaxed) > 0;
            if elapsed > cap.max(Duration::from_secs(60))
                || ((c >= sessions || elapsed > cap) && readers_ran)
                || stop.load(Relaxed)
            {
                break;
            }
            // Keep pace with the readers (on a loaded machine the writer would otherwise
            // run thousands of sessions per reader step): a few sessions per reader
            // step (`Shape::pace`), beyond a head start.
            if c > 64 + shape.pace * counts.progress.load(Relaxed) {
                thread::yield_now();
                continue;
            }
            let split = |_: &mut Val, _: std::ops::Range<K>, _: K| fresh();
            log.begin();
            let mut w = map.write();
            // A third of the sessions only put one range back (a new value for the same
            // range, in the entry itself: no version is published).
            let ops = if rng.chance(3) { 0 } else { 1 + rng.below(4) };
            if ops == 0 {
                if let Some((r, _)) = w.remove_entry(key(rng.below(hot))) {
                    w.try_insert(r, fresh()).unwrap();
                }
            }
            for _ in 0..ops {
                // A third of the edits in the hot keys, where the readers also go half the
                // time, a third at a walk's cursor.
                let a = match rng.below(3) {
                    0 => rng.below(hot),
                    1 => {
                        let at = log.cursors[rng.below(readers as u64) as usize].load(Relaxed);
                        (at.min(span - 1)).saturating_sub(rng.below(width))
                    }
                    _ => rng.below(span),
                };
                let b = (a + 1 + rng.below(2 * width)).min(span);
                match rng.below(8) {
                    0 | 1 => drop(w.insert_with(key(a)..key(b), fresh(), split)),
                    2 => drop(w.remove_with(key(a)..key(b), split)),
                    3 => {
                        if let Some((r, _)) = w.remove_entry(key(a)) {
                            w.try_insert(r, fresh()).unwrap();
                        }
                    }
                    4 => drop(w.remove_entry(key(a))),
                    5 => {
                        // In place, in two steps: a reader would see it torn.
                        if let Some((_, v)) = w.get_mut(key(a)) {
                            let id = next_id.fetch_add(1, Relaxed);
                            v.id = id;
                            black_box(&*v);
                            if rng.chance(4) {
                                thread::yield_now();
                            }
                            v.check = !id;
                        }
                    }
                    _ => {
                        let size = 1 + rng.below(width);
                        let fit = if rng.chance(2) {
                            Fit::Lowest
                        } else {
                            Fit::Highest
                        };
                        if let Some(r) = w.find_gap(
                            key(0)..key(span),
                            K::from_u128(size.into()),
                            K::from_u128(1),
                            fit,
                        ) {
                            w.try_insert(r, fresh()).unwrap();
                        }
                    }
                }
            }
            if rng.chance(8) {
                // Hold the session's locks a while: readers meet them and wait.
                thread::yield_now();
            }
            log.push(view(&w));
            w.commit();
            c += 1;
            log.after_commit(c);
            log.end();
            if c % shape.verify_every == 0 {
                // No other session runs: the published map is exactly the last state.
                assert_eq!(published(&map), *log.last(), "after commit {c}");
            }
        }
        stop.store(true, Relaxed);
        c
    });
    assert_eq!(published(&map), *log.last());
    let n = |a: &AtomicU64| a.load(Relaxed);
    eprintln!(
        "{}: {done} sessions; {} walks ({} held across commits, {} steps, {} guards held, {} straddling the cursor), {} gaps, {} find_gap, {} lookups ({} refused), {} clones, {} shrink_to_fit; {:?}",
        shape.name,
        n(&counts.walks),
        n(&counts.held),
        n(&counts.steps),
        n(&counts.holds),
        n(&counts.straddles),
        n(&counts.gaps),
        n(&counts.fits),
        n(&counts.lookups),
        n(&counts.locked),
        n(&counts.clones),
        n(&counts.shrinks),
        map.stats(),
    );
    assert!(n(&counts.walks) > 0 && n(&counts.lookups) > 0);
}

/// Hold the guard `g` of entry `e` (`(lo, hi, id)`) while up to two commits land (a
/// bounded wait: a session that wants the entry waits for the guard): every state
/// committed meanwhile holds the entry unchanged, and a lookup finds it (or is refused
/// while a writer waits for the guard).
fn hold<K: TestKey>(
    map: &RangeMap<K, Val>,
    log: &Log,
    stop: &AtomicBool,
    counts: &Counts,
    g: rcu_rangemap::ReadGuard<'_, K, Val>,
    e: (u64, u64, u64),
    key: &impl Fn(u64) -> K,
) {
    let from = log.now();
    for _ in 0..200 {
        if log.now() >= from + 2 || stop.load(Relaxed) {
            break;
        }
        thread::yield_now();
    }
    match map.try_get(key(e.0)) {
        Ok(g2) => assert_eq!((g2.range(), g2.id()), (g.range(), e.2), "held {e:?}"),
        Err(TryGetError::Locked) => {}
        Err(err) => panic!("held {e:?}, try_get of its start: {err:?}"),
    }
    assert_eq!(g.id(), e.2, "a held value changed");
    let to = log.now();
    drop(g);
    // States `from + 1 ..= to` were committed while we held the guard.
    if to > from {
        let states = log.window(from + 1, to - 1);
        assert!(
            states.iter().all(|s| s.contains(&e)),
            "held {e:?}, but a state committed in {}..={to} lost it",
            from + 1
        );
    }
    counts.holds.fetch_add(1, Relaxed);
}

/// One reader thread: random checks until `stop`.
#[allow(clippy::too_many_arguments)]
fn reader<K: TestKey>(
    map: &RangeMap<K, Val>,
    log: &Log,
    stop: &AtomicBool,
    counts: &Counts,
    shape: Shape,
    t: usize,
    key: impl Fn(u64) -> K,
    off: impl Fn(K) -> u64,
) {
    let span = shape.span;
    let mut rng = Rng(shape.seed ^ (0x1000 + t as u64));
    let mut pinned = map.pin();
    let mut turns = 0u64;
    while !stop.load(Relaxed) {
        turns += 1;
        counts.progress.fetch_add(1, Relaxed);
        if turns % 64 == 0 {
            pinned.repin();
        }
        let within = if rng.chance(2) { shape.hot() } else { span };
        let a = rng.below(within);
        let b = match rng.below(4) {
            0 => span,
            // Narrow: the two ends of a mixed walk meet after a step or two.
            1 => (a + 1 + rng.below(3 * shape.width)).min(span),
            _ => a + 1 + rng.below(span - a),
        };
        match rng.below(8) {
            0..=2 => {
                // An iterator walk, step by step: forward, backward or mixed; sometimes
                // held while commits go by.
                let full = a == 0 && b == span;
                let mut it = if full {
                    map.iter()
                } else {
                    map.overlapping(key(a)..key(b))
                };
                let mode = rng.below(3); // 0 forward, 1 backward, 2 mixed
                let held = rng.chance(4);
                let (mut f, mut bk) = (a, b);
                let mut seen: Vec<(u64, u64, u64)> = Vec::new();
                let mut steps = 0u64;
                loop {
                    let fwd = match mode {
                        0 => true,
                        1 => false,
                        _ => rng.chance(2),
                    };
                    let before = log.enter(t);
                    let guard = if fwd { it.next() } else { it.next_back() };
                    let got = guard
                        .as_ref()
                        .map(|g| (off(g.range().start), off(g.range().end), g.id()));
                    let after = log.now();
                    if let (Some(g), Some(e), true) = (guard, got, rng.chance(8)) {
                        hold(map, log, stop, counts, g, e, &key);
                    }
                    counts.progress.fetch_add(1, Relaxed);
                    let states = log.window(before, after);
                    let (f0, bk0, step) = (f, bk, steps);
                    let ctx = |seen: &Vec<(u64, u64, u64)>| {
                        format!(
                            "{} walk {a}..{b} mode {mode}, step {step} ({}) at {f0}..{bk0}, commits {before}..={after}, yielded {seen:?}",
                            shape.name,
                            if fwd { "next" } else { "next_back" }
                        )
                    };
                    steps += 1;
                    match got {
                        Some((lo, hi, id)) => {
                            assert!(
                                lo < bk && hi > f,
                                "{}: got {lo}..{hi} outside the cursors",
                                ctx(&seen)
                            );
                            assert!(
                                states.iter().any(|s| s.contains(&(lo, hi, id))),
                                "{}: got {lo}..{hi} #{id}, in no state of the window",
                                ctx(&seen)
                            );
                            assert!(
                                states.iter().any(|s| has_range(s, lo, hi)
                                    && if fwd { free(s, f, lo) } else { free(s, hi, bk) }),
                                "{}: got {lo}..{hi}, but no state of the window has it with the keys before it free (skipped an entry)",
                                ctx(&seen)
                            );
                            assert!(
                                !seen.contains(&(lo, hi, id)),
                                "{}: {lo}..{hi} #{id} yielded twice",
                                ctx(&seen)
                            );
                            seen.push((lo, hi, id));
                            // Documented: after a commit reshaped the ranges at the cursor
                            // (moved past the window's end by a yield), the entry holding it
                            // may start before it (end after it, from the back), overlapping
                            // the one yielded before.
                            if (fwd && a < f && lo < f) || (!fwd && bk < b && hi > bk) {
                                counts.straddles.fetch_add(1, Relaxed);
                            }
                            if fwd {
                                f = hi;
                            } else {
                                bk = lo;
                            }
                            // Where the writer should edit next (a hint, so Relaxed).
                            let at = if mode == 1 || (mode == 2 && rng.chance(2)) {
                                bk
                            } else {
                                f
                            };
                            log.cursors[t].store(at, Relaxed);
                        }
                        None => {
                            assert!(
                                states.iter().any(|s| free(s, f, bk)),
                                "{}: ended, but {f}..{bk} is free in no state of the window",
                                ctx(&seen)
                            );
                            break;
                        }
                    }
                    if f >= bk {
                        assert!(
                            it.next().is_none() && it.next_back().is_none(),
                            "{}",
                            ctx(&seen)
                        );
                        break;
                    }
                    if held {
                        // Let a few commits land between two steps, sometimes many.
                        let n = if rng.chance(8) {
                            10 + rng.below(20)
                        } else {
                            1 + rng.below(3)
                        };
                        let until = log.now() + n;
                        let mut spins = 0u64;
                        while log.now() < until && !stop.load(Relaxed) {
                            // Waiting counts as a little progress: the writer must go on.
                            spins += 1;
                            if spins % 64 == 0 {
                                counts.progress.fetch_add(1, Relaxed);
                            }
                            thread::yield_now();
                        }
                    }
                }
                counts.steps.fetch_add(steps, Relaxed);
                counts.walks.fetch_add(1, Relaxed);
                counts.held.fetch_add(u64::from(held), Relaxed);
            }
            3 if rng.chance(8) => {
                // A copy of the map: one state, exactly.
                let before = log.enter(t);
                let copy = map.clone();
                let after = log.now();
                let got: State = copy
                    .iter()
                    .map(|g| (off(g.range().start), off(g.range().end), g.id()))
                    .collect();
                let states = log.window(before, after);
                assert!(
                    states.iter().any(|s| **s == got),
                    "{}: a clone holds no state in commits {before}..={after}",
                    shape.name
                );
                counts.clones.fetch_add(1, Relaxed);
            }
            3 => {
                let before = log.enter(t);
                let rev = rng.chance(2);
                let mut got: Vec<(u64, u64)> = map
                    .gaps(key(a)..key(b))
                    .map(|r| (off(r.start), off(r.end)))
                    .collect();
                if rev {
                    let mut back: Vec<(u64, u64)> = map
                        .gaps(key(a)..key(b))
                        .rev()
                        .map(|r| (off(r.start), off(r.end)))
                        .collect();
                    back.reverse();
                    got = back;
                }
                let after = log.now();
                let states = log.window(before, after);
                assert!(
                    states.iter().any(|s| gaps(s, a, b) == got),
                    "{}: gaps({a}..{b}) = {got:?}, the complement of no state in commits {before}..={after}",
                    shape.name
                );
                counts.gaps.fetch_add(1, Relaxed);
            }
            4 => {
                let size = 1 + rng.below(shape.width + 2);
                let align = 1 << rng.below(5);
                let fit = if rng.chance(2) {
                    Fit::Lowest
                } else {
                    Fit::Highest
                };
                let before = log.enter(t);
                let got = map
                    .find_gap(
                        key(a)..key(b),
                        K::from_u128(size.into()),
                        K::from_u128(align.into()),
                        fit,
                    )
                    .map(|r| (off(r.start), off(r.end)));
                let after = log.now();
                let states = log.window(before, after);
                assert!(
                    states
                        .iter()
                        .any(|s| fit_in(s, a, b, size, align, fit) == got),
                    "{}: find_gap({a}..{b}, {size}, {align}, {fit:?}) = {got:?}, right in no state in commits {before}..={after}",
                    shape.name
                );
                counts.fits.fetch_add(1, Relaxed);
            }
            _ => {
                let k = a;
                let how = rng.below(4);
                let before = log.enter(t);
                let quiet = log.quiet();
                let len = map.len();
                let got = match how {
                    0 => Ok(map.get(key(k))),
                    1 => map.try_get(key(k)).map(Some),
                    2 => Ok(pinned.get(key(k))),
                    _ => pinned.try_get(key(k)).map(Some),
                }
                .map(|g| g.map(|g| (off(g.range().start), off(g.range().end), g.id())));
                let quiet = quiet.is_some() && log.quiet() == quiet;
                let after = log.now();
                let states = log.window(before, after);
                assert!(
                    states.iter().any(|s| s.len() == len),
                    "{}: len() = {len}, the length of no state in commits {before}..={after}",
                    shape.name
                );
                match got {
                    Ok(got) => assert!(
                        states.iter().any(|s| holding(s, k) == got),
                        "{}: lookup {how} of {k} = {got:?}, in no state in commits {before}..={after}",
                        shape.name
                    ),
                    Err(TryGetError::Vacant) => assert!(
                        states.iter().any(|s| holding(s, k).is_none()),
                        "{}: try_get {how} of {k} vacant, but mapped in every state in commits {before}..={after}",
                        shape.name
                    ),
                    Err(TryGetError::Locked) => {
                        // Not under Miri: its weak memory may let the early check's Relaxed
                        // loads see a session that `quiet`'s loads do not yet count.
                        assert!(
                            cfg!(miri) || !quiet,
                            "{}: try_get {how} of {k} refused as locked, but no session ran",
                            shape.name
                        );
                        counts.locked.fetch_add(1, Relaxed);
                    }
                    Err(e) => panic!("{}: lookup of {k}: {e:?}", shape.name),
                }
                counts.lookups.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The last keys below `max` (`max` itself is never covered): 255 of them, or 63 under
/// Miri; the base is a multiple of 64.
fn top(max: u128) -> (u128, u64) {
    let span = if cfg!(miri) { 63 } else { 255 };
    (max - u128::from(span), span)
}

#[test]
fn snapshots_u8_whole_key_space() {
    let (base, span) = top(u8::MAX.into());
    run::<u8>(Shape {
        name: "u8",
        base,
        span,
        width: 6,
        sessions: 60_000,
        pace: 4,
        verify_every: 4,
        seed: 1,
    });
}

#[test]
fn snapshots_u64_near_max() {
    let (base, span) = top(u64::MAX.into());
    run::<u64>(Shape {
        name: "u64-near-max",
        base,
        span,
        width: 4,
        sessions: 60_000,
        pace: 4,
        verify_every: 4,
        seed: 2,
    });
}

/// Under Miri, `snapshots_u64_near_max` runs the same code.
#[test]
#[cfg_attr(miri, ignore)]
fn snapshots_u128_near_max() {
    let (base, span) = top(u128::MAX);
    run::<u128>(Shape {
        name: "u128-near-max",
        base,
        span,
        width: 4,
        sessions: 60_000,
        pace: 4,
        verify_every: 4,
        seed: 4,
    });
}

/// About 15 to 25 entries: the root is a leaf, then splits, then merges again.
#[test]
fn snapshots_tiny_tree() {
    run::<u16>(Shape {
        name: "tiny",
        base: 0,
        span: 40,
        width: 3,
        sessions: 60_000,
        pace: 4,
        verify_every: 1,
        seed: 5,
    });
}

/// Too slow under Miri for what the small shapes do not already run there.
#[test]
#[cfg_attr(miri, ignore)]
fn snapshots_deep_tree() {
    run::<u64>(Shape {
        name: "deep",
        base: 0,
        span: 3_000,
        width: 5,
        sessions: 100_000,
        pace: 2,
        verify_every: 32,
        seed: 3,
    });
}
