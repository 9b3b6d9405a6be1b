//! `RangeMap`: lookups, iteration and free-space queries for readers.
//!
//! Owns: the published root, the lookup-then-read-lock protocol (fast path, retry, a
//! lock-free wait for the session holding the entry, slow path under the map-wide lock),
//! iterators and the map's teardown. Must not: change the tree (that is `Writer`'s job) or
//! hold an epoch pin beyond one descent, except the pin a caller holds on purpose
//! ([`Pinned`]).

use core::borrow::Borrow;
use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Range;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::entry::{Entry, ReadGuard};
use crate::error::TryGetError;
use crate::key::Key;
use crate::lock::{LockDomain, ReadFail};
use crate::pinned::{EpochPin, Pinned};
use crate::reclaim::{self, Recycler};
use crate::slab;
use crate::stats::{Counters, Event, Stats};
use crate::tree::bulk;
use crate::tree::gap::{self, Want};
use crate::tree::node::{Node, NodeMut, NodeRef};
use crate::tree::search::{self, Found};
use crate::writer::{Scratch, Writer};

pub(crate) type TreeNode<K, V> = Node<K, Entry<K, V>>;

/// Which end of the free space [`RangeMap::find_gap`] takes.
///
/// ```
/// use rcu_rangemap::{Fit, RangeMap};
///
/// let map = RangeMap::<u64, ()>::new();
/// map.write().insert(0x3000..0x5000, ());
/// // Free within 0..0x10000: 0..0x3000 and 0x5000..0x10000.
/// let (size, align) = (0x1000, 0x1000);
/// assert_eq!(map.find_gap(0..0x10000, size, align, Fit::Lowest), Some(0..0x1000));
/// assert_eq!(map.find_gap(0..0x10000, size, align, Fit::Highest), Some(0xf000..0x10000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fit {
    /// The lowest aligned place that fits (first fit).
    Lowest,
    /// The highest aligned place that fits (last fit).
    Highest,
}

/// A concurrent map from non-overlapping half-open ranges of `K` to values `V`.
///
/// See the [crate docs](crate) for the design and what readers can observe.
///
/// Complexity: `get`, `try_get`, each iterator step, and `find_gap` are O(log n); `gaps`
/// is O(log n + k) for k gaps; a writer session's edits are O(log n) each, plus copying
/// the O(log n) nodes on each changed path once per session.
///
/// Memory: a `u64`-valued map takes about 61 bytes per range (a 24-byte entry and its share
/// of 384-byte leaves). A map allocates its nodes and entries from its own chunks (4 KiB
/// first, each next one twice the last, up to 64 KiB; for entries of more than 1 KiB,
/// room for four of them from the first), one stream per block size, and
/// never frees a block on its own: a block a session replaces is reused, once no reader
/// can reach it, by later sessions. Retired blocks wait
/// to be handed to the epoch collector together: 64, or up to 1,024 (plus one session's)
/// while earlier batches are slow to come back; from then on, for 65,536 sessions, the map
/// reuses the lowest free block first, so its live blocks stay packed on few pages. Chunks
/// go back to the allocator when all their blocks are free: every 65,536 sessions, those
/// from which no block was taken in lowest-first order since the last check. A map that is
/// mostly free (three quarters of a block size's blocks, and at least 128 KiB of them:
/// it shrank, or a flood of returning blocks left it so) checks every 1,024 sessions
/// instead, and reuses the lowest free block first, so that the blocks it copies or
/// allocates move down and the chunks above empty. It waits 16,384 sessions after its
/// batches were last slow to come back (readers that lost the CPU while pinned hold back
/// every block retired meanwhile, which then returns in a flood), and twice as long after
/// each flood that followed such a check, up to 65,536, since the next flood would take the
/// chunks again. An entry does not move while it lives, so a chunk with a surviving entry
/// stays; [`shrink_to_fit`](Self::shrink_to_fit) moves them all, and gives back every free
/// chunk at once. Everything is freed with the map.
///
/// Built from `(range, value)` pairs with `collect` or `RangeMap::from([...])`, as if each
/// were [`Writer::insert`]ed in order (see the `FromIterator` impl below); grown the same
/// way with `extend`, in one session, also through `&RangeMap`; walked with
/// `for guard in &map` (as [`iter`](Self::iter)).
///
/// An entry holds its value and 16 bytes of lock state, and may take at most 512 MiB (256
/// MiB on 32-bit targets, where the largest power-of-two allocation is 1 GiB and a
/// map's chunk holds four entries): a larger `V` fails to compile (box it). For example:
///
/// ```compile_fail,E0080
/// let map = rcu_rangemap::RangeMap::<u64, [u8; 1 << 29]>::new();
/// ```
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::<u64, String>::new();
/// map.write().insert(0x1000..0x3000, "text".to_string());
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         // A reader: no map-wide lock; the guard read-locks this one entry.
///         let g = map.get(0x2fff).expect("mapped");
///         assert_eq!((g.range(), g.as_str()), (0x1000..0x3000, "text"));
///     });
///     // A writer session beside it: readers see all of a session or none of it.
///     let mut w = map.write();
///     w.insert(0x3000..0x4000, "data".to_string());
///     w.commit();
/// });
/// assert_eq!(map.len(), 2);
/// ```
//
// Invariant: `scratch` is read and written only by the writer session that holds
// `writers` exclusively (through `scratch_ptr`, never past its unlock), or through
// `&mut self`.
//
// Layout: the fields every lookup reads (`root`, `domain`'s sequence, `stats`) come first,
// and `_gap` keeps the fields every session writes (`writers`, `len`, `scratch`) off their
// 128 bytes (a cache line and the adjacent one that x86 prefetches with it): a session then
// takes those lines from the readers only for the stores it must make (the sequence twice,
// the root once), not for its lock word and bookkeeping as well.
#[repr(C, align(128))]
pub struct RangeMap<K: Key, V> {
    /// The published tree version. Stored (Release) only by a committing writer.
    root: AtomicPtr<TreeNode<K, V>>,
    pub(crate) domain: LockDomain,
    stats: Counters,
    _gap: Gap,
    /// Writers take it exclusively for a whole session; slow-path readers share it.
    pub(crate) writers: RwLock<()>,
    len: AtomicUsize,
    /// Retired blocks past their grace period, for the next session.
    pub(crate) recycler: Recycler,
    /// Free blocks and list capacity carried between sessions (see the invariant above).
    scratch: UnsafeCell<Scratch<K, V>>,
    _values: PhantomData<V>,
}

