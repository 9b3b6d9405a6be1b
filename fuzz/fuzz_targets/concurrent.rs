//! `concurrent`: 2–3 reader threads run scripted reads while one writer thread applies
//! scripted sessions.
//!
//! Before the threads start, the script is applied to the reference model, giving every
//! version the writer will publish (version 0 is the initial contents; version i is the
//! map after session i commits). The writer counts its commits in `committed` (stored
//! after each commit returns), so a reader knows that an operation it starts after reading
//! `committed == c` sees version c or later, and that one that ends before it reads
//! `committed == c'` saw version c' + 1 or earlier. Checked, in each reader:
//!
//! - **No torn values.** Every value holds a pair `(a, b)` that the writer bumps in two
//!   steps (`a += 1`, a yield, `b += 1`) through `get_mut`; a reader must never see
//!   `a != b`, and a value must not change while a guard is held.
//! - **Linearizable `get`/`try_get`/`get_pinned`.** Each answer (range, id and `a`, or
//!   vacant) is the answer of some version in the window above, and versions seen by one
//!   reader never go back. In particular a key covered in every version is never reported
//!   vacant. `get_pinned` uses the reader's `EpochPin`, held across its operations (and
//!   commits) and renewed only by a scripted `Repin`.
//! - **Iterators** (`iter`, `overlapping`, both directions): each step moves on (forwards,
//!   every range ends after the previous one; backwards, starts before it — ranges of
//!   different versions may overlap), each entry is exactly as in some version of the
//!   window (no stale or half-changed entry), and every entry present unchanged in all
//!   versions of the window is yielded.
//! - **`gaps`** is exactly the gaps of one version of the window.
//!
//! Between sessions the writer may call `shrink_to_fit`, which moves every entry (locking
//! it, as a session does) and rebuilds the tree without changing the version: the checks
//! above hold across it.
//!
//! At the end (main thread): the map holds the last version, and after the map is dropped
//! every value ever created (inserted or cloned by a split) has been dropped exactly once,
//! and never by a reader thread.

#![no_main]

use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

use arbitrary::Arbitrary;
use fuzz_support::{wide, Model};
use libfuzzer_sys::fuzz_target;
use rcu_rangemap::{EpochPin, RangeMap, ReadGuard, TryGetError};

const MAX_INITIAL: usize = 32;
const MAX_SESSIONS: usize = 24;
const MAX_OPS: usize = 16;
const MAX_READS: usize = 32;
/// Reader passes over its script while the writer runs (bounds the run time).
const MAX_PASSES: usize = 200;
/// Serials of values; far more than a run can create (≤ 3 per operation).
const MAX_SERIALS: usize = 8192;

