//! Read-only descents: point lookup, first/last overlapping entry, in-order walks.
//!
//! Owns: how a key or a range is found from a root. Must not: write anything — readers
//! run these on published nodes with plain loads, and a lookup performs no atomic
//! read-modify-write at all (its only RMW is the caller's lock of the entry it returns).

use core::ptr::NonNull;

use smallvec::SmallVec;

use super::node::NodeRef;
use crate::key::Key;

/// The slot taken at each internal level of a descent, root first. A writer's read-only
/// descent records it so that the copy-on-write descent that follows (on the same working
/// tree, unchanged in between) retraces it without searching again.
pub(crate) type Trail = SmallVec<[u8; 16]>;

/// Where a key sits in a tree: the leaf a descent by `key` reaches, with the trail to it.
/// At each internal level the descent takes the last slot whose `lo <= key` (the first if
/// none) — except when `key` falls in the gap between that child's span and the next
/// one's: then either subtree could take an insert there, and it takes the child with
/// fewer slots. (Always taking the left one made leaves drift full under remove-and-reinsert
/// churn: an entry removed from the front of a leaf came back at the end of the leaf before
/// it, until that one split.)
pub(crate) struct Place<'a, K, E> {
    pub trail: Trail,
    pub leaf: NodeRef<'a, K, E>,
    /// Number of the leaf's slots with `lo <= key`.
    pub rank: usize,
    /// The start of the first entry after the leaf, if any.
    pub next_lo: Option<K>,
}

impl<K: Key, E> Place<'_, K, E> {
    /// The entry holding the key, if any (slot `rank - 1`).
    pub(crate) fn holding(&self, key: K) -> Option<Found<E, K>> {
        let i = self.rank.checked_sub(1)?;
        (key < self.leaf.hi(i)).then(|| Found::at(self.leaf, i))
    }

    /// Whether `start..end` is free, for the place of `start`: the entry before it ends by
    /// `start` and the entry after it starts at `end` or later.
    pub(crate) fn is_free(&self, start: K, end: K) -> bool {
        let prev_ends = match self.rank.checked_sub(1) {
            Some(i) => self.leaf.hi(i) <= start,
            None => true,
        };
        let next_lo = if self.rank < self.leaf.len() {
            Some(self.leaf.lo(self.rank))
        } else {
            self.next_lo
        };
        prev_ends && next_lo.map_or(true, |lo| lo >= end)
    }
}

/// Descend to `key`'s place. O(log n). The leaf may be an empty root.
pub(crate) fn place<K: Key, E>(root: NodeRef<'_, K, E>, key: K) -> Place<'_, K, E> {
    let mut node = root;
    let mut trail = Trail::new();
    let mut next_lo = None;
    while !node.is_leaf() {
        let r = node.rank_scan(key);
        let mut i = r.saturating_sub(1);
        if r >= 1 && r < node.len() && key >= node.hi(i) {
            // In the gap between children `i` and `r`: no entry holds `key`.
            if node.child(r).len() < node.child(i).len() {
                i = r;
            }
        }
        if i + 1 < node.len() {
            next_lo = Some(node.lo(i + 1));
        }
        trail.push(i as u8);
        node = node.child(i);
        node.prefetch_slots();
    }
    Place {
        trail,
        rank: node.rank_scan(key),
        leaf: node,
        next_lo,
    }
}

/// An entry as the tree sees it: its pointer and the bounds stored beside it.
pub(crate) struct Found<E, K> {
    pub entry: NonNull<E>,
    pub lo: K,
    pub hi: K,
}

impl<E, K: Key> Found<E, K> {
    /// Slot `i` of leaf `node`.
    #[inline]
    fn at(node: NodeRef<'_, K, E>, i: usize) -> Self {
        Found {
            entry: node.entry(i),
            lo: node.lo(i),
            hi: node.hi(i),
        }
    }
}

/// The entry whose range holds `key`. O(log n).
#[inline]
pub(crate) fn lookup<K: Key, E>(root: NodeRef<'_, K, E>, key: K) -> Option<Found<E, K>> {
    let mut node = root;
    loop {
        let r = node.rank(key);
        if r == 0 {
            return None;
        }
        let i = r - 1;
        if node.is_leaf() {
            // Only here: checking `hi` in internal nodes too (on the line of the child
            // pointer, so no extra miss) would add a branch to every level of every hit to
            // answer early only for keys in gaps.
            if key >= node.hi(i) {
                return None;
            }
            return Some(Found::at(node, i));
        }
        node = node.child(i);
        node.prefetch_slots();
    }
}

/// The first entry (in key order) with `hi > from` and `lo < until`; `None` for an empty or
/// reversed range. O(log n).
pub(crate) fn first_overlapping<K: Key, E>(
    root: NodeRef<'_, K, E>,
    from: K,
    until: K,
) -> Option<Found<E, K>> {
    if from >= until {
        return None;
    }
    let mut node = root;
    loop {
        let len = node.len();
        // Slots are sorted and disjoint, so those with `hi > from` are a suffix.
        let i = (0..len).find(|&i| node.hi(i) > from)?;
        if node.lo(i) >= until {
            return None;
        }
        if node.is_leaf() {
            return Some(Found::at(node, i));
        }
        node = node.child(i);
    }
}

/// The last entry (in key order) with `lo < until` and `hi > from`; `None` for an empty or
/// reversed range. O(log n).
pub(crate) fn last_overlapping<K: Key, E>(
    root: NodeRef<'_, K, E>,
    from: K,
    until: K,
) -> Option<Found<E, K>> {
    if from >= until {
        return None;
    }
    let mut node = root;
    loop {
        let len = node.len();
        // Slots with `lo < until` are a prefix.
        let i = (0..len).rev().find(|&i| node.lo(i) < until)?;
        if node.hi(i) <= from {
            return None;
        }
        if node.is_leaf() {
            return Some(Found::at(node, i));
        }
        node = node.child(i);
    }
}

/// Call `f` on every entry overlapping `from..until`, in key order; nothing for an empty or
/// reversed range. O(log n + k).
pub(crate) fn for_each_overlapping<K: Key, E>(
    node: NodeRef<'_, K, E>,
    from: K,
    until: K,
    f: &mut impl FnMut(Found<E, K>),
) {
    if from >= until {
        return;
    }
    for i in 0..node.len() {
        if node.hi(i) <= from {
            continue;
        }
        if node.lo(i) >= until {
            break;
        }
        if node.is_leaf() {
            f(Found::at(node, i));
        } else {
            for_each_overlapping(node.child(i), from, until, f);
        }
    }
}
