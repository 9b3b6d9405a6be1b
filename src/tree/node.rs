//! Node layout and the two kinds of node handle.
//!
//! Owns: the memory layout of tree nodes, their allocation and freeing, and the typed
//! handles through which they are read ([`NodeRef`]: any node, read-only) or changed
//! ([`NodeMut`]: only a node the current writer session allocated). Must not: decide
//! anything about tree shape (that is `cow.rs`) or about entries (the tree never
//! dereferences an entry pointer).
//!
//! # Layout (`K = u64`, `B = 15`, 64-byte aligned)
//!
//! ```text
//!            line 0-1                                             line 2-5               line 5
//! Node       level: u8 | len: u8 | stale: u16 | touched: u16 | pad | lo: [K; B] | slot: [(hi, ptr); B] | born | source
//!            8 + 120 = 128                                        240                    8 + 8  -> 384 bytes
//! Internal   Node | gap: [K; B]                                                                -> 512 bytes
//! ```
//!
//! Below, `hi[i]` and `ptr[i]` are the fields of `slot[i]`. `lo[i]..hi[i]` is entry `i`'s
//! range in a leaf, and in an internal node the span of child `i`'s subtree (its first
//! entry's start to its last entry's end); `gap[i]` is the largest free range strictly
//! inside child `i`'s span. Keeping the bounds beside the pointers lets
//! a lookup decide vacancy without touching an entry, and lets `find_gap` prune subtrees
//! whose largest gap is too small. A step of a descent reads the header and searches `lo`
//! (exactly the first two cache lines), then reads slot `i`'s `hi` and `ptr`, which share a
//! line: three lines a level. `born` is only the writer's, so it sits at the end. The maple
//! tree's 256-byte nodes hold 16 slots, or 10 with gap data.
//!
//! That is the layout on 64-bit targets. On 32-bit ones a pointer takes 4 bytes, so a slot
//! is smaller (12 bytes where a `u64` is 4-aligned, as on x86, with 320-byte leaves) and
//! some slots straddle two lines: correct, but not tuned.
//!
//! `B = 15` is what fills those two lines. Before, `B = 16` with separate `lo`, `hi` and
//! `ptr` arrays and a 16-byte header at malloc's 16-byte alignment touched four lines per
//! internal level and five per leaf; the change took simulated L1d misses per lookup at
//! N = 100k from 10.2 to 8.6 and per one-op session at N = 10k from 70.8 to 63.5 (callgrind,
//! `benches/src/bin/profile.rs`), and 30M lookups at N = 1k from 1.17–1.39 s to 1.09–1.21 s
//! (five alternating runs each, 2-vCPU Intel VM). `B` itself was chosen among 8, 16 and 32
//! by measurement (2-core VM, other jobs running, best of 7 × 2M ops, two runs each; `get`
//! of a random present key, and a one-overwrite session at N = 300):
//!
//! | B  | get, N = 1k | get, N = 100k | overwrite session |
//! |----|-------------|---------------|-------------------|
//! | 8  | 29.9 / 28.9 ns | 100.7 / 105.8 ns | 477 / 494 ns |
//! | 16 | 26.8 / 26.0 ns | 70.7 / 65.2 ns   | 462 / 458 ns |
//! | 32 | 29.3 / 26.8 ns | 73.1 / 80.8 ns   | 581 / 620 ns |
//!
//! Smaller nodes make the tree deeper (more dependent misses at 100k); larger ones make
//! each copy-on-write copy and each scan longer.
//!
//! # Publication rule
//!
//! A node is *born* in one writer session (`born` holds that session's sequence) and is
//! mutable only until that session publishes: after the root store that publishes it, it
//! is never written again, so readers read it with plain loads. The session tells its own
//! nodes apart by `born == session`; a [`NodeMut`] exists only for those.

use core::alloc::Layout;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::key::Key;
use crate::reclaim::{Blocks, Retired};

/// Slots per node.
pub(crate) const B: usize = 15;
// `NodeRef::rank`'s binary search halves `B + 1`.
const _: () = assert!((B + 1).is_power_of_two());
// The slabs prefetch the whole block the next node allocation takes (`Slab::alloc`).
const _: () = assert!(core::mem::size_of::<Internal<u128, ()>>() <= crate::sync::PREFETCH_MAX);
/// A non-root node with fewer slots than this is merged with or refilled from a sibling.
pub(crate) const MIN: usize = B / 4;

