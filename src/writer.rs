//! `Writer`: one exclusive session of changes, published atomically at commit.
//!
//! Owns: the edit operations (insert, overwrite, remove, split), their order of effects
//! (lock, then run user code, then change the tree), and the commit sequence. Must not:
//! touch node memory directly (that is `tree::cow`) or free anything a reader may still
//! reach (retirement goes through `reclaim` after the new root is published).

use core::alloc::Layout;
use core::fmt;
use core::mem::ManuallyDrop;
use core::ops::{Deref, Range};
use core::ptr::NonNull;

use parking_lot::RwLockWriteGuard;
use smallvec::SmallVec;

use crate::entry::{Entry, Held};
use crate::error::{InsertError, InsertErrorKind};
use crate::key::Key;
use crate::lock::Session;
use crate::map::{want, Fit, RangeMap, TreeNode};
use crate::reclaim::{Blocks, Retired};
use crate::tree::cow::{CowTree, EntrySwap, Hole};
use crate::tree::gap;
use crate::tree::node::{NodeMut, NodeRef};
use crate::tree::search::{self, Found};

/// An exclusive writer session on a [`RangeMap`], from [`RangeMap::write`].
///
/// Every change is made on a private copy-on-write version of the tree and published with
/// one atomic root store when the session is committed ([`commit`](Self::commit), or drop).
/// A session that only put back a range it removed (`remove_entry` then an insert of the
/// same range, or an overwriting `insert` of exactly one entry's range) publishes no new
/// version: the entry stays and takes the new value, as [`get_mut`](Self::get_mut) would
/// have changed it, so readers' caches keep the tree.
/// Readers keep seeing the previous version meanwhile — except the entries the session has
/// *locked*: every entry it changes or removes (and every entry `get_mut` lends), which
/// `get` waits for and `try_get` reports as `Locked` until the commit. Locking an entry
/// waits for its current readers to drop their guards, and turns new readers away so the
/// wait ends.
///
/// Deadlock hazard: locking waits for readers, so a thread must not lock an entry while it
/// holds a [`ReadGuard`](crate::ReadGuard) on it, and a reader that holds one guard and then
/// waits in `get` for an entry a session holds can deadlock if that session goes on to lock
/// the entry of its guard. Drop guards before the next blocking lookup, or use
/// [`RangeMap::try_get`] for nested ones. Nor may the thread that holds a writer wait for
/// its own session: on the map, [`write`](RangeMap::write), [`clone`](RangeMap::clone)
/// and [`shrink_to_fit`](RangeMap::shrink_to_fit) always would, and `get`, `overlapping`,
/// `iter` and `{:?}` would once they reach an entry the session has locked. There, use the
/// session's own view ([`get`](Self::get), [`overlapping`](Self::overlapping)) or
/// `try_get`.
///
/// A panic inside the session (in a value's `Clone`, a split closure, or the caller's own
/// code) unwinds through the writer's drop, which commits what was done before the panic:
/// every operation either happened whole or not at all, except that a value a split closure
/// was cutting may be left as the closure left it (see [`insert_with`](Self::insert_with)).
///
/// A writer that is leaked (`mem::forget`, a reference cycle) never commits: its session
/// holds the writers' lock and its locked entries for good, so later sessions,
/// [`RangeMap::clone`], and lookups and iterators that reach those entries block
/// (`try_get` answers `Locked`), and none of its changes is ever published. The values it
/// moved out are the caller's: the map's drop does not drop them again.
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::<u64, &str>::new();
/// let mut w = map.write();
/// w.insert(0..100, "a");
/// let cut: Vec<_> = w.insert(40..60, "b").into_iter().collect();
/// assert_eq!(cut, [(40..60, "a")]);
/// assert!(map.get(50).is_none()); // not published yet
/// w.commit();
/// assert_eq!(*map.get(50).unwrap(), "b");
/// assert_eq!(map.len(), 3); // 0..40 "a", 40..60 "b", 60..100 "a"
/// ```
pub struct Writer<'a, K: Key, V> {
    map: &'a RangeMap<K, V>,
    /// The writers' lock, held exclusively; released fairly at commit.
    lock: ManuallyDrop<RwLockWriteGuard<'a, ()>>,
    session: Session,
    /// The working root (see [`CowTree`]).
    root: *mut TreeNode<K, V>,
    /// The map's [`Scratch`], ours while we hold `lock` (`RangeMap`'s invariant). Borrowed
    /// only for the length of one call ([`scratch`](Self::scratch), [`tree`](Self::tree)),
    /// so no reference to it outlives the unlock at commit.
    scratch: NonNull<Scratch<K, V>>,
    len: usize,
    /// Whether [`relocate`](Self::relocate) ran: it moves entries into new blocks on
    /// purpose, so the commit must not put one back in its old block (`keep_entry`).
    relocated: bool,
    /// The place the last removal of a whole entry ([`remove_entry`](Self::remove_entry), or
    /// [`remove`](Self::remove) of a range that holds it) emptied, while the working
    /// tree is as that removal left it: every edit goes through [`tree`](Self::tree), which
    /// forgets it. A `try_insert` or `insert` of exactly that range goes back there with no
    /// descent and no check ([`CowTree::put_back`]), so churn that removes a range and puts
    /// it back with a new value pays for one descent, and leaves no gap to compute at commit.
    hole: Option<Hole<K>>,
}

/// What a map's writer sessions carry from one session to the next: the free blocks that
/// nodes and entries are allocated from, the blocks retired by recent commits (see
/// [`Blocks`]), and empty lists kept for their capacity. It lives in the map (see
/// `RangeMap`'s invariants) and stays there: the session that holds the writers' lock
/// borrows it for one call at a time (see `Writer::scratch`).
///
/// After every session that ended, `retired` and `removed` are empty. A session that never
/// ends (its `Writer` leaked) leaves them as they were: see [`Scratch::moved_out`].
pub(crate) struct Scratch<K: Key, V> {
    blocks: Blocks,
    /// Published nodes the session replaced (see [`CowTree`]): retired at commit.
    retired: Vec<*mut TreeNode<K, V>>,
    /// Entries unlinked by the session, each write-locked by it and its value moved out:
    /// detached at commit, then retired (or kept, see `Writer`'s commit, step 1).
    removed: Vec<NonNull<Entry<K, V>>>,
}

impl<K: Key, V> Scratch<K, V> {
    /// The map's slabs, which every node and entry of it comes from.
    pub(crate) fn blocks(&mut self) -> &mut Blocks {
        &mut self.blocks
    }

    /// The entries whose values a session moved out and that it never detached, in address
    /// order: empty unless a `Writer` was leaked (`mem::forget`, a reference cycle), so
    /// that its session never ended. Then some of them may still be in the published
    /// tree, attached but with no value, and the map's drop must not drop one there.
    pub(crate) fn moved_out(&mut self) -> &[NonNull<Entry<K, V>>] {
        self.removed.sort_unstable();
        &self.removed
    }

    /// Nothing kept yet (allocates nothing).
    pub(crate) fn new() -> Self {
        Scratch {
            blocks: Blocks::new([
                NodeMut::<K, Entry<K, V>>::layout(0),
                NodeMut::<K, Entry<K, V>>::layout(1),
                Layout::new::<Entry<K, V>>(),
            ]),
            retired: Vec::new(),
            removed: Vec::new(),
        }
    }
}

/// A piece being cut out of an entry, planned before the tree changes.
enum Plan<V> {
    /// The entry lies inside the range: it leaves whole.
    Whole,
    /// The entry sticks out on the left: it keeps `lo..start`; `mid` is `start..hi`.
    Left { mid: V },
    /// The entry sticks out on the right: it keeps `end..hi` with value `right`; its
    /// current value (cut to `lo..end`) leaves.
    Right { right: V },
    /// The entry sticks out on both sides: it keeps `lo..start`; `mid` is `start..end`
    /// and `right` becomes a new entry `end..hi`.
    Both { mid: V, right: V },
}

impl<'a, K: Key, V> Writer<'a, K, V> {
    pub(crate) fn new(map: &'a RangeMap<K, V>) -> Self {
        let lock = map.writers.write();
        let session = map.domain.begin();
        let scratch = map.scratch_ptr();
        // SAFETY: we hold the writers' lock exclusively, so the scratch is ours (`RangeMap`'s
        // invariant); the borrow ends before the writer is built.
        let blocks = unsafe { &mut (*scratch.as_ptr()).blocks };
        // Blocks back from their grace period first, so that a trim at the session's start
        // counts them free.
        map.recycler.take(blocks);
        blocks.begin_session();
        Writer {
            map,
            lock: ManuallyDrop::new(lock),
            session,
            root: map.root_for_writer(),
            scratch,
            len: map.len(),
            relocated: false,
            hole: None,
        }
    }

