//! Support shared by the fuzz targets: key decoding (so collisions and `K::MAX` edges are
//! frequent), a reference model of the map, and values that count their own lives.
//!
//! The model keeps ranges as `u128` so one model serves `u8` and `u16` keys; it is the
//! obvious `BTreeMap<start, (end, value)>` of disjoint half-open ranges, with gaps and
//! `find_gap` computed from it (and, for `u8`, `find_gap` also by brute force over every
//! start, so the model checks itself).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use rcu_rangemap::{Key, Writer};

// ---------------------------------------------------------------------------------------
// Keys

/// A key type under test, decoded from raw fuzz input.
pub trait FKey: Key + TryFrom<u128> {
    /// Key bits.
    const BITS: u32;
    /// A key from raw input. `u8` uses the low byte (every key collides often). `u16`
    /// uses the top two bits to pick a cluster: near 0, near the middle, near `MAX`
    /// (`MAX` included), or anywhere (multiples of 4), so most keys still collide and
    /// ranges spanning clusters leave huge gaps next to tiny ones.
    fn decode(raw: u16) -> Self;
    /// A size (for `find_gap` and allocation) from raw input: small, medium, huge (near
    /// `MAX`) or anywhere. May be zero.
    fn decode_size(raw: u16) -> Self;
}

impl FKey for u8 {
    const BITS: u32 = 8;
    fn decode(raw: u16) -> Self {
        raw as u8
    }
    fn decode_size(raw: u16) -> Self {
        match raw >> 14 {
            0 => (raw & 0xf) as u8,
            1 => (raw & 0x3f) as u8,
            2 => u8::MAX - (raw & 0xf) as u8,
            _ => raw as u8,
        }
    }
}

impl FKey for u16 {
    const BITS: u32 = 16;
    fn decode(raw: u16) -> Self {
        let lo = raw & 0x3fff;
        match raw >> 14 {
            0 => lo & 0xff,
            1 => 0x7f80 + (lo & 0xff),
            2 => u16::MAX - (lo & 0xff),
            _ => lo << 2,
        }
    }
    fn decode_size(raw: u16) -> Self {
        let lo = raw & 0x3fff;
        match raw >> 14 {
            0 => lo & 0xf,
            1 => lo & 0x1ff,
            2 => u16::MAX - (lo & 0xff),
            _ => lo << 2,
        }
    }
}

/// `x` as a key; panics if it does not fit (a harness bug).
pub fn key<K: FKey>(x: u128) -> K {
    match K::try_from(x) {
        Ok(k) => k,
        Err(_) => panic!("harness bug: key {x} does not fit"),
    }
}

/// `K::MAX` widened.
pub fn kmax<K: FKey>() -> u128 {
    K::MAX.to_u128()
}

/// A range widened to `u128`.
pub fn wide<K: FKey>(r: &Range<K>) -> Range<u128> {
    r.start.to_u128()..r.end.to_u128()
}

/// A range narrowed to `K`.
pub fn narrow<K: FKey>(r: &Range<u128>) -> Range<K> {
    key::<K>(r.start)..key::<K>(r.end)
}

/// A power-of-two alignment for `K` from raw input.
pub fn decode_align<K: FKey>(raw: u8) -> K {
    key::<K>(1u128 << (u32::from(raw) % K::BITS))
}

// ---------------------------------------------------------------------------------------
// The reference model

/// Disjoint half-open ranges in `0..=max` (the key `max` itself is never covered).
#[derive(Clone, Debug)]
pub struct Model<T> {
    /// start -> (end, value)
    pub m: BTreeMap<u128, (u128, T)>,
    /// `K::MAX`.
    pub max: u128,
}

/// One expected call of a split closure: the entry's range, the cut, the value passed.
pub type SplitCall<T> = (Range<u128>, u128, T);

/// What [`Model::remove`] gives back: the displaced pieces in key order, and the split
/// calls made, in order.
pub type Removed<T> = (Vec<(Range<u128>, T)>, Vec<SplitCall<T>>);