/// A tree node; a leaf when `level == 0`, else the first field of an [`Internal`].
///
/// Invariants: `lo[..len]` is strictly increasing, `lo[i] < hi[i] <= lo[i + 1]`, and
/// `lo[len..]` is all `K::MAX` (so the whole array is sorted, for [`NodeRef::rank`]); in a
/// leaf `ptr[i]` is an entry pointer whose range is `lo[i]..hi[i]`, in an internal node it is a
/// child of level `level - 1` whose span is `lo[i]..hi[i]`. Only the root may have fewer
/// than [`MIN`] slots. Once published (see the module docs) the node is immutable, and each
/// child outlives it: a child is replaced only by copying its parent too, and both are
/// retired by the same commit.
#[repr(C, align(64))]
pub(crate) struct Node<K, E> {
    level: u8,
    len: u8,
    /// Bit `i` set: slot `i`'s gap is stale (see [`Internal`]). Always 0 in a leaf.
    stale: u16,
    /// Bit `i` set: the session that owns the node may have written slot `i` (its `lo`, `hi`,
    /// pointer or gap) since it allocated or copied the node; every setter of
    /// [`NodeMut`] sets the bits of the slots it writes, and nothing else writes a slot. So
    /// a slot whose bit is clear in a copy still holds what `source` held — what lets the
    /// commit compare a session's path with the published one only where it changed
    /// (`CowTree::only_entry_swapped`). Meaningless once published.
    touched: u16,
    lo: [K; B],
    slot: [Slot<K>; B],
    born: u64,
    /// The node this one is a copy of ([`NodeMut::copy_of`]), or null ([`NodeMut::alloc_in`]).
    /// Only the owning session reads it (see `touched`); it is never dereferenced.
    source: *const Node<K, E>,
    _entry: PhantomData<*const E>,
}

/// The rest of a slot beside its start: read together at the end of each step of a descent,
/// so they share a cache line.
#[derive(Clone, Copy)]
#[repr(C)]
struct Slot<K> {
    hi: K,
    ptr: *mut (),
}

/// An internal node: a [`Node`] header plus the per-child gap metadata.
///
/// Invariant: `gap[i]` is child `i`'s largest inner gap (see the module docs), or, only
/// while the session that owns both this node and child `i` is editing, *stale*: `K::MAX`
/// (never a real inner gap, which is smaller than its span), with bit `i` of the node's
/// `stale` set — and `stale` has no other bits. An edit stores a changed child's bounds at
/// once (descents route by them) but leaves its gap stale ([`NodeRef::bounds`]); the commit
/// computes every stale gap once, bottom-up, before publishing (`CowTree::fix_gaps`), so a
/// session that edits one path many times summarises each node of it once. Published
/// nodes hold no stale gap. `find_gap` on a session's own tree reads a stale gap as "may
/// fit" and descends: pruning needs exact gaps, descending does not.
///
/// The fact is kept twice on purpose, and `NodeMut`'s setters keep the two in step: the
/// `K::MAX` is what `find_gap` reads (it passes every size test, with no extra check on
/// that path), the bits are what `fix_gaps` reads (it visits the stale slots without
/// scanning the gap lines; with the scan instead of the bits, allocator steps, which edit
/// one path per session, took 12% more instructions rather than 4%).
#[repr(C)]
pub(crate) struct Internal<K, E> {
    node: Node<K, E>,
    gap: [K; B],
}

/// A span summary: what a parent stores about one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Summary<K> {
    pub lo: K,
    pub hi: K,
    pub gap: K,
}

/// A read-only handle to a live node, valid for `'a`.
///
/// Whoever makes one vouches that the node stays allocated for `'a` (a reader: its epoch
/// pin; the writer: its session). All reads go through the raw pointer, which carries the
/// provenance of the whole allocation (so the gap array of an internal node is in bounds).
pub(crate) struct NodeRef<'a, K, E> {
    ptr: NonNull<Node<K, E>>,
    _life: PhantomData<&'a Node<K, E>>,
}

impl<K, E> Clone for NodeRef<'_, K, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, E> Copy for NodeRef<'_, K, E> {}

