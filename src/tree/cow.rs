//! Copy-on-write edits: the writer session's working tree.
//!
//! Owns: insertion, removal and re-bounding of leaf slots, with node splits, merges and
//! refills, by path copying — every node on a changed path that the session did not
//! allocate itself is copied, and the original is queued for retirement at commit; and, at
//! commit, telling a session whose only change is one range's entry (then the writer
//! throws the working tree away and keeps the published one). Must not: publish (the
//! writer stores the root) or free a node some reader may reach: only nodes born in this
//! session are reused here, immediately; replaced published nodes are listed in the
//! session's `retired` list for the commit to retire.

use core::ptr::NonNull;

use smallvec::SmallVec;

use super::bulk;
use super::node::{Node, NodeMut, NodeRef, Summary, B, MIN};
use super::search::{Found, Trail};
use crate::key::Key;
use crate::reclaim::Blocks;

/// A root-to-leaf path being edited: each internal node (the session's own) and the slot
/// taken in it.
type Path<K, E> = SmallVec<[(NodeMut<K, E>, usize); 8]>;

/// Where a range [`CowTree::remove_at`] removed would go back, for as long as no other edit
/// changes the working tree: the removal changed no node's shape, so its trail still leads
/// to its leaf, whose slot `slot` is the place the range had (a descent could pick the
/// neighbouring leaf instead when the range is first or last in its own; either keeps the
/// tree ordered), and its neighbours are the ones it had, so the range is free.
/// [`put_back`](CowTree::put_back) returns it there with no descent, and leaves the path's
/// gap metadata as the removal found it: the range's return makes every summary on the path
/// what it was.
pub(crate) struct Hole<K> {
    pub(crate) lo: K,
    pub(crate) hi: K,
    trail: Trail,
    slot: usize,
    /// For each level of the trail, the gap the parent stored for the child taken before
    /// the removal: exact, or `K::MAX` if an earlier edit of the session had left it stale.
    gaps: SmallVec<[K; 8]>,
}

/// A session whose only change is one range's entry ([`CowTree::only_entry_swapped`]).
pub(crate) struct EntrySwap<K, E> {
    /// The entry the published tree has for the range.
    pub(crate) old: NonNull<E>,
    /// The entry the working tree has for it instead.
    pub(crate) new: NonNull<E>,
    /// The session's nodes along the path to it, root first.
    copies: SmallVec<[*mut Node<K, E>; 8]>,
    /// The published root they were compared with.
    published: *mut Node<K, E>,
}

/// A writer session's working tree, borrowed for one edit: the working root and the
/// session's lists. The session keeps the root and the lists between edits; this view
/// holds them only while it edits (so no borrow of the map's writer state outlives a call).
///
/// Invariants: `*root` is a well-formed tree (see [`Node`]); every node reachable from it
/// is either born in `session` (unpublished, mutable through a [`NodeMut`]) or published
/// and untouched; `retired` holds the published nodes this session replaced, none of them
/// reachable from `*root`, each once. New nodes come from `blocks`, and nodes the session
/// allocated and unlinked again go back there.
pub(crate) struct CowTree<'s, K, E> {
    root: &'s mut *mut Node<K, E>,
    session: u64,
    retired: &'s mut Vec<*mut Node<K, E>>,
    blocks: &'s mut Blocks,
}

impl<'s, K: Key, E> CowTree<'s, K, E> {
    /// A view of the session's working tree.
    ///
    /// # Safety
    /// `*root` is a live, well-formed tree that stays allocated for the session (only this
    /// session may retire its nodes); `session` is the active session's sequence, and the
    /// nodes born in it are exactly the unpublished ones reachable from `*root`; `retired`
    /// lists exactly the published nodes this session replaced so far.
    pub(crate) unsafe fn new(
        root: &'s mut *mut Node<K, E>,
        session: u64,
        retired: &'s mut Vec<*mut Node<K, E>>,
        blocks: &'s mut Blocks,
    ) -> Self {
        CowTree {
            root,
            session,
            retired,
            blocks,
        }
    }

    /// The free blocks the session allocates from (entries too).
    pub(crate) fn blocks(&mut self) -> &mut Blocks {
        self.blocks
    }