impl<T: Clone + PartialEq + std::fmt::Debug> Model<T> {
    /// An empty model for keys up to `max`.
    pub fn new(max: u128) -> Self {
        Model {
            m: BTreeMap::new(),
            max,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// The entry holding `k`.
    pub fn at(&self, k: u128) -> Option<(Range<u128>, &T)> {
        let (&lo, (hi, v)) = self.m.range(..=k).next_back()?;
        (k < *hi).then_some((lo..*hi, v))
    }

    /// The entry holding `k`, mutably.
    pub fn at_mut(&mut self, k: u128) -> Option<(Range<u128>, &mut T)> {
        let (&lo, (hi, v)) = self.m.range_mut(..=k).next_back()?;
        (k < *hi).then_some((lo..*hi, v))
    }

    /// Entries overlapping `s..e`, in key order (nothing if `s >= e`).
    pub fn overlapping(&self, s: u128, e: u128) -> Vec<(Range<u128>, T)> {
        if s >= e {
            return Vec::new();
        }
        let mut out = Vec::new();
        // The entry starting before `s` may reach into the range.
        if let Some((&lo, (hi, v))) = self.m.range(..s).next_back() {
            if *hi > s {
                out.push((lo..*hi, v.clone()));
            }
        }
        for (&lo, (hi, v)) in self.m.range(s..e) {
            out.push((lo..*hi, v.clone()));
        }
        out
    }

    /// All entries in key order.
    pub fn entries(&self) -> Vec<(Range<u128>, T)> {
        self.m
            .iter()
            .map(|(&lo, (hi, v))| (lo..*hi, v.clone()))
            .collect()
    }

    /// Insert into free space (the caller checked it is free).
    pub fn insert_free(&mut self, r: Range<u128>, v: T) {
        assert!(
            r.start < r.end && r.end <= self.max,
            "model: bad range {r:?}"
        );
        assert!(
            self.overlapping(r.start, r.end).is_empty(),
            "model: {r:?} not free"
        );
        self.m.insert(r.start, (r.end, v));
    }

    /// Remove every key of `s..e` the way `Writer::remove_with` does: returns the displaced
    /// pieces in key order and the split calls it makes, in order. `split(v, whole, at)`
    /// returns the value for `at..whole.end` (and leaves `v` for `whole.start..at`).
    pub fn remove(
        &mut self,
        s: u128,
        e: u128,
        split: &mut dyn FnMut(&T, Range<u128>, u128) -> T,
    ) -> Removed<T> {
        let mut out = Vec::new();
        let mut calls = Vec::new();
        for (r, v) in self.overlapping(s, e) {
            let (lo, hi) = (r.start, r.end);
            self.m.remove(&lo);
            match (lo < s, hi > e) {
                (false, false) => out.push((r, v)),
                (true, false) => {
                    calls.push((lo..hi, s, v.clone()));
                    let mid = split(&v, lo..hi, s);
                    out.push((s..hi, mid));
                    self.m.insert(lo, (s, v));
                }
                (false, true) => {
                    calls.push((lo..hi, e, v.clone()));
                    let right = split(&v, lo..hi, e);
                    out.push((lo..e, v));
                    self.m.insert(e, (hi, right));
                }
                (true, true) => {
                    calls.push((lo..hi, s, v.clone()));
                    let mid = split(&v, lo..hi, s);
                    calls.push((s..hi, e, mid.clone()));
                    let right = split(&mid, s..hi, e);
                    out.push((s..e, mid));
                    self.m.insert(lo, (s, v));
                    self.m.insert(e, (hi, right));
                }
            }
        }
        (out, calls)
    }

    /// The maximal free ranges inside `w0..w1`, in key order.
    pub fn gaps(&self, w0: u128, w1: u128) -> Vec<Range<u128>> {
        let mut out = Vec::new();
        if w0 >= w1 {
            return out;
        }
        let mut cur = w0;
        for (r, _) in self.overlapping(w0, w1) {
            if r.start > cur {
                out.push(cur..r.start);
            }
            cur = cur.max(r.end);
        }
        if cur < w1 {
            out.push(cur..w1);
        }
        out
    }

    /// The lowest (or highest) free `size` keys starting at a multiple of `align` inside
    /// `w0..w1`, from the gaps.
    pub fn find_gap(
        &self,
        w0: u128,
        w1: u128,
        size: u128,
        align: u128,
        highest: bool,
    ) -> Option<Range<u128>> {
        assert!(size > 0 && align.is_power_of_two());
        let gaps = self.gaps(w0, w1);
        let fit = |g: &Range<u128>| -> Option<Range<u128>> {
            if g.end - g.start < size {
                return None;
            }
            let st = if highest {
                (g.end - size) & !(align - 1)
            } else {
                (g.start + align - 1) & !(align - 1)
            };
            (st >= g.start && st + size <= g.end).then(|| st..st + size)
        };
        if highest {
            gaps.iter().rev().find_map(fit)
        } else {
            gaps.iter().find_map(fit)
        }
    }

    /// [`find_gap`](Self::find_gap) by brute force over every start (small key types only).
    pub fn find_gap_brute(
        &self,
        w0: u128,
        w1: u128,
        size: u128,
        align: u128,
        highest: bool,
    ) -> Option<Range<u128>> {
        assert!(self.max <= 0xffff, "brute force is for small keys");
        let n = self.max as usize + 1;
        // prefix[i] = number of covered keys below i
        let mut covered = vec![0u32; n + 1];
        for (&lo, (hi, _)) in &self.m {
            for k in lo..*hi {
                covered[k as usize + 1] = 1;
            }
        }
        for i in 0..n {
            covered[i + 1] += covered[i];
        }
        let ok = |st: u128| -> bool {
            st.is_multiple_of(align)
                && st >= w0
                && st + size <= w1
                && st + size <= self.max
                && covered[(st + size) as usize] == covered[st as usize]
        };
        if highest {
            (0..=self.max)
                .rev()
                .find(|&st| ok(st))
                .map(|st| st..st + size)
        } else {
            (0..=self.max).find(|&st| ok(st)).map(|st| st..st + size)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Counted values

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    /// The serials of this thread's values alive now (see [`Counted`]).
    static ALIVE: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
    static NEXT_SERIAL: Cell<u64> = const { Cell::new(0) };
}

/// Values alive in this thread's accounting (created or cloned, minus dropped). Must be 0
/// when a single-threaded run has dropped its map and everything it handed out.
pub fn live() -> i64 {
    LIVE.with(|l| l.get())
}

/// Forget this thread's live values: for a run that leaked some on purpose (a leaked
/// `Writer` leaks its session's new entries), before the next run starts from zero.
pub fn forget_live() {
    LIVE.with(|l| l.set(0));
    ALIVE.with(|a| a.borrow_mut().clear());
}

/// A value that counts itself in [`live`], and carries a serial of its own: a second drop
/// of the same value, or of a bitwise copy of it (what a map that dropped a value it had
/// already handed out would drop), panics.
#[derive(Debug, PartialEq)]
pub struct Counted<T>(pub T, Serial);

/// A [`Counted`] value's identity; not part of its equality.
#[derive(Debug)]
pub struct Serial(u64);

impl PartialEq for Serial {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Counted<T> {
    /// A new counted value.
    pub fn new(t: T) -> Self {
        LIVE.with(|l| l.set(l.get() + 1));
        let serial = NEXT_SERIAL.with(|n| {
            let s = n.get();
            n.set(s + 1);
            s
        });
        ALIVE.with(|a| a.borrow_mut().insert(serial));
        Counted(t, Serial(serial))
    }
}

impl<T: Clone> Clone for Counted<T> {
    fn clone(&self) -> Self {
        Counted::new(self.0.clone())
    }
}

impl<T: Default> Default for Counted<T> {
    fn default() -> Self {
        Counted::new(T::default())
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        LIVE.with(|l| l.set(l.get() - 1));
        let serial = self.1 .0;
        let was_alive = ALIVE.with(|a| a.borrow_mut().remove(&serial));
        assert!(was_alive, "value #{serial} dropped twice");
    }
}

impl<T> std::ops::Deref for Counted<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Counted<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// Drive a double-ended iterator from both ends as `pattern`'s bits say (bit i clear:
/// `next`, set: `next_back`) and check each answer against `expected` (what a front-to-back
/// walk yields). Calls `check(got, want)` for every item; also checks the iterator is
/// exhausted from both ends afterwards.
pub fn drive_double_ended<I, E, W>(
    mut it: I,
    expected: &[W],
    pattern: u32,
    what: &str,
    mut check: impl FnMut(E, &W),
) where
    I: DoubleEndedIterator<Item = E>,
    W: std::fmt::Debug,
{
    let (mut i, mut j) = (0usize, expected.len());
    let mut step = 0u32;
    while i < j {
        let back = (pattern >> (step % 32)) & 1 == 1;
        step += 1;
        if back {
            match it.next_back() {
                Some(got) => check(got, &expected[j - 1]),
                None => panic!(
                    "{what}: next_back ended early, expected {:?}",
                    &expected[i..j]
                ),
            }
            j -= 1;
        } else {
            match it.next() {
                Some(got) => check(got, &expected[i]),
                None => panic!("{what}: next ended early, expected {:?}", &expected[i..j]),
            }
            i += 1;
        }
    }
    assert!(it.next().is_none(), "{what}: next after the end yielded");
    assert!(
        it.next_back().is_none(),
        "{what}: next_back after the end yielded"
    );
}

// ---------------------------------------------------------------------------------------
// Values with an offset, and the check of an overwriting insert or a removal

/// The value `ops` and `holes` store: an id (per insert) and an offset that `_with` splits
/// move like a file offset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Val {
    pub id: u32,
    pub off: u64,
}

/// The split `insert` and `remove` make (they clone the value), for [`Model::remove`].
pub fn clone_split(v: &Val, _whole: Range<u128>, _at: u128) -> Val {
    *v
}

/// The split the targets' `_with` closures make: the piece from `at` on gets the offset
/// moved by `at - whole.start`.
pub fn offset_split(v: &Val, whole: Range<u128>, at: u128) -> Val {
    Val {
        id: v.id,
        off: v.off + (at - whole.start) as u64,
    }
}

/// `insert`/`insert_with` (with `value`) or `remove`/`remove_with` (without) of `r` in the
/// session `w`, checked against `model` (the pieces displaced, in order, and the split
/// calls, in order); then `model` does the same.
pub fn overwrite<K: FKey>(
    model: &mut Model<Val>,
    w: &mut Writer<'_, K, Counted<Val>>,
    value: Option<Val>,
    r: Range<u128>,
    with: bool,
) {
    let (s, e) = (key::<K>(r.start), key::<K>(r.end));
    let mut calls: Vec<SplitCall<Val>> = Vec::new();
    let split = |v: &mut Counted<Val>, whole: Range<K>, at: K| -> Counted<Val> {
        let whole = wide(&whole);
        let at = at.to_u128();
        calls.push((whole.clone(), at, v.0));
        Counted::new(offset_split(&v.0, whole, at))
    };
    let got: Vec<(Range<u128>, Val)> = match (value, with) {
        (Some(v), false) => w.insert(s..e, Counted::new(v)),
        (Some(v), true) => w.insert_with(s..e, Counted::new(v), split),
        (None, false) => w.remove(s..e),
        (None, true) => w.remove_with(s..e, split),
    }
    .into_iter()
    .map(|(r, v)| (wide(&r), v.0))
    .collect();
    let (want, want_calls) = if with {
        model.remove(r.start, r.end, &mut offset_split)
    } else {
        model.remove(r.start, r.end, &mut clone_split)
    };
    let what = if value.is_some() { "insert" } else { "remove" };
    assert_eq!(got, want, "{what}(with={with}) of {r:?}: displaced pieces");
    if with {
        assert_eq!(calls, want_calls, "{what}_with of {r:?}: split calls");
    }
    if let Some(v) = value {
        model.insert_free(r, v);
    }
}