    /// The map's scratch, for the length of one call.
    #[inline]
    fn scratch(&mut self) -> &mut Scratch<K, V> {
        // SAFETY: we hold the writers' lock until our drop ends (`RangeMap`'s invariant makes
        // the scratch ours meanwhile), and `&mut self` keeps this borrow unique.
        unsafe { &mut *self.scratch.as_ptr() }
    }

    /// The working tree, for one edit (which may move the hole's range: see `Hole`).
    #[inline]
    fn tree(&mut self) -> CowTree<'_, K, Entry<K, V>> {
        self.hole = None;
        let session = self.session.get();
        // SAFETY: as in `scratch`; disjoint fields of it.
        let s = unsafe { &mut *self.scratch.as_ptr() };
        // SAFETY: we hold the writers' lock, so the published root our working root started
        // from stays live and only this session retires its nodes; `session` is the active
        // one; `s.retired` is what the edits of this session listed (CowTree's invariant,
        // kept by always editing through this view).
        unsafe { CowTree::new(&mut self.root, session, &mut s.retired, &mut s.blocks) }
    }

    /// The working root, read-only.
    #[inline]
    fn root(&self) -> NodeRef<'_, K, Entry<K, V>> {
        // SAFETY: the working root is live for the session (CowTree's invariant), and no
        // edit can run while `&self` is borrowed.
        unsafe { NodeRef::new(NonNull::new_unchecked(self.root)) }
    }

    /// The entry of the working tree holding `key`.
    fn find(&self, key: K) -> Option<Found<Entry<K, V>, K>> {
        search::lookup(self.root(), key)
    }

    /// Write-lock an entry of the working tree (or one this session just unlinked).
    fn hold(&self, e: NonNull<Entry<K, V>>) -> Held<K, V> {
        // SAFETY: callers pass an entry of the working tree or one they just unlinked from it
        // (attached and live until the commit); the session is active; callers hold at most
        // one `Held` per entry.
        unsafe { Held::lock(e, &self.map.domain, self.session) }
    }

    /// Number of entries in the session's view.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, ()>::new();
    /// let mut w = map.write();
    /// w.insert(0..5, ());
    /// assert_eq!((w.len(), map.len()), (1, 0)); // the session sees its own insert
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the session's view has no entries.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, ()>::new();
    /// map.write().insert(0..5, ());
    /// let mut w = map.write();
    /// w.remove(0..5);
    /// assert!(w.is_empty() && !map.is_empty()); // until the commit
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Insert `value` for `range` into free space. O(log n).
    ///
    /// # Errors
    /// Hands `value` back in an [`InsertError`] if `range` is empty or reversed
    /// ([`InsertErrorKind::InvalidRange`]) or any key of it is taken
    /// ([`InsertErrorKind::Occupied`]); the map is unchanged.
    ///
    /// ```
    /// use rcu_rangemap::{InsertErrorKind, RangeMap};
    ///
    /// let map = RangeMap::<u8, i32>::new();
    /// let mut w = map.write();
    /// assert!(w.try_insert(0..10, 1).is_ok());
    /// let e = w.try_insert(5..5, 2).unwrap_err();
    /// assert_eq!(e.kind(), &InsertErrorKind::InvalidRange);
    /// ```
    pub fn try_insert(&mut self, range: Range<K>, value: V) -> Result<(), InsertError<K, V>> {
        if range.start >= range.end {
            return Err(InsertError::new(
                InsertErrorKind::InvalidRange,
                range,
                value,
            ));
        }
        if self.hole_is(&range) {
            // Free: see `Hole`.
            self.link(range.start, range.end, value);
            return Ok(());
        }
        // One descent decides and places.
        let place = search::place(self.root(), range.start);
        if !place.is_free(range.start, range.end) {
            return Err(self.occupied(range, value));
        }
        let (trail, pos) = (place.trail, place.rank);
        let session = self.session;
        let mut tree = self.tree();
        let e = Entry::alloc(tree.blocks(), value, session);
        tree.insert_at(&trail, pos, range.start, range.end, e);
        self.len += 1;
        Ok(())
    }

    /// The error for a `try_insert` of `range`, which overlaps an entry.
    #[cold]
    fn occupied(&self, range: Range<K>, value: V) -> InsertError<K, V> {
        let f = search::first_overlapping(self.root(), range.start, range.end)
            .expect("an overlapping entry");
        InsertError::new(
            InsertErrorKind::Occupied {
                existing: f.lo..f.hi,
            },
            range,
            value,
        )
    }

    /// Whether `range` is exactly the hole the last removal left (see `hole`).
    fn hole_is(&self, range: &Range<K>) -> bool {
        self.hole
            .as_ref()
            .is_some_and(|h| h.lo == range.start && h.hi == range.end)
    }

    /// Insert an entry for `lo..hi`, which is free in the working tree: back into the hole
    /// if that is where it was, else where a descent places it.
    fn link(&mut self, lo: K, hi: K, value: V) {
        let hole = self.hole.take().filter(|h| h.lo == lo && h.hi == hi);
        debug_assert!(search::place(self.root(), lo).is_free(lo, hi));
        let session = self.session;
        let mut tree = self.tree();
        let e = Entry::alloc(tree.blocks(), value, session);
        match hole {
            Some(h) => tree.put_back(h, e),
            None => tree.insert(lo, hi, e),
        }
        self.len += 1;
    }

    /// Replace `old`, the held entry of the slot starting at `at` whose value was taken, by
    /// a new entry for `range` (inside the old one) holding `value`. Entries never change
    /// range (see `Entry`), so a trim is a replacement: the old entry leaves at commit like
    /// a removed one, and readers that find it in an older version restart (it is detached).
    fn replace(&mut self, at: K, old: NonNull<Entry<K, V>>, range: Range<K>, value: V) {
        self.scratch().removed.push(old);
        let session = self.session;
        let mut tree = self.tree();
        let e = Entry::alloc(tree.blocks(), value, session);
        tree.replace(at, range.start, range.end, e);
    }

    /// Overwrite: insert `value` for `range`, trimming or splitting the entries it overlaps.
    /// Returns the displaced pieces in key order (the caller drops them). Split pieces get
    /// clones of the value; use [`insert_with`](Self::insert_with) when a value must learn
    /// where it was cut. O(log n + k) for k displaced entries.
    ///
    /// # Panics
    /// If `range` is empty or reversed (use [`try_insert`](Self::try_insert) for an error
    /// value instead).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, &str>::new();
    /// let mut w = map.write();
    /// w.insert(0..30, "old");
    /// let displaced = w.insert(10..20, "new");
    /// assert_eq!(displaced.into_vec(), [(10..20, "old")]);
    /// let all: Vec<_> = w.overlapping(0..30).map(|(r, v)| (r, *v)).collect();
    /// assert_eq!(all, [(0..10, "old"), (10..20, "new"), (20..30, "old")]);
    /// ```
    pub fn insert(&mut self, range: Range<K>, value: V) -> Displaced<K, V>
    where
        V: Clone,
    {
        self.insert_with(range, value, |v, _, _| v.clone())
    }

    /// Overwrite, telling values where they are cut: `split(&mut v, whole, at)` is called
    /// for an entry `whole` cut at key `at`; it must leave `v` describing
    /// `whole.start..at` and return the value for `at..whole.end` (like `Vec::split_off`).
    ///
    /// # Panics
    /// If `range` is empty or reversed. If `split` panics, the tree is as before the call,
    /// `value` is dropped, and a value that `split` had already cut keeps the state it was
    /// left in (its entry's range is unchanged).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// // A file mapping: the value is the file offset of the range's first key.
    /// let map = RangeMap::<u64, u64>::new();
    /// let mut w = map.write();
    /// w.insert_with(0x1000..0x5000, 0, |_, _, _| unreachable!());
    /// let split = |off: &mut u64, whole: std::ops::Range<u64>, at: u64| *off + (at - whole.start);
    /// let out = w.insert_with(0x2000..0x3000, 999, split);
    /// assert_eq!(out.into_iter().collect::<Vec<_>>(), [(0x2000..0x3000, 0x1000)]);
    /// assert_eq!(w.get(0x3000), Some((0x3000..0x5000, &0x2000)));
    /// ```
    pub fn insert_with<F>(&mut self, range: Range<K>, value: V, split: F) -> Displaced<K, V>
    where
        F: FnMut(&mut V, Range<K>, K) -> V,
    {
        assert!(
            range.start < range.end,
            "Writer::insert: empty or reversed range {range:?}"
        );
        let out = self.remove_with(range.clone(), split);
        self.link(range.start, range.end, value);
        out
    }

    /// Remove every key in `range`: entries inside leave whole, entries partly outside are
    /// trimmed or split (pieces get clones). Returns what was removed, in key order. An
    /// empty range removes nothing. O(log n + k).
    ///
    /// # Panics
    /// If `range` is reversed.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, char>::new();
    /// let mut w = map.write();
    /// w.insert(0..10, 'a');
    /// w.insert(10..20, 'b');
    /// let gone: Vec<_> = w.remove(5..12).into_iter().collect();
    /// assert_eq!(gone, [(5..10, 'a'), (10..12, 'b')]);
    /// assert_eq!(w.len(), 2);
    /// ```
    pub fn remove(&mut self, range: Range<K>) -> Displaced<K, V>
    where
        V: Clone,
    {
        self.remove_with(range, |v, _, _| v.clone())
    }

    /// [`remove`](Self::remove), telling values where they are cut (see
    /// [`insert_with`](Self::insert_with) for `split`'s contract and its panics).
    ///
    /// # Panics
    /// If `range` is reversed.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// // A file mapping: the value is the file offset of the range's first key.
    /// let map = RangeMap::<u64, u64>::new();
    /// let mut w = map.write();
    /// w.insert(0x1000..0x5000, 0);
    /// let split = |off: &mut u64, whole: std::ops::Range<u64>, at: u64| *off + (at - whole.start);
    /// let gone = w.remove_with(0x2000..0x3000, split);
    /// assert_eq!(gone.into_vec(), [(0x2000..0x3000, 0x1000)]);
    /// assert_eq!(w.get(0x1000), Some((0x1000..0x2000, &0)));
    /// assert_eq!(w.get(0x3000), Some((0x3000..0x5000, &0x2000)));
    /// ```
    pub fn remove_with<F>(&mut self, range: Range<K>, mut split: F) -> Displaced<K, V>
    where
        F: FnMut(&mut V, Range<K>, K) -> V,
    {
        assert!(
            range.start <= range.end,
            "Writer::remove: reversed range {range:?}"
        );
        let (s, e) = (range.start, range.end);
        let mut out = Displaced::default();
        if s == e {
            return out;
        }
        // 1. Find and lock (waits for readers; no user code).
        let mut hits: SmallVec<[Found<Entry<K, V>, K>; 4]> = SmallVec::new();
        search::for_each_overlapping(self.root(), s, e, &mut |f| hits.push(f));
        let mut held: SmallVec<[Held<K, V>; 4]> = hits.iter().map(|f| self.hold(f.entry)).collect();
        // 2. Cut values (user code; the tree is untouched, so a panic here changes nothing
        //    but the value being cut).
        let mut plans: SmallVec<[Plan<V>; 4]> = SmallVec::new();
        for (f, h) in hits.iter().zip(held.iter_mut()) {
            let (lo, hi) = (f.lo, f.hi);
            let whole = lo..hi;
            let plan = match (lo < s, hi > e) {
                (false, false) => Plan::Whole,
                (true, false) => Plan::Left {
                    mid: split(h.value_mut(), whole, s),
                },
                (false, true) => Plan::Right {
                    right: split(h.value_mut(), whole, e),
                },
                (true, true) => {
                    let mut mid = split(h.value_mut(), whole, s);
                    let right = split(&mut mid, s..hi, e);
                    Plan::Both { mid, right }
                }
            };
            plans.push(plan);
        }
        // 3. Change the tree (no user code).
        for ((f, h), plan) in hits.into_iter().zip(held.drain(..)).zip(plans) {
            let (lo, hi) = (f.lo, f.hi);
            match plan {
                Plan::Whole => {
                    self.hole = self.tree().remove_present(lo).1;
                    self.scratch().removed.push(h.ptr());
                    self.len -= 1;
                    out.items.push((lo..hi, h.take_value()));
                }
                Plan::Left { mid } => {
                    let old = h.ptr();
                    let kept = h.take_value();
                    self.replace(lo, old, lo..s, kept);
                    out.items.push((s..hi, mid));
                }
                Plan::Right { right } => {
                    let old = h.ptr();
                    let left = h.take_value();
                    self.replace(lo, old, e..hi, right);
                    out.items.push((lo..e, left));
                }
                Plan::Both { mid, right } => {
                    let old = h.ptr();
                    let kept = h.take_value();
                    self.replace(lo, old, lo..s, kept);
                    self.link(e, hi, right);
                    out.items.push((s..e, mid));
                }
            }
        }
        out
    }

    /// Remove the whole entry holding `key`; no `Clone` needed. O(log n).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u64, String>::new();
    /// let mut w = map.write();
    /// w.insert(0..10, "x".to_string());
    /// assert_eq!(w.remove_entry(3), Some((0..10, "x".to_string())));
    /// assert_eq!(w.remove_entry(3), None);
    /// ```
    pub fn remove_entry(&mut self, key: K) -> Option<(Range<K>, V)> {
        let place = search::place(self.root(), key);
        let f = place.holding(key)?;
        let (trail, slot) = (place.trail, place.rank - 1);
        // Unlink from the working tree first and lock after: the lock's read-modify-write
        // waits for the entry's line, which then comes in while the path is copied (for
        // writing: readers' counts keep it in their caches). Readers see only published
        // versions, so the order within the session is theirs to ignore; the entry stays
        // live until this session's commit retires it.
        crate::sync::prefetch_write(f.entry.as_ptr().cast(), core::mem::size_of::<Entry<K, V>>());
        self.hole = self.tree().remove_at(trail, slot).1;
        let h = self.hold(f.entry);
        self.scratch().removed.push(h.ptr());
        self.len -= 1;
        Some((f.lo..f.hi, h.take_value()))
    }

    /// Keep only the entries for which `keep(range, &value)` returns `true`; remove the
    /// others whole (no `Clone` needed) and hand them back in key order. O(n + k log n) for
    /// `k` removed.
    ///
    /// `keep` sees every entry of the session's view once, in key order, before anything is
    /// removed: if it panics, the session's view is as it was before the call. It sees the
    /// values by shared reference, since lending one mutably would write-lock every entry
    /// kept (to change values as well, use [`overlapping_mut`](Self::overlapping_mut)
    /// first). Each entry removed is write-locked as by [`remove_entry`](Self::remove_entry),
    /// which waits for its current readers; readers see all of the removed entries gone at
    /// once, at the commit.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map: RangeMap<u64, &str> =
    ///     [(0..10, "heap"), (10..20, "stack"), (30..40, "heap")].into();
    /// let gone = map.write().retain(|_, v| *v != "heap");
    /// assert_eq!(gone.into_vec(), vec![(0..10, "heap"), (30..40, "heap")]);
    /// assert_eq!(map.len(), 1);
    /// assert_eq!(*map.get(15).unwrap(), "stack");
    /// ```
    pub fn retain<F>(&mut self, mut keep: F) -> Displaced<K, V>
    where
        F: FnMut(Range<K>, &V) -> bool,
    {
        let mut gone: Vec<K> = Vec::new();
        search::for_each_overlapping(self.root(), K::ZERO, K::MAX, &mut |f| {
            // SAFETY: as in `get`: an entry of the working tree, written only by this
            // session, which `&mut self` keeps from writing during the walk.
            if !keep(f.lo..f.hi, unsafe { f.entry.as_ref().value() }) {
                gone.push(f.lo);
            }
        });
        let mut out = Displaced::default();
        out.items.reserve(gone.len());
        for lo in gone {
            let piece = self.remove_entry(lo);
            debug_assert!(
                piece.is_some(),
                "the walk listed an entry that is not there"
            );
            out.items.extend(piece);
        }
        out
    }

    /// Remove every entry (no `Clone` needed) and hand them back in key order: what
    /// `retain(|_, _| false)` does. O(n log n); readers see the map empty from the commit on.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map: RangeMap<u8, char> = [(0..1, 'a'), (1..255, 'b')].into();
    /// let mut w = map.write();
    /// assert_eq!(w.clear().len(), 2);
    /// assert!(w.is_empty());
    /// w.commit();
    /// assert!(map.is_empty() && map.get(0).is_none());
    /// ```
    pub fn clear(&mut self) -> Displaced<K, V> {
        self.retain(|_, _| false)
    }

    /// The entry holding `key` in the session's view (its own changes included). Does not
    /// lock the entry. O(log n).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, char>::new();
    /// let mut w = map.write();
    /// w.insert(0..10, 'a');
    /// assert_eq!(w.get(9), Some((0..10, &'a')));
    /// assert_eq!(w.get(10), None);
    /// assert!(map.get(9).is_none()); // not published yet
    /// ```
    pub fn get(&self, key: K) -> Option<(Range<K>, &V)> {
        let f = self.find(key)?;
        // SAFETY: the entry is in the working tree, so attached with an initialised value;
        // only this session writes it, and `&self` excludes that for the borrow's length.
        let v = unsafe { f.entry.as_ref().value() };
        Some((f.lo..f.hi, v))
    }

    /// The entry holding `key`, write-locked and lent mutably: waits for its current readers
    /// to leave; readers then wait (`get`) or are refused (`try_get`) until the commit.
    /// O(log n).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u64, u32>::new();
    /// map.write().insert(0..10, 1);
    /// let mut w = map.write();
    /// *w.get_mut(4).unwrap().1 += 1;
    /// w.commit();
    /// assert_eq!(*map.get(0).unwrap(), 2);
    /// ```
    pub fn get_mut(&mut self, key: K) -> Option<(Range<K>, &mut V)> {
        let f = self.find(key)?;
        let mut h = self.hold(f.entry);
        // SAFETY: `h` proves the session holds the entry (readers excluded until commit),
        // and `&mut self` makes this the only access for the borrow's length.
        let v = unsafe { &mut *(h.value_mut() as *mut V) };
        Some((f.lo..f.hi, v))
    }

    /// [`RangeMap::find_gap`] on the session's own view.
    ///
    /// # Panics
    /// If `size` is zero or `align` is not a power of two.
    ///
    /// ```
    /// use rcu_rangemap::{Fit, RangeMap};
    ///
    /// // Allocate in one session: find a place, then take it.
    /// let map = RangeMap::<u64, &str>::new();
    /// let mut w = map.write();
    /// w.insert(0..0x1000, "reserved");
    /// let at = w.find_gap(0..0x10000, 0x2000, 0x2000, Fit::Lowest).expect("room");
    /// assert_eq!(at, 0x2000..0x4000);
    /// w.try_insert(at, "mine").expect("the gap is free");
    /// w.commit();
    /// assert_eq!(*map.get(0x3fff).unwrap(), "mine");
    /// ```
    pub fn find_gap(&self, within: Range<K>, size: K, align: K, fit: Fit) -> Option<Range<K>> {
        gap::find_gap(self.root(), want(within, size, align), fit)
    }

    /// Entries of the session's view overlapping `range`, in key order (no locking); nothing
    /// for an empty or reversed range.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, u8>::new();
    /// let mut w = map.write();
    /// w.insert(0..10, 1);
    /// w.insert(10..20, 2);
    /// w.insert(30..40, 3);
    /// let hit: Vec<_> = w.overlapping(5..31).map(|(r, v)| (r, *v)).collect();
    /// assert_eq!(hit, [(0..10, 1), (10..20, 2), (30..40, 3)]);
    /// ```
    pub fn overlapping(&self, range: Range<K>) -> impl Iterator<Item = (Range<K>, &V)> + '_ {
        let mut v: Vec<(Range<K>, &V)> = Vec::new();
        search::for_each_overlapping(self.root(), range.start, range.end, &mut |f| {
            // SAFETY: as in `get`.
            v.push((f.lo..f.hi, unsafe { f.entry.as_ref().value() }));
        });
        v.into_iter()
    }

    /// Entries of the session's view overlapping `range`, in key order, each write-locked
    /// (waiting for its readers, as [`get_mut`](Self::get_mut) does) and lent mutably.
    /// Nothing for an empty or reversed range. O(log n + k).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, u32>::new();
    /// let mut w = map.write();
    /// for i in 0..4 {
    ///     w.insert(i * 10..i * 10 + 10, i);
    /// }
    /// for (_, v) in w.overlapping_mut(15..25) {
    ///     *v += 100;
    /// }
    /// assert_eq!(w.get(15).map(|(_, v)| *v), Some(101));
    /// assert_eq!(w.get(25).map(|(_, v)| *v), Some(102));
    /// assert_eq!(w.get(35).map(|(_, v)| *v), Some(3));
    /// ```
    pub fn overlapping_mut(
        &mut self,
        range: Range<K>,
    ) -> impl Iterator<Item = (Range<K>, &mut V)> + '_ {
        let mut hits: Vec<Found<Entry<K, V>, K>> = Vec::new();
        search::for_each_overlapping(self.root(), range.start, range.end, &mut |f| hits.push(f));
        let mut out = Vec::with_capacity(hits.len());
        for f in hits {
            let mut h = self.hold(f.entry);
            // SAFETY: as in `get_mut`; the entries are distinct, so the borrows are disjoint,
            // and `&mut self` is held for as long as any of them lives.
            out.push((f.lo..f.hi, unsafe { &mut *(h.value_mut() as *mut V) }));
        }
        out.into_iter()
    }

    /// Move the entries from `from` on, at most `budget` of them, each into a new block
    /// with its value (the lowest free block while the map packs); the nodes on their paths
    /// are copied as for any change. Each is locked as by `get_mut` (waiting for its
    /// readers) and replaced like a trimmed entry, with its own range. Returns the key to
    /// go on from, or `None` after the last entry. For [`RangeMap::shrink_to_fit`].
    pub(crate) fn relocate(&mut self, from: K, budget: usize) -> Option<K> {
        self.relocated = true;
        let mut at = from;
        for _ in 0..budget {
            let f = search::first_overlapping(self.root(), at, K::MAX)?;
            let old = f.entry;
            let value = self.hold(old).take_value();
            self.replace(f.lo, old, f.lo..f.hi, value);
            at = f.hi;
        }
        Some(at)
    }

    /// Rebuild the working tree over the same entries with evenly filled nodes, in the
    /// blocks allocated next ([`CowTree::rebuild`]). For [`RangeMap::shrink_to_fit`].
    pub(crate) fn rebuild(&mut self) {
        self.tree().rebuild();
    }

    /// The map's slabs and retired blocks, for the length of one call.
    pub(crate) fn blocks(&mut self) -> &mut Blocks {
        &mut self.scratch().blocks
    }

    /// Publish the session: one atomic root store (none if the session only put a range
    /// back, see [`Writer`]), then every entry it locked becomes readable. Same as dropping
    /// the writer.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, u8>::new();
    /// let mut w = map.write();
    /// w.insert(0..10, 1);
    /// w.commit();
    /// assert_eq!(*map.get(3).unwrap(), 1);
    /// {
    ///     let mut w = map.write();
    ///     w.insert(10..20, 2);
    /// } // dropped: committed all the same
    /// assert_eq!(map.len(), 2);
    /// ```
    pub fn commit(self) {}
}