#[derive(Arbitrary, Debug)]
struct Input {
    three_readers: bool,
    /// Bit `i % 32`: the writer calls `RangeMap::shrink_to_fit` after session `i` (every
    /// entry moved, the nodes rebuilt; the version readers see does not change).
    shrink_after: u32,
    initial: Vec<(u8, u8)>,
    sessions: Vec<Vec<WOp>>,
    reads: [Vec<ROp>; 3],
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum WOp {
    Insert {
        a: u8,
        b: u8,
    },
    TryInsert {
        a: u8,
        b: u8,
    },
    Remove {
        a: u8,
        b: u8,
    },
    RemoveEntry {
        k: u8,
    },
    /// `a += 1`, `spin` yields, `b += 1`, through `get_mut`.
    Bump {
        k: u8,
        spin: u8,
    },
    /// Yield inside the session (entries it locked stay locked).
    Yield,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ROp {
    Get {
        k: u8,
    },
    TryGet {
        k: u8,
    },
    Iter {
        rev: bool,
    },
    Overlapping {
        a: u8,
        b: u8,
        rev: bool,
    },
    Gaps {
        a: u8,
        b: u8,
    },
    /// Hold a guard across `spin` yields; the value must not change meanwhile.
    Hold {
        k: u8,
        spin: u8,
    },
    /// `get_pinned` under the reader's long-held pin.
    GetPinned {
        k: u8,
    },
    /// Renew the reader's pin.
    Repin,
}

// ---------------------------------------------------------------------------------------
// Values that account for their drops

static NEXT_SERIAL: AtomicU32 = AtomicU32::new(0);
static DROPPED: [AtomicU8; MAX_SERIALS] = [const { AtomicU8::new(0) }; MAX_SERIALS];

thread_local! {
    static IS_READER: Cell<bool> = const { Cell::new(false) };
}

/// A value: `id` names the insert it comes from (split pieces share it), `serial` this
/// very instance; `(a, *b)` is the pair the writer changes in two steps. `b` lives on the
/// heap so that a reader reaching a value that was moved out and dropped (a removed entry
/// read after its commit) reads freed memory, which AddressSanitizer reports.
#[derive(Debug)]
struct Val {
    id: u32,
    serial: u32,
    a: u64,
    b: Box<u64>,
}

impl Val {
    fn new(id: u32, a: u64) -> Self {
        let serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
        assert!((serial as usize) < MAX_SERIALS, "harness: too many values");
        Val {
            id,
            serial,
            a,
            b: Box::new(a),
        }
    }

    /// `(a, b)` read as a reader sees them, checked untorn.
    fn pair(&self) -> u64 {
        // SAFETY: plain reads of our own fields; volatile so each is really loaded.
        let (a, b) = unsafe {
            (
                std::ptr::read_volatile(&self.a),
                std::ptr::read_volatile(&*self.b),
            )
        };
        assert_eq!(a, b, "torn value: id {} has a={a} b={b}", self.id);
        a
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        Val::new(self.id, self.pair())
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        assert!(
            !IS_READER.with(|r| r.get()),
            "value id {} dropped in a reader thread",
            self.id
        );
        let before = DROPPED[self.serial as usize].fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            before, 0,
            "value serial {} (id {}) dropped twice",
            self.serial, self.id
        );
    }
}

/// What the model records per entry: the id and `a`.
type MVal = (u32, u64);

fn clone_split(v: &MVal, _: Range<u128>, _: u128) -> MVal {
    *v
}

/// Apply one writer op to the model (as `Writer` does it, values cloned on splits).
fn model_apply(m: &mut Model<MVal>, op: &WOp, next_id: &mut u32) {
    match *op {
        WOp::Insert { a, b } if a < b => {
            *next_id += 1;
            m.remove(a.into(), b.into(), &mut clone_split);
            m.insert_free(a.into()..b.into(), (*next_id, 0));
        }
        WOp::TryInsert { a, b } if a < b => {
            *next_id += 1;
            if m.overlapping(a.into(), b.into()).is_empty() {
                m.insert_free(a.into()..b.into(), (*next_id, 0));
            }
        }
        WOp::Remove { a, b } if a <= b => {
            m.remove(a.into(), b.into(), &mut clone_split);
        }
        WOp::RemoveEntry { k } => {
            if let Some((r, _)) = m.at(k.into()) {
                m.m.remove(&r.start);
            }
        }
        WOp::Bump { k, .. } => {
            if let Some((_, v)) = m.at_mut(k.into()) {
                v.1 += 1;
            }
        }
        _ => {}
    }
}

fuzz_target!(|input: Input| run(&input));

fn run(input: &Input) {
    // Reset the drop accounting (inputs run one at a time).
    let created = NEXT_SERIAL.swap(0, Ordering::Relaxed) as usize;
    for d in &DROPPED[..created.min(MAX_SERIALS)] {
        d.store(0, Ordering::Relaxed);
    }

    let initial: Vec<WOp> = input
        .initial
        .iter()
        .take(MAX_INITIAL)
        .map(|&(a, b)| WOp::Insert { a, b })
        .collect();
    let sessions: Vec<&[WOp]> = input
        .sessions
        .iter()
        .take(MAX_SESSIONS)
        .map(|s| &s[..s.len().min(MAX_OPS)])
        .collect();

    // Every version the writer will publish.
    let mut versions: Vec<Model<MVal>> = Vec::with_capacity(sessions.len() + 1);
    let mut m = Model::new(u128::from(u8::MAX));
    let mut next_id = 0u32;
    for op in &initial {
        model_apply(&mut m, op, &mut next_id);
    }
    versions.push(m.clone());
    for s in &sessions {
        for op in s.iter() {
            model_apply(&mut m, op, &mut next_id);
        }
        versions.push(m.clone());
    }
    let always_covered: Vec<bool> = (0..=u8::MAX)
        .map(|k| versions.iter().all(|v| v.at(k.into()).is_some()))
        .collect();

    let map = RangeMap::<u8, Val>::new();
    {
        let mut w = map.write();
        let mut id = 0u32;
        for op in &initial {
            apply(&mut w, op, &mut id);
        }
        w.commit();
        assert_eq!(id, ids_used(&initial));
    }
    let committed = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let readers = if input.three_readers { 3 } else { 2 };

    std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(readers);
        for script in input.reads.iter().take(readers) {
            let script = &script[..script.len().min(MAX_READS)];
            let (map, versions, committed, done, always) =
                (&map, &versions, &committed, &done, &always_covered);
            handles.push(s.spawn(move || {
                IS_READER.with(|r| r.set(true));
                let mut rd = Reader {
                    map,
                    versions,
                    committed,
                    always,
                    lb: 0,
                    pin: EpochPin::new(),
                };
                if script.is_empty() {
                    return;
                }
                for pass in 0..MAX_PASSES {
                    let finished = done.load(Ordering::Acquire);
                    for op in script {
                        rd.read(op);
                    }
                    if finished && pass > 0 {
                        break;
                    }
                }
            }));
        }
        // The writer.
        let mut id = ids_used(&initial);
        for (i, session) in sessions.iter().enumerate() {
            let mut w = map.write();
            for op in session.iter() {
                apply(&mut w, op, &mut id);
            }
            w.commit();
            committed.store(i + 1, Ordering::Release);
            if input.shrink_after >> (i % 32) & 1 == 1 {
                map.shrink_to_fit();
            }
        }
        done.store(true, Ordering::Release);
        // Join explicitly: the scope's implicit join returns once the closures are done,
        // while the threads may still be running their thread-local destructors, whose
        // memory libFuzzer's per-input leak check would then report.
        for h in handles {
            h.join().expect("reader thread panicked");
        }
    });

    // The last version, exactly.
    let last = versions.last().unwrap();
    let got: Vec<(Range<u128>, MVal)> = map
        .iter()
        .map(|g| (wide(&g.range()), (g.id, g.pair())))
        .collect();
    assert_eq!(got, last.entries(), "final contents");
    assert_eq!(map.len(), last.len());
    drop(map);

    let created = NEXT_SERIAL.load(Ordering::Relaxed) as usize;
    for (serial, d) in DROPPED[..created].iter().enumerate() {
        assert_eq!(
            d.load(Ordering::Relaxed),
            1,
            "value serial {serial} dropped {} times",
            d.load(Ordering::Relaxed)
        );
    }
}

