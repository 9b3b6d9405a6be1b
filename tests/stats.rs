//! `RangeMap::stats` stays exact while at most 16 threads that count are alive at once,
//! however many came and went before: a thread that exits gives its shard back.
//!
//! In a binary of its own, so that no other test's threads count meanwhile. Before shard
//! numbers were given back, the second hammering thread below took the same number as the
//! first (sixteen numbers later), and their plain load+store increments overwrote each
//! other: thousands of lookups went uncounted per attempt. A collision shows only when the
//! two threads really run at once, so the test makes several attempts.

use std::sync::{mpsc, Barrier};
use std::thread;

use rcu_rangemap::RangeMap;

#[test]
#[cfg_attr(miri, ignore = "millions of lookups")]
fn stats_stay_exact_as_threads_come_and_go() {
    const LOOKUPS: u64 = 1_000_000;
    let other = RangeMap::<u64, u64>::new();
    other.write().insert(0..10, 1);
    for attempt in 0..16 {
        let map = RangeMap::<u64, u64>::new();
        map.write().insert(0..10, 1);
        let start = Barrier::new(2);
        thread::scope(|s| {
            let (map, start) = (&map, &start);
            let (counted, first_counted) = mpsc::channel();
            s.spawn(move || {
                drop(map.get(1));
                counted.send(()).unwrap();
                start.wait();
                for _ in 0..LOOKUPS {
                    drop(map.get(1));
                }
            });
            first_counted.recv().unwrap();
            // Fifteen threads count once each (in another map) and exit.
            for _ in 0..15 {
                let other = &other;
                thread::scope(|s| {
                    s.spawn(move || drop(other.get(1)));
                });
            }
            s.spawn(move || {
                drop(map.get(1));
                start.wait();
                for _ in 0..LOOKUPS {
                    drop(map.get(1));
                }
            });
        });
        let want = 2 * (LOOKUPS + 1);
        let got = map.stats().success;
        assert_eq!(
            got,
            want,
            "attempt {attempt}: {} lookups uncounted",
            want - got
        );
    }
}
