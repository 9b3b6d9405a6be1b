//! Why do our readers lose more than the lock-based peers' when a writer runs 1,000
//! sessions a second (the W2-paced target: readers ≥ 0.95× our own W1 two-thread figure)?
//!
//! The runner measures W1 on a freshly built map and W2 afterwards on the same map, after
//! the flat-out W2 phase has churned it. So a paced figure below the W1 one mixes three
//! possible causes, which this binary separates, in one process, for one structure and N:
//!
//! | row | what runs besides the two readers | isolates |
//! |---|---|---|
//! | fresh | nothing | W1 two threads as the runner measures it |
//! | aged | nothing, after 1M churn ops (single-thread, or beside two readers) | the map's layout after churn (recycled blocks) |
//! | idle wake-ups | a third thread waking 1,000 times a second and doing nothing | the scheduler: a third thread on two cores |
//! | empty sessions | the same thread opening and committing an empty session each wake-up | the session machinery (writers' lock, sequence, epoch) |
//! | paced churn | a churn op per session (W2 paced) | everything: W2 paced as the runner measures it |
//! | aged, cloned | nothing, on a clone of the aged map made after the aging (a bulk build: full nodes, in blocks from the aged heap) | the tree's shape against where its blocks lie |
//! | fresh, kept | nothing, on a second map built beside the first at the start and never churned | time and process state: a packed map, measured in the same rounds as the aged one |
//! | fresh, cloned | nothing, on a clone of the kept map made at the start | a packed map whose entries and leaves lie apart (the clone allocates all entries, then all nodes), against the kept map's, built in turn |
//!
//! All rows after "fresh" run on the aged map, except "aged, cloned", which runs on its clone
//! (made once, after the aging), and the two fresh maps. Each figure is the median of `--reps`
//! samples (default 5) of `--secs` seconds (default 0.4), taken round-robin over the rows,
//! as lookups per second of both readers together.
//!
//! ```text
//! cargo run --release -p rcu-rangemap-bench --bin paced [-- [--n N] [--secs S] [--reps R] [--rate R]
//!                                                           [--peer | --skipmap] [--age-with-readers]]
//! ```
//!
//! `--rate R` sets the third thread's wake-ups per second (default 1,000; below 100 µs a
//! period is spun out rather than slept).
//!
//! `--age-with-readers` ages the map as the runner's flat-out W2 phase does: the 1M churn
//! ops run while two readers look up, so retired blocks wait out the readers' grace
//! periods before they are reused.
//!
//! `--peer` runs `std::sync::RwLock<BTreeMap>` instead of our map (with "empty sessions"
//! taking and releasing its write lock). `--skipmap` runs `crossbeam_skiplist::SkipMap`, the
//! lock-free peer whose paced readers keep the most of their W1 figure in the runner (its
//! "empty sessions" row does nothing, since it has no sessions; its clones are rebuilt
//! entry by entry in key order).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use rcu_rangemap_bench::*;

/// What the third thread does, once per millisecond.
#[derive(Clone, Copy)]
enum Third {
    None,
    Wake,
    Empty,
    Churn,
}

/// Two readers over `addrs` for `dur`, and the third thread as `third`; lookups per
/// second, both readers together.
fn sample<S: Concurrent>(
    s: &S,
    empty: &(dyn Fn(&S) + Sync),
    addrs: &[Vec<u64>],
    ops: &[Op],
    third: Third,
    rate: f64,
    dur: Duration,
) -> f64 {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(4);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let (stop, barrier, list) = (&stop, &barrier, &addrs[t]);
                sc.spawn(move || {
                    barrier.wait();
                    lookup_loop(&|a| s.lookup(a), list, stop)
                })
            })
            .collect();
        let (stop_w, barrier_w) = (&stop, &barrier);
        sc.spawn(move || {
            barrier_w.wait();
            if let Third::None = third {
                return;
            }
            let period = Duration::from_secs_f64(1.0 / rate);
            let mut next = Instant::now();
            let mut i = 0;
            while !stop_w.load(Relaxed) {
                match third {
                    Third::None | Third::Wake => {}
                    Third::Empty => empty(s),
                    Third::Churn => s.churn(std::slice::from_ref(&ops[i % ops.len()])),
                }
                i += 1;
                next += period;
                let mut now = Instant::now();
                if period < Duration::from_micros(100) {
                    // Too short to sleep: spin until the next slot.
                    while now < next {
                        std::hint::spin_loop();
                        now = Instant::now();
                    }
                } else if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        });
        barrier.wait();
        let t0 = Instant::now();
        std::thread::sleep(dur);
        stop.store(true, Relaxed);
        let n: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        n as f64 / t0.elapsed().as_secs_f64()
    })
}

