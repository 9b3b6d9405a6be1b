//! Model tests: random writer sessions against a simple reference model.
//!
//! The reference is a `BTreeMap<start, (end, value)>` of non-overlapping half-open
//! ranges, kept in `u128` so one model serves every key type. Gaps are computed from the
//! model's entries, and `find_gap` both from those gaps and (for small key types) by
//! brute force over every start, so the model itself is cross-checked.
//!
//! Each proptest case runs several writer sessions mixing every `Writer` operation. After
//! every operation the writer's own view (`Writer::get`, `len`, `find_gap`) is compared
//! with the model, and the published view (`RangeMap::try_get`, `len`, `gaps`) with the
//! model as it was before the session (a session is atomic for readers). After every
//! commit the published view is checked in full: `get`, `try_get`, `iter`,
//! `overlapping` (forwards, backwards and from both ends at once), `gaps`, `find_gap` and
//! `len`. A fifth of the sessions are followed by `RangeMap::shrink_to_fit`, which moves
//! every entry and rebuilds the tree before those checks.
//!
//! Case counts: each test has a default (see `cases`), overridable with the
//! `PROPTEST_CASES` environment variable; under Miri the default is 4.

use proptest::prelude::*;
use rcu_rangemap::{EpochPin, Fit, InsertErrorKind, Key, RangeMap, ReadGuard, TryGetError};
use std::collections::BTreeMap;
use std::ops::Range;

// ---------------------------------------------------------------------------------------
// Configuration

fn cases(default: u32) -> u32 {
    if let Some(n) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return n;
    }
    if cfg!(miri) || std::env::var_os("RCU_RANGEMAP_SMALL").is_some() {
        4
    } else {
        default
    }
}

fn config(default: u32) -> ProptestConfig {
    let mut c = ProptestConfig {
        cases: cases(default),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    };
    if cfg!(miri) {
        // Miri runs isolated: no file system for the regression store.
        c.failure_persistence = None;
    }
    c
}

/// Session and op counts per case (smaller under Miri).
fn max_sessions() -> usize {
    if cfg!(miri) {
        3
    } else {
        8
    }
}
fn max_ops() -> usize {
    if cfg!(miri) {
        5
    } else {
        14
    }
}

// ---------------------------------------------------------------------------------------
// Keys: the model works in u128; these convert to and from the key type under test.

trait TestKey: Key + TryFrom<u128> {}
impl<T: Key + TryFrom<u128>> TestKey for T {}

fn k<K: TestKey>(x: u128) -> K {
    match K::try_from(x) {
        Ok(v) => v,
        Err(_) => panic!("key {x} out of range"),
    }
}
fn kr<K: TestKey>(a: u128, b: u128) -> Range<K> {
    k(a)..k(b)
}
fn ur<K: Key>(r: &Range<K>) -> (u128, u128) {
    (r.start.to_u128(), r.end.to_u128())
}

// ---------------------------------------------------------------------------------------
// Values

/// `off` is the "file position" of the range's first key: a value split with the
/// `*_with` operations must keep `off + (key - range.start)` constant for every key.
/// The `Clone` operations copy it unchanged (the model mirrors either rule exactly).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Val {
    id: u32,
    off: u128,
}

/// The split rule for `insert_with` / `remove_with`: the piece `at..whole.end` starts
/// `at - whole.start` keys further into the "file".
fn split_val<K: Key>(v: &mut Val, whole: Range<K>, at: K) -> Val {
    assert!(
        whole.start < at && at < whole.end,
        "split point {at:?} not strictly inside {whole:?}"
    );
    Val {
        id: v.id,
        off: v.off.wrapping_add(at.to_u128() - whole.start.to_u128()),
    }
}

// ---------------------------------------------------------------------------------------
// The reference model

#[derive(Clone, Debug)]
struct Model {
    kmax: u128,
    m: BTreeMap<u128, (u128, Val)>,
}

type Piece = (u128, u128, Val);