/// Padding from the end of `RangeMap::stats` to byte 128 (see `RangeMap`'s layout note);
/// only takes space.
#[allow(dead_code)]
struct Gap([u8; GAP]);

/// Bytes from the end of `RangeMap`'s read-side fields (a pointer, a `LockDomain`, a
/// `Counters`) to byte 128.
const GAP: usize = 128usize.saturating_sub(
    core::mem::size_of::<usize>()
        + core::mem::size_of::<LockDomain>()
        + core::mem::size_of::<Counters>(),
);

// SAFETY: the map owns its values; moving it to another thread moves them (and drops them
// there), which `V: Send` allows. Everything else is atomics and raw memory it owns.
unsafe impl<K: Key, V: Send> Send for RangeMap<K, V> {}
// SAFETY: through `&RangeMap`, readers on any thread get `&V` (needs `V: Sync`) and writer
// sessions on any thread move values in and out (needs `V: Send`).
unsafe impl<K: Key, V: Send + Sync> Sync for RangeMap<K, V> {}

impl<K: Key, V> Default for RangeMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Entries one session of [`RangeMap::shrink_to_fit`] moves: how long readers of them wait.
const RELOCATE_PER_SESSION: usize = 1024;
/// Times [`RangeMap::shrink_to_fit`] pushes the epoch on and yields, waiting for the
/// blocks it freed to come back.
const SETTLE_ROUNDS: usize = 64;

/// Sessions a refused lookup waits out, holding nothing, before it queues on the writers'
/// lock.
const LOCKED_RETRIES: u32 = 4;

/// Outcome of one fast-path attempt.
enum Fast<'a, K: Key, V> {
    Hit(ReadGuard<'a, K, V>),
    Vacant,
    Refused(ReadFail),
}

impl<K: Key, V> RangeMap<K, V> {
    /// An empty map.
    ///
    /// ```
    /// let map = rcu_rangemap::RangeMap::<u64, u32>::new();
    /// assert!(map.is_empty());
    /// ```
    pub fn new() -> Self {
        // Evaluated for each `V` the map is built for: a compile-time error if too large.
        #[allow(clippy::let_unit_value)]
        let () = Self::ENTRY_FITS;
        let mut scratch = Scratch::new();
        let root = NodeMut::<K, Entry<K, V>>::alloc_in(scratch.blocks(), 0, 0);
        RangeMap {
            root: AtomicPtr::new(root.as_ptr()),
            domain: LockDomain::new(),
            stats: Counters::new(),
            _gap: Gap([0; GAP]),
            writers: RwLock::new(()),
            len: AtomicUsize::new(0),
            recycler: Recycler::new(),
            scratch: UnsafeCell::new(scratch),
            _values: PhantomData,
        }
    }

    /// Whether an entry of `V` fits a slab block ([`slab::MAX_BLOCK`]: 512 MiB, 256 MiB on
    /// 32-bit targets); fails to evaluate (a compile-time error where `new` is used) if not.
    const ENTRY_FITS: () = assert!(
        core::mem::size_of::<Entry<K, V>>() <= slab::MAX_BLOCK,
        "rcu_rangemap: an entry of this value type would take over 512 MiB (256 MiB on \
         32-bit targets); box the value"
    );

    /// Where the writer sessions' [`Scratch`] lives. Dereferencing it is for the session
    /// that holds the writers' lock exclusively, and only while it holds it (the invariant
    /// above).
    pub(crate) fn scratch_ptr(&self) -> NonNull<Scratch<K, V>> {
        // SAFETY: `UnsafeCell::get` never returns null.
        unsafe { NonNull::new_unchecked(self.scratch.get()) }
    }

