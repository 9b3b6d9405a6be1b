//! Every structure of the harness gives the same answers (so a fast wrong answer cannot win
//! a benchmark): the same range and value, or the same miss, for the same address — after
//! building (W1), after the same churn sessions (W2/W3), and while a writer churns
//! concurrently; and the three allocators of W4 hand out the same blocks.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use rcu_rangemap_bench::*;

const N: usize = 1000;

/// The answer by definition: binary search of the layout, with the current values.
fn reference(ranges: &[Range<u64>], values: &[u64], addr: u64) -> Option<(Range<u64>, u64)> {
    let i = ranges.partition_point(|r| r.end <= addr);
    let r = ranges.get(i)?;
    (r.start <= addr).then(|| (r.clone(), values[i]))
}

fn check_all<S: Structure>(s: &S, ranges: &[Range<u64>], values: &[u64], probes: &[u64]) {
    for &a in probes {
        let want = reference(ranges, values, a);
        assert_eq!(s.get(a), want, "{} at {a:#x}", S::NAME);
        let v = want.map_or(MISS, |(_, v)| v);
        assert_eq!(s.lookup(a), v, "{} lookup at {a:#x}", S::NAME);
    }
    let sum = fold_lookups(probes, &|a| {
        reference(ranges, values, a).map_or(MISS, |(_, v)| v)
    });
    assert_eq!(s.lookup_run(probes), sum, "{} lookup_run", S::NAME);
}

/// Build, probe, churn in sessions of 1 and of 64 ops, probe again.
fn agree<S: Structure>() {
    let ranges = layout(N, 11);
    let mut values: Vec<u64> = (0..N).map(|i| value_of(i, 0)).collect();
    let mut probes = probe_addresses(&ranges);
    probes.extend(hit_addresses(&ranges, 2000, 12));
    let mut s = S::build(&ranges);
    check_all(&s, &ranges, &values, &probes);

    let ops = churn_ops(&ranges, 64 * 8 + 200, 13);
    let (singles, batches) = ops.split_at(200);
    for op in singles {
        s.churn_mut(std::slice::from_ref(op));
    }
    for chunk in batches.chunks(64) {
        s.churn_mut(chunk);
    }
    for op in &ops {
        values[index_of(op.value)] = op.value;
    }
    check_all(&s, &ranges, &values, &probes);
}

#[test]
fn lookups_and_churn_agree() {
    agree::<Ours>();
    agree::<OursPinned>();
    agree::<Floor>();
    agree::<StdRw>();
    agree::<PlRw>();
    agree::<Swap>();
    agree::<Scc>();
    agree::<Skip>();
    agree::<RangeMapRw>();
    agree::<Concread>();
}

/// Two readers while a writer churns (W2): every answer names the range that holds the
/// address, with a value written for that range. Structures whose write sessions are
/// atomic never miss; the lock-free maps (remove, then insert: two steps) may miss in
/// between, which is counted but allowed.
fn concurrent<S: Concurrent>(atomic_sessions: bool) {
    let ranges = layout(N, 21);
    let s = S::build(&ranges);
    let ops = churn_ops(&ranges, 400, 22);
    let addrs = hit_addresses(&ranges, 4096, 23);
    let done = AtomicBool::new(false);
    let misses = AtomicU64::new(0);
    let hits = AtomicU64::new(0);
    std::thread::scope(|sc| {
        for t in 0..2 {
            let (s, ranges, addrs, done, misses, hits) =
                (&s, &ranges, &addrs, &done, &misses, &hits);
            sc.spawn(move || {
                let mut k = t * 7;
                // At least one pass over the addresses, then until the writer is done.
                let mut passes = 0;
                while passes < 1 || !done.load(Relaxed) {
                    let a = addrs[k % addrs.len()];
                    k += 1;
                    if k % addrs.len() == 0 {
                        passes += 1;
                    }
                    let i = ranges.partition_point(|r| r.end <= a);
                    match s.get(a) {
                        Some((r, v)) => {
                            assert_eq!(r, ranges[i], "{} at {a:#x}", S::NAME);
                            assert_eq!(index_of(v), i, "{}: value of another range", S::NAME);
                            hits.fetch_add(1, Relaxed);
                        }
                        None => {
                            assert!(!atomic_sessions, "{}: spurious miss at {a:#x}", S::NAME);
                            misses.fetch_add(1, Relaxed);
                        }
                    }
                }
            });
        }
        for op in &ops {
            s.churn(std::slice::from_ref(op));
        }
        done.store(true, Relaxed);
    });
    assert!(hits.load(Relaxed) > 0);
    // After the writer: everything is back, with the last values.
    let mut values: Vec<u64> = (0..N).map(|i| value_of(i, 0)).collect();
    for op in &ops {
        values[index_of(op.value)] = op.value;
    }
    check_all(&s, &ranges, &values, &probe_addresses(&ranges));
}

#[test]
fn concurrent_answers_are_right() {
    concurrent::<Ours>(true);
    concurrent::<OursPinned>(true);
    concurrent::<StdRw>(true);
    concurrent::<PlRw>(true);
    concurrent::<Swap>(true);
    concurrent::<RangeMapRw>(true);
    concurrent::<Concread>(true);
    concurrent::<Scc>(false);
    concurrent::<Skip>(false);
}

fn alloc_run<A: Allocator>(n: usize, steps: usize) -> Vec<Range<u64>> {
    let (space, taken) = alloc_setup(n, 31);
    let mut a = A::build(space, &taken);
    let mut churn = AllocChurn::new(taken, 32);
    (0..steps).map(|_| churn.step(&mut a)).collect()
}

#[test]
fn allocators_agree() {
    for n in [100, 1000] {
        let ours = alloc_run::<OursAlloc>(n, 1500);
        let theirs = alloc_run::<VmAlloc>(n, 1500);
        let crate_alloc = alloc_run::<OursAddressAllocator>(n, 1500);
        assert_eq!(ours, theirs, "rcu_rangemap vs vm_allocator, N = {n}");
        assert_eq!(
            ours, crate_alloc,
            "Writer::find_gap vs AddressAllocator, N = {n}"
        );
        assert!(ours
            .iter()
            .all(|r| r.start % PAGE == 0 && r.end % PAGE == 0));
    }
}

/// The W4 floor allocates nothing: each step must give back exactly the range it freed, so
/// that it edits a tree of N ranges at every step, as the allocators do.
#[test]
fn the_w4_floor_reinserts_what_it_freed() {
    let (space, taken) = alloc_setup(500, 31);
    let mut floor = FloorAlloc::build(space, &taken);
    let mut churn = AllocChurn::new(taken.clone(), 32);
    for _ in 0..2000 {
        let back = churn.step(&mut floor);
        assert!(taken.contains(&back), "the floor made up {back:?}");
    }
    let mut live = churn.live.clone();
    live.sort_by_key(|r| r.start);
    assert_eq!(live, taken, "the floor lost or duplicated a range");
    assert_eq!(
        floor.ranges(),
        taken,
        "the floor's tree differs from what it handed out"
    );
}