/// How many ids `ops` consume (inserts and try-inserts of valid ranges, as in the model).
fn ids_used(ops: &[WOp]) -> u32 {
    ops.iter()
        .filter(|op| matches!(op, WOp::Insert { a, b } | WOp::TryInsert { a, b } if a < b))
        .count() as u32
}

fn apply(w: &mut rcu_rangemap::Writer<'_, u8, Val>, op: &WOp, id: &mut u32) {
    match *op {
        WOp::Insert { a, b } if a < b => {
            *id += 1;
            drop(w.insert(a..b, Val::new(*id, 0)));
        }
        WOp::TryInsert { a, b } if a < b => {
            *id += 1;
            drop(w.try_insert(a..b, Val::new(*id, 0)));
        }
        WOp::Remove { a, b } if a <= b => drop(w.remove(a..b)),
        WOp::RemoveEntry { k } => drop(w.remove_entry(k)),
        WOp::Bump { k, spin } => {
            if let Some((_, v)) = w.get_mut(k) {
                // Two steps, really stored, with time between them.
                // SAFETY: plain writes to a value we borrow mutably.
                unsafe {
                    std::ptr::write_volatile(&mut v.a, v.a + 1);
                    for _ in 0..spin % 4 {
                        std::thread::yield_now();
                    }
                    std::ptr::write_volatile(&mut *v.b, *v.b + 1);
                }
            }
        }
        WOp::Yield => std::thread::yield_now(),
        _ => {}
    }
}