    /// The published root, for a reader pinned by `_pin`.
    #[inline]
    fn root<'g>(&self, _pin: &'g reclaim::Guard) -> NodeRef<'g, K, Entry<K, V>> {
        // Acquire: pairs with the Release store in `publish` (at `Writer`'s commit); the
        // nodes of the version we load are fully written. The only ordering before the
        // descent (see `publish`).
        let ptr = self.root.load(Ordering::Acquire);
        // SAFETY: the root is never null, and a published node is retired only after it is
        // unlinked and freed only after every pin older than the retirement is dropped, so
        // it lives as long as `_pin`.
        unsafe { NodeRef::new(NonNull::new_unchecked(ptr)) }
    }

    /// Assert every structural invariant of the published tree (`tree::check`); returns
    /// its number of entries. Tests only.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn check_published(&self) -> usize {
        let pin = reclaim::pin();
        crate::tree::check::check_tree(self.root(&pin))
    }

    /// [`check_published`](Self::check_published) for the fuzz targets: panics if the
    /// published tree breaks a structural invariant (order, bounds, node fill, exact gap
    /// metadata); returns its number of entries. Only with `--cfg fuzzing` (which
    /// cargo-fuzz sets); not part of the API.
    #[cfg(fuzzing)]
    #[doc(hidden)]
    pub fn fuzz_check_structure(&self) -> usize {
        self.check_published()
    }

    /// Blocks handed out and chunks allocated in each of the map's slabs (leaves, internal
    /// nodes, entries). Tests only.
    #[cfg(test)]
    pub(crate) fn usage(&mut self) -> [(usize, usize); 3] {
        self.scratch.get_mut().blocks().usage()
    }

    /// Levels of the published tree (1: the root is a leaf). Tests only.
    #[cfg(test)]
    pub(crate) fn height(&self) -> usize {
        let pin = reclaim::pin();
        usize::from(self.root(&pin).level()) + 1
    }

    /// The published root for the session that holds the writers' lock exclusively.
    pub(crate) fn root_for_writer(&self) -> *mut TreeNode<K, V> {
        // Relaxed: the previous writer's stores are ordered before ours by the writers' lock.
        self.root.load(Ordering::Relaxed)
    }

    /// Publish `root` (at commit).
    pub(crate) fn publish(&self, root: *mut TreeNode<K, V>, len: usize) {
        // Release: pairs with the Acquire load in `root`; readers of this version see every
        // node and entry the session wrote. Nothing else orders those plain writes before a
        // reader's descent: its other Acquire loads (an entry's count, the domain's sequence)
        // come after the descent, and a lookup that finds nothing makes none. Checked:
        // `stress::fresh_root_is_read_whole` fails under Miri (a data race on the new root's
        // node) with this store or `root`'s load Relaxed.
        self.root.store(root, Ordering::Release);
        // Relaxed: `len` is a standalone count; readers get no ordering from it.
        self.len.store(len, Ordering::Relaxed);
    }

    /// Find with `find` and read-lock what it found. One fast-path attempt per loop turn,
    /// each under a pin from `pins`: a fresh one ([`reclaim::pin`]), or a `&Guard` that the
    /// caller holds across lookups ([`Pinned`]). A detached entry (a commit removed or
    /// replaced it after we read the leaf) restarts from the root under the next pin, which
    /// loads the root afresh: no pointer of a failed descent is reused (and none survives
    /// an unpin). A granted count needs no re-check: the entry is attached, so it is in the
    /// current version, with the range the version we descended stored beside it (entries
    /// never change range, see `Entry`).
    ///
    /// `first`: this is the lookup's first attempt, whose hit or miss the statistics count
    /// (a retry after waiting for a session counts as `waited`, in `locate`).
    #[inline]
    fn fast<F, P>(&self, find: &F, first: bool, pins: impl Fn() -> P) -> Fast<'_, K, V>
    where
        F: Fn(NodeRef<'_, K, Entry<K, V>>) -> Option<Found<Entry<K, V>, K>>,
        P: Borrow<reclaim::Guard>,
    {
        loop {
            let pin = pins();
            let Some(found) = find(self.root(pin.borrow())) else {
                if first {
                    self.stats.count(Event::Miss);
                }
                return Fast::Vacant;
            };
            // SAFETY: reached from the root loaded under `pin`, so allocated until `pin`
            // drops; `entry` is not used after that.
            let entry = unsafe { found.entry.as_ref() };
            // Between the descent and the count: a commit that lands here removes or
            // replaces the entry found (the detached retry) or locks it.
            crate::sync::inject_delay();
            match entry.lock.try_read(&self.domain) {
                Ok(()) => {
                    drop(pin);
                    if first {
                        self.stats.count(Event::Success);
                    }
                    // SAFETY: `try_read` granted us one count, which the guard takes over;
                    // `found` holds the entry's range as the version stored it.
                    return Fast::Hit(unsafe {
                        ReadGuard::new(&self.domain, found.entry, found.lo, found.hi)
                    });
                }
                Err(ReadFail::Detached) => self.stats.count(Event::Retry),
                Err(why) => {
                    if first {
                        self.stats.count(Event::Abort);
                    }
                    return Fast::Refused(why);
                }
            }
        }
    }

    /// Slow path: under the writers' lock (shared), no session runs, so the published tree
    /// is exact and every entry in it is attached and unlocked.
    #[cold]
    fn slow<F>(&self, find: &F) -> Option<ReadGuard<'_, K, V>>
    where
        F: Fn(NodeRef<'_, K, Entry<K, V>>) -> Option<Found<Entry<K, V>, K>>,
    {
        let _shared = self.writers.read();
        loop {
            let pin = reclaim::pin();
            let found = find(self.root(&pin))?;
            // SAFETY: reached from the pinned root.
            let entry = unsafe { found.entry.as_ref() };
            match entry.lock.read_locked() {
                Ok(()) => {
                    self.stats.count(Event::Slow);
                    // SAFETY: `read_locked` granted us one count; `found` holds the range.
                    return Some(unsafe {
                        ReadGuard::new(&self.domain, found.entry, found.lo, found.hi)
                    });
                }
                // The limit: wait for some of the ~2^30 readers to leave.
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    fn locate<F>(&self, find: F) -> Option<ReadGuard<'_, K, V>>
    where
        F: Fn(NodeRef<'_, K, Entry<K, V>>) -> Option<Found<Entry<K, V>, K>>,
    {
        let fast = self.fast(&find, true, reclaim::pin);
        self.finish(&find, fast)
    }

    /// The end of `get` after its fast path: a refused lookup waits (see `refused`).
    #[inline]
    fn finish<'a, F>(&'a self, find: &F, fast: Fast<'a, K, V>) -> Option<ReadGuard<'a, K, V>>
    where
        F: Fn(NodeRef<'_, K, Entry<K, V>>) -> Option<Found<Entry<K, V>, K>>,
    {
        match fast {
            Fast::Hit(g) => Some(g),
            Fast::Vacant => None,
            Fast::Refused(why) => self.refused(find, why),
        }
    }

    /// After a refused fast path. A session holds the entry: wait for it to end holding
    /// nothing, so that the next session can start at once, and retry; only if sessions
    /// keep holding it (or one runs long) queue on the writers' lock, which no session can
    /// overtake. At the reader limit, queue at once. Out of line: the lookup's hot path
    /// stays small (inlining this into `get` cost a quarter of its speed at N = 1k).
    #[cold]
    #[inline(never)]
    fn refused<F>(&self, find: &F, why: ReadFail) -> Option<ReadGuard<'_, K, V>>
    where
        F: Fn(NodeRef<'_, K, Entry<K, V>>) -> Option<Found<Entry<K, V>, K>>,
    {
        if why == ReadFail::Locked {
            for _ in 0..LOCKED_RETRIES {
                if !self.domain.wait_session_end() {
                    break;
                }
                match self.fast(find, false, reclaim::pin) {
                    Fast::Hit(g) => {
                        self.stats.count(Event::Waited);
                        return Some(g);
                    }
                    Fast::Vacant => return None,
                    Fast::Refused(ReadFail::Locked) => {}
                    Fast::Refused(_) => break,
                }
            }
        }
        self.slow(find)
    }

    /// The entry holding `key`, read-locked: lookup-then-read-lock.
    ///
    /// Lock-free fast path (an epoch pin for the descent, one compare-and-swap on the entry's
    /// count). If a writer session holds that entry, waits for the session to commit — first
    /// briefly without any lock (spinning, then yielding) and retrying, then on the
    /// map-wide lock, shared — and never answers a spurious `None`: a key covered both
    /// before and after every session is always found. O(log n).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u64, char>::new();
    /// map.write().insert(100..200, 'a');
    /// assert_eq!(map.get(150).as_deref(), Some(&'a'));
    /// assert!(map.get(200).is_none());
    /// ```
    pub fn get(&self, key: K) -> Option<ReadGuard<'_, K, V>> {
        self.locate(|root| search::lookup(root, key))
    }

    /// The fast path of [`get`](Self::get) only: never blocks, never takes the map-wide
    /// lock. O(log n).
    ///
    /// # Errors
    /// [`TryGetError::Vacant`] if no entry holds `key`, [`TryGetError::Locked`] if a writer
    /// session holds the entry, [`TryGetError::Limit`] at the reader limit.
    ///
    /// ```
    /// use rcu_rangemap::{RangeMap, TryGetError};
    ///
    /// let map = RangeMap::<u64, u8>::new();
    /// map.write().insert(0..10, 7);
    /// let mut w = map.write();
    /// w.get_mut(5).unwrap();                      // the session now holds 0..10
    /// assert_eq!(map.try_get(5).unwrap_err(), TryGetError::Locked);
    /// w.commit();
    /// assert_eq!(*map.try_get(5).unwrap(), 7);
    /// assert_eq!(map.try_get(10).unwrap_err(), TryGetError::Vacant);
    /// ```
    pub fn try_get(&self, key: K) -> Result<ReadGuard<'_, K, V>, TryGetError> {
        try_result(self.fast(&|root| search::lookup(root, key), true, reclaim::pin))
    }

    /// [`get`](Self::get) under a pin the caller holds across lookups, maybe in several
    /// maps: it skips the pin that `get` takes for each descent, a full memory fence and a
    /// third of a lookup's instructions (a tenth to a quarter of its time in this crate's
    /// benchmarks, more when two threads look up at once). Same answer, same waiting, same
    /// statistics; a refused lookup waits as `get` does. O(log n).
    ///
    /// ```
    /// use rcu_rangemap::{EpochPin, RangeMap};
    ///
    /// let (text, heap) = (RangeMap::<u64, &str>::new(), RangeMap::<u64, &str>::new());
    /// text.write().insert(0x1000..0x2000, "text");
    /// heap.write().insert(0x1000..0x9000, "heap");
    /// let pin = EpochPin::new();
    /// for (map, addr) in [(&text, 0x1800), (&heap, 0x8000), (&text, 0x3000)] {
    ///     let hit = map.get_pinned(addr, &pin).map(|g| *g);
    ///     assert_eq!(hit, map.get(addr).map(|g| *g));
    /// }
    /// ```
    #[inline]
    pub fn get_pinned(&self, key: K, pin: &EpochPin) -> Option<ReadGuard<'_, K, V>> {
        let find = |root: NodeRef<'_, K, Entry<K, V>>| search::lookup(root, key);
        let fast = self.fast(&find, true, || pin.guard());
        self.finish(&find, fast)
    }

    /// [`try_get`](Self::try_get) under a pin the caller holds (see
    /// [`get_pinned`](Self::get_pinned)). Never blocks. O(log n).
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get).
    ///
    /// ```
    /// use rcu_rangemap::{EpochPin, RangeMap, TryGetError};
    ///
    /// let map = RangeMap::<u64, u8>::new();
    /// map.write().insert(0..8, 1);
    /// let pin = EpochPin::new();
    /// assert_eq!(*map.try_get_pinned(7, &pin).unwrap(), 1);
    /// assert_eq!(map.try_get_pinned(8, &pin).unwrap_err(), TryGetError::Vacant);
    /// ```
    #[inline]
    pub fn try_get_pinned(
        &self,
        key: K,
        pin: &EpochPin,
    ) -> Result<ReadGuard<'_, K, V>, TryGetError> {
        try_result(self.fast(&|root| search::lookup(root, key), true, || pin.guard()))
    }

    /// This map with an [`EpochPin`] held for many lookups: [`Pinned::get`] and
    /// [`Pinned::try_get`] are [`get_pinned`](Self::get_pinned) and
    /// [`try_get_pinned`](Self::try_get_pinned) under it. See [`EpochPin`] for how long to
    /// keep it.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u64, &str>::new();
    /// map.write().insert(0x1000..0x2000, "text");
    /// let faults = [0x1000, 0x1800, 0x3000];
    /// let pinned = map.pin();
    /// let hits: Vec<&str> = faults.iter().filter_map(|&a| pinned.get(a)).map(|g| *g).collect();
    /// assert_eq!(hits, ["text", "text"]);
    /// ```
    pub fn pin(&self) -> Pinned<'_, K, V> {
        Pinned::new(self, EpochPin::new())
    }

    /// Start a writer session. Blocks while another session runs.
    ///
    /// Changes made through the [`Writer`] are published together when it is committed or
    /// dropped; until then readers see the previous version, except that entries the
    /// session has locked (see [`Writer`]) are waited for by `get` and refused by `try_get`.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, u8>::new();
    /// let mut w = map.write();
    /// w.insert(0..4, 1);
    /// w.insert(4..8, 2);
    /// assert!(map.is_empty()); // readers see nothing of the session before its commit
    /// w.commit();
    /// assert_eq!(map.len(), 2);
    /// ```
    pub fn write(&self) -> Writer<'_, K, V> {
        Writer::new(self)
    }

    /// Move the map's entries and nodes into as few of its chunks as they fit, and give
    /// back to the allocator every chunk left free: for a map that shrank and will stay
    /// smaller, as `Vec::shrink_to_fit` is for a vector. O(n log n) for n entries.
    ///
    /// Without it, a map that shrank gives chunks back as its writer sessions go on (see
    /// the memory notes on [`RangeMap`]), but not a chunk on which an entry survives (an
    /// entry does not move while it lives), and a map that shrank and then stays idle
    /// keeps them all.
    ///
    /// It runs writer sessions of its own, one per 1,024 entries. Each moves its entries,
    /// values and all (nothing is cloned, ranges do not change), into the lowest free
    /// blocks, and locks them as [`Writer::get_mut`] does: it waits for their readers, and
    /// `get` waits for them (`try_get` is refused) until that session commits. One more
    /// session builds the tree's nodes anew, evenly filled (a map that shrank has
    /// underfull nodes), without locking any entry. Before that session and after it, it
    /// waits for the blocks freed to pass their grace period, yielding the thread a
    /// bounded number of times (a thread that keeps an [`EpochPin`] meanwhile holds them
    /// back; they then come back at a later session); then it gives back the free chunks.
    ///
    /// Deadlock hazard, as for [`write`](Self::write): the calling thread must hold no
    /// [`Writer`] and no [`ReadGuard`] of this map. And as for any session that locks many
    /// entries (see [`Writer`]), a reader that holds a guard while it waits in `get` for
    /// another entry can deadlock with it: nested lookups should use `try_get`.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u64, String>::new();
    /// let mut w = map.write();
    /// for i in 0..10_000 {
    ///     w.try_insert(i * 10..i * 10 + 5, i.to_string()).unwrap();
    /// }
    /// w.remove(100..100_000); // keeps 0..5 up to 90..95
    /// w.commit();
    /// map.shrink_to_fit();
    /// assert_eq!(map.len(), 10);
    /// assert_eq!(*map.get(92).unwrap(), "9");
    /// ```
    pub fn shrink_to_fit(&self) {
        let mut from = Some(K::ZERO);
        while let Some(at) = from {
            let mut w = self.write();
            w.blocks().pack();
            from = w.relocate(at, RELOCATE_PER_SESSION);
            w.commit();
        }
        // The nodes those sessions copied are as full as before: build them anew, once the
        // blocks they freed are back (the lowest of them are to take the new nodes).
        self.settle();
        let mut w = self.write();
        w.blocks().pack();
        w.rebuild();
        w.commit();
        self.settle();
        self.write().blocks().trim(true);
    }

    /// Wait, a bounded number of times, for every block the map's sessions retired to pass
    /// its grace period and come back to the slabs ([`RangeMap::shrink_to_fit`]).
    fn settle(&self) {
        for _ in 0..SETTLE_ROUNDS {
            let mut w = self.write();
            self.recycler.hand_over(w.blocks());
            if w.blocks().settled() {
                return;
            }
            drop(w);
            // Push the epoch on and run what is ripe (the batches handed over, once every
            // thread pinned before them has unpinned).
            reclaim::pin().flush();
            std::thread::yield_now();
        }
    }

    /// Number of entries in the published version. O(1).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u8, ()>::new();
    /// assert_eq!(map.len(), 0);
    /// map.write().insert(1..3, ());
    /// assert_eq!(map.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        // Relaxed: a standalone count (see `publish`).
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the published version has no entries. O(1).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u8, ()>::new();
    /// assert!(map.is_empty());
    /// map.write().insert(1..3, ());
    /// assert!(!map.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries overlapping `range`, in key order (double-ended), each read-locked when
    /// yielded.
    ///
    /// No map-wide lock unless an entry is held by a session (then it is waited for, as in
    /// `get`). Each step re-descends from the current root under a fresh pin, so a
    /// long-lived iterator holds back no reclamation, and if a commit removed the next entry
    /// meanwhile the walk continues in the newer version after the last key yielded.
    /// So, from the front, each entry yielded ends after the previous one ended (from the
    /// back, starts before the previous one started), none is yielded twice and no key that
    /// stayed covered is skipped; but if a commit reshaped the ranges between two steps, an
    /// entry of the newer version may start before the previous one ended. O(log n) per
    /// step. An empty or reversed `range` yields nothing.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, u32>::new();
    /// let mut w = map.write();
    /// for i in 0..5 {
    ///     w.insert(i * 10..i * 10 + 5, i);
    /// }
    /// w.commit();
    /// let got: Vec<u32> = map.overlapping(12..33).map(|g| *g).collect();
    /// assert_eq!(got, [1, 2, 3]);
    /// let back: Vec<u32> = map.overlapping(12..33).rev().map(|g| *g).collect();
    /// assert_eq!(back, [3, 2, 1]);
    /// ```
    pub fn overlapping(&self, range: Range<K>) -> Overlapping<'_, K, V> {
        Overlapping {
            map: self,
            front: range.start,
            back: range.end,
        }
    }

    /// All entries in key order (double-ended), each read-locked when yielded; see
    /// [`overlapping`](Self::overlapping).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u16, char>::new();
    /// let mut w = map.write();
    /// w.insert(20..30, 'b');
    /// w.insert(0..10, 'a');
    /// w.commit();
    /// let all: Vec<_> = map.iter().map(|g| (g.range(), *g)).collect();
    /// assert_eq!(all, [(0..10, 'a'), (20..30, 'b')]);
    /// assert_eq!(map.iter().next_back().map(|g| *g), Some('b'));
    /// ```
    pub fn iter(&self) -> Overlapping<'_, K, V> {
        self.overlapping(K::ZERO..K::MAX)
    }

    /// The maximal free ranges inside `within`, in key order (double-ended), all from one
    /// published version. O(log n + k). An empty or reversed `within` yields nothing.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u8, ()>::new();
    /// let mut w = map.write();
    /// w.insert(10..20, ());
    /// w.insert(30..40, ());
    /// w.commit();
    /// let gaps: Vec<_> = map.gaps(0..50).collect();
    /// assert_eq!(gaps, [0..10, 20..30, 40..50]);
    /// ```
    pub fn gaps(&self, within: Range<K>) -> Gaps<K> {
        let pin = reclaim::pin();
        Gaps {
            inner: gap::gaps(self.root(&pin), within.start, within.end).into_iter(),
        }
    }

    /// A free range of `size` keys whose start is a multiple of `align`, inside `within`:
    /// the lowest or highest such place in the published version, or `None`.
    ///
    /// O(log n): subtrees are skipped through their largest-gap metadata, not scanned.
    ///
    /// # Panics
    /// If `size` is zero or `align` is not a power of two.
    ///
    /// ```
    /// use rcu_rangemap::{Fit, RangeMap};
    ///
    /// let map = RangeMap::<u64, ()>::new();
    /// map.write().insert(0x1000..0x2800, ());
    /// let lo = map.find_gap(0..0x10000, 0x1000, 0x1000, Fit::Lowest);
    /// assert_eq!(lo, Some(0..0x1000));
    /// let lo = map.find_gap(0x800..0x10000, 0x1000, 0x1000, Fit::Lowest);
    /// assert_eq!(lo, Some(0x3000..0x4000));
    /// let hi = map.find_gap(0..0x10000, 0x1000, 0x1000, Fit::Highest);
    /// assert_eq!(hi, Some(0xf000..0x10000));
    /// ```
    pub fn find_gap(&self, within: Range<K>, size: K, align: K, fit: Fit) -> Option<Range<K>> {
        let want = want(within, size, align);
        let pin = reclaim::pin();
        gap::find_gap(self.root(&pin), want, fit)
    }

    /// A snapshot of the lock statistics (see [`Stats`]).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u64, ()>::new();
    /// map.write().insert(0..10, ());
    /// drop(map.get(3));
    /// drop(map.get(30));
    /// let s = map.stats();
    /// assert_eq!((s.success, s.miss), (1, 1));
    /// ```
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }
}