/// A session's only change, one range's entry ([`CowTree::only_entry_swapped`]).
type Swap<K, V> = EntrySwap<K, Entry<K, V>>;

impl<K: Key, V> Writer<'_, K, V> {
    /// Whether all the session changed is that one range it removed is back, as a new
    /// entry with the same bounds ([`CowTree::only_entry_swapped`]); if so, with the
    /// removed entry's index in `removed`. Sessions that change the number of entries
    /// (most that change more than that) are turned away without a look at the tree, and
    /// so are [`relocate`](Self::relocate)'s, whose point is the new block.
    fn only_entry_swapped(&mut self) -> Option<(Swap<K, V>, usize)> {
        if self.len != self.map.len() || self.scratch().removed.is_empty() || self.relocated {
            return None;
        }
        // SAFETY: the published root stays allocated while we hold the writers' lock: only a
        // session retires its nodes, and ours retires nothing before step 4 of its commit.
        let published = unsafe { NodeRef::new(NonNull::new_unchecked(self.map.root_for_writer())) };
        let swap = self.tree().only_entry_swapped(published)?;
        let at = self.scratch().removed.iter().position(|&e| e == swap.old)?;
        Some((swap, at))
    }

    /// Publish a session that only swapped one range's entry without publishing anything:
    /// the removed entry, write-locked by the session since it was unlinked, stays in the
    /// published tree and takes the new entry's value (as `get_mut` would have changed it),
    /// and the session's nodes and the new entry, never published, go back to the slabs.
    /// Readers find the same entry as before, refused until step 3 of the commit unlocks
    /// it, then with the new value, so the session still looks atomic to them; no published
    /// node or root is written, so readers keep every line of the tree in their caches.
    ///
    /// A remove and re-insert of one range is what W2's and W3's churn does, and W2's
    /// writer beside one reader spent 1.6 – 3× the cycles alone on copying the path and
    /// walking down it, as the reader kept the lines (benches/analysis.md, "W2's writer:
    /// where the shared lines cost").
    fn keep_entry(&mut self, swap: Swap<K, V>, at: usize) {
        // SAFETY: the new entry is the working tree's only (`only_entry_swapped` found it in
        // a node born in this session, and the published tree's slot for its range holds
        // `old`), so no other thread can reach it; its value is initialised, and it is read
        // just this once: the block is reused below.
        let value = unsafe { Entry::take_value(swap.new) };
        let s = self.scratch();
        s.removed.swap_remove(at);
        // SAFETY: `old` was in `removed`, so this session holds it write-locked and moved its
        // value out (`Scratch::removed`); from here on it is no longer removed.
        unsafe { Entry::refill(swap.old, value) };
        // SAFETY: the new entry is a block of the entry slab (`Entry::alloc`), never
        // published and unreachable once the working tree is discarded below; its value was
        // moved out just above, so only bytes remain.
        unsafe {
            s.blocks.put(Retired::new(
                swap.new.as_ptr() as *mut u8,
                Layout::new::<Entry<K, V>>(),
            ))
        };
        // SAFETY: `swap` is what `only_entry_swapped` returned, and no edit ran since.
        unsafe { self.tree().discard(&swap) };
    }
}