impl<'a, K: Key, E> NodeRef<'a, K, E> {
    /// # Safety
    /// `ptr` points to a live node that stays allocated and unmodified for `'a`, except by
    /// the session that owns it, which reads it through this handle only between its own
    /// writes (never while holding a `&mut` to it).
    pub(crate) unsafe fn new(ptr: NonNull<Node<K, E>>) -> Self {
        NodeRef {
            ptr,
            _life: PhantomData,
        }
    }

    pub(crate) fn as_ptr(self) -> *mut Node<K, E> {
        self.ptr.as_ptr()
    }

    #[inline]
    fn raw(self) -> *const Node<K, E> {
        self.ptr.as_ptr()
    }

    #[inline]
    pub(crate) fn len(self) -> usize {
        // SAFETY: the node is live for 'a (constructor contract).
        unsafe { (*self.raw()).len as usize }
    }

    #[inline]
    pub(crate) fn is_leaf(self) -> bool {
        // SAFETY: as in `len`.
        unsafe { (*self.raw()).level == 0 }
    }

    #[inline]
    pub(crate) fn level(self) -> u8 {
        // SAFETY: as in `len`.
        unsafe { (*self.raw()).level }
    }

    #[inline]
    pub(crate) fn born(self) -> u64 {
        // SAFETY: as in `len`.
        unsafe { (*self.raw()).born }
    }

    /// The slots whose gap is stale, as a bit set (see [`Internal`]).
    #[inline]
    pub(crate) fn stale(self) -> u16 {
        // SAFETY: as in `len`.
        unsafe { (*self.raw()).stale }
    }

    /// The slots the owning session may have written since it allocated or copied the node,
    /// as a bit set (see [`Node`]'s `touched`). Only meaningful for a node of the session
    /// that asks.
    #[inline]
    pub(crate) fn touched(self) -> u16 {
        // SAFETY: as in `len`.
        unsafe { (*self.raw()).touched }
    }

    /// The node this one was copied from, or null if allocated empty (see [`Node`]'s
    /// `source`). Only meaningful for a node of the session that asks.
    #[inline]
    pub(crate) fn source(self) -> *const Node<K, E> {
        // SAFETY: as in `len`.
        unsafe { (*self.raw()).source }
    }

    #[inline]
    pub(crate) fn lo(self, i: usize) -> K {
        debug_assert!(i < self.len());
        // SAFETY: as in `len`; `i < B` is checked by the array index.
        unsafe { (*self.raw()).lo[i] }
    }

    #[inline]
    pub(crate) fn hi(self, i: usize) -> K {
        debug_assert!(i < self.len());
        // SAFETY: as in `len`.
        unsafe { (*self.raw()).slot[i].hi }
    }

    /// The largest gap inside child `i`'s span. Internal nodes only.
    #[inline]
    pub(crate) fn gap(self, i: usize) -> K {
        debug_assert!(!self.is_leaf() && i < self.len());
        // SAFETY: the node is live for 'a and, being internal (level > 0), was allocated as
        // an `Internal` whose first field it is (repr(C)); the pointer's provenance covers
        // the whole allocation.
        unsafe { (*(self.raw() as *const Internal<K, E>)).gap[i] }
    }

    /// Entry pointer `i`. Leaves only.
    #[inline]
    pub(crate) fn entry(self, i: usize) -> NonNull<E> {
        debug_assert!(self.is_leaf() && i < self.len());
        // SAFETY: as in `len`. Leaf slots below `len` hold non-null entry pointers.
        unsafe { NonNull::new_unchecked((*self.raw()).slot[i].ptr as *mut E) }
    }