    /// The working root, read-only.
    pub(crate) fn root(&self) -> NodeRef<'_, K, E> {
        // SAFETY: type invariant: the root is live for the session, and no `NodeMut` write
        // can happen while `&self` is borrowed.
        unsafe { NodeRef::new(NonNull::new_unchecked(*self.root)) }
    }

    /// The session's own copy of `ptr`: itself if born in this session, else a fresh copy
    /// (the original is queued for retirement).
    fn own(&mut self, ptr: *mut Node<K, E>) -> NodeMut<K, E> {
        // SAFETY: `ptr` is reachable from the working root, hence live (type invariant).
        let r = unsafe { NodeRef::new(NonNull::new_unchecked(ptr)) };
        if r.born() == self.session {
            // SAFETY: born in this session, so unpublished and only reachable from the
            // working tree.
            unsafe { NodeMut::from_owned(ptr) }
        } else {
            self.retired.push(ptr);
            NodeMut::copy_of(r, self.session, self.blocks)
        }
    }

    /// Make the path along `trail` (from [`search::place`](super::search::place) on the
    /// working tree, unchanged since) the session's own; fills `path` with its internal
    /// nodes and returns the leaf.
    fn descend_mut(&mut self, trail: &Trail, path: &mut Path<K, E>) -> NodeMut<K, E> {
        let root = self.own(*self.root);
        *self.root = root.as_ptr();
        let mut node = root;
        for &idx in trail {
            let idx = usize::from(idx);
            debug_assert!(!node.as_ref().is_leaf() && idx < node.as_ref().len());
            let child = self.own(node.slot_ptr(idx) as *mut Node<K, E>);
            node.set_ptr(idx, child.as_ptr() as *mut ());
            path.push((node, idx));
            node = child;
        }
        debug_assert!(node.as_ref().is_leaf(), "trail too short");
        node
    }

    /// Insert slot `s`/`ptr` at `pos` of `node`; if full, split and return the new right
    /// sibling.
    fn insert_into(
        &mut self,
        node: NodeMut<K, E>,
        pos: usize,
        s: Summary<K>,
        ptr: *mut (),
    ) -> Option<NodeMut<K, E>> {
        let len = node.as_ref().len();
        if len < B {
            node.insert_slot(pos, s, ptr);
            return None;
        }
        let sib = NodeMut::alloc_in(self.blocks, self.session, node.as_ref().level());
        // An append (the new slot goes after the last one: ascending inserts, the usual
        // way address spaces and allocators grow) keeps the left node nearly full, since
        // nothing will land in it again; other splits halve. Both sides keep >= MIN.
        let keep = if pos == B { B - MIN } else { B / 2 };
        for j in keep..B {
            let (sj, pj) = node.slot(j);
            sib.set_slot(j - keep, sj, pj);
        }
        sib.set_len(B - keep);
        node.set_len(keep);
        if pos <= keep {
            node.insert_slot(pos, s, ptr);
        } else {
            sib.insert_slot(pos - keep, s, ptr);
        }
        Some(sib)
    }

    /// Insert an entry for `lo..hi`, which must be free in the working tree.
    pub(crate) fn insert(&mut self, lo: K, hi: K, entry: NonNull<E>) {
        let place = super::search::place(self.root(), lo);
        let (trail, pos) = (place.trail, place.rank);
        self.insert_at(&trail, pos, lo, hi, entry);
    }

    /// Insert an entry for `lo..hi`, free in the working tree, at slot `pos` of the leaf
    /// `trail` leads to (both from `search::place(.., lo)` on the working tree unchanged
    /// since).
    pub(crate) fn insert_at(&mut self, trail: &Trail, pos: usize, lo: K, hi: K, entry: NonNull<E>) {
        debug_assert!(lo < hi);
        let mut path = Path::new();
        let leaf = self.descend_mut(trail, &mut path);
        debug_assert_eq!(pos, leaf.as_ref().rank_scan(lo));
        let s = Summary {
            lo,
            hi,
            gap: K::ZERO,
        };
        let mut split = self.insert_into(leaf, pos, s, entry.as_ptr() as *mut ());
        let mut child = leaf;
        for &(parent, idx) in path.iter().rev() {
            parent.set_summary(idx, child.as_ref().bounds());
            if let Some(sib) = split {
                split = self.insert_into(parent, idx + 1, sib.as_ref().bounds(), sib.as_ptr() as _);
            }
            child = parent;
        }
        if let Some(sib) = split {
            let top = NodeMut::alloc_in(self.blocks, self.session, child.as_ref().level() + 1);
            top.insert_slot(0, child.as_ref().bounds(), child.as_ptr() as _);
            top.insert_slot(1, sib.as_ref().bounds(), sib.as_ptr() as _);
            *self.root = top.as_ptr();
        }
    }

    /// Remove the entry whose range holds `key`; returns it with its bounds.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, key: K) -> Option<Found<E, K>> {
        super::search::lookup(self.root(), key)?;
        Some(self.remove_present(key).0)
    }

    /// Remove the entry whose range holds `key`, which the caller found in the working tree
    /// (the descent copies the path, so it must not be taken for an absent key); returns it
    /// with its bounds, and the hole it left as [`remove_at`](Self::remove_at) does.
    pub(crate) fn remove_present(&mut self, key: K) -> (Found<E, K>, Option<Hole<K>>) {
        let place = super::search::place(self.root(), key);
        debug_assert!(place.holding(key).is_some(), "remove_present: absent");
        let (trail, slot) = (place.trail, place.rank - 1);
        self.remove_at(trail, slot)
    }

    /// Remove slot `slot` of the leaf `trail` leads to (from `search::place` on the working
    /// tree unchanged since); returns its entry with its bounds, and the hole it left if no
    /// node was merged or evened out (see [`Hole`]: valid until the next edit).
    pub(crate) fn remove_at(
        &mut self,
        trail: Trail,
        slot: usize,
    ) -> (Found<E, K>, Option<Hole<K>>) {
        let mut path = Path::new();
        let leaf = self.descend_mut(&trail, &mut path);
        let gaps = path
            .iter()
            .map(|&(parent, idx)| parent.as_ref().gap(idx))
            .collect();
        let (s, p) = leaf.remove_slot(slot);
        let mut kept = true;
        let mut child = leaf;
        for &(parent, idx) in path.iter().rev() {
            if child.as_ref().len() < MIN {
                self.rebalance(parent, idx);
                kept = false;
            } else {
                parent.set_summary(idx, child.as_ref().bounds());
            }
            child = parent;
        }
        let root = *self.root;
        self.collapse_root();
        kept &= *self.root == root;
        let found = Found {
            // SAFETY: leaf slots hold non-null entry pointers.
            entry: unsafe { NonNull::new_unchecked(p as *mut E) },
            lo: s.lo,
            hi: s.hi,
        };
        let hole = kept.then_some(Hole {
            lo: s.lo,
            hi: s.hi,
            trail,
            slot,
            gaps,
        });
        (found, hole)
    }

    /// Insert an entry for the range `hole` was left by, in the working tree that removal
    /// left (no edit since): into its old slot, with no descent. The path's bounds become
    /// what they were before the removal, and so do its gaps — the subtrees are as they
    /// were — so a gap that was exact is stored again instead of being left stale.
    pub(crate) fn put_back(&mut self, hole: Hole<K>, entry: NonNull<E>) {
        let mut path = Path::new();
        let leaf = self.descend_mut(&hole.trail, &mut path);
        debug_assert!(leaf.as_ref().len() < B, "the removal left the leaf a slot");
        debug_assert_eq!(hole.slot, leaf.as_ref().rank_scan(hole.lo));
        let s = Summary {
            lo: hole.lo,
            hi: hole.hi,
            gap: K::ZERO,
        };
        leaf.insert_slot(hole.slot, s, entry.as_ptr() as *mut ());
        let mut child = leaf;
        for (&(parent, idx), &gap) in path.iter().zip(&hole.gaps).rev() {
            let bounds = child.as_ref().bounds();
            // `K::MAX` (stale) stays stale; an exact gap is exact again: the child is as
            // it was when the gap was stored (and its own gaps exact, by `Internal`'s
            // invariant: a stale gap below would have made this one stale).
            debug_assert!(gap == K::MAX || gap == child.as_ref().summary().gap);
            parent.set_summary(idx, Summary { gap, ..bounds });
            child = parent;
        }
    }

    /// Point the slot whose range holds `key` at `entry`, with bounds `lo..hi`, which must
    /// lie inside its current range (a trim: the caller retires the entry it replaces).
    pub(crate) fn replace(&mut self, key: K, lo: K, hi: K, entry: NonNull<E>) {
        let place = super::search::place(self.root(), key);
        let (trail, i) = (place.trail, place.rank - 1);
        let mut path = Path::new();
        let leaf = self.descend_mut(&trail, &mut path);
        debug_assert!(leaf.as_ref().lo(i) <= lo && hi <= leaf.as_ref().hi(i) && lo < hi);
        leaf.set_summary(
            i,
            Summary {
                lo,
                hi,
                gap: K::ZERO,
            },
        );
        leaf.set_ptr(i, entry.as_ptr() as _);
        let mut child = leaf;
        for &(parent, idx) in path.iter().rev() {
            parent.set_summary(idx, child.as_ref().bounds());
            child = parent;
        }
    }

    /// Child `idx` of `parent` fell below `MIN`: merge it with a sibling or even them out.
    fn rebalance(&mut self, parent: NodeMut<K, E>, idx: usize) {
        let (li, ri) = if idx > 0 {
            (idx - 1, idx)
        } else {
            (idx, idx + 1)
        };
        debug_assert!(ri < parent.as_ref().len(), "internal node with one child");
        let left = self.own(parent.slot_ptr(li) as *mut Node<K, E>);
        parent.set_ptr(li, left.as_ptr() as _);
        let right = self.own(parent.slot_ptr(ri) as *mut Node<K, E>);
        parent.set_ptr(ri, right.as_ptr() as _);
        let (l, r) = (left.as_ref().len(), right.as_ref().len());
        if l + r <= B {
            for j in 0..r {
                let (sj, pj) = right.slot(j);
                left.insert_slot(l + j, sj, pj);
            }
            parent.remove_slot(ri);
            // SAFETY: `right` is born in this session (it came from `own`), so unpublished,
            // and it was just unlinked from its only parent.
            unsafe { NodeMut::recycle(right.as_ptr(), self.blocks) };
            // Non-empty: the sibling of an underfull child has at least `MIN` slots.
            parent.set_summary(li, left.as_ref().bounds());
        } else {
            let target = (l + r) / 2;
            let mut l = l;
            while l < target {
                let (s0, p0) = right.remove_slot(0);
                left.insert_slot(l, s0, p0);
                l += 1;
            }
            while l > target {
                let (sl, pl) = left.remove_slot(l - 1);
                right.insert_slot(0, sl, pl);
                l -= 1;
            }
            parent.set_summary(li, left.as_ref().bounds());
            parent.set_summary(ri, right.as_ref().bounds());
        }
    }

    /// Whether all the session changed is which entry one range points at: the working
    /// tree is `published` except that one leaf slot, with the same bounds, holds another
    /// entry. Goes down the one path whose pointers differ; each of the session's nodes on
    /// it must be a copy of the published node at its place, and is compared with it only
    /// in the slots the session wrote since (its `touched` bits: the others still hold what
    /// they were copied with), bounds, gaps and pointers. Stops at the first node that does
    /// not match. Call after [`fix_gaps`](Self::fix_gaps), when every gap is exact.
    ///
    /// If so, every node the session owns is on that path (a copy anywhere else would make
    /// a pointer above it differ), and `retired` lists exactly the nodes they copied (the
    /// published nodes the working tree does not reach): see [`discard`](Self::discard).
    pub(crate) fn only_entry_swapped(
        &self,
        published: NodeRef<'_, K, E>,
    ) -> Option<EntrySwap<K, E>> {
        let (mut new, mut old) = (self.root(), published);
        let mut copies = SmallVec::new();
        loop {
            // A copy of the published node at the same place (so its untouched slots hold
            // what that node holds), of the same length.
            if new.born() != self.session
                || !core::ptr::eq(new.source(), old.as_ptr())
                || new.len() != old.len()
            {
                return None;
            }
            copies.push(new.as_ptr());
            let i = only_pointer_differs(new, old, new.touched())?;
            debug_assert_eq!(
                only_pointer_differs(new, old, u16::MAX),
                Some(i),
                "a slot changed without its touched bit"
            );
            if new.is_leaf() {
                return Some(EntrySwap {
                    old: old.entry(i),
                    new: new.entry(i),
                    copies,
                    published: published.as_ptr(),
                });
            }
            (new, old) = (new.child(i), old.child(i));
        }
    }

    /// Throw the session's nodes away: the working tree becomes the published one that
    /// `swap` was found against again, whose nodes stay published (none is retired).
    ///
    /// # Safety
    /// `swap` is what [`only_entry_swapped`](Self::only_entry_swapped) returned, with no
    /// edit since: its copies are then all the nodes the session owns, reachable from the
    /// working root only and never published, and `retired` holds the nodes they copied,
    /// which the published root still reaches.
    pub(crate) unsafe fn discard(&mut self, swap: &EntrySwap<K, E>) {
        debug_assert_eq!(self.retired.len(), swap.copies.len());
        self.retired.clear();
        for &n in &swap.copies {
            // SAFETY: caller contract: born in this session, never published, and
            // unreachable once the working root is `published` again (just below).
            unsafe { NodeMut::recycle(n, self.blocks) };
        }
        *self.root = swap.published;
    }

    /// Compute the gaps the session's edits left stale (see
    /// [`Internal`](super::node::Internal)), so that the working tree's metadata is exact
    /// again: before it is published. Visits only the session's own nodes whose summaries
    /// changed, each once, and reads no node the session does not own.
    pub(crate) fn fix_gaps(&mut self) {
        // SAFETY: type invariant: the working root is live.
        let root = unsafe { NodeRef::new(NonNull::new_unchecked(*self.root)) };
        if root.born() == self.session && !root.is_leaf() {
            // SAFETY: born in this session, so unpublished and ours.
            fix(unsafe { NodeMut::from_owned(root.as_ptr()) }, self.session);
        }
    }

    /// Replace the whole tree by one built bottom-up over the same entries
    /// ([`bulk::build`]): evenly filled nodes, born in this session, in the blocks that
    /// `blocks` hands out next. Each node of the old tree goes as an edit's would: a
    /// published one to `retired`, one born in this session back to `blocks`. O(n).
    pub(crate) fn rebuild(&mut self) {
        let mut items = Vec::new();
        let mut nodes = Vec::new();
        let mut todo = vec![self.root()];
        while let Some(node) = todo.pop() {
            nodes.push((node.as_ptr(), node.born()));
            if node.is_leaf() {
                items.extend((0..node.len()).map(|i| (node.lo(i), node.hi(i), node.entry(i))));
            } else {
                // Last child first on the stack, so the leaves come off it in key order.
                todo.extend((0..node.len()).rev().map(|i| node.child(i)));
            }
        }
        *self.root = bulk::build(&items, self.session, self.blocks);
        for (node, born) in nodes {
            if born == self.session {
                // SAFETY: born in this session, so never published, and unlinked just now
                // with the whole old tree (the new one is all fresh nodes).
                unsafe { NodeMut::recycle(node, self.blocks) };
            } else {
                // A published node of the working tree, so not yet listed (type invariant),
                // and unreachable from the new root.
                self.retired.push(node);
            }
        }
    }

    /// An internal root with one child gives way to the child.
    fn collapse_root(&mut self) {
        loop {
            // SAFETY: type invariant: the working root is live.
            let root: NodeRef<'_, K, E> =
                unsafe { NodeRef::new(NonNull::new_unchecked(*self.root)) };
            if root.is_leaf() || root.len() > 1 {
                return;
            }
            debug_assert_eq!(root.born(), self.session);
            let only = root.child(0).as_ptr();
            let old = *self.root;
            *self.root = only;
            // SAFETY: the edit that left the root with one child began by owning the root
            // (`descend_mut`), so it is born in this session and unpublished; it was just
            // unlinked.
            unsafe { NodeMut::recycle(old, self.blocks) };
        }
    }
}