impl<K: Key, V> Drop for Writer<'_, K, V> {
    fn drop(&mut self) {
        // 0. The gap metadata the edits left stale (`CowTree::fix_gaps`): published nodes
        //    hold exact gaps.
        self.tree().fix_gaps();
        // 1. – 3., in `LockDomain::commit`'s order: publish the new version (Release
        //    inside), unless all the session did was put a range it removed back
        //    (`keep_entry`); detach the removed entries; unlock every entry this session
        //    locked, at once.
        let (map, session, scratch) = (self.map, self.session, self.scratch);
        map.domain.commit(
            session,
            || match self.only_entry_swapped() {
                Some((swap, at)) => self.keep_entry(swap, at),
                None => map.publish(self.root, self.len),
            },
            || {
                // SAFETY: as in `scratch` (the publish step's borrow of it has ended).
                let removed = unsafe { &(*scratch.as_ptr()).removed };
                removed.iter().map(|e| {
                    // SAFETY: removed entries stay allocated until retired in step 4.
                    unsafe { &e.as_ref().lock }
                })
            },
        );
        // SAFETY: as in `scratch`; this borrow ends before step 5 ends our claim to it.
        let scratch = unsafe { &mut *scratch.as_ptr() };
        let Scratch {
            blocks,
            retired,
            removed,
        } = scratch;
        // 4. Retire what the new version no longer reaches (retire-after-unlink): into the
        //    map's limbo, which goes to the collector a batch at a time.
        for n in retired.drain(..) {
            // SAFETY: a published node this session replaced, so unreachable from the root
            // published in step 1 and every later one, listed once (CowTree invariant);
            // a block of the map's slab for its level's layout (`NodeMut`, `layout_of`), no
            // drop glue; still live, so its layout can be read.
            unsafe { blocks.retire_later(Retired::new(n as *mut u8, NodeMut::layout_of(n))) };
        }
        for e in removed.drain(..) {
            // SAFETY: unlinked in step 1 and drained to DETACHED in step 2, listed once;
            // a block of the map's entry slab (`Entry::alloc`); its value was moved
            // out by the operation that removed it, so only bytes remain.
            unsafe {
                blocks.retire_later(Retired::new(
                    e.as_ptr() as *mut u8,
                    Layout::new::<Entry<K, V>>(),
                ))
            };
        }
        self.map.recycler.commit(blocks);
        // 5. Hand the writers' lock over fairly, so readers queued behind this session get
        //    in before a back-to-back session.
        // SAFETY: taken once, here.
        RwLockWriteGuard::unlock_fair(unsafe { ManuallyDrop::take(&mut self.lock) });
    }
}