    /// Child `i`. Internal nodes only.
    #[inline]
    pub(crate) fn child(self, i: usize) -> NodeRef<'a, K, E> {
        debug_assert!(!self.is_leaf() && i < self.len());
        // SAFETY: as in `len`; a child outlives its parent (invariant of `Node`), so it is
        // live for 'a too.
        unsafe {
            NodeRef::new(NonNull::new_unchecked(
                (*self.raw()).slot[i].ptr as *mut Node<K, E>,
            ))
        }
    }

    /// Ask the CPU to start loading the lines of the node's slots (four for `u64` keys),
    /// for a descent that has just reached the node: it needs one of them right after
    /// searching `lo`, and which one only that search tells. Loading them together with the
    /// `lo` lines overlaps two dependent misses per level. 10M lookups at N = 100k
    /// (`profile get`, five alternating runs, 2-vCPU Intel VM): 0.98–1.08 s without,
    /// 0.85–0.94 s with (one more run each side near 1.28); in the writer's descents,
    /// 64-op sessions at N = 100k 0.97–1.03 s → 0.94–0.99 s. Prefetching an internal
    /// node's gap lines in `find_gap` measured no faster. A hint only: a no-op off x86-64
    /// and under Miri.
    #[inline]
    pub(crate) fn prefetch_slots(self) {
        // SAFETY: the node is live (as in `len`); `addr_of!` takes the field's address
        // without reading it.
        let start = unsafe { core::ptr::addr_of!((*self.raw()).slot) } as *const u8;
        crate::sync::prefetch(start, core::mem::size_of::<[Slot<K>; B]>());
    }

    /// Number of slots whose `lo <= key`: the slot that may hold `key` is one less. For the
    /// readers' lookup; the writer's descents use [`rank_scan`](Self::rank_scan).
    ///
    /// A branch-free binary search over all `B` keys: the keys past `len` are `K::MAX`
    /// (invariant of [`Node`]), so the whole array is sorted, and only `key == K::MAX`
    /// would count them, which the `min` undoes. A scan of the first `len` keys mispredicts
    /// its exit at most levels once the nodes' fill varies, as it does after churn. Five
    /// alternating runs on the 2-vCPU Intel VM (`profile get-aged ours 1000 30000000`,
    /// which first ages a 1k map by a million one-op sessions, ~0.33 s): 1.80–2.42 s
    /// (median 2.10) with the scan, 1.36–1.92 s (median 1.60) with this search; on a fresh
    /// map (`profile get`) medians 1.41 and 1.22 s. Per lookup 308 → 202 instructions at
    /// N = 1k and 418 → 250 at N = 100k (callgrind), with the same L1d misses.
    #[inline]
    pub(crate) fn rank(self, key: K) -> usize {
        let len = self.len();
        // SAFETY: as in `len`.
        let lo = unsafe { &(*self.raw()).lo };
        let mut base = 0;
        // Halves of `B + 1` (a power of two): 8, 4, 2, 1, summing to `B`.
        let mut half = B.div_ceil(2);
        while half > 0 {
            // In bounds: `base + half <= B`, as the halves sum to `B`.
            if lo[base + half - 1] <= key {
                base += half;
            }
            half /= 2;
        }
        base.min(len)
    }

    /// The same count as [`rank`](Self::rank), by a scan of the first `len` keys: for the
    /// writer's descents, where it measured faster than the binary search (one-op sessions
    /// at N = 10k: 2M in 0.77–0.97 s against 0.89–1.37 s; 64-op sessions at N = 100k: 2M
    /// ops in 1.02–1.25 s against 1.32–1.68 s; four alternating runs, `profile churn`).
    /// Why is not established; the search's four probes depend on each other, and the
    /// writer's descents run on nodes less often in the L1 than a small map's lookups.
    #[inline]
    pub(crate) fn rank_scan(self, key: K) -> usize {
        let len = self.len();
        // SAFETY: as in `len`.
        let lo = unsafe { &(*self.raw()).lo };
        let mut n = 0;
        for &l in &lo[..len] {
            n += (l <= key) as usize;
        }
        n
    }

    /// Whether every key past `len` is `K::MAX` (invariant of [`Node`]), for the checks.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn padding_is_max(self) -> bool {
        // SAFETY: as in `len`.
        let lo = unsafe { &(*self.raw()).lo };
        lo[self.len()..].iter().all(|&l| l == K::MAX)
    }

    /// What the parent stores about this node while the session that owns it is still
    /// editing: its bounds, exact, and its gap *stale* (`K::MAX`, see [`Internal`]), for
    /// the commit to compute (`CowTree::fix_gaps`). O(1). The node must not be empty.
    #[inline]
    pub(crate) fn bounds(self) -> Summary<K> {
        let len = self.len();
        debug_assert!(len > 0);
        Summary {
            lo: self.lo(0),
            hi: self.hi(len - 1),
            gap: K::MAX,
        }
    }

    /// What the parent stores about this node. The node must not be empty, and none of its
    /// gaps stale. O(len).
    pub(crate) fn summary(self) -> Summary<K> {
        let len = self.len();
        debug_assert!(len > 0);
        // SAFETY: as in `len`.
        let n = unsafe { &*self.raw() };
        // Four running maxima in four locals, not one: a single maximum chains every slot's
        // compare-and-move (two cycles a slot). Locals, not an array indexed `i % 4`, which
        // the compiler kept on the stack, each step waiting on the store before it.
        let free = |i: usize| n.lo[i].sub(n.slot[i - 1].hi);
        let (mut m0, mut m1, mut m2, mut m3) = (K::ZERO, K::ZERO, K::ZERO, K::ZERO);
        // Free space between consecutive slots: `lo[i] >= hi[i - 1]` (node invariant).
        let mut i = 1;
        while i + 4 <= len {
            m0 = m0.max(free(i));
            m1 = m1.max(free(i + 1));
            m2 = m2.max(free(i + 2));
            m3 = m3.max(free(i + 3));
            i += 4;
        }
        while i < len {
            m0 = m0.max(free(i));
            i += 1;
        }
        if !self.is_leaf() {
            // SAFETY: an internal node (see `gap`).
            let inner = unsafe { &(*(self.raw() as *const Internal<K, E>)).gap };
            let mut i = 0;
            while i + 4 <= len {
                m0 = m0.max(inner[i]);
                m1 = m1.max(inner[i + 1]);
                m2 = m2.max(inner[i + 2]);
                m3 = m3.max(inner[i + 3]);
                i += 4;
            }
            while i < len {
                m1 = m1.max(inner[i]);
                i += 1;
            }
        }
        Summary {
            lo: n.lo[0],
            hi: n.slot[len - 1].hi,
            gap: m0.max(m1).max(m2.max(m3)),
        }
    }
}

