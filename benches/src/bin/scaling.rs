//! Why does W1 at N = 1k scale less than 2× with two threads? A measurement of how much of
//! the second core our readers lose to writing shared cache lines.
//!
//! A `get` of `rcu_rangemap` writes the count word of the entry it returns (a CAS in, a
//! `fetch_sub` out). With both readers drawing from the same 1,000 entries, a lookup often
//! finds its entry's line modified in the other core's cache: *true* sharing when both
//! threads use the same entry, *false* sharing when they use neighbouring entries that sit
//! in the same 64-byte line. This binary separates the two, and measures what the same
//! writes cost without our code:
//!
//! | row | threads look up | isolates |
//! |---|---|---|
//! | ours, shared keys | each thread: random addresses in all 1,000 ranges (the W1 setup) | W1 as the runner measures it |
//! | ours, disjoint halves | thread 0: ranges 0–499, thread 1: ranges 500–999 | no entry used by both threads (only the boundary line can be shared) |
//! | ours, interleaved | thread 0: even ranges, thread 1: odd ranges | no entry shared, but neighbours in allocation order are on different threads: false sharing only |
//! | counters/32 B, … | 1,000 `AtomicU32`s one per 32 bytes (like a 24-byte entry in a 32-byte block): load, CAS +1, read, `fetch_sub` 1 | the same RMWs without a tree: the machine's cost of shared lines |
//! | counters/64 B, … | the same, one counter per 64-byte line | as above, with no two counters in a line |
//! | BTreeMap (no lock), `ArcSwap<BTreeMap>` | shared keys | the scaling of readers that write nothing shared, in this run |
//!
//! Every row gives lookups (or counter operations) per second, all threads together, with
//! one thread and with two, and the ratio. A one-thread figure uses thread 0's address list
//! of that row (for the disjoint rows: half the ranges), so each ratio compares the same
//! work. Each figure is the median of `--reps` samples (default 5) of `--secs` seconds
//! (default 0.3), after one short warm-up. The samples are taken round-robin — each round
//! takes one one-thread and one two-thread sample of every row — so a change of the
//! machine's load during the run (another build starting) hits all rows alike rather than
//! the rows that happened to run then. The column "pairs" gives the smallest and largest
//! ratio of one two-thread sample to the one-thread sample taken just before it; a wide
//! spread means the run was disturbed. A cache-line hand-over probe (`handover_ns`) runs
//! right before and right after each two-thread sample: on a VM the host may move the two
//! vCPUs nearer or farther apart while the run goes on, and the columns "near" and "far"
//! give the median per-pair ratio over the samples whose two probes were both short or
//! both long.
//! Everything runs in one process; our map is built first, in a fresh heap, with
//! `layout(1000, 1)` as in the runner, and the addresses of the entries' values are printed
//! (the allocation stride and how often two consecutive ranges' values share a line).
//!
//! ```text
//! cargo run --release -p rcu-rangemap-bench --bin scaling [-- [--markdown] [--secs S] [--reps R]]
//! ```
//!
//! `--markdown` prints the table in Markdown as well. A run takes about 35 s. Ratios are
//! only meaningful within one run (the machine's load changes between runs); the load
//! average is printed at the start and the end.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use rcu_rangemap_bench::*;

const N: usize = 1000;
/// Addresses (or counter indices) per thread list, as in the runner.
const ADDRS: usize = 1 << 16;

// ---------------------------------------------------------------------------------------
// Measurement.

