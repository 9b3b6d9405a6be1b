//! The concurrent replay: one writer thread applies the trace's address-space events in
//! batches while reader threads replay its faults as lookups, epoch by epoch (the scheme
//! is described in `examples/replay.rs`). Generic over the map implementation, so
//! `rcu_rangemap` and the `RwLock<BTreeMap>` baseline run the very same replay.

#![allow(dead_code)] // each includer uses a different part

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use rcu_rangemap::{EpochPin, Stats};

use crate::trace::{
    apply_ref_one, apply_session_map, Action, Judged, Mapping, Plan, RefSpace, Session, Space, Step,
};

/// A map implementation under replay: one `Space` per process address space.
pub trait Backend {
    const NAME: &'static str;
    /// Whether its answers are compared with the reference (`false` only for [`Bare`],
    /// which answers nothing).
    const ANSWERS: bool = true;
    type Space: Send + Sync;
    fn new_space() -> Self::Space;
    /// One writer session: the steps of `session` on `spaces[session.space]`.
    fn apply_session(
        spaces: &[Self::Space],
        steps: &[Step],
        session: &Session,
    ) -> Result<(), (u32, String)>;
    /// What a reader holds across one epoch's lookups (`()` if nothing).
    type Pin;
    /// Taken by a reader before an epoch's lookups, dropped after them.
    fn pin() -> Self::Pin;
    /// A fault: the mapping holding `addr`, copied out of the (read-locked) map.
    fn lookup(space: &Self::Space, addr: u64, pin: &Self::Pin) -> Option<(Range<u64>, Mapping)>;
    /// Lock statistics summed over `spaces`, if the implementation keeps them.
    fn stats(_spaces: &[Self::Space]) -> Option<Stats> {
        None
    }
}

/// `rcu_rangemap::RangeMap`: lookups are `get` (lock-free fast path, one epoch pin per
/// lookup). A space's map is created by its Create/Fork step (`RangeMap::new`, or
/// `RangeMap::clone` of the parent), so spaces start unset.
pub struct Rcu;

impl Backend for Rcu {
    const NAME: &'static str = "rcu_rangemap";
    type Space = Space;
    type Pin = ();

    fn pin() {}

    fn new_space() -> Space {
        OnceLock::new()
    }

    fn apply_session(
        spaces: &[Space],
        steps: &[Step],
        session: &Session,
    ) -> Result<(), (u32, String)> {
        apply_session_map(spaces, steps, session)
    }

    /// A space not created yet answers a miss (the epoch scheme never looks one up: a
    /// fault's space is created in its epoch's batch or before).
    #[inline]
    fn lookup(space: &Space, addr: u64, _: &()) -> Option<(Range<u64>, Mapping)> {
        space.get()?.get(addr).map(|g| (g.range(), *g))
    }

    fn stats(spaces: &[Space]) -> Option<Stats> {
        let mut t = Stats::default();
        for s in spaces.iter().filter_map(OnceLock::get) {
            add_stats(&mut t, &s.stats());
        }
        Some(t)
    }
}

/// [`Rcu`] with one `EpochPin` per reader per epoch: lookups are `get_pinned`, in
/// whichever process's map, so the epoch's lookups share one pin (one fence) instead of
/// taking one each. Same maps, same sessions, same answers.
pub struct RcuPinned;

impl Backend for RcuPinned {
    const NAME: &'static str = "rcu_rangemap pinned";
    type Space = Space;
    type Pin = EpochPin;

    fn pin() -> EpochPin {
        EpochPin::new()
    }

    fn new_space() -> Space {
        Rcu::new_space()
    }

    fn apply_session(
        spaces: &[Space],
        steps: &[Step],
        session: &Session,
    ) -> Result<(), (u32, String)> {
        Rcu::apply_session(spaces, steps, session)
    }

    #[inline]
    fn lookup(space: &Space, addr: u64, pin: &EpochPin) -> Option<(Range<u64>, Mapping)> {
        space.get()?.get_pinned(addr, pin).map(|g| (g.range(), *g))
    }

    fn stats(spaces: &[Space]) -> Option<Stats> {
        Rcu::stats(spaces)
    }
}

/// The baseline: the reference model behind `std::sync::RwLock` (a `BTreeMap` of
/// ranges); lookups take the read lock, sessions the write lock.
pub struct Locked;

