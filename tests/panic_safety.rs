//! Panic safety: values whose `Clone` panics on demand, split closures that panic, user
//! code that panics inside a session, and the documented `# Panics` of bad arguments.
//!
//! After each panic the map must stay usable and consistent: `get`, `try_get`, `iter`,
//! `gaps` and `len` agree with each other, no key is left `Locked` with no session
//! active, a new session works, and — checked once the map is dropped — every value
//! created was dropped exactly once (none twice, none leaked).
//!
//! The state observed after each panic is documented next to each test, and asserted:
//! the crate (as of this writing) gives each `Writer` call strong exception safety — a
//! call that panics in a user `Clone` or split closure leaves the session's view as it
//! was before that call (the splits run before anything changes) — and a writer dropped
//! while unwinding commits like any other drop, so the session's earlier calls are
//! published. Neither is promised by the API doc; if the crate changes either on
//! purpose, change the expected layouts here.

use rcu_rangemap::{Fit, RangeMap, TryGetError};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// A value that counts its drops and whose Clone can be armed to panic.

struct DropTable {
    created: AtomicUsize,
    dropped: AtomicUsize,
    per: Box<[AtomicU8]>,
    /// The serial of the value whose drop panics (once), or `usize::MAX`.
    drop_bomb: AtomicUsize,
}

static TABLES: std::sync::Mutex<Vec<&'static DropTable>> = std::sync::Mutex::new(Vec::new());

impl DropTable {
    /// A table for one test, kept for the rest of the process: values hold a plain
    /// `&'static` to it, so a double drop cannot corrupt a reference count. Registered in
    /// `TABLES` so Miri's leak check sees it as reachable.
    fn leak() -> &'static DropTable {
        let t: &'static DropTable = Box::leak(Box::new(DropTable {
            created: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            per: (0..4096).map(|_| AtomicU8::new(0)).collect(),
            drop_bomb: AtomicUsize::new(usize::MAX),
        }));
        TABLES.lock().unwrap_or_else(|e| e.into_inner()).push(t);
        t
    }
    fn live(&self) -> usize {
        self.created.load(SeqCst) - self.dropped.load(SeqCst)
    }
    /// Every value created so far was dropped exactly once.
    fn check_all_dropped_once(&self) {
        let created = self.created.load(SeqCst);
        for (i, c) in self.per[..created].iter().enumerate() {
            assert_eq!(
                c.load(SeqCst),
                1,
                "value #{i} dropped {} times",
                c.load(SeqCst)
            );
        }
        assert_eq!(created, self.dropped.load(SeqCst));
    }
    /// No value dropped more than once (some may still be live).
    fn check_no_double_drop(&self) {
        let created = self.created.load(SeqCst);
        for (i, c) in self.per[..created].iter().enumerate() {
            assert!(
                c.load(SeqCst) <= 1,
                "value #{i} dropped {} times",
                c.load(SeqCst)
            );
        }
    }
}

thread_local! {
    /// `Some(n)`: the clone after `n` more successful ones panics (then disarms itself).
    static CLONE_BOMB: Cell<Option<u32>> = const { Cell::new(None) };
}

fn arm_clone_bomb(after: u32) {
    CLONE_BOMB.with(|b| b.set(Some(after)));
}
fn disarm_clone_bomb() {
    CLONE_BOMB.with(|b| b.set(None));
}

struct Pv {
    serial: usize,
    table: &'static DropTable,
    id: u32,
    off: u64,
}

impl Pv {
    fn new(table: &'static DropTable, id: u32, off: u64) -> Self {
        let serial = table.created.fetch_add(1, SeqCst);
        Pv {
            serial,
            table,
            id,
            off,
        }
    }
}

impl Clone for Pv {
    fn clone(&self) -> Self {
        CLONE_BOMB.with(|b| match b.get() {
            Some(0) => {
                // Disarm first: a second panic during unwinding would abort.
                b.set(None);
                panic!("clone bomb");
            }
            Some(n) => b.set(Some(n - 1)),
            None => {}
        });
        Pv::new(self.table, self.id, self.off)
    }
}