/// A handle to a node the current writer session allocated: unpublished, so it may be
/// changed. Only [`NodeMut::alloc_in`] and [`NodeMut::copy_of`] make one (invariant: the node
/// is born in the session that holds the handle and not yet published).
pub(crate) struct NodeMut<K, E> {
    ptr: NonNull<Node<K, E>>,
}

impl<K, E> Clone for NodeMut<K, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, E> Copy for NodeMut<K, E> {}

impl<K: Key, E> NodeMut<K, E> {
    /// The layout of a node of `level` (a leaf's for 0, an internal node's otherwise).
    pub(crate) fn layout(level: u8) -> Layout {
        if level == 0 {
            Layout::new::<Node<K, E>>()
        } else {
            Layout::new::<Internal<K, E>>()
        }
    }

    /// A new empty node of `level`, born in session `born`, in a block from `blocks`.
    pub(crate) fn alloc_in(blocks: &mut Blocks, born: u64, level: u8) -> Self {
        let block = blocks.alloc(Self::layout(level));
        let node = Self::empty(born, level);
        // SAFETY: `block` is unused memory with the layout of `Node` (level 0) or
        // `Internal` (else), so writing that value there is in bounds and aligned.
        unsafe {
            if level == 0 {
                block.cast::<Node<K, E>>().as_ptr().write(node);
            } else {
                block.cast::<Internal<K, E>>().as_ptr().write(Internal {
                    node,
                    gap: [K::ZERO; B],
                });
            }
        }
        NodeMut { ptr: block.cast() }
    }

    fn empty(born: u64, level: u8) -> Node<K, E> {
        Node {
            level,
            len: 0,
            stale: 0,
            touched: 0,
            lo: [K::MAX; B],
            slot: [Slot {
                hi: K::ZERO,
                ptr: core::ptr::null_mut(),
            }; B],
            born,
            source: core::ptr::null(),
            _entry: PhantomData,
        }
    }

    /// A handle to a node already born in the current session.
    ///
    /// # Safety
    /// `ptr` was allocated by `alloc_in`/`copy_of` in the active session and is unpublished.
    pub(crate) unsafe fn from_owned(ptr: *mut Node<K, E>) -> Self {
        NodeMut {
            // SAFETY: caller contract (a live allocation is non-null).
            ptr: unsafe { NonNull::new_unchecked(ptr) },
        }
    }

