//! Entries (a value with its embedded lock) and the `ReadGuard` readers hold.
//!
//! Owns: the entry's memory, who may touch its value and when, and the guard
//! that holds a read count. Must not: find entries (the tree) or decide when to lock them
//! (the map and the writer).

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ops::{Deref, Range};
use core::ptr::NonNull;

use crate::key::Key;
use crate::lock::{EntryLock, LockDomain, Session};
use crate::reclaim::Blocks;

/// One stored range's value and lock.
///
/// Invariants:
/// - An entry's range never changes: it is the range stored beside the entry's pointer in
///   every leaf that holds it (the tree keeps the bounds; the entry does not repeat them).
///   A session that trims or moves a range replaces the entry with a new one and removes
///   the old, so a reader whose read count is granted on an entry it found in any tree
///   version knows the entry's range is the one that version showed.
/// - `value` is initialised while the entry is in a tree version some thread can still use
///   it through (from creation until the writer that removes it moves the value out), except
///   while the session that moved it out holds the entry write-locked: a session that
///   removes a range and puts the same range back keeps the entry and refills it before it
///   ends ([`Entry::refill`], `Writer`'s commit). A session whose `Writer` leaked holds its
///   entries for good; the map's drop skips the ones it emptied (`Scratch::moved_out`).
/// - `value` is written only by the writer session that holds the entry write-locked
///   (`lock.seq == session`, after `write_lock` waited the readers out) or created it; it
///   is read by that writer, or by a reader holding a read count granted by the lock
///   protocol, which excludes the writer's changes until the session ends.
/// - The entry is a block of its map's entry slab (`reclaim::Blocks`), handed back for
///   reuse only after `lock.detach` drained it (count `DETACHED`) and the versions that
///   reached it were unlinked, through `reclaim`'s grace periods: the value is never
///   dropped there (it was moved out by the writer). The one exception is an entry that
///   was never published: a put-back's new entry, emptied into the entry it replaced and
///   handed back at once by the commit that would have published it (`Writer`'s
///   `keep_entry`). A map's drop moves the values of its last version out
///   ([`Entry::take_value`]) before its slabs free their chunks.
pub(crate) struct Entry<K, V> {
    pub(crate) lock: EntryLock,
    value: UnsafeCell<MaybeUninit<V>>,
    /// The key type of the map the entry belongs to (its bounds live in the leaves).
    _key: PhantomData<fn() -> K>,
}

impl<K: Key, V> Entry<K, V> {
    /// A new entry, born in (and write-locked by) session `s`, in a block from `blocks`.
    pub(crate) fn alloc(blocks: &mut Blocks, value: V, s: Session) -> NonNull<Self> {
        Self::alloc_with(blocks, value, EntryLock::new_locked(s))
    }

    /// A new entry of a map under construction (no session: not locked), in a block from
    /// `blocks`.
    pub(crate) fn alloc_unlocked(blocks: &mut Blocks, value: V) -> NonNull<Self> {
        Self::alloc_with(blocks, value, EntryLock::new_attached())
    }

    fn alloc_with(blocks: &mut Blocks, value: V, lock: EntryLock) -> NonNull<Self> {
        let block = blocks.alloc(Layout::new::<Self>()).cast::<Self>();
        // SAFETY: an unused block with `Entry`'s layout: in bounds and aligned.
        unsafe {
            block.as_ptr().write(Entry {
                lock,
                value: UnsafeCell::new(MaybeUninit::new(value)),
                _key: PhantomData,
            })
        };
        block
    }

    /// Move the value out of an entry no other thread can reach: one of a map that is being
    /// dropped, or a session's new entry that its commit throws away (`Writer`'s
    /// `keep_entry`). The block stays its slab's.
    ///
    /// # Safety
    /// The value is initialised, no other thread can reach the entry (its tree is gone, or
    /// it was never published, and no guard is alive), and nothing reads the value again.
    pub(crate) unsafe fn take_value(this: NonNull<Self>) -> V {
        // SAFETY: caller contract: initialised, ours alone, and read this once.
        unsafe { (*this.as_ref().value.get()).assume_init_read() }
    }

    /// Put a value back into an entry whose value the session moved out while it kept the
    /// entry write-locked: the commit that finds the session put the same range back
    /// (`Writer`'s commit, step 1).
    ///
    /// # Safety
    /// The active session holds `this` write-locked (so no reader reads the value until the
    /// session ends), its value was moved out, and nothing else writes it meanwhile.
    pub(crate) unsafe fn refill(this: NonNull<Self>, value: V) {
        // SAFETY: caller contract: the value is vacant, and the session's alone.
        unsafe { (*this.as_ref().value.get()).write(value) };
    }

    /// The value.
    ///
    /// # Safety
    /// The caller holds a granted read count, or is the writer session (see the type's
    /// invariants), and the value is initialised.
    #[inline]
    pub(crate) unsafe fn value(&self) -> &V {
        // SAFETY: caller contract.
        unsafe { (*self.value.get()).assume_init_ref() }
    }
}

