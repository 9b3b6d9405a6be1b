//! Read-only descents: point lookup, first/last overlapping entry, in-order walks.
//!
//! Owns: how a key or a range is found from a root. Must not: write anything — readers
//! run these on published nodes with plain loads, and a lookup performs no atomic
//! read-modify-write at all (its only RMW is the caller's lock of the entry it returns).

use core::ptr::NonNull;

use super::node::NodeRef;
use crate::key::Key;

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
            // Only here: checking `hi` in internal nodes too would touch one more cache
            // line per level to answer early only for keys in gaps.
            if key >= node.hi(i) {
                return None;
            }
            return Some(Found::at(node, i));
        }
        node = node.child(i);
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

/// Call `f` on every node of the tree, children before parents (for teardown).
pub(crate) fn for_each_node_post<K: Key, E>(
    node: NodeRef<'_, K, E>,
    f: &mut impl FnMut(NodeRef<'_, K, E>),
) {
    if !node.is_leaf() {
        for i in 0..node.len() {
            for_each_node_post(node.child(i), f);
        }
    }
    f(node);
}
