//! `ops`: sessions of every `Writer` operation and every query, against a reference model.
//!
//! The input is a list of steps: a writer session (a list of operations, then commit or
//! drop, or a leak of its writer, which ends the run), a query of the published map, a
//! `clone` of it, or its `shrink_to_fit`. Keys are `u8` (every key collides) or `u16`
//! decoded into clusters near 0, the middle and `MAX` (see `FKey::decode`).
//!
//! Checked after every operation: its result against the model (returned values,
//! displaced pieces in order, the calls a split closure receives, errors with their
//! details). Inside a session the published view must still be the version before the
//! session, except that entries the session has locked answer `Locked` to `try_get`
//! (`get` and iterators are only asked about entries the session has not locked, since
//! they would wait for the commit of this very thread's session). After each session:
//! the writer's full view before the commit, and the published view in full after it,
//! with the published tree's structure (`RangeMap::fuzz_check_structure`).
//! At the end every value created has been dropped exactly once (live count 0); after a
//! leaked session, none twice (each value's own serial, see `Counted`).

#![no_main]

use std::ops::Range;

use arbitrary::Arbitrary;
use fuzz_support::{
    clone_split, decode_align, drive_double_ended, forget_live, key, kmax, live, narrow, overwrite,
    wide, Counted, FKey, Model, Val,
};
use libfuzzer_sys::fuzz_target;
use rcu_rangemap::{Fit, InsertErrorKind, RangeMap, TryGetError, Writer};

const MAX_STEPS: usize = 48;
const MAX_OPS: usize = 48;

#[derive(Arbitrary, Debug)]
struct Input {
    wide: bool,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Session {
        ops: Vec<WOp>,
        commit: bool,
    },
    Query(Query),
    /// `RangeMap::clone`: the copy shows the same version, and changing it (removing
    /// `a..b` from it) leaves the original alone.
    Clone {
        a: u16,
        b: u16,
    },
    /// `RangeMap::shrink_to_fit`: every entry moved and the nodes rebuilt; the published
    /// view is unchanged.
    ShrinkToFit,
    /// A session whose `Writer` is leaked (`mem::forget`): it never commits, and the run
    /// ends with it (the map would block on its locked entries). The published view stays
    /// the version before it; then the map is dropped, which must drop every value of that
    /// version the session did not move out and none that it did: a second drop of a value
    /// panics (`Counted`). The session's own new entries leak with it.
    Leak {
        ops: Vec<WOp>,
    },
}

#[derive(Arbitrary, Debug)]
enum WOp {
    TryInsert {
        a: u16,
        b: u16,
    },
    Insert {
        a: u16,
        b: u16,
    },
    InsertWith {
        a: u16,
        b: u16,
    },
    Remove {
        a: u16,
        b: u16,
    },
    RemoveWith {
        a: u16,
        b: u16,
    },
    RemoveEntry {
        k: u16,
    },
    Get {
        k: u16,
    },
    GetMut {
        k: u16,
        bump: u8,
    },
    FindGap(GapReq),
    Overlapping {
        a: u16,
        b: u16,
    },
    Len,
    /// Many small entries at once (deep trees, node splits).
    Fill {
        start: u16,
        count: u8,
        len: u8,
        stride: u8,
        with: bool,
    },
    /// A query of the published map from inside the session.
    Published(Query),
    OverlappingMut {
        a: u16,
        b: u16,
        bump: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct GapReq {
    w0: u16,
    w1: u16,
    size: u16,
    align: u8,
    highest: bool,
}

#[derive(Arbitrary, Debug)]
enum Query {
    Get { k: u16 },
    TryGet { k: u16 },
    Overlapping { a: u16, b: u16, pattern: u32 },
    Iter { pattern: u32 },
    Gaps { a: u16, b: u16, pattern: u32 },
    FindGap(GapReq),
    Len,
}

type V = Counted<Val>;

struct Run<K: FKey> {
    model: Model<Val>,
    next_id: u32,
    _k: std::marker::PhantomData<K>,
}

/// What the published map must show: `model`, where entries overlapping any `locked`
/// range are held by the running session.
struct View<'a> {
    model: &'a Model<Val>,
    locked: &'a [Range<u128>],
}

impl View<'_> {
    fn is_locked(&self, r: &Range<u128>) -> bool {
        self.locked
            .iter()
            .any(|l| l.start < r.end && r.start < l.end)
    }
}

