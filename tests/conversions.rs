//! The standard conversion traits: `FromIterator`, `Extend` (for `RangeMap` and
//! `&RangeMap`), `From<[_; N]>` and `IntoIterator for &RangeMap`.
//!
//! `FromIterator` and `Extend` are checked against two references: a per-key model (the
//! value of the last item covering each key) and the same items `Writer::insert`ed one by
//! one in one session of another map (which also fixes where entries are cut). Values are
//! counted, so a value lost or dropped twice fails a test; a reader thread checks that an
//! `Extend` publishes all of its items at once.

mod common;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{covered, small, Rng, StopOnDrop};
use proptest::prelude::*;
use rcu_rangemap::RangeMap;

fn entries<K: rcu_rangemap::Key, V: Clone>(map: &RangeMap<K, V>) -> Vec<(Range<K>, V)> {
    map.iter().map(|g| (g.range(), (*g).clone())).collect()
}

/// The items `Writer::insert`ed in order, in one session of a new map: the reference.
fn by_inserts<V: Clone>(items: &[(Range<u64>, V)]) -> RangeMap<u64, V> {
    let map = RangeMap::new();
    let mut w = map.write();
    for (r, v) in items {
        w.insert(r.clone(), v.clone());
    }
    w.commit();
    map
}

/// Per key in `0..space`: the value of the last item that covers it.
fn per_key<V: Clone>(space: u64, items: &[(Range<u64>, V)]) -> Vec<Option<V>> {
    let mut keys = vec![None; space as usize];
    for (r, v) in items {
        for k in r.clone() {
            keys[k as usize] = Some(v.clone());
        }
    }
    keys
}

fn check_against_models(space: u64, items: &[(Range<u64>, u32)], map: &RangeMap<u64, u32>) {
    assert_eq!(entries(map), entries(&by_inserts(items)));
    let want = per_key(space, items);
    for k in 0..space {
        assert_eq!(map.get(k).map(|g| *g), want[k as usize], "key {k}");
    }
}

/// Fewer than `max_n` items with random, mostly overlapping ranges inside `0..space`.
fn random_items(rng: &mut Rng, max_n: u64, space: u64, max_len: u64) -> Vec<(Range<u64>, u32)> {
    let n = rng.below(max_n);
    (0..n)
        .map(|i| {
            let len = 1 + rng.below(max_len.min(space));
            let start = rng.below(space - len + 1);
            (start..start + len, i as u32)
        })
        .collect()
}

#[test]
fn from_iter_is_insert_in_order() {
    let (space, rounds) = if small() { (100, 2) } else { (2_000, 200) };
    let mut rng = Rng(1);
    for round in 0..rounds {
        let max_len = 1 + rng.below(if round % 2 == 0 { 20 } else { 400 });
        let items = random_items(&mut rng, 60, space, max_len);
        let map: RangeMap<u64, u32> = items.iter().cloned().collect();
        check_against_models(space, &items, &map);
    }
}

#[test]
fn from_iter_of_sorted_disjoint_items_builds_the_same_map() {
    // Sorted, disjoint items take the bottom-up build; shuffled, the same items go through
    // inserts: both give exactly these entries, for sizes of one leaf up to several levels.
    let mut rng = Rng(2);
    let sizes: &[usize] = if small() {
        &[0, 1, 16, 100]
    } else {
        &[0, 1, 2, 14, 15, 16, 17, 100, 1_000, 20_000]
    };
    for &n in sizes {
        let mut items = Vec::with_capacity(n);
        let mut at = 0u64;
        for i in 0..n {
            at += rng.below(3); // touching (0) or with a gap
            let len = 1 + rng.below(5);
            items.push((at..at + len, i as u32));
            at += len;
        }
        let sorted: RangeMap<u64, u32> = items.iter().cloned().collect();
        assert_eq!(sorted.len(), n);
        assert_eq!(entries(&sorted), items, "n = {n}");
        let mut shuffled = items.clone();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let inserted: RangeMap<u64, u32> = shuffled.into_iter().collect();
        assert_eq!(entries(&inserted), items, "n = {n}");
        // The built map is a map like any other: lookups, gaps, and sessions on it.
        if let Some((r, v)) = items.last().cloned() {
            assert_eq!(*sorted.get(r.end - 1).unwrap(), v);
            sorted.write().insert(0..r.end, 7);
            assert_eq!(entries(&sorted), [(0..r.end, 7)]);
        }
    }
}

