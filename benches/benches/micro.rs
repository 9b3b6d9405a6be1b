//! Criterion micro benchmarks (HTML report with plots in `target/criterion/report/`):
//!
//! - `get/N`: one lookup (find, read the value, release) at N = 1k and 100k, rcu_rangemap
//!   against the unlocked `BTreeMap` floor and `std::sync::RwLock<BTreeMap>`;
//! - `session`: an empty writer session, and one churn op (remove a range, re-insert it)
//!   per session, at N = 10k;
//! - `find_gap`: the lowest 4 KiB-aligned fit of 16 pages in the W4 layout, N = 10k and
//!   100k (read-only, on the published version);
//! - `atomics`: the locked instructions a lookup is made of, uncontended — the floor under
//!   `get` (a count CAS + release `fetch_sub`, a `crossbeam_epoch::pin()`, all three).
//!
//! `cargo bench -p rcu-rangemap-bench --bench micro [-- FILTER]`

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering::*};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rcu_rangemap_bench::*;

fn cycle<'a>(addrs: &'a [u64]) -> impl FnMut() -> u64 + 'a {
    let mut i = 0usize;
    move || {
        i = (i + 1) & (addrs.len() - 1);
        addrs[i]
    }
}

fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("get");
    for n in [1_000usize, 100_000] {
        let ranges = layout(n, 1);
        let addrs = hit_addresses(&ranges, 1 << 16, 9);
        let ours = Ours::build(&ranges);
        let floor = Floor::build(&ranges);
        let rw = StdRw::build(&ranges);
        g.bench_with_input(BenchmarkId::new(Ours::NAME, n), &n, |b, _| {
            let mut next = cycle(&addrs);
            b.iter(|| ours.lookup(next()))
        });
        // `Pinned::get` under one pin held for the whole benchmark: the pin's cost is gone
        // entirely (the runner's row pins once per 64 lookups instead).
        g.bench_with_input(
            BenchmarkId::new("rcu_rangemap Pinned::get", n),
            &n,
            |b, _| {
                let mut next = cycle(&addrs);
                let pinned = ours.0.pin();
                b.iter(|| pinned.get(next()).map_or(MISS, |g| *g))
            },
        );
        g.bench_with_input(BenchmarkId::new("BTreeMap", n), &n, |b, _| {
            let mut next = cycle(&addrs);
            b.iter(|| floor.lookup(next()))
        });
        g.bench_with_input(BenchmarkId::new("std RwLock<BTreeMap>", n), &n, |b, _| {
            let mut next = cycle(&addrs);
            b.iter(|| rw.lookup(next()))
        });
    }
    g.finish();
}

fn session(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    let ranges = layout(10_000, 3);
    let ours = Ours::build(&ranges);
    g.bench_function("empty session, N = 10k", |b| {
        b.iter(|| ours.0.write().commit())
    });
    let ops = churn_ops(&ranges, 1 << 14, 4);
    g.bench_function("one op per session, N = 10k", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) & (ops.len() - 1);
            ours.churn(std::slice::from_ref(&ops[i]))
        })
    });
    g.finish();
}

fn find_gap(c: &mut Criterion) {
    let mut g = c.benchmark_group("find_gap");
    for n in [10_000usize, 100_000] {
        let (space, taken) = alloc_setup(n, 4);
        let map = rcu_rangemap::RangeMap::<u64, u64>::new();
        {
            let mut w = map.write();
            for r in &taken {
                assert!(w.try_insert(r.clone(), 0).is_ok());
            }
        }
        g.bench_with_input(BenchmarkId::new("lowest, 16 pages", n), &n, |b, _| {
            b.iter(|| {
                map.find_gap(
                    black_box(space.clone()),
                    16 * PAGE,
                    PAGE,
                    rcu_rangemap::Fit::Lowest,
                )
            })
        });
    }
    g.finish();
}

fn atomics(c: &mut Criterion) {
    let mut g = c.benchmark_group("atomics");
    let a = AtomicU32::new(1);
    g.bench_function("AtomicU32 CAS + fetch_sub", |b| {
        b.iter(|| {
            let a = black_box(&a);
            let c = a.load(Acquire);
            let _ = a.compare_exchange_weak(c, c + 1, Acquire, Acquire);
            a.fetch_sub(1, Release)
        })
    });
    g.bench_function("crossbeam_epoch::pin", |b| {
        b.iter(|| drop(black_box(crossbeam_epoch::pin())))
    });
    g.bench_function("pin + CAS + fetch_sub", |b| {
        b.iter(|| {
            let guard = crossbeam_epoch::pin();
            let a = black_box(&a);
            let c = a.load(Acquire);
            let _ = a.compare_exchange_weak(c, c + 1, Acquire, Acquire);
            drop(guard);
            a.fetch_sub(1, Release)
        })
    });
    g.finish();
}

criterion_group! {
    name = micro;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = get, session, find_gap, atomics
}
criterion_main!(micro);
