//! Where does W2's writer spend its time beside readers? (The W2-writer targets: ours'
//! writer ≥ 1× SkipMap's, each with two readers, three threads on two cores.)
//!
//! Runs W2's churn (one-op sessions: remove a range, re-insert it) flat out on one thread,
//! with `--readers R` threads looking up in the same structure (or, with `--elsewhere`, in
//! another copy of it, which shares no line with the writer's), for our map and
//! `crossbeam SkipMap` alternately, and reports per repetition:
//!
//! | column | from |
//! |---|---|
//! | sessions/s | the writer's count over the wall time |
//! | cpu %, queue % | the writer's time on a CPU and waiting for one (`/proc/thread-self/schedstat`) |
//! | sleeps/s | the writer's voluntary context switches (`/proc/thread-self/status`): blocking on a lock, parking |
//! | cpu ns/session | the writer's CPU time per session: its cost, whatever share of the CPU the scheduler gave it |
//! | readers M/s | lookups of all readers together |
//! | heap MiB | bytes the process holds afterwards, structure still alive (a counting allocator) |
//! | hand-over ns | a cache-line hand-over probe (`handover_ns`) right before and right after: where the host had the two vCPUs (`benches/analysis.md`, "Rounds") |
//!
//! and at the end the medians, with ours' writer ÷ SkipMap's writer of each repetition.
//! Linux only (it reads `/proc`).
//!
//! ```text
//! cargo run --release -p rcu-rangemap-bench --bin writer_cpu [-- [--n N] [--readers R] [--secs S] [--reps K] [--ops K] [--elsewhere]]
//! ```

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use rcu_rangemap_bench::*;

/// Counts the bytes the process holds (switched on at the start of `main`).
#[global_allocator]
static GLOBAL: Counting = Counting;

/// The calling thread's scheduler counters.
#[derive(Clone, Copy)]
struct Sched {
    /// Nanoseconds on a CPU.
    cpu_ns: u64,
    /// Nanoseconds runnable but waiting for a CPU.
    queue_ns: u64,
    /// Voluntary context switches.
    sleeps: u64,
}

impl Sched {
    fn now() -> Sched {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
            .expect("writer_cpu needs Linux's /proc/thread-self/schedstat");
        let mut f = stat.split_whitespace().map(|x| x.parse::<u64>().unwrap());
        let (cpu_ns, queue_ns) = (f.next().unwrap(), f.next().unwrap());
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let sleeps = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        Sched {
            cpu_ns,
            queue_ns,
            sleeps,
        }
    }
    fn since(self, start: Sched) -> Sched {
        Sched {
            cpu_ns: self.cpu_ns - start.cpu_ns,
            queue_ns: self.queue_ns - start.queue_ns,
            sleeps: self.sleeps - start.sleeps,
        }
    }
}

/// One repetition's figures for one structure.
struct Sample {
    sessions_per_s: f64,
    cpu_share: f64,
    queue_share: f64,
    sleeps_per_s: f64,
    cpu_ns_per_session: f64,
    lookups_per_s: f64,
    heap_mib: f64,
    /// Cache-line hand-over probes ([`handover_ns`]) right before and right after, ns.
    probes: (f64, f64),
}

struct Opts {
    n: usize,
    readers: usize,
    secs: f64,
    reps: usize,
    elsewhere: bool,
    /// Distinct churn operations the writer cycles through (the runner's W2 uses 16,384).
    ops: usize,
}

/// The writer churning `s` for `secs`, beside `opts.readers` threads reading `read`.
fn sample<S: Concurrent>(s: &S, read: &S, ranges: &[Range<u64>], opts: &Opts) -> Sample {
    let addrs: Vec<Vec<u64>> = (0..opts.readers)
        .map(|t| hit_addresses(ranges, 1 << 16, 0xadd0 + t as u64))
        .collect();
    let ops = churn_ops(ranges, opts.ops, 7);
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(opts.readers + 2);
    let (stop, barrier, ops) = (&stop, &barrier, &ops);
    std::thread::scope(|sc| {
        let readers: Vec<_> = addrs
            .iter()
            .map(|list| {
                sc.spawn(move || {
                    barrier.wait();
                    lookup_loop(&|a| read.lookup(a), list, stop)
                })
            })
            .collect();
        let writer = sc.spawn(move || {
            barrier.wait();
            let start = Sched::now();
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                s.churn(std::slice::from_ref(&ops[n as usize % ops.len()]));
                n += 1;
            }
            (n, Sched::now().since(start))
        });
        barrier.wait();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(opts.secs));
        stop.store(true, Relaxed);
        let (sessions, w) = writer.join().unwrap();
        let lookups: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
        let wall = t0.elapsed().as_secs_f64();
        Sample {
            sessions_per_s: sessions as f64 / wall,
            cpu_share: w.cpu_ns as f64 / 1e9 / wall,
            queue_share: w.queue_ns as f64 / 1e9 / wall,
            sleeps_per_s: w.sleeps as f64 / wall,
            cpu_ns_per_session: w.cpu_ns as f64 / sessions.max(1) as f64,
            lookups_per_s: lookups as f64 / wall,
            heap_mib: counting::NET_BYTES.load(Relaxed) as f64 / (1 << 20) as f64,
            probes: (0.0, 0.0),
        }
    })
}