#[test]
fn extend_is_insert_in_order_onto_the_map() {
    let (space, rounds) = if small() { (100, 2) } else { (2_000, 200) };
    let mut rng = Rng(3);
    for _ in 0..rounds {
        let first = random_items(&mut rng, 30, space, 100);
        let more = random_items(&mut rng, 30, space, 100);
        let mut map: RangeMap<u64, u32> = first.iter().cloned().collect();
        map.extend(more.iter().cloned());
        let all: Vec<_> = first.iter().chain(&more).cloned().collect();
        check_against_models(space, &all, &map);
        // Through `&RangeMap`: the same answer.
        let shared: RangeMap<u64, u32> = first.iter().cloned().collect();
        (&shared).extend(more.iter().cloned());
        assert_eq!(entries(&shared), entries(&map));
    }
}

#[test]
fn from_array_and_for_loop() {
    let map = RangeMap::from([(10u8..20, 'a'), (0..5, 'b'), (15..255, 'c')]);
    let mut seen = Vec::new();
    for g in &map {
        seen.push((g.range(), *g));
    }
    assert_eq!(seen, [(0..5, 'b'), (10..15, 'a'), (15..255, 'c')]);
    let back: Vec<_> = (&map).into_iter().rev().map(|g| *g).collect();
    assert_eq!(back, ['c', 'a', 'b']);
    let empty = RangeMap::<u8, char>::from([]);
    assert!(empty.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok())
            .unwrap_or(if small() { 4 } else { 2000 }),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// u8 keys, every key probed, ranges up to `u8::MAX`: `from_iter`, then `extend`,
    /// against the per-key model and against inserts one by one.
    #[test]
    fn u8_keys_against_the_model(
        first in prop::collection::vec((0u8..=254, 1u8..=255, any::<u16>()), 0..24),
        more in prop::collection::vec((0u8..=254, 1u8..=255, any::<u16>()), 0..24),
    ) {
        let to_items = |v: &[(u8, u8, u16)]| -> Vec<(Range<u8>, u16)> {
            v.iter().map(|&(s, len, x)| (s..s.saturating_add(len), x)).collect()
        };
        let (first, more) = (to_items(&first), to_items(&more));
        let mut map: RangeMap<u8, u16> = first.iter().cloned().collect();
        map.extend(more.iter().cloned());
        let all: Vec<_> = first.iter().chain(&more).cloned().collect();
        let mut keys = [None; 256];
        for (r, v) in &all {
            for k in r.clone() {
                keys[k as usize] = Some(*v);
            }
        }
        for k in 0..=255u8 {
            prop_assert_eq!(map.get(k).map(|g| *g), keys[k as usize], "key {}", k);
        }
        let reference = RangeMap::<u8, u16>::new();
        let mut w = reference.write();
        for (r, v) in &all {
            w.insert(r.clone(), *v);
        }
        w.commit();
        prop_assert_eq!(entries(&map), entries(&reference));
    }
}

// ---------------------------------------------------------------------------------------
// Counted values: none lost, none dropped twice.

/// A value that counts itself in `live` (created minus dropped), and whose `clone` panics
/// if `bomb` is set.
#[derive(Debug)]
struct Counted {
    id: u32,
    bomb: bool,
    live: Arc<AtomicIsize>,
}

impl Counted {
    fn new(id: u32, live: &Arc<AtomicIsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Counted {
            id,
            bomb: false,
            live: Arc::clone(live),
        }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        assert!(!self.bomb, "clone of {} refused", self.id);
        Counted::new(self.id, &self.live)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let was = self.live.fetch_sub(1, Ordering::SeqCst);
        assert!(was > 0, "value {} dropped twice", self.id);
    }
}

fn ids(map: &RangeMap<u64, Counted>) -> Vec<(Range<u64>, u32)> {
    map.iter().map(|g| (g.range(), g.id)).collect()
}

