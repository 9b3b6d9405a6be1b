//! `holes`: removals and put-backs of exactly the removed range, against a reference model.
//!
//! A removal of a whole entry that merges or evens out no node leaves the writer a *hole*
//! (`CowTree::put_back`): a `try_insert` or overwriting `insert` of exactly that range goes
//! back into the old slot with no descent and restores the parents' exact gaps, until any
//! other edit forgets it. Random ranges rarely equal a just-removed one, so `ops` seldom
//! gets there; here most operations pick an existing entry, take it out (`remove_entry`,
//! or `remove`/`remove_with` over it alone or over several whole entries, maybe trimming
//! the neighbours) and insert exactly its range again (`try_insert`, `insert`,
//! `insert_with`), with up to two operations in between that keep the hole (`get_mut`,
//! `overlapping_mut`, queries, a split closure that panics before the tree changes) or
//! forget it (a trim, an insert near the hole that may split its leaf, another removal and
//! put-back), and sometimes a range that differs from the hole by one key at either end.
//! `Fill` grows the map to 2–4 levels and `Thin` shrinks it again, so removals also hit
//! leaves at their minimum (the hole is then not kept). Keys are `u8`, or `u16` in
//! `0..0x4000` or in `0xc000..=MAX` (entries end at `MAX`).
//!
//! Checked: every result against the model (displaced pieces, split calls, errors); after
//! every operation the session's own view near what it touched and its length, and after
//! every removal and put-back its `find_gap` answers around the hole and over the whole
//! key space (the largest free range, one key more); at the end of each session its whole
//! view. Sessions end by `commit`, by dropping the writer, or by a split closure's panic
//! unwinding through it (all three commit); after each, the published view in full
//! (entries, `len`, `gaps`, `get` at every entry's edges, `find_gap`) and the structure
//! of the published tree (`RangeMap::fuzz_check_structure`: order, node fill, exact gap
//! metadata). At the end every value has been dropped exactly once.

#![no_main]

use std::ops::Range;
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::sync::Once;

use arbitrary::Arbitrary;
use fuzz_support::{decode_align, key, kmax, live, overwrite, wide, Counted, FKey, Model, Val};
use libfuzzer_sys::fuzz_target;
use rcu_rangemap::{Fit, InsertErrorKind, RangeMap, Writer};

const MAX_SESSIONS: usize = 24;
const MAX_OPS: usize = 32;
const MAX_MIDS: usize = 2;
/// How many removed ranges a put-back can name (`PutBack::back`).
const MAX_TAKEN: usize = 16;

#[derive(Arbitrary, Debug)]
struct Input {
    /// `u16` keys (else `u8`).
    wide: bool,
    /// `u16` keys in `0xc000..=MAX` (else `0..0x4000`).
    top: bool,
    sessions: Vec<Session>,
}

#[derive(Arbitrary, Debug)]
struct Session {
    ops: Vec<Op>,
    end: End,
}

#[derive(Arbitrary, Debug)]
enum End {
    Commit,
    /// Dropping the writer commits too.
    Drop,
    /// A split closure panics through the writer (`insert_with` cutting the entry `pick`
    /// names): its drop commits what the session did before.
    Unwind {
        pick: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Take an entry out, up to two operations, then put its range back.
    Cycle {
        pick: u16,
        take: Take,
        mids: Vec<Mid>,
        put: Put,
    },
    /// Take an entry out; its hole stays for what follows.
    Take { pick: u16, take: Take },
    /// Insert the range taken `back` removals ago (0: the last one) again.
    PutBack { back: u8, put: Put },
    /// One of the in-between operations on its own.
    Mid(Mid),
    /// Up to 1020 entries into free space: 2–4 levels.
    Fill {
        at: u16,
        count: u8,
        len: u8,
        stride: u8,
    },
    /// Remove every entry but one in `keep` (2–5): leaves merge or sit at their minimum.
    Thin { keep: u8, phase: u8, by_range: bool },
}

/// How an entry leaves.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Take {
    /// `remove_entry` at a key inside it.
    Entry { off: u8 },
    /// `remove` of exactly its range.
    Range,
    /// `remove_with` of exactly its range (its split closure must not be called).
    RangeWith,
    /// `remove` (or `remove_with`) over it and up to 3 whole entries before it, widened
    /// into the free keys around, or cutting into the neighbour on the left (a trim before
    /// the whole ones: the last one's hole stays) or on the right (after: it goes).
    Span {
        before: u8,
        widen_lo: u8,
        widen_hi: u8,
        cut_left: bool,
        cut_right: bool,
        with: bool,
    },
}