impl Backend for Locked {
    const NAME: &'static str = "RwLock<BTreeMap>";
    type Space = RwLock<RefSpace>;
    type Pin = ();

    fn pin() {}

    fn new_space() -> RwLock<RefSpace> {
        RwLock::new(RefSpace::default())
    }

    fn apply_session(
        spaces: &[RwLock<RefSpace>],
        steps: &[Step],
        session: &Session,
    ) -> Result<(), (u32, String)> {
        let poisoned = |line| (line, "lock poisoned".to_string());
        let first = steps[session.steps.start].line;
        let mut sp = spaces[session.space as usize]
            .write()
            .map_err(|_| poisoned(first))?;
        for step in &steps[session.steps.clone()] {
            match &step.action {
                Action::Create => {}
                Action::Fork { parent } => {
                    if let Some(p) = parent {
                        *sp = spaces[*p as usize]
                            .read()
                            .map_err(|_| poisoned(step.line))?
                            .clone();
                    }
                }
                action => apply_ref_one(&mut sp, action),
            }
        }
        Ok(())
    }

    #[inline]
    fn lookup(space: &RwLock<RefSpace>, addr: u64, _: &()) -> Option<(Range<u64>, Mapping)> {
        let sp = space.read().unwrap_or_else(|e| e.into_inner());
        sp.lookup(addr).map(|(r, v)| (r, *v))
    }
}

/// No map at all: sessions do nothing and every lookup misses. Its replay costs only the
/// epoch scheme (the thread handoffs and waits, reading the fault list), so its
/// lookups/s is the ceiling no map implementation can pass under this scheme, and
/// what a real map's replay takes beyond it is that map's own work.
pub struct Bare;

impl Backend for Bare {
    const NAME: &'static str = "no map (ceiling)";
    const ANSWERS: bool = false;
    type Space = ();
    type Pin = ();

    fn pin() {}

    fn new_space() {}

    fn apply_session(_: &[()], _: &[Step], _: &Session) -> Result<(), (u32, String)> {
        Ok(())
    }

    #[inline]
    fn lookup(_: &(), addr: u64, _: &()) -> Option<(Range<u64>, Mapping)> {
        // Keeps the address load (the fault list is read as by the real maps).
        std::hint::black_box(addr);
        None
    }
}

/// One reader thread's share of the faults: indices into `Plan::faults`, grouped by
/// epoch (`faults[offsets[i]..offsets[i + 1]]` belong to epoch `i`).
#[derive(Clone, Debug, Default)]
pub struct ReaderWork {
    pub faults: Vec<u32>,
    pub offsets: Vec<u32>,
}

/// Spreads the trace's threads over `readers` reader threads: the k-th distinct tid (in
/// order of first appearance) goes to reader `k % readers`; a tid's faults keep their
/// trace order.
pub fn split_work(plan: &Plan, readers: usize) -> Vec<ReaderWork> {
    let readers = readers.max(1);
    let reader_of: std::collections::HashMap<u32, usize> = plan
        .threads
        .iter()
        .enumerate()
        .map(|(k, &tid)| (tid, k % readers))
        .collect();
    let mut work = vec![ReaderWork::default(); readers];
    let mut next = 0;
    for epoch in 0..plan.batches.len() {
        for w in &mut work {
            w.offsets.push(w.faults.len() as u32);
        }
        while next < plan.faults.len() && plan.faults[next].epoch as usize == epoch {
            work[reader_of[&plan.faults[next].tid]]
                .faults
                .push(next as u32);
            next += 1;
        }
    }
    for w in &mut work {
        w.offsets.push(w.faults.len() as u32);
    }
    work
}

/// What one replay measured and saw.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// From the start signal to the last thread's finish.
    pub wall: Duration,
    /// Summed over readers: time spent inside epochs doing lookups (waits excluded).
    pub busy: Duration,
    /// The writer's time applying batches (waits excluded).
    pub writer_busy: Duration,
    pub lookups: u64,
    pub hits: u64,
    /// Answers equal to the sequential reference's.
    pub exact: u64,
    /// Answers that differ from the reference because the writer was up to `window`
    /// batches ahead and one of those batches changed the mapping (legitimate).
    pub stale: u64,
    /// Answers that differ although no batch the reader could see changed the mapping:
    /// errors.
    pub unexpected: u64,
    /// The first few unexpected answers, with their trace lines.
    pub errors: Vec<String>,
    /// The writer's failure, if a session could not be applied.
    pub writer_error: Option<(u32, String)>,
}