#[test]
fn counted_values_are_neither_lost_nor_dropped_twice() {
    let live = Arc::new(AtomicIsize::new(0));
    let rounds = if small() { 2 } else { 100 };
    let mut rng = Rng(4);
    for _ in 0..rounds {
        let first = random_items(&mut rng, 40, 500, 120);
        let more = random_items(&mut rng, 40, 500, 120);
        let counted = |items: &[(Range<u64>, u32)]| -> Vec<(Range<u64>, Counted)> {
            items
                .iter()
                .map(|(r, id)| (r.clone(), Counted::new(*id, &live)))
                .collect()
        };
        let mut map: RangeMap<u64, Counted> = counted(&first).into_iter().collect();
        // Every value alive is in the map: the displaced ones were dropped, once.
        assert_eq!(live.load(Ordering::SeqCst), map.len() as isize);
        map.extend(counted(&more));
        assert_eq!(live.load(Ordering::SeqCst), map.len() as isize);
        let all: Vec<_> = first.iter().chain(&more).cloned().collect();
        let reference: Vec<_> = entries(&by_inserts(&all));
        assert_eq!(ids(&map), reference);
        drop(map);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // reversed ranges are the point
fn an_empty_or_reversed_range_panics_before_anything_is_inserted() {
    let live = Arc::new(AtomicIsize::new(0));
    for bad in [5..5, 9..3] {
        let items = || {
            vec![
                (0..4, Counted::new(1, &live)),
                (2..8, Counted::new(2, &live)),
                (bad.clone(), Counted::new(3, &live)),
                (20..30, Counted::new(4, &live)),
            ]
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            items().into_iter().collect::<RangeMap<u64, Counted>>()
        }));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().expect("a formatted message");
        assert!(
            msg.contains(&format!("{bad:?}")) && msg.contains("item 2"),
            "{msg}"
        );
        assert_eq!(live.load(Ordering::SeqCst), 0, "every value dropped");

        let mut map = RangeMap::from([(0u64..100, Counted::new(0, &live))]);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| map.extend(items())));
        assert!(r.is_err());
        assert_eq!(ids(&map), [(0..100, 0)], "the map is unchanged");
        assert_eq!(
            live.load(Ordering::SeqCst),
            1,
            "only the map's value is alive"
        );
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (&map).extend(items())));
        assert!(r.is_err());
        assert_eq!(ids(&map), [(0..100, 0)], "the map is unchanged");
        assert_eq!(live.load(Ordering::SeqCst), 1);
        // Still writable: no session was left open.
        map.extend([(100..101, Counted::new(5, &live))]);
        assert_eq!(map.len(), 2);
        drop(map);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn a_panicking_clone_commits_the_items_before_it_and_loses_nothing() {
    let live = Arc::new(AtomicIsize::new(0));
    let mut bomb = Counted::new(9, &live);
    bomb.bomb = true;
    let map = RangeMap::from([(0u64..10, Counted::new(0, &live)), (20..30, bomb)]);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (&map).extend([
            (2..4, Counted::new(1, &live)), // cuts 0..10: clones value 0
            (40..50, Counted::new(2, &live)),
            (24..26, Counted::new(3, &live)), // cuts 20..30: its clone panics
            (60..70, Counted::new(4, &live)), // never inserted
        ])
    }));
    assert!(r.is_err());
    // What the session did before the panic is committed (as for any session); the
    // insert whose clone panicked did nothing; item 4 was dropped.
    assert_eq!(
        ids(&map),
        [(0..2, 0), (2..4, 1), (4..10, 0), (20..30, 9), (40..50, 2)]
    );
    assert_eq!(live.load(Ordering::SeqCst), map.len() as isize);
    drop(map);
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------
// Sessions: readers see all of an `Extend` or none of it, and the items' iterator runs
// outside the session.

#[test]
fn readers_see_all_of_an_extend_or_none() {
    // Round g extends the map by one range low (at 10 g) and one high (mirrored from the
    // top), in one call. `gaps` reads one published version: its entries below the middle
    // and above it must be as many, or the reader saw part of an extension.
    const TOP: u64 = 100_000;
    let rounds = if small() { 20 } else { 2_000 };
    let map = RangeMap::<u64, u64>::new();
    let done = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut reads, mut partial) = (0u64, 0u64);
            let mut sizes = std::collections::BTreeSet::new();
            while !done.load(Ordering::Acquire) {
                let covered = covered(&map, TOP);
                let low = covered.iter().filter(|r| r.end <= TOP / 2).count();
                if low * 2 != covered.len() {
                    partial += 1;
                }
                sizes.insert(covered.len());
                reads += 1;
                started.store(true, Ordering::Release);
            }
            (reads, partial, sizes.len())
        });
        let stop = StopOnDrop(&done);
        while !started.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        for g in 0..rounds {
            let lo = 10 * g;
            (&map).extend([(lo..lo + 5, g), (TOP - lo - 5..TOP - lo, g)]);
            std::thread::yield_now();
        }
        drop(stop);
        let (reads, partial, versions) = reader.join().unwrap();
        assert_eq!(
            partial, 0,
            "{partial} of {reads} reads saw part of an extension"
        );
        eprintln!(
            "readers_see_all_of_an_extend_or_none: {reads} reads, {rounds} extensions, \
             {versions} different versions seen"
        );
    });
    assert_eq!(map.len(), 2 * rounds as usize);
}

#[test]
fn extend_from_the_maps_own_iterator_does_not_deadlock() {
    // Each entry grows by five keys into the next one. Were the items applied while the
    // iterator is still walking, the first insert would lock the next entry and the walk
    // would wait on it for a session its own thread holds.
    let map = Arc::new(RangeMap::from([
        (0u64..10, 'a'),
        (10..20, 'b'),
        (30..40, 'c'),
    ]));
    let (tx, rx) = mpsc::channel();
    let m = Arc::clone(&map);
    std::thread::spawn(move || {
        (&*m).extend(m.iter().map(|g| (g.range().start..g.range().end + 5, *g)));
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("extend from the map's own iterator finished");
    assert_eq!(entries(&map), [(0..10, 'a'), (10..25, 'b'), (30..45, 'c')]);
}
