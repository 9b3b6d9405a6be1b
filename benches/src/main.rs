//! The comparison runner: every structure through the same workloads, one table per
//! workload (medians with min–max and ratios), the targets met or missed, the machine, the
//! crate versions and the command — printed, and written to `BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release -p rcu-rangemap-bench -- [--quick] [--only W1,W3] [--filter NAMES]
//!     [--out PATH | --no-write] [--secs S] [--rounds R] [--reps K] [--wait-load L]
//!     [--wait-max-mins M]
//! ```
//!
//! Each structure and size runs in a child process of its own, in three rounds over all of
//! them (order reversed every other round), and each figure is the median of all its
//! samples ([`children`]). Before and after each sample of two or more threads a probe
//! measures how long a cache line takes to pass between two threads ([`handover_ns`]):
//! on a VM the host moves the vCPUs, and the report splits the two-thread targets by it.
//! The raw results (`target/bench-results/last-*.tsv`) keep every sample and probe.
//!
//! A full run (no `--quick`, no `--only`/`--filter`) writes `BENCHMARKS.md` at the repository
//! root; any other run writes `target/bench-results/BENCHMARKS-partial.md` unless `--out`
//! says otherwise. `--wait-load L` first waits (up to `--wait-max-mins`, default 40) until
//! the 1-minute load average is below `L`. Hand-written profile notes are taken from
//! `benches/analysis.md` (see there for the format).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use rcu_rangemap_bench::counting::{COUNTING, NET_BYTES, SIZES};
use rcu_rangemap_bench::*;

// The counting allocator (`rcu_rangemap_bench::counting`): off except while measuring memory.
#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------------------
// Options and measurement.

struct Opts {
    quick: bool,
    only: Vec<String>,
    filter: Option<String>,
    out: Option<String>,
    no_write: bool,
    secs: f64,
    /// Samples per figure in each child run (each round).
    reps: usize,
    /// Rounds over the job list (parent mode); see [`children`].
    rounds: usize,
    /// Samples of W2 flat out in each child run: the paced phase follows them on the same
    /// map, so they are its aging, and are kept at [`AGING_REPS`] whatever `reps` is.
    flat_reps: usize,
    wait_load: Option<f64>,
    wait_max_mins: f64,
    /// Child mode (hidden): print results as `@@` lines for the parent.
    emit: bool,
    /// Run everything in this process instead of one child process per structure.
    in_process: bool,
    /// Child mode: only the structure with exactly this name.
    exact: Option<String>,
    /// Child mode: only this N.
    n: Option<usize>,
    /// Render the report from saved raw results instead of running.
    render: Option<String>,
}

impl Opts {
    fn parse() -> Opts {
        let args: Vec<String> = std::env::args().skip(1).collect();
        Opts::parse_from(&args)
    }

    fn parse_from(args: &[String]) -> Opts {
        let mut o = Opts {
            quick: false,
            only: vec![],
            filter: None,
            out: None,
            no_write: false,
            secs: 0.0,
            reps: 0,
            rounds: 0,
            flat_reps: 0,
            wait_load: None,
            wait_max_mins: 40.0,
            emit: false,
            in_process: false,
            exact: None,
            n: None,
            render: None,
        };
        let mut args = args.iter().cloned();
        while let Some(a) = args.next() {
            let mut val = |name: &str| {
                args.next()
                    .unwrap_or_else(|| usage(&format!("{name} needs a value")))
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--only" => {
                    o.only = val("--only")
                        .split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .collect()
                }
                "--filter" => o.filter = Some(val("--filter")),
                "--out" => o.out = Some(val("--out")),
                "--no-write" => o.no_write = true,
                "--in-process" => o.in_process = true,
                "--render" => o.render = Some(val("--render")),
                "--emit" => o.emit = true,
                "--exact" => o.exact = Some(val("--exact")),
                "--n" => o.n = Some(val("--n").parse().unwrap_or_else(|_| usage("--n"))),
                "--secs" => o.secs = val("--secs").parse().unwrap_or_else(|_| usage("--secs")),
                "--reps" => o.reps = val("--reps").parse().unwrap_or_else(|_| usage("--reps")),
                "--rounds" => {
                    o.rounds = val("--rounds")
                        .parse()
                        .unwrap_or_else(|_| usage("--rounds"))
                }
                "--w2-flat-reps" => {
                    o.flat_reps = val("--w2-flat-reps")
                        .parse()
                        .unwrap_or_else(|_| usage("--w2-flat-reps"))
                }
                "--wait-load" => {
                    o.wait_load = Some(
                        val("--wait-load")
                            .parse()
                            .unwrap_or_else(|_| usage("--wait-load")),
                    )
                }
                "--wait-max-mins" => {
                    o.wait_max_mins = val("--wait-max-mins")
                        .parse()
                        .unwrap_or_else(|_| usage("--wait-max-mins"))
                }
                "-h" | "--help" => {
                    println!("{}", HELP);
                    std::process::exit(0)
                }
                other => usage(&format!("unknown argument {other}")),
            }
        }
        if o.secs == 0.0 {
            o.secs = if o.quick { 0.05 } else { 0.4 };
        }
        if o.reps == 0 {
            o.reps = if o.quick { 3 } else { 2 };
        }
        if o.rounds == 0 {
            o.rounds = if o.quick { 1 } else { 3 };
        }
        if o.flat_reps == 0 {
            o.flat_reps = if o.quick {
                o.reps
            } else {
                o.reps.max(AGING_REPS)
            };
        }
        if o.reps == 0 || o.rounds == 0 || o.flat_reps == 0 {
            usage("--reps, --rounds and --w2-flat-reps must be at least 1");
        }
        o
    }

    fn section(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == &name.to_ascii_lowercase())
    }

    fn structure(&self, name: &str) -> bool {
        if let Some(e) = &self.exact {
            return e == name;
        }
        match &self.filter {
            None => true,
            Some(f) => {
                let name = name.to_ascii_lowercase();
                f.to_ascii_lowercase().split(',').any(|p| name.contains(p))
            }
        }
    }

    fn size(&self, n: usize) -> bool {
        self.n.is_none_or(|m| m == n)
    }

    fn partial(&self) -> bool {
        self.quick || !self.only.is_empty() || self.filter.is_some()
    }
}

const HELP: &str = "compare: rcu_rangemap against its peers (see benches/src/main.rs)
  --quick             short samples (under a minute in all)
  --only W1,W2,W3,W4,mem,atomics   run only these sections
  --filter NAMES      only structures whose name contains one of NAMES (comma-separated)
  --out PATH          where to write the report
  --no-write          print only
  --render FILE       write the report from a run's saved raw results
                      (target/bench-results/last-full.tsv) and the current
                      benches/analysis.md, without running anything
  --n N               only this N (1000, 10000 or 100000)
  --in-process        run all in this process (default: one child process per structure
                      and size, so each starts from a fresh heap)
  --secs S            seconds per sample (default 0.4, quick 0.05)
  --rounds R          rounds over all structures, the order reversed every other round;
                      a figure pools its samples from every round (default 3, quick 1;
                      not with --in-process)
  --reps K            samples per figure per round (default 2, quick 3)
  --w2-flat-reps F    samples of W2 flat out per round: the aging the paced phase
                      follows (default max(K, 5), quick K)
  --wait-load L       wait until the 1-minute load average is below L
  --wait-max-mins M   ... but at most M minutes (default 40)";

/// Samples of W2 flat out per child run in full mode: the paced phase follows them on the
/// same map, so they are also its aging. Five, as in every full run before rounds
/// (2026-12-01), so that W2-paced stays comparable with them.
const AGING_REPS: usize = 5;

fn usage(msg: &str) -> ! {
    eprintln!("compare: {msg}\n{HELP}");
    std::process::exit(2)
}

/// Median, min and max of the samples of one figure.
#[derive(Clone, Copy, Debug)]
struct Stat {
    med: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(mut v: Vec<f64>) -> Stat {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = v.len();
        let med = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stat {
            med,
            min: v[0],
            max: v[n - 1],
        }
    }
}

/// Hand-over probes ([`handover_ns`]) taken right before and right after each sample.
#[derive(Default)]
struct Probes {
    before: Vec<f64>,
    after: Vec<f64>,
}

struct Bench {
    opts: Opts,
    dur: Duration,
    /// Results by key `section|config|structure`.
    results: BTreeMap<String, Stat>,
    /// The samples behind each sampled result, in the order taken (round by round).
    samples: BTreeMap<String, Vec<f64>>,
    /// Notes by key (e.g. achieved pace).
    notes: BTreeMap<String, String>,
    /// Extra free-form facts for the report.
    facts: BTreeMap<String, String>,
}

impl Bench {
    /// A bench with nothing measured yet, samples of `opts.secs` each.
    fn new(opts: Opts) -> Bench {
        Bench {
            dur: Duration::from_secs_f64(opts.secs),
            opts,
            results: BTreeMap::new(),
            samples: BTreeMap::new(),
            notes: BTreeMap::new(),
            facts: BTreeMap::new(),
        }
    }

    /// One warm-up sample (a quarter of the duration), then `reps` samples.
    fn repeat<const M: usize>(&self, f: impl FnMut(Duration) -> [f64; M]) -> [Vec<f64>; M] {
        self.repeat_n(self.opts.reps, None, f)
    }

    /// One warm-up sample (a quarter of the duration), then `n` samples; with `probes`, a
    /// cache-line hand-over probe ([`handover_ns`]) right before and right after each
    /// sample, pushed there.
    fn repeat_n<const M: usize>(
        &self,
        n: usize,
        mut probes: Option<&mut Probes>,
        mut f: impl FnMut(Duration) -> [f64; M],
    ) -> [Vec<f64>; M] {
        f(self.dur / 4);
        let mut samples: [Vec<f64>; M] = std::array::from_fn(|_| Vec::new());
        for _ in 0..n {
            if let Some(p) = probes.as_deref_mut() {
                p.before.push(handover_ns(PROBE_HANDOVERS));
            }
            let r = f(self.dur);
            if let Some(p) = probes.as_deref_mut() {
                p.after.push(handover_ns(PROBE_HANDOVERS));
            }
            for (s, x) in samples.iter_mut().zip(r) {
                s.push(x);
            }
        }
        samples
    }