fuzz_target!(|input: Input| {
    let leaked = if input.wide {
        run::<u16>(&input)
    } else {
        run::<u8>(&input)
    };
    if leaked {
        assert!(live() >= 0, "values dropped twice");
        forget_live();
    } else {
        assert_eq!(live(), 0, "values leaked or dropped twice");
    }
});

/// Whether the run ended with a leaked session ([`Step::Leak`]).
fn run<K: FKey>(input: &Input) -> bool {
    let map = RangeMap::<K, V>::new();
    let mut r = Run::<K> {
        model: Model::new(kmax::<K>()),
        next_id: 0,
        _k: std::marker::PhantomData,
    };
    for step in input.steps.iter().take(MAX_STEPS) {
        match step {
            Step::Query(q) => {
                let view = View {
                    model: &r.model,
                    locked: &[],
                };
                query(&map, &view, q);
            }
            Step::Clone { a, b } => {
                let view = View {
                    model: &r.model,
                    locked: &[],
                };
                let copy = map.clone();
                check_published_full(&copy, &view);
                let (s, e) = (K::decode(*a), K::decode(*b));
                if s <= e {
                    let mut w = copy.write();
                    drop(w.remove(s..e));
                    w.commit();
                    let mut changed = r.model.clone();
                    changed.remove(s.to_u128(), e.to_u128(), &mut clone_split);
                    check_published_full(
                        &copy,
                        &View {
                            model: &changed,
                            locked: &[],
                        },
                    );
                }
                drop(copy);
                check_published_full(&map, &view);
            }
            Step::ShrinkToFit => {
                map.shrink_to_fit();
                check_published_full(
                    &map,
                    &View {
                        model: &r.model,
                        locked: &[],
                    },
                );
            }
            Step::Session { ops, commit } => {
                let w = r.session(&map, ops);
                if *commit {
                    w.commit();
                } else {
                    drop(w);
                }
                check_published_full(
                    &map,
                    &View {
                        model: &r.model,
                        locked: &[],
                    },
                );
            }
            Step::Leak { ops } => {
                std::mem::forget(r.session(&map, ops));
                drop(map);
                return true;
            }
        }
    }
    drop(map);
    false
}