impl Drop for Pv {
    fn drop(&mut self) {
        self.table.per[self.serial].fetch_add(1, SeqCst);
        self.table.dropped.fetch_add(1, SeqCst);
        let bomb = &self.table.drop_bomb;
        if bomb
            .compare_exchange(self.serial, usize::MAX, SeqCst, SeqCst)
            .is_ok()
        {
            panic!("drop bomb");
        }
    }
}

impl std::fmt::Debug for Pv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pv{{id: {}, off: {}}}", self.id, self.off)
    }
}

fn split_ok(v: &mut Pv, whole: Range<u8>, at: u8) -> Pv {
    let mut p = v.clone();
    p.off += (at - whole.start) as u64;
    p
}

type Layout = Vec<(Range<u8>, u32, u64)>;

fn layout(map: &RangeMap<u8, Pv>) -> Layout {
    map.iter().map(|g| (g.range(), g.id, g.off)).collect()
}

/// The published map is self-consistent: returns its layout.
fn consistent(map: &RangeMap<u8, Pv>) -> Layout {
    let l = layout(map);
    assert_eq!(map.len(), l.len(), "len vs iter");
    assert_eq!(map.is_empty(), l.is_empty());
    let mut by_start = BTreeMap::new();
    let mut prev_end = 0u8;
    for (r, id, off) in &l {
        assert!(r.start < r.end, "empty entry {r:?}");
        assert!(
            r.start >= prev_end,
            "entries overlap or are out of order: {l:?}"
        );
        prev_end = r.end;
        by_start.insert(r.start, (r.clone(), *id, *off));
    }
    let mut rev = layout_rev(map);
    rev.reverse();
    assert_eq!(rev, l, "iter().rev()");
    for key in probe_keys(&l) {
        let want = by_start
            .range(..=key)
            .next_back()
            .map(|(_, e)| e.clone())
            .filter(|e| e.0.contains(&key));
        let got = map.get(key).map(|g| (g.range(), g.id, g.off));
        assert_eq!(got, want, "get({key}) vs iter");
        match map.try_get(key) {
            Ok(g) => assert_eq!(Some((g.range(), g.id, g.off)), want, "try_get({key})"),
            Err(TryGetError::Vacant) => assert_eq!(want, None, "try_get({key}) Vacant"),
            Err(e) => panic!("try_get({key}) with no session active: {e:?} (left locked by the panicked session?)"),
        }
    }
    // Gaps are the complement of the entries.
    let mut want_gaps = Vec::new();
    let mut cur = 0u8;
    for (r, _, _) in &l {
        if r.start > cur {
            want_gaps.push(cur..r.start);
        }
        cur = r.end;
    }
    if cur < 255 {
        want_gaps.push(cur..255);
    }
    let gaps: Vec<_> = map.gaps(0..255).collect();
    assert_eq!(gaps, want_gaps, "gaps vs iter");
    l
}