    /// Record the probes taken around the samples of the figures `key` names (see
    /// [`probe_key`]).
    fn put_probes(&mut self, key: String, p: Probes) {
        self.put_samples(format!("probe-after|{key}"), p.after);
        self.put_samples(format!("probe|{key}"), p.before);
    }

    /// Record a measured figure: its samples go to the parent, which pools them over the
    /// rounds ([`children`]).
    fn put_samples(&mut self, key: String, v: Vec<f64>) {
        if self.opts.emit {
            let list: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            println!("@@samples\t{key}\t{}", list.join(","));
        }
        self.show(key.clone(), Stat::of(v.clone()));
        self.samples.insert(key, v);
    }

    /// Record a figure that is not sampled (memory).
    fn put(&mut self, key: String, s: Stat) {
        if self.opts.emit {
            println!("@@\t{key}\t{}\t{}\t{}", s.med, s.min, s.max);
        }
        self.show(key, s);
    }

    fn show(&mut self, key: String, s: Stat) {
        println!(
            "  {key:<70} {:>12} ({} – {})",
            fmt_num(s.med),
            fmt_num(s.min),
            fmt_num(s.max)
        );
        self.results.insert(key, s);
    }

    fn note(&mut self, key: String, v: String) {
        if self.opts.emit {
            println!("@@note\t{key}\t{v}");
        }
        self.notes.insert(key, v);
    }

    fn fact(&mut self, key: String, v: String) {
        if self.opts.emit {
            println!("@@fact\t{key}\t{v}");
        }
        self.facts.insert(key, v);
    }

    fn get(&self, key: &str) -> Option<Stat> {
        self.results.get(key).copied()
    }
}

fn fmt_num(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

// ---------------------------------------------------------------------------------------
// The workloads.

/// `threads` threads look up their own address lists round and round for `dur`; total
/// lookups per second.
fn readers<S: Structure>(s: &S, addrs: &[Vec<u64>], threads: usize, dur: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier, list) = (&stop, &barrier, &addrs[t]);
                sc.spawn(move || {
                    barrier.wait();
                    read_loop(s, list, stop)
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        std::thread::sleep(dur);
        stop.store(true, Relaxed);
        let n: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        n as f64 / t0.elapsed().as_secs_f64()
    })
}

fn read_loop<S: Structure>(s: &S, list: &[u64], stop: &AtomicBool) -> u64 {
    run_loop(&|run| s.lookup_run(run), list, stop)
}

/// Two readers and one writer; the writer runs churn sessions of one op each, flat out or
/// paced at `pace` sessions per second. Returns [reader lookups/s (both), writer
/// sessions/s].
fn mixed<S: Concurrent>(
    s: &S,
    addrs: &[Vec<u64>],
    ops: &[Op],
    pace: Option<f64>,
    dur: Duration,
) -> [f64; 2] {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(4);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let (stop, barrier, list) = (&stop, &barrier, &addrs[t]);
                sc.spawn(move || {
                    barrier.wait();
                    read_loop(s, list, stop)
                })
            })
            .collect();
        let (stop_w, barrier_w) = (&stop, &barrier);
        let w = sc.spawn(move || {
            barrier_w.wait();
            let mut n = 0u64;
            let period = pace.map(|p| Duration::from_secs_f64(1.0 / p));
            let mut next = Instant::now();
            while !stop_w.load(Relaxed) {
                let op = &ops[n as usize % ops.len()];
                s.churn(std::slice::from_ref(op));
                n += 1;
                if let Some(p) = period {
                    next += p;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else if now - next > 20 * p {
                        next = now; // far behind: do not burst to catch up
                    }
                }
            }
            n
        });
        barrier.wait();
        let t0 = Instant::now();
        std::thread::sleep(dur);
        stop.store(true, Relaxed);
        let r: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        let wn = w.join().unwrap();
        let el = t0.elapsed().as_secs_f64();
        [r as f64 / el, wn as f64 / el]
    })
}

/// Single-thread churn: sessions of `per` ops, for `dur`; ops per second.
fn churn<S: Structure>(s: &mut S, ops: &[Op], per: usize, dur: Duration) -> f64 {
    let t0 = Instant::now();
    let mut n = 0usize;
    let mut i = 0usize;
    let check = (64 / per).max(1);
    loop {
        for _ in 0..check {
            if i + per > ops.len() {
                i = 0;
            }
            s.churn_mut(&ops[i..i + per]);
            i += per;
            n += per;
        }
        let el = t0.elapsed();
        if el >= dur {
            return n as f64 / el.as_secs_f64();
        }
    }
}

/// Allocator churn steps (free + allocate) per second.
fn alloc_churn<A: Allocator>(a: &mut A, st: &mut AllocChurn, dur: Duration) -> f64 {
    let t0 = Instant::now();
    let mut n = 0usize;
    loop {
        for _ in 0..16 {
            black_box(st.step(a));
        }
        n += 16;
        let el = t0.elapsed();
        if el >= dur {
            return n as f64 / el.as_secs_f64();
        }
    }
}

const SIZES_W1: [usize; 2] = [1_000, 100_000];
const SIZES_W3: [usize; 2] = [10_000, 100_000];
const SIZES_W4: [usize; 3] = [1_000, 10_000, 100_000];
const ADDRS: usize = 1 << 16;

