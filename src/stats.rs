//! Lock statistics in the spirit of the kernel's VMA_LOCK_SUCCESS / ABORT / RETRY / MISS.
//!
//! Owns: the counters and their snapshot type. Must not: put a shared cache-line write or
//! an atomic read-modify-write on the lookup fast path. Each thread counts in its own
//! cache-padded shard with a plain load and store — no locked instruction. A thread holds
//! its shard number from its first count until it exits, and takes the lowest number no
//! live thread holds ([`TAKEN`]), the same in every map. Two threads share a shard only
//! while more than `SHARDS` threads that have counted are alive at once; their increments
//! may then overwrite each other, so the counts are exact up to `SHARDS` such threads and
//! a lower bound beyond.

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crossbeam_utils::CachePadded;

/// At most 32 (the bits of [`TAKEN`]).
const SHARDS: usize = 16;

/// A snapshot of a map's lock statistics, from [`RangeMap::stats`](crate::RangeMap::stats).
///
/// Counters are per map, cumulative since it was created, and read without stopping
/// readers, so a snapshot taken under load is approximate. They are kept without atomic
/// read-modify-writes (so they cost the lookup nothing measurable): exact while at most
/// 16 threads that have looked something up in any map are alive at once (a thread that
/// exits leaves its place to the next), a lower bound beyond.
///
/// ```
/// use rcu_rangemap::RangeMap;
///
/// let map = RangeMap::<u32, u8>::new();
/// map.write().insert(0..10, 1);
/// let _hit = map.get(3);
/// let _miss = map.get(30);
/// let s = map.stats();
/// assert_eq!((s.success, s.miss), (1, 1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Stats {
    /// Fast-path lookups that read-locked their entry without any map-wide lock.
    pub success: u64,
    /// Lookups whose fast path was refused (entry locked by a session, or reader limit).
    /// `get` then waits for the session to end and retries ([`waited`](Self::waited)), or
    /// takes the map-wide lock ([`slow`](Self::slow)); `try_get` answers an error.
    pub abort: u64,
    /// Fast paths restarted from the root (the entry found was detached: a commit removed or
    /// replaced it meanwhile).
    pub retry: u64,
    /// Lookups that found no entry for the key.
    pub miss: u64,
    /// Read locks granted on the slow path, under the map-wide lock.
    pub slow: u64,
    /// Read locks granted on the fast path after waiting, without any lock, for the
    /// session that held the entry to end.
    pub waited: u64,
}

#[derive(Clone, Copy)]
pub(crate) enum Event {
    Success = 0,
    Abort = 1,
    Retry = 2,
    Miss = 3,
    Slow = 4,
    Waited = 5,
}

type Shard = [AtomicU64; 6];

pub(crate) struct Counters {
    shards: Box<[CachePadded<Shard>; SHARDS]>,
}

thread_local! {
    /// This thread's shard number, `usize::MAX` until its first count.
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    /// The number this thread holds in [`TAKEN`], given back when the thread exits.
    static LEASE: Lease = const { Lease(Cell::new(None)) };
}

/// Shard numbers held by live threads (bit `i`: number `i`), so that no two threads that
/// count at the same time share one while at most `SHARDS` do. A thread's last counts
/// happen before it gives its number back under this mutex, and the next holder takes it
/// under the same mutex, so the next holder's plain load+store increments build on them.
static TAKEN: Mutex<u32> = Mutex::new(0);

/// A thread's hold on a shard number (see [`TAKEN`]).
struct Lease(Cell<Option<usize>>);

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(i) = self.0.take() {
            *TAKEN.lock().unwrap_or_else(|e| e.into_inner()) &= !(1 << i);
            // A later count in this thread (another thread-local's destructor) takes a
            // shared number: `take_index` finds this lease gone.
            let _ = INDEX.try_with(|n| n.set(usize::MAX));
        }
    }
}

#[inline]
fn shard_index() -> usize {
    INDEX.with(|n| {
        let v = n.get();
        if v != usize::MAX {
            return v;
        }
        let v = take_index();
        n.set(v);
        v
    })
}

/// The lowest shard number no live thread holds, leased to this thread until it exits;
/// while every one is held, one shared with another thread (round robin).
#[cold]
fn take_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let free = !*taken & (u32::MAX >> (32 - SHARDS));
    if free != 0 {
        let i = free.trailing_zeros() as usize;
        // Fails only while this thread's thread-locals are being destroyed: then no lease.
        if LEASE.try_with(|l| l.0.set(Some(i))).is_ok() {
            *taken |= 1 << i;
            return i;
        }
    }
    // Relaxed: only the spread of the shared numbers matters, not ordering.
    NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            shards: Box::new(core::array::from_fn(|_| {
                CachePadded::new(core::array::from_fn(|_| AtomicU64::new(0)))
            })),
        }
    }

    #[inline]
    pub(crate) fn count(&self, e: Event) {
        let c = &self.shards[shard_index()][e as usize];
        // Relaxed load and store, not `fetch_add`: the shard is this thread's own unless
        // more than `SHARDS` threads that count are alive (see the module docs); a
        // statistic, nothing is ordered by it (a shard's next holder sees these counts
        // through `TAKEN`'s mutex).
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let sum = |e: Event| {
            self.shards
                .iter()
                // Relaxed: a statistic (see `Stats`).
                .map(|s| s[e as usize].load(Ordering::Relaxed))
                .sum()
        };
        Stats {
            success: sum(Event::Success),
            abort: sum(Event::Abort),
            retry: sum(Event::Retry),
            miss: sum(Event::Miss),
            slow: sum(Event::Slow),
            waited: sum(Event::Waited),
        }
    }
}