/// The keys `consistent` looks up: all 256 natively. Under Miri, where each lookup costs
/// milliseconds and this check runs a few dozen times, only the keys where an answer can
/// change: each entry's first and last key and the keys just outside it, and both ends.
fn probe_keys(l: &Layout) -> Vec<u8> {
    if !cfg!(miri) {
        return (0..=255).collect();
    }
    let mut keys = vec![0, 255];
    for (r, _, _) in l {
        keys.extend([r.start.saturating_sub(1), r.start, r.end - 1, r.end]);
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn layout_rev(map: &RangeMap<u8, Pv>) -> Layout {
    map.iter().rev().map(|g| (g.range(), g.id, g.off)).collect()
}

/// A new session works after the panic: insert into free space, overwrite, remove.
fn still_usable(map: &RangeMap<u8, Pv>, table: &'static DropTable) {
    let before = consistent(map);
    let free = map
        .find_gap(0..255, 3, 1, Fit::Highest)
        .expect("some free space");
    {
        let mut w = map.write();
        w.try_insert(free.clone(), Pv::new(table, 900, 0)).unwrap();
        assert_eq!(w.get(free.start).unwrap().1.id, 900);
    }
    assert_eq!(map.get(free.start).unwrap().id, 900);
    {
        let mut w = map.write();
        let (r, v) = w.remove_entry(free.start).unwrap();
        assert_eq!((r, v.id), (free, 900));
    }
    assert_eq!(consistent(map), before);
}

/// Entries [10,20) id 1, [30,40) id 2, [50,60) id 3, offsets = start.
fn setup(table: &'static DropTable) -> RangeMap<u8, Pv> {
    let map = RangeMap::new();
    {
        let mut w = map.write();
        for (i, s) in [10u8, 30, 50].into_iter().enumerate() {
            w.try_insert(s..s + 10, Pv::new(table, i as u32 + 1, s as u64))
                .unwrap();
        }
    }
    map
}

fn initial() -> Layout {
    vec![(10..20, 1, 10), (30..40, 2, 30), (50..60, 3, 50)]
}

fn quiet<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    catch_unwind(AssertUnwindSafe(f))
}

// ---------------------------------------------------------------------------------------
// Tests

/// `insert` (Clone) must clone to split [10,20) at 15; the first clone panics. The same
/// session first inserted [70,80) successfully.
///
/// Observed: the panicking `insert` changed nothing; the writer, dropped while
/// unwinding, committed the earlier `try_insert` of [70,80).
#[test]
fn clone_panics_in_insert() {
    let table = DropTable::leak();
    let map = setup(table);
    let r = quiet(|| {
        let mut w = map.write();
        w.try_insert(70..80, Pv::new(table, 4, 70)).unwrap();
        arm_clone_bomb(0);
        drop(w.insert(15..35, Pv::new(table, 5, 15)));
    });
    disarm_clone_bomb();
    assert!(r.is_err(), "the clone bomb went off");
    table.check_no_double_drop();
    let after = consistent(&map);
    eprintln!("clone_panics_in_insert: observed {after:?}");
    let mut want = initial();
    want.push((70..80, 4, 70));
    assert_eq!(after, want);
    still_usable(&map, table);
    drop(map);
    table.check_all_dropped_once();
}

/// `insert` of [15,55) over three entries needs two clones (to cut [10,20) at 15 and
/// [50,60) at 55; [30,40) is displaced whole). Clone panics on the first or second.
///
/// Observed: a panic at either clone leaves the map as it was; with the bomb set later
/// the insert completes.
#[test]
fn clone_panics_later_in_insert() {
    for after in 0..4 {
        let table = DropTable::leak();
        let map = setup(table);
        let r = quiet(|| {
            let mut w = map.write();
            arm_clone_bomb(after);
            drop(w.insert(15..55, Pv::new(table, 5, 15)));
        });
        disarm_clone_bomb();
        table.check_no_double_drop();
        let after_layout = consistent(&map);
        eprintln!(
            "clone_panics_later_in_insert(after {after}): panicked {}, observed {after_layout:?}",
            r.is_err()
        );
        if after < 2 {
            assert!(r.is_err());
            assert_eq!(after_layout, initial());
        } else {
            assert!(r.is_ok());
            assert_eq!(
                after_layout,
                vec![(10..15, 1, 10), (15..55, 5, 15), (55..60, 3, 50)]
            );
        }
        still_usable(&map, table);
        drop(map);
        table.check_all_dropped_once();
    }
}

/// `remove` (Clone) of [12,18) must cut [10,20) into three (two clones), then `remove`
/// of [35,55) cuts [30,40) and [50,60) (two more). Clone panics on clone 1, 2 or 3.
///
/// Observed: a panic inside the first `remove` leaves the map as it was; a panic in the
/// second leaves the first one's effect (committed by the unwinding drop) and nothing of
/// the second.
#[test]
fn clone_panics_in_remove() {
    for after in 0..3 {
        let table = DropTable::leak();
        let map = setup(table);
        let r = quiet(|| {
            let mut w = map.write();
            arm_clone_bomb(after);
            drop(w.remove(12..18));
            drop(w.remove(35..55));
        });
        disarm_clone_bomb();
        table.check_no_double_drop();
        let l = consistent(&map);
        eprintln!(
            "clone_panics_in_remove(after {after}): panicked {}, observed {l:?}",
            r.is_err()
        );
        assert!(r.is_err());
        if after < 2 {
            assert_eq!(l, initial());
        } else {
            assert_eq!(
                l,
                vec![
                    (10..12, 1, 10),
                    (18..20, 1, 10),
                    (30..40, 2, 30),
                    (50..60, 3, 50)
                ]
            );
        }
        still_usable(&map, table);
        drop(map);
        table.check_all_dropped_once();
    }
}

/// A split closure that panics on its `n`-th call, in `insert_with` and `remove_with`
/// of [15,55) (two cuts: [10,20) at 15, [50,60) at 55).
///
/// Observed: a panic at either cut leaves the map as it was; with `n == 2` the call
/// completes, and the offsets of the cut pieces are right.
#[test]
fn split_closure_panics() {
    for with_insert in [true, false] {
        for n in 0..3 {
            let table = DropTable::leak();
            let map = setup(table);
            let r = quiet(|| {
                let mut w = map.write();
                let mut calls = 0;
                let split = |v: &mut Pv, whole: Range<u8>, at: u8| {
                    if calls == n {
                        panic!("split bomb");
                    }
                    calls += 1;
                    split_ok(v, whole, at)
                };
                if with_insert {
                    drop(w.insert_with(15..55, Pv::new(table, 5, 15), split));
                } else {
                    drop(w.remove_with(15..55, split));
                }
            });
            table.check_no_double_drop();
            let l = consistent(&map);
            eprintln!(
                "split_closure_panics(insert {with_insert}, n {n}): panicked {}, observed {l:?}",
                r.is_err()
            );
            let want = match (n, with_insert) {
                (0 | 1, _) => initial(),
                (_, true) => vec![(10..15, 1, 10), (15..55, 5, 15), (55..60, 3, 55)],
                (_, false) => vec![(10..15, 1, 10), (55..60, 3, 55)],
            };
            assert_eq!(r.is_err(), n < 2);
            assert_eq!(l, want);
            // Offsets stay right wherever the value was cut ("file position" invariant).
            for (r, id, off) in &l {
                if (1..=3).contains(id) {
                    let origin = [10u64, 30, 50][*id as usize - 1];
                    assert_eq!(
                        *off, r.start as u64,
                        "entry {r:?} of value {id} (origin {origin}) has a wrong offset"
                    );
                }
            }
            still_usable(&map, table);
            drop(map);
            table.check_all_dropped_once();
        }
    }
}

/// User code panics inside a session after `get_mut` and `remove_entry`; a reader
/// blocked in `get` on the write-locked entry must be released by the unwinding.
///
/// Observed: the unwinding drop commits the session (the change through `get_mut` and
/// the removal are published) and the blocked reader then sees the committed value.
#[test]
fn user_panic_inside_session_releases_blocked_reader() {
    let table = DropTable::leak();
    let map = Arc::new(setup(table));
    let (tx, rx) = mpsc::channel();
    let mut reader = None;
    let r = quiet(|| {
        let mut w = map.write();
        w.get_mut(35).unwrap().1.off = 1234;
        drop(w.remove_entry(55));
        reader = Some({
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                let got = map.get(35).map(|g| (g.range(), g.id, g.off));
                tx.send(got).unwrap();
            })
        });
        // Give the reader time to block on the locked entry.
        std::thread::sleep(Duration::from_millis(50));
        panic!("user panic inside the session");
    });
    assert!(r.is_err());
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a reader blocked on an entry of the panicked session was never released");
    let l = consistent(&map);
    eprintln!("user_panic_inside_session: reader saw {got:?}; observed {l:?}");
    // Dropping the writer commits, also while unwinding: the session's changes are
    // published and the reader, released at that commit, sees them.
    assert_eq!(got, Some((30..40, 2, 1234)));
    assert_eq!(l, vec![(10..20, 1, 10), (30..40, 2, 1234)]);
    still_usable(&map, table);
    reader.unwrap().join().unwrap();
    match Arc::try_unwrap(map) {
        Ok(map) => drop(map),
        Err(_) => panic!("reader thread still holds the map"),
    }
    table.check_all_dropped_once();
}