/// How a removed range goes back.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Put {
    how: PutHow,
    adjust: Adjust,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PutHow {
    TryInsert,
    Insert,
    InsertWith,
}

/// The range put back: mostly exactly the removed one, else one key off at an end.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Adjust {
    Exact,
    Exact2,
    Exact3,
    Exact4,
    StartMinus,
    StartPlus,
    EndMinus,
    EndPlus,
}

/// What happens between a removal and its put-back; `rel` names an entry by its place
/// next to the last removed range (0: the first entry after it, -1: the last one before).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Mid {
    /// `get_mut` (changes no node).
    GetMut { rel: i8, bump: u8 },
    /// `overlapping_mut` over `n` entries from `rel` (changes no node).
    OverlappingMut { rel: i8, n: u8, bump: u8 },
    /// `Writer::get` at an entry's edges and in the hole.
    Get { rel: i8 },
    /// `Writer::find_gap` in a window around the hole.
    FindGap {
        lo: u8,
        hi: u8,
        dsize: i8,
        align: u8,
        highest: bool,
    },
    /// Cut `amount` keys off one end of an entry.
    Trim { rel: i8, right: bool, amount: u8 },
    /// An insert at `off` from the hole's start: free space (it may split the leaf), the
    /// hole itself, or over neighbours.
    Insert { off: i8, len: u8, how: PutHow },
    /// Another removal: a new hole.
    Take { rel: i8, take: Take },
    /// Another removal and its put-back.
    Churn { rel: i8, take: Take, put: Put },
    /// `insert_with` or `remove_with` cutting an entry, whose split closure panics before
    /// the tree changes (caught: the session goes on, the hole too).
    PanicSplit { rel: i8, insert: bool },
    /// An entry ending at the top of the key space (`MAX` for `u16` near the top).
    Top { len: u8 },
}

type V = Counted<Val>;

/// The payload of the split closures' deliberate panics.
struct Boom;

/// Panics carrying [`Boom`] are expected and caught: keep libFuzzer's hook (which aborts)
/// from seeing them; any other panic still goes to it.
fn quiet_boom() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Boom>() {
                prev(info)
            }
        }));
    });
}

fn boom<K>(_: &mut V, _: Range<K>, _: K) -> V {
    panic_any(Boom)
}

struct Run<K: FKey> {
    model: Model<Val>,
    next_id: u32,
    /// Keys in use: `base..=base + span`.
    base: u128,
    span: u128,
    /// Ranges removed whole, the last one last.
    taken: Vec<Range<u128>>,
    /// Whether the last removal's hole may still be there: no edit since.
    fresh: bool,
    _k: std::marker::PhantomData<K>,
}

fuzz_target!(|input: Input| {
    quiet_boom();
    if input.wide {
        run::<u16>(&input)
    } else {
        run::<u8>(&input)
    }
    assert_eq!(live(), 0, "values leaked or dropped twice");
});

fn run<K: FKey>(input: &Input) {
    let map = RangeMap::<K, V>::new();
    let (base, span) = if K::BITS == 8 {
        (0, kmax::<K>())
    } else if input.top {
        (kmax::<K>() - 0x3fff, 0x3fff)
    } else {
        (0, 0x3fff)
    };
    let mut r = Run::<K> {
        model: Model::new(kmax::<K>()),
        next_id: 0,
        base,
        span,
        taken: Vec::new(),
        fresh: false,
        _k: std::marker::PhantomData,
    };
    for s in input.sessions.iter().take(MAX_SESSIONS) {
        r.session(&map, s);
        r.check_published(&map);
    }
    drop(map);
}