fn nlabel(n: usize) -> String {
    if n >= 1000 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn addr_lists(ranges: &[std::ops::Range<u64>], n: usize) -> Vec<Vec<u64>> {
    (0..2)
        .map(|t| hit_addresses(ranges, ADDRS, 0xadd0 + t as u64 + n as u64))
        .collect()
}

/// Which of W1 (lookups), W2 (readers + writer) and W3 (write churn) to run at one N.
#[derive(Clone, Copy)]
struct At {
    n: usize,
    w1: bool,
    w2: bool,
    w3: bool,
}

fn w1_part<S: Structure>(b: &mut Bench, s: &S, at: At, addrs: &[Vec<u64>], max_t: usize) {
    for t in 1..=max_t {
        let key = format!("W1|{}/{t}t|{}", nlabel(at.n), S::NAME);
        let mut probes = Probes::default();
        let [st] = b.repeat_n(b.opts.reps, (t > 1).then_some(&mut probes), |d| {
            [readers(s, addrs, t, d)]
        });
        if t > 1 {
            b.put_probes(key.clone(), probes);
        }
        b.put_samples(key, st);
    }
}

fn w3_part<S: Structure>(b: &mut Bench, s: &mut S, at: At, ranges: &[std::ops::Range<u64>]) {
    let ops = churn_ops(ranges, 1 << 14, 0xbeef + at.n as u64);
    for per in [1usize, 64] {
        let [st] = b.repeat(|d| [churn(s, &ops, per, d)]);
        b.put_samples(format!("W3|{}/{per}op|{}", nlabel(at.n), S::NAME), st);
    }
}

/// W1, W2 and W3 on one structure built once (in that order: W1 sees the fresh build).
fn shared<S: Concurrent>(b: &mut Bench, at: At, ranges: &[std::ops::Range<u64>]) {
    if !b.opts.structure(S::NAME) {
        return;
    }
    let mut s = S::build(ranges);
    let addrs = addr_lists(ranges, at.n);
    if at.w1 {
        w1_part(b, &s, at, &addrs, 2);
    }
    if at.w2 {
        let ops = churn_ops(ranges, 1 << 14, 0xc0de + at.n as u64);
        for (mode, pace) in [("flat", None), ("paced", Some(1000.0))] {
            let before = s.diag();
            let reps = if pace.is_none() {
                b.opts.flat_reps
            } else {
                b.opts.reps
            };
            let mut probes = Probes::default();
            let [r, w] = b.repeat_n(reps, Some(&mut probes), |d| {
                mixed(&s, &addrs, &ops, pace, d)
            });
            b.put_probes(format!("W2|{}/{mode}|{}", nlabel(at.n), S::NAME), probes);
            if let (Some(_), Some(after)) = (before, s.diag()) {
                b.fact(
                    format!(
                        "W2 lock statistics of {} at N = {}, {mode} (cumulative)",
                        S::NAME,
                        nlabel(at.n)
                    ),
                    after,
                );
            }
            b.put_samples(format!("W2|{}/{mode}/readers|{}", nlabel(at.n), S::NAME), r);
            b.put_samples(format!("W2|{}/{mode}/writer|{}", nlabel(at.n), S::NAME), w);
        }
    }
    if at.w3 {
        w3_part(b, &mut s, at, ranges);
    }
}

/// The floor (no lock): W1 with one thread and W3.
fn floor(b: &mut Bench, at: At, ranges: &[std::ops::Range<u64>]) {
    if !b.opts.structure(Floor::NAME) {
        return;
    }
    let mut s = Floor::build(ranges);
    if at.w1 {
        let addrs = addr_lists(ranges, at.n);
        w1_part(b, &s, at, &addrs, 1);
    }
    if at.w3 {
        w3_part(b, &mut s, at, ranges);
    }
}

/// W1 (lookups), W2 (2 readers + 1 writer) and W3 (single-thread churn), grouped by N so
/// that each structure is built once per N.
fn lookups_and_churn(b: &mut Bench) {
    let (w1, w2, w3) = (
        b.opts.section("W1"),
        b.opts.section("W2"),
        b.opts.section("W3"),
    );
    let mut sizes: Vec<usize> = SIZES_W1.into_iter().chain(SIZES_W3).collect();
    sizes.sort();
    sizes.dedup();
    sizes.retain(|&n| b.opts.size(n));
    for n in sizes {
        let at = At {
            n,
            w1: w1 && SIZES_W1.contains(&n),
            w2: w2 && SIZES_W1.contains(&n),
            w3: w3 && SIZES_W3.contains(&n),
        };
        if !(at.w1 || at.w2 || at.w3) {
            continue;
        }
        println!(
            "N = {n}:{}{}{}",
            if at.w1 {
                " W1 (lookups/s, all threads)"
            } else {
                ""
            },
            if at.w2 {
                " W2 (2 readers: lookups/s; 1 writer: sessions/s)"
            } else {
                ""
            },
            if at.w3 {
                " W3 (churn ops/s; an op = remove a range + re-insert it)"
            } else {
                ""
            },
        );
        let ranges = layout(n, 1);
        shared::<Ours>(b, at, &ranges);
        // The same map read under one pin per 64 lookups: W1 and W2 only (it writes as Ours).
        shared::<OursPinned>(b, At { w3: false, ..at }, &ranges);
        floor(b, at, &ranges);
        shared::<StdRw>(b, at, &ranges);
        shared::<PlRw>(b, at, &ranges);
        shared::<Swap>(b, at, &ranges);
        shared::<Scc>(b, at, &ranges);
        shared::<Skip>(b, at, &ranges);
        shared::<RangeMapRw>(b, at, &ranges);
        shared::<Concread>(b, at, &ranges);
    }
}

fn w4_one<A: Allocator>(b: &mut Bench, n: usize) {
    if !b.opts.structure(A::NAME) {
        return;
    }
    let (space, taken) = alloc_setup(n, 4);
    let t0 = Instant::now();
    let mut a = A::build(space, &taken);
    let build = t0.elapsed();
    let mut st = AllocChurn::new(taken, 0x4444);
    let [s] = b.repeat(|d| [alloc_churn(&mut a, &mut st, d)]);
    let key = format!("W4|{}|{}", nlabel(n), A::NAME);
    b.note(
        key.clone(),
        format!("setup {:.0} ms", build.as_secs_f64() * 1e3),
    );
    b.put_samples(key, s);
}

fn w4(b: &mut Bench) {
    println!("W4: allocator churn (steps/s; a step = free a random allocation + allocate 1–16 pages first fit)");
    let sizes: Vec<usize> = SIZES_W4.into_iter().filter(|&n| b.opts.size(n)).collect();
    for n in sizes {
        w4_one::<OursAlloc>(b, n);
        w4_one::<OursAddressAllocator>(b, n);
        w4_one::<VmAlloc>(b, n);
        w4_one::<FloorAlloc>(b, n);
    }
}

// ---------------------------------------------------------------------------------------
// Memory.

fn drain_epoch() {
    for _ in 0..512 {
        crossbeam_epoch::pin().flush();
    }
}

fn counted<T>(f: impl FnOnce() -> T) -> (T, i64) {
    drain_epoch();
    for s in &SIZES {
        s.store(0, Relaxed);
    }
    let before = NET_BYTES.load(Relaxed);
    COUNTING.store(true, SeqCst);
    let t = f();
    drain_epoch();
    COUNTING.store(false, SeqCst);
    (t, NET_BYTES.load(Relaxed) - before)
}

fn mem_one<S: Structure>(b: &mut Bench, ranges: &[std::ops::Range<u64>]) {
    if !b.opts.structure(S::NAME) {
        return;
    }
    let n = ranges.len() as f64;
    let (s, bytes) = counted(|| S::build(ranges));
    b.put(
        format!("mem|ascending|{}", S::NAME),
        Stat {
            med: bytes as f64 / n,
            min: bytes as f64 / n,
            max: bytes as f64 / n,
        },
    );
    if S::NAME == Ours::NAME {
        let mut hist: Vec<(u64, usize)> = SIZES
            .iter()
            .enumerate()
            .map(|(i, c)| (c.load(Relaxed), i))
            .filter(|&(c, _)| c > 0)
            .collect();
        hist.sort_by(|a, b| b.cmp(a));
        let text = hist
            .iter()
            .take(4)
            .map(|(c, sz)| format!("{c} × {sz} B"))
            .collect::<Vec<_>>()
            .join(", ");
        b.fact("mem: our allocations by size".into(), text);
    }
    drop(s);
    let mut shuffled = ranges.to_vec();
    fastrand::Rng::with_seed(7).shuffle(&mut shuffled);
    let (s, bytes) = counted(|| S::build(&shuffled));
    b.put(
        format!("mem|random|{}", S::NAME),
        Stat {
            med: bytes as f64 / n,
            min: bytes as f64 / n,
            max: bytes as f64 / n,
        },
    );
    drop(s);
}

fn mem(b: &mut Bench) {
    println!("memory: bytes allocated per range at N = 100k (V = u64)");
    let ranges = layout(100_000, 5);
    mem_one::<Ours>(b, &ranges);
    mem_one::<Floor>(b, &ranges);
    mem_one::<Swap>(b, &ranges);
    mem_one::<Scc>(b, &ranges);
    mem_one::<Skip>(b, &ranges);
    mem_one::<RangeMapRw>(b, &ranges);
    mem_one::<Concread>(b, &ranges);
    if b.opts.structure(Ours::NAME) {
        // Ours, built the way a live map grows: one insert per session, random order.
        let mut shuffled = ranges.clone();
        fastrand::Rng::with_seed(7).shuffle(&mut shuffled);
        let (m, bytes) = counted(|| {
            let m = rcu_rangemap::RangeMap::<u64, u64>::new();
            for (i, r) in shuffled.iter().enumerate() {
                assert!(m.write().try_insert(r.clone(), i as u64).is_ok());
            }
            m
        });
        let per = bytes as f64 / ranges.len() as f64;
        b.put(
            format!("mem|random, 1 insert per session|{}", Ours::NAME),
            Stat {
                med: per,
                min: per,
                max: per,
            },
        );
        drop(m);
    }
    if !b.opts.structure(Ours::NAME) {
        return;
    }
    let state = std::mem::size_of::<AtomicU32>() + std::mem::size_of::<AtomicU64>();
    let aligned = std::mem::size_of::<(AtomicU32, AtomicU64)>();
    b.fact(
        "mem: lock state per entry".into(),
        format!("{state} bytes of state (AtomicU32 count + AtomicU64 lock_seq), {aligned} with alignment"),
    );
    b.put(
        "mem|lock state|rcu_rangemap".into(),
        Stat {
            med: state as f64,
            min: state as f64,
            max: aligned as f64,
        },
    );
}

// ---------------------------------------------------------------------------------------
// The floor: what one lookup's locked instructions cost here.

#[inline(never)]
fn loop_ns(dur: Duration, mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..1024 {
            f();
        }
        n += 1024;
        let el = t0.elapsed();
        if el >= dur {
            return el.as_secs_f64() * 1e9 / n as f64;
        }
    }
}

fn atomics(b: &mut Bench) {
    println!("atomics: ns per operation, uncontended, one thread");
    let a32 = AtomicU32::new(1);
    let a64 = AtomicU64::new(1);
    let d = b.dur / 2;
    type Case<'a> = (&'static str, Box<dyn Fn(Duration) -> f64 + 'a>);
    let cases: Vec<Case<'_>> = vec![
        (
            "empty loop (the measuring overhead)",
            Box::new(|d| loop_ns(d, || black_box(()))),
        ),
        (
            "AtomicU64 load + store (no lock prefix)",
            Box::new(|d| {
                loop_ns(d, || {
                    let a = black_box(&a64);
                    a.store(a.load(Relaxed) + 1, Relaxed)
                })
            }),
        ),
        (
            "AtomicU32 fetch_add (one lock xadd)",
            Box::new(|d| {
                loop_ns(d, || {
                    black_box(&a32).fetch_add(1, AcqRel);
                })
            }),
        ),
        (
            "AtomicU32 CAS + fetch_sub (a read lock + unlock: 2 locked RMW)",
            Box::new(|d| {
                loop_ns(d, || {
                    let a = black_box(&a32);
                    let c = a.load(Acquire);
                    let _ = a.compare_exchange_weak(c, c + 1, Acquire, Acquire);
                    a.fetch_sub(1, Release);
                })
            }),
        ),
        (
            "crossbeam_epoch::pin() + drop (1 locked RMW)",
            Box::new(|d| loop_ns(d, || drop(black_box(crossbeam_epoch::pin())))),
        ),
        (
            "pin + CAS + fetch_sub (the 3 locked RMW of a get)",
            Box::new(|d| {
                loop_ns(d, || {
                    let g = crossbeam_epoch::pin();
                    let a = black_box(&a32);
                    let c = a.load(Acquire);
                    let _ = a.compare_exchange_weak(c, c + 1, Acquire, Acquire);
                    drop(g);
                    a.fetch_sub(1, Release);
                })
            }),
        ),
    ];
    for (i, (name, f)) in cases.iter().enumerate() {
        let [s] = b.repeat(|_| [f(d)]);
        b.put_samples(format!("atomics|{i}|{name}"), s);
    }
    // The two lookups this is compared with, in the same run.
    let ranges = layout(1000, 1);
    let addrs = hit_addresses(&ranges, ADDRS, 0xadd0 + 1000);
    let ours = Ours::build(&ranges);
    let floor = Floor::build(&ranges);
    for (i, (name, f)) in [
        (
            "rcu_rangemap get, N = 1k",
            &(|a: u64| ours.lookup(a)) as &dyn Fn(u64) -> u64,
        ),
        ("BTreeMap lookup (no lock), N = 1k", &|a: u64| {
            floor.lookup(a)
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let [s] = b.repeat(|_| {
            let mut i = 0usize;
            [loop_ns(d, || {
                black_box(f(addrs[i & (ADDRS - 1)]));
                i += 1;
            })]
        });
        b.put_samples(format!("atomics|{}|{name}", cases.len() + i), s);
    }
}

// ---------------------------------------------------------------------------------------
// The report.

const STRUCTS: [&str; 9] = [
    Ours::NAME,
    Floor::NAME,
    StdRw::NAME,
    PlRw::NAME,
    Swap::NAME,
    Scc::NAME,
    Skip::NAME,
    RangeMapRw::NAME,
    Concread::NAME,
];
/// Rows of the lookup tables (W1, W2): [`STRUCTS`] with our map read under a pin held
/// across 64 lookups (`RangeMap::pin`) after ours; it writes as ours, so W3 and mem have no
/// such row.
fn reader_rows() -> Vec<&'static str> {
    let mut rows = STRUCTS.to_vec();
    rows.insert(1, OursPinned::NAME);
    rows
}
const ALLOCS: [&str; 4] = [
    OursAlloc::NAME,
    OursAddressAllocator::NAME,
    VmAlloc::NAME,
    FloorAlloc::NAME,
];