/// The documented `# Panics`: empty/reversed ranges for `insert`, reversed for `remove`,
/// bad `align`/`size` for `find_gap`. The value handed to a panicking `insert` is dropped
/// exactly once; the map is untouched.
#[test]
#[allow(clippy::reversed_empty_ranges)]
fn documented_panics_leave_map_untouched() {
    let table = DropTable::leak();
    let map = setup(table);
    type Case = (&'static str, Box<dyn Fn(&RangeMap<u8, Pv>)>);
    let cases: Vec<Case> = vec![
        (
            "insert empty",
            Box::new(|m| drop(m.write().insert(5..5, Pv::new(table, 7, 0)))),
        ),
        (
            "insert reversed",
            Box::new(|m| drop(m.write().insert(9..5, Pv::new(table, 7, 0)))),
        ),
        (
            "insert_with empty",
            Box::new(|m| drop(m.write().insert_with(5..5, Pv::new(table, 7, 0), split_ok))),
        ),
        (
            "remove reversed",
            Box::new(|m| drop(m.write().remove(9..5))),
        ),
        (
            "remove_with reversed",
            Box::new(|m| drop(m.write().remove_with(18..12, split_ok))),
        ),
        (
            "find_gap align 3",
            Box::new(|m| {
                let _ = m.find_gap(0..255, 1, 3, Fit::Lowest);
            }),
        ),
        (
            "find_gap align 0",
            Box::new(|m| {
                let _ = m.find_gap(0..255, 1, 0, Fit::Highest);
            }),
        ),
        (
            "find_gap size 0",
            Box::new(|m| {
                let _ = m.find_gap(0..255, 0, 1, Fit::Lowest);
            }),
        ),
        (
            "Writer::find_gap align 6",
            Box::new(|m| {
                let _ = m.write().find_gap(0..255, 1, 6, Fit::Lowest);
            }),
        ),
        (
            "Writer::find_gap size 0",
            Box::new(|m| {
                let _ = m.write().find_gap(0..255, 0, 1, Fit::Highest);
            }),
        ),
    ];
    for (name, f) in cases {
        let live = table.live();
        let r = quiet(|| f(&map));
        assert!(r.is_err(), "{name}: expected a panic");
        assert_eq!(
            table.live(),
            live,
            "{name}: the value given to the call was not dropped (or too much was)"
        );
        table.check_no_double_drop();
        assert_eq!(consistent(&map), initial(), "{name}: map changed");
    }
    // Empty remove is a no-op, not a panic.
    assert!(map.write().remove(5..5).is_empty());
    assert!(map.write().remove_with(15..15, split_ok).is_empty());
    assert_eq!(consistent(&map), initial());
    still_usable(&map, table);
    drop(map);
    table.check_all_dropped_once();
}

/// A value whose `Drop` panics while the map is dropped: the map's drop unwinds, and the
/// values after it are dropped all the same (none leaked, none twice).
///
/// Observed before the fix: the values after the panicking one leaked.
#[test]
fn value_drop_panics_in_map_drop() {
    let table = DropTable::leak();
    let map = setup(table);
    // The first value in key order ([10,20), id 1) is the first created.
    table.drop_bomb.store(0, SeqCst);
    assert!(quiet(|| drop(map)).is_err());
    table.check_all_dropped_once();
}

/// A leaked `Writer` never commits: the published version stays, its entries the session
/// locked stay locked, and the values the session moved out are the caller's. The map's
/// drop then drops every value of the published version that is still there, and none the
/// session moved out; what the session's own unpublished entries hold leaks with it.
///
/// Observed before the fix: the map's drop dropped the moved-out values a second time.
#[test]
fn leaked_writer_then_map_drop() {
    let table = DropTable::leak();
    let map = setup(table);
    let mut w = map.write();
    let (r, v) = w.remove_entry(15).unwrap();
    assert_eq!((r, v.id), (10..20, 1));
    drop(v);
    // [30,40) keeps [30,35) (its value moves to a new entry), [50,60) loses [50,55) (its
    // value leaves; a clone moves into a new entry for [55,60)).
    let cut: Vec<_> = w
        .remove(35..55)
        .into_iter()
        .map(|(r, v)| (r, v.id))
        .collect();
    assert_eq!(cut, [(35..40, 2), (50..55, 3)]);
    w.try_insert(70..80, Pv::new(table, 4, 70)).unwrap();
    std::mem::forget(w);
    assert_eq!(map.len(), 3);
    assert_eq!(map.try_get(15).unwrap_err(), TryGetError::Locked);
    drop(map);
    table.check_no_double_drop();
    // Left live: the values of the session's unpublished entries [30,35), [55,60), [70,80).
    assert_eq!(table.live(), 3);
}
