//! Bulk construction: a whole tree from sorted, disjoint entries in one pass.
//!
//! Owns: building a tree bottom-up with evenly filled nodes (O(n), no copy-on-write).
//! Must not: be used on a tree anyone else can see — the result is a fresh, unpublished
//! tree, handed to a new map or made a session's working tree
//! ([`CowTree::rebuild`](super::cow::CowTree::rebuild)).

use core::ptr::NonNull;

use super::node::{Node, NodeMut, Summary, B};
use crate::key::Key;
use crate::reclaim::Blocks;

/// Build a tree over `items` (sorted by start, disjoint, non-empty ranges), every node born
/// in session `born`, in blocks from `blocks`. Returns the root.
pub(crate) fn build<K: Key, E>(
    items: &[(K, K, NonNull<E>)],
    born: u64,
    blocks: &mut Blocks,
) -> *mut Node<K, E> {
    debug_assert!(items.windows(2).all(|w| w[0].1 <= w[1].0));
    if items.is_empty() {
        return NodeMut::<K, E>::alloc_in(blocks, born, 0).as_ptr();
    }
    // Level 0: leaves. Each level is a list of (summary, node).
    let mut level: Vec<(Summary<K>, NodeMut<K, E>)> = chunks(items.len())
        .map(|r| {
            let leaf = NodeMut::alloc_in(blocks, born, 0);
            let run = &items[r];
            for (j, &(lo, hi, e)) in run.iter().enumerate() {
                let s = Summary {
                    lo,
                    hi,
                    gap: K::ZERO,
                };
                leaf.set_slot(j, s, e.as_ptr() as *mut ());
            }
            leaf.set_len(run.len());
            (leaf.as_ref().summary(), leaf)
        })
        .collect();
    let mut height = 0u8;
    while level.len() > 1 {
        height += 1;
        level = chunks(level.len())
            .map(|r| {
                let node = NodeMut::alloc_in(blocks, born, height);
                for (j, (s, child)) in level[r.clone()].iter().enumerate() {
                    node.set_slot(j, *s, child.as_ptr() as *mut ());
                }
                node.set_len(r.len());
                (node.as_ref().summary(), node)
            })
            .collect();
    }
    level[0].1.as_ptr()
}

/// Split `n` slots into ceil(n / B) runs of near-equal length: every run has at least
/// `MIN` slots whenever there is more than one (n > B gives runs of at least B / 2).
fn chunks(n: usize) -> impl Iterator<Item = core::ops::Range<usize>> {
    let k = n.div_ceil(B);
    let (q, r) = (n / k, n % k);
    (0..k).scan(0, move |start, i| {
        let len = q + usize::from(i < r);
        let run = *start..*start + len;
        *start += len;
        Some(run)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::check::check_tree;
    use crate::tree::node::NodeRef;
    use crate::tree::search::lookup;

    #[test]
    fn built_trees_are_well_formed() {
        for n in [
            0usize, 1, 3, 4, 15, 16, 17, 31, 33, 255, 256, 257, 1000, 4099,
        ] {
            let items: Vec<(u32, u32, NonNull<u8>)> = (0..n as u32)
                .map(|i| (i * 10, i * 10 + 5, NonNull::dangling()))
                .collect();
            // Dropped after the tree's last use: it frees every node.
            let mut blocks = Blocks::new([
                NodeMut::<u32, u8>::layout(0),
                NodeMut::<u32, u8>::layout(1),
                core::alloc::Layout::new::<u8>(),
            ]);
            let root = build(&items, 0, &mut blocks);
            // SAFETY: a fresh tree owned by this test.
            let r = unsafe { NodeRef::new(NonNull::new(root).unwrap()) };
            assert_eq!(check_tree(r), n);
            for i in 0..n as u32 {
                assert_eq!(lookup(r, i * 10 + 4).map(|f| f.lo), Some(i * 10));
                assert!(lookup(r, i * 10 + 5).is_none());
            }
        }
    }
}