/// `lists.len()` threads each run `op` over their own list round and round for `dur`;
/// operations per second, all threads together. The loop is the runner's (`lookup_loop`).
fn run<F: Fn(u64) -> u64 + Sync>(op: &F, lists: &[&[u64]], dur: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(lists.len() + 1);
    std::thread::scope(|sc| {
        let hs: Vec<_> = lists
            .iter()
            .map(|&list| {
                let (stop, barrier) = (&stop, &barrier);
                sc.spawn(move || {
                    barrier.wait();
                    lookup_loop(op, list, stop)
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Row {
    name: String,
    one: f64,
    two: f64,
    /// Smallest and largest ratio of a two-thread sample to the one-thread sample before it.
    pairs: (f64, f64),
    /// Median of those per-pair ratios over the two-thread samples taken with the cores
    /// near (both hand-over probes around the sample at most the limit), with their count.
    near: (Option<f64>, usize),
    /// The same with the cores far (both probes above the limit).
    far: (Option<f64>, usize),
}

struct Cfg {
    dur: Duration,
    reps: usize,
}

/// Takes a list per thread and a duration, returns operations per second.
type Runner<'a> = Box<dyn Fn(&[&[u64]], Duration) -> f64 + 'a>;

/// One experiment: what a thread does per element of its list, and the two lists.
struct Exp<'a> {
    name: String,
    lists: [&'a [u64]; 2],
    run: Runner<'a>,
}

fn exp<'a, F: Fn(u64) -> u64 + Sync + 'a>(name: &str, op: F, lists: [&'a [u64]; 2]) -> Exp<'a> {
    Exp {
        name: name.to_string(),
        lists,
        run: Box::new(move |l, d| run(&op, l, d)),
    }
}

/// Every experiment with thread 0's list alone, then with both lists. Round-robin: each
/// round takes one one-thread and one two-thread sample of every experiment, so a change
/// in the machine's load during the run hits all rows alike. A cache-line hand-over probe
/// ([`handover_ns`]) runs right before and right after each two-thread sample; the
/// returned limit (twice the run's 10th-percentile probe) splits them into near and far.
fn measure(cfg: &Cfg, exps: &[Exp]) -> (Vec<Row>, f64) {
    for e in exps {
        (e.run)(&e.lists[..1], cfg.dur / 4);
        (e.run)(&e.lists, cfg.dur / 4);
    }
    /// One-thread samples, two-thread samples, and the probes around each of the latter.
    type Samples = (Vec<f64>, Vec<f64>, Vec<(f64, f64)>);
    let mut samples: Vec<Samples> = exps.iter().map(|_| Default::default()).collect();
    for round in 0..cfg.reps {
        for (e, (ones, twos, probes)) in exps.iter().zip(&mut samples) {
            ones.push((e.run)(&e.lists[..1], cfg.dur));
            let before = handover_ns(PROBE_HANDOVERS);
            twos.push((e.run)(&e.lists, cfg.dur));
            probes.push((before, handover_ns(PROBE_HANDOVERS)));
        }
        eprintln!("  round {}/{} done", round + 1, cfg.reps);
    }
    let all: Vec<f64> = samples
        .iter()
        .flat_map(|(_, _, p)| p.iter().flat_map(|&(a, b)| [a, b]))
        .collect();
    let limit = Placement::limit(&all).expect("at least one round");
    let rows = exps
        .iter()
        .zip(samples)
        .map(|(e, (ones, twos, probes))| {
            let ratios: Vec<f64> = twos.iter().zip(&ones).map(|(t, o)| t / o).collect();
            let median_in = |class: Placement| {
                let v: Vec<f64> = ratios
                    .iter()
                    .zip(&probes)
                    .filter(|(_, &(a, b))| Placement::of(a, b, limit) == Some(class))
                    .map(|(r, _)| *r)
                    .collect();
                let n = v.len();
                ((n > 0).then(|| median(v)), n)
            };
            Row {
                name: e.name.clone(),
                one: median(ones),
                two: median(twos),
                pairs: (
                    ratios.iter().copied().fold(f64::INFINITY, f64::min),
                    ratios.iter().copied().fold(0.0, f64::max),
                ),
                near: median_in(Placement::Near),
                far: median_in(Placement::Far),
            }
        })
        .collect();
    (rows, limit)
}

/// "1.52× (3)": a class's median per-pair ratio and its number of samples.
fn class(c: (Option<f64>, usize)) -> String {
    match c.0 {
        Some(r) => format!("{r:.2}× ({})", c.1),
        None => "—".into(),
    }
}

fn plain(rows: &[Row]) -> String {
    let mut s = format!(
        "  {:<44} {:>10} {:>10} {:>7}  {:<15} {:>10} {:>10}\n",
        "experiment (N = 1,000), ops/s",
        "1 thread",
        "2 threads",
        "2 ÷ 1",
        "pairs (min–max)",
        "near",
        "far"
    );
    for r in rows {
        s += &format!(
            "  {:<44} {:>10} {:>10} {:>6.2}x  {:<15} {:>10} {:>10}\n",
            r.name,
            mops(r.one),
            mops(r.two),
            r.two / r.one,
            format!("{:.2}–{:.2}", r.pairs.0, r.pairs.1),
            class(r.near),
            class(r.far)
        );
    }
    s
}

fn mops(x: f64) -> String {
    format!("{:.1}M", x / 1e6)
}

// ---------------------------------------------------------------------------------------
// The counter floor: the lookup's writes to its entry, without the tree.

/// A counter laid out like a small entry: count, a sequence word read before the CAS (our
/// `try_read` reads the entry's `seq`), and a value read under the count; 32 bytes.
#[repr(C, align(32))]
struct Slot32 {
    count: AtomicU32,
    seq: AtomicU64,
    value: u64,
}

/// The same, one per 64-byte line.
#[repr(C, align(64))]
struct Slot64 {
    count: AtomicU32,
    seq: AtomicU64,
    value: u64,
}

/// What a lookup does to its entry: read `seq`, CAS the count up (retrying on a changed
/// count, as `EntryLock::try_read`), read the value, `fetch_sub` the count.
#[inline]
fn take_and_release(count: &AtomicU32, seq: &AtomicU64, value: &u64) -> u64 {
    let s = seq.load(Relaxed);
    let mut c = count.load(Acquire);
    loop {
        match count.compare_exchange_weak(c, c + 1, Acquire, Acquire) {
            Ok(_) => break,
            Err(now) => c = now,
        }
    }
    let v = *value ^ s;
    count.fetch_sub(1, Release);
    v
}

// ---------------------------------------------------------------------------------------
// Inputs.

/// `ADDRS` random indices drawn from `pool`.
fn indices(pool: &[u64], seed: u64) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..ADDRS).map(|_| pool[rng.usize(..pool.len())]).collect()
}

/// Where our map put each range's value: the allocation stride of consecutive ranges'
/// entries and how often two consecutive ranges' values share a 64-byte line.
fn entry_placement(s: &Ours, ranges: &[std::ops::Range<u64>]) -> String {
    let addrs: Vec<usize> = ranges
        .iter()
        .map(|r| {
            let g = s.0.get(r.start).expect("a present range");
            &*g as *const u64 as usize
        })
        .collect();
    let mut strides: std::collections::BTreeMap<isize, usize> = Default::default();
    let mut same_line = 0;
    for w in addrs.windows(2) {
        *strides.entry(w[1] as isize - w[0] as isize).or_default() += 1;
        same_line += usize::from(w[0] / 64 == w[1] / 64);
    }
    let mut top: Vec<(isize, usize)> = strides.into_iter().collect();
    top.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
    let lines: std::collections::BTreeSet<usize> = addrs.iter().map(|a| a / 64).collect();
    let pairs = addrs.len() - 1;
    let top3: Vec<String> = top
        .iter()
        .take(3)
        .map(|(d, c)| format!("{d} B: {:.0}%", 100.0 * *c as f64 / pairs as f64))
        .collect();
    format!(
        "value address of range i+1 minus that of range i (most frequent first): {}; \
         values of consecutive ranges on the same 64-byte line: {:.0}% of pairs; the \
         {} values lie on {} distinct lines",
        top3.join(", "),
        100.0 * same_line as f64 / pairs as f64,
        addrs.len(),
        lines.len()
    )
}

// ---------------------------------------------------------------------------------------
// Report.

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
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

fn markdown(rows: &[Row], facts: &[(String, String)]) -> String {
    let mut s = String::new();
    for (k, v) in facts {
        s += &format!("- {k}: {v}\n");
    }
    s += "\n| experiment (N = 1,000) | 1 thread (ops/s) | 2 threads (ops/s) | 2 ÷ 1 | \
          per-pair 2 ÷ 1 (min–max) | per-pair, cores near (samples) | cores far |\n\
          |---|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {:.2}× | {:.2}–{:.2} | {} | {} |\n",
            r.name,
            mops(r.one),
            mops(r.two),
            r.two / r.one,
            r.pairs.0,
            r.pairs.1,
            class(r.near),
            class(r.far)
        );
    }
    s
}

fn usage() -> ! {
    eprintln!("usage: scaling [--markdown] [--secs S] [--reps R]");
    std::process::exit(2)
}

fn main() {
    let mut md = false;
    let mut cfg = Cfg {
        dur: Duration::from_secs_f64(0.3),
        reps: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--markdown" => md = true,
            "--secs" => {
                let s: f64 = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage());
                cfg.dur = Duration::from_secs_f64(s);
            }
            "--reps" => {
                cfg.reps = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&r| r > 0)
                    .unwrap_or_else(|| usage());
            }
            "-h" | "--help" => {
                println!("see the module docs: benches/src/bin/scaling.rs");
                return;
            }
            _ => usage(),
        }
    }
    let t_start = Instant::now();
    let load_start = loadavg();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "scaling: N = {N}, {} samples of {:.2} s per figure; {} ({cpus} CPUs); load average \
         at start {load_start}",
        cfg.reps,
        cfg.dur.as_secs_f64(),
        cpu_model()
    );
    println!("source: {}", env!("BENCH_SOURCE"));

    let ranges = layout(N, 1);
    // Our map first, in a fresh heap.
    let ours = Ours::build(&ranges);
    let placement = entry_placement(&ours, &ranges);
    println!("entries: {placement}");

    // The runner's W1 address lists (`addr_lists` in src/main.rs).
    let shared: Vec<Vec<u64>> = (0..2)
        .map(|t| hit_addresses(&ranges, ADDRS, 0xadd0 + t as u64 + N as u64))
        .collect();
    let (lo_half, hi_half) = ranges.split_at(N / 2);
    let halves = [
        hit_addresses(lo_half, ADDRS, 0x4a1f),
        hit_addresses(hi_half, ADDRS, 0x4a1f + 1),
    ];
    let even: Vec<_> = ranges.iter().step_by(2).cloned().collect();
    let odd: Vec<_> = ranges.iter().skip(1).step_by(2).cloned().collect();
    let interleaved = [
        hit_addresses(&even, ADDRS, 0xe0e0),
        hit_addresses(&odd, ADDRS, 0xe0e0 + 1),
    ];

    // The counters: index lists over all, halves, even / odd.
    let all: Vec<u64> = (0..N as u64).collect();
    let c_shared = [indices(&all, 0xc0), indices(&all, 0xc1)];
    let c_halves = [indices(&all[..N / 2], 0xc2), indices(&all[N / 2..], 0xc3)];
    let evens: Vec<u64> = all.iter().copied().step_by(2).collect();
    let odds: Vec<u64> = all.iter().copied().skip(1).step_by(2).collect();
    let c_inter = [indices(&evens, 0xc4), indices(&odds, 0xc5)];
    let kinds: [(&str, &[Vec<u64>; 2]); 3] = [
        ("shared", &c_shared),
        ("disjoint halves", &c_halves),
        ("interleaved", &c_inter),
    ];
    let slots32: Vec<Slot32> = (0..N)
        .map(|i| Slot32 {
            count: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            value: i as u64,
        })
        .collect();
    let slots64: Vec<Slot64> = (0..N)
        .map(|i| Slot64 {
            count: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            value: i as u64,
        })
        .collect();
    let floor = Floor::build(&ranges);
    let swap = Swap::build(&ranges);
    let lookup = |a: u64| ours.lookup(a);
    let mut exps = vec![
        exp("ours, shared keys (W1)", lookup, [&shared[0], &shared[1]]),
        exp("ours, disjoint halves", lookup, [&halves[0], &halves[1]]),
        exp(
            "ours, interleaved (even / odd ranges)",
            lookup,
            [&interleaved[0], &interleaved[1]],
        ),
    ];

    for (kind, l) in kinds {
        let s32 = &slots32;
        exps.push(exp(
            &format!("counters, one per 32 B, {kind}"),
            move |i: u64| {
                let s = &s32[i as usize];
                take_and_release(&s.count, &s.seq, &s.value)
            },
            [&l[0], &l[1]],
        ));
    }
    for (kind, l) in kinds {
        let s64 = &slots64;
        exps.push(exp(
            &format!("counters, one per 64 B, {kind}"),
            move |i: u64| {
                let s = &s64[i as usize];
                take_and_release(&s.count, &s.seq, &s.value)
            },
            [&l[0], &l[1]],
        ));
    }

    exps.push(exp(
        "BTreeMap (no lock), shared keys",
        |a: u64| floor.lookup(a),
        [&shared[0], &shared[1]],
    ));
    exps.push(exp(
        "ArcSwap<BTreeMap>, shared keys",
        |a: u64| swap.lookup(a),
        [&shared[0], &shared[1]],
    ));

    let (rows, limit) = measure(&cfg, &exps);
    print!("\n{}", plain(&rows));
    println!(
        "near / far: median per-pair ratio of the two-thread samples whose hand-over probes \
         (before and after) were both at most / both above {limit:.0} ns (twice the run's \
         10th percentile), with their number"
    );

    let load_end = loadavg();
    let secs = t_start.elapsed().as_secs_f64();
    println!(
        "\nload average at start {load_start}, at end {load_end} (1/5/15 min; this run's own \
         1–2 threads count in it); {secs:.0} s in all. Ratios compare figures of this run \
         only."
    );
    if md {
        let facts = vec![
            (
                "machine".to_string(),
                format!("{} ({cpus} CPUs)", cpu_model()),
            ),
            (
                "load average (1/5/15 min)".to_string(),
                format!("{load_start} at start, {load_end} at end"),
            ),
            ("source".to_string(), env!("BENCH_SOURCE").to_string()),
            (
                "samples".to_string(),
                format!(
                    "median of {} per figure, {:.2} s each, taken round-robin over the \
                     rows",
                    cfg.reps,
                    cfg.dur.as_secs_f64()
                ),
            ),
            ("entries".to_string(), placement),
            (
                "cores near / far".to_string(),
                format!(
                    "both cache-line hand-over probes around a two-thread sample at most / \
                     both above {limit:.0} ns (twice the run's 10th percentile)"
                ),
            ),
        ];
        println!("\n{}", markdown(&rows, &facts));
    }
}
