//! `split`: values that must learn where they are cut.
//!
//! Every value is a file mapping: `Mapping { file, off }` on range `r` says key `k` maps
//! to position `off + (k - r.start)` of `file`. Overwrites (`insert_with`), removals
//! (`remove_with`), pure splits (remove then put the pieces back), whole-entry removals and
//! remaps (`get_mut`) are applied with a split closure that moves the offset to the cut.
//! The reference is per key (`u8` keys, all 256 of them): which file position each key
//! maps to. Checked: every displaced piece maps its keys as they were mapped before, each
//! split call gets a value that describes exactly the range it is told (`whole`) and a cut
//! strictly inside it, and after every session the writer's view (before the commit) and
//! the published view (after it) map every key as the reference says. At the end every
//! value created has been dropped exactly once.

#![no_main]

use std::ops::Range;

use arbitrary::Arbitrary;
use fuzz_support::{live, Counted};
use libfuzzer_sys::fuzz_target;
use rcu_rangemap::RangeMap;

const MAX_SESSIONS: usize = 32;
const MAX_OPS: usize = 32;
const KEYS: usize = 256;

#[derive(Arbitrary, Debug)]
struct Input {
    sessions: Vec<Session>,
}

#[derive(Arbitrary, Debug)]
struct Session {
    ops: Vec<Op>,
    commit: bool,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Overwrite `a..b` with a mapping of `file` at `off` (`insert_with`).
    Map { a: u8, b: u8, file: u8, off: u16 },
    /// The same into free space only (`try_insert`).
    MapFree { a: u8, b: u8, file: u8, off: u16 },
    /// Remove `a..b` (`remove_with`).
    Unmap { a: u8, b: u8 },
    /// Split at `a` and `b` without changing any key's mapping: `remove_with` then
    /// `try_insert` every piece back.
    Split { a: u8, b: u8 },
    /// Remove the whole entry holding `k` (`remove_entry`).
    UnmapEntry { k: u8 },
    /// Point the whole entry holding `k` at another file position (`get_mut`).
    Remap { k: u8, file: u8, off: u16 },
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Mapping {
    file: u8,
    off: u64,
}

type V = Counted<Mapping>;

/// The file position each key maps to.
type Keys = [Option<(u8, u64)>; KEYS];

fn cut(v: &mut V, whole: Range<u8>, at: u8) -> V {
    Counted::new(Mapping {
        file: v.file,
        off: v.off + u64::from(at - whole.start),
    })
}

fn mapping_of(m: Mapping, r: &Range<u8>, k: u8) -> (u8, u64) {
    (m.file, m.off + u64::from(k - r.start))
}

/// `m` on `r` maps each key as `keys` says.
fn check_piece(keys: &Keys, r: &Range<u8>, m: Mapping, what: &str) {
    assert!(r.start < r.end, "{what}: empty piece {r:?}");
    for k in r.clone() {
        assert_eq!(
            keys[k as usize],
            Some(mapping_of(m, r, k)),
            "{what}: key {k} of piece {r:?} = {m:?}"
        );
    }
}

/// Displaced pieces of an operation on `s..e`: in key order, disjoint, inside `s..e`,
/// together exactly the mapped keys of `s..e`, each mapping its keys as before.
fn check_displaced(before: &Keys, s: u8, e: u8, pieces: &[(Range<u8>, V)], what: &str) {
    let mut covered = [false; KEYS];
    let mut last_end = s;
    for (r, m) in pieces {
        assert!(
            r.start >= last_end && r.end <= e,
            "{what}: piece {r:?} out of order/range"
        );
        last_end = r.end;
        check_piece(before, r, m.0, what);
        for k in r.clone() {
            covered[k as usize] = true;
        }
    }
    for k in s..e {
        assert_eq!(
            covered[k as usize],
            before[k as usize].is_some(),
            "{what}: key {k} displaced={} mapped before={:?}",
            covered[k as usize],
            before[k as usize]
        );
    }
}

fuzz_target!(|input: Input| {
    run(&input);
    assert_eq!(live(), 0, "values leaked or dropped twice");
});

fn run(input: &Input) {
    let map = RangeMap::<u8, V>::new();
    let mut keys: Keys = [None; KEYS];
    for session in input.sessions.iter().take(MAX_SESSIONS) {
        let mut w = map.write();
        for op in session.ops.iter().take(MAX_OPS) {
            let before = keys;
            // Each split call must get a value describing exactly `whole` (as mapped before
            // the operation) and a cut strictly inside it.
            let mut checked_cut = |v: &mut V, whole: Range<u8>, at: u8| -> V {
                assert!(
                    whole.start < at && at < whole.end,
                    "split called with cut {at} outside {whole:?}"
                );
                check_piece(&before, &whole, v.0, "split closure argument");
                let right = cut(v, whole.clone(), at);
                // What the closure returns must describe `at..whole.end`.
                check_piece(&before, &(at..whole.end), right.0, "split result");
                right
            };
            match *op {
                Op::Map { a, b, file, off } => {
                    if a >= b {
                        continue; // documented panic
                    }
                    let m = Mapping {
                        file,
                        off: u64::from(off),
                    };
                    let pieces = w.insert_with(a..b, Counted::new(m), &mut checked_cut);
                    check_displaced(&before, a, b, &pieces, "insert_with");
                    for k in a..b {
                        keys[k as usize] = Some(mapping_of(m, &(a..b), k));
                    }
                }
                Op::MapFree { a, b, file, off } => {
                    let m = Mapping {
                        file,
                        off: u64::from(off),
                    };
                    let free = a < b && (a..b).all(|k| keys[k as usize].is_none());
                    match w.try_insert(a..b, Counted::new(m)) {
                        Ok(()) => {
                            assert!(free, "try_insert({a}..{b}) into taken keys succeeded");
                            for k in a..b {
                                keys[k as usize] = Some(mapping_of(m, &(a..b), k));
                            }
                        }
                        Err(e) => {
                            assert!(!free, "try_insert({a}..{b}) into free keys failed: {e}");
                            assert_eq!(e.into_value().0, m);
                        }
                    }
                }
                Op::Unmap { a, b } => {
                    if a > b {
                        continue; // documented panic
                    }
                    let pieces = w.remove_with(a..b, &mut checked_cut);
                    check_displaced(&before, a, b, &pieces, "remove_with");
                    for k in a..b {
                        keys[k as usize] = None;
                    }
                }
                Op::Split { a, b } => {
                    if a > b {
                        continue;
                    }
                    let pieces = w.remove_with(a..b, &mut checked_cut);
                    check_displaced(&before, a, b, &pieces, "split: remove_with");
                    for (r, v) in pieces {
                        if let Err(e) = w.try_insert(r.clone(), v) {
                            panic!("split: putting {r:?} back failed: {e}");
                        }
                    }
                }
                Op::UnmapEntry { k } => match w.remove_entry(k) {
                    Some((r, m)) => {
                        assert!(r.contains(&k), "remove_entry({k}) returned {r:?}");
                        check_piece(&before, &r, m.0, "remove_entry");
                        for k in r {
                            keys[k as usize] = None;
                        }
                    }
                    None => assert_eq!(before[k as usize], None, "remove_entry({k}) missed"),
                },
                Op::Remap { k, file, off } => match w.get_mut(k) {
                    Some((r, m)) => {
                        assert!(r.contains(&k), "get_mut({k}) returned {r:?}");
                        check_piece(&before, &r, m.0, "get_mut");
                        m.0 = Mapping {
                            file,
                            off: u64::from(off),
                        };
                        for x in r.clone() {
                            keys[x as usize] = Some(mapping_of(m.0, &r, x));
                        }
                    }
                    None => assert_eq!(before[k as usize], None, "get_mut({k}) missed"),
                },
            }
        }
        // The session's own view, every key.
        for k in 0..=u8::MAX {
            let got = w.get(k).map(|(r, m)| mapping_of(m.0, &r, k));
            assert_eq!(got, keys[k as usize], "Writer::get({k})");
        }
        if session.commit {
            w.commit();
        } else {
            drop(w);
        }
        // The published tree's structure (order, bounds, node fill, exact gaps).
        map.fuzz_check_structure();
        // The published view, every key; and the entries tile what is mapped.
        for k in 0..=u8::MAX {
            let got = map.get(k).map(|g| mapping_of(g.0, &g.range(), k));
            assert_eq!(got, keys[k as usize], "get({k}) after commit");
        }
        let mut n = 0;
        let mut last_end = 0u8;
        for g in map.iter() {
            let r = g.range();
            assert!(r.start >= last_end, "iter out of order at {r:?}");
            last_end = r.end;
            check_piece(&keys, &r, g.0, "iter");
            n += r.len();
        }
        assert_eq!(
            n,
            keys.iter().filter(|k| k.is_some()).count(),
            "mapped key count"
        );
    }
}
