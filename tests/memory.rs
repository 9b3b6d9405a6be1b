//! What a map that shrank gives back to the allocator, counted by a counting global
//! allocator. One test function: the count is the whole process's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcu_rangemap::RangeMap;

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to `System` unchanged; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// A xorshift generator: the same sequence on every run.
fn rng(mut x: u64) -> impl FnMut(u64) -> u64 {
    move |below| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % below
    }
}

const N: u64 = 50_000;
const KEPT: usize = 500;

/// A map of `N` ranges, one inserted per session, of which all but `KEPT` are then removed
/// one per session in random order (`before_removals` runs in between). Returns the map,
/// its keys (with room to spare), and the bytes it held at its largest, counted from
/// `base`.
fn shrunk(
    base: usize,
    next: &mut impl FnMut(u64) -> u64,
    before_removals: impl FnOnce(),
) -> (RangeMap<u64, u64>, Vec<u64>, usize) {
    let map = RangeMap::new();
    for i in 0..N {
        map.write().try_insert(i * 10..i * 10 + 5, i).unwrap();
    }
    let peak = live() - base;
    before_removals();
    let mut keys: Vec<u64> = (0..N).collect();
    for i in (1..keys.len()).rev() {
        keys.swap(i, next(i as u64 + 1) as usize);
    }
    for &k in &keys[KEPT..] {
        assert_eq!(
            map.write().remove_entry(k * 10),
            Some((k * 10..k * 10 + 5, k))
        );
    }
    keys.truncate(KEPT);
    keys.shrink_to_fit();
    (map, keys, peak)
}

/// `sessions` sessions that each move one kept range to a free key.
fn churn(
    map: &RangeMap<u64, u64>,
    keys: &mut [u64],
    next: &mut impl FnMut(u64) -> u64,
    sessions: usize,
) {
    for _ in 0..sessions {
        let i = next(keys.len() as u64) as usize;
        let mut w = map.write();
        w.remove_entry(keys[i] * 10).unwrap();
        let mut k = next(N);
        while w.get(k * 10).is_some() {
            k = (k + 1) % N;
        }
        w.try_insert(k * 10..k * 10 + 5, k).unwrap();
        w.commit();
        keys[i] = k;
    }
}

fn check(map: &RangeMap<u64, u64>, keys: &[u64]) {
    assert_eq!(map.len(), keys.len());
    for &k in keys {
        let g = map.get(k * 10 + 4).expect("a kept range");
        assert_eq!((g.range(), *g), (k * 10..k * 10 + 5, k));
    }
}

#[test]
#[cfg_attr(miri, ignore)] // 150,000 sessions
fn a_map_that_shrank_gives_its_memory_back() {
    let mut next = rng(0x2545_F491_4F6C_DD1D);
    let base = live();

    // Kept in use: the sessions that go on pack the blocks and trim the chunks emptied.
    let (map, mut keys, peak) = shrunk(base, &mut next, || ());
    let small = live() - base;
    churn(&map, &mut keys, &mut next, 10_000);
    check(&map, &keys);
    let churned = live() - base;
    assert!(
        churned * 5 < peak,
        "a map kept in use holds {churned} B of the {peak} B it grew to ({small} B after shrinking)"
    );
    drop((map, keys));

    // Left idle: `shrink_to_fit` moves the survivors down and gives the rest back.
    let (map, keys, peak) = shrunk(base, &mut next, || ());
    let before = live() - base;
    map.shrink_to_fit();
    check(&map, &keys);
    let after = live() - base;
    assert!(
        after * 25 < peak,
        "shrink_to_fit left {after} B of the {peak} B the map grew to ({before} B before)"
    );
    drop((map, keys));

    // Shrunk while another thread held a pin, so that no grace period could end and the
    // blocks the removals retired came back in one flood once it let go (as beside readers
    // that lose the CPU while pinned). The map holds early trims back for a while after a
    // flood (another might need the blocks), but one flood and quiet after it is not W2's
    // pattern of floods every few thousand sessions: the hold stays short. With a fixed
    // hold of 65,536 sessions, the map still held 101 MB after 49,152 sessions.
    let (pin_now, when) = std::sync::mpsc::channel::<bool>();
    let (is_pinned, pinned) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        when.recv().unwrap();
        let _pin = rcu_rangemap::EpochPin::new();
        is_pinned.send(()).unwrap();
        when.recv().unwrap(); // let go
    });
    let (map, mut keys, peak) = shrunk(base, &mut next, || {
        pin_now.send(true).unwrap();
        pinned.recv().unwrap();
    });
    pin_now.send(false).unwrap();
    reader.join().unwrap();
    let flooded = live() - base;
    const SESSIONS: usize = 2 * 16_384; // back after 16,384 – 24,576
    churn(&map, &mut keys, &mut next, SESSIONS);
    check(&map, &keys);
    let late = live() - base;
    assert!(
        late * 2 < peak,
        "after a flood and {SESSIONS} sessions the map holds {late} B ({flooded} B after the \
         removals), against {peak} B at N = {N} ranges"
    );
    drop((map, keys));

    assert!(
        live() - base < 64 * 1024,
        "a dropped map left {} B",
        live() - base
    );
}