impl<K: FKey> Run<K> {
    /// A session of `ops` on `map`, checked after each op and then in full (the writer's
    /// view; the published one, still the version before the session); its end is the
    /// caller's.
    fn session<'m>(&mut self, map: &'m RangeMap<K, V>, ops: &[WOp]) -> Writer<'m, K, V> {
        let before = self.model.clone();
        let mut locked: Vec<Range<u128>> = Vec::new();
        let mut w = map.write();
        for op in ops.iter().take(MAX_OPS) {
            self.apply(map, &mut w, &before, &mut locked, op);
        }
        check_writer_full(&w, &self.model);
        check_published_full(
            map,
            &View {
                model: &before,
                locked: &locked,
            },
        );
        w
    }

    fn new_val(&mut self, off: u16) -> Val {
        self.next_id += 1;
        Val {
            id: self.next_id,
            off: u64::from(off) << 8,
        }
    }

    fn apply(
        &mut self,
        map: &RangeMap<K, V>,
        w: &mut Writer<'_, K, V>,
        before: &Model<Val>,
        locked: &mut Vec<Range<u128>>,
        op: &WOp,
    ) {
        match *op {
            WOp::TryInsert { a, b } => {
                let (s, e) = (K::decode(a), K::decode(b));
                let (s128, e128) = (s.to_u128(), e.to_u128());
                let v = self.new_val(a);
                let got = w.try_insert(s..e, Counted::new(v));
                if s128 >= e128 {
                    let err = got.expect_err("try_insert of an empty/reversed range succeeded");
                    assert_eq!(err.kind(), &InsertErrorKind::InvalidRange);
                    assert_eq!(err.range(), s..e);
                    assert_eq!(err.into_value().0, v);
                } else if let Some((first, _)) = self.model.overlapping(s128, e128).first() {
                    let err = got.expect_err("try_insert into taken keys succeeded");
                    assert_eq!(
                        err.kind(),
                        &InsertErrorKind::Occupied {
                            existing: narrow::<K>(first)
                        },
                        "try_insert({s:?}..{e:?})"
                    );
                    assert_eq!(err.into_value().0, v);
                } else {
                    if let Err(err) = got {
                        panic!("try_insert({s:?}..{e:?}) into free space failed: {err:?}");
                    }
                    self.model.insert_free(s128..e128, v);
                }
            }
            WOp::Insert { a, b } | WOp::InsertWith { a, b } => {
                let with = matches!(op, WOp::InsertWith { .. });
                let (s, e) = (K::decode(a), K::decode(b));
                if s >= e {
                    return; // documented panic
                }
                let v = self.new_val(b);
                self.overwrite(w, locked, Some(v), s, e, with);
            }
            WOp::Remove { a, b } | WOp::RemoveWith { a, b } => {
                let with = matches!(op, WOp::RemoveWith { .. });
                let (s, e) = (K::decode(a), K::decode(b));
                if s > e {
                    return; // documented panic
                }
                self.overwrite(w, locked, None, s, e, with);
            }
            WOp::RemoveEntry { k } => {
                let k = K::decode(k);
                let want = self.model.at(k.to_u128()).map(|(r, v)| (r, *v));
                let got = w.remove_entry(k).map(|(r, v)| (wide(&r), v.0));
                assert_eq!(got, want, "remove_entry({k:?})");
                if let Some((r, _)) = want {
                    self.model.m.remove(&r.start);
                    locked.push(r);
                }
            }
            WOp::Get { k } => {
                let k = K::decode(k);
                let want = self.model.at(k.to_u128()).map(|(r, v)| (r, *v));
                let got = w.get(k).map(|(r, v)| (wide(&r), v.0));
                assert_eq!(got, want, "Writer::get({k:?})");
            }
            WOp::GetMut { k, bump } => {
                let k = K::decode(k);
                let want = self.model.at_mut(k.to_u128());
                let got = w.get_mut(k);
                match (got, want) {
                    (None, None) => {}
                    (Some((gr, gv)), Some((mr, mv))) => {
                        assert_eq!((wide(&gr), gv.0), (mr.clone(), *mv), "get_mut({k:?})");
                        gv.off += u64::from(bump);
                        mv.off += u64::from(bump);
                        locked.push(mr);
                    }
                    (got, want) => panic!(
                        "get_mut({k:?}): got {:?}, want {:?}",
                        got.map(|(r, v)| (r, v.0)),
                        want.map(|(r, v)| (r, *v))
                    ),
                }
            }
            WOp::OverlappingMut { a, b, bump } => {
                let (s, e) = (K::decode(a), K::decode(b));
                let want = self.model.overlapping(s.to_u128(), e.to_u128());
                let got: Vec<(Range<u128>, Val)> = w
                    .overlapping_mut(s..e)
                    .map(|(r, v)| {
                        let before = v.0;
                        v.off += u64::from(bump);
                        (wide(&r), before)
                    })
                    .collect();
                assert_eq!(got, want, "Writer::overlapping_mut({s:?}..{e:?})");
                for (r, _) in want {
                    if let Some((_, v)) = self.model.at_mut(r.start) {
                        v.off += u64::from(bump);
                    }
                    locked.push(r);
                }
            }
            WOp::FindGap(ref g) => {
                let (w0, w1, size, align, fit, highest) = gap_req::<K>(g);
                let want = model_find_gap::<K>(&self.model, w0, w1, size, align, highest);
                let got = w
                    .find_gap(key(w0)..key(w1), key(size), key(align), fit)
                    .map(|r| wide(&r));
                assert_eq!(
                    got, want,
                    "Writer::find_gap({w0}..{w1}, {size}, {align}, {fit:?})"
                );
            }
            WOp::Overlapping { a, b } => {
                let (s, e) = (K::decode(a), K::decode(b));
                let want = self.model.overlapping(s.to_u128(), e.to_u128());
                let got: Vec<_> = w.overlapping(s..e).map(|(r, v)| (wide(&r), v.0)).collect();
                // An empty or reversed range overlaps nothing (finding F1).
                assert_eq!(got, want, "Writer::overlapping({s:?}..{e:?})");
            }
            WOp::Len => {
                assert_eq!(w.len(), self.model.len(), "Writer::len");
                assert_eq!(w.is_empty(), self.model.is_empty(), "Writer::is_empty");
            }
            WOp::Fill {
                start,
                count,
                len,
                stride,
                with,
            } => {
                let start = K::decode(start).to_u128();
                let len = u128::from(len.max(1) % 16).max(1);
                let stride = len + u128::from(stride % 8);
                for i in 0..u128::from(count) {
                    let s = start + i * stride;
                    let e = s + len;
                    if e > kmax::<K>() {
                        break;
                    }
                    let v = self.new_val(i as u16);
                    self.overwrite(w, locked, Some(v), key(s), key(e), with);
                }
            }
            WOp::Published(ref q) => query(
                map,
                &View {
                    model: before,
                    locked,
                },
                q,
            ),
        }
    }

    /// `insert`/`insert_with` (with `value`) or `remove`/`remove_with` (without) of `s..e`,
    /// checked against the model ([`fuzz_support::overwrite`]); the entries it touched are
    /// locked until the commit.
    fn overwrite(
        &mut self,
        w: &mut Writer<'_, K, V>,
        locked: &mut Vec<Range<u128>>,
        value: Option<Val>,
        s: K,
        e: K,
        with: bool,
    ) {
        let r = s.to_u128()..e.to_u128();
        for (r, _) in self.model.overlapping(r.start, r.end) {
            locked.push(r);
        }
        overwrite(&mut self.model, w, value, r, with);
    }
}