/// A table: rows are structures, for each config the median (min–max) and ours ÷ this.
/// `higher_better`: ratios are ours/this (throughput); else this/ours (cost).
fn table(
    b: &Bench,
    sec: &str,
    configs: &[(&str, String)],
    rows: &[&str],
    ours: &str,
    unit: &str,
    higher_better: bool,
) -> String {
    let mut s = String::new();
    s.push_str("| structure |");
    for (label, _) in configs {
        let _ = write!(s, " {label}: {unit} median (min–max) | ours ÷ this |");
    }
    s.push_str("\n|---|");
    for _ in configs {
        s.push_str("---:|---:|");
    }
    s.push('\n');
    for row in rows {
        let any = configs
            .iter()
            .any(|(_, c)| b.get(&format!("{sec}|{c}|{row}")).is_some());
        if !any {
            continue;
        }
        if *row == ours {
            let _ = write!(s, "| **{row}** |");
        } else {
            let _ = write!(s, "| {row} |");
        }
        for (_, c) in configs {
            match b.get(&format!("{sec}|{c}|{row}")) {
                None => s.push_str(" — | |"),
                Some(st) => {
                    let ratio = match b.get(&format!("{sec}|{c}|{ours}")) {
                        Some(o) if *row != ours => {
                            let r = if higher_better {
                                o.med / st.med
                            } else {
                                st.med / o.med
                            };
                            format!("{r:.2}×")
                        }
                        _ => String::new(),
                    };
                    let _ = write!(
                        s,
                        " {} ({}–{}) | {ratio} |",
                        fmt_num(st.med),
                        fmt_num(st.min),
                        fmt_num(st.max)
                    );
                }
            }
        }
        s.push('\n');
    }
    s
}

struct Target {
    id: &'static str,
    what: String,
    goal: f64,
    /// `true`: the ratio must be at least `goal`; `false`: at most.
    at_least: bool,
    ratio: Option<f64>,
    figures: String,
    /// The result keys of the numerator and the denominator, for a target that is one
    /// figure divided by another.
    keys: Option<(String, String)>,
}

/// A target's measured side: the ratio, the figures it is made of, and (for one figure
/// divided by another) their result keys.
struct Measured {
    ratio: Option<f64>,
    figures: String,
    keys: Option<(String, String)>,
}

impl Measured {
    /// A target that is not one figure divided by another.
    fn other(ratio: Option<f64>, figures: String) -> Measured {
        Measured {
            ratio,
            figures,
            keys: None,
        }
    }
}

fn ratio(b: &Bench, num: &str, den: &str) -> Measured {
    let (ratio, figures) = match (b.get(num), b.get(den)) {
        (Some(n), Some(d)) => (
            Some(n.med / d.med),
            format!("{} vs {}", fmt_num(n.med), fmt_num(d.med)),
        ),
        _ => (None, "not measured".into()),
    };
    Measured {
        ratio,
        figures,
        keys: Some((num.to_string(), den.to_string())),
    }
}