impl<K: FKey> Run<K> {
    fn session(&mut self, map: &RangeMap<K, V>, s: &Session) {
        self.fresh = false;
        let unwound = catch_unwind(AssertUnwindSafe(|| {
            let mut w = map.write();
            for op in s.ops.iter().take(MAX_OPS) {
                self.apply(&mut w, op);
            }
            self.check_writer_full(&w);
            match s.end {
                End::Commit => w.commit(),
                End::Drop => drop(w),
                End::Unwind { pick } => {
                    if let Some((lo, hi)) = self.cuttable(pick) {
                        let v = Counted::new(self.new_val());
                        drop(w.insert_with(key(lo + 1)..key(lo + 2), v, boom));
                        panic!("insert_with into {lo}..{hi}: the split closure was not called");
                    }
                }
            }
        }));
        if unwound.is_err() {
            assert!(
                matches!(s.end, End::Unwind { .. }),
                "harness bug: Boom escaped"
            );
        }
    }

    fn new_val(&mut self) -> Val {
        self.next_id += 1;
        Val {
            id: self.next_id,
            off: u64::from(self.next_id) << 16,
        }
    }

    /// A key from raw input, in the run's key range.
    fn k(&self, raw: u16) -> u128 {
        self.base + u128::from(raw) % (self.span + 1)
    }

    fn nth(&self, i: usize) -> Option<Range<u128>> {
        self.model.m.iter().nth(i).map(|(&lo, &(hi, _))| lo..hi)
    }

    /// The entry `pick` names.
    fn pick(&self, pick: u16) -> Option<(usize, Range<u128>)> {
        let n = self.model.len();
        if n == 0 {
            return None;
        }
        let i = usize::from(pick) % n;
        Some((i, self.nth(i)?))
    }

    /// Where the last removed range was (or the start of the keys).
    fn anchor(&self) -> Range<u128> {
        self.taken
            .last()
            .cloned()
            .unwrap_or(self.base..self.base + 1)
    }

    /// The entry `rel` places from the anchor (0: the first entry at or after it).
    fn rel(&self, rel: i8) -> Option<(usize, Range<u128>)> {
        let a = self.anchor().start;
        let p = self.model.m.range(..a).count() as i64;
        let i = p + i64::from(rel % 5);
        let i = usize::try_from(i).ok()?;
        Some((i, self.nth(i)?))
    }

    /// An entry at or after `pick` with at least 2 keys (so it can be cut inside).
    fn cuttable(&self, pick: u16) -> Option<(u128, u128)> {
        let (i, _) = self.pick(pick)?;
        self.model
            .m
            .iter()
            .skip(i)
            .chain(self.model.m.iter().take(i))
            .find(|(&lo, &(hi, _))| hi - lo >= 2)
            .map(|(&lo, &(hi, _))| (lo, hi))
    }

    fn apply(&mut self, w: &mut Writer<'_, K, V>, op: &Op) {
        match *op {
            Op::Cycle {
                pick,
                take,
                ref mids,
                put,
            } => {
                let Some((i, _)) = self.pick(pick) else {
                    return;
                };
                if !self.take(w, i, take) {
                    return;
                }
                for m in mids.iter().take(MAX_MIDS) {
                    self.mid(w, *m);
                }
                self.put_back(w, 0, put);
            }
            Op::Take { pick, take } => {
                if let Some((i, _)) = self.pick(pick) {
                    self.take(w, i, take);
                }
            }
            Op::PutBack { back, put } => self.put_back(w, usize::from(back), put),
            Op::Mid(m) => self.mid(w, m),
            Op::Fill {
                at,
                count,
                len,
                stride,
            } => {
                let start = self.k(at);
                let len = 1 + u128::from(len % 4);
                let stride = len + u128::from(stride % 4);
                let top = (self.base + self.span).min(kmax::<K>());
                for j in 0..u128::from(count) * 4 {
                    let s = start + j * stride;
                    let e = s + len;
                    if e > top {
                        break;
                    }
                    if self.model.overlapping(s, e).is_empty() {
                        self.try_insert(w, s..e);
                    }
                }
                self.fresh = false;
                self.check_writer_full(w);
            }
            Op::Thin {
                keep,
                phase,
                by_range,
            } => {
                let keep = 2 + usize::from(keep % 4);
                let phase = usize::from(phase) % keep;
                let all: Vec<_> = self.model.m.iter().map(|(&lo, &(hi, _))| lo..hi).collect();
                for (j, r) in all.into_iter().enumerate() {
                    if j % keep == phase {
                        continue;
                    }
                    if by_range {
                        self.overwrite(w, None, r, false);
                    } else {
                        let (got, _) = w.remove_entry(key(r.start)).expect("an entry");
                        assert_eq!(wide(&got), r, "remove_entry");
                        self.model.m.remove(&r.start);
                    }
                }
                self.fresh = false;
                self.check_writer_full(w);
            }
        }
    }