/// A fresh structure (and, with `--elsewhere`, a second one for the readers), one sample.
/// The hand-over probes around the sample go in `probes`.
fn one<S: Concurrent>(ranges: &[Range<u64>], opts: &Opts) -> Sample {
    let s = S::build(ranges);
    let other = opts.elsewhere.then(|| S::build(ranges));
    let before = handover_ns(PROBE_HANDOVERS);
    let mut x = sample(&s, other.as_ref().unwrap_or(&s), ranges, opts);
    x.probes = (before, handover_ns(PROBE_HANDOVERS));
    x
}

fn print_row(name: &str, x: &Sample) {
    println!(
        "| {name} | {:.0}k | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {:.0} / {:.0} |",
        x.sessions_per_s / 1e3,
        x.cpu_share * 100.0,
        x.queue_share * 100.0,
        x.sleeps_per_s,
        x.cpu_ns_per_session,
        x.lookups_per_s / 1e6,
        x.heap_mib,
        x.probes.0,
        x.probes.1
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn parse() -> Opts {
    let mut o = Opts {
        n: 100_000,
        readers: 2,
        secs: 1.0,
        reps: 3,
        elsewhere: false,
        ops: 1 << 16,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--n" => o.n = val().parse().expect("--n N"),
            "--readers" => o.readers = val().parse().expect("--readers R"),
            "--secs" => o.secs = val().parse().expect("--secs S"),
            "--reps" => o.reps = val().parse().expect("--reps K"),
            "--elsewhere" => o.elsewhere = true,
            "--ops" => o.ops = val().parse().expect("--ops K"),
            _ => panic!(
                "usage: writer_cpu [--n N] [--readers R] [--secs S] [--reps K] [--ops K] \
                 [--elsewhere]"
            ),
        }
    }
    assert!(
        o.reps > 0 && o.secs > 0.0 && o.ops > 0,
        "--reps, --secs and --ops must be positive"
    );
    o
}

fn main() {
    counting::COUNTING.store(true, Relaxed);
    let opts = parse();
    let ranges = layout(opts.n, 1);
    println!(
        "W2 writer beside {} reader(s) {}, N = {}, {} distinct churn ops, {} s per sample, \
         {} repetitions",
        opts.readers,
        if opts.elsewhere {
            "on another copy"
        } else {
            "on the same structure"
        },
        opts.n,
        opts.ops,
        opts.secs,
        opts.reps
    );
    println!("| structure | sessions/s | cpu % | queue % | sleeps/s | cpu ns/session | readers M/s | heap MiB | hand-over ns before / after |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let (mut ours, mut skip) = (Vec::new(), Vec::new());
    for _ in 0..opts.reps {
        let a = one::<Ours>(&ranges, &opts);
        print_row(Ours::NAME, &a);
        let b = one::<Skip>(&ranges, &opts);
        print_row(Skip::NAME, &b);
        ours.push(a);
        skip.push(b);
    }
    let ratio = median(
        ours.iter()
            .zip(&skip)
            .map(|(a, b)| a.sessions_per_s / b.sessions_per_s)
            .collect(),
    );
    let med = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
    println!(
        "medians: cpu ns/session {:.0} (ours) vs {:.0} (SkipMap); sleeps/s {:.0} vs {:.0}; \
         ours' writer ÷ SkipMap's writer {ratio:.2}",
        med(&ours, |x| x.cpu_ns_per_session),
        med(&skip, |x| x.cpu_ns_per_session),
        med(&ours, |x| x.sleeps_per_s),
        med(&skip, |x| x.sleeps_per_s),
    );
}