fn targets(b: &Bench) -> Vec<Target> {
    let o = Ours::NAME;
    let mut t = Vec::new();
    let mut push = |id, what: String, goal, at_least, m: Measured| {
        t.push(Target {
            id,
            what,
            goal,
            at_least,
            ratio: m.ratio,
            figures: m.figures,
            keys: m.keys,
        })
    };
    for n in ["1k", "100k"] {
        push(
            if n == "1k" {
                "W1-floor-1k"
            } else {
                "W1-floor-100k"
            },
            format!("W1 1 thread, N = {n}: ours ÷ BTreeMap (no lock)"),
            0.8,
            true,
            ratio(
                b,
                &format!("W1|{n}/1t|{o}"),
                &format!("W1|{n}/1t|{}", Floor::NAME),
            ),
        );
    }
    push(
        "W1-scc-100k",
        "W1 1 thread, N = 100k: ours ÷ scc::TreeIndex".into(),
        1.5,
        true,
        ratio(
            b,
            &format!("W1|100k/1t|{o}"),
            &format!("W1|100k/1t|{}", Scc::NAME),
        ),
    );
    push(
        "W1-skipmap-100k",
        "W1 1 thread, N = 100k: ours ÷ SkipMap".into(),
        2.0,
        true,
        ratio(
            b,
            &format!("W1|100k/1t|{o}"),
            &format!("W1|100k/1t|{}", Skip::NAME),
        ),
    );
    // How much a second thread gave the peers in the same run: the machine's share of it.
    let peer_scaling = STRUCTS
        .iter()
        .filter(|p| **p != o && **p != Floor::NAME)
        .filter_map(|p| {
            let one = b.get(&format!("W1|1k/1t|{p}"))?;
            let two = b.get(&format!("W1|1k/2t|{p}"))?;
            Some((two.med / one.med, *p))
        })
        .max_by(|a, c| a.0.partial_cmp(&c.0).unwrap());
    let scaling_what = match peer_scaling {
        Some((r, p)) => format!(
            "W1 N = 1k: ours 2 threads ÷ ours 1 thread (the best peer's in this run: {r:.2}×, {p})"
        ),
        None => "W1 N = 1k: ours 2 threads ÷ ours 1 thread".into(),
    };
    push(
        "W1-scaling-1k",
        scaling_what,
        1.9,
        true,
        ratio(b, &format!("W1|1k/2t|{o}"), &format!("W1|1k/1t|{o}")),
    );
    for n in ["1k", "100k"] {
        // The best lock-based peer's readers.
        let best = [StdRw::NAME, PlRw::NAME, RangeMapRw::NAME]
            .iter()
            .filter_map(|p| {
                let k = format!("W2|{n}/flat/readers|{p}");
                b.get(&k).map(|s| (s.med, k))
            })
            .max_by(|a, c| a.0.partial_cmp(&c.0).unwrap())
            .map(|x| x.1)
            .unwrap_or_default();
        let best_name = best.rsplit('|').next().unwrap_or("").to_string();
        push(
            if n == "1k" { "W2-readers-1k" } else { "W2-readers-100k" },
            format!("W2 flat out, N = {n}: ours' readers ÷ best lock-based peer's readers ({best_name})"),
            1.5,
            true,
            ratio(b, &format!("W2|{n}/flat/readers|{o}"), &best),
        );
        push(
            if n == "1k" {
                "W2-writer-1k"
            } else {
                "W2-writer-100k"
            },
            format!("W2 flat out, N = {n}: ours' writer ÷ SkipMap's writer"),
            1.0,
            true,
            ratio(
                b,
                &format!("W2|{n}/flat/writer|{o}"),
                &format!("W2|{n}/flat/writer|{}", Skip::NAME),
            ),
        );
        // "No peer may beat us on both": for each peer, the better of ours ÷ its readers and
        // ours ÷ its writer; the target holds if the smallest of those is at least 1.
        let closest = STRUCTS
            .iter()
            .filter(|p| **p != o && **p != Floor::NAME)
            .filter_map(|p| {
                let rate = |side: &str| {
                    let ours = b.get(&format!("W2|{n}/flat/{side}|{o}"))?.med;
                    let peer = b.get(&format!("W2|{n}/flat/{side}|{p}"))?.med;
                    Some((ours, peer))
                };
                let (r, w) = (rate("readers")?, rate("writer")?);
                let better = (r.0 / r.1).max(w.0 / w.1);
                Some((better, *p, r, w))
            })
            .min_by(|a, c| a.0.partial_cmp(&c.0).unwrap());
        let (both_ratio, both_figures, both_peer) = match closest {
            Some((x, p, r, w)) => (
                Some(x),
                format!(
                    "readers {} vs {}, writer {} vs {}",
                    fmt_num(r.0),
                    fmt_num(r.1),
                    fmt_num(w.0),
                    fmt_num(w.1)
                ),
                p,
            ),
            None => (None, "not measured".into(), ""),
        };
        push(
            if n == "1k" {
                "W2-both-1k"
            } else {
                "W2-both-100k"
            },
            format!(
                "W2 flat out, N = {n}: no peer beats ours on both readers and writer — for each \
                 peer the larger of ours ÷ its readers and ours ÷ its writer, the smallest of \
                 these (closest peer: {both_peer})"
            ),
            1.0,
            true,
            Measured::other(both_ratio, both_figures),
        );
        // The same ratio for the peers in this run: what the paced writer, a third thread
        // on two cores, and the flat phase's aging before it cost their readers.
        let peer_paced = STRUCTS
            .iter()
            .filter(|p| **p != o && **p != Floor::NAME)
            .filter_map(|p| {
                let paced = b.get(&format!("W2|{n}/paced/readers|{p}"))?;
                let two = b.get(&format!("W1|{n}/2t|{p}"))?;
                Some((paced.med / two.med, *p))
            })
            .max_by(|a, c| a.0.partial_cmp(&c.0).unwrap());
        let paced_what = match peer_paced {
            Some((r, p)) => format!(
                "W2 paced (1,000 sessions/s), N = {n}: ours' readers ÷ ours' W1 2 threads (the \
                 best peer's in this run: {r:.2}×, {p})"
            ),
            None => {
                format!("W2 paced (1,000 sessions/s), N = {n}: ours' readers ÷ ours' W1 2 threads")
            }
        };
        push(
            if n == "1k" {
                "W2-paced-1k"
            } else {
                "W2-paced-100k"
            },
            paced_what,
            0.95,
            true,
            ratio(
                b,
                &format!("W2|{n}/paced/readers|{o}"),
                &format!("W1|{n}/2t|{o}"),
            ),
        );
    }
    for n in ["10k", "100k"] {
        push(
            if n == "10k" {
                "W3-1op-10k"
            } else {
                "W3-1op-100k"
            },
            format!("W3 one-op sessions, N = {n}: ours ÷ SkipMap"),
            1.0,
            true,
            ratio(
                b,
                &format!("W3|{n}/1op|{o}"),
                &format!("W3|{n}/1op|{}", Skip::NAME),
            ),
        );
        push(
            if n == "10k" {
                "W3-64op-10k"
            } else {
                "W3-64op-100k"
            },
            format!("W3 64-op sessions, N = {n}: ours ÷ BTreeMap (no lock)"),
            0.5,
            true,
            ratio(
                b,
                &format!("W3|{n}/64op|{o}"),
                &format!("W3|{n}/64op|{}", Floor::NAME),
            ),
        );
    }
    push(
        "W4-vm-10k",
        "W4 N = 10k: ours ÷ vm_allocator (steps/s)".into(),
        20.0,
        true,
        ratio(
            b,
            &format!("W4|10k|{}", OursAlloc::NAME),
            &format!("W4|10k|{}", VmAlloc::NAME),
        ),
    );
    // What the same hundredfold growth costs on this machine: the same steps' two tree
    // edits on an unlocked BTreeMap (no search, no copy, no lock), and the simplest
    // O(log n) operation, its lookup (W1, one thread).
    let edits_growth = ratio(
        b,
        &format!("W4|1k|{}", FloorAlloc::NAME),
        &format!("W4|100k|{}", FloorAlloc::NAME),
    )
    .ratio;
    let lookup_growth = ratio(
        b,
        &format!("W1|1k/1t|{}", Floor::NAME),
        &format!("W1|100k/1t|{}", Floor::NAME),
    )
    .ratio;
    let floors: Vec<String> = [
        edits_growth.map(|r| format!("an unlocked BTreeMap's remove + re-insert, W4: {r:.2}×")),
        lookup_growth.map(|r| format!("its lookup, W1: {r:.2}×")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let w4_what = if floors.is_empty() {
        "W4 ours: per-step cost at N = 100k ÷ at N = 1k".into()
    } else {
        format!(
            "W4 ours: per-step cost at N = 100k ÷ at N = 1k (the same growth in this run: {})",
            floors.join("; ")
        )
    };
    push(
        "W4-scaling",
        w4_what,
        2.0,
        false,
        ratio(
            b,
            &format!("W4|1k|{}", OursAlloc::NAME),
            &format!("W4|100k|{}", OursAlloc::NAME),
        ),
    );
    let mem = b.get(&format!("mem|ascending|{o}"));
    push(
        "mem-per-range",
        "memory at N = 100k, V = u64: bytes per range (ascending build)".into(),
        64.0,
        false,
        Measured::other(
            mem.map(|s| s.med),
            mem.map_or("not measured".into(), |s| format!("{:.1} B", s.med)),
        ),
    );
    let lock = b.get(&format!("mem|lock state|{o}"));
    push(
        "lock-state",
        "lock state per entry (bytes of state; 16 with alignment)".into(),
        12.0,
        false,
        Measured::other(
            lock.map(|s| s.med),
            lock.map_or("not measured".into(), |s| {
                format!("{:.0} B state, {:.0} B aligned", s.med, s.max)
            }),
        ),
    );
    t
}

fn met(t: &Target) -> Option<bool> {
    t.ratio
        .map(|r| if t.at_least { r >= t.goal } else { r <= t.goal })
}

/// `### id` sections of the hand-written analysis, and the text before the first one.
fn analysis() -> (String, BTreeMap<String, String>) {
    let text = include_str!("../analysis.md");
    // Drop a leading HTML comment (the file's note to its editors).
    let text = match (text.trim_start().strip_prefix("<!--"), text.find("-->")) {
        (Some(_), Some(end)) => &text[end + 3..],
        _ => text,
    };
    let mut intro = String::new();
    let mut map = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("### ") {
            cur = Some(id.trim().to_string());
            map.insert(id.trim().to_string(), String::new());
            continue;
        }
        match &cur {
            None => {
                intro.push_str(line);
                intro.push('\n');
            }
            Some(id) => {
                let e = map.get_mut(id).unwrap();
                e.push_str(line);
                e.push('\n');
            }
        }
    }
    (intro, map)
}

fn lock_versions() -> Vec<(String, String)> {
    let lock = include_str!("../../Cargo.lock");
    let wanted = [
        "rcu-rangemap",
        "crossbeam-epoch",
        "parking_lot",
        "arc-swap",
        "scc",
        "sdd",
        "crossbeam-skiplist",
        "rangemap",
        "concread",
        "vm-allocator",
        "criterion",
        "fastrand",
    ];
    let mut out = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let Some(v) = line.strip_prefix("version = ") {
            if let Some(n) = name.take() {
                if wanted.contains(&n.as_str()) {
                    out.push((n, v.trim_matches('"').to_string()));
                }
            }
        }
    }
    out
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The commit the crate under test was built from, and whether `src/` had uncommitted
/// changes then (recorded by `build.rs`).
fn source_state() -> String {
    format!("{} (at build time)", env!("BENCH_SOURCE"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn load1() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Everything about a run the report states, kept with its results (see `save`), so a run
/// can be rendered again (`--render`) after the hand-written analysis changes.
#[derive(Default)]
struct RunInfo {
    command: String,
    mode: String,
    started: String,
    load_start: String,
    load_end: String,
    waited: String,
    wall_secs: f64,
    reps: usize,
    /// 0 in runs saved before rounds (one round, W2 flat with `reps` samples).
    rounds: usize,
    flat_reps: usize,
    secs: f64,
    cores: String,
    cpu: String,
    kernel: String,
    source: String,
    rustc: String,
    /// Set when the report is rendered from saved results (`--render`): their path.
    rendered_from: String,
}

impl RunInfo {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("command", self.command.clone()),
            ("mode", self.mode.clone()),
            ("started", self.started.clone()),
            ("load_start", self.load_start.clone()),
            ("load_end", self.load_end.clone()),
            ("waited", self.waited.clone()),
            ("wall_secs", self.wall_secs.to_string()),
            ("reps", self.reps.to_string()),
            ("rounds", self.rounds.to_string()),
            ("flat_reps", self.flat_reps.to_string()),
            ("secs", self.secs.to_string()),
            ("cores", self.cores.clone()),
            ("cpu", self.cpu.clone()),
            ("kernel", self.kernel.clone()),
            ("source", self.source.clone()),
            ("rustc", self.rustc.clone()),
        ]
    }

    fn set(&mut self, k: &str, v: &str) {
        let v = v.to_string();
        match k {
            "command" => self.command = v,
            "mode" => self.mode = v,
            "started" => self.started = v,
            "load_start" => self.load_start = v,
            "load_end" => self.load_end = v,
            "waited" => self.waited = v,
            "wall_secs" => self.wall_secs = v.parse().unwrap_or(0.0),
            "reps" => self.reps = v.parse().unwrap_or(0),
            "rounds" => self.rounds = v.parse().unwrap_or(0),
            "flat_reps" => self.flat_reps = v.parse().unwrap_or(0),
            "secs" => self.secs = v.parse().unwrap_or(0.0),
            "cores" => self.cores = v,
            "cpu" => self.cpu = v,
            "kernel" => self.kernel = v,
            "source" => self.source = v,
            "rustc" => self.rustc = v,
            _ => {}
        }
    }

    /// Samples behind each figure: all rounds together.
    fn samples(&self) -> usize {
        self.reps * self.rounds.max(1)
    }

    /// How the samples were taken, for the report.
    fn sampling(&self) -> String {
        if self.rounds == 0 {
            return format!(
                "{} per figure, {:.2} s each, after one warm-up sample; each structure and \
                 size in a child process of its own",
                self.reps, self.secs
            );
        }
        let flat = self.flat_reps * self.rounds;
        format!(
            "{} per figure ({} for W2 flat out, whose samples are also the aging before the \
             paced phase), {:.2} s each: {}, each structure and size in a child process of \
             its own that takes one warm-up sample and then {} per figure ({} for W2 flat \
             out); memory and `atomics` in the first round only",
            self.samples(),
            flat,
            self.secs,
            if self.rounds == 1 {
                "one round over all structures".to_string()
            } else {
                format!(
                    "{} rounds over all structures, the order reversed every other round",
                    self.rounds
                )
            },
            self.reps,
            self.flat_reps
        )
    }
}

/// Write a run's facts and raw results, one tab-separated record a line.
fn save(path: &str, info: &RunInfo, b: &Bench) {
    let mut s = String::new();
    for (k, v) in info.fields() {
        let _ = writeln!(s, "info\t{k}\t{v}");
    }
    for (k, st) in &b.results {
        let _ = writeln!(s, "result\t{k}\t{}\t{}\t{}", st.med, st.min, st.max);
    }
    for (k, v) in &b.samples {
        let list: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        let _ = writeln!(s, "samples\t{k}\t{}", list.join(","));
    }
    for (k, v) in &b.notes {
        let _ = writeln!(s, "note\t{k}\t{v}");
    }
    for (k, v) in &b.facts {
        let _ = writeln!(s, "fact\t{k}\t{v}");
    }
    std::fs::write(path, s).expect("write the raw results");
}

/// Read what `save` wrote.
fn load(path: &str, b: &mut Bench) -> RunInfo {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| usage(&format!("{path}: {e}")));
    let mut info = RunInfo::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["info", k, v] => info.set(k, v),
            ["result", k, med, min, max] => {
                let p = |x: &str| x.parse::<f64>().unwrap_or(f64::NAN);
                b.results.insert(
                    k.to_string(),
                    Stat {
                        med: p(med),
                        min: p(min),
                        max: p(max),
                    },
                );
            }
            ["samples", k, list] => {
                let v = list.split(',').filter_map(|x| x.parse().ok()).collect();
                b.samples.insert(k.to_string(), v);
            }
            ["note", k, v] => {
                b.notes.insert(k.to_string(), v.to_string());
            }
            ["fact", k, v] => {
                b.facts.insert(k.to_string(), v.to_string());
            }
            _ => {}
        }
    }
    info
}