/// `try_get`'s answer for a fast path's outcome.
#[inline]
fn try_result<K: Key, V>(fast: Fast<'_, K, V>) -> Result<ReadGuard<'_, K, V>, TryGetError> {
    match fast {
        Fast::Hit(g) => Ok(g),
        Fast::Vacant => Err(TryGetError::Vacant),
        Fast::Refused(ReadFail::Limit) => Err(TryGetError::Limit),
        Fast::Refused(_) => Err(TryGetError::Locked),
    }
}

/// Validate a `find_gap` request (the checks its `# Panics` documents).
pub(crate) fn want<K: Key>(within: Range<K>, size: K, align: K) -> Want<K> {
    assert!(size > K::ZERO, "find_gap: size must be non-zero");
    assert!(
        align.is_power_of_two(),
        "find_gap: align must be a power of two, got {align:?}"
    );
    Want {
        w0: within.start,
        w1: within.end,
        size,
        align,
    }
}

/// A consistent copy of the published version: sessions wait while the copy is read
/// (it holds the writers' lock shared, like a slow-path reader); readers do not.
/// O(n) — the new tree is built bottom-up, not entry by entry. If a value's `clone`
/// panics, the copy is abandoned (clones made so far are dropped) and `self` is untouched.
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let parent = RangeMap::<u64, &str>::new();
/// parent.write().insert(0x1000..0x2000, "text");
/// let child = parent.clone(); // fork
/// child.write().remove(0x1000..0x1800);
/// assert_eq!(parent.len(), 1);
/// assert_eq!(child.get(0x1800).unwrap().range(), 0x1800..0x2000);
/// ```
impl<K: Key, V: Clone> Clone for RangeMap<K, V> {
    fn clone(&self) -> Self {
        let values: Vec<(K, K, V)> = {
            let _shared = self.writers.read();
            let pin = reclaim::pin();
            let mut out = Vec::with_capacity(self.len());
            search::for_each_overlapping(self.root(&pin), K::ZERO, K::MAX, &mut |f| {
                // SAFETY: reached from the pinned root; with the writers' lock shared no
                // session runs, so the value is initialised and nobody writes it.
                let v = unsafe { f.entry.as_ref().value() };
                out.push((f.lo, f.hi, v.clone()));
            });
            out
        };
        RangeMap::from_sorted(values)
    }
}

impl<K: Key, V> RangeMap<K, V> {
    /// A new map holding `values`: non-empty ranges `lo..hi`, sorted by start and
    /// disjoint (debug-asserted by `bulk::build`). O(n): the tree is built bottom-up.
    fn from_sorted(values: Vec<(K, K, V)>) -> Self {
        let n = values.len();
        let mut map = RangeMap::new();
        let blocks = map.scratch.get_mut().blocks();
        let items: Vec<_> = values
            .into_iter()
            .map(|(lo, hi, v)| (lo, hi, Entry::alloc_unlocked(blocks, v)))
            .collect();
        let empty = map
            .root
            .swap(bulk::build(&items, 0, blocks), Ordering::Relaxed);
        // SAFETY: the new map's initial empty leaf, from its slabs: never published to
        // anyone else.
        unsafe { NodeMut::recycle(empty, blocks) };
        map.len.store(n, Ordering::Relaxed);
        map
    }
}

impl<K: Key, V: Clone> RangeMap<K, V> {
    /// [`Writer::insert`] each of `items` (non-empty ranges: see `collect_valid`), in
    /// order, in one session; what they displace is dropped after the commit, so a value's
    /// `Drop` never runs inside the session. No session at all for no items.
    fn insert_all(&self, items: Vec<(Range<K>, V)>) {
        if items.is_empty() {
            return;
        }
        let mut displaced = Vec::new();
        let mut w = self.write();
        for (range, value) in items {
            displaced.extend(w.insert(range, value));
        }
        w.commit();
        drop(displaced);
    }
}

/// The items of a `FromIterator` or `Extend` call, all of them, before any is applied;
/// panics (dropping them all: none is applied, none leaks) if one has an empty or reversed
/// range, which [`Writer::insert`] would refuse the same way.
fn collect_valid<K: Key, V>(
    iter: impl IntoIterator<Item = (Range<K>, V)>,
    what: &str,
) -> Vec<(Range<K>, V)> {
    let items: Vec<(Range<K>, V)> = iter.into_iter().collect();
    if let Some(i) = items.iter().position(|(r, _)| r.start >= r.end) {
        panic!(
            "{what}: empty or reversed range {:?} (item {i}); nothing was inserted",
            items[i].0
        );
    }
    items
}

/// `for guard in &map`: the same as [`RangeMap::iter`], every entry in key order, each
/// read-locked when yielded.
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map: RangeMap<u32, char> = [(0..10, 'a'), (20..30, 'b')].into();
/// let mut seen = Vec::new();
/// for g in &map {
///     seen.push((g.range(), *g));
/// }
/// assert_eq!(seen, [(0..10, 'a'), (20..30, 'b')]);
/// ```
impl<'a, K: Key, V> IntoIterator for &'a RangeMap<K, V> {
    type Item = ReadGuard<'a, K, V>;
    type IntoIter = Overlapping<'a, K, V>;

    fn into_iter(self) -> Overlapping<'a, K, V> {
        self.iter()
    }
}

