//! Epoch pins that readers hold across lookups: [`EpochPin`], and [`Pinned`], a map with
//! one.
//!
//! Owns: the caller's pin and its renewal. Must not: reach the tree itself — lookups go
//! through `RangeMap`'s own fast and waiting paths, which take the pin as an argument.

use core::fmt;

use crate::entry::ReadGuard;
use crate::error::TryGetError;
use crate::key::Key;
use crate::map::RangeMap;
use crate::reclaim::{self, Guard};

/// This thread pinned in the epoch scheme that reclaims every map's memory, held across
/// lookups: [`RangeMap::get_pinned`] and [`RangeMap::try_get_pinned`] use it instead of
/// pinning for each descent, in any map.
///
/// While it lives, memory retired after it was pinned is not reclaimed, in any map (or
/// anywhere else crossbeam-epoch's global collector is used). Writer sessions go on, but
/// allocate fresh blocks instead of reusing retired ones. So hold it for a batch of
/// lookups, not for a thread's lifetime, or [`repin`](Self::repin) between batches. The
/// [`ReadGuard`]s looked up under it hold their entries' read locks, not the pin, and may
/// outlive it. It is neither `Send` nor `Sync`: the pin belongs to the thread that took it.
///
/// ```
/// use rcu_rangemap::{EpochPin, RangeMap};
///
/// let map = RangeMap::<u32, char>::new();
/// map.write().insert(10..20, 'x');
/// let mut pin = EpochPin::new();
/// let mut hits = 0;
/// for batch in [[10, 15], [19, 20]] {
///     hits += batch.iter().filter(|&&k| map.get_pinned(k, &pin).is_some()).count();
///     pin.repin(); // let reclamation move on between batches
/// }
/// assert_eq!(hits, 3);
/// ```
///
/// It cannot be sent to another thread:
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// send(rcu_rangemap::EpochPin::new());
/// ```
//
// Invariant: `guard` pins the collector that every map retires its blocks into
// (`reclaim::pin`'s), so a block reached from a root loaded under it stays allocated while
// it is held, whichever map the root belongs to.
pub struct EpochPin {
    guard: Guard,
}

impl EpochPin {
    /// Pin the current thread (one full memory fence, or less if it is pinned already).
    ///
    /// ```
    /// use rcu_rangemap::{EpochPin, RangeMap};
    ///
    /// let map = RangeMap::<u32, u32>::new();
    /// map.write().insert(0..100, 1);
    /// let pin = EpochPin::new();
    /// let sum: u32 = (0..100).map(|k| *map.get_pinned(k, &pin).unwrap()).sum();
    /// assert_eq!(sum, 100);
    /// ```
    pub fn new() -> Self {
        EpochPin {
            guard: reclaim::pin(),
        }
    }

    /// Move this pin to the current epoch, so that memory retired since it was taken can
    /// be reclaimed. Cheaper than a new pin: the thread stays pinned throughout, so no
    /// fence is needed, only a load and at most one store. Guards looked up before stay
    /// valid. If the thread holds another pin (a second `EpochPin`, or any other
    /// crossbeam-epoch guard), nothing changes.
    ///
    /// ```
    /// use rcu_rangemap::{EpochPin, RangeMap};
    ///
    /// let map = RangeMap::<u32, u32>::new();
    /// map.write().insert(0..10, 1);
    /// let mut pin = EpochPin::new();
    /// for key in 0..3 {
    ///     let g = map.get_pinned(key, &pin).unwrap();
    ///     pin.repin(); // memory retired meanwhile may now be reclaimed
    ///     assert_eq!(*g, 1); // and the guard stays valid
    /// }
    /// ```
    pub fn repin(&mut self) {
        self.guard.repin();
    }

    /// The pin, for a descent (the invariant above).
    #[inline]
    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }
}

impl Default for EpochPin {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EpochPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochPin").finish_non_exhaustive()
    }
}

/// A map and an [`EpochPin`] held across lookups in it; from [`RangeMap::pin`].
///
/// [`get`](Self::get) and [`try_get`](Self::try_get) answer exactly as the map's own
/// [`RangeMap::get`] and [`RangeMap::try_get`] (same waiting, same guarantees, same
/// statistics); they only skip pinning for each descent. What [`EpochPin`] says about how
/// long to hold a pin applies here.
///
/// ```
/// use rcu_rangemap::{RangeMap, TryGetError};
///
/// let map = RangeMap::<u32, char>::new();
/// map.write().insert(10..20, 'x');
/// let mut pinned = map.pin();
/// assert_eq!(pinned.get(15).map(|g| (*g, g.range())), Some(('x', 10..20)));
/// pinned.repin();
/// assert_eq!(pinned.try_get(20).unwrap_err(), TryGetError::Vacant);
/// ```
pub struct Pinned<'a, K: Key, V> {
    map: &'a RangeMap<K, V>,
    pin: EpochPin,
}

impl<'a, K: Key, V> Pinned<'a, K, V> {
    pub(crate) fn new(map: &'a RangeMap<K, V>, pin: EpochPin) -> Self {
        Pinned { map, pin }
    }

    /// The entry holding `key`, read-locked: [`RangeMap::get_pinned`] under this pin.
    /// The guard borrows the map, not this handle. O(log n).
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, char>::new();
    /// map.write().insert(10..20, 'x');
    /// let pinned = map.pin();
    /// let found: String = (0..30).filter_map(|k| pinned.get(k)).map(|g| *g).collect();
    /// assert_eq!(found, "x".repeat(10));
    /// ```
    #[inline]
    pub fn get(&self, key: K) -> Option<ReadGuard<'a, K, V>> {
        self.map.get_pinned(key, &self.pin)
    }

    /// [`RangeMap::try_get_pinned`] under this pin: never blocks. O(log n).
    ///
    /// # Errors
    /// As [`RangeMap::try_get`].
    ///
    /// ```
    /// use rcu_rangemap::{RangeMap, TryGetError};
    ///
    /// let map = RangeMap::<u32, char>::new();
    /// map.write().insert(10..20, 'x');
    /// let pinned = map.pin();
    /// assert_eq!(*pinned.try_get(10).unwrap(), 'x');
    /// assert_eq!(pinned.try_get(9).unwrap_err(), TryGetError::Vacant);
    /// ```
    #[inline]
    pub fn try_get(&self, key: K) -> Result<ReadGuard<'a, K, V>, TryGetError> {
        self.map.try_get_pinned(key, &self.pin)
    }

    /// [`EpochPin::repin`].
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, u8>::new();
    /// map.write().insert(0..10, 1);
    /// let mut pinned = map.pin();
    /// assert!(pinned.get(5).is_some());
    /// pinned.repin();
    /// assert!(pinned.get(5).is_some());
    /// ```
    pub fn repin(&mut self) {
        self.pin.repin();
    }

    /// The map this handle reads.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, u8>::new();
    /// let pinned = map.pin();
    /// assert!(std::ptr::eq(pinned.map(), &map));
    /// ```
    pub fn map(&self) -> &'a RangeMap<K, V> {
        self.map
    }
}

impl<K: Key, V> fmt::Debug for Pinned<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinned")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}