impl Model {
    fn new(kmax: u128) -> Self {
        Model {
            kmax,
            m: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.m.len()
    }

    fn get(&self, key: u128) -> Option<Piece> {
        let (&s, (e, v)) = self.m.range(..=key).next_back()?;
        (key < *e).then(|| (s, *e, v.clone()))
    }

    fn entries(&self) -> Vec<Piece> {
        self.m
            .iter()
            .map(|(&s, (e, v))| (s, *e, v.clone()))
            .collect()
    }

    /// Entries overlapping `a..b` (nothing if `a >= b`).
    fn overlapping(&self, a: u128, b: u128) -> Vec<Piece> {
        if a >= b {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some((&s, (e, v))) = self.m.range(..a).next_back() {
            if *e > a {
                out.push((s, *e, v.clone()));
            }
        }
        for (&s, (e, v)) in self.m.range(a..b) {
            out.push((s, *e, v.clone()));
        }
        out
    }

    /// Maximal free ranges inside `a..b`.
    fn gaps(&self, a: u128, b: u128) -> Vec<(u128, u128)> {
        let mut out = Vec::new();
        if a >= b {
            return out;
        }
        let mut cur = a;
        for (s, e, _) in self.overlapping(a, b) {
            if s > cur {
                out.push((cur, s));
            }
            cur = cur.max(e);
        }
        if cur < b {
            out.push((cur, b));
        }
        out
    }

    fn free(&self, a: u128, b: u128) -> bool {
        self.overlapping(a, b).is_empty()
    }

    /// `find_gap` computed from the gap list.
    fn find_gap(
        &self,
        a: u128,
        b: u128,
        size: u128,
        align: u128,
        fit: Fit,
    ) -> Option<(u128, u128)> {
        assert!(size > 0 && align.is_power_of_two());
        let gaps = self.gaps(a, b);
        match fit {
            Fit::Lowest => gaps.iter().find_map(|&(ga, gb)| {
                let s = ga.checked_add(align - 1)? & !(align - 1);
                let e = s.checked_add(size)?;
                (e <= gb).then_some((s, e))
            }),
            Fit::Highest => gaps.iter().rev().find_map(|&(ga, gb)| {
                if gb - ga < size {
                    return None;
                }
                let s = (gb - size) & !(align - 1);
                (s >= ga).then_some((s, s + size))
            }),
        }
    }

    /// `find_gap` by brute force over every aligned start (small key spaces only).
    fn find_gap_brute(
        &self,
        a: u128,
        b: u128,
        size: u128,
        align: u128,
        fit: Fit,
    ) -> Option<(u128, u128)> {
        assert!(self.kmax <= 0xffff);
        let ok = |s: u128| s % align == 0 && s >= a && s + size <= b && self.free(s, s + size);
        let hi = b.saturating_sub(size);
        match fit {
            Fit::Lowest => (a..=hi).find(|&s| ok(s)).map(|s| (s, s + size)),
            Fit::Highest => (a..=hi).rev().find(|&s| ok(s)).map(|s| (s, s + size)),
        }
    }

    /// Remove every key of `a..b`, trimming/splitting entries partly outside; returns the
    /// displaced pieces (clipped to `a..b`) in key order. `with_split` selects the offset
    /// rule of the `*_with` operations instead of plain clones.
    fn cut(&mut self, a: u128, b: u128, with_split: bool) -> Vec<Piece> {
        let mut out = Vec::new();
        for (s, e, v) in self.overlapping(a, b) {
            self.m.remove(&s);
            let piece = |x: u128| {
                if with_split {
                    Val {
                        id: v.id,
                        off: v.off.wrapping_add(x - s),
                    }
                } else {
                    v.clone()
                }
            };
            if s < a {
                self.m.insert(s, (a, v.clone()));
            }
            let (x, y) = (s.max(a), e.min(b));
            out.push((x, y, piece(x)));
            if e > b {
                self.m.insert(b, (e, piece(b)));
            }
        }
        out
    }

    fn insert(&mut self, a: u128, b: u128, v: Val, with_split: bool) -> Vec<Piece> {
        assert!(a < b && b <= self.kmax);
        let out = self.cut(a, b, with_split);
        self.m.insert(a, (b, v));
        out
    }

    fn remove_entry(&mut self, key: u128) -> Option<Piece> {
        let p = self.get(key)?;
        self.m.remove(&p.0);
        Some(p)
    }

    /// Sanity of the model itself.
    fn check_invariants(&self) {
        let mut prev_end = 0;
        for (&s, (e, _)) in &self.m {
            assert!(s < *e && *e <= self.kmax);
            assert!(s >= prev_end);
            prev_end = *e;
        }
    }

    /// Keys where lookups can change: every entry boundary and its neighbours, the ends
    /// of the key space, and `extra`.
    fn probe_keys(&self, extra: &[u128]) -> Vec<u128> {
        let mut keys: Vec<u128> = vec![
            0,
            1,
            2,
            self.kmax / 2,
            self.kmax - 2,
            self.kmax - 1,
            self.kmax,
        ];
        for (&s, (e, _)) in &self.m {
            keys.extend([
                s.saturating_sub(1),
                s,
                s + 1,
                e - 1,
                *e,
                (*e).saturating_add(1).min(self.kmax),
            ]);
        }
        keys.extend_from_slice(extra);
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

// ---------------------------------------------------------------------------------------
// Operations

#[derive(Clone, Debug)]
enum Op {
    /// Raw range: may be empty or reversed.
    TryInsert(u128, u128),
    Insert(u128, u128),
    InsertWith(u128, u128),
    /// Sorted, possibly empty.
    Remove(u128, u128),
    RemoveWith(u128, u128),
    RemoveEntry(u128),
    /// `remove_entry` (or `remove` of the entry's range if `d & 2`), then the same range
    /// back with its value changed by `d`, by `try_insert` (or an overwriting `insert` if
    /// `d & 1`): it goes back through the hole the removal left (`Writer`'s `hole`), and
    /// the commit then keeps the entry instead of publishing a tree (`Writer`'s
    /// `keep_entry`), if the session did nothing else.
    PutBack(u128, u128),
    Get(u128),
    GetMut(u128, u128),
    /// Window (sorted, possibly empty), size, log2 align, highest?
    FindGap(u128, u128, u128, u32, bool),
    Len,
}

/// A query checked against the published map after each commit.
#[derive(Clone, Debug)]
struct Query {
    a: u128,
    b: u128,
    size: u128,
    align_log: u32,
    /// Bit pattern choosing front/back for the double-ended walks.
    pattern: u32,
}

#[derive(Clone, Debug)]
struct Session {
    ops: Vec<Op>,
    queries: Vec<Query>,
    /// Commit with `commit()` (true) or by dropping the writer (false).
    explicit_commit: bool,
    /// A bulk session (hundreds of ops): check only the keys each op touched, not the
    /// whole view, after each op.
    bulk: bool,
    /// Call `RangeMap::shrink_to_fit` after the commit (the checks that follow the commit
    /// then see the moved entries and the rebuilt tree).
    shrink: bool,
}

fn sorted(a: u128, b: u128) -> (u128, u128) {
    (a.min(b), a.max(b))
}

/// A valid (non-empty) range from two points.
fn valid(kmax: u128, a: u128, b: u128) -> (u128, u128) {
    let (a, b) = sorted(a, b);
    if a < b {
        (a, b)
    } else if b < kmax {
        (a, b + 1)
    } else {
        (a - 1, b)
    }
}

fn bits(kmax: u128) -> u32 {
    128 - kmax.leading_zeros()
}

/// Ranges: two arbitrary points, or a point and a short length (clamped at `kmax`).
fn range_strategy(pt: BoxedStrategy<u128>, kmax: u128) -> BoxedStrategy<(u128, u128)> {
    prop_oneof![
        (pt.clone(), pt.clone()),
        (pt, 0u128..6).prop_map(move |(a, len)| (a, a.saturating_add(len).min(kmax))),
    ]
    .boxed()
}

fn size_strategy(pt: BoxedStrategy<u128>, kmax: u128) -> BoxedStrategy<u128> {
    prop_oneof![
        4 => 1u128..12,
        1 => pt.prop_map(|s| s.max(1)),
        1 => (0u128..4).prop_map(move |d| kmax - d),
    ]
    .boxed()
}

fn align_strategy(kmax: u128) -> BoxedStrategy<u32> {
    let b = bits(kmax);
    prop_oneof![3 => 0u32..4, 1 => 0u32..b].boxed()
}

fn op_strategy(pt: BoxedStrategy<u128>, kmax: u128) -> BoxedStrategy<Op> {
    let rg = || range_strategy(pt.clone(), kmax);
    let vr = move |(a, b): (u128, u128)| valid(kmax, a, b);
    prop_oneof![
        3 => rg().prop_map(|(a, b)| Op::TryInsert(a, b)),
        3 => rg().prop_map(move |r| {
            let (a, b) = vr(r);
            Op::Insert(a, b)
        }),
        3 => rg().prop_map(move |r| {
            let (a, b) = vr(r);
            Op::InsertWith(a, b)
        }),
        2 => rg().prop_map(|(a, b)| {
            let (a, b) = sorted(a, b);
            Op::Remove(a, b)
        }),
        2 => rg().prop_map(|(a, b)| {
            let (a, b) = sorted(a, b);
            Op::RemoveWith(a, b)
        }),
        2 => pt.clone().prop_map(Op::RemoveEntry),
        2 => (pt.clone(), 1u128..1000).prop_map(|(a, d)| Op::PutBack(a, d)),
        2 => pt.clone().prop_map(Op::Get),
        2 => (pt.clone(), 1u128..1000).prop_map(|(a, d)| Op::GetMut(a, d)),
        3 => (rg(), size_strategy(pt.clone(), kmax), align_strategy(kmax), any::<bool>())
            .prop_map(|((a, b), size, al, hi)| {
                let (a, b) = sorted(a, b);
                Op::FindGap(a, b, size, al, hi)
            }),
        1 => Just(Op::Len),
    ]
    .boxed()
}

fn query_strategy(pt: BoxedStrategy<u128>, kmax: u128) -> BoxedStrategy<Query> {
    (
        range_strategy(pt.clone(), kmax),
        size_strategy(pt, kmax),
        align_strategy(kmax),
        any::<u32>(),
    )
        .prop_map(|((a, b), size, align_log, pattern)| {
            let (a, b) = sorted(a, b);
            Query {
                a,
                b,
                size,
                align_log,
                pattern,
            }
        })
        .boxed()
}

fn sessions_strategy(pt: BoxedStrategy<u128>, kmax: u128) -> BoxedStrategy<Vec<Session>> {
    let session = (
        prop::collection::vec(op_strategy(pt.clone(), kmax), 0..max_ops()),
        prop::collection::vec(query_strategy(pt, kmax), 0..4),
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(ops, queries, explicit_commit, shrink)| Session {
            ops,
            queries,
            explicit_commit,
            bulk: false,
            shrink,
        });
    prop::collection::vec(session, 1..max_sessions()).boxed()
}

/// Points for wide key types: mostly small keys, some near `K::MAX`.
fn wide_points(kmax: u128) -> BoxedStrategy<u128> {
    prop_oneof![
        6 => 0u128..200,
        2 => (0u128..=200).prop_map(move |d| kmax - d),
        1 => Just(kmax),
        1 => Just(kmax / 2),
    ]
    .boxed()
}

/// Deep trees: a bulk first session of hundreds of short entries (several tree levels
/// at 16 slots a node), then ordinary sessions whose long ranges remove many entries at
/// once (node merges) and whose short ones split entries.
fn dense_sessions_strategy() -> BoxedStrategy<Vec<Session>> {
    let kmax = u16::MAX as u128;
    let pt = (0u128..3000).boxed();
    let n = if cfg!(miri) { 20..40 } else { 100..700 };
    let prefill = prop::collection::vec(
        (pt.clone(), 1u128..5).prop_map(|(a, len)| Op::TryInsert(a, a + len)),
        n,
    )
    .prop_map(|ops| Session {
        ops,
        queries: Vec::new(),
        explicit_commit: true,
        bulk: true,
        shrink: false,
    });
    (prefill, sessions_strategy(pt, kmax))
        .prop_map(|(p, mut rest)| {
            rest.insert(0, p);
            rest
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------
// Checks

fn fit_of(hi: bool) -> Fit {
    if hi {
        Fit::Highest
    } else {
        Fit::Lowest
    }
}

fn model_find_gap(
    model: &Model,
    a: u128,
    b: u128,
    size: u128,
    align: u128,
    fit: Fit,
) -> Option<(u128, u128)> {
    let want = model.find_gap(a, b, size, align, fit);
    if model.kmax <= 0xff {
        assert_eq!(
            want,
            model.find_gap_brute(a, b, size, align, fit),
            "model self-check: find_gap({a}..{b}, size {size}, align {align}, {fit:?})"
        );
    }
    want
}

/// Whether lookups are checked at every key rather than at `Model::probe_keys`: for u8
/// keys, except under Miri, where each lookup costs milliseconds and the probe keys hold
/// every key at which an answer can change.
fn probe_every_key(kmax: u128) -> bool {
    kmax <= 0xff && !cfg!(miri)
}

/// The published map against `model`, in full.
fn check_map<K: TestKey>(map: &RangeMap<K, Val>, model: &Model, queries: &[Query]) {
    model.check_invariants();
    let kmax = model.kmax;
    assert_eq!(map.len(), model.len(), "len");
    assert_eq!(map.is_empty(), model.len() == 0, "is_empty");

    // Point lookups.
    let keys: Vec<u128> = if probe_every_key(kmax) {
        (0..=kmax).collect()
    } else {
        let extra: Vec<u128> = queries.iter().flat_map(|q| [q.a, q.b]).collect();
        model.probe_keys(&extra)
    };
    // One pin held across all of them, as a reader of `get_pinned` would.
    let pin = EpochPin::new();
    let piece = |g: ReadGuard<'_, K, Val>| {
        let (s, e) = ur(&g.range());
        (s, e, (*g).clone())
    };
    for &key in &keys {
        let want = model.get(key);
        assert_eq!(map.get(k(key)).map(piece), want, "get({key})");
        assert_eq!(
            map.get_pinned(k(key), &pin).map(piece),
            want,
            "get_pinned({key})"
        );
        for (how, got) in [
            ("try_get", map.try_get(k(key))),
            ("try_get_pinned", map.try_get_pinned(k(key), &pin)),
        ] {
            match got {
                Ok(g) => assert_eq!(Some(piece(g)), want, "{how}({key})"),
                Err(TryGetError::Vacant) => assert_eq!(want, None, "{how}({key}) said Vacant"),
                Err(e) => panic!("{how}({key}) with no writer active: {e:?}"),
            }
        }
    }

    // Iteration.
    let all = model.entries();
    let got: Vec<Piece> = map
        .iter()
        .map(|g| {
            let (s, e) = ur(&g.range());
            (s, e, (*g).clone())
        })
        .collect();
    assert_eq!(got, all, "iter");
    let got_rev: Vec<Piece> = map
        .iter()
        .rev()
        .map(|g| {
            let (s, e) = ur(&g.range());
            (s, e, (*g).clone())
        })
        .collect();
    let mut all_rev = all.clone();
    all_rev.reverse();
    assert_eq!(got_rev, all_rev, "iter().rev()");

    // Whole-space gaps.
    let gaps: Vec<(u128, u128)> = map.gaps(kr(0, kmax)).map(|r| ur(&r)).collect();
    assert_eq!(gaps, model.gaps(0, kmax), "gaps(0..MAX)");
    if kmax <= 0xff {
        // Brute-force gap runs from a coverage bitmap.
        let mut runs = Vec::new();
        let mut start = None;
        for key in 0..=kmax {
            let free = key < kmax && model.get(key).is_none();
            match (free, start) {
                (true, None) => start = Some(key),
                (false, Some(s)) => {
                    runs.push((s, key));
                    start = None;
                }
                _ => {}
            }
        }
        assert_eq!(gaps, runs, "gaps vs bitmap");
    }

    // Fixed find_gap probes, then the session's queries.
    let mut fg_queries: Vec<(u128, u128, u128, u128)> = vec![
        (0, kmax, 1, 1),
        (0, kmax, kmax, 1),
        (0, kmax, 2, 2),
        (0, kmax, 1, 1 << (bits(kmax) - 1)),
        (kmax - 1, kmax, 1, 1),
    ];
    for q in queries {
        fg_queries.push((q.a, q.b, q.size, 1u128 << q.align_log));
    }
    for &(a, b, size, align) in &fg_queries {
        for fit in [Fit::Lowest, Fit::Highest] {
            let want = model_find_gap(model, a, b, size, align, fit);
            let got = map
                .find_gap(kr(a, b), k(size), k(align), fit)
                .map(|r| ur(&r));
            assert_eq!(
                got, want,
                "find_gap({a}..{b}, size {size}, align {align}, {fit:?})"
            );
        }
    }

    // Windows: overlapping and gaps, forwards, backwards and from both ends.
    for q in queries {
        let (a, b) = (q.a, q.b);
        let want = model.overlapping(a, b);
        let fwd: Vec<Piece> = map
            .overlapping(kr(a, b))
            .map(|g| {
                let (s, e) = ur(&g.range());
                (s, e, (*g).clone())
            })
            .collect();
        assert_eq!(fwd, want, "overlapping({a}..{b})");
        let mut rev: Vec<Piece> = map
            .overlapping(kr(a, b))
            .rev()
            .map(|g| {
                let (s, e) = ur(&g.range());
                (s, e, (*g).clone())
            })
            .collect();
        rev.reverse();
        assert_eq!(rev, want, "overlapping({a}..{b}).rev()");
        // Both ends at once.
        let mut it = map.overlapping(kr(a, b));
        let (mut front, mut back) = (Vec::new(), Vec::new());
        let mut bit = 0;
        loop {
            let from_back = q.pattern >> (bit % 32) & 1 == 1;
            bit += 1;
            let next = if from_back { it.next_back() } else { it.next() };
            match next {
                Some(g) => {
                    let (s, e) = ur(&g.range());
                    let p = (s, e, (*g).clone());
                    if from_back {
                        back.push(p)
                    } else {
                        front.push(p)
                    }
                }
                None => break,
            }
        }
        assert!(
            it.next().is_none() && it.next_back().is_none(),
            "fused after meeting"
        );
        back.reverse();
        front.extend(back);
        assert_eq!(
            front, want,
            "overlapping({a}..{b}) from both ends, pattern {:#x}",
            q.pattern
        );

        let want_gaps = model.gaps(a, b);
        let g: Vec<(u128, u128)> = map.gaps(kr(a, b)).map(|r| ur(&r)).collect();
        assert_eq!(g, want_gaps, "gaps({a}..{b})");
        let mut g: Vec<(u128, u128)> = map.gaps(kr(a, b)).rev().map(|r| ur(&r)).collect();
        g.reverse();
        assert_eq!(g, want_gaps, "gaps({a}..{b}).rev()");
        let mut it = map.gaps(kr(a, b));
        let (mut front, mut back) = (Vec::new(), Vec::new());
        let mut bit = 0;
        loop {
            let from_back = q.pattern >> (bit % 32) & 1 == 1;
            bit += 1;
            let next = if from_back { it.next_back() } else { it.next() };
            match next {
                Some(r) if from_back => back.push(ur(&r)),
                Some(r) => front.push(ur(&r)),
                None => break,
            }
        }
        back.reverse();
        front.extend(back);
        assert_eq!(front, want_gaps, "gaps({a}..{b}) from both ends");
    }
}

/// The published map while a session is open: it must still show `before`, except that
/// entries the session holds may answer `Locked` to `try_get`.
fn check_published_during_session<K: TestKey>(
    map: &RangeMap<K, Val>,
    before: &Model,
    extra: &[u128],
) {
    assert_eq!(map.len(), before.len(), "published len during session");
    for key in before.probe_keys(extra) {
        let want = before.get(key);
        match map.try_get(k(key)) {
            Ok(g) => {
                let (s, e) = ur(&g.range());
                assert_eq!(
                    Some((s, e, (*g).clone())),
                    want,
                    "try_get({key}) during a session must show the pre-session version"
                );
            }
            Err(TryGetError::Locked) => {
                assert!(
                    want.is_some(),
                    "try_get({key}) Locked, but the key was vacant before the session"
                )
            }
            Err(TryGetError::Vacant) => {
                assert_eq!(want, None, "try_get({key}) Vacant during session")
            }
            Err(e) => panic!("try_get({key}) during session: {e:?}"),
        }
    }
    let gaps: Vec<(u128, u128)> = map.gaps(kr(0, before.kmax)).map(|r| ur(&r)).collect();
    assert_eq!(
        gaps,
        before.gaps(0, before.kmax),
        "published gaps during session"
    );
}

fn check_writer<K: TestKey>(w: &rcu_rangemap::Writer<'_, K, Val>, model: &Model, extra: &[u128]) {
    assert_eq!(w.len(), model.len(), "Writer::len");
    let keys: Vec<u128> = if probe_every_key(model.kmax) {
        (0..=model.kmax).collect()
    } else {
        model.probe_keys(extra)
    };
    for key in keys {
        let got = w.get(k(key)).map(|(r, v)| {
            let (s, e) = ur(&r);
            (s, e, v.clone())
        });
        assert_eq!(got, model.get(key), "Writer::get({key})");
    }
}

fn pieces<K: Key>(d: impl IntoIterator<Item = (Range<K>, Val)>) -> Vec<Piece> {
    d.into_iter()
        .map(|(r, v)| {
            let (s, e) = ur(&r);
            (s, e, v)
        })
        .collect()
}

/// Run `sessions` against a fresh map and the model.
fn run<K: TestKey>(kmax: u128, sessions: &[Session]) {
    assert_eq!(K::MAX.to_u128(), kmax);
    let map: RangeMap<K, Val> = RangeMap::new();
    let mut model = Model::new(kmax);
    let mut next_id = 0u32;
    check_map(&map, &model, &[]);
    for session in sessions {
        let before = model.clone();
        let mut w = map.write();
        for op in &session.ops {
            next_id += 1;
            let id = next_id;
            let val = |a: u128| Val {
                id,
                off: (id as u128) << 64 | a,
            };
            let mut extra: Vec<u128> = Vec::new();
            match *op {
                Op::TryInsert(a, b) => {
                    extra.extend([a, b]);
                    let v = val(a);
                    let res = w.try_insert(kr(a, b), v.clone());
                    if a >= b {
                        let err = res.expect_err("try_insert of an empty/reversed range must fail");
                        assert_eq!(ur(&err.range()), (a, b));
                        assert!(
                            matches!(err.kind(), InsertErrorKind::InvalidRange),
                            "try_insert({a}..{b}): {:?}",
                            err.kind()
                        );
                        assert_eq!(err.into_value(), v, "value handed back");
                    } else {
                        let over = model.overlapping(a, b);
                        if over.is_empty() {
                            assert!(
                                res.is_ok(),
                                "try_insert({a}..{b}) into free space failed: {:?}",
                                res.err()
                            );
                            model.m.insert(a, (b, v));
                        } else {
                            let err = res.expect_err("try_insert over taken keys must fail");
                            assert_eq!(ur(&err.range()), (a, b));
                            match err.kind() {
                                InsertErrorKind::Occupied { existing } => {
                                    let ex = ur(existing);
                                    assert!(
                                        over.iter().any(|p| (p.0, p.1) == ex),
                                        "Occupied{{existing: {ex:?}}} is not an entry overlapping {a}..{b}: {over:?}"
                                    );
                                }
                                other => panic!("try_insert({a}..{b}) over {over:?}: {other:?}"),
                            }
                            assert_eq!(err.into_value(), v, "value handed back");
                        }
                    }
                }
                Op::Insert(a, b) => {
                    extra.extend([a, b]);
                    let got = pieces(w.insert(kr(a, b), val(a)));
                    let want = model.insert(a, b, val(a), false);
                    assert_eq!(got, want, "insert({a}..{b}) displaced");
                }
                Op::InsertWith(a, b) => {
                    extra.extend([a, b]);
                    let got = pieces(w.insert_with(kr(a, b), val(a), split_val::<K>));
                    let want = model.insert(a, b, val(a), true);
                    assert_eq!(got, want, "insert_with({a}..{b}) displaced");
                }
                Op::Remove(a, b) => {
                    extra.extend([a, b]);
                    let got = pieces(w.remove(kr(a, b)));
                    let want = if a < b {
                        model.cut(a, b, false)
                    } else {
                        Vec::new()
                    };
                    assert_eq!(got, want, "remove({a}..{b})");
                }
                Op::RemoveWith(a, b) => {
                    extra.extend([a, b]);
                    let got = pieces(w.remove_with(kr(a, b), split_val::<K>));
                    let want = if a < b {
                        model.cut(a, b, true)
                    } else {
                        Vec::new()
                    };
                    assert_eq!(got, want, "remove_with({a}..{b})");
                }
                Op::RemoveEntry(key) => {
                    extra.push(key);
                    let got = w.remove_entry(k(key)).map(|(r, v)| {
                        let (s, e) = ur(&r);
                        (s, e, v)
                    });
                    assert_eq!(got, model.remove_entry(key), "remove_entry({key})");
                }
                Op::PutBack(key, d) => {
                    // Both ways to take a whole entry out and both ways to put a range
                    // back (each of which goes back through the hole the removal left).
                    extra.push(key);
                    let taken = if d & 2 == 0 {
                        w.remove_entry(k(key))
                    } else {
                        let r = w.get(k(key)).map(|(r, _)| r);
                        r.map(|r| {
                            let mut gone = w.remove(r).into_vec();
                            assert_eq!(gone.len(), 1, "remove of one entry's range");
                            gone.remove(0)
                        })
                    };
                    let got = taken.map(|(r, mut v)| {
                        v.off = v.off.wrapping_add(d);
                        if d & 1 == 0 {
                            w.try_insert(r.clone(), v.clone())
                                .expect("the range just removed is free");
                        } else {
                            assert!(w.insert(r.clone(), v.clone()).is_empty());
                        }
                        let (s, e) = ur(&r);
                        (s, e, v)
                    });
                    let want = model.get(key).map(|(s, e, mut v)| {
                        v.off = v.off.wrapping_add(d);
                        model.m.insert(s, (e, v.clone()));
                        (s, e, v)
                    });
                    assert_eq!(got, want, "put back ({key})");
                }
                Op::Get(key) => {
                    extra.push(key);
                    let got = w.get(k(key)).map(|(r, v)| {
                        let (s, e) = ur(&r);
                        (s, e, v.clone())
                    });
                    assert_eq!(got, model.get(key), "Writer::get({key})");
                }
                Op::GetMut(key, d) => {
                    extra.push(key);
                    let got = w.get_mut(k(key)).map(|(r, v)| {
                        v.off = v.off.wrapping_add(d);
                        let (s, e) = ur(&r);
                        (s, e, v.clone())
                    });
                    let want = model.get(key).map(|(s, e, mut v)| {
                        v.off = v.off.wrapping_add(d);
                        model.m.insert(s, (e, v.clone()));
                        (s, e, v)
                    });
                    assert_eq!(got, want, "Writer::get_mut({key})");
                }
                Op::FindGap(a, b, size, al, hi) => {
                    extra.extend([a, b]);
                    let align = 1u128 << al;
                    let fit = fit_of(hi);
                    let want = model_find_gap(&model, a, b, size, align, fit);
                    let got = w.find_gap(kr(a, b), k(size), k(align), fit).map(|r| ur(&r));
                    assert_eq!(
                        got, want,
                        "Writer::find_gap({a}..{b}, size {size}, align {align}, {fit:?})"
                    );
                }
                Op::Len => assert_eq!(w.len(), model.len(), "Writer::len"),
            }
            if session.bulk {
                for &key in &extra {
                    let got = w.get(k(key)).map(|(r, v)| {
                        let (s, e) = ur(&r);
                        (s, e, v.clone())
                    });
                    assert_eq!(got, model.get(key), "Writer::get({key})");
                }
                assert_eq!(w.len(), model.len(), "Writer::len");
            } else {
                check_writer(&w, &model, &extra);
                check_published_during_session(&map, &before, &extra);
            }
        }
        if session.explicit_commit {
            w.commit();
        } else {
            drop(w);
        }
        if session.shrink {
            map.shrink_to_fit();
        }
        check_map(&map, &model, &session.queries);
    }
}

// ---------------------------------------------------------------------------------------
// Tests

proptest! {
    #![proptest_config(config(4000))]

    /// u8 keys: the whole key space is probed (under Miri, `Model::probe_keys`) and
    /// gaps/find_gap are brute-forced.
    #[test]
    fn sessions_u8(sessions in sessions_strategy((0u128..=255).boxed(), 255)) {
        run::<u8>(255, &sessions);
    }

    /// u8 keys crowded near `u8::MAX`.
    #[test]
    fn sessions_u8_high(sessions in sessions_strategy((200u128..=255).boxed(), 255)) {
        run::<u8>(255, &sessions);
    }
}

proptest! {
    #![proptest_config(config(3000))]

    /// u64 keys inside 0..200, plus some near `u64::MAX`.
    #[test]
    fn sessions_u64(sessions in sessions_strategy(wide_points(u64::MAX as u128), u64::MAX as u128)) {
        run::<u64>(u64::MAX as u128, &sessions);
    }

    /// u64 keys inside 0..200 only: dense overlaps.
    #[test]
    fn sessions_u64_small(sessions in sessions_strategy((0u128..200).boxed(), u64::MAX as u128)) {
        run::<u64>(u64::MAX as u128, &sessions);
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn sessions_u128(sessions in sessions_strategy(wide_points(u128::MAX), u128::MAX)) {
        run::<u128>(u128::MAX, &sessions);
    }

    #[test]
    fn sessions_usize(sessions in sessions_strategy(wide_points(usize::MAX as u128), usize::MAX as u128)) {
        run::<usize>(usize::MAX as u128, &sessions);
    }

    #[test]
    fn sessions_u16(sessions in sessions_strategy(
        prop_oneof![3 => 0u128..300, 1 => 65_000u128..=65_535].boxed(),
        u16::MAX as u128,
    )) {
        run::<u16>(u16::MAX as u128, &sessions);
    }
}

proptest! {
    #![proptest_config(config(400))]

    /// u16 keys in 0..3000, trees several levels deep.
    #[test]
    fn sessions_deep_tree(sessions in dense_sessions_strategy()) {
        run::<u16>(u16::MAX as u128, &sessions);
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// Only the splitting operations (plus removals and lookups): every entry must keep
    /// the "file position" invariant `off - start == origin(id)`, where `origin` is fixed
    /// when the value is first inserted.
    #[test]
    fn offsets_survive_splits(ops in prop::collection::vec(
        (0u8..4, 0u128..=255, 0u128..=255),
        1..60,
    )) {
        let map: RangeMap<u8, Val> = RangeMap::new();
        let mut origin: BTreeMap<u32, u128> = BTreeMap::new();
        for (i, (kind, a, b)) in ops.into_iter().enumerate() {
            let id = i as u32;
            let (a, b) = valid(255, a, b);
            {
                let mut w = map.write();
                match kind {
                    0 | 1 => {
                        let off = 1_000_000 + 7 * id as u128;
                        origin.insert(id, off.wrapping_sub(a));
                        for (r, v) in w.insert_with(kr(a, b), Val { id, off }, split_val::<u8>) {
                            prop_assert_eq!(v.off.wrapping_sub(r.start as u128), origin[&v.id]);
                        }
                    }
                    2 => {
                        for (r, v) in w.remove_with(kr(a, b), split_val::<u8>) {
                            prop_assert_eq!(v.off.wrapping_sub(r.start as u128), origin[&v.id]);
                        }
                    }
                    _ => {
                        if let Some((r, v)) = w.remove_entry(a as u8) {
                            prop_assert!(r.contains(&(a as u8)));
                            prop_assert_eq!(v.off.wrapping_sub(r.start as u128), origin[&v.id]);
                        }
                    }
                }
                w.commit();
            }
            for g in map.iter() {
                let r = g.range();
                prop_assert_eq!(g.off.wrapping_sub(r.start as u128), origin[&g.id], "entry {:?}", r);
                // Every key of the entry resolves to it, at the right file position (under
                // Miri, where a lookup costs milliseconds: its first, middle and last key).
                let keys: Vec<u8> = if cfg!(miri) {
                    vec![r.start, r.start + (r.end - r.start) / 2, r.end - 1]
                } else {
                    r.clone().collect()
                };
                for key in keys {
                    let h = map.get(key).expect("covered key");
                    prop_assert_eq!(h.range(), r.clone());
                    prop_assert_eq!(&*h, &*g);
                }
            }
        }
    }
}

/// Hand-picked edge cases near `K::MAX` and with extreme aligns.
#[test]
fn edges_near_max() {
    let map: RangeMap<u8, u32> = RangeMap::new();
    assert_eq!(map.find_gap(0..255, 255, 1, Fit::Lowest), Some(0..255));
    assert_eq!(map.find_gap(0..255, 255, 1, Fit::Highest), Some(0..255));
    assert_eq!(map.find_gap(0..255, 1, 128, Fit::Highest), Some(128..129));
    assert_eq!(map.find_gap(0..255, 128, 128, Fit::Highest), Some(0..128));
    assert_eq!(map.find_gap(1..255, 128, 128, Fit::Lowest), None);
    assert_eq!(map.find_gap(0..255, 255, 2, Fit::Lowest), Some(0..255));
    assert_eq!(map.find_gap(1..255, 254, 2, Fit::Lowest), None);
    assert_eq!(map.find_gap(1..255, 253, 2, Fit::Highest), Some(2..255));
    assert_eq!(map.find_gap(250..250, 1, 1, Fit::Lowest), None);
    {
        let mut w = map.write();
        w.try_insert(254..255, 1).unwrap();
        let err = w.try_insert(255..255, 2).unwrap_err();
        assert!(matches!(err.kind(), InsertErrorKind::InvalidRange));
        assert_eq!(err.into_value(), 2);
        #[allow(clippy::reversed_empty_ranges)]
        let err = w.try_insert(255..0, 3).unwrap_err();
        assert!(matches!(err.kind(), InsertErrorKind::InvalidRange));
        let err = w.try_insert(200..255, 4).unwrap_err();
        match err.kind() {
            InsertErrorKind::Occupied { existing } => assert_eq!(existing.clone(), 254..255),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.find_gap(0..255, 1, 1, Fit::Highest), Some(253..254));
        assert_eq!(w.find_gap(0..255, 2, 2, Fit::Highest), Some(252..254));
        assert_eq!(w.find_gap(254..255, 1, 1, Fit::Lowest), None);
    }
    assert_eq!(*map.get(254).unwrap(), 1);
    assert!(map.get(255).is_none());
    assert_eq!(map.try_get(255).err(), Some(TryGetError::Vacant));
    let gaps: Vec<_> = map.gaps(0..255).collect();
    assert_eq!(gaps, vec![0..254]);
    let gaps: Vec<_> = map.gaps(254..255).collect();
    assert!(gaps.is_empty());

    let big: RangeMap<u64, ()> = RangeMap::new();
    {
        let mut w = big.write();
        w.try_insert(u64::MAX - 1..u64::MAX, ()).unwrap();
        w.try_insert(0..1, ()).unwrap();
    }
    assert_eq!(
        big.find_gap(0..u64::MAX, u64::MAX - 2, 1, Fit::Lowest),
        Some(1..u64::MAX - 1)
    );
    assert_eq!(
        big.find_gap(0..u64::MAX, u64::MAX - 1, 1, Fit::Lowest),
        None
    );
    assert_eq!(
        big.find_gap(0..u64::MAX, 1, 1 << 63, Fit::Highest),
        Some(1 << 63..(1 << 63) + 1)
    );
    assert_eq!(
        big.find_gap(0..u64::MAX, 1 << 63, 1 << 63, Fit::Lowest),
        None
    );
    assert_eq!(
        big.find_gap(0..u64::MAX, (1 << 63) - 2, 1 << 63, Fit::Lowest),
        Some(1 << 63..u64::MAX - 1)
    );
    assert!(big.get(u64::MAX).is_none());
    assert!(big.get(u64::MAX - 1).is_some());
}