/// A map built from `(range, value)` pairs as if each were [`Writer::insert`]ed in turn
/// into an empty map: a later range overwrites the part of earlier ones it overlaps, and
/// an earlier entry it cuts in two keeps a clone of its value on each side. Adjacent
/// ranges are never merged, even with equal values.
///
/// This is `BTreeMap`'s rule (the last value for a key wins) applied key by key, and the
/// `rangemap` crate's `RangeMap::from_iter` rule, except that `rangemap` also coalesces
/// touching or overlapping ranges that map to equal values.
///
/// All the items are collected first, then checked, then applied: sorted, disjoint input
/// is built bottom-up in O(n) (as [`Clone`] does), anything else by one insert per item.
///
/// # Panics
/// If any item's range is empty or reversed (`start >= end`), as [`Writer::insert`]
/// panics on one, naming the range and its position; this happens before anything is
/// built, and every value is dropped. To skip or report such items instead, filter them
/// out, or insert them in a session with [`Writer::try_insert`] (which hands back the
/// value).
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map: RangeMap<u64, &str> = [(0..100, "a"), (40..60, "b"), (90..120, "c")]
///     .into_iter()
///     .collect();
/// let all: Vec<_> = map.iter().map(|g| (g.range(), *g)).collect();
/// assert_eq!(all, [(0..40, "a"), (40..60, "b"), (60..90, "a"), (90..120, "c")]);
/// ```
///
/// ```should_panic
/// use rcu_rangemap::RangeMap;
///
/// // 5..5 holds no key: refused loudly, as `Writer::insert` refuses it.
/// let map: RangeMap<u64, u8> = vec![(0..5, 1), (5..5, 2)].into_iter().collect();
/// ```
impl<K: Key, V: Clone> FromIterator<(Range<K>, V)> for RangeMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (Range<K>, V)>>(iter: I) -> Self {
        let items = collect_valid(iter, "RangeMap::from_iter");
        if items.windows(2).all(|w| w[0].0.end <= w[1].0.start) {
            return RangeMap::from_sorted(
                items
                    .into_iter()
                    .map(|(r, v)| (r.start, r.end, v))
                    .collect(),
            );
        }
        let map = RangeMap::new();
        map.insert_all(items);
        map
    }
}

