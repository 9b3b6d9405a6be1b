//! `RangeMap::clone` (the fork of the trace replay): a consistent, independent copy.

use std::sync::atomic::{AtomicUsize, Ordering};

use rcu_rangemap::{Fit, RangeMap};

fn collect(map: &RangeMap<u64, u64>) -> Vec<(std::ops::Range<u64>, u64)> {
    map.iter().map(|g| (g.range(), *g)).collect()
}

#[test]
fn clone_is_equal_and_independent() {
    let n = if cfg!(miri) { 40 } else { 3000 };
    let map = RangeMap::<u64, u64>::new();
    let mut w = map.write();
    for i in 0..n {
        w.insert(i * 100..i * 100 + 10 + i % 50, i);
    }
    // Carve holes so the tree is not just appended.
    for i in (0..n).step_by(7) {
        w.remove(i * 100 + 3..i * 100 + 5);
    }
    w.commit();
    let copy = map.clone();
    assert_eq!(copy.len(), map.len());
    assert_eq!(collect(&copy), collect(&map));
    assert_eq!(
        copy.gaps(0..n * 100).collect::<Vec<_>>(),
        map.gaps(0..n * 100).collect::<Vec<_>>()
    );
    for fit in [Fit::Lowest, Fit::Highest] {
        for size in [1, 2, 40, 90] {
            assert_eq!(
                copy.find_gap(0..n * 100, size, 1, fit),
                map.find_gap(0..n * 100, size, 1, fit)
            );
        }
    }
    // Writes to the copy do not reach the original, and the reverse.
    let before = collect(&map);
    copy.write().remove(0..n * 50);
    assert_eq!(collect(&map), before);
    map.write().insert(0..n * 100, 7);
    assert_eq!(map.len(), 1);
    assert!(copy.overlapping(0..n * 50).next().is_none());
    let above: Vec<_> = before.into_iter().filter(|(r, _)| r.end > n * 50).collect();
    let above: Vec<_> = above
        .into_iter()
        .map(|(r, v)| (r.start.max(n * 50)..r.end, v))
        .collect();
    assert_eq!(collect(&copy), above);
}

static LIVE: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
struct Counted(u32, bool);
impl Counted {
    fn new(v: u32, panic_on_clone: bool) -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Counted(v, panic_on_clone)
    }
}
impl Clone for Counted {
    fn clone(&self) -> Self {
        assert!(!self.1, "clone refused");
        Counted::new(self.0, false)
    }
}
impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn panicking_clone_leaves_the_source_intact_and_leaks_nothing() {
    {
        let map = RangeMap::<u32, Counted>::new();
        let mut w = map.write();
        for i in 0..50 {
            assert!(w
                .try_insert(i * 10..i * 10 + 5, Counted::new(i, i == 30))
                .is_ok());
        }
        w.commit();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| map.clone()));
        assert!(r.is_err());
        assert_eq!(
            LIVE.load(Ordering::SeqCst),
            50,
            "the clones made before the panic were dropped"
        );
        assert_eq!(map.len(), 50);
        assert_eq!(map.get(300).unwrap().0, 30);
        // Still writable: the writers' lock was released by the unwinding.
        map.write().remove_entry(300).map(|(_, v)| v.1);
        assert_eq!(map.len(), 49);
        let copy = map.clone();
        assert_eq!(copy.len(), 49);
        assert_eq!(LIVE.load(Ordering::SeqCst), 98);
    }
    assert_eq!(LIVE.load(Ordering::SeqCst), 0);
}