struct Reader<'a> {
    map: &'a RangeMap<u8, Val>,
    versions: &'a [Model<MVal>],
    committed: &'a AtomicUsize,
    always: &'a [bool],
    /// No version before this one can be seen any more.
    lb: usize,
    /// Held across operations for `get_pinned`.
    pin: EpochPin,
}

type Seen = (Range<u128>, MVal);

fn seen(g: &ReadGuard<'_, u8, Val>) -> Seen {
    (wide(&g.range()), (g.id, g.pair()))
}

impl Reader<'_> {
    /// Start an operation: versions before the commit count are gone.
    fn begin(&mut self) {
        self.lb = self.lb.max(self.committed.load(Ordering::Acquire));
    }

    /// The latest version the operation that just ended may have seen.
    fn ub(&self) -> usize {
        (self.committed.load(Ordering::Acquire) + 1).min(self.versions.len() - 1)
    }

    /// The operation saw a version `v` in `lb..=ub` with `pred(v)`; move `lb` to the first.
    fn observe(&mut self, what: &dyn std::fmt::Display, pred: impl Fn(&Model<MVal>) -> bool) {
        let ub = self.ub();
        match (self.lb..=ub).find(|&v| pred(&self.versions[v])) {
            Some(v) => self.lb = v,
            None => panic!(
                "{what}: matches no version in {}..={ub}; versions there: {:#?}",
                self.lb,
                self.versions[self.lb..=ub]
                    .iter()
                    .map(|m| m.entries())
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// `how`'s answer `got` for key `k` is linearizable and never a spurious vacancy.
    fn check_get(&mut self, how: &str, k: u8, got: Option<Seen>) {
        if got.is_none() {
            assert!(
                !self.always[k as usize],
                "{how}({k}): spurious vacant for a key covered in every version"
            );
        }
        self.observe(&format_args!("{how}({k}) = {got:?}"), |m| {
            m.at(k.into()).map(|(r, v)| (r, *v)) == got
        });
    }

    fn read(&mut self, op: &ROp) {
        match *op {
            ROp::Get { k } => {
                self.begin();
                let got = self.map.get(k).map(|g| seen(&g));
                self.check_get("get", k, got);
            }
            ROp::GetPinned { k } => {
                self.begin();
                let got = self.map.get_pinned(k, &self.pin).map(|g| seen(&g));
                self.check_get("get_pinned", k, got);
            }
            ROp::Repin => self.pin.repin(),
            ROp::TryGet { k } => {
                self.begin();
                match self.map.try_get(k).map(|g| seen(&g)) {
                    Ok(got) => self.observe(&format_args!("try_get({k}) = {got:?}"), |m| {
                        m.at(k.into()).map(|(r, v)| (r, *v)).as_ref() == Some(&got)
                    }),
                    Err(TryGetError::Vacant) => {
                        assert!(
                            !self.always[k as usize],
                            "try_get({k}): spurious vacant for a key covered in every version"
                        );
                        self.observe(&format_args!("try_get({k}) = Vacant"), |m| {
                            m.at(k.into()).is_none()
                        })
                    }
                    Err(TryGetError::Locked) => self
                        .observe(&format_args!("try_get({k}) = Locked"), |m| {
                            m.at(k.into()).is_some()
                        }),
                    Err(e) => panic!("try_get({k}): {e:?}"),
                }
            }
            ROp::Iter { rev } => self.walk(0, u8::MAX, rev, true),
            ROp::Overlapping { a, b, rev } => self.walk(a, b, rev, false),
            ROp::Gaps { a, b } => {
                self.begin();
                let got: Vec<Range<u128>> = self.map.gaps(a..b).map(|g| wide(&g)).collect();
                self.observe(&format_args!("gaps({a}..{b}) = {got:?}"), |m| {
                    m.gaps(a.into(), b.into()) == got
                });
            }
            ROp::Hold { k, spin } => {
                self.begin();
                let Some(g) = self.map.get(k) else {
                    assert!(
                        !self.always[k as usize],
                        "get({k}): spurious vacant for a key covered in every version"
                    );
                    self.observe(&format_args!("get({k}) = None"), |m| {
                        m.at(k.into()).is_none()
                    });
                    return;
                };
                let first = seen(&g);
                for _ in 0..spin % 4 {
                    std::thread::yield_now();
                }
                let again = seen(&g);
                assert_eq!(first, again, "entry changed under a read guard");
                drop(g);
                self.observe(&format_args!("held get({k}) = {first:?}"), |m| {
                    m.at(k.into()).map(|(r, v)| (r, *v)).as_ref() == Some(&first)
                });
            }
        }
    }

    /// `overlapping(a..b)` (or `iter()`), forwards or backwards.
    fn walk(&mut self, a: u8, b: u8, rev: bool, whole: bool) {
        self.begin();
        let lb0 = self.lb;
        let map = self.map;
        let it = if whole {
            map.iter()
        } else {
            map.overlapping(a..b)
        };
        let (a128, b128) = (u128::from(a), u128::from(b));
        let mut got: Vec<Seen> = Vec::new();
        let mut step = |rd: &mut Self, g: ReadGuard<'_, u8, Val>| {
            let s = seen(&g);
            drop(g);
            let r = &s.0;
            assert!(
                r.start < b128 && r.end > a128,
                "walk({a}..{b}): {s:?} outside"
            );
            if let Some(prev) = got.last() {
                // Each step yields the entry holding the next key in the version current
                // at that step, so ranges advance; but a range may reach back over keys
                // already passed when a commit changed it between two steps (the walk
                // continues after the last key yielded, not after the old entry).
                let ordered = if rev {
                    r.start < prev.0.start
                } else {
                    r.end > prev.0.end
                };
                assert!(ordered, "walk({a}..{b}, rev={rev}): {s:?} after {prev:?}");
            }
            rd.observe(
                &format_args!("walk({a}..{b}, rev={rev}) yielded {s:?}"),
                |m| m.at(r.start).map(|(mr, v)| (mr, *v)).as_ref() == Some(&s),
            );
            got.push(s);
        };
        if rev {
            for g in it.rev() {
                step(self, g);
            }
        } else {
            for g in it {
                step(self, g);
            }
        }
        // Entries present unchanged (range and id) in every version the walk may have
        // overlapped must have been yielded.
        let ub = self.ub();
        for (r, (id, _)) in self.versions[lb0].overlapping(a128, b128) {
            let stable = self.versions[lb0..=ub]
                .iter()
                .all(|m| m.at(r.start).is_some_and(|(mr, v)| mr == r && v.0 == id));
            if stable {
                assert!(
                    got.iter().any(|(gr, (gid, _))| *gr == r && *gid == id),
                    "walk({a}..{b}, rev={rev}) missed {r:?} id {id}, stable in versions {lb0}..={ub}; got {got:?}"
                );
            }
        }
    }
}