impl<K: Key, V> fmt::Debug for Writer<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("session", &self.session.get())
            .field("len", &self.len)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// The pieces an overwrite or removal displaced, in key order; the caller owns (and
/// drops) them. Derefs to a slice; iterate by value with `into_iter`.
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::<u32, char>::new();
/// let mut w = map.write();
/// w.insert(0..10, 'a');
/// w.insert(10..20, 'b');
/// let cut = w.insert(5..15, 'c');
/// assert_eq!(cut.len(), 2); // a slice of (range, value)
/// assert_eq!(cut[0], (5..10, 'a'));
/// let (ranges, values): (Vec<_>, Vec<_>) = cut.into_iter().unzip();
/// assert_eq!((ranges, values), (vec![5..10, 10..15], vec!['a', 'b']));
/// ```
#[derive(Clone)]
pub struct Displaced<K, V> {
    items: SmallVec<[(Range<K>, V); 2]>,
}

impl<K, V> Default for Displaced<K, V> {
    fn default() -> Self {
        Displaced {
            items: SmallVec::new(),
        }
    }
}

impl<K, V> Displaced<K, V> {
    /// The pieces as a `Vec`.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, u8>::new();
    /// let mut w = map.write();
    /// w.insert(0..10, 1);
    /// assert_eq!(w.remove(0..4).into_vec(), vec![(0..4, 1)]);
    /// ```
    pub fn into_vec(self) -> Vec<(Range<K>, V)> {
        self.items.into_vec()
    }
}

impl<K, V> Deref for Displaced<K, V> {
    type Target = [(Range<K>, V)];
    fn deref(&self) -> &Self::Target {
        &self.items
    }
}

impl<K, V> IntoIterator for Displaced<K, V> {
    type Item = (Range<K>, V);
    type IntoIter = DisplacedIter<K, V>;
    fn into_iter(self) -> Self::IntoIter {
        DisplacedIter {
            inner: self.items.into_iter(),
        }
    }
}

/// `for (range, value) in &displaced`: the pieces by reference, in key order (as the
/// slice it derefs to).
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::<u32, char>::new();
/// let mut w = map.write();
/// w.insert(0..10, 'a');
/// w.insert(10..20, 'b');
/// let cut = w.remove(5..15);
/// let mut keys = 0;
/// for (range, _) in &cut {
///     keys += range.len();
/// }
/// assert_eq!(keys, 10);
/// ```
impl<'a, K, V> IntoIterator for &'a Displaced<K, V> {
    type Item = &'a (Range<K>, V);
    type IntoIter = core::slice::Iter<'a, (Range<K>, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for Displaced<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items.iter()).finish()
    }
}

/// By-value iterator over [`Displaced`] pieces.
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::<u32, u8>::new();
/// let mut w = map.write();
/// w.insert(0..10, 1);
/// w.insert(10..20, 2);
/// let mut it = w.remove(0..20).into_iter();
/// assert_eq!(it.len(), 2);
/// assert_eq!(it.next_back(), Some((10..20, 2)));
/// assert_eq!(it.next(), Some((0..10, 1)));
/// ```
#[derive(Clone)]
pub struct DisplacedIter<K, V> {
    inner: smallvec::IntoIter<[(Range<K>, V); 2]>,
}

impl<K, V> Iterator for DisplacedIter<K, V> {
    type Item = (Range<K>, V);
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<K, V> DoubleEndedIterator for DisplacedIter<K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back()
    }
}