/// The one slot among `slots` (a bit set; slots at or past the length count as equal) in
/// which `new` and `old`, nodes of one level and length, differ, if they differ in its
/// pointer alone (same bounds and, in internal nodes, gap) and nowhere else among `slots`.
fn only_pointer_differs<K: Key, E>(
    new: NodeRef<'_, K, E>,
    old: NodeRef<'_, K, E>,
    slots: u16,
) -> Option<usize> {
    let mut differs = None;
    let mut bits = u32::from(slots) & ((1u32 << new.len()) - 1);
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        if new.lo(i) != old.lo(i) || new.hi(i) != old.hi(i) {
            return None;
        }
        let same = if new.is_leaf() {
            new.entry(i) == old.entry(i)
        } else {
            if new.gap(i) != old.gap(i) {
                return None;
            }
            new.child(i).as_ptr() == old.child(i).as_ptr()
        };
        if !same && differs.replace(i).is_some() {
            return None;
        }
    }
    differs
}

/// The stale gaps of the internal node `node` (the session's own) and of the nodes below
/// it, computed bottom-up; only children the session owns are entered. `node`'s own
/// summary is left to its parent (the root's is never needed).
fn fix<K: Key, E>(node: NodeMut<K, E>, session: u64) {
    let r = node.as_ref();
    let mut stale = r.stale();
    while stale != 0 {
        let i = stale.trailing_zeros() as usize;
        stale &= stale - 1;
        debug_assert!(r.gap(i) == K::MAX);
        let child = r.child(i);
        // A stale gap is only stored for a child the session owns (invariant of
        // `Internal`); checked anyway, so that a broken invariant could cost a slow
        // `find_gap` but never a write to a published node.
        let owned = child.born() == session;
        debug_assert!(owned, "a stale gap for a published child");
        if owned && !child.is_leaf() {
            // SAFETY: born in this session (checked just above), so unpublished and the
            // session's own.
            fix(unsafe { NodeMut::from_owned(child.as_ptr()) }, session);
        }
        node.set_gap(i, child.summary().gap);
    }
}