    /// Take entry `i` out as `take` says; false if nothing was taken whole.
    fn take(&mut self, w: &mut Writer<'_, K, V>, i: usize, take: Take) -> bool {
        let Some(r) = self.nth(i) else {
            return false;
        };
        match take {
            Take::Entry { off } => {
                let k = r.start + u128::from(off) % (r.end - r.start);
                let want = self.model.at(k).map(|(r, v)| (r, *v));
                let got = w.remove_entry(key(k)).map(|(r, v)| (wide(&r), v.0));
                assert_eq!(got, want, "remove_entry({k})");
                self.model.m.remove(&r.start);
                self.taken(r.clone(), true);
            }
            Take::Range => {
                self.overwrite(w, None, r.clone(), false);
                self.taken(r.clone(), true);
            }
            Take::RangeWith => {
                self.overwrite(w, None, r.clone(), true);
                self.taken(r.clone(), true);
            }
            Take::Span {
                before,
                widen_lo,
                widen_hi,
                cut_left,
                cut_right,
                with,
            } => {
                let first = i.saturating_sub(usize::from(before % 4));
                let wholes: Vec<Range<u128>> = (first..=i).filter_map(|j| self.nth(j)).collect();
                let (lo, hi) = (wholes[0].start, r.end);
                let prev = self
                    .model
                    .m
                    .range(..lo)
                    .next_back()
                    .map(|(&l, &(h, _))| l..h);
                let next = self.model.m.range(r.end..).next().map(|(&l, &(h, _))| l..h);
                let floor = prev.as_ref().map_or(0, |p| p.end);
                let ceil = next.as_ref().map_or(kmax::<K>(), |n| n.start);
                let mut s = lo - (u128::from(widen_lo) % 4).min(lo - floor);
                let mut e = hi + (u128::from(widen_hi) % 4).min(ceil - hi);
                let mut trims = false;
                if let (true, Some(p)) = (cut_left, &prev) {
                    if p.end - p.start >= 2 {
                        s = p.end - 1;
                    }
                }
                if let (true, Some(n)) = (cut_right, &next) {
                    if n.end - n.start >= 2 {
                        e = n.start + 1;
                        trims = true;
                    }
                }
                self.overwrite(w, None, s..e, with);
                for x in wholes {
                    self.taken(x, false);
                }
                // The hole is the last whole entry's, unless a trim after it forgot it.
                self.fresh = !trims;
            }
        }
        let last = self.anchor();
        self.check_near(w, &last);
        self.check_find_gap(&|r, s, a, f| w.find_gap(r, s, a, f), &last);
        true
    }

    /// Note a range removed whole; `fresh`: its hole may be there.
    fn taken(&mut self, r: Range<u128>, fresh: bool) {
        if self.taken.len() == MAX_TAKEN {
            self.taken.remove(0);
        }
        self.taken.push(r);
        self.fresh = fresh;
    }

