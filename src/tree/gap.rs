//! Free-space queries: `find_gap` (through the per-subtree max-gap metadata) and `gaps`.
//!
//! Owns: the arithmetic of fitting an aligned block into a free range (all checked, no
//! wrapping near `K::MAX`) and the pruned descent. Must not: write to the tree.
//!
//! The free keys are `0..K::MAX` minus the entries (the key `K::MAX` is never covered, so
//! the last free range may end at `K::MAX`, exclusive, like every range).

use core::ops::Range;

use super::node::NodeRef;
use super::search::for_each_overlapping;
use crate::key::Key;
use crate::Fit;

/// A request: `size` keys aligned to `align` (a power of two) inside `w0..w1`.
#[derive(Clone, Copy)]
pub(crate) struct Want<K> {
    pub w0: K,
    pub w1: K,
    pub size: K,
    pub align: K,
}

impl<K: Key> Want<K> {
    /// The lowest aligned fit in the free range `g0..g1`.
    fn lowest_in(&self, g0: K, g1: K) -> Option<Range<K>> {
        let lo = g0.max(self.w0);
        let hi = g1.min(self.w1);
        if lo >= hi {
            return None;
        }
        let start = lo.align_up(self.align)?;
        let end = start.checked_add(self.size)?;
        (end <= hi).then_some(start..end)
    }

    /// The highest aligned fit in the free range `g0..g1`.
    fn highest_in(&self, g0: K, g1: K) -> Option<Range<K>> {
        let lo = g0.max(self.w0);
        let hi = g1.min(self.w1);
        if lo >= hi || hi.sub(lo) < self.size {
            return None;
        }
        let start = hi.sub(self.size).align_down(self.align);
        (start >= lo).then(|| start..start.checked_add(self.size).expect("start + size <= hi"))
    }

    fn fit(&self, fit: Fit, g0: K, g1: K) -> Option<Range<K>> {
        match fit {
            Fit::Lowest => self.lowest_in(g0, g1),
            Fit::Highest => self.highest_in(g0, g1),
        }
    }

    /// Whether child `i` of `node` can hold a fit: its span meets the window and its
    /// largest inner gap is big enough. A gap left stale by the writer's own session
    /// (`K::MAX`, see `Internal`) always passes, so the session's `find_gap` descends there
    /// and finds the exact answer below.
    fn worth_descending<E>(&self, node: NodeRef<'_, K, E>, i: usize) -> bool {
        node.hi(i) > self.w0 && node.lo(i) < self.w1 && node.gap(i) >= self.size
    }
}

/// The lowest or highest aligned free block. O(log n) for an unconstrained window: a
/// subtree is entered only if its max-gap says a fit may be inside; only the subtrees cut
/// by the window's two edges may be entered without finding one.
pub(crate) fn find_gap<K: Key, E>(
    root: NodeRef<'_, K, E>,
    want: Want<K>,
    fit: Fit,
) -> Option<Range<K>> {
    if want.w0 >= want.w1 || want.w1.sub(want.w0) < want.size {
        return None;
    }
    let len = root.len();
    if len == 0 {
        return want.fit(fit, K::ZERO, K::MAX);
    }
    let (first, last) = (root.lo(0), root.hi(len - 1));
    match fit {
        Fit::Lowest => want
            .lowest_in(K::ZERO, first)
            .or_else(|| inside(root, &want, fit))
            .or_else(|| want.lowest_in(last, K::MAX)),
        Fit::Highest => want
            .highest_in(last, K::MAX)
            .or_else(|| inside(root, &want, fit))
            .or_else(|| want.highest_in(K::ZERO, first)),
    }
}

/// A fit strictly inside `node`'s span, in `fit` order.
fn inside<K: Key, E>(node: NodeRef<'_, K, E>, want: &Want<K>, fit: Fit) -> Option<Range<K>> {
    let len = node.len();
    let leaf = node.is_leaf();
    let visit = |i: usize| -> Option<Range<K>> {
        if !leaf && want.worth_descending(node, i) {
            inside(node.child(i), want, fit)
        } else {
            None
        }
    };
    match fit {
        Fit::Lowest => {
            for i in 0..len {
                if i > 0 {
                    if let Some(r) = want.lowest_in(node.hi(i - 1), node.lo(i)) {
                        return Some(r);
                    }
                }
                if node.lo(i) >= want.w1 {
                    break;
                }
                if let Some(r) = visit(i) {
                    return Some(r);
                }
            }
        }
        Fit::Highest => {
            for i in (0..len).rev() {
                if i + 1 < len {
                    if let Some(r) = want.highest_in(node.hi(i), node.lo(i + 1)) {
                        return Some(r);
                    }
                }
                if node.hi(i) <= want.w0 {
                    break;
                }
                if let Some(r) = visit(i) {
                    return Some(r);
                }
            }
        }
    }
    None
}

/// The maximal free ranges inside `w0..w1`, in key order. O(log n + k).
pub(crate) fn gaps<K: Key, E>(root: NodeRef<'_, K, E>, w0: K, w1: K) -> Vec<Range<K>> {
    let mut out = Vec::new();
    if w0 >= w1 {
        return out;
    }
    let mut cursor = w0;
    for_each_overlapping(root, w0, w1, &mut |f| {
        if f.lo > cursor {
            out.push(cursor..f.lo);
        }
        cursor = cursor.max(f.hi);
    });
    if cursor < w1 {
        out.push(cursor..w1);
    }
    out
}
