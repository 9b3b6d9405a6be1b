//! Structural invariant checks and a randomized test of the copy-on-write tree alone.
//! Test-only: it walks a tree and asserts every invariant `node.rs` states. Also built for
//! the fuzz targets (`--cfg fuzzing`, see `RangeMap::fuzz_check_structure`).

#[cfg(test)]
use core::ptr::NonNull;

#[cfg(test)]
use super::cow::CowTree;
#[cfg(test)]
use super::node::NodeMut;
use super::node::{NodeRef, MIN};
#[cfg(test)]
use super::search::lookup;
use crate::key::Key;

/// Assert `node`'s invariants; returns (height, entries, first lo, last hi, max inner gap).
fn check_node<K: Key, E>(node: NodeRef<'_, K, E>, is_root: bool, level: u8) -> usize {
    assert_eq!(node.level(), level, "level mismatch");
    let len = node.len();
    if !is_root {
        assert!(len >= MIN, "non-root node with {len} < MIN slots");
    }
    if !is_root || !node.is_leaf() {
        assert!(len > 0);
    }
    if !node.is_leaf() && is_root {
        assert!(len >= 2, "internal root with one child");
    }
    assert!(node.padding_is_max(), "a key past len is not K::MAX");
    assert_eq!(node.stale(), 0, "a stale gap left (fix_gaps not run?)");
    let mut count = 0;
    for i in 0..len {
        assert!(node.lo(i) < node.hi(i), "empty slot");
        if i > 0 {
            assert!(
                node.hi(i - 1) <= node.lo(i),
                "slots out of order or overlapping"
            );
        }
        if !node.is_leaf() {
            let c = node.child(i);
            let s = c.summary();
            assert_eq!((s.lo, s.hi, s.gap), (node.lo(i), node.hi(i), node.gap(i)));
            count += check_node(c, false, level - 1);
        } else {
            count += 1;
        }
    }
    count
}

/// Assert every invariant of the tree at `root`; returns the number of entries.
pub(crate) fn check_tree<K: Key, E>(root: NodeRef<'_, K, E>) -> usize {
    check_node(root, true, root.level())
}

/// Slabs for the tests' trees (`u16` keys, fake `u64` entries); dropping them frees every
/// node.
#[cfg(test)]
fn test_blocks() -> crate::reclaim::Blocks {
    crate::reclaim::Blocks::new([
        NodeMut::<u16, u64>::layout(0),
        NodeMut::<u16, u64>::layout(1),
        core::alloc::Layout::new::<u64>(),
    ])
}

#[test]
fn randomized_edits_keep_invariants() {
    use std::collections::BTreeMap;
    // A fake entry type: the tree never dereferences it, so any non-null pointer works.
    type E = u64;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let n_ops = if cfg!(miri) { 300 } else { 20_000 };
    let mut model: BTreeMap<u16, u16> = BTreeMap::new();
    let mut blocks = test_blocks();
    let mut root = NodeMut::<u16, E>::alloc_in(&mut blocks, 0, 0).as_ptr();
    let mut retired = Vec::new();
    let mut session = 1;
    for op in 0..n_ops {
        if op % 97 == 96 {
            // "Commit": the gaps are made exact, as `Writer`'s commit does before it
            // publishes (no published node may hold a stale gap: see `Internal`).
            // SAFETY: the test's tree, viewed as by every edit below (the session is the
            // one its edits used; `retired` lists what they replaced).
            unsafe { CowTree::new(&mut root, session, &mut retired, &mut blocks) }.fix_gaps();
            // Later edits must copy what this session built. With no readers,
            // the replaced nodes can be reused at once: the next session allocates from
            // them (so a reuse that corrupted a live node would break the checks below).
            for n in retired.drain(..) {
                // SAFETY: replaced nodes, unreachable from `root` (CowTree invariant), each
                // listed once; no reader exists.
                unsafe { NodeMut::recycle(n, &mut blocks) };
            }
            session += 2;
        }
        // SAFETY: a tree owned by this test; sessions are odd and only grow; `retired`
        // lists what this session's edits replaced (every edit goes through such a view).
        let mut tree = unsafe { CowTree::new(&mut root, session, &mut retired, &mut blocks) };
        let lo = (next() % 4000) as u16;
        let len = (next() % 8 + 1) as u16;
        let hi = lo + len;
        if next() % 3 != 0 {
            let free = model.range(..hi).next_back().is_none_or(|(_, &e)| e <= lo);
            if free {
                model.insert(lo, hi);
                tree.insert(lo, hi, NonNull::<E>::dangling());
            }
        } else if let Some((&s, &e)) = model.range(..=lo).next_back() {
            if lo < e {
                model.remove(&s);
                let f = tree.remove(lo).expect("present in the model");
                assert_eq!((f.lo, f.hi), (s, e));
            } else {
                assert!(tree.remove(lo).is_none());
            }
        }
        if op % 500 == 0 || cfg!(miri) {
            tree.fix_gaps();
            assert_eq!(check_tree(tree.root()), model.len());
        }
        let probe = (next() % 4100) as u16;
        let want = model
            .range(..=probe)
            .next_back()
            .filter(|(_, &e)| probe < e);
        let got = lookup(tree.root(), probe).map(|f| (f.lo, f.hi));
        assert_eq!(got, want.map(|(&s, &e)| (s, e)));
    }
    // Trim (replace the slots' entries with narrower ones) and check again.
    let keys: Vec<(u16, u16)> = model.iter().map(|(&s, &e)| (s, e)).collect();
    // SAFETY: as above.
    let mut tree = unsafe { CowTree::new(&mut root, session, &mut retired, &mut blocks) };
    for (s, e) in keys {
        if e - s >= 2 {
            tree.replace(s, s + 1, e, NonNull::<E>::dangling());
        }
    }
    tree.fix_gaps();
    check_tree(tree.root());
    // Dropping `blocks` frees every node, live or replaced.
}

#[test]
fn reinserting_a_leaf_front_goes_to_the_emptier_side() {
    type E = u64;
    let mut blocks = test_blocks();
    let mut root = NodeMut::<u16, E>::alloc_in(&mut blocks, 0, 0).as_ptr();
    let mut retired = Vec::new();
    // SAFETY: a fresh tree owned by this test, one session (1) throughout.
    let mut tree = unsafe { CowTree::new(&mut root, 1, &mut retired, &mut blocks) };
    // 17 ascending inserts: the 17th splits the full leaf right-biased, 12 | 5.
    for i in 0..17u16 {
        tree.insert(i * 10, i * 10 + 5, NonNull::<E>::dangling());
    }
    let (left, right_lo) = {
        let r = tree.root();
        assert_eq!((r.len(), r.child(0).len(), r.child(1).len()), (2, 12, 5));
        (r.child(0).as_ptr(), r.lo(1))
    };
    // Take the right leaf's first entry out and put it back: its key now lies in the gap
    // between the two leaves, and it must go back to the emptier right one (not grow the
    // left one, which under churn drifts full and splits).
    let f = tree.remove(right_lo).expect("present");
    tree.insert(f.lo, f.hi, f.entry);
    let r = tree.root();
    assert_eq!((r.child(0).len(), r.child(1).len()), (12, 5));
    assert_eq!(r.child(0).as_ptr(), left);
    assert_eq!(r.lo(1), right_lo);
    tree.fix_gaps();
    let r = tree.root();
    assert_eq!(check_tree(r), 17);
}