/// Where the values of `ranges` live, for a structure whose values have addresses
/// (`addr` gives the value's address for a key, or `None`): distinct 64-byte lines and
/// 4-KiB pages.
fn footprint<S>(
    s: &S,
    addr: &dyn Fn(&S, u64) -> Option<usize>,
    ranges: &[std::ops::Range<u64>],
) -> String {
    let Some(addrs) = ranges
        .iter()
        .map(|r| addr(s, r.start))
        .collect::<Option<Vec<usize>>>()
    else {
        return "value addresses not available".into();
    };
    let lines: std::collections::BTreeSet<usize> = addrs.iter().map(|a| a / 64).collect();
    let pages: std::collections::BTreeSet<usize> = addrs.iter().map(|a| a / 4096).collect();
    format!(
        "{} values on {} distinct 64-byte lines, {} distinct 4-KiB pages",
        addrs.len(),
        lines.len(),
        pages.len()
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// What `experiment` needs to know of a structure beyond [`Concurrent`].
struct Hooks<'a, S> {
    /// Open and commit an empty session (the "empty sessions" row).
    empty: &'a (dyn Fn(&S) + Sync),
    /// The address of the value for a key, if the structure has one.
    addr: &'a dyn Fn(&S, u64) -> Option<usize>,
    /// A copy of the structure (the cloned rows).
    clone: &'a dyn Fn(&S) -> S,
}

fn experiment<S: Concurrent>(
    n: usize,
    secs: f64,
    reps: usize,
    rate: f64,
    hooks: &Hooks<'_, S>,
    age_with_readers: bool,
) {
    let (empty, addr, clone) = (hooks.empty, hooks.addr, hooks.clone);
    let ranges = layout(n, 1);
    let mut s = S::build(&ranges);
    let kept = S::build(&ranges);
    let kept_clone = clone(&kept);
    let addrs: Vec<Vec<u64>> = (0..2)
        .map(|t| hit_addresses(&ranges, 1 << 16, 0xadd0 + t as u64 + n as u64))
        .collect();
    let ops = churn_ops(&ranges, 1 << 14, 0xc0de + n as u64);
    let dur = Duration::from_secs_f64(secs);
    // Warm-up, then the fresh map.
    sample(&s, empty, &addrs, &ops, Third::None, rate, dur / 4);
    let fresh_footprint = footprint(&s, addr, &ranges);
    let fresh: Vec<f64> = (0..reps)
        .map(|_| sample(&s, empty, &addrs, &ops, Third::None, rate, dur))
        .collect();
    // Age it: 1M churn ops, one per session (as W2's writer does them), alone or (as the
    // runner's flat-out W2 phase does) with two readers looking up meanwhile.
    if age_with_readers {
        churn_beside_readers(&s, &ops, 1_000_000, &addrs);
    } else {
        for i in 0..1_000_000 {
            s.churn_mut(std::slice::from_ref(&ops[i % ops.len()]));
        }
    }
    let kept_clone_footprint = footprint(&kept_clone, addr, &ranges);
    let aged_footprint = footprint(&s, addr, &ranges);
    let cloned = clone(&s);
    let cloned_footprint = footprint(&cloned, addr, &ranges);
    let rows: [(&str, Third, &S); 7] = [
        ("aged", Third::None, &s),
        ("idle wake-ups", Third::Wake, &s),
        ("empty sessions", Third::Empty, &s),
        ("paced churn", Third::Churn, &s),
        ("aged, cloned", Third::None, &cloned),
        ("fresh, kept", Third::None, &kept),
        ("fresh, cloned", Third::None, &kept_clone),
    ];
    let mut got: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..reps {
        for (k, &(_, third, map)) in rows.iter().enumerate() {
            got[k].push(sample(map, empty, &addrs, &ops, third, rate, dur));
        }
    }
    let f = median(fresh);
    println!(
        "{} at N = {n} (2 readers; third thread at {rate} wake-ups/s; medians of {reps} x \
         {secs} s; aged {})",
        S::NAME,
        if age_with_readers {
            "beside two readers"
        } else {
            "alone"
        }
    );
    println!("  fresh map: {fresh_footprint}");
    println!("  aged map:  {aged_footprint}");
    println!("  its clone: {cloned_footprint}");
    println!("  fresh clone: {kept_clone_footprint}");
    println!(
        "  {:<16} {:>8.2}M lookups/s  1.00 of fresh",
        "fresh",
        f / 1e6
    );
    for (k, (name, _, _)) in rows.iter().enumerate() {
        let m = median(got[k].clone());
        println!(
            "  {name:<16} {:>8.2}M lookups/s  {:.2} of fresh",
            m / 1e6,
            m / f
        );
    }
}

fn main() {
    let mut n = 1000;
    let mut secs = 0.4;
    let mut reps = 5;
    let mut peer = false;
    let mut skipmap = false;
    let mut rate = 1000.0;
    let mut age_with_readers = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().expect("a value");
        match a.as_str() {
            "--n" => n = val().parse().expect("--n N"),
            "--secs" => secs = val().parse().expect("--secs S"),
            "--reps" => reps = val().parse().expect("--reps R"),
            "--rate" => rate = val().parse().expect("--rate R"),
            "--peer" => peer = true,
            "--skipmap" => skipmap = true,
            "--age-with-readers" => age_with_readers = true,
            _ => panic!(
                "usage: paced [--n N] [--secs S] [--reps R] [--rate R] [--peer | --skipmap] \
                 [--age-with-readers]"
            ),
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    if skipmap {
        experiment::<Skip>(
            n,
            secs,
            reps,
            rate,
            &Hooks {
                empty: &|_| {},
                addr: &|s, k| {
                    let e = s.0.lower_bound(std::ops::Bound::Excluded(&k))?;
                    Some(e.value() as *const (u64, u64) as usize)
                },
                clone: &|s| {
                    let m = crossbeam_skiplist::SkipMap::new();
                    for e in s.0.iter() {
                        m.insert(*e.key(), *e.value());
                    }
                    Skip(m)
                },
            },
            age_with_readers,
        );
    } else if peer {
        experiment::<StdRw>(
            n,
            secs,
            reps,
            rate,
            &Hooks {
                empty: &|s| drop(s.0.write()),
                addr: &|_, _| None,
                clone: &|s| StdRw(std::sync::RwLock::new(s.0.read().unwrap().clone())),
            },
            age_with_readers,
        );
    } else {
        experiment::<Ours>(
            n,
            secs,
            reps,
            rate,
            &Hooks {
                empty: &|s| s.0.write().commit(),
                addr: &|s, k| s.0.get(k).map(|g| &*g as *const u64 as usize),
                clone: &|s| Ours(s.0.clone()),
            },
            age_with_readers,
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
}