impl RunResult {
    pub fn add(&mut self, o: &RunResult) {
        self.wall += o.wall;
        self.busy += o.busy;
        self.writer_busy += o.writer_busy;
        self.lookups += o.lookups;
        self.hits += o.hits;
        self.exact += o.exact;
        self.stale += o.stale;
        self.unexpected += o.unexpected;
        for e in &o.errors {
            if self.errors.len() < 5 {
                self.errors.push(e.clone());
            }
        }
        if self.writer_error.is_none() {
            self.writer_error.clone_from(&o.writer_error);
        }
    }

    pub fn ok(&self) -> bool {
        self.unexpected == 0 && self.writer_error.is_none()
    }
}

/// A counter on its own cache line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicUsize);

fn wait_until(mut ready: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < 64 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            // More threads than cores is the normal case here: let the others run.
            std::thread::yield_now();
        }
    }
}

/// Replays `plan` once on fresh spaces of backend `B`: one writer thread, one reader
/// thread per `work` entry, the writer at most `window` batches ahead of the slowest
/// reader. Returns the measurements and the spaces (for their statistics; dropping them
/// is left to the caller, outside the timing).
pub fn run<B: Backend>(
    plan: &Plan,
    work: &[ReaderWork],
    window: usize,
) -> (RunResult, Vec<B::Space>) {
    let spaces: Vec<B::Space> = (0..plan.spaces).map(|_| B::new_space()).collect();
    let epochs = plan.batches.len();
    // Batches committed so far (batch i is visible once committed > i).
    let committed = Padded::default();
    // Per reader: epochs whose faults it has finished.
    let done: Vec<Padded> = work.iter().map(|_| Padded::default()).collect();
    let abort = AtomicBool::new(false);
    let barrier = Barrier::new(work.len() + 2);
    let result = Mutex::new(RunResult::default());

    let mut start = Instant::now();
    let mut ends: Vec<Instant> = Vec::new();
    std::thread::scope(|s| {
        let (spaces, committed, done, abort, barrier, result) =
            (&spaces, &committed, &done, &abort, &barrier, &result);
        let writer = s.spawn(move || {
            barrier.wait();
            let mut busy = Duration::ZERO;
            for (k, batch) in plan.batches.iter().enumerate() {
                if k > window {
                    wait_until(|| {
                        abort.load(Ordering::Relaxed)
                            || done
                                .iter()
                                .all(|d| d.0.load(Ordering::Acquire) >= k - window)
                    });
                }
                let t0 = Instant::now();
                for session in &batch.sessions {
                    if let Err(e) = B::apply_session(spaces, &plan.steps, session) {
                        result.lock().unwrap().writer_error = Some(e);
                        abort.store(true, Ordering::Relaxed);
                        committed.0.store(usize::MAX, Ordering::Release);
                        return Instant::now();
                    }
                }
                busy += t0.elapsed();
                // Release: readers that see the count see the batch's sessions (each of
                // which was published by its own commit anyway).
                committed.0.store(k + 1, Ordering::Release);
            }
            result.lock().unwrap().writer_busy = busy;
            Instant::now()
        });
        let readers: Vec<_> = work
            .iter()
            .zip(done)
            .map(|(w, done)| {
                s.spawn(move || {
                    barrier.wait();
                    let mut r = RunResult::default();
                    for epoch in 0..epochs {
                        let mine =
                            &w.faults[w.offsets[epoch] as usize..w.offsets[epoch + 1] as usize];
                        if !mine.is_empty() {
                            wait_until(|| committed.0.load(Ordering::Acquire) > epoch);
                            let t0 = Instant::now();
                            let pin = B::pin();
                            for &i in mine {
                                let f = &plan.faults[i as usize];
                                let got = B::lookup(&spaces[f.space as usize], f.addr, &pin);
                                r.lookups += 1;
                                r.hits += u64::from(got.is_some());
                                if !B::ANSWERS {
                                    continue;
                                }
                                match plan.may_answer(f, &got, window) {
                                    Judged::Exact => r.exact += 1,
                                    Judged::Stale => r.stale += 1,
                                    Judged::Unexpected => {
                                        r.unexpected += 1;
                                        if r.errors.len() < 5 {
                                            r.errors.push(format!(
                                                "line {}: fault at {:#x} answered {got:x?}, \
                                                 expected {:x?} (or what a session of the next \
                                                 {window} batches leaves there)",
                                                f.line, f.addr, f.expected
                                            ));
                                        }
                                    }
                                }
                            }
                            drop(pin);
                            r.busy += t0.elapsed();
                        }
                        // Release: pairs with the writer's Acquire; our lookups of this
                        // epoch are over before it may run further ahead.
                        done.0.store(epoch + 1, Ordering::Release);
                    }
                    let end = Instant::now();
                    result.lock().unwrap().add(&r);
                    end
                })
            })
            .collect();
        barrier.wait();
        start = Instant::now();
        ends.push(writer.join().expect("writer thread panicked"));
        for r in readers {
            ends.push(r.join().expect("reader thread panicked"));
        }
    });
    let mut result = result.into_inner().unwrap();
    result.wall = ends
        .iter()
        .max()
        .map_or(Duration::ZERO, |e| e.saturating_duration_since(start));
    (result, spaces)
}

