//! Replays a real address-space trace (`traces/FORMAT.md`) on `rcu_rangemap` and on a
//! `std::sync::RwLock<BTreeMap>` baseline.
//!
//! ```text
//! cargo run --release --example replay [-- [--trace FILE] [--threads N] [--window W]
//!                                          [--repeat R] [--check]]
//! ```
//!
//! The default trace is the bundled `traces/python-threads.trace` (a Python program with
//! worker threads and 40 subprocesses: 41 processes, 45 threads, 48 068 page faults).
//!
//! # The model
//!
//! One range map per address space, keyed by address, valued by [`Mapping`]: the
//! protection and the offset into the mapped object (every `mmap`/`brk` growth maps its own
//! object from offset 0, so each mapping is file-like and the offset must move with every
//! split — the maps are edited with `insert_with`/`remove_with` and a split closure).
//! `fork` starts a new map holding a copy of the parent's mappings (`RangeMap::clone`,
//! resp. `BTreeMap::clone`), `exec` an empty one.
//! `mmap` is an overwriting insert, `munmap` a remove, `mprotect` removes the mapped parts
//! of its range and re-inserts them relabelled (unmapped parts stay unmapped), `mremap`
//! takes the old range's pieces out and inserts them shifted to the new address (shrink
//! truncates, growth extends the last piece), `brk` maps or unmaps the pages between the
//! old and new break (`old == new` is the initial break: nothing). Lengths are rounded up
//! to 4096. A `fault` is a lookup of its address.
//!
//! # `--check`: validation
//!
//! Replays the trace sequentially on `rcu_rangemap` (the same batched writer sessions as
//! the throughput mode) and on a plain `BTreeMap` reference, and compares every fault's
//! `get` and `try_get` answer (range, protection, object, offset), each session's own
//! length after every event, and each map's full contents after every session. The first
//! difference fails the run with exit status 1 and the trace line. A fault that hits no
//! mapping is fine if the reference misses too. Then one concurrent replay per
//! implementation is run with its answers validated (below).
//!
//! # Throughput mode (default): the epoch scheme
//!
//! The trace is cut into **epochs**: epoch *i* is batch *i* — a maximal run of
//! consecutive address-space events, in trace order, whatever the process — followed by
//! the faults up to the next address-space event. All processes' maps live at once.
//!
//! - **One writer thread** applies batch after batch. A batch is applied as writer
//!   sessions, one per run of consecutive events on the same map (a session per process
//!   per batch, in practice), each committed atomically; after the whole batch the writer
//!   publishes `committed = i + 1`. Each process has its own map and its own sessions,
//!   but one thread drives them all, in trace order: processes' events are interleaved in
//!   the trace, and a writer thread per process (41 here) would only add idle threads on
//!   a small machine.
//! - **`--threads N` reader threads** (default 2) replay the faults: the trace's threads
//!   are dealt to readers round-robin in order of first appearance, each keeping its
//!   faults in trace order. A reader replays the faults of epoch *i* only once
//!   `committed > i`, so every address it looks up is valid at its point in the trace.
//! - **The window** (`--window W`, default 4): the writer may commit batch *k* only once
//!   every reader has finished the faults of epoch *k − W*, i.e. it runs at most *W*
//!   batches ahead of the slowest reader, concurrently with its lookups. A reader of
//!   epoch *i* may thus see batches *i* … *i + W*. Each fault's answer is compared with
//!   the sequential reference's: equal is **exact**; different is **stale** (counted, not
//!   an error) if it is the reference's answer after one of the sessions of the next *W*
//!   batches; different otherwise is **unexpected**, an error (exit status 1). `W = 0`
//!   serialises writer and readers completely.
//!
//! The same replay runs on `RwLock<BTreeMap>` (lookups take the read lock, sessions the
//! write lock) in the same process, alternating with `rcu_rangemap` repeat by repeat, and
//! once more on `rcu_rangemap` with each reader holding one `EpochPin` across an epoch's
//! faults (`rcu_rangemap pinned`: `get_pinned` instead of `get`, same maps and sessions);
//! `--repeat R` sets the repeats (default: enough for about 3 seconds). Reported per
//! implementation: address-space events/s and lookups/s over the wall time of the replay,
//! reader time per lookup (waits for the writer excluded), and for `rcu_rangemap` the
//! lock statistics (`RangeMap::stats`): the share of lookups answered on the lock-free
//! fast path and the fallbacks to the map-wide lock.
//!
//! Three more lines say where the time goes:
//! - **ceiling**: the same replay with no map at all (`bench::Bare`: sessions do nothing,
//!   lookups miss), alternating with the two maps. Its lookups/s is what the epoch scheme
//!   alone allows; the rest of a map's replay time is the map's own work.
//! - **uncontended**: after the repeats, the trace's faults looked up again on one thread
//!   in the maps a replay left: what one lookup of each implementation costs with no
//!   writer and no second reader (`bench::uncontended_ns`).
//! - **writer alone**: the trace's sessions applied on one thread with no reader, on fresh
//!   maps: what the writer's work costs by itself (`bench::writer_alone_us`).
//!
//! Exit status: 0 ok, 1 a validation failure, 2 bad arguments or a bad trace (reported
//! with its line number).

