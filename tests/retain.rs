//! `Writer::retain` and `Writer::clear`: against a model, with counted values, with a
//! predicate that panics, and with a reader that must see a retain whole or not at all.

mod common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;

use common::{covered, small, StopOnDrop};
use proptest::prelude::*;
use rcu_rangemap::{Fit, RangeMap};

fn entries<V: Clone>(map: &RangeMap<u16, V>) -> Vec<(Range<u16>, V)> {
    map.iter().map(|g| (g.range(), (*g).clone())).collect()
}

/// The free ranges of `0..u16::MAX` around the model's entries.
fn model_gaps(model: &BTreeMap<u16, (u16, u32)>) -> Vec<Range<u16>> {
    let (mut out, mut at) = (Vec::new(), 0u16);
    for (&lo, &(hi, _)) in model {
        if lo > at {
            out.push(at..lo);
        }
        at = hi;
    }
    if at < u16::MAX {
        out.push(at..u16::MAX);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok())
            .unwrap_or(if small() { 4 } else { 500 }),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A map of up to a few hundred ranges (several levels), `retain` by a random choice
    /// per entry, in a session that made other changes first: the pieces handed back, the
    /// session's view, the published map, its gaps and a first fit, all against a model.
    #[test]
    fn retain_against_a_model(
        ranges in prop::collection::vec((0u16..60_000, 1u16..200), 0..if small() { 40 } else { 400 }),
        keep_bits in any::<u64>(),
        first_removed in 0u16..60_000,
    ) {
        let map = RangeMap::<u16, u32>::new();
        let mut model: BTreeMap<u16, (u16, u32)> = BTreeMap::new();
        {
            let mut w = map.write();
            for (i, &(a, len)) in ranges.iter().enumerate() {
                let b = a + len;
                if w.try_insert(a..b, i as u32).is_ok() {
                    model.insert(a, (b, i as u32));
                }
            }
        }
        let mut w = map.write();
        // An unpublished change before the retain: it must see the session's view.
        if let Some((r, _)) = w.remove_entry(first_removed) {
            model.remove(&r.start);
        }
        let mut seen = Vec::new();
        let gone = w.retain(|r, &v| {
            seen.push(r.start);
            keep_bits >> (v % 64) & 1 == 1
        });
        prop_assert_eq!(seen, model.keys().copied().collect::<Vec<_>>(), "every entry once, in order");
        let want_gone: Vec<(Range<u16>, u32)> = model
            .iter()
            .filter(|&(_, &(_, v))| keep_bits >> (v % 64) & 1 == 0)
            .map(|(&lo, &(hi, v))| (lo..hi, v))
            .collect();
        prop_assert_eq!(gone.into_vec(), want_gone);
        model.retain(|_, &mut (_, v)| keep_bits >> (v % 64) & 1 == 1);
        prop_assert_eq!(w.len(), model.len());
        let want: Vec<(Range<u16>, u32)> = model.iter().map(|(&lo, &(hi, v))| (lo..hi, v)).collect();
        let view: Vec<(Range<u16>, u32)> = w.overlapping(0..u16::MAX).map(|(r, &v)| (r, v)).collect();
        prop_assert_eq!(&view, &want, "the session's view");
        w.commit();
        prop_assert_eq!(entries(&map), want, "the published map");
        let gaps = model_gaps(&model);
        prop_assert_eq!(map.gaps(0..u16::MAX).collect::<Vec<_>>(), gaps.clone());
        for size in [1u16, 150, 2_000] {
            let want = gaps.iter().find(|g| g.end - g.start >= size).map(|g| g.start..g.start + size);
            prop_assert_eq!(map.find_gap(0..u16::MAX, size, 1, Fit::Lowest), want, "first fit of {}", size);
        }
    }
}

/// A value that counts how many of its kind are alive.
struct Counted(Arc<AtomicIsize>);

impl Counted {
    fn new(live: &Arc<AtomicIsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Counted(Arc::clone(live))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn values_are_neither_lost_nor_dropped_twice() {
    let n = if small() { 60 } else { 2_000 };
    let live = Arc::new(AtomicIsize::new(0));
    let map = RangeMap::<u16, Counted>::new();
    {
        let mut w = map.write();
        for i in 0..n {
            w.try_insert(i * 3..i * 3 + 2, Counted::new(&live)).unwrap();
        }
    }
    // Every third entry goes; the pieces are alive until the caller drops them.
    let gone = map.write().retain(|r, _| r.start % 9 != 0);
    assert_eq!(gone.len(), n.div_ceil(3) as usize);
    assert_eq!(
        live.load(Ordering::SeqCst),
        n as isize,
        "nothing dropped yet"
    );
    drop(gone);
    assert_eq!(live.load(Ordering::SeqCst), map.len() as isize);
    let mut w = map.write();
    let all = w.clear();
    assert!(w.is_empty() && w.clear().is_empty());
    w.commit();
    assert!(map.is_empty() && map.iter().next().is_none());
    assert_eq!(all.len() as isize, live.load(Ordering::SeqCst));
    drop(all);
    assert_eq!(live.load(Ordering::SeqCst), 0);
    // The emptied map takes new entries.
    map.write().try_insert(5..6, Counted::new(&live)).unwrap();
    drop(map);
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[test]
fn a_panicking_predicate_removes_nothing() {
    let map: RangeMap<u16, char> =
        [(0..10, 'a'), (10..20, 'b'), (20..30, 'c'), (40..50, 'd')].into();
    let before = entries(&map);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut w = map.write();
        w.retain(|r, _| {
            assert!(r.start < 20, "the predicate gave up at {r:?}");
            false
        })
    }));
    assert!(r.is_err());
    assert_eq!(
        entries(&map),
        before,
        "the two entries refused before the panic stay"
    );
    // No session was left open.
    assert_eq!(map.write().retain(|_, &v| v != 'b').len(), 1);
    assert_eq!(map.len(), 3);
}

#[test]
fn readers_see_a_retain_whole_or_not_at_all() {
    // Round g adds a pair of ranges, one low (at 10 g) and one mirrored from the top, both
    // holding g, in one session; then a `retain` keeps only that pair, or, every third
    // round, `clear` empties the map. `gaps` reads one published version: it must hold as many
    // ranges below the middle as above it.
    const TOP: u64 = 100_000;
    let rounds = if small() { 20 } else { 2_000 };
    let map = RangeMap::<u64, u64>::new();
    let (done, started) = (AtomicBool::new(false), AtomicBool::new(false));
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut reads, mut partial) = (0u64, 0u64);
            while !done.load(Ordering::Acquire) {
                let covered = covered(&map, TOP);
                let low = covered.iter().filter(|r| r.end <= TOP / 2).count();
                partial += u64::from(low * 2 != covered.len());
                reads += 1;
                started.store(true, Ordering::Release);
            }
            (reads, partial)
        });
        let stop = StopOnDrop(&done);
        while !started.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        for g in 0..rounds {
            let lo = 10 * g;
            (&map).extend([(lo..lo + 5, g), (TOP - lo - 5..TOP - lo, g)]);
            let mut w = map.write();
            let before = w.len();
            let gone = if g % 3 == 2 {
                w.clear()
            } else {
                w.retain(|_, &v| v == g)
            };
            assert_eq!(gone.len(), before - w.len());
            assert_eq!(w.len(), if g % 3 == 2 { 0 } else { 2 });
            drop(w);
            std::thread::yield_now();
        }
        drop(stop);
        let (reads, partial) = reader.join().unwrap();
        assert_eq!(
            partial, 0,
            "{partial} of {reads} reads saw part of a retain"
        );
    });
}