/// `RangeMap::from([(range, value), ...])`, like `BTreeMap::from`: the same as
/// [`FromIterator`] over the array (later ranges overwrite earlier ones; panics on an
/// empty or reversed range).
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::from([(0u32..10, 'a'), (5..15, 'b')]);
/// let all: Vec<_> = map.iter().map(|g| (g.range(), *g)).collect();
/// assert_eq!(all, [(0..5, 'a'), (5..15, 'b')]);
/// ```
impl<K: Key, V: Clone, const N: usize> From<[(Range<K>, V); N]> for RangeMap<K, V> {
    fn from(items: [(Range<K>, V); N]) -> Self {
        items.into_iter().collect()
    }
}

/// Insert every `(range, value)` pair, in order, in one writer session, as
/// [`Writer::insert`] would: a later range overwrites the part of earlier entries (and
/// earlier items) it overlaps, and an entry it cuts in two keeps a clone of its value on
/// each side. The values displaced are dropped after the commit.
///
/// Through `&mut RangeMap` no reader can exist meanwhile; through `&RangeMap` (the impl
/// below) readers can, and they see the map before the whole extension or after it, as
/// for any session (see the [crate docs](crate)).
///
/// All the items are collected and checked before the session starts, so the iterator's
/// own code (even one that reads this map) never runs inside the session.
///
/// # Panics
/// If any item's range is empty or reversed (`start >= end`), before anything is
/// inserted: the map is unchanged and every value is dropped. If a value's `clone`
/// panics, the session commits the inserts before it, as any session does on a panic (see
/// [`Writer`]); the values not yet inserted are dropped.
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let mut map = RangeMap::from([(0u64..100, "heap")]);
/// map.extend([(40..60, "stack"), (200..300, "text")]);
/// let all: Vec<_> = map.iter().map(|g| (g.range(), *g)).collect();
/// assert_eq!(
///     all,
///     [(0..40, "heap"), (40..60, "stack"), (60..100, "heap"), (200..300, "text")]
/// );
/// ```
impl<K: Key, V: Clone> Extend<(Range<K>, V)> for RangeMap<K, V> {
    fn extend<I: IntoIterator<Item = (Range<K>, V)>>(&mut self, iter: I) {
        let mut shared: &Self = self;
        shared.extend(iter);
    }
}