/// Every hand-over probe of the run, before and after samples, in ascending order.
fn all_probes(b: &Bench) -> Vec<f64> {
    let mut v: Vec<f64> = b
        .samples
        .iter()
        .filter(|(k, _)| k.starts_with("probe|") || k.starts_with("probe-after|"))
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The key of the hand-over probes taken before `key`'s samples, one per sample, if it has
/// them (figures of two or more threads).
fn probe_key(key: &str) -> Option<String> {
    let mut f = key.split('|');
    let (section, config, name) = (f.next()?, f.next()?, f.next()?);
    match section {
        "W1" if !config.ends_with("/1t") => Some(format!("probe|{key}")),
        "W2" => {
            let (n_mode, _side) = config.rsplit_once('/')?;
            Some(format!("probe|W2|{n_mode}|{name}"))
        }
        _ => None,
    }
}

/// `key`'s samples split by the probes taken around each ([`Placement::of`]): near and
/// far; a sample whose probes disagree is in neither. A figure without probes (one
/// thread) gives all its samples to both.
fn split_by_probe(b: &Bench, key: &str, limit: f64) -> Option<(Vec<f64>, Vec<f64>)> {
    let v = b.samples.get(key)?;
    let Some(pk) = probe_key(key) else {
        return Some((v.clone(), v.clone()));
    };
    let before = b.samples.get(&pk)?;
    let after = b.samples.get(&pk.replacen("probe|", "probe-after|", 1))?;
    if before.len() != v.len() || after.len() != v.len() {
        return None;
    }
    let (mut near, mut far) = (Vec::new(), Vec::new());
    for ((&x, &p0), &p1) in v.iter().zip(before).zip(after) {
        match Placement::of(p0, p1, limit) {
            Some(Placement::Near) => near.push(x),
            Some(Placement::Far) => far.push(x),
            None => {}
        }
    }
    Some((near, far))
}

/// The targets whose figures have two or more threads, with the ratio recomputed from the
/// samples taken while the two cores were near (a short hand-over) and while they were
/// far. The targets table's verdicts stay on all samples; this shows how much of a ratio
/// is the host's placement of the vCPUs. Empty for runs saved without probes.
fn by_probe(b: &Bench) -> String {
    let Some(limit) = Placement::limit(&all_probes(b)) else {
        return String::new();
    };
    let cell = |num: &[f64], den: &[f64]| {
        if num.is_empty() || den.is_empty() {
            "—".to_string()
        } else {
            format!(
                "{:.2}× ({} ÷ {} samples)",
                Stat::of(num.to_vec()).med / Stat::of(den.to_vec()).med,
                num.len(),
                den.len()
            )
        }
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### Two-thread targets by the cache-line hand-over probe\n\n_The probes before \
         and after each sample of two or more threads (see \"cache-line hand-over\" in the \
         run table) tell where the host had the two vCPUs: near (both probes ≤ {limit:.0} \
         ns, twice the run's 10th percentile) or far (both above). Each ratio is recomputed \
         from the samples of one kind; a sample whose two probes disagree is in neither, \
         and one-thread figures (no probe) count in both columns. The verdicts above use all \
         samples._\n\n| target | goal | all samples | cores near | cores far |\n\
         |---|---:|---|---|---|"
    );
    for t in targets(b) {
        let Some((num, den)) = &t.keys else {
            continue;
        };
        if probe_key(num).is_none() && probe_key(den).is_none() {
            continue;
        }
        let (Some((nn, nf)), Some((dn, df))) =
            (split_by_probe(b, num, limit), split_by_probe(b, den, limit))
        else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {} | {} {:.2}× | {} | {} | {} |",
            t.id,
            if t.at_least { "≥" } else { "≤" },
            t.goal,
            cell(&b.samples[num], &b.samples[den]),
            cell(&nn, &dn),
            cell(&nf, &df)
        );
    }
    s
}

fn report(b: &Bench, info: &RunInfo) -> String {
    let o = Ours::NAME;
    let mode = &info.mode;
    let note = format!(
        "_One run on this {}-core machine (load average {} at start, {} at end); \
         medians of {} samples of {:.2} s, min–max in brackets; ratios compare figures of \
         this run only._",
        info.cores,
        info.load_start,
        info.load_end,
        info.samples(),
        info.secs
    );
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by the comparison runner `benches/src/main.rs` ({mode} mode). Every \
         figure below is from **one run on one 2-core virtual machine** that other work may \
         share: ratios between figures of the same run are what the targets are about; \
         absolute numbers will differ elsewhere. Criterion micro benchmarks (with HTML \
         plots) are in `benches/benches/micro.rs`: `cargo bench -p rcu-rangemap-bench`, \
         report in `target/criterion/report/index.html`.\n"
    );
    let _ = writeln!(s, "## The run\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| command | `{}` |", info.command);
    let _ = writeln!(s, "| started | {} |", info.started);
    let _ = writeln!(
        s,
        "| wall time | {:.0} s (after the wait for load below) |",
        info.wall_secs
    );
    let _ = writeln!(s, "| cores (`nproc`) | {} |", info.cores);
    let _ = writeln!(s, "| CPU (`/proc/cpuinfo`) | {} |", info.cpu);
    let _ = writeln!(s, "| kernel | {} |", info.kernel);
    let _ = writeln!(
        s,
        "| load average (1/5/15 min) at start | {} |",
        info.load_start
    );
    let _ = writeln!(
        s,
        "| load average (1/5/15 min) at end | {} (the run's own 1–3 threads count in it) |",
        info.load_end
    );
    let _ = writeln!(s, "| waited for load | {} |", info.waited);
    let _ = writeln!(s, "| samples | {} |", info.sampling());
    let probes = all_probes(b);
    if !probes.is_empty() {
        let at = |q: f64| probes[((probes.len() - 1) as f64 * q).round() as usize];
        let _ = writeln!(
            s,
            "| cache-line hand-over between two threads | median {:.0} ns, 10th–90th \
             percentile {:.0}–{:.0} ns, min–max {:.0}–{:.0} ns, over {} probes, one before \
             and one after each sample of two or more threads (`handover_ns`; on a VM the host may move \
             the vCPUs: see `benches/analysis.md`, \"Rounds\") |",
            at(0.5),
            at(0.1),
            at(0.9),
            probes[0],
            probes[probes.len() - 1],
            probes.len()
        );
    }
    let _ = writeln!(s, "| source measured | {} |", info.source);
    let _ = writeln!(s, "| compiler | {} |", info.rustc);
    if !info.rendered_from.is_empty() {
        let _ = writeln!(
            s,
            "| report | rendered afterwards from the run's raw results `{0}` and the current \
             `benches/analysis.md`: `cargo run --release -p rcu-rangemap-bench -- --render {0} \
             --out BENCHMARKS.md` |",
            info.rendered_from
        );
    }
    let _ = writeln!(s, "| profile | release (opt-level 3, debug = 1, no LTO) |");
    let _ = writeln!(s, "\nCrate versions (from `Cargo.lock`):\n");
    let _ = writeln!(s, "| crate | version |\n|---|---|");
    for (n, v) in lock_versions() {
        let _ = writeln!(s, "| {n} | {v} |");
    }

    let (intro, notes) = analysis();
    let ts = targets(b);
    let _ = writeln!(s, "\n## Targets\n\n{note}\n");
    let _ = writeln!(
        s,
        "| target | what | figures (ours vs peer) | ratio | goal | result |\n|---|---|---|---:|---:|---|"
    );
    for t in &ts {
        let goal = if t.id.starts_with("mem") || t.id == "lock-state" {
            format!("≤ {:.0} B", t.goal)
        } else if t.at_least {
            format!("≥ {:.2}×", t.goal)
        } else {
            format!("≤ {:.2}×", t.goal)
        };
        let ratio = match t.ratio {
            None => "—".into(),
            Some(r) if t.id.starts_with("mem") || t.id == "lock-state" => format!("{r:.1} B"),
            Some(r) => format!("{r:.2}×"),
        };
        let res = match met(t) {
            None => "not measured",
            Some(true) => "**met**",
            Some(false) => "**missed**",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {ratio} | {goal} | {res} |",
            t.id, t.what, t.figures
        );
    }
    s.push_str(&by_probe(b));
    let missed: Vec<&Target> = ts.iter().filter(|t| met(t) == Some(false)).collect();
    let _ = writeln!(s, "\n## Why: where the time goes\n");
    s.push_str(&intro);
    if !missed.is_empty() {
        let _ = writeln!(s, "\n### Missed targets, one by one\n");
        for t in missed {
            // The section as written (paragraphs and tables), under a heading of its own.
            let why = notes.get(t.id).map_or(
                "No profile recorded for this target yet (add a `### id` section to \
                 `benches/analysis.md`).",
                |x| x.trim(),
            );
            let _ = writeln!(
                s,
                "#### {}\n\n{}, ratio {}.\n\n{}\n",
                t.id,
                t.what,
                t.ratio.map_or("—".into(), |r| format!("{r:.2}")),
                why
            );
        }
    }

    let w1c: Vec<(&str, String)> = vec![
        ("N=1k, 1 thread", "1k/1t".into()),
        ("N=1k, 2 threads", "1k/2t".into()),
        ("N=100k, 1 thread", "100k/1t".into()),
        ("N=100k, 2 threads", "100k/2t".into()),
    ];
    let _ = writeln!(
        s,
        "\n## W1: lookups only\n\nLookups per second (all threads together) of addresses \
         that hit, each a random byte of a random range; the lookup reads the value and \
         releases whatever it held. Ranges of 1–64 pages with gaps of 0–16 pages from \
         0x5555_0000_0000. \"ours ÷ this\" > 1 means rcu_rangemap is faster.\n\n{note}\n"
    );
    s.push_str(&table(b, "W1", &w1c, &reader_rows(), o, "lookups/s", true));

    for n in ["1k", "100k"] {
        let c: Vec<(&str, String)> = vec![
            ("flat out: readers", format!("{n}/flat/readers")),
            ("flat out: writer", format!("{n}/flat/writer")),
            ("paced: readers", format!("{n}/paced/readers")),
            ("paced: writer", format!("{n}/paced/writer")),
        ];
        let _ = writeln!(
            s,
            "\n## W2: two readers and one writer, N = {n}\n\nThree threads on two cores. \
             Readers as in W1 (lookups/s of both); the writer runs sessions of one churn op \
             (remove a random range, re-insert it with a new value) flat out, or paced at \
             1,000 sessions/s (the writer column then shows the pace achieved). \
             Writer figures are sessions/s.\n\n{note}\n"
        );
        s.push_str(&table(b, "W2", &c, &reader_rows(), o, "per s", true));
    }

    let w3c: Vec<(&str, String)> = vec![
        ("N=10k, 1 op/session", "10k/1op".into()),
        ("N=10k, 64 ops/session", "10k/64op".into()),
        ("N=100k, 1 op/session", "100k/1op".into()),
        ("N=100k, 64 ops/session", "100k/64op".into()),
    ];
    let _ = writeln!(
        s,
        "\n## W3: single-thread write churn\n\nOps per second; an op removes a random range \
         and re-inserts it with a new value; a session (lock hold, transaction, copy of the \
         whole map for ArcSwap, nothing for the lock-free maps and the floor) holds 1 or 64 \
         ops.\n\n{note}\n"
    );
    s.push_str(&table(b, "W3", &w3c, &STRUCTS, o, "ops/s", true));

    let w4c: Vec<(&str, String)> = vec![
        ("N=1k", "1k".into()),
        ("N=10k", "10k".into()),
        ("N=100k", "100k".into()),
    ];
    let _ = writeln!(
        s,
        "\n## W4: allocator churn\n\nSteps per second; a step frees a random live \
         allocation and allocates 1–16 pages, 4 KiB aligned, first fit (lowest address). N \
         live allocations of 1–16 pages with gaps of 0–16 pages fill the lower half of the \
         space, the upper half starts free. Ours: one writer session per allocation \
         (`Writer::find_gap` + `try_insert`) and one per free (`remove_entry`); the crate's \
         `AddressAllocator` does the same plus argument checks; vm_allocator is used \
         through `&mut` with no lock. The last row allocates nothing: an unlocked std \
         `BTreeMap` removes the random allocation and inserts the same range again, the \
         step's two tree edits with no search, as the floor W4-scaling is read against.\n\n{note}\n"
    );
    s.push_str(&table(
        b,
        "W4",
        &w4c,
        &ALLOCS,
        OursAlloc::NAME,
        "steps/s",
        true,
    ));
    let _ = writeln!(s, "\nPer-step cost of ours (µs, median):");
    for n in ["1k", "10k", "100k"] {
        if let Some(st) = b.get(&format!("W4|{n}|{}", OursAlloc::NAME)) {
            let _ = write!(s, " N={n}: {:.2} µs;", 1e6 / st.med);
        }
    }
    s.push('\n');
    let setups: Vec<String> = b
        .notes
        .iter()
        .filter(|(k, _)| k.starts_with("W4|"))
        .map(|(k, v)| format!("{} — {v}", k.trim_start_matches("W4|")))
        .collect();
    if !setups.is_empty() {
        let _ = writeln!(s, "\nSetup times: {}.", setups.join("; "));
    }

    let memc: Vec<(&str, String)> = vec![
        ("ascending", "ascending".into()),
        ("random order", "random".into()),
    ];
    let _ = writeln!(
        s,
        "\n## Memory\n\nBytes allocated per range at N = 100k with V = u64 (a counting \
         global allocator: net bytes after building ÷ N; epoch garbage flushed first). \
         \"ours ÷ this\" > 1 here means ours uses *less*. Ours is built in one writer session \
         (`build`); the extra row builds it the way a live map grows, one insert per \
         session in random order.\n\n{note}\n"
    );
    s.push_str(&table(b, "mem", &memc, &STRUCTS, o, "bytes/range", false));
    if let Some(st) = b.get(&format!("mem|random, 1 insert per session|{o}")) {
        let _ = writeln!(
            s,
            "\nOurs, random order, one insert per session: {:.1} bytes per range.",
            st.med
        );
    }
    for (k, v) in b.facts.iter().filter(|(k, _)| k.starts_with("mem:")) {
        let _ = writeln!(s, "\n{}: {v}.", k.trim_start_matches("mem: "));
    }

    let _ = writeln!(
        s,
        "\n## The floor: what the locked instructions of one lookup cost here\n\nns per \
         operation, one thread, uncontended, measured in this run. A `get` does three \
         locked read-modify-writes (the epoch pin, the count CAS, the release `fetch_sub`); \
         compare their sum with the unlocked BTreeMap lookup.\n\n{note}\n"
    );
    let _ = writeln!(s, "| operation | ns median (min–max) |\n|---|---:|");
    let mut rows: Vec<(usize, &String, &Stat)> = b
        .results
        .iter()
        .filter(|(k, _)| k.starts_with("atomics|"))
        .map(|(k, st)| (k.split('|').nth(1).unwrap().parse().unwrap_or(0), k, st))
        .collect();
    rows.sort_by_key(|r| r.0);
    for (_, k, st) in rows {
        let _ = writeln!(
            s,
            "| {} | {:.2} ({:.2}–{:.2}) |",
            k.rsplit('|').next().unwrap(),
            st.med,
            st.min,
            st.max
        );
    }
    s
}

