//! Retired blocks still in the epoch collector while the map trims its chunks, packs,
//! shrinks, or is dropped: another thread holds an `EpochPin` throughout, so no batch a
//! session hands over can come back until it lets go.
//!
//! A chunk given back while one of its blocks waited in the collector would be handed to
//! the allocator (and maybe to the map again, at the same address) with that block then
//! put back into a slab on its return: a block listed twice, or a block of freed memory.
//! Values are `String`s, so a node or entry reused too early shows as a wrong or torn value
//! natively and as a use after free under Miri.

use rcu_rangemap::{EpochPin, RangeMap};
use std::sync::mpsc;

fn value(k: u64, round: u64) -> String {
    format!("{k}:{round}")
}

/// Every entry holds the value of the round it was last written in.
fn check(map: &RangeMap<u64, String>, want: &std::collections::BTreeMap<u64, u64>) {
    let got: Vec<(u64, String)> = map.iter().map(|g| (g.range().start, g.clone())).collect();
    let want: Vec<(u64, String)> = want.iter().map(|(&k, &r)| (k, value(k, r))).collect();
    assert_eq!(got, want);
}

#[test]
fn trims_and_shrinks_while_batches_wait_in_the_collector() {
    let n: u64 = if cfg!(miri) { 40 } else { 3_000 };
    let rounds: u64 = if cfg!(miri) { 6 } else { 200 };
    let map = RangeMap::<u64, String>::new();
    let mut model = std::collections::BTreeMap::new();
    {
        let mut w = map.write();
        for k in 0..n {
            w.try_insert(k * 4..k * 4 + 3, value(k * 4, 0)).unwrap();
            model.insert(k * 4, 0);
        }
    }
    let (pinned_tx, pinned) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let pin = EpochPin::new();
            pinned_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(pin);
        });
        pinned.recv().unwrap();
        // Churn: every session replaces entries (new blocks, the old ones retired) and
        // copies paths; nothing it retires can come back while the other thread is pinned.
        for r in 1..=rounds {
            let mut w = map.write();
            for j in 0..8 {
                let k = ((r * 37 + j * 101) % n) * 4;
                if let Some(round) = model.get_mut(&k) {
                    drop(w.remove_entry(k + 1));
                    w.try_insert(k..k + 2, value(k, r)).unwrap();
                    *round = r;
                    // And back to its full width next time round (another new entry).
                    let (range, v) = w.remove_entry(k).unwrap();
                    assert_eq!(range, k..k + 2);
                    w.try_insert(k..k + 3, v).unwrap();
                }
            }
            w.commit();
        }
        check(&map, &model);
        // Most of it goes: the slabs are mostly free, but much of it waits in the
        // collector. `shrink_to_fit` moves everything, waits a bounded time for the blocks
        // (in vain) and gives back every chunk it finds all free.
        let keep = n / 8;
        drop(map.write().remove(keep * 4..n * 4));
        model.retain(|&k, _| k < keep * 4);
        map.shrink_to_fit();
        check(&map, &model);
        // More sessions, still pinned: they allocate around the chunks in flight.
        for r in rounds + 1..rounds + 4 {
            let mut w = map.write();
            for k in (0..keep).map(|k| k * 4).step_by(3) {
                *w.get_mut(k).unwrap().1 = value(k, r);
                model.insert(k, r);
            }
            w.insert(n * 4 + r..n * 4 + r + 1, value(n * 4 + r, r));
            model.insert(n * 4 + r, r);
            w.commit();
        }
        release.send(()).unwrap();
    });
    // The batches come back (their chunks must still be the map's) and are reused.
    for r in rounds + 4..rounds + 20 {
        let mut w = map.write();
        for k in (0..n / 8).map(|k| k * 4) {
            let (range, _) = w.remove_entry(k + 1).unwrap();
            w.try_insert(range, value(k, r)).unwrap();
            model.insert(k, r);
        }
        w.commit();
        check(&map, &model);
    }
    map.shrink_to_fit();
    check(&map, &model);
}

#[test]
fn a_map_dropped_while_its_batches_wait_in_the_collector() {
    let n: u64 = if cfg!(miri) { 40 } else { 3_000 };
    let (pinned_tx, pinned) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let (done_tx, done) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            let pin = EpochPin::new();
            pinned_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(pin);
            // Collect: the dropped map's batches go to its pool, which nobody reads.
            for _ in 0..64 {
                drop(EpochPin::new());
            }
            done_tx.send(()).unwrap();
        });
        pinned.recv().unwrap();
        for round in 0..3u64 {
            let map = RangeMap::<u64, String>::new();
            for r in 0..4 {
                let mut w = map.write();
                for k in 0..n {
                    drop(w.insert(k * 2..k * 2 + 1, value(k, r)));
                }
                w.commit();
            }
            // Built, churned and dropped on another thread, its batches still pinned.
            std::thread::spawn(move || {
                assert_eq!(map.len(), n as usize);
                assert_eq!(*map.get(2 * (n - 1)).unwrap(), value(n - 1, 3));
                drop(map);
            })
            .join()
            .unwrap();
            // A new map takes the freed chunks, maybe at the same addresses.
            let next = RangeMap::<u64, String>::new();
            {
                let mut w = next.write();
                for k in 0..n {
                    w.try_insert(k..k + 1, value(k, round)).unwrap();
                }
            }
            assert!(next
                .iter()
                .enumerate()
                .all(|(k, g)| *g == value(k as u64, round)));
        }
        release.send(()).unwrap();
        done.recv().unwrap();
    });
}