fn gap_req<K: FKey>(g: &GapReq) -> (u128, u128, u128, u128, Fit, bool) {
    let w0 = K::decode(g.w0).to_u128();
    let w1 = K::decode(g.w1).to_u128();
    let size = K::decode_size(g.size).to_u128().max(1);
    let align = decode_align::<K>(g.align).to_u128();
    let fit = if g.highest { Fit::Highest } else { Fit::Lowest };
    (w0, w1, size, align, fit, g.highest)
}

fn model_find_gap<K: FKey>(
    m: &Model<Val>,
    w0: u128,
    w1: u128,
    size: u128,
    align: u128,
    highest: bool,
) -> Option<Range<u128>> {
    let want = m.find_gap(w0, w1, size, align, highest);
    if K::BITS == 8 {
        let brute = m.find_gap_brute(w0, w1, size, align, highest);
        assert_eq!(
            want, brute,
            "harness bug: model find_gap disagrees with brute force"
        );
    }
    want
}

fn query<K: FKey>(map: &RangeMap<K, V>, view: &View<'_>, q: &Query) {
    let m = view.model;
    match *q {
        Query::Get { k } => check_get(map, view, K::decode(k)),
        Query::TryGet { k } => check_try_get(map, view, K::decode(k)),
        Query::Overlapping { a, b, pattern } => {
            let (s, e) = (K::decode(a), K::decode(b));
            check_overlapping(map, view, s..e, pattern, false);
        }
        Query::Iter { pattern } => check_overlapping(map, view, K::ZERO..K::MAX, pattern, true),
        Query::Gaps { a, b, pattern } => {
            let (s, e) = (K::decode(a), K::decode(b));
            let want = m.gaps(s.to_u128(), e.to_u128());
            drive_double_ended(map.gaps(s..e), &want, pattern, "gaps", |got, want| {
                assert_eq!(&wide(&got), want, "gaps({s:?}..{e:?})")
            });
        }
        Query::FindGap(ref g) => {
            let (w0, w1, size, align, fit, highest) = gap_req::<K>(g);
            let want = model_find_gap::<K>(m, w0, w1, size, align, highest);
            let got = map
                .find_gap(key(w0)..key(w1), key(size), key(align), fit)
                .map(|r| wide(&r));
            assert_eq!(got, want, "find_gap({w0}..{w1}, {size}, {align}, {fit:?})");
        }
        Query::Len => {
            assert_eq!(map.len(), m.len(), "len");
            assert_eq!(map.is_empty(), m.is_empty(), "is_empty");
        }
    }
}