impl<K, V> ExactSizeIterator for DisplacedIter<K, V> {}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for DisplacedIter<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.inner.as_slice().iter())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::{InsertErrorKind, RangeMap};

    /// A map of `n` ranges `4i..4i + 3` holding `i`, inserted one by one in one session
    /// (so its leaves are as a growing map leaves them, not bulk-built).
    fn spaced(n: u64) -> RangeMap<u64, u64> {
        let map = RangeMap::new();
        {
            let mut w = map.write();
            for i in 0..n {
                w.try_insert(i * 4..i * 4 + 3, i).unwrap();
            }
        }
        map
    }

    /// A session that removes a range and puts the same range back publishes nothing: the
    /// published root and the entry stay, the entry holds the new value, and the nodes the
    /// session copied and its new entry go back to the slabs. A session that changes
    /// anything more publishes a new tree, as before.
    #[test]
    fn putting_a_range_back_keeps_the_tree_and_the_entry() {
        let n = if cfg!(miri) { 300 } else { 5_000 };
        let mut map = RangeMap::<u64, u64>::new();
        {
            let mut w = map.write();
            // One wider gap, 407..412, near 400..403, so that trimming that range below
            // changes no gap summary: only the leaf's slot tells the change.
            for i in (0..n).filter(|&i| i != 102) {
                w.try_insert(i * 4..i * 4 + 3, i).unwrap();
            }
        }
        let n = n as usize - 1;
        assert!(map.height() >= 3, "the path has internal nodes to copy");
        // Where the value of the entry holding `k` lives: the same entry, the same place.
        let at = |map: &RangeMap<u64, u64>, k: u64| &*map.get(k).unwrap() as *const u64;
        let (root, entry, blocks) = (map.root_for_writer(), at(&map, 400), map.usage());

        let mut w = map.write();
        let (r, v) = w.remove_entry(401).unwrap();
        assert_eq!((r.clone(), v), (400..403, 100));
        w.try_insert(r, 7_100).unwrap();
        w.commit();
        assert_eq!(map.root_for_writer(), root, "a root was published");
        assert_eq!(at(&map, 402), entry, "the entry was replaced");
        assert_eq!(*map.get(402).unwrap(), 7_100);

        // An overwriting insert of exactly that range does the same.
        let old: Vec<_> = map.write().insert(400..403, 8_100).into_iter().collect();
        assert_eq!(old, [(400..403, 7_100)]);
        assert_eq!((map.root_for_writer(), at(&map, 400)), (root, entry));
        assert_eq!(*map.get(400).unwrap(), 8_100);
        assert_eq!(map.usage(), blocks, "the session's blocks went back");
        assert_eq!(map.check_published(), n);

        // Kept beside an entry the session inserted and removed again (in the same leaf:
        // a path copied for nothing elsewhere is a change of pointers all the same).
        let e = at(&map, 1_100);
        let mut w = map.write();
        w.try_insert(1_103..1_104, 0).unwrap();
        w.remove_entry(1_103).unwrap();
        let (r, v) = w.remove_entry(1_100).unwrap();
        w.try_insert(r, v + 5).unwrap();
        w.commit();
        assert_eq!((map.root_for_writer(), at(&map, 1_100)), (root, e));
        assert_eq!(*map.get(1_101).unwrap(), 280);
        assert!(map.get(1_103).is_none());

        // Not kept: two ranges put back (in different leaves), or one a key shorter.
        let mut w = map.write();
        for k in [800, 1_000] {
            let (r, v) = w.remove_entry(k).unwrap();
            w.try_insert(r, v + 1).unwrap();
        }
        w.commit();
        assert_ne!(map.root_for_writer(), root);
        assert_eq!(
            (*map.get(800).unwrap(), *map.get(1_000).unwrap()),
            (201, 251)
        );
        let root = map.root_for_writer();
        let mut w = map.write();
        let (r, _) = w.remove_entry(400).unwrap();
        w.try_insert(r.start..r.end - 1, 7).unwrap();
        w.commit();
        assert_ne!(map.root_for_writer(), root);
        assert_eq!(*map.get(401).unwrap(), 7);
        assert!(map.get(402).is_none());
        assert_eq!(map.check_published(), n);
        assert_eq!(map.len(), n);
    }

    /// `shrink_to_fit` moves every entry into a new block, also when one entry is all that
    /// a relocation session moves: that session's only change is then one range's entry
    /// swapped for one with the same bounds, and its commit must not put the value back in
    /// the old block as a put-back's does (the old block's chunk could never go back).
    #[test]
    fn shrink_to_fit_moves_a_lone_entry() {
        let n = if cfg!(miri) { 200 } else { 2_000 };
        let map = spaced(n);
        let last = (n - 1) * 4;
        drop(map.write().remove(0..last));
        let at = |k| &*map.get(k).unwrap() as *const u64;
        let before = at(last);
        map.shrink_to_fit();
        assert_ne!(at(last), before, "the lone entry stayed in its block");
        assert_eq!((map.len(), *map.get(last + 2).unwrap()), (1, n - 1));
    }

    /// `shrink_to_fit` keeps every entry (range and value), and leaves the map with the
    /// blocks and chunks of a fresh copy: its nodes as full as a bulk build's, and every
    /// block the moves and the rebuild freed back in the slabs.
    #[test]
    fn shrink_to_fit_leaves_the_shape_of_a_fresh_copy() {
        let n = if cfg!(miri) { 160 } else { 20_000 };
        let mut map = RangeMap::<u64, String>::new();
        for i in 0..n {
            map.write()
                .try_insert(i * 4..i * 4 + 3, i.to_string())
                .unwrap();
        }
        // Keep one in ten, removing the others 64 to a session (underfull nodes, spread
        // blocks).
        let mut w = map.write();
        for i in (0..n).filter(|i| i % 10 != 3) {
            w.remove_entry(i * 4).unwrap();
            if i % 64 == 0 {
                w.commit();
                w = map.write();
            }
        }
        w.commit();
        let fresh = {
            let mut f = map.clone();
            f.usage()
        };
        let before = map.usage();
        // `settle` waits a bounded number of rounds for the freed blocks' grace periods.
        // Other tests' threads share crossbeam's collector, and one that stays pinned can
        // outlast those rounds (seen under ASan); the blocks then come back at a later
        // call, as the docs say. A call that never settles (no `settle`, or a rebuild
        // that leaves blocks in flight) still fails: its last rebuild's blocks stay out.
        for _ in 0..8 {
            map.shrink_to_fit();
            let after = map.usage();
            if (0..3).all(|class| after[class].1 <= fresh[class].1 + 1) {
                break;
            }
        }
        assert_eq!(map.check_published(), n as usize / 10);
        let kept: Vec<_> = map.iter().map(|g| (g.range(), g.clone())).collect();
        let want: Vec<_> = (0..n)
            .filter(|i| i % 10 == 3)
            .map(|i| (i * 4..i * 4 + 3, i.to_string()))
            .collect();
        assert_eq!(kept, want);
        let after = map.usage();
        for class in 0..3 {
            assert_eq!(
                after[class].0, fresh[class].0,
                "blocks of class {class}, before {before:?}"
            );
            assert!(
                after[class].1 <= fresh[class].1 + 1,
                "chunks: {after:?} against a fresh copy's {fresh:?}"
            );
        }
    }

    /// A range put back through the hole `remove_entry` left (`Hole`) keeps the tree sound
    /// and its gaps exact,
    /// also when the removal evened out or merged leaves (the hole is then not kept) or
    /// other edits ran in between (they forget it). Sessions shrink the
    /// map to a few leaves and grow it again, so leaves sit at `MIN` when a removal hits
    /// them; the session's own view is checked after every put-back and the published
    /// tree after every commit, against a model.
    #[test]
    fn put_back_through_the_hole_keeps_the_tree_sound() {
        use std::collections::BTreeMap;
        let map = RangeMap::<u32, u32>::new();
        let mut model = BTreeMap::<u32, (u32, u32)>::new();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u32| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % u64::from(n)) as u32
        };
        let sessions = if cfg!(miri) { 8 } else { 400 };
        let (mut put_back, mut shrunk) = (0, 0);
        for s in 0..sessions {
            let mut w = map.write();
            // Grow to ~600 entries, shrink to ~40, and again: the shrinking merges leaves.
            let target = if (s / 40) % 2 == 0 { 600 } else { 40 };
            for _ in 0..=next(60) {
                let lo = next(20_000) * 4;
                if model.len() < target {
                    let hi = lo + 1 + next(3);
                    if w.try_insert(lo..hi, s).is_ok() {
                        model.insert(lo, (hi, s));
                    }
                    continue;
                }
                let Some((&k, &(hi, _))) = model.range(lo..).next().or_else(|| model.iter().next())
                else {
                    continue;
                };
                let r = if next(4) == 0 {
                    let gone = w.remove(k..hi).into_vec();
                    assert_eq!(gone.len(), 1);
                    gone[0].0.clone()
                } else {
                    w.remove_entry(k + next(hi - k)).expect("a mapped key").0
                };
                model.remove(&k);
                assert_eq!(r, k..hi);
                if model.len() >= target && next(2) == 0 {
                    shrunk += 1;
                    continue;
                }
                if next(3) == 0 {
                    // An edit in between: the put-back must descend again.
                    let near = k.saturating_sub(200) + next(400);
                    match model.range(near..).next().map(|(&k2, &(hi2, _))| (k2, hi2)) {
                        Some((k2, hi2)) if next(2) == 0 => {
                            // Another hole, used up at once.
                            drop(w.remove(k2..hi2));
                            drop(w.insert(k2..hi2, s));
                            model.insert(k2, (hi2, s));
                        }
                        Some((k2, hi2)) if hi2 - k2 > 1 && next(2) == 0 => {
                            // A trim near the hole: the same shape, other gaps.
                            drop(w.remove(k2..k2 + 1));
                            let (_, v2) = model.remove(&k2).unwrap();
                            model.insert(k2 + 1, (hi2, v2));
                        }
                        _ => {
                            // A new range in free space near the hole: it may split leaves.
                            // Ranges start at multiples of 4 and end by the next 3.
                            let lo2 = near | 3;
                            if lo2 != k && w.overlapping(lo2..lo2 + 1).next().is_none() {
                                drop(w.insert(lo2..lo2 + 1, s));
                                model.insert(lo2, (lo2 + 1, s));
                            }
                        }
                    }
                }
                if next(4) == 0 {
                    // An overwriting insert takes the hole too.
                    assert!(w.insert(r.clone(), s + 1_000).is_empty());
                } else {
                    w.try_insert(r.clone(), s + 1_000)
                        .expect("the range just removed is free");
                }
                model.insert(k, (hi, s + 1_000));
                put_back += 1;
                assert_eq!(w.get(k), Some((r, &(s + 1_000))));
            }
            assert_eq!(w.len(), model.len());
            w.commit();
            assert_eq!(map.check_published(), model.len());
            let all: Vec<_> = map.iter().map(|g| (g.range(), *g)).collect();
            let want: Vec<_> = model.iter().map(|(&lo, &(hi, v))| (lo..hi, v)).collect();
            assert_eq!(all, want);
        }
        assert!(
            cfg!(miri) || (put_back > 5_000 && shrunk > 1_000),
            "{put_back} {shrunk}"
        );
    }

    /// Every node of the session's working tree, depth first: its level, its stale bits,
    /// and each slot's bounds and (internal nodes) gap, stale or exact.
    type Summaries<K> = Vec<(u8, u16, Vec<(K, K, Option<K>)>)>;
    fn summaries<K: crate::Key, V>(w: &super::Writer<'_, K, V>) -> Summaries<K> {
        let mut out = Vec::new();
        let mut todo = vec![w.root()];
        while let Some(n) = todo.pop() {
            let slots = (0..n.len())
                .map(|i| (n.lo(i), n.hi(i), (!n.is_leaf()).then(|| n.gap(i))))
                .collect();
            out.push((n.level(), n.stale(), slots));
            if !n.is_leaf() {
                todo.extend((0..n.len()).map(|i| n.child(i)));
            }
        }
        out
    }

    /// A range put back through its hole leaves every node's bounds, gaps and stale bits as
    /// they were before the removal (`CowTree::put_back`): exact gaps exact again, stale
    /// ones stale, whether the path was copied by the removal or already the session's
    /// (an earlier insert beside it left it stale), for both ways to take the entry out and
    /// both ways to put it back, for every entry of the map (so first and last in their
    /// leaves, where a fresh descent may pick the neighbouring leaf), and near `K::MAX`. A
    /// one-op put-back then publishes nothing, even for a range at a leaf's edge.
    fn put_backs_restore_every_summary<K: crate::Key>(
        ranges: &[core::ops::Range<K>],
        extra: impl Fn(usize) -> Option<core::ops::Range<K>>,
        step: usize,
        height: usize,
    ) {
        let map = RangeMap::<K, u32>::new();
        {
            let mut w = map.write();
            for (v, r) in ranges.iter().enumerate() {
                w.try_insert(r.clone(), v as u32).unwrap();
            }
        }
        assert_eq!(map.height(), height);
        let take = |w: &mut super::Writer<'_, K, u32>, r: &core::ops::Range<K>, way: u32| {
            if way & 1 == 0 {
                w.remove_entry(r.start).unwrap()
            } else {
                let mut gone = w.remove(r.clone()).into_vec();
                assert_eq!(gone.len(), 1);
                gone.remove(0)
            }
        };
        let put = |w: &mut super::Writer<'_, K, u32>, r: &core::ops::Range<K>, v, way: u32| {
            if way & 2 == 0 {
                w.try_insert(r.clone(), v).unwrap();
            } else {
                assert!(w.insert(r.clone(), v).is_empty());
            }
            assert_eq!(w.get(r.start), Some((r.clone(), &v)));
        };
        let mut v = 1_000_000;
        for (i, r) in ranges.iter().enumerate().step_by(step) {
            for way in 0..4 {
                v += 1;
                // Alone in its session: the removal copies the path.
                let root = map.root_for_writer();
                let mut w = map.write();
                let before = summaries(&w);
                if way == 3 && i % 2 == 0 {
                    // One overwriting insert of exactly the range: removal and put-back in
                    // one call.
                    let old = w.insert(r.clone(), v).into_vec();
                    assert_eq!(old.len(), 1);
                    assert_eq!(old[0].0, *r);
                } else {
                    assert_eq!(take(&mut w, r, way).0, *r);
                    put(&mut w, r, v, way);
                }
                assert_eq!(summaries(&w), before, "entry {i} ({r:?}), way {way}");
                w.commit();
                assert_eq!(map.root_for_writer(), root, "entry {i} ({r:?}), way {way}");
                assert_eq!(*map.get(r.start).unwrap(), v);

                // After an insert beside it (stale gaps on the path, maybe a split), and
                // again on the path the first put-back left.
                let mut w = map.write();
                let x = extra(i);
                if let Some(x) = &x {
                    w.try_insert(x.clone(), 0).unwrap();
                }
                for _ in 0..2 {
                    v += 1;
                    let before = summaries(&w);
                    assert_eq!(take(&mut w, r, way).0, *r);
                    put(&mut w, r, v, way);
                    assert_eq!(summaries(&w), before, "entry {i} ({r:?}), way {way}, {x:?}");
                    if let Some(next) = ranges.get(i + 1) {
                        // A neighbour too (maybe in the next leaf), then this one again.
                        let before = summaries(&w);
                        assert_eq!(take(&mut w, next, way ^ 1).0, *next);
                        put(&mut w, next, v, way ^ 2);
                        assert_eq!(summaries(&w), before, "entry {} after {i}", i + 1);
                    }
                }
                if let Some(x) = x {
                    drop(w.remove(x));
                }
                w.commit();
                assert_eq!(map.check_published(), ranges.len());
            }
        }
        let got: Vec<_> = map.iter().map(|g| g.range()).collect();
        assert_eq!(got, ranges);
    }

    #[test]
    fn put_backs_restore_every_summary_u64_near_max() {
        let n: u64 = if cfg!(miri) { 40 } else { 400 };
        let base = u64::MAX - 8 * n;
        let ranges: Vec<_> = (0..n)
            .map(|i| {
                let lo = base + i * 8 + i % 3;
                lo..if i == n - 1 {
                    u64::MAX
                } else {
                    base + i * 8 + 5
                }
            })
            .collect();
        let extra = |i: usize| {
            let at = base + i as u64 * 8 + 6;
            (i as u64 + 1 < n).then_some(at..at + 1)
        };
        let (step, height) = if cfg!(miri) { (7, 2) } else { (1, 3) };
        put_backs_restore_every_summary(&ranges, extra, step, height);
    }

    #[test]
    fn put_backs_restore_every_summary_u8() {
        // Up to `u8::MAX`, the stale marker: no real gap reaches it.
        let ranges: Vec<_> = (0..64u8)
            .map(|i| i * 4 + i % 2..if i == 63 { u8::MAX } else { i * 4 + 3 })
            .collect();
        let extra = |i: usize| (i < 63).then(|| i as u8 * 4 + 3..i as u8 * 4 + 4);
        let step = if cfg!(miri) { 9 } else { 1 };
        put_backs_restore_every_summary(&ranges, extra, step, 2);
        // A root leaf, and one that the removal empties.
        put_backs_restore_every_summary(&ranges[..5], extra, 1, 1);
        put_backs_restore_every_summary(&ranges[63..], |_| None, 1, 1);
    }

    #[test]
    fn put_backs_restore_every_summary_four_levels() {
        let n: u16 = if cfg!(miri) { 40 } else { 4_000 };
        let ranges: Vec<_> = (0..n).map(|i| i * 16 + i % 5..i * 16 + 9).collect();
        let extra = |i: usize| Some(i as u16 * 16 + 11..i as u16 * 16 + 12 + (i as u16 % 3));
        let (step, height) = if cfg!(miri) { (9, 2) } else { (37, 4) };
        put_backs_restore_every_summary(&ranges, extra, step, height);
    }

    /// Only exactly the removed range goes back through the hole: an insert of a range
    /// that shares its start (shorter, longer, reaching into the next entry) or its end
    /// takes the ordinary way, with its free check (`try_insert`'s `Occupied`) and its
    /// trims (`insert`), and is stored with its own bounds.
    #[test]
    fn only_the_removed_range_takes_the_hole() {
        use std::collections::BTreeMap;
        let n = if cfg!(miri) { 40 } else { 300 };
        let map = RangeMap::<u32, u32>::new();
        let mut model = BTreeMap::<u32, (u32, u32)>::new();
        {
            let mut w = map.write();
            for i in 0..n {
                w.try_insert(i * 8..i * 8 + 5, i).unwrap();
                model.insert(i * 8, (i * 8 + 5, i));
            }
        }
        for i in 0..n {
            let Some((&lo, &(hi, _))) = model.range(i * 8..).next() else {
                break;
            };
            let next = model.range(hi..).next().map(|(&l, &(h, v))| (l, h, v));
            let prev = model.range(..lo).next_back().map(|(&l, &(h, _))| (l, h));
            let mut w = map.write();
            let taken = if i % 2 == 0 {
                w.remove_entry(lo).unwrap()
            } else {
                w.remove(lo..hi).into_vec().remove(0)
            };
            assert_eq!(taken.0, lo..hi);
            model.remove(&lo);
            let v = 10_000 + i;
            match (i / 2) % 7 {
                0 => {
                    if let Some((nlo, nhi, _)) = next {
                        let e = w.try_insert(lo..nlo + 1, v).unwrap_err();
                        assert_eq!(e.kind(), &InsertErrorKind::Occupied { existing: nlo..nhi });
                    }
                    w.try_insert(lo..hi, v).unwrap();
                    model.insert(lo, (hi, v));
                }
                1 => {
                    w.try_insert(lo..hi - 1, v).unwrap();
                    model.insert(lo, (hi - 1, v));
                }
                2 => {
                    assert!(w.insert(lo..hi - 1, v).is_empty());
                    model.insert(lo, (hi - 1, v));
                }
                3 => {
                    assert!(w.insert(lo..hi + 1, v).is_empty());
                    model.insert(lo, (hi + 1, v));
                }
                4 => {
                    if let Some((plo, phi)) = prev {
                        let e = w.try_insert(phi - 1..hi, v).unwrap_err();
                        assert_eq!(e.kind(), &InsertErrorKind::Occupied { existing: plo..phi });
                    }
                    w.try_insert(lo + 1..hi, v).unwrap();
                    model.insert(lo + 1, (hi, v));
                }
                5 => {
                    assert!(w.insert(lo + 1..hi, v).is_empty());
                    model.insert(lo + 1, (hi, v));
                }
                _ => {
                    let Some((nlo, nhi, nv)) = next else {
                        continue;
                    };
                    let out = w.insert(lo..nlo + 1, v).into_vec();
                    assert_eq!(out, [(nlo..nlo + 1, nv)]);
                    model.remove(&nlo);
                    model.insert(nlo + 1, (nhi, nv));
                    model.insert(lo, (nlo + 1, v));
                }
            }
            let want: Vec<_> = model.iter().map(|(&l, &(h, v))| (l..h, v)).collect();
            let got: Vec<_> = w.overlapping(0..u32::MAX).map(|(r, v)| (r, *v)).collect();
            assert_eq!(got, want, "entry {i}");
            w.commit();
            assert_eq!(map.check_published(), model.len());
        }
        let got: Vec<_> = map.iter().map(|g| (g.range(), *g)).collect();
        let want: Vec<_> = model.iter().map(|(&l, &(h, v))| (l..h, v)).collect();
        assert_eq!(got, want);
    }

    /// What happens between a removal and its put-back without changing the tree leaves
    /// the hole usable: `get_mut` and `overlapping_mut` (values only), and an `insert_with`
    /// or `remove_with` whose split closure panics before the tree changes (caught, so the
    /// session goes on). The put-back then restores every summary and the session
    /// publishes nothing; the values changed in place are published with the kept entry.
    /// A panic that unwinds through the writer commits the removal.
    #[test]
    fn the_hole_survives_what_changes_no_node() {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        let n = if cfg!(miri) { 60 } else { 600 };
        let map = spaced(n);
        let boom = |_: &mut u64, _: core::ops::Range<u64>, _: u64| -> u64 { panic!("split") };
        for i in (1..n - 1).step_by(7) {
            let (a, b) = (i * 4, (i + 1) * 4);
            let root = map.root_for_writer();
            let mut w = map.write();
            let before = summaries(&w);
            let (r, v) = w.remove_entry(a + 1).unwrap();
            *w.get_mut(b).unwrap().1 += 1_000;
            for (_, v) in w.overlapping_mut(a - 4..b + 4) {
                *v += 1_000;
            }
            let hit = catch_unwind(AssertUnwindSafe(|| {
                drop(w.insert_with(b + 1..b + 2, 0, boom))
            }));
            assert!(hit.is_err());
            let hit = catch_unwind(AssertUnwindSafe(|| drop(w.remove_with(a - 3..a - 2, boom))));
            assert!(hit.is_err());
            if i % 2 == 0 {
                w.try_insert(r, v + 7).unwrap();
            } else {
                assert!(w.insert(r, v + 7).is_empty());
            }
            assert_eq!(summaries(&w), before, "entry {i}");
            w.commit();
            assert_eq!(map.root_for_writer(), root, "entry {i}");
            assert_eq!(*map.get(a).unwrap(), i + 7);
            assert_eq!(*map.get(b).unwrap(), i + 1 + 2_000);
            assert_eq!(*map.get(a - 4).unwrap(), i - 1 + 1_000);
        }
        assert_eq!(map.check_published(), n as usize);
        // An edit between removal and put-back forgets the hole: an insert just before the
        // range shifts its old slot, one just after it does not.
        for i in (1..n - 1).step_by(7) {
            let a = i * 4..i * 4 + 3;
            let mut w = map.write();
            let (r, v) = w.remove_entry(a.start).unwrap();
            let x = if i % 2 == 0 { a.start - 1 } else { a.end };
            w.try_insert(x..x + 1, 0).unwrap();
            w.try_insert(r, v).unwrap();
            let got: Vec<_> = w
                .overlapping(a.start - 4..a.end + 4)
                .map(|(r, _)| r)
                .collect();
            let want = if i % 2 == 0 {
                [
                    a.start - 4..a.start - 1,
                    x..x + 1,
                    a.clone(),
                    a.end + 1..a.end + 4,
                ]
            } else {
                [
                    a.start - 4..a.start - 1,
                    a.clone(),
                    x..x + 1,
                    a.end + 1..a.end + 4,
                ]
            };
            assert_eq!(got, want, "entry {i}");
            w.commit();
            assert_eq!(map.check_published(), n as usize + 1);
            assert_eq!(map.write().remove(x..x + 1).len(), 1);
        }
        // Unwinding through the writer: its drop commits the removal, not a put-back.
        let hit = catch_unwind(AssertUnwindSafe(|| {
            let mut w = map.write();
            w.remove_entry(9).unwrap();
            drop(w.insert_with(12..13, 0, boom));
        }));
        assert!(hit.is_err());
        assert!(map.get(9).is_none());
        assert_eq!(*map.get(12).unwrap(), 3);
        assert_eq!(map.check_published(), n as usize - 1);
    }

    /// A `remove` of a range that takes several whole entries leaves the hole of the last
    /// one only: the earlier ones' trails may still lead to their leaves, but the gaps they
    /// saw had the later entries in them. Putting the first one back (the ordinary way)
    /// leaves the space of the others findable by the session's `find_gap` and publishes
    /// exact gaps; putting the last one back goes through its hole.
    #[test]
    fn a_range_removal_leaves_the_hole_of_its_last_entry() {
        use crate::Fit;
        let n = if cfg!(miri) { 60 } else { 600 };
        let map = spaced(n);
        let fit = |w: &super::Writer<'_, u64, u64>| w.find_gap(0..u64::MAX, 8, 1, Fit::Lowest);
        for i in (0..n - 3).step_by(if cfg!(miri) { 7 } else { 3 }) {
            let [a, b, c] = [i, i + 1, i + 2].map(|j| j * 4..j * 4 + 3);
            let mut w = map.write();
            let gone: Vec<_> = w
                .remove(a.start..c.end)
                .into_iter()
                .map(|(r, _)| r)
                .collect();
            assert_eq!(gone, [a.clone(), b.clone(), c.clone()]);
            let put = |w: &mut super::Writer<'_, u64, u64>, r: &core::ops::Range<u64>| {
                if i % 3 == 0 {
                    w.try_insert(r.clone(), r.start / 4).unwrap();
                } else {
                    assert!(w.insert(r.clone(), r.start / 4).is_empty());
                }
            };
            if i % 2 == 0 {
                put(&mut w, &a);
                assert_eq!(fit(&w), Some(a.end..a.end + 8), "entry {i}");
                w.commit();
                assert_eq!(map.check_published(), n as usize - 2);
                w = map.write();
                assert_eq!(fit(&w), Some(a.end..a.end + 8), "entry {i}");
                put(&mut w, &b);
                put(&mut w, &c);
            } else {
                put(&mut w, &c);
                let free = a.start.saturating_sub(1);
                assert_eq!(fit(&w), Some(free..free + 8), "entry {i}");
                put(&mut w, &a);
                put(&mut w, &b);
            }
            w.commit();
            assert_eq!(map.check_published(), n as usize);
            assert_eq!(fit(&map.write()), Some(n * 4 - 1..n * 4 + 7));
        }
    }

    /// Every commit publishes exact gap metadata (`CowTree::fix_gaps`): after sessions of
    /// up to 40 edits each (overwriting inserts, range removals, entry removals) the
    /// published tree passes the full structural check — no stale gap, every stored
    /// summary equal to a recomputed one — and the next sessions copy from it. The tree
    /// grows to four levels, so stale gaps sit below stale gaps.
    #[test]
    fn commits_publish_exact_gaps() {
        let map = RangeMap::<u32, u32>::new();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u32| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % u64::from(n)) as u32
        };
        let sessions = if cfg!(miri) { 12 } else { 600 };
        let mut height = 0;
        for s in 0..sessions {
            let mut w = map.write();
            for _ in 0..=next(40) {
                let lo = next(200_000);
                let hi = lo + 1 + next(40);
                match next(10) {
                    0..=6 => drop(w.insert(lo..hi, s)),
                    7 | 8 => drop(w.remove(lo..hi)),
                    _ => drop(w.remove_entry(lo)),
                }
            }
            w.commit();
            assert_eq!(map.check_published(), map.len());
            height = height.max(map.height());
        }
        assert!(
            cfg!(miri) || height >= 4,
            "the tree stayed at {height} levels"
        );
    }
}