    /// A copy of `src` born in session `born` (children and entries are shared, not
    /// copied), in a block from `blocks`.
    pub(crate) fn copy_of(src: NodeRef<'_, K, E>, born: u64, blocks: &mut Blocks) -> Self {
        let layout = Self::layout(src.level());
        let dst = blocks.alloc(layout).cast::<Node<K, E>>().as_ptr();
        // SAFETY: `dst` is an unused block of `layout`. `src` is live (its handle's
        // contract) and has that same layout (both kinds are chosen by level the same way),
        // so copying its bytes fully initialises the block; nobody else can see it yet.
        // `Node`/`Internal` hold only plain data, so a byte copy is a valid value.
        unsafe {
            core::ptr::copy_nonoverlapping(
                src.as_ptr() as *const u8,
                dst as *mut u8,
                layout.size(),
            );
            (*dst).born = born;
            (*dst).touched = 0;
            (*dst).source = src.as_ptr();
            NodeMut {
                ptr: NonNull::new_unchecked(dst),
            }
        }
    }

    /// Put a node's block back in `blocks` for reuse. Children and entries are not touched.
    ///
    /// # Safety
    /// `ptr` came from [`NodeMut::alloc_in`] or [`NodeMut::copy_of`] with these `blocks`,
    /// and no reader or handle can reach it any more (never published, or past its grace
    /// period).
    pub(crate) unsafe fn recycle(ptr: *mut Node<K, E>, blocks: &mut Blocks) {
        // SAFETY: caller contract: a live node in a block `blocks` handed out for its
        // level's layout, plain data, unreachable.
        unsafe { blocks.put(Retired::new(ptr as *mut u8, Self::layout_of(ptr))) }
    }

    /// The layout the node at `ptr` was allocated with, for deferred freeing.
    ///
    /// # Safety
    /// `ptr` points to a live node.
    pub(crate) unsafe fn layout_of(ptr: *mut Node<K, E>) -> Layout {
        // SAFETY: caller contract.
        Self::layout(unsafe { (*ptr).level })
    }

    pub(crate) fn as_ptr(self) -> *mut Node<K, E> {
        self.ptr.as_ptr()
    }

    /// Read access to the same node.
    pub(crate) fn as_ref<'a>(self) -> NodeRef<'a, K, E> {
        // SAFETY: the session owns the node; it stays allocated until the session frees or
        // publishes it, and the session reads through this only between its own writes.
        unsafe { NodeRef::new(self.ptr) }
    }

    #[inline]
    fn raw(self) -> *mut Node<K, E> {
        self.ptr.as_ptr()
    }

    /// Set the number of slots. Slots below `len` must have been written; the slots from
    /// `len` on become unused, their `lo` set to `K::MAX` (invariant of [`Node`]).
    pub(crate) fn set_len(self, len: usize) {
        debug_assert!(len <= B);
        // SAFETY: owned, unpublished node (type invariant); no reference to it is live.
        unsafe {
            let n = self.raw();
            let old = usize::from((*n).len);
            for i in len..old {
                (*n).lo[i] = K::MAX;
            }
            (*n).len = len as u8;
            // The unused slots' gaps are not stale: `fix_gaps` must not visit them.
            (*n).stale &= ((1u32 << len) - 1) as u16;
            // Slots leaving use had their `lo` written.
            (*n).touched |= (((1u32 << old.max(len)) - 1) & !((1u32 << len) - 1)) as u16;
        }
    }

    /// Write slot `i`: bounds, pointer, and (internal nodes) gap.
    pub(crate) fn set_slot(self, i: usize, s: Summary<K>, ptr: *mut ()) {
        // SAFETY: as in `set_len`; for internal nodes the allocation is an `Internal`.
        unsafe {
            let n = self.raw();
            (*n).lo[i] = s.lo;
            (*n).slot[i] = Slot { hi: s.hi, ptr };
            (*n).touched |= 1 << i;
            if (*n).level > 0 {
                (*(n as *mut Internal<K, E>)).gap[i] = s.gap;
                let bit = 1u16 << i;
                (*n).stale = ((*n).stale & !bit) | (u16::from(s.gap == K::MAX) << i);
            }
        }
    }

    /// Update the bounds (and gap) of slot `i`, keeping its pointer.
    pub(crate) fn set_summary(self, i: usize, s: Summary<K>) {
        let p = self.slot_ptr(i);
        self.set_slot(i, s, p);
    }