    /// Insert the range taken `back` removals ago again, as `put` says.
    fn put_back(&mut self, w: &mut Writer<'_, K, V>, back: usize, put: Put) {
        let n = self.taken.len();
        if n == 0 {
            return;
        }
        let idx = n - 1 - back.min(n - 1);
        let r = self.taken[idx].clone();
        let (s, e) = match put.adjust {
            Adjust::StartMinus => (r.start.wrapping_sub(1), r.end),
            Adjust::StartPlus => (r.start + 1, r.end),
            Adjust::EndMinus => (r.start, r.end - 1),
            Adjust::EndPlus => (r.start, r.end + 1),
            _ => (r.start, r.end),
        };
        let (s, e) = if s < e && e <= kmax::<K>() {
            (s, e)
        } else {
            (r.start, r.end)
        };
        self.insert(w, s..e, put.how);
        self.check_near(w, &r);
        self.check_find_gap(&|r, s, a, f| w.find_gap(r, s, a, f), &r);
    }

    /// Insert `r` as `how` says (it may be taken: `try_insert` must refuse it then).
    fn insert(&mut self, w: &mut Writer<'_, K, V>, r: Range<u128>, how: PutHow) {
        match how {
            PutHow::TryInsert => self.try_insert(w, r),
            PutHow::Insert => {
                let v = self.new_val();
                self.overwrite(w, Some(v), r, false);
            }
            PutHow::InsertWith => {
                let v = self.new_val();
                self.overwrite(w, Some(v), r, true);
            }
        }
    }

    fn try_insert(&mut self, w: &mut Writer<'_, K, V>, r: Range<u128>) {
        let v = self.new_val();
        let got = w.try_insert(key(r.start)..key(r.end), Counted::new(v));
        match self.model.overlapping(r.start, r.end).first() {
            Some((first, _)) => {
                let err = got.expect_err("try_insert into taken keys succeeded");
                assert_eq!(
                    err.kind(),
                    &InsertErrorKind::Occupied {
                        existing: key(first.start)..key(first.end)
                    },
                    "try_insert({r:?})"
                );
                assert_eq!(err.into_value().0, v);
            }
            None => {
                if let Err(err) = got {
                    panic!("try_insert({r:?}) into free space failed: {err:?}");
                }
                self.model.insert_free(r.clone(), v);
                self.fresh = false;
            }
        }
    }

    /// `insert`/`insert_with` (with `value`) or `remove`/`remove_with` (without) of `r`,
    /// checked against the model ([`fuzz_support::overwrite`]).
    fn overwrite(
        &mut self,
        w: &mut Writer<'_, K, V>,
        value: Option<Val>,
        r: Range<u128>,
        with: bool,
    ) {
        overwrite(&mut self.model, w, value, r, with);
        // A removal of whole entries only (the last one's hole) keeps `fresh` as the
        // caller sets it; anything else forgets the hole.
        self.fresh = false;
    }