/// Adds `b` into `a`.
pub fn add_stats(a: &mut Stats, b: &Stats) {
    a.success += b.success;
    a.abort += b.abort;
    a.retry += b.retry;
    a.miss += b.miss;
    a.slow += b.slow;
    a.waited += b.waited;
}

/// Nanoseconds per lookup when the trace's faults are looked up again, in trace order, on
/// one thread, in `spaces` as a replay left them: no writer, no second reader, warm
/// caches. What a lookup of `B` costs when nothing contends with it. (Faults whose
/// mapping is gone by the end are misses here: both implementations answer the same.)
/// The median of `passes` timed passes, after one untimed pass (which warms the caches
/// and, for `rcu_rangemap`, lets this thread's first epoch pins collect the garbage the
/// replay left). A pass takes one `B::pin()` for all its lookups.
pub fn uncontended_ns<B: Backend>(plan: &Plan, spaces: &[B::Space], passes: usize) -> f64 {
    let pass = || {
        let t0 = Instant::now();
        let pin = B::pin();
        for f in &plan.faults {
            std::hint::black_box(B::lookup(&spaces[f.space as usize], f.addr, &pin));
        }
        drop(pin);
        t0.elapsed().as_nanos() as f64 / plan.faults.len().max(1) as f64
    };
    pass();
    median((0..passes.max(1)).map(|_| pass()).collect())
}

/// The median of `xs` (not empty).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Microseconds per address-space event when `plan`'s sessions are applied on one thread
/// with no reader at all, on fresh spaces each pass: what the writer's work costs alone.
/// The median of `passes` timed passes after one untimed pass; the spaces are dropped
/// outside the timing. The first writer error, if any, with its trace line.
pub fn writer_alone_us<B: Backend>(plan: &Plan, passes: usize) -> Result<f64, (u32, String)> {
    let pass = || {
        let spaces: Vec<B::Space> = (0..plan.spaces).map(|_| B::new_space()).collect();
        let t0 = Instant::now();
        measured_writer::<B>(plan, &spaces)?;
        let us = t0.elapsed().as_secs_f64() * 1e6 / plan.events.max(1) as f64;
        drop(spaces);
        Ok(us)
    };
    pass()?;
    let us = (0..passes.max(1))
        .map(|_| pass())
        .collect::<Result<Vec<f64>, _>>()?;
    Ok(median(us))
}

/// Every session of `plan`, in order, on `spaces`. Out of line and named `measured_*`, so
/// `valgrind --tool=callgrind --toggle-collect='*measured_*'` counts only the sessions.
#[inline(never)]
fn measured_writer<B: Backend>(plan: &Plan, spaces: &[B::Space]) -> Result<(), (u32, String)> {
    for batch in &plan.batches {
        for session in &batch.sessions {
            B::apply_session(spaces, &plan.steps, session)?;
        }
    }
    Ok(())
}