    /// Set child `i`'s gap to its computed value (not stale). Internal nodes only.
    pub(crate) fn set_gap(self, i: usize, gap: K) {
        debug_assert!(!self.as_ref().is_leaf() && gap != K::MAX);
        // SAFETY: as in `set_len`; an internal node's allocation is an `Internal`.
        unsafe {
            let n = self.raw();
            (*(n as *mut Internal<K, E>)).gap[i] = gap;
            (*n).stale &= !(1u16 << i);
            (*n).touched |= 1 << i;
        }
    }

    pub(crate) fn set_ptr(self, i: usize, ptr: *mut ()) {
        // SAFETY: as in `set_len`.
        unsafe {
            let n = self.raw();
            (*n).slot[i].ptr = ptr;
            (*n).touched |= 1 << i;
        }
    }

    pub(crate) fn slot_ptr(self, i: usize) -> *mut () {
        // SAFETY: as in `set_len`.
        unsafe { (*self.raw()).slot[i].ptr }
    }

    /// Slot `i` as (summary, pointer).
    pub(crate) fn slot(self, i: usize) -> (Summary<K>, *mut ()) {
        let r = self.as_ref();
        let gap = if r.is_leaf() { K::ZERO } else { r.gap(i) };
        (
            Summary {
                lo: r.lo(i),
                hi: r.hi(i),
                gap,
            },
            self.slot_ptr(i),
        )
    }

    /// Insert a slot at `i`, shifting the rest right. The node must not be full.
    pub(crate) fn insert_slot(self, i: usize, s: Summary<K>, ptr: *mut ()) {
        let len = self.as_ref().len();
        debug_assert!(len < B && i <= len);
        let mut j = len;
        while j > i {
            let (sj, pj) = self.slot(j - 1);
            self.set_slot(j, sj, pj);
            j -= 1;
        }
        self.set_slot(i, s, ptr);
        self.set_len(len + 1);
    }