/// Run every (section, structure, size) in a child process of its own (this binary with
/// `--emit`), so that each starts from a fresh heap: a structure built after another's
/// churn would otherwise inherit a fragmented heap, which at N = 100k changes lookup
/// times several-fold (TLB and cache footprint), and the order of the runs would decide.
///
/// The jobs run in `--rounds` rounds, in reverse order every other round, and each figure
/// pools its samples from all rounds. On a shared VM the speed drifts over minutes: with
/// one child per structure, ours and a peer measured a minute apart could differ by the
/// drift alone (W3-1op-10k's ratio ranged 0.93–1.79 over full runs of the same code, while
/// each child's own samples stayed within ±5%). Spread over the run and in alternating
/// order, every structure sees the same mix of fast and slow minutes. The memory and
/// `atomics` jobs (not timings of a structure against a peer) run once, in the first
/// round.
fn children(b: &mut Bench) {
    let exe = std::env::current_exe().expect("own path");
    // Jobs run in every round, and those run only in the first.
    let mut jobs: Vec<Vec<String>> = Vec::new();
    let mut once_first: Vec<Vec<String>> = Vec::new();
    let mut once_last: Vec<Vec<String>> = Vec::new();
    let secs = format!("{}", b.opts.secs);
    let reps = format!("{}", b.opts.reps);
    let flat_reps = format!("{}", b.opts.flat_reps);
    if b.opts.section("atomics") {
        once_first.push(vec!["--only".into(), "atomics".into()]);
    }
    let lookups: Vec<&str> = ["W1", "W2", "W3"]
        .into_iter()
        .filter(|w| b.opts.section(w))
        .collect();
    if !lookups.is_empty() {
        let mut sizes: Vec<usize> = SIZES_W1.into_iter().chain(SIZES_W3).collect();
        sizes.sort();
        sizes.dedup();
        sizes.retain(|&n| b.opts.size(n));
        for n in sizes {
            for name in reader_rows().into_iter().filter(|s| b.opts.structure(s)) {
                if name == OursPinned::NAME && !(b.opts.section("W1") || b.opts.section("W2")) {
                    continue;
                }
                jobs.push(vec![
                    "--only".into(),
                    lookups.join(","),
                    "--n".into(),
                    n.to_string(),
                    "--exact".into(),
                    name.into(),
                ]);
            }
        }
    }
    if b.opts.section("W4") {
        for n in SIZES_W4.into_iter().filter(|&n| b.opts.size(n)) {
            for name in ALLOCS.into_iter().filter(|s| b.opts.structure(s)) {
                jobs.push(vec![
                    "--only".into(),
                    "W4".into(),
                    "--n".into(),
                    n.to_string(),
                    "--exact".into(),
                    name.into(),
                ]);
            }
        }
    }
    if b.opts.section("mem") {
        for name in STRUCTS.into_iter().filter(|s| b.opts.structure(s)) {
            once_last.push(vec![
                "--only".into(),
                "mem".into(),
                "--exact".into(),
                name.into(),
            ]);
        }
    }
    let rounds = b.opts.rounds;
    let mut shown = usize::MAX;
    for (round, job) in job_order(&once_first, &jobs, &once_last, rounds) {
        if rounds > 1 && round != shown {
            println!("round {} of {rounds}", round + 1);
            shown = round;
        }
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(job)
            .args([
                "--emit",
                "--no-write",
                "--secs",
                &secs,
                "--reps",
                &reps,
                "--w2-flat-reps",
                &flat_reps,
            ])
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("start a child run");
        let out = child.stdout.take().unwrap();
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let line = line.expect("child output");
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["@@samples", key, list] => {
                    let v = b.samples.entry(key.to_string()).or_default();
                    v.extend(list.split(',').map(|x| x.parse::<f64>().expect("a number")));
                }
                ["@@", key, med, min, max] => {
                    let p = |x: &str| x.parse::<f64>().expect("a number");
                    b.results.insert(
                        key.to_string(),
                        Stat {
                            med: p(med),
                            min: p(min),
                            max: p(max),
                        },
                    );
                }
                ["@@note", key, v] => {
                    b.notes.insert(key.to_string(), v.to_string());
                }
                ["@@fact", key, v] => {
                    b.facts.insert(key.to_string(), v.to_string());
                }
                _ if line.starts_with("  ") => println!("{line}"),
                _ => {}
            }
        }
        let status = child.wait().expect("child run");
        assert!(status.success(), "child run {job:?} failed: {status}");
    }
    for (key, v) in &b.samples {
        b.results.insert(key.clone(), Stat::of(v.clone()));
    }
}

