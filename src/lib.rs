//! A concurrent range map: non-overlapping half-open ranges of integer keys mapped to
//! values, read by many threads at once while writer sessions change it.
//!
//! Inside is an RCU-style copy-on-write B+tree (the Linux maple tree's idea) whose entries
//! each embed a refcount read lock (the kernel's per-VMA lock, as reworked in Dec 2024):
//!
//! - **Readers** ([`RangeMap::get`]) pin an epoch, descend the published tree with plain
//!   loads, and take a read count on the one entry they find — no map-wide lock, no atomic
//!   read-modify-write on shared tree memory. The [`ReadGuard`] holds that count, not the
//!   epoch, so long-lived guards never hold back memory reclamation. A reader doing many
//!   lookups may instead pin once for a batch of them ([`EpochPin`], [`RangeMap::pin`]):
//!   the pin is a full memory fence, a large share of a lookup on small maps.
//! - **Writers** ([`RangeMap::write`]) are serialised. A session edits a private
//!   copy-on-write version, write-locks only the entries it changes (waiting for their
//!   readers), and publishes everything with one atomic root store at commit; one
//!   sequence increment then unlocks all its entries at once. A session whose only change
//!   is that a range it removed is back (the same bounds, a new value) publishes no tree at
//!   all: it keeps the entry, write-locked all along, and puts the new value in it.
//! - **Removed entries** are detached at commit (waiting out readers that raced in), then
//!   freed through epoch-based reclamation. Values are never dropped by the reclaimer:
//!   removed values are handed back to the writer's caller.
//! - **An entry never changes range.** Its bounds live once, in the leaf beside its
//!   pointer; a session that trims an entry replaces it with a new one (moving the value)
//!   and removes the old. So a reader's granted count needs no re-check of the range (the
//!   seed protocol's last fast-path step), and an entry is 24 bytes for a `u64` value
//!   (lock state 16, value 8) — what keeps the map near 60 bytes per range.
//! - **Memory** comes from chunks of the map's own, one stream per block size, and goes
//!   back to the allocator a chunk at a time, once all of a chunk's blocks are free (see
//!   [`RangeMap`]). A map that shrank for good gives back what it can at once with
//!   [`RangeMap::shrink_to_fit`].
//!
//! # What readers can observe
//!
//! - A session is atomic: readers see the version before it until it commits, except that
//!   an entry the session has locked cannot be read meanwhile — `get` waits for the
//!   commit, `try_get` answers [`TryGetError::Locked`].
//! - `get` and `try_get` are linearizable; `get` never answers a spurious `None`.
//! - Iterators yield entries in key order, each read-locked and valid when yielded; if a
//!   commit removed the next entry meanwhile, the walk continues in the newer version.
//!   `gaps` reads one published version.
//!
//! # Example: lookup-then-read-lock against a concurrent writer
//!
//! ```
//! use rcu_rangemap::RangeMap;
//! use std::thread;
//!
//! // Guest-physical memory slots of a VMM: range -> host address.
//! let map = RangeMap::<u64, u64>::new();
//! map.write().insert(0x0000..0x8000, 0x7f00_0000);
//!
//! thread::scope(|s| {
//!     s.spawn(|| {
//!         for _ in 0..1000 {
//!             // Lock-free lookup; the guard keeps this one entry read-locked.
//!             let slot = map.get(0x1234).expect("always mapped");
//!             assert!(slot.range().contains(&0x1234));
//!         }
//!     });
//!     s.spawn(|| {
//!         for i in 0..100u64 {
//!             let mut w = map.write();
//!             // Remap the upper half; the session publishes atomically at commit.
//!             w.insert(0x4000..0x8000, 0x9000_0000 + i);
//!             w.commit();
//!         }
//!     });
//! });
//! assert_eq!(map.len(), 2);
//! assert_eq!(*map.get(0x4000).unwrap(), 0x9000_0000 + 99);
//! ```
//!
//! # Threads
//!
//! A [`RangeMap`] is `Send` when its values are (its drop drops them on whatever thread
//! drops it) and `Sync` when they are `Send + Sync` (readers on any thread get `&V`, and
//! sessions on any thread move values in and out). A [`ReadGuard`] is `Send` and `Sync`
//! when `V: Sync` (it lends `&V` and gives back a count, which any thread may do), and so
//! are the iterators of a map that is `Sync`. A [`Writer`] stays on the thread that started
//! the session, and an [`EpochPin`] (or [`Pinned`]) on the thread it pinned.
//!
//! ```
//! use rcu_rangemap::{Gaps, Overlapping, RangeMap, ReadGuard};
//! fn send_sync<T: Send + Sync>() {}
//! send_sync::<RangeMap<u64, String>>();
//! send_sync::<ReadGuard<'static, u64, String>>();
//! send_sync::<Overlapping<'static, u64, String>>();
//! send_sync::<Gaps<u64>>();
//! // `V: Send` alone: the map may move (and drop its values) elsewhere, not be shared.
//! fn send<T: Send>() {}
//! send::<RangeMap<u64, std::cell::Cell<u8>>>();
//! ```
//!
//! A map of values that must stay on their thread cannot move:
//!
//! ```compile_fail,E0277
//! fn send<T: Send>(_: T) {}
//! send(rcu_rangemap::RangeMap::<u64, std::rc::Rc<u8>>::new());
//! ```
//!
//! Nor can a map of values that are not `Sync` be shared (another thread's reader would
//! get a `&Cell` this thread writes):
//!
//! ```compile_fail,E0277
//! fn sync<T: Sync>(_: &T) {}
//! sync(&rcu_rangemap::RangeMap::<u64, std::cell::Cell<u8>>::new());
//! ```
//!
//! Nor can a guard on one move:
//!
//! ```compile_fail,E0277
//! use rcu_rangemap::RangeMap;
//! fn send<T: Send>(_: T) {}
//! let map = RangeMap::<u64, std::cell::Cell<u8>>::new();
//! map.write().try_insert(0..8, std::cell::Cell::new(1)).unwrap();
//! send(map.get(3).unwrap());
//! ```
//!
//! A writer session cannot move to another thread (its lock is this thread's):
//!
//! ```compile_fail,E0277
//! use rcu_rangemap::RangeMap;
//! fn send<T: Send>(_: T) {}
//! let map = RangeMap::<u64, u64>::new();
//! send(map.write());
//! ```
//!
//! Nor can a map with its pin ([`Pinned`]):
//!
//! ```compile_fail,E0277
//! use rcu_rangemap::RangeMap;
//! fn send<T: Send>(_: T) {}
//! let map = RangeMap::<u64, u64>::new();
//! send(map.pin());
//! ```
//!
//! # Values that must learn where they are cut
//!
//! Overwriting or removing part of an entry splits it. With `V: Clone`, [`Writer::insert`]
//! and [`Writer::remove`] clone the value; [`Writer::insert_with`] and
//! [`Writer::remove_with`] instead call a closure that cuts it (a file mapping moves its
//! offset), with no `Clone` bound.

#![warn(missing_docs)]

pub mod allocator;
mod entry;
mod error;
mod key;
#[cfg(loom)]
#[doc(hidden)]
pub mod lock;
#[cfg(not(loom))]
mod lock;
#[cfg(all(test, not(loom)))]
mod lock_stress;
mod map;
mod pinned;
mod reclaim;
mod slab;
mod stats;
mod sync;
mod tree;
mod writer;

pub use entry::ReadGuard;
pub use error::{InsertError, InsertErrorKind, TryGetError};
pub use key::Key;
pub use map::{Fit, Gaps, Overlapping, RangeMap};
pub use pinned::{EpochPin, Pinned};
pub use stats::Stats;
pub use writer::{Displaced, DisplacedIter, Writer};
