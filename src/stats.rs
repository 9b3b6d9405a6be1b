//! Lock statistics in the spirit of the kernel's VMA_LOCK_SUCCESS / ABORT / RETRY / MISS.
//!
//! Owns: the counters and their snapshot type. Must not: put a shared cache-line write or
//! an atomic read-modify-write on the lookup fast path. Each thread counts in its own
//! cache-padded shard (threads take shard numbers in turn, modulo `SHARDS`) with a plain
//! load and store — no locked instruction. Two threads share a shard only when more than
//! `SHARDS` threads use the map; their increments may then overwrite each other, so the
//! counts are exact up to `SHARDS` threads and a lower bound beyond.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

const SHARDS: usize = 16;

/// A snapshot of a map's lock statistics, from [`RangeMap::stats`](crate::RangeMap::stats).
///
/// Counters are per map, cumulative since it was created, and read without stopping
/// readers, so a snapshot taken under load is approximate. They are kept without atomic
/// read-modify-writes (so they cost the lookup nothing measurable): exact while at most
/// 16 threads have used the map, a lower bound beyond.
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

#[inline]
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: core::cell::Cell<usize> = const { core::cell::Cell::new(usize::MAX) };
    }
    INDEX.with(|i| {
        let mut v = i.get();
        if v == usize::MAX {
            // Relaxed: only distinctness of the numbers matters, not ordering.
            v = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            i.set(v);
        }
        v
    })
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
        // more than `SHARDS` threads share the map (see the module docs); a statistic,
        // nothing is ordered by it.
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