    fn mid(&mut self, w: &mut Writer<'_, K, V>, m: Mid) {
        let hole = self.anchor();
        match m {
            Mid::GetMut { rel, bump } => {
                let Some((_, r)) = self.rel(rel) else {
                    return;
                };
                let (gr, gv) = w.get_mut(key(r.start)).expect("get_mut of an entry");
                let (_, mv) = self.model.at_mut(r.start).expect("model entry");
                assert_eq!((wide(&gr), gv.0), (r.clone(), *mv), "get_mut({})", r.start);
                gv.off += u64::from(bump);
                mv.off += u64::from(bump);
            }
            Mid::OverlappingMut { rel, n, bump } => {
                let Some((i, r)) = self.rel(rel) else {
                    return;
                };
                let last = self.nth(i + usize::from(n % 4)).map_or(r.end, |x| x.end);
                let (s, e) = (r.start.min(hole.start), last.max(hole.end));
                let want = self.model.overlapping(s, e);
                let got: Vec<_> = w
                    .overlapping_mut(key(s)..key(e))
                    .map(|(r, v)| {
                        let before = v.0;
                        v.off += u64::from(bump);
                        (wide(&r), before)
                    })
                    .collect();
                assert_eq!(got, want, "overlapping_mut({s}..{e})");
                for (r, _) in want {
                    self.model.at_mut(r.start).expect("model entry").1.off += u64::from(bump);
                }
            }
            Mid::Get { rel } => {
                let mut keys = vec![hole.start, hole.end - 1, hole.end];
                if let Some((_, r)) = self.rel(rel) {
                    keys.extend([r.start, r.end - 1, r.end]);
                }
                for k in keys.into_iter().filter(|&k| k < kmax::<K>()) {
                    let want = self.model.at(k).map(|(r, v)| (r, *v));
                    let got = w.get(key(k)).map(|(r, v)| (wide(&r), v.0));
                    assert_eq!(got, want, "Writer::get({k})");
                }
            }
            Mid::FindGap {
                lo,
                hi,
                dsize,
                align,
                highest,
            } => {
                let w0 = hole.start.saturating_sub(u128::from(lo));
                let w1 = (hole.end + u128::from(hi)).min(kmax::<K>());
                let size = (hole.end - hole.start) as i128 + i128::from(dsize % 4);
                let size = size.clamp(1, kmax::<K>() as i128) as u128;
                let align = decode_align::<K>(align % 4).to_u128();
                self.find_gap_is(
                    &|r, s, a, f| w.find_gap(r, s, a, f),
                    w0..w1,
                    size,
                    align,
                    highest,
                );
            }
            Mid::Trim { rel, right, amount } => {
                let Some((_, r)) = self.rel(rel) else {
                    return;
                };
                let n = (1 + u128::from(amount % 4)).min(r.end - r.start);
                let cut = if right {
                    r.end - n..r.end
                } else {
                    r.start..r.start + n
                };
                self.overwrite(w, None, cut, amount & 0x80 != 0);
                self.check_near(w, &r);
            }
            Mid::Insert { off, len, how } => {
                let s = (hole.start as i128 + i128::from(off % 16)).max(0) as u128;
                let e = s + 1 + u128::from(len % 4);
                if e > kmax::<K>() {
                    return;
                }
                self.insert(w, s..e, how);
                self.check_near(w, &(s..e));
            }
            Mid::Take { rel, take } => {
                if let Some((i, _)) = self.rel(rel) {
                    self.take(w, i, take);
                }
            }
            Mid::Churn { rel, take, put } => {
                if let Some((i, _)) = self.rel(rel) {
                    if self.take(w, i, take) {
                        self.put_back(w, 0, put);
                    }
                }
            }
            Mid::PanicSplit { rel, insert } => {
                let Some((_, r)) = self.rel(rel) else {
                    return;
                };
                if r.end - r.start < 2 {
                    return;
                }
                let cut = key::<K>(r.start + 1)..key::<K>(r.start + 2);
                let v = Counted::new(self.new_val());
                let hit = catch_unwind(AssertUnwindSafe(|| {
                    if insert {
                        drop(w.insert_with(cut, v, boom));
                    } else {
                        drop(w.remove_with(cut, boom));
                    }
                }));
                assert!(hit.is_err(), "the split closure of a cut was not called");
                self.check_near(w, &r);
            }
            Mid::Top { len } => {
                let top = (self.base + self.span).min(kmax::<K>());
                let s = top - 1 - u128::from(len % 8).min(top - 1);
                self.insert(w, s..top, PutHow::Insert);
                self.check_near(w, &(s..top));
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Checks

    /// The session's view around `r` and its length.
    fn check_near(&self, w: &Writer<'_, K, V>, r: &Range<u128>) {
        assert_eq!(w.len(), self.model.len(), "Writer::len");
        let s = r.start.saturating_sub(32);
        let e = (r.end + 32).min(kmax::<K>());
        let want = self.model.overlapping(s, e);
        let got: Vec<_> = w
            .overlapping(key(s)..key(e))
            .map(|(r, v)| (wide(&r), v.0))
            .collect();
        assert_eq!(got, want, "Writer::overlapping({s}..{e})");
        for k in [r.start, r.end - 1, r.end] {
            if k < kmax::<K>() {
                let want = self.model.at(k).map(|(r, v)| (r, *v));
                let got = w.get(key(k)).map(|(r, v)| (wide(&r), v.0));
                assert_eq!(got, want, "Writer::get({k})");
            }
        }
    }

    /// `find_gap` (of the session or of the map) against the model.
    fn find_gap_is(
        &self,
        find: &dyn Fn(Range<K>, K, K, Fit) -> Option<Range<K>>,
        within: Range<u128>,
        size: u128,
        align: u128,
        highest: bool,
    ) {
        let fit = if highest { Fit::Highest } else { Fit::Lowest };
        let want = self
            .model
            .find_gap(within.start, within.end, size, align, highest);
        let got = find(
            key(within.start)..key(within.end),
            key(size),
            key(align),
            fit,
        )
        .map(|r| wide(&r));
        assert_eq!(got, want, "find_gap({within:?}, {size}, {align}, {fit:?})");
    }

    /// `find_gap` around `hole` (a range just removed or put back) and over all keys: its
    /// size at the lowest and highest place, aligned, exactly there, and the largest free
    /// range's size and one more.
    fn check_find_gap(
        &self,
        find: &dyn Fn(Range<K>, K, K, Fit) -> Option<Range<K>>,
        hole: &Range<u128>,
    ) {
        let max = kmax::<K>();
        let size = hole.end - hole.start;
        for highest in [false, true] {
            self.find_gap_is(find, 0..max, size, 1, highest);
            self.find_gap_is(find, hole.clone(), size, 1, highest);
            let near = hole.start.saturating_sub(64)..(hole.end + 64).min(max);
            self.find_gap_is(find, near, size, 1, highest);
        }
        let align = 1u128 << (127 - size.leading_zeros());
        self.find_gap_is(find, 0..max, size, align, false);
        let largest = self
            .model
            .gaps(0, max)
            .iter()
            .map(|g| g.end - g.start)
            .max()
            .unwrap_or(0);
        if largest > 0 {
            self.find_gap_is(find, 0..max, largest, 1, false);
        }
        if largest < max {
            self.find_gap_is(find, 0..max, largest + 1, 1, true);
        }
    }

    /// The session's whole view.
    fn check_writer_full(&self, w: &Writer<'_, K, V>) {
        let got: Vec<_> = w
            .overlapping(K::ZERO..K::MAX)
            .map(|(r, v)| (wide(&r), v.0))
            .collect();
        assert_eq!(got, self.model.entries(), "writer view");
        assert_eq!(w.len(), self.model.len(), "Writer::len");
    }

    /// The published view in full, after a commit, and the published tree's structure.
    fn check_published(&self, map: &RangeMap<K, V>) {
        let m = &self.model;
        assert_eq!(map.len(), m.len(), "len");
        assert_eq!(map.fuzz_check_structure(), m.len(), "structure");
        let got: Vec<_> = map.iter().map(|g| (wide(&g.range()), g.0)).collect();
        assert_eq!(got, m.entries(), "published view");
        let gaps: Vec<_> = map.gaps(K::ZERO..K::MAX).map(|r| wide(&r)).collect();
        assert_eq!(gaps, m.gaps(0, m.max), "gaps(0..MAX)");
        for (r, v) in m.entries() {
            for k in [r.start, r.end - 1] {
                let got = map.get(key(k)).map(|g| (wide(&g.range()), g.0));
                assert_eq!(got, Some((r.clone(), v)), "get({k})");
            }
            if r.end < m.max && m.at(r.end).is_none() {
                assert!(
                    map.get(key(r.end)).is_none(),
                    "get({}) past an entry",
                    r.end
                );
            }
        }
        let find = |r, s, a, f| map.find_gap(r, s, a, f);
        for h in self.taken.iter().rev().take(2) {
            self.check_find_gap(&find, h);
        }
        if self.taken.is_empty() {
            self.check_find_gap(&find, &(self.base..self.base + 1));
        }
    }
}