/// [`Extend`] for a shared map (`(&map).extend(...)`, or through an `Arc`): a map is
/// written through `&self` sessions, so the same rules as for `&mut RangeMap` apply, and
/// readers on other threads see none of the items or all of them (one session, one
/// commit).
///
/// Deadlock hazard, as for [`RangeMap::write`]: the calling thread must not hold a
/// [`Writer`] of this map, nor a [`ReadGuard`] on an entry that an item overwrites.
///
/// ```
/// use rcu_rangemap::RangeMap;
/// use std::sync::Arc;
///
/// let map = Arc::new(RangeMap::<u64, u32>::new());
/// let reader = {
///     let map = Arc::clone(&map);
///     std::thread::spawn(move || {
///         // Either nothing yet, or both entries: never only one.
///         let n = map.iter().count();
///         assert!(n == 0 || n == 2, "{n}");
///     })
/// };
/// (&*map).extend([(0..10, 1), (10..20, 2)]);
/// reader.join().unwrap();
/// assert_eq!(map.len(), 2);
/// ```
impl<K: Key, V: Clone> Extend<(Range<K>, V)> for &RangeMap<K, V> {
    fn extend<I: IntoIterator<Item = (Range<K>, V)>>(&mut self, iter: I) {
        self.insert_all(collect_valid(iter, "RangeMap::extend"));
    }
}

