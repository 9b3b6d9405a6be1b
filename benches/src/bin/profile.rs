//! Fixed-count drivers for profilers: the same structures and inputs as the comparison
//! runner, but a given number of operations and no timing, so that `perf record -e
//! cpu-clock` profiles and `valgrind --tool=callgrind` counts are per operation.
//!
//! ```text
//! profile get   STRUCT N COUNT          COUNT lookups (W1, one thread)
//! profile get-aged STRUCT N COUNT       the same after a million one-op churn sessions
//! profile get-aged-clone N COUNT        ours, aged, then replaced by its clone (bulk build)
//! profile get-aged-readers STRUCT N COUNT  aged as W2 flat out leaves it: the million
//!                                       sessions run beside two readers looking up
//!                                       (STRUCT: ours or stdrw); prints the loop's time
//! profile churn STRUCT N PER COUNT      COUNT churn ops in sessions of PER ops (W3)
//! profile alloc ALLOC  N COUNT          COUNT allocator steps (W4)
//! profile empty-session COUNT           COUNT empty writer sessions of rcu_rangemap
//!   STRUCT: ours pinned floor stdrw plrw swap scc skip rangemap concread
//!           (pinned: ours read under one pin per 64 lookups)
//!   ALLOC:  ours crate vm floor (BTreeMap: remove + re-insert, no search)
//! ```
//!
//! Each measured loop is a separate non-inlined function named `measured_*`, so callgrind
//! can count only it: `valgrind --tool=callgrind --toggle-collect='*measured_*' ...`; divide
//! the instruction count by COUNT.

use std::hint::black_box;

use rcu_rangemap_bench::*;

/// `count` lookups of `addrs` (cycled), in runs of 512 as the runner's threads make them
/// (`run_loop`), so that `pinned` holds its pin across a run as in the runner.
#[inline(never)]
fn measured_get<S: Structure>(s: &S, addrs: &[u64], count: usize) -> u64 {
    let mut acc = 0u64;
    let mut left = count;
    while left > 0 {
        for run in addrs.chunks(512) {
            let run = &run[..run.len().min(left)];
            acc = acc.wrapping_add(s.lookup_run(run));
            left -= run.len();
            if left == 0 {
                break;
            }
        }
    }
    acc
}

#[inline(never)]
fn measured_churn<S: Structure>(s: &mut S, ops: &[Op], per: usize, count: usize) {
    let mut i = 0;
    let mut done = 0;
    while done < count {
        if i + per > ops.len() {
            i = 0;
        }
        s.churn_mut(&ops[i..i + per]);
        i += per;
        done += per;
    }
}

#[inline(never)]
fn measured_alloc<A: Allocator>(a: &mut A, st: &mut AllocChurn, count: usize) {
    for _ in 0..count {
        black_box(st.step(a));
    }
}

#[inline(never)]
fn measured_empty_session(m: &rcu_rangemap::RangeMap<u64, u64>, count: usize) {
    for _ in 0..count {
        m.write().commit();
    }
}

fn get<S: Structure>(n: usize, count: usize, aged: bool) {
    let ranges = layout(n, 1);
    let mut s = S::build(&ranges);
    if aged {
        // As W2 leaves the map for its paced phase: a million one-op sessions.
        let ops = churn_ops(&ranges, 1 << 14, 0xc0de + n as u64);
        for i in 0..1_000_000 {
            s.churn_mut(std::slice::from_ref(&ops[i % ops.len()]));
        }
    }
    let addrs = hit_addresses(&ranges, 1 << 16, 0xadd0 + n as u64);
    black_box(measured_get(&s, &addrs, count));
}

/// Age the map as the runner's flat-out W2 phase does (two readers look up all the while,
/// so the blocks retired wait out their grace periods), then look up on one thread. The
/// lookup loop's wall time goes to stderr, though on the 2-vCPU VM it proved no steadier
/// than `paced`'s readers. Under callgrind with its cache shaped as the data TLBs it counts
/// TLB misses, but of valgrind's aging, whose threads run one at a time: not the layout
/// the runner's readers see (benches/analysis.md, "Lowest address first").
fn get_aged_readers<S: Concurrent>(n: usize, count: usize) {
    let ranges = layout(n, 1);
    let s = S::build(&ranges);
    let addrs: Vec<Vec<u64>> = (0..2)
        .map(|t| hit_addresses(&ranges, 1 << 16, 0xadd0 + t as u64 + n as u64))
        .collect();
    let ops = churn_ops(&ranges, 1 << 14, 0xc0de + n as u64);
    churn_beside_readers(&s, &ops, 1_000_000, &addrs);
    // Untimed: let this thread's pins run the collector until the aging's garbage is gone,
    // so the measured loop does lookups only (under callgrind, frees showed up in it).
    for _ in 0..16 {
        for &a in &addrs[1] {
            black_box(s.lookup(a));
        }
    }
    let t = std::time::Instant::now();
    black_box(measured_get(&s, &addrs[0], count));
    eprintln!("lookup loop: {:.3} s", t.elapsed().as_secs_f64());
}