/// The order `children` runs its jobs in, each with its round (from 0): `once_first`, then
/// `jobs` once per round, forwards in even rounds and backwards in odd ones, with
/// `once_last` after the first round's.
fn job_order<'a, J>(
    once_first: &'a [J],
    jobs: &'a [J],
    once_last: &'a [J],
    rounds: usize,
) -> Vec<(usize, &'a J)> {
    let mut order: Vec<(usize, &J)> = once_first.iter().map(|j| (0, j)).collect();
    for round in 0..rounds {
        if round % 2 == 0 {
            order.extend(jobs.iter().map(|j| (round, j)));
        } else {
            order.extend(jobs.iter().rev().map(|j| (round, j)));
        }
        if round == 0 {
            order.extend(once_last.iter().map(|j| (0, j)));
        }
    }
    order
}

fn main() {
    let opts = Opts::parse();
    if let Some(path) = opts.render.clone() {
        let mut b = Bench::new(opts);
        let mut info = load(&path, &mut b);
        info.rendered_from = path.clone();
        b.opts.quick = info.mode == "quick";
        let partial = path.contains("partial") || b.opts.quick;
        if b.opts.out.is_none() && partial {
            b.opts.filter = Some(String::new()); // counts as partial: not BENCHMARKS.md
        }
        write_report(&b, &report(&b, &info));
        return;
    }
    let t_start = Instant::now();
    let mut waited = "no".to_string();
    if let Some(max) = opts.wait_load {
        let deadline = Instant::now() + Duration::from_secs_f64(opts.wait_max_mins * 60.0);
        let w0 = Instant::now();
        while load1() >= max && Instant::now() < deadline {
            println!("load average {} ≥ {max}: waiting", loadavg());
            std::thread::sleep(Duration::from_secs(30));
        }
        waited = format!(
            "{:.0} s for 1-min load < {max} ({})",
            w0.elapsed().as_secs_f64(),
            if load1() < max { "reached" } else { "gave up" }
        );
    }
    let command = format!(
        "cargo run --release -p rcu-rangemap-bench --{}",
        std::env::args()
            .skip(1)
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );
    let started = sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
    let source = source_state();
    let load_start = loadavg();
    println!("{command}\nload average at start: {load_start}");
    let t0 = Instant::now();
    let mut b = Bench::new(opts);
    if b.opts.emit || b.opts.in_process {
        if b.opts.section("atomics") {
            atomics(&mut b);
        }
        lookups_and_churn(&mut b);
        if b.opts.section("W4") {
            w4(&mut b);
        }
        if b.opts.section("mem") {
            mem(&mut b);
        }
    } else {
        children(&mut b);
    }
    if b.opts.emit {
        return;
    }
    let info = RunInfo {
        command,
        mode: if b.opts.quick { "quick" } else { "full" }.into(),
        started,
        load_start,
        load_end: loadavg(),
        waited,
        wall_secs: t0.elapsed().as_secs_f64(),
        reps: b.opts.reps,
        rounds: if b.opts.in_process { 1 } else { b.opts.rounds },
        flat_reps: b.opts.flat_reps,
        secs: b.opts.secs,
        cores: sh("nproc", &[]),
        cpu: cpu_model(),
        kernel: sh("uname", &["-sr"]),
        source,
        rustc: env!("BENCH_RUSTC_VERSION").into(),
        rendered_from: String::new(),
    };
    let results_dir = format!("{}/target/bench-results", repo_root());
    let _ = std::fs::create_dir_all(&results_dir);
    let raw = format!(
        "{results_dir}/last-{}.tsv",
        if b.opts.partial() { "partial" } else { "full" }
    );
    save(&raw, &info, &b);
    println!("raw results in {raw} (re-render with --render {raw})");
    let text = report(&b, &info);
    println!("\nTargets:");
    for t in targets(&b) {
        println!(
            "  {:<16} {:>8} (goal {}{}) {}",
            t.id,
            t.ratio.map_or("—".into(), |r| format!("{r:.2}")),
            if t.at_least { "≥ " } else { "≤ " },
            t.goal,
            match met(&t) {
                None => "not measured",
                Some(true) => "met",
                Some(false) => "MISSED",
            }
        );
    }
    write_report(&b, &text);
    println!(
        "done in {:.0} s (load average at end: {})",
        t_start.elapsed().as_secs_f64(),
        info.load_end
    );
}

fn repo_root() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .display()
        .to_string()
}

fn write_report(b: &Bench, text: &str) {
    if !b.opts.no_write {
        let root = repo_root();
        let path = b.opts.out.clone().unwrap_or_else(|| {
            if b.opts.partial() {
                let dir = format!("{root}/target/bench-results");
                let _ = std::fs::create_dir_all(&dir);
                format!("{dir}/BENCHMARKS-partial.md")
            } else {
                format!("{root}/BENCHMARKS.md")
            }
        });
        std::fs::write(&path, text).expect("write the report");
        println!("wrote {path}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_direction_and_run_the_others_once() {
        let order: Vec<(usize, &&str)> = job_order(&["atomics"], &["a", "b", "c"], &["mem"], 3);
        let got: Vec<String> = order.iter().map(|(r, j)| format!("{r}{j}")).collect();
        assert_eq!(
            got,
            ["0atomics", "0a", "0b", "0c", "0mem", "1c", "1b", "1a", "2a", "2b", "2c"]
        );
        assert_eq!(job_order::<&str>(&[], &["a"], &[], 1).len(), 1);
    }

    #[test]
    fn probes_split_samples_into_near_and_far() {
        assert_eq!(probe_key("W1|1k/1t|x"), None);
        assert_eq!(probe_key("W1|1k/2t|x").as_deref(), Some("probe|W1|1k/2t|x"));
        assert_eq!(
            probe_key("W2|100k/paced/writer|x").as_deref(),
            Some("probe|W2|100k/paced|x")
        );
        assert_eq!(probe_key("W3|10k/1op|x"), None);
        let mut b = Bench::new(Opts::parse_from(&[]));
        b.samples
            .insert("W2|1k/flat/readers|x".into(), vec![1.0, 2.0, 3.0, 4.0]);
        b.samples
            .insert("probe|W2|1k/flat|x".into(), vec![30.0, 200.0, 30.0, 200.0]);
        b.samples.insert(
            "probe-after|W2|1k/flat|x".into(),
            vec![30.0, 200.0, 200.0, 30.0],
        );
        b.samples.insert("W1|1k/1t|x".into(), vec![5.0, 6.0]);
        // Both probes near, both far; the two samples whose probes disagree are in neither.
        assert_eq!(
            split_by_probe(&b, "W2|1k/flat/readers|x", 60.0),
            Some((vec![1.0], vec![2.0]))
        );
        // No probes (one thread): every sample on both sides.
        assert_eq!(
            split_by_probe(&b, "W1|1k/1t|x", 60.0),
            Some((vec![5.0, 6.0], vec![5.0, 6.0]))
        );
        // Probes missing or of another length: no split rather than a wrong one.
        b.samples.get_mut("probe-after|W2|1k/flat|x").unwrap().pop();
        assert_eq!(split_by_probe(&b, "W2|1k/flat/readers|x", 60.0), None);
    }

    #[test]
    fn samples_survive_save_and_load() {
        let path = std::env::temp_dir().join(format!("compare-test-{}.tsv", std::process::id()));
        let path = path.to_str().unwrap();
        let mut b = Bench::new(Opts::parse_from(&[]));
        b.put_samples("W3|10k/1op|x".into(), vec![3.0, 1.0, 2.5, 4.0]);
        let info = RunInfo {
            reps: 2,
            rounds: 2,
            flat_reps: 5,
            secs: 0.4,
            ..RunInfo::default()
        };
        save(path, &info, &b);
        let mut back = Bench::new(Opts::parse_from(&[]));
        let info_back = load(path, &mut back);
        std::fs::remove_file(path).unwrap();
        assert_eq!(back.samples["W3|10k/1op|x"], [3.0, 1.0, 2.5, 4.0]);
        let st = back.get("W3|10k/1op|x").unwrap();
        assert_eq!((st.med, st.min, st.max), (2.75, 1.0, 4.0));
        assert_eq!(info_back.samples(), 4);
        assert!(info_back
            .sampling()
            .starts_with("4 per figure (10 for W2 flat out"));
        // Runs saved before rounds say nothing of them and took `reps` in one go.
        let old = RunInfo {
            reps: 5,
            secs: 0.4,
            ..RunInfo::default()
        };
        assert_eq!(old.samples(), 5);
        assert!(old.sampling().starts_with("5 per figure, 0.40 s each"));
    }
}