/// Write access to an entry that the active writer session holds write-locked.
///
/// Invariant: the session that made it holds the entry write-locked (or created it), so no
/// reader reads the value until the session ends, and the entry stays allocated
/// for the session (it can only be retired by this session's commit).
pub(crate) struct Held<K, V> {
    ptr: NonNull<Entry<K, V>>,
}

impl<K: Key, V> Held<K, V> {
    /// Write-lock `ptr` in session `s` (waiting for its readers) and take write access.
    ///
    /// # Safety
    /// `ptr` is an attached entry of the session's working tree, or one this session has
    /// just unlinked from it (still live: it is retired only by the commit), `s` is the
    /// active session, and the caller creates no two live `Held` for one entry that it
    /// uses at once.
    pub(crate) unsafe fn lock(ptr: NonNull<Entry<K, V>>, domain: &LockDomain, s: Session) -> Self {
        // SAFETY: caller contract: the entry is live.
        unsafe { ptr.as_ref() }.lock.write_lock(domain, s);
        Held { ptr }
    }

    pub(crate) fn ptr(&self) -> NonNull<Entry<K, V>> {
        self.ptr
    }

    /// The value, mutably. It must be initialised (not yet moved out).
    pub(crate) fn value_mut(&mut self) -> &mut V {
        // SAFETY: type invariant (exclusive access); initialised per caller contract of
        // the operations that move it out, which consume or refill it.
        unsafe { (*self.ptr.as_ref().value.get()).assume_init_mut() }
    }

    /// Move the value out for good: the entry must be leaving the tree (detached at commit).
    pub(crate) fn take_value(self) -> V {
        // SAFETY: type invariant (exclusive access); the value is initialised, and the caller
        // unlinks the entry so nothing reads it again.
        unsafe { (*self.ptr.as_ref().value.get()).assume_init_read() }
    }
}

/// A read-locked entry: the value and its range, readable until the guard is dropped.
///
/// Holds one count of the entry's embedded refcount lock — not an epoch pin — so a guard
/// kept for a long time delays only writers that want this very entry, never memory
/// reclamation elsewhere in the map. The range is the one the lookup read beside the entry
/// in the tree (an entry's range never changes, see `Entry`).
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::<u64, &str>::new();
/// map.write().insert(0x1000..0x3000, "text");
/// let guard = map.get(0x2fff).unwrap();
/// assert_eq!(*guard, "text");
/// assert_eq!(guard.range(), 0x1000..0x3000);
/// ```
pub struct ReadGuard<'a, K: Key, V> {
    domain: &'a LockDomain,
    entry: NonNull<Entry<K, V>>,
    lo: K,
    hi: K,
    _value: PhantomData<&'a V>,
}

// SAFETY: a guard is a shared borrow of a `V` plus the right to give back one read count,
// which any thread may do; so it may move or be shared across threads when `&V` may.
unsafe impl<K: Key, V: Sync> Send for ReadGuard<'_, K, V> {}
// SAFETY: as above: `&ReadGuard` only hands out `&V`.
unsafe impl<K: Key, V: Sync> Sync for ReadGuard<'_, K, V> {}

impl<'a, K: Key, V> ReadGuard<'a, K, V> {
    /// Wrap a read count the caller was granted.
    ///
    /// # Safety
    /// The caller holds one granted read count of `entry` (from `try_read` or `read_locked`)
    /// and hands it to the guard; `domain` is the entry's map's lock domain; `lo..hi` is
    /// the range a tree version stored beside the entry (its range for life).
    pub(crate) unsafe fn new(
        domain: &'a LockDomain,
        entry: NonNull<Entry<K, V>>,
        lo: K,
        hi: K,
    ) -> Self {
        ReadGuard {
            domain,
            entry,
            lo,
            hi,
            _value: PhantomData,
        }
    }

    /// The range of the entry.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u64, ()>::new();
    /// map.write().insert(0x1000..0x2000, ());
    /// assert_eq!(map.get(0x1234).unwrap().range(), 0x1000..0x2000);
    /// ```
    pub fn range(&self) -> Range<K> {
        self.lo..self.hi
    }
}

impl<K: Key, V> Deref for ReadGuard<'_, K, V> {
    type Target = V;

    fn deref(&self) -> &V {
        // SAFETY: the read count keeps the entry allocated, attached (so the value is
        // initialised) and unchanged until the guard is dropped.
        unsafe { self.entry.as_ref().value() }
    }
}

impl<K: Key, V> Drop for ReadGuard<'_, K, V> {
    fn drop(&mut self) {
        // SAFETY: we still hold our count, so the entry is allocated for this call;
        // `read_unlock` touches nothing of it after its decrement and wakes the writer
        // through `domain`, which the guard borrows from the live map.
        unsafe { self.entry.as_ref() }.lock.read_unlock(self.domain);
    }
}

impl<K: Key, V: fmt::Debug> fmt::Debug for ReadGuard<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard")
            .field("range", &self.range())
            .field("value", &**self)
            .finish()
    }
}