impl<K: Key, V: fmt::Debug> fmt::Debug for RangeMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for g in self.iter() {
            m.entry(&g.range(), &*g);
        }
        m.finish()
    }
}

impl<K: Key, V> Drop for RangeMap<K, V> {
    fn drop(&mut self) {
        // `&mut self`: no reader or writer exists (a leaked `Writer` can never run again),
        // so the published tree is ours alone.
        let root = *self.root.get_mut();
        // SAFETY: the root is live and, with no other thread left, cannot be freed under us.
        let root_ref: NodeRef<'_, K, Entry<K, V>> =
            unsafe { NodeRef::new(NonNull::new_unchecked(root)) };
        let mut entries = Vec::with_capacity(*self.len.get_mut());
        search::for_each_overlapping(root_ref, K::ZERO, K::MAX, &mut |f| entries.push(f.entry));
        // A session that never ended (its `Writer` leaked) may have moved values out of
        // entries still in the published tree: those values are the caller's now.
        let moved_out = self.scratch.get_mut().moved_out();
        if !moved_out.is_empty() {
            entries.retain(|e| moved_out.binary_search(e).is_err());
        }
        // Drop the values in this thread (never in a reclamation callback). If one value's
        // `Drop` panics, `rest` drops the others while the panic unwinds (a second panic
        // there aborts, as in `Vec`'s drop). The nodes and entries themselves are blocks
        // of the map's slabs, freed after this with `scratch`.
        let mut rest = Rest(entries.into_iter());
        rest.drop_values();
    }
}

/// The entries whose values [`RangeMap`]'s drop has yet to drop: each of the last
/// published version, listed once, attached (value initialised: a value a leaked session
/// moved out is not listed), unreachable by any other thread, in a block that is not
/// reused before the map's slabs free it.
struct Rest<K: Key, V>(std::vec::IntoIter<NonNull<Entry<K, V>>>);

impl<K: Key, V> Rest<K, V> {
    fn drop_values(&mut self) {
        for e in self.0.by_ref() {
            // SAFETY: listed in `Rest`, so initialised and ours alone; `by_ref` takes it
            // off the list before its value's `Drop` runs, so it is never taken twice.
            drop(unsafe { Entry::take_value(e) });
        }
    }
}

impl<K: Key, V> Drop for Rest<K, V> {
    fn drop(&mut self) {
        // Empty unless a value's `Drop` panicked in `drop_values`.
        self.drop_values();
    }
}

/// Iterator over entries overlapping a range, from [`RangeMap::overlapping`] and
/// [`RangeMap::iter`]. Yields read-locked [`ReadGuard`]s, in key order from the front and
/// in reverse from the back.
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::<u32, u32>::new();
/// map.write().insert(0..10, 7);
/// let mut it = map.overlapping(5..50);
/// let g = it.next().expect("0..10 overlaps 5..50");
/// assert_eq!((g.range(), *g), (0..10, 7));
/// assert!(it.next().is_none());
/// ```
pub struct Overlapping<'a, K: Key, V> {
    map: &'a RangeMap<K, V>,
    /// Entries yielded from the front ended at or before this.
    front: K,
    /// Entries yielded from the back started at or after this.
    back: K,
}

impl<'a, K: Key, V> Iterator for Overlapping<'a, K, V> {
    type Item = ReadGuard<'a, K, V>;

    fn next(&mut self) -> Option<Self::Item> {
        let (front, back) = (self.front, self.back);
        if front >= back {
            return None;
        }
        // A granted entry is the first in the version we read and still in the current
        // one, unchanged; one a commit removed or replaced is detached, and the walk looks
        // again in the newer version.
        let g = self
            .map
            .locate(|root| search::first_overlapping(root, front, back));
        match &g {
            Some(g) => self.front = g.range().end,
            None => self.front = back,
        }
        g
    }
}

impl<K: Key, V> DoubleEndedIterator for Overlapping<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let (front, back) = (self.front, self.back);
        if front >= back {
            return None;
        }
        // As in `next`, from the other end.
        let g = self
            .map
            .locate(|root| search::last_overlapping(root, front, back));
        match &g {
            Some(g) => self.back = g.range().start,
            None => self.back = front,
        }
        g
    }
}

impl<K: Key, V> core::iter::FusedIterator for Overlapping<'_, K, V> {}

/// A second walk from where this one stands: both go on independently (they hold no guard,
/// only the map and the bounds left to walk), each taking its own read locks.
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::from([(0u32..10, 'a'), (10..20, 'b'), (20..30, 'c')]);
/// let mut it = map.iter();
/// it.next();
/// let rest: Vec<char> = it.clone().map(|g| *g).collect();
/// assert_eq!(rest, ['b', 'c']);
/// assert_eq!(it.next_back().map(|g| *g), Some('c'));
/// ```
impl<K: Key, V> Clone for Overlapping<'_, K, V> {
    fn clone(&self) -> Self {
        Overlapping {
            map: self.map,
            front: self.front,
            back: self.back,
        }
    }
}

impl<K: Key, V> fmt::Debug for Overlapping<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overlapping")
            .field("front", &self.front)
            .field("back", &self.back)
            .finish_non_exhaustive()
    }
}

/// Iterator over free ranges, from [`RangeMap::gaps`]: one consistent snapshot.
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::<u32, ()>::new();
/// map.write().insert(10..20, ());
/// let free: Vec<_> = map.gaps(0..30).collect();
/// assert_eq!(free, [0..10, 20..30]);
/// assert_eq!(map.gaps(0..30).rev().next(), Some(20..30));
/// ```
#[derive(Clone, Debug)]
pub struct Gaps<K> {
    inner: std::vec::IntoIter<Range<K>>,
}

impl<K> Iterator for Gaps<K> {
    type Item = Range<K>;
    fn next(&mut self) -> Option<Range<K>> {
        self.inner.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<K> DoubleEndedIterator for Gaps<K> {
    fn next_back(&mut self) -> Option<Range<K>> {
        self.inner.next_back()
    }
}

impl<K> ExactSizeIterator for Gaps<K> {}
impl<K> core::iter::FusedIterator for Gaps<K> {}