#[path = "replay/bench.rs"]
mod bench;
#[path = "replay/trace.rs"]
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench::{Backend, Bare, Locked, Rcu, RcuPinned, RunResult};
use rcu_rangemap::Stats;
use trace::Plan;

const USAGE: &str =
    "usage: replay [--trace FILE] [--threads N] [--window W] [--repeat R] [--check]";

struct Args {
    trace: PathBuf,
    threads: usize,
    window: usize,
    repeat: Option<usize>,
    check: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        trace: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("traces/python-threads.trace"),
        threads: 2,
        window: 4,
        repeat: None,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match a.as_str() {
            "--trace" => args.trace = PathBuf::from(value("--trace")?),
            "--threads" => {
                args.threads = number("--threads", value("--threads")?)?;
                if args.threads == 0 || args.threads > 256 {
                    return Err("--threads must be 1..=256".into());
                }
            }
            "--window" => {
                args.window = number("--window", value("--window")?)?;
                if args.window > 255 {
                    return Err("--window must be 0..=255".into());
                }
            }
            "--repeat" => {
                let r = number("--repeat", value("--repeat")?)?;
                if r == 0 {
                    return Err("--repeat must be at least 1".into());
                }
                args.repeat = Some(r);
            }
            "--check" => args.check = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Prints to stderr at most once a second.
struct Progress {
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        Progress {
            last: Instant::now(),
        }
    }

    fn tick(&mut self, msg: impl FnOnce() -> String) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            eprintln!("[replay] {}", msg());
            self.last = Instant::now();
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let name = args.trace.display().to_string();
    let bytes = match std::fs::read(&args.trace) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let t0 = Instant::now();
    let plan = match trace::text(bytes)
        .and_then(|text| trace::parse(&text))
        .and_then(|events| Plan::build(&events))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let sessions: usize = plan.batches.iter().map(|b| b.sessions.len()).sum();
    println!(
        "trace {name}: {} processes ({} address spaces), {} threads; {} address-space events \
         in {} batches ({sessions} writer sessions), {} faults (prepared in {:.0?})",
        plan.processes,
        plan.spaces,
        plan.threads.len(),
        plan.events,
        plan.batches.len(),
        plan.faults.len(),
        t0.elapsed()
    );
    if args.check {
        check(&plan, &args)
    } else {
        throughput(&plan, &args)
    }
}

fn check(plan: &Plan, args: &Args) -> ExitCode {
    let t0 = Instant::now();
    let mut progress = Progress::new();
    let lines = plan.lines;
    let report = trace::check(plan, |line| {
        progress.tick(|| format!("check: line {line} of {lines}"))
    });
    match report {
        Ok(r) => println!(
            "sequential check passed in {:.0?}: {} events in {} sessions, {} faults ({} hits, {} \
             misses) — every answer, session length and map content equal to the reference",
            t0.elapsed(),
            r.events,
            r.sessions,
            r.faults,
            r.hits,
            r.misses
        ),
        Err(f) => {
            eprintln!("check FAILED at {f}");
            return ExitCode::from(1);
        }
    }
    let work = bench::split_work(plan, args.threads);
    let mut ok = true;
    for (name, r) in [
        (Rcu::NAME, bench::run::<Rcu>(plan, &work, args.window).0),
        (
            RcuPinned::NAME,
            bench::run::<RcuPinned>(plan, &work, args.window).0,
        ),
        (
            Locked::NAME,
            bench::run::<Locked>(plan, &work, args.window).0,
        ),
    ] {
        println!(
            "concurrent replay on {name} ({} readers, window {}): {} lookups, {} exact, {} stale \
             (writer ahead), {} unexpected",
            work.len(),
            args.window,
            r.lookups,
            r.exact,
            r.stale,
            r.unexpected
        );
        ok &= report_errors(name, &r);
    }
    if ok {
        println!("check passed");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn report_errors(name: &str, r: &RunResult) -> bool {
    if let Some((line, e)) = &r.writer_error {
        eprintln!("{name}: writer FAILED at line {line}: {e}");
    }
    for e in &r.errors {
        eprintln!("{name}: unexpected answer at {e}");
    }
    r.ok()
}

/// Accumulated measurements of one implementation.
#[derive(Default)]
struct Totals {
    run: RunResult,
    runs: usize,
    stats: Stats,
}

fn one<B: Backend>(plan: &Plan, work: &[bench::ReaderWork], window: usize, t: &mut Totals) {
    let (r, spaces) = bench::run::<B>(plan, work, window);
    if let Some(s) = B::stats(&spaces) {
        bench::add_stats(&mut t.stats, &s);
    }
    drop(spaces);
    t.run.add(&r);
    t.runs += 1;
}

fn throughput(plan: &Plan, args: &Args) -> ExitCode {
    let work = bench::split_work(plan, args.threads);
    let mut rcu = Totals::default();
    let mut pinned = Totals::default();
    let mut locked = Totals::default();
    let mut bare = Totals::default();
    // Warm-up, not counted.
    one::<Rcu>(plan, &work, args.window, &mut Totals::default());
    one::<RcuPinned>(plan, &work, args.window, &mut Totals::default());
    one::<Locked>(plan, &work, args.window, &mut Totals::default());
    one::<Bare>(plan, &work, args.window, &mut Totals::default());
    eprintln!(
        "[replay] {} of {} lookups per implementation ({} readers, window {})",
        args.repeat
            .map_or("repeating for about 3 s".to_string(), |r| format!(
                "{r} repeats"
            )),
        plan.faults.len(),
        work.len(),
        args.window
    );
    let t0 = Instant::now();
    let mut progress = Progress::new();
    let mut repeats = 0;
    while match args.repeat {
        Some(r) => repeats < r,
        None => repeats < 5 || t0.elapsed() < Duration::from_secs(3),
    } {
        // Alternate who goes first, so neither always runs on a warm or cold machine.
        if repeats % 2 == 0 {
            one::<Rcu>(plan, &work, args.window, &mut rcu);
            one::<Locked>(plan, &work, args.window, &mut locked);
            one::<RcuPinned>(plan, &work, args.window, &mut pinned);
        } else {
            one::<RcuPinned>(plan, &work, args.window, &mut pinned);
            one::<Locked>(plan, &work, args.window, &mut locked);
            one::<Rcu>(plan, &work, args.window, &mut rcu);
        }
        one::<Bare>(plan, &work, args.window, &mut bare);
        repeats += 1;
        progress.tick(|| format!("{repeats} repeats"));
        if !(rcu.run.ok() && pinned.run.ok() && locked.run.ok()) {
            break;
        }
    }

    let row = |name: &str, t: &Totals, answers: bool| {
        let r = &t.run;
        let secs = r.wall.as_secs_f64().max(1e-9);
        let events = (plan.events * t.runs) as f64;
        let share = |n: u64| {
            if answers {
                format!("{:.2}%", 100.0 * n as f64 / r.lookups.max(1) as f64)
            } else {
                "-".to_string()
            }
        };
        println!(
            "{name:<18} {:>10.0} {:>10.0} {:>9.2} {:>11.2} {:>11.1} {:>9} {:>8} {:>6}",
            events / secs,
            r.lookups as f64 / secs,
            r.wall.as_secs_f64() * 1e3 / t.runs.max(1) as f64,
            r.writer_busy.as_secs_f64() * 1e6 / events.max(1.0),
            r.busy.as_nanos() as f64 / r.lookups.max(1) as f64,
            share(r.exact),
            share(r.stale),
            if answers {
                r.unexpected.to_string()
            } else {
                "-".to_string()
            }
        );
        (events / secs, r.lookups as f64 / secs)
    };
    println!(
        "{repeats} repeats each, 1 writer + {} reader threads, writer window {} batches",
        work.len(),
        args.window
    );
    println!(
        "{:<18} {:>10} {:>10} {:>9} {:>11} {:>11} {:>9} {:>8} {:>6}",
        "implementation",
        "events/s",
        "lookups/s",
        "ms/replay",
        "writer us/ev",
        "reader ns/lk",
        "exact",
        "stale",
        "errors"
    );
    let (ours_ev, ours) = row(Rcu::NAME, &rcu, Rcu::ANSWERS);
    let (pinned_ev, pinned_lk) = row(RcuPinned::NAME, &pinned, RcuPinned::ANSWERS);
    let (base_ev, base) = row(Locked::NAME, &locked, Locked::ANSWERS);
    let (_, ceiling) = row(Bare::NAME, &bare, Bare::ANSWERS);
    for (name, lk, ev) in [
        (Rcu::NAME, ours, ours_ev),
        (RcuPinned::NAME, pinned_lk, pinned_ev),
    ] {
        println!(
            "ratio {name} / {}: lookups/s {:.2}x (target >= 1.5x), events/s {:.2}x",
            Locked::NAME,
            lk / base,
            ev / base_ev
        );
    }
    let per_replay = |t: &Totals| t.run.wall.as_secs_f64() * 1e3 / t.runs.max(1) as f64;
    println!(
        "ceiling: with no map at all the scheme alone allows {:.1}x the baseline's lookups/s; \
         of each replay's {:.2} ms ({}) and {:.2} ms ({}), {:.2} ms is the scheme's and the \
         rest the map's own work (lookups, sessions, their cache misses)",
        ceiling / base,
        per_replay(&rcu),
        Rcu::NAME,
        per_replay(&locked),
        Locked::NAME,
        per_replay(&bare)
    );
    let (_, ours_spaces) = bench::run::<Rcu>(plan, &work, args.window);
    let (_, base_spaces) = bench::run::<Locked>(plan, &work, args.window);
    println!(
        "uncontended: the same faults looked up again on one thread, in the maps a replay \
         left (no writer, no second reader), median of 11 passes: {} {:.1} ns, {} {:.1} ns \
         (one pin per pass), {} {:.1} ns per lookup",
        Rcu::NAME,
        bench::uncontended_ns::<Rcu>(plan, &ours_spaces, 11),
        RcuPinned::NAME,
        bench::uncontended_ns::<RcuPinned>(plan, &ours_spaces, 11),
        Locked::NAME,
        bench::uncontended_ns::<Locked>(plan, &base_spaces, 11)
    );
    match (
        bench::writer_alone_us::<Rcu>(plan, 11),
        bench::writer_alone_us::<Locked>(plan, 11),
    ) {
        (Ok(ours), Ok(base)) => println!(
            "writer alone: the sessions applied on one thread with no reader, on fresh maps, \
             median of 11 passes: {} {ours:.2} us, {} {base:.2} us per event",
            Rcu::NAME,
            Locked::NAME,
        ),
        (Err((line, e)), _) | (_, Err((line, e))) => {
            eprintln!("writer alone FAILED at line {line}: {e}");
            return ExitCode::from(1);
        }
    }
    let s = &rcu.stats;
    let lookups = s.success + s.miss + s.abort;
    println!(
        "{} lock stats ({lookups} lookups): fast path at once {:.3}% ({} hits + {} misses); \
         refused: {} (entry locked by a session, or reader limit), of which {} granted after \
         waiting for the session without a lock and {} on the slow path under the map-wide \
         lock; fast-path restarts (entry removed or replaced meanwhile): {}",
        Rcu::NAME,
        100.0 * (s.success + s.miss) as f64 / lookups.max(1) as f64,
        s.success,
        s.miss,
        s.abort,
        s.waited,
        s.slow,
        s.retry
    );
    let ok = report_errors(Rcu::NAME, &rcu.run)
        & report_errors(RcuPinned::NAME, &pinned.run)
        & report_errors(Locked::NAME, &locked.run);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