fn check_get<K: FKey>(map: &RangeMap<K, V>, view: &View<'_>, k: K) {
    let want = view.model.at(k.to_u128()).map(|(r, v)| (r, *v));
    if let Some((r, _)) = &want {
        if view.is_locked(r) {
            // `get` would wait for this thread's own session.
            return;
        }
    }
    let got = map.get(k).map(|g| (wide(&g.range()), g.0));
    assert_eq!(got, want, "get({k:?})");
}

fn check_try_get<K: FKey>(map: &RangeMap<K, V>, view: &View<'_>, k: K) {
    let want = match view.model.at(k.to_u128()) {
        None => Err(TryGetError::Vacant),
        Some((r, _)) if view.is_locked(&r) => Err(TryGetError::Locked),
        Some((r, v)) => Ok((r, *v)),
    };
    let got = map.try_get(k).map(|g| (wide(&g.range()), g.0));
    assert_eq!(got, want, "try_get({k:?})");
}

fn check_overlapping<K: FKey>(
    map: &RangeMap<K, V>,
    view: &View<'_>,
    range: Range<K>,
    pattern: u32,
    whole: bool,
) {
    let want = view
        .model
        .overlapping(range.start.to_u128(), range.end.to_u128());
    if want.iter().any(|(r, _)| view.is_locked(r)) {
        return; // would wait for this thread's own session
    }
    let it = if whole {
        map.iter()
    } else {
        map.overlapping(range.clone())
    };
    drive_double_ended(it, &want, pattern, "overlapping", |g, want| {
        assert_eq!(
            &(wide(&g.range()), g.0),
            want,
            "overlapping({range:?}) pattern {pattern:#x}"
        )
    });
}

/// The writer's whole view, before its commit.
fn check_writer_full<K: FKey>(w: &Writer<'_, K, V>, m: &Model<Val>) {
    let got: Vec<_> = w
        .overlapping(K::ZERO..K::MAX)
        .map(|(r, v)| (wide(&r), v.0))
        .collect();
    assert_eq!(got, m.entries(), "writer view");
    assert_eq!(w.len(), m.len(), "Writer::len");
    for (r, v) in m.entries() {
        for k in [r.start, r.end - 1] {
            let got = w.get(key(k)).map(|(r, v)| (wide(&r), v.0));
            assert_eq!(got, Some((r.clone(), v)), "Writer::get({k})");
        }
        if r.end < m.max && m.at(r.end).is_none() {
            assert!(
                w.get(key(r.end)).is_none(),
                "Writer::get({}) past an entry",
                r.end
            );
        }
    }
}

/// The published view in full.
fn check_published_full<K: FKey>(map: &RangeMap<K, V>, view: &View<'_>) {
    let m = view.model;
    assert_eq!(map.len(), m.len(), "len");
    assert_eq!(map.is_empty(), m.is_empty(), "is_empty");
    // Order, bounds, node fill and exact gaps, beside the answers checked below.
    assert_eq!(map.fuzz_check_structure(), m.len(), "structure");
    let gaps: Vec<_> = map.gaps(K::ZERO..K::MAX).map(|r| wide(&r)).collect();
    assert_eq!(gaps, m.gaps(0, m.max), "gaps(0..MAX)");
    check_overlapping(map, view, K::ZERO..K::MAX, 0, true);
    check_overlapping(map, view, K::ZERO..K::MAX, u32::MAX, true);
    for (r, _) in m.entries() {
        for k in [r.start, r.end - 1, r.end] {
            check_try_get(map, view, key(k));
            check_get(map, view, key(k));
        }
    }
    check_get(map, view, K::ZERO);
    check_get(map, view, K::MAX);
    check_try_get(map, view, K::MAX);
}