    /// Remove slot `i`, shifting the rest left; returns it.
    pub(crate) fn remove_slot(self, i: usize) -> (Summary<K>, *mut ()) {
        let len = self.as_ref().len();
        debug_assert!(i < len);
        let out = self.slot(i);
        for j in i..len - 1 {
            let (sj, pj) = self.slot(j + 1);
            self.set_slot(j, sj, pj);
        }
        self.set_len(len - 1);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slabs for the tests' nodes (`u64` keys, no entries); dropping them frees the nodes.
    fn blocks() -> Blocks {
        Blocks::new([
            NodeMut::<u64, ()>::layout(0),
            NodeMut::<u64, ()>::layout(1),
            core::alloc::Layout::new::<u8>(),
        ])
    }

    /// The layout the module docs promise for `u64` keys: a descent step reads the header
    /// and all of `lo` from the node's first two cache lines, and (on 64-bit targets) a
    /// slot's `hi` and `ptr` from one line.
    #[test]
    fn a_descent_step_reads_three_lines() {
        let mut blocks = blocks();
        assert_eq!(core::mem::align_of::<Node<u64, ()>>(), 64);
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(core::mem::size_of::<Node<u64, ()>>(), 384);
            assert_eq!(core::mem::size_of::<Internal<u64, ()>>(), 512);
        }
        let n = NodeMut::<u64, ()>::alloc_in(&mut blocks, 0, 0);
        let base = n.as_ptr() as usize;
        // SAFETY: `n` is a live node; only field addresses are taken, nothing is read.
        let (len, lo_end, slots) = unsafe {
            let p = n.as_ptr();
            (
                core::ptr::addr_of!((*p).len) as usize - base,
                core::ptr::addr_of!((*p).lo[B - 1]) as usize + 8 - base,
                core::ptr::addr_of!((*p).slot) as usize - base,
            )
        };
        assert!(
            len < 64 && lo_end <= 128,
            "header and lo span {lo_end} bytes"
        );
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(slots % 16, 0, "a slot straddles two lines");
            assert_eq!(core::mem::size_of::<Slot<u64>>(), 16);
        }
        #[cfg(not(target_pointer_width = "64"))]
        let _ = slots;
    }

    /// A copy starts with no slot touched and knows its source; every setter marks the
    /// slots it writes (shifts mark every slot they move, a shrink the slots it drops), so
    /// the slots left unmarked are exactly the copied ones the session has not written.
    #[test]
    fn setters_mark_the_slots_they_write() {
        let mut blocks = blocks();
        for level in [0u8, 1] {
            let src = NodeMut::<u64, ()>::alloc_in(&mut blocks, 1, level);
            for i in 0..8 {
                let lo = 10 * i as u64;
                src.set_slot(
                    i,
                    Summary {
                        lo,
                        hi: lo + 5,
                        gap: 1,
                    },
                    core::ptr::null_mut(),
                );
            }
            src.set_len(8);
            let n = NodeMut::copy_of(src.as_ref(), 2, &mut blocks);
            assert_eq!(n.as_ref().touched(), 0);
            assert!(core::ptr::eq(n.as_ref().source(), src.as_ptr()));
            n.set_ptr(6, core::ptr::null_mut());
            assert_eq!(n.as_ref().touched(), 1 << 6);
            let s = n.slot(2).0;
            n.set_summary(2, s);
            assert_eq!(n.as_ref().touched(), 1 << 6 | 1 << 2);
            if level > 0 {
                n.set_gap(0, 1);
                assert_eq!(n.as_ref().touched(), 1 << 6 | 1 << 2 | 1);
            }
            let n = NodeMut::copy_of(src.as_ref(), 2, &mut blocks);
            let removed = n.remove_slot(5);
            assert_eq!(
                n.as_ref().touched(),
                0b1110_0000,
                "slots 5, 6 moved, 7 dropped"
            );
            n.insert_slot(5, removed.0, removed.1);
            assert_eq!(n.as_ref().touched(), 0b1110_0000);
            n.set_len(3);
            assert_eq!(n.as_ref().touched(), 0b1111_1000);
        }
    }

    /// `summary`'s unrolled maxima against a plain fold, at every length and for both
    /// kinds of node, with the largest gap in each position.
    #[test]
    fn summary_finds_the_largest_gap_at_every_length() {
        let mut blocks = blocks();
        for level in [0u8, 1] {
            for len in 1..=B {
                for top in 0..2 * len {
                    let n = NodeMut::<u64, ()>::alloc_in(&mut blocks, 0, level);
                    let mut expect = 0;
                    let mut at = 0u64;
                    for i in 0..len {
                        // Free space before slot i, and the gap inside it (internal nodes).
                        let before = if i > 0 { 1 + (i as u64 * 7) % 5 } else { 0 };
                        let inner = if level > 0 { (i as u64 * 3) % 4 } else { 0 };
                        let (before, inner) = match top {
                            t if t == 2 * i && i > 0 => (100, inner),
                            t if t == 2 * i + 1 && level > 0 => (before, 100),
                            _ => (before, inner),
                        };
                        if i > 0 {
                            expect = expect.max(before);
                        }
                        expect = expect.max(inner);
                        let lo = at + before;
                        at = lo + 10;
                        let s = Summary {
                            lo,
                            hi: at,
                            gap: inner,
                        };
                        n.set_slot(i, s, core::ptr::null_mut());
                    }
                    n.set_len(len);
                    let got = n.as_ref().summary();
                    assert_eq!(
                        (got.lo, got.hi, got.gap),
                        (n.as_ref().lo(0), at, expect),
                        "level {level}, len {len}, top {top}"
                    );
                }
            }
        }
    }

    /// `rank` and `rank_scan` against a count of the keys `<=` the probe, at every length,
    /// for probes below, on, between and above the keys, and `K::MAX`.
    #[test]
    fn rank_counts_the_keys_at_or_below() {
        let mut blocks = blocks();
        for len in 0..=B {
            let n = NodeMut::<u64, ()>::alloc_in(&mut blocks, 0, 0);
            for i in 0..len {
                let lo = 10 * i as u64 + 10;
                let s = Summary {
                    lo,
                    hi: lo + 5,
                    gap: 0,
                };
                n.set_slot(i, s, core::ptr::null_mut());
            }
            n.set_len(len);
            let r = n.as_ref();
            assert!(r.padding_is_max());
            for key in (0..10 * B as u64 + 20).chain([u64::MAX - 1, u64::MAX]) {
                let want = (0..len).filter(|&i| r.lo(i) <= key).count();
                assert_eq!(r.rank(key), want, "len {len}, key {key}");
                assert_eq!(r.rank_scan(key), want, "len {len}, key {key}");
            }
            // Shrinking restores the padding.
            if len > 0 {
                n.set_len(len - 1);
                assert!(n.as_ref().padding_is_max());
                assert_eq!(n.as_ref().rank(u64::MAX), len - 1);
            }
        }
    }
}