/// Ours only: age the map as `get-aged` does, then replace it by its clone (a bulk build:
/// fresh, packed blocks) and look up.
fn get_aged_clone(n: usize, count: usize) {
    let ranges = layout(n, 1);
    let mut s = Ours::build(&ranges);
    let ops = churn_ops(&ranges, 1 << 14, 0xc0de + n as u64);
    for i in 0..1_000_000 {
        s.churn_mut(std::slice::from_ref(&ops[i % ops.len()]));
    }
    let s = Ours(s.0.clone());
    let addrs = hit_addresses(&ranges, 1 << 16, 0xadd0 + n as u64);
    black_box(measured_get(&s, &addrs, count));
}

fn churn<S: Structure>(n: usize, per: usize, count: usize) {
    let ranges = layout(n, 1);
    let mut s = S::build(&ranges);
    let ops = churn_ops(&ranges, 1 << 14, 0xbeef + n as u64);
    measured_churn(&mut s, &ops, per, count);
}

fn alloc<A: Allocator>(n: usize, count: usize) {
    let (space, taken) = alloc_setup(n, 4);
    let mut a = A::build(space, &taken);
    let mut st = AllocChurn::new(taken, 0x4444);
    measured_alloc(&mut a, &mut st, count);
}

macro_rules! by_name {
    ($name:expr, $f:ident ( $($arg:expr),* )) => {
        match $name {
            "ours" => $f::<Ours>($($arg),*),
            "pinned" => $f::<OursPinned>($($arg),*),
            "floor" => $f::<Floor>($($arg),*),
            "stdrw" => $f::<StdRw>($($arg),*),
            "plrw" => $f::<PlRw>($($arg),*),
            "swap" => $f::<Swap>($($arg),*),
            "scc" => $f::<Scc>($($arg),*),
            "skip" => $f::<Skip>($($arg),*),
            "rangemap" => $f::<RangeMapRw>($($arg),*),
            "concread" => $f::<Concread>($($arg),*),
            other => usage(&format!("unknown structure {other}")),
        }
    };
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "profile: {msg}\nusage: profile get[-aged[-readers]] STRUCT N COUNT | \
         churn STRUCT N PER COUNT | alloc ALLOC N COUNT | empty-session COUNT\n  \
         STRUCT: ours pinned floor stdrw plrw swap scc skip rangemap concread; ALLOC: ours crate \
         vm"
    );
    std::process::exit(2)
}

fn num(a: Option<&String>) -> usize {
    a.and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or_else(|| usage("missing or bad number"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(w @ ("get" | "get-aged")) => by_name!(
            args[1].as_str(),
            get(num(args.get(2)), num(args.get(3)), w == "get-aged")
        ),
        Some("get-aged-readers") => match args.get(1).map(String::as_str) {
            Some("ours") => get_aged_readers::<Ours>(num(args.get(2)), num(args.get(3))),
            Some("stdrw") => get_aged_readers::<StdRw>(num(args.get(2)), num(args.get(3))),
            _ => usage("get-aged-readers takes ours or stdrw"),
        },
        Some("get-aged-clone") => get_aged_clone(num(args.get(1)), num(args.get(2))),
        Some("churn") => by_name!(
            args[1].as_str(),
            churn(num(args.get(2)), num(args.get(3)), num(args.get(4)))
        ),
        Some("alloc") => {
            let (n, count) = (num(args.get(2)), num(args.get(3)));
            match args.get(1).map(String::as_str) {
                Some("ours") => alloc::<OursAlloc>(n, count),
                Some("crate") => alloc::<OursAddressAllocator>(n, count),
                Some("vm") => alloc::<VmAlloc>(n, count),
                Some("floor") => alloc::<FloorAlloc>(n, count),
                _ => usage("unknown allocator"),
            }
        }
        Some("empty-session") => {
            let m = rcu_rangemap::RangeMap::new();
            measured_empty_session(&m, num(args.get(1)));
        }
        Some("-h" | "--help") => {
            println!("see the module docs: benches/src/bin/profile.rs");
        }
        _ => usage("unknown workload"),
    }
}
