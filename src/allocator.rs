//! A concurrent address allocator built on [`RangeMap`]: carve aligned blocks out of a
//! space of keys, free them, and find the block holding an address from any thread
//! without a lock.
//!
//! [`AddressAllocator`] manages one *space* (a `Range<K>` of keys: an MMIO window, a PCI
//! BAR aperture, a guest-physical hole, GPU virtual address space, a port range...). Each
//! allocation is one entry of an inner [`RangeMap`], carrying a value of your choice (a
//! device handle, an owner tag; `()` if you need none).
//!
//! - [`allocate`](AddressAllocator::allocate) places `size` keys, start aligned to
//!   `align`, at the [lowest](Placement::Lowest) or [highest](Placement::Highest) free
//!   place of the space, or [exactly](Placement::Exact) at a given start.
//! - [`reserve`](AddressAllocator::reserve) takes an exact range with no alignment
//!   constraint (firmware holes, ranges fixed by hardware).
//! - [`free`](AddressAllocator::free) gives an allocation back (by its exact range, as
//!   returned by `allocate`), [`free_at`](AddressAllocator::free_at) the allocation holding
//!   a key; both return its value.
//! - [`lookup`](AddressAllocator::lookup) answers "which allocation holds this address?"
//!   lock-free, returning a read-locked [`ReadGuard`] exactly like [`RangeMap::get`].
//! - Bad input is an [`AllocError`], never a panic: zero size, non-power-of-two alignment,
//!   a misaligned exact start, a range outside the space or overflowing `K::MAX`.
//!
//! # Concurrency
//!
//! `AddressAllocator<K, V>` is `Send + Sync` when `V` is: share it (`&` or `Arc`) among any
//! number of threads. Every `allocate`, `reserve`, `free` and `free_at` is **one writer
//! session** of the map: the free place is searched in the session's own view and the
//! block inserted before the session commits, so two concurrent allocations can never be
//! handed the same keys, and a lookup sees an allocation either complete or not at all.
//! Mutations are serialised by the map's writer lock; lookups never take it (they only
//! wait for a session that is changing the very allocation they found — see
//! [`RangeMap::get`]).
//!
//! # Compared with `vm_allocator::AddressAllocator`
//!
//! [`vm_allocator`](https://docs.rs/vm-allocator) (rust-vmm) is the allocator most Rust
//! VMMs use for MMIO and PIO space. What it has, we have:
//!
//! | `vm_allocator` | here |
//! |---|---|
//! | `AddressAllocator::new(base, size)` | [`AddressAllocator::new`]`(base..base + size)` |
//! | `allocate(size, align, AllocPolicy::FirstMatch)` | [`allocate`](AddressAllocator::allocate)`(size, align, Placement::Lowest)` |
//! | `allocate(size, align, AllocPolicy::LastMatch)` | `allocate(size, align, Placement::Highest)` |
//! | `allocate(size, align, AllocPolicy::ExactMatch(a))` | `allocate(size, align, Placement::Exact(a))` |
//! | `free(&RangeInclusive)` | [`free`](AddressAllocator::free)`(range)` (half-open) |
//! | `base()`, `end()` | [`space`](AddressAllocator::space) |
//! | `Error::{InvalidSize, InvalidAlignment, UnalignedAddress, ResourceNotAvailable, Overlap, Overflow}` | [`AllocError`] |
//!
//! What it does not have: concurrent use (its methods take `&mut self`, so sharing it
//! means wrapping it in a `Mutex` that lookups would take too), a lookup of the
//! allocation holding an address, values attached to allocations, reservation of a range
//! that is not aligned, and `u8`..`u128` keys (it is `u64` only).
//!
//! **Complexity.** Its interval tree stores free *and* allocated nodes; first match walks
//! that tree in order (left subtree, node, right subtree) until a free node that fits, so
//! a request that only fits near the end of a fragmented space visits O(n) nodes; last
//! match likewise from the right. Here [`Writer::find_gap`](crate::Writer::find_gap)
//! descends the map's B-tree using the largest free gap stored per subtree and skips
//! every subtree whose gaps are too small: O(log n) for the lowest or highest fit.
//! (Alignment is not in the metadata: a subtree whose largest gap is at least `size` but
//! holds no aligned place is entered in vain. That costs nothing for `align == 1` and
//! little in practice; only many gaps of between `size` and `size + align - 1` keys, none
//! aligned, degrade it toward a walk of those gaps.) Exact placement, free and lookup are
//! O(log n) in both, but our lookup is lock-free and runs in parallel with allocation.
//!
//! # Example
//!
//! ```
//! use rcu_rangemap::allocator::{AddressAllocator, AllocError, Placement};
//!
//! // A 32-bit MMIO hole, values naming the device.
//! let mmio = AddressAllocator::<u64, &str>::new(0xd000_0000..0xfec0_0000).unwrap();
//! let nic = mmio.allocate_with(0x4000, 0x1000, Placement::Lowest, |_| "nic").unwrap();
//! let gpu = mmio.allocate_with(0x100_0000, 0x100_0000, Placement::Highest, |_| "gpu").unwrap();
//! assert_eq!(nic, 0xd000_0000..0xd000_4000);
//! assert_eq!(gpu, 0xfd00_0000..0xfe00_0000);
//!
//! // Which device decodes this address? Lock-free.
//! assert_eq!(*mmio.lookup(0xd000_1234).unwrap(), "nic");
//! assert!(mmio.lookup(0xe000_0000).is_none());
//!
//! // Bad requests are errors, not panics.
//! assert_eq!(mmio.allocate(0, 8, Placement::Lowest), Err(AllocError::InvalidSize));
//! assert!(matches!(
//!     mmio.allocate(0x1000, 0x1000, Placement::Exact(0xd000_2000)),
//!     Err(AllocError::Overlap { .. })
//! ));
//!
//! assert_eq!(mmio.free(nic), Ok("nic"));
//! assert_eq!(mmio.len(), 1);
//! ```

use core::fmt;
use core::ops::Range;

use crate::{Fit, InsertErrorKind, Key, RangeMap, ReadGuard, TryGetError};

/// Where [`AddressAllocator::allocate`] places a block.
///
/// ```
/// use rcu_rangemap::allocator::{AddressAllocator, Placement};
///
/// let a = AddressAllocator::<u32>::new(0..0x1000).unwrap();
/// assert_eq!(a.allocate(0x100, 0x100, Placement::Lowest), Ok(0..0x100));
/// assert_eq!(a.allocate(0x100, 0x100, Placement::Highest), Ok(0xf00..0x1000));
/// assert_eq!(a.allocate(0x100, 0x100, Placement::Exact(0x800)), Ok(0x800..0x900));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement<K> {
    /// The lowest aligned free place in the space (first fit from the start).
    Lowest,
    /// The highest aligned free place in the space (first fit from the end).
    Highest,
    /// Exactly at this start, which must be aligned to the requested alignment.
    Exact(K),
}

impl<K> From<Fit> for Placement<K> {
    /// [`Fit::Lowest`] is [`Placement::Lowest`], [`Fit::Highest`] is [`Placement::Highest`].
    ///
    /// ```
    /// use rcu_rangemap::{allocator::Placement, Fit};
    /// assert_eq!(Placement::<u64>::from(Fit::Highest), Placement::Highest);
    /// ```
    fn from(fit: Fit) -> Self {
        match fit {
            Fit::Lowest => Placement::Lowest,
            Fit::Highest => Placement::Highest,
        }
    }
}

/// Why an [`AddressAllocator`] operation failed. Nothing was changed.
///
/// Ranges in the messages are shown in hex.
///
/// ```
/// use rcu_rangemap::allocator::{AddressAllocator, AllocError, Placement};
///
/// let a = AddressAllocator::<u16>::new(0x100..0x200).unwrap();
/// let e = a.allocate(0x10, 3, Placement::Lowest).unwrap_err();
/// assert_eq!(e, AllocError::InvalidAlign { align: 3 });
/// assert_eq!(e.to_string(), "alignment 0x3 is not a power of two");
/// let boxed: Box<dyn std::error::Error> = Box::new(e);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AllocError<K> {
    /// [`AddressAllocator::new`]: the space is empty or reversed.
    InvalidSpace {
        /// The space asked for.
        space: Range<K>,
    },
    /// The requested size is zero.
    InvalidSize,
    /// The requested alignment is not a power of two (zero included).
    InvalidAlign {
        /// The alignment asked for.
        align: K,
    },
    /// A range argument is empty or reversed.
    InvalidRange {
        /// The range given.
        range: Range<K>,
    },
    /// [`Placement::Exact`]: the start is not a multiple of the alignment.
    Misaligned {
        /// The start asked for.
        start: K,
        /// The alignment asked for.
        align: K,
    },
    /// The requested keys are not all inside the space (or `start + size` overflows `K`).
    OutsideSpace {
        /// The start of the requested keys.
        start: K,
        /// Their count.
        size: K,
    },
    /// No free place of `size` keys aligned to `align` is left in the space.
    OutOfSpace {
        /// The size asked for.
        size: K,
        /// The alignment asked for.
        align: K,
    },
    /// The requested range is (partly) taken by an allocation.
    Overlap {
        /// The range asked for.
        requested: Range<K>,
        /// An allocation it overlaps.
        existing: Range<K>,
    },
    /// [`free_at`](AddressAllocator::free_at) / [`free`](AddressAllocator::free): no
    /// allocation holds this key (for `free`: the range's start; one that holds it without
    /// starting there is a [`RangeMismatch`](AllocError::RangeMismatch)).
    NotAllocated {
        /// The key asked for.
        at: K,
    },
    /// [`free`](AddressAllocator::free): an allocation holds the range's start but is not
    /// exactly that range.
    RangeMismatch {
        /// The range given.
        requested: Range<K>,
        /// The allocation found at its start.
        allocated: Range<K>,
    },
}

struct Hex<K>(K);

impl<K: Key> fmt::Display for Hex<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0.to_u128())
    }
}

struct HexRange<'a, K>(&'a Range<K>);

impl<K: Key> fmt::Display for HexRange<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", Hex(self.0.start), Hex(self.0.end))
    }
}

impl<K: Key> fmt::Display for AllocError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::InvalidSpace { space } => {
                write!(
                    f,
                    "allocator space {} is empty or reversed",
                    HexRange(space)
                )
            }
            AllocError::InvalidSize => f.write_str("allocation size is zero"),
            AllocError::InvalidAlign { align } => {
                write!(f, "alignment {} is not a power of two", Hex(*align))
            }
            AllocError::InvalidRange { range } => {
                write!(f, "range {} is empty or reversed", HexRange(range))
            }
            AllocError::Misaligned { start, align } => {
                write!(f, "start {} is not aligned to {}", Hex(*start), Hex(*align))
            }
            AllocError::OutsideSpace { start, size } => write!(
                f,
                "{} keys at {} do not fit inside the allocator space",
                Hex(*size),
                Hex(*start)
            ),
            AllocError::OutOfSpace { size, align } => write!(
                f,
                "no free place of {} keys aligned to {} is left",
                Hex(*size),
                Hex(*align)
            ),
            AllocError::Overlap {
                requested,
                existing,
            } => write!(
                f,
                "range {} overlaps the allocation {}",
                HexRange(requested),
                HexRange(existing)
            ),
            AllocError::NotAllocated { at } => write!(f, "no allocation at {}", Hex(*at)),
            AllocError::RangeMismatch {
                requested,
                allocated,
            } => write!(
                f,
                "range {} is not an allocation (the allocation there is {})",
                HexRange(requested),
                HexRange(allocated)
            ),
        }
    }
}

impl<K: Key> std::error::Error for AllocError<K> {}

/// A thread-safe allocator of aligned key ranges inside a fixed space, with a value per
/// allocation and lock-free lookup of the allocation holding a key.
///
/// See the [module documentation](self) for the concurrency contract and a comparison
/// with `vm_allocator`.
///
/// ```
/// use std::sync::Arc;
/// use rcu_rangemap::allocator::{AddressAllocator, Placement};
///
/// let a = Arc::new(AddressAllocator::<u64, usize>::new(0..1 << 20).unwrap());
/// let handles: Vec<_> = (0..4)
///     .map(|t| {
///         let a = Arc::clone(&a);
///         std::thread::spawn(move || {
///             (0..8)
///                 .map(|_| a.allocate_with(0x1000, 0x1000, Placement::Lowest, |_| t).unwrap())
///                 .collect::<Vec<_>>()
///         })
///     })
///     .collect();
/// let mut all: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
/// all.sort_by_key(|r| r.start);
/// // 32 blocks, packed from the bottom, none shared.
/// assert_eq!(all.len(), 32);
/// assert!(all.windows(2).all(|w| w[0].end == w[1].start));
/// assert_eq!(all.last().unwrap().end, 32 * 0x1000);
/// ```
pub struct AddressAllocator<K: Key, V = ()> {
    space: Range<K>,
    map: RangeMap<K, V>,
}

impl<K: Key, V> fmt::Debug for AddressAllocator<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressAllocator")
            .field("space", &self.space)
            .field("allocations", &self.map.len())
            .finish()
    }
}

impl<K: Key, V> AddressAllocator<K, V> {
    /// An allocator handing out keys of `space`, with nothing allocated.
    ///
    /// `space` must not be empty (`start < end`); since ranges are half-open, the key
    /// `K::MAX` can never be allocated.
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, AllocError};
    ///
    /// let a = AddressAllocator::<u8>::new(16..255).unwrap();
    /// assert_eq!(a.space(), 16..255);
    /// assert_eq!(
    ///     AddressAllocator::<u8>::new(5..5).unwrap_err(),
    ///     AllocError::InvalidSpace { space: 5..5 }
    /// );
    /// ```
    pub fn new(space: Range<K>) -> Result<Self, AllocError<K>> {
        if space.start >= space.end {
            return Err(AllocError::InvalidSpace { space });
        }
        Ok(AddressAllocator {
            space,
            map: RangeMap::new(),
        })
    }

    /// The space this allocator hands out keys from.
    ///
    /// ```
    /// use rcu_rangemap::allocator::AddressAllocator;
    /// let a = AddressAllocator::<u64>::new(0x1000..0x2000).unwrap();
    /// assert_eq!(a.space(), 0x1000..0x2000);
    /// ```
    pub fn space(&self) -> Range<K> {
        self.space.clone()
    }

    /// Allocates `size` keys whose start is a multiple of `align`, placed as `placement`
    /// says, with value `V::default()`. Returns the allocated range.
    ///
    /// Same as [`allocate_with`](Self::allocate_with)`(size, align, placement, |_|
    /// V::default())`; see there for errors and complexity.
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, AllocError, Placement};
    ///
    /// let a = AddressAllocator::<u64>::new(0x1000..0x3000).unwrap();
    /// assert_eq!(a.allocate(0x800, 0x1000, Placement::Lowest), Ok(0x1000..0x1800));
    /// // The next 0x1000-aligned start is 0x2000.
    /// assert_eq!(a.allocate(0x800, 0x1000, Placement::Lowest), Ok(0x2000..0x2800));
    /// assert_eq!(
    ///     a.allocate(0x800, 0x1000, Placement::Lowest),
    ///     Err(AllocError::OutOfSpace { size: 0x800, align: 0x1000 })
    /// );
    /// // Unaligned room is still there.
    /// assert_eq!(a.allocate(0x800, 0x800, Placement::Highest), Ok(0x2800..0x3000));
    /// ```
    pub fn allocate(
        &self,
        size: K,
        align: K,
        placement: Placement<K>,
    ) -> Result<Range<K>, AllocError<K>>
    where
        V: Default,
    {
        self.allocate_with(size, align, placement, |_| V::default())
    }

    /// Allocates `size` keys whose start is a multiple of `align`, placed as `placement`
    /// says; the allocation's value is `make(range)`. Returns the allocated range.
    ///
    /// `make` runs only if the allocation succeeds, inside the writer session (other
    /// mutations of this allocator wait for it; lookups do not); it must not use this
    /// allocator.
    ///
    /// # Errors
    ///
    /// Checked in this order: [`InvalidSize`](AllocError::InvalidSize) if `size` is 0,
    /// [`InvalidAlign`](AllocError::InvalidAlign) if `align` is not a power of two; for
    /// [`Placement::Exact`]: [`Misaligned`](AllocError::Misaligned),
    /// [`OutsideSpace`](AllocError::OutsideSpace), [`Overlap`](AllocError::Overlap);
    /// for the lowest/highest placements: [`OutOfSpace`](AllocError::OutOfSpace).
    ///
    /// # Complexity
    ///
    /// O(log n) for every placement (n allocations): the lowest or highest fit is found by
    /// the map's gap search, which prunes subtrees by their largest free gap (see the
    /// [module documentation](self) for the one case alignment makes slower).
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, Placement};
    ///
    /// #[derive(Debug, PartialEq)]
    /// struct Bar { bus: u8, base: u64 }
    ///
    /// let a = AddressAllocator::<u64, Bar>::new(0xe000_0000..0xf000_0000).unwrap();
    /// let r = a
    ///     .allocate_with(0x10_0000, 0x10_0000, Placement::Highest, |r| Bar { bus: 1, base: r.start })
    ///     .unwrap();
    /// assert_eq!(r, 0xeff0_0000..0xf000_0000);
    /// assert_eq!(*a.lookup(0xeff0_1000).unwrap(), Bar { bus: 1, base: 0xeff0_0000 });
    /// ```
    pub fn allocate_with(
        &self,
        size: K,
        align: K,
        placement: Placement<K>,
        make: impl FnOnce(Range<K>) -> V,
    ) -> Result<Range<K>, AllocError<K>> {
        if size == K::ZERO {
            return Err(AllocError::InvalidSize);
        }
        if !align.is_power_of_two() {
            return Err(AllocError::InvalidAlign { align });
        }
        let fit = match placement {
            Placement::Exact(start) => {
                if start.align_down(align) != start {
                    return Err(AllocError::Misaligned { start, align });
                }
                let range = self.range_in_space(start, size)?;
                return self.insert(range, make);
            }
            Placement::Lowest => Fit::Lowest,
            Placement::Highest => Fit::Highest,
        };
        let mut w = self.map.write();
        // `size` is nonzero and `align` a power of two: find_gap's preconditions hold.
        let range = w
            .find_gap(self.space.clone(), size, align, fit)
            .ok_or(AllocError::OutOfSpace { size, align })?;
        let value = make(range.clone());
        match w.try_insert(range.clone(), value) {
            Ok(()) => Ok(range),
            // find_gap answered a place that is not free: a map bug. Report it as the
            // overlap it is rather than panicking in the caller's thread.
            Err(e) => Err(insert_error(e.kind(), range)),
        }
    }

    /// Reserves exactly `range` (no alignment constraint), with value `V::default()`.
    ///
    /// Same as [`reserve_with`](Self::reserve_with)`(range, |_| V::default())`.
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, Placement};
    ///
    /// let a = AddressAllocator::<u16>::new(0..0x400).unwrap();
    /// a.reserve(0x3..0x105).unwrap(); // a firmware hole
    /// assert_eq!(a.allocate(0x100, 0x100, Placement::Lowest), Ok(0x200..0x300));
    /// ```
    pub fn reserve(&self, range: Range<K>) -> Result<(), AllocError<K>>
    where
        V: Default,
    {
        self.reserve_with(range, |_| V::default())
    }

    /// Reserves exactly `range` (no alignment constraint); its value is `make(range)`.
    ///
    /// `make` runs only on success, inside the writer session; it must not use this
    /// allocator.
    ///
    /// # Errors
    ///
    /// [`InvalidRange`](AllocError::InvalidRange) if `range` is empty or reversed,
    /// [`OutsideSpace`](AllocError::OutsideSpace) if it is not inside the space,
    /// [`Overlap`](AllocError::Overlap) if any key of it is allocated.
    ///
    /// # Complexity
    ///
    /// O(log n).
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, AllocError};
    ///
    /// let a = AddressAllocator::<u32, &str>::new(0..0x1_0000).unwrap();
    /// a.reserve_with(0xa0..0xc0, |_| "vga").unwrap();
    /// assert_eq!(
    ///     a.reserve_with(0xbf..0xd0, |_| "rom"),
    ///     Err(AllocError::Overlap { requested: 0xbf..0xd0, existing: 0xa0..0xc0 })
    /// );
    /// ```
    pub fn reserve_with(
        &self,
        range: Range<K>,
        make: impl FnOnce(Range<K>) -> V,
    ) -> Result<(), AllocError<K>> {
        if range.start >= range.end {
            return Err(AllocError::InvalidRange { range });
        }
        if range.start < self.space.start || range.end > self.space.end {
            return Err(AllocError::OutsideSpace {
                start: range.start,
                size: range.end.sub(range.start),
            });
        }
        self.insert(range, make).map(|_| ())
    }

    /// Frees the allocation that is exactly `range` (as returned by
    /// [`allocate`](Self::allocate) or passed to [`reserve`](Self::reserve)) and returns
    /// its value.
    ///
    /// The allocation is removed in one writer session: it waits for the readers
    /// currently holding a [`lookup`](Self::lookup) guard of this allocation to drop it
    /// (so never free an allocation while your own thread holds a guard of it: that
    /// deadlocks). Lookups that start later do not find it.
    ///
    /// # Errors
    ///
    /// [`InvalidRange`](AllocError::InvalidRange) if `range` is empty or reversed,
    /// [`NotAllocated`](AllocError::NotAllocated) if no allocation holds `range.start`,
    /// [`RangeMismatch`](AllocError::RangeMismatch) if the one holding it is not exactly
    /// `range`. Nothing is freed on error.
    ///
    /// # Complexity
    ///
    /// O(log n).
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, AllocError, Placement};
    ///
    /// let a = AddressAllocator::<u64, u32>::new(0..0x10000).unwrap();
    /// let r = a.allocate_with(0x100, 1, Placement::Lowest, |_| 7).unwrap();
    /// assert_eq!(
    ///     a.free(0..0x80),
    ///     Err(AllocError::RangeMismatch { requested: 0..0x80, allocated: 0..0x100 })
    /// );
    /// assert_eq!(a.free(r.clone()), Ok(7));
    /// assert_eq!(a.free(r), Err(AllocError::NotAllocated { at: 0 }));
    /// ```
    pub fn free(&self, range: Range<K>) -> Result<V, AllocError<K>> {
        if range.start >= range.end {
            return Err(AllocError::InvalidRange { range });
        }
        let mut w = self.map.write();
        let allocated = match w.get(range.start) {
            None => return Err(AllocError::NotAllocated { at: range.start }),
            Some((allocated, _)) => allocated,
        };
        if allocated != range {
            return Err(AllocError::RangeMismatch {
                requested: range,
                allocated,
            });
        }
        match w.remove_entry(range.start) {
            Some((_, value)) => Ok(value),
            None => Err(AllocError::NotAllocated { at: range.start }),
        }
    }

    /// Frees the allocation holding `key`, whatever its range, and returns its range and
    /// value.
    ///
    /// Waits for current lookup guards of that allocation like [`free`](Self::free) (the
    /// same deadlock warning applies).
    ///
    /// # Errors
    ///
    /// [`NotAllocated`](AllocError::NotAllocated) if no allocation holds `key`.
    ///
    /// # Complexity
    ///
    /// O(log n).
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, Placement};
    ///
    /// let a = AddressAllocator::<u64, char>::new(0..0x10000).unwrap();
    /// a.allocate_with(0x100, 0x100, Placement::Exact(0x300), |_| 'x').unwrap();
    /// assert_eq!(a.free_at(0x3ab), Ok((0x300..0x400, 'x')));
    /// assert!(a.is_empty());
    /// ```
    pub fn free_at(&self, key: K) -> Result<(Range<K>, V), AllocError<K>> {
        self.map
            .write()
            .remove_entry(key)
            .ok_or(AllocError::NotAllocated { at: key })
    }

    /// The allocation holding `key`, read-locked: lock-free on the fast path, like
    /// [`RangeMap::get`] (it falls back to the map's writer lock only if the fast path
    /// fails, and then never answers a spurious `None`). The guard dereferences to the
    /// value; [`ReadGuard::range`] is the allocation's range.
    ///
    /// While you hold the guard, the allocation cannot be freed (a `free` of it waits
    /// for the guard), so drop guards promptly and never free or change an allocation
    /// from a thread that holds a guard of it.
    ///
    /// # Complexity
    ///
    /// O(log n), no lock on the fast path.
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, Placement};
    ///
    /// let a = AddressAllocator::<u64, &str>::new(0..1 << 32).unwrap();
    /// a.allocate_with(0x1000, 0x1000, Placement::Exact(0x4000), |_| "uart").unwrap();
    /// let g = a.lookup(0x4ff8).unwrap();
    /// assert_eq!(g.range(), 0x4000..0x5000);
    /// assert_eq!(*g, "uart");
    /// assert!(a.lookup(0x5000).is_none());
    /// ```
    pub fn lookup(&self, key: K) -> Option<ReadGuard<'_, K, V>> {
        self.map.get(key)
    }

    /// The allocation holding `key`, on the lock-free fast path only: never blocks and
    /// never takes the writer lock, see [`RangeMap::try_get`].
    ///
    /// # Errors
    ///
    /// [`TryGetError::Vacant`] if no allocation holds `key`;
    /// [`TryGetError::Locked`] if a writer session is changing that allocation right now
    /// (other variants as in [`RangeMap::try_get`]).
    ///
    /// ```
    /// use rcu_rangemap::{allocator::{AddressAllocator, Placement}, TryGetError};
    ///
    /// let a = AddressAllocator::<u64>::new(0..0x1000).unwrap();
    /// a.allocate(0x10, 0x10, Placement::Lowest).unwrap();
    /// assert_eq!(a.try_lookup(0x8).unwrap().range(), 0..0x10);
    /// assert_eq!(a.try_lookup(0x10).unwrap_err(), TryGetError::Vacant);
    /// ```
    pub fn try_lookup(&self, key: K) -> Result<ReadGuard<'_, K, V>, TryGetError> {
        self.map.try_get(key)
    }

    /// Runs `f` on the value of the allocation holding `key`, mutably, and returns its
    /// result, or `None` if no allocation holds `key`.
    ///
    /// This is a writer session: it waits for the current lookup guards of that
    /// allocation (never call it while your thread holds one), and `f` must not use this
    /// allocator. Lookups of the allocation wait until `f` has returned and see its
    /// change complete.
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, Placement};
    ///
    /// let a = AddressAllocator::<u64, u32>::new(0..0x1000).unwrap();
    /// a.allocate(0x100, 0x100, Placement::Lowest).unwrap();
    /// assert_eq!(a.update(0x42, |v| { *v += 5; *v }), Some(5));
    /// assert_eq!(*a.lookup(0).unwrap(), 5);
    /// assert_eq!(a.update(0x100, |v| *v), None);
    /// ```
    pub fn update<R>(&self, key: K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let mut w = self.map.write();
        let (_, value) = w.get_mut(key)?;
        Some(f(value))
    }

    /// The number of allocations.
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, Placement};
    /// let a = AddressAllocator::<u8>::new(0..255).unwrap();
    /// a.allocate(10, 1, Placement::Lowest).unwrap();
    /// assert_eq!(a.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is allocated.
    ///
    /// ```
    /// use rcu_rangemap::allocator::AddressAllocator;
    /// assert!(AddressAllocator::<u8>::new(0..255).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The allocations in key order, each read-locked while you hold it (the same
    /// iteration semantics as [`RangeMap::iter`]).
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, Placement};
    ///
    /// let a = AddressAllocator::<u32>::new(0..0x1000).unwrap();
    /// a.allocate(0x10, 0x10, Placement::Highest).unwrap();
    /// a.allocate(0x10, 0x10, Placement::Lowest).unwrap();
    /// let ranges: Vec<_> = a.iter().map(|g| g.range()).collect();
    /// assert_eq!(ranges, [0..0x10, 0xff0..0x1000]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = ReadGuard<'_, K, V>> + '_ {
        self.map.iter()
    }

    /// The maximal free ranges of the space, in key order, from one consistent version.
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, Placement};
    ///
    /// let a = AddressAllocator::<u32>::new(0x100..0x1000).unwrap();
    /// a.allocate(0x100, 0x100, Placement::Exact(0x800)).unwrap();
    /// let free: Vec<_> = a.free_ranges().collect();
    /// assert_eq!(free, [0x100..0x800, 0x900..0x1000]);
    /// ```
    pub fn free_ranges(&self) -> impl Iterator<Item = Range<K>> + '_ {
        self.map.gaps(self.space.clone())
    }

    /// The number of free keys in the space (O(number of free ranges)).
    ///
    /// ```
    /// use rcu_rangemap::allocator::{AddressAllocator, Placement};
    ///
    /// let a = AddressAllocator::<u16>::new(0..0x1000).unwrap();
    /// a.allocate(0x300, 1, Placement::Lowest).unwrap();
    /// assert_eq!(a.free_space(), 0xd00);
    /// ```
    pub fn free_space(&self) -> K {
        self.free_ranges().fold(K::ZERO, |total, r| {
            // The free ranges are disjoint and inside the space, so the sum fits in K.
            total.checked_add(r.end.sub(r.start)).unwrap_or(K::MAX)
        })
    }

    /// The underlying map, for the read-only queries it offers beyond this type's
    /// (`overlapping`, `gaps` of a sub-window, `find_gap` without allocating, stats).
    ///
    /// ```
    /// use rcu_rangemap::{allocator::{AddressAllocator, Placement}, Fit};
    ///
    /// let a = AddressAllocator::<u64>::new(0..0x10000).unwrap();
    /// a.allocate(0x1000, 0x1000, Placement::Lowest).unwrap();
    /// assert_eq!(a.as_map().overlapping(0..0x10000).count(), 1);
    /// assert_eq!(a.as_map().find_gap(0..0x10000, 0x10, 0x10, Fit::Lowest), Some(0x1000..0x1010));
    /// ```
    pub fn as_map(&self) -> &RangeMap<K, V> {
        &self.map
    }

    /// `start..start + size` if it lies inside the space.
    fn range_in_space(&self, start: K, size: K) -> Result<Range<K>, AllocError<K>> {
        match start.checked_add(size) {
            Some(end) if start >= self.space.start && end <= self.space.end => Ok(start..end),
            _ => Err(AllocError::OutsideSpace { start, size }),
        }
    }

    /// One writer session inserting `range` (valid and inside the space) into free space.
    fn insert(
        &self,
        range: Range<K>,
        make: impl FnOnce(Range<K>) -> V,
    ) -> Result<Range<K>, AllocError<K>> {
        let mut w = self.map.write();
        // Ask first (in the session's own view), so `make` runs only when the insert
        // will succeed.
        if let Some((existing, _)) = w.overlapping(range.clone()).next() {
            return Err(AllocError::Overlap {
                requested: range,
                existing,
            });
        }
        let value = make(range.clone());
        match w.try_insert(range.clone(), value) {
            Ok(()) => Ok(range),
            Err(e) => Err(insert_error(e.kind(), range)),
        }
    }
}

fn insert_error<K: Key>(kind: &InsertErrorKind<K>, requested: Range<K>) -> AllocError<K> {
    match kind {
        InsertErrorKind::Occupied { existing } => AllocError::Overlap {
            requested,
            existing: existing.clone(),
        },
        // Callers validated the range; keep the answer typed anyway.
        _ => AllocError::InvalidRange { range: requested },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use proptest::prelude::*;

    /// Small sizes under Miri or when CI asks for them.
    fn small() -> bool {
        cfg!(miri) || std::env::var_os("RCU_RANGEMAP_SMALL").is_some()
    }

    // ---------------------------------------------------------------------------------
    // Reference allocator: a sorted map of allocations, brute-force first/last fit.
    // ---------------------------------------------------------------------------------

    struct Model {
        space: Range<u8>,
        allocs: BTreeMap<u8, (u8, u32)>,
    }

    impl Model {
        fn first_overlapping(&self, r: &Range<u8>) -> Option<Range<u8>> {
            self.allocs
                .iter()
                .map(|(&s, &(e, _))| s..e)
                .find(|a| a.start < r.end && r.start < a.end)
        }

        fn holding(&self, k: u8) -> Option<(Range<u8>, u32)> {
            let (&s, &(e, v)) = self.allocs.range(..=k).next_back()?;
            (k < e).then_some((s..e, v))
        }

        fn insert(&mut self, r: Range<u8>, v: u32) -> Result<Range<u8>, AllocError<u8>> {
            if let Some(existing) = self.first_overlapping(&r) {
                return Err(AllocError::Overlap {
                    requested: r,
                    existing,
                });
            }
            self.allocs.insert(r.start, (r.end, v));
            Ok(r)
        }

        fn allocate(
            &mut self,
            size: u8,
            align: u8,
            placement: Placement<u8>,
            v: u32,
        ) -> Result<Range<u8>, AllocError<u8>> {
            if size == 0 {
                return Err(AllocError::InvalidSize);
            }
            if !align.is_power_of_two() {
                return Err(AllocError::InvalidAlign { align });
            }
            let fits = |m: &Model, s: u16| {
                let e = s + u16::from(size);
                s % u16::from(align) == 0
                    && s >= u16::from(m.space.start)
                    && e <= u16::from(m.space.end)
                    && m.first_overlapping(&(s as u8..e as u8)).is_none()
            };
            let start = match placement {
                Placement::Exact(s) => {
                    if s % align != 0 {
                        return Err(AllocError::Misaligned { start: s, align });
                    }
                    let e = u16::from(s) + u16::from(size);
                    if s < self.space.start || e > u16::from(self.space.end) {
                        return Err(AllocError::OutsideSpace { start: s, size });
                    }
                    return self.insert(s..e as u8, v);
                }
                Placement::Lowest => (0..=255u16).find(|&s| fits(self, s)),
                Placement::Highest => (0..=255u16).rev().find(|&s| fits(self, s)),
            };
            match start {
                None => Err(AllocError::OutOfSpace { size, align }),
                Some(s) => self.insert(s as u8..(s + u16::from(size)) as u8, v),
            }
        }

        fn reserve(&mut self, r: Range<u8>, v: u32) -> Result<(), AllocError<u8>> {
            if r.start >= r.end {
                return Err(AllocError::InvalidRange { range: r });
            }
            if r.start < self.space.start || r.end > self.space.end {
                return Err(AllocError::OutsideSpace {
                    start: r.start,
                    size: r.end - r.start,
                });
            }
            self.insert(r, v).map(|_| ())
        }

        fn free(&mut self, r: Range<u8>) -> Result<u32, AllocError<u8>> {
            if r.start >= r.end {
                return Err(AllocError::InvalidRange { range: r });
            }
            match self.holding(r.start) {
                None => Err(AllocError::NotAllocated { at: r.start }),
                Some((a, _)) if a != r => Err(AllocError::RangeMismatch {
                    requested: r,
                    allocated: a,
                }),
                Some(_) => Ok(self.allocs.remove(&r.start).unwrap().1),
            }
        }

        fn free_at(&mut self, k: u8) -> Result<(Range<u8>, u32), AllocError<u8>> {
            let (r, v) = self.holding(k).ok_or(AllocError::NotAllocated { at: k })?;
            self.allocs.remove(&r.start);
            Ok((r, v))
        }

        fn gaps(&self) -> Vec<Range<u8>> {
            let mut out = Vec::new();
            let mut at = self.space.start;
            for (&s, &(e, _)) in &self.allocs {
                if s > at {
                    out.push(at..s);
                }
                at = e;
            }
            if at < self.space.end {
                out.push(at..self.space.end);
            }
            out
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Allocate {
            size: u8,
            align: u8,
            place: u8,
            at: u8,
        },
        Reserve(u8, u8),
        Free(u8, u8),
        FreeLive(usize),
        FreeAt(u8),
        Lookup(u8),
        Update(u8, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let align = prop::sample::select(vec![0u8, 1, 1, 2, 3, 4, 4, 8, 16, 32, 64, 128]);
        prop_oneof![
            4 => (0u8..48, align, 0u8..3, any::<u8>())
                .prop_map(|(size, align, place, at)| Op::Allocate { size, align, place, at }),
            1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Reserve(a, b)),
            1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Free(a, b)),
            2 => any::<usize>().prop_map(Op::FreeLive),
            1 => any::<u8>().prop_map(Op::FreeAt),
            2 => any::<u8>().prop_map(Op::Lookup),
            1 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Update(k, v)),
        ]
    }

    fn space() -> impl Strategy<Value = Range<u8>> {
        prop_oneof![
            Just(0u8..255),
            (0u8..250)
                .prop_flat_map(|s| (Just(s), s + 1..=255))
                .prop_map(|(s, e)| s..e),
        ]
    }

    fn check_same(a: &AddressAllocator<u8, u32>, m: &Model) {
        let got: Vec<_> = a.iter().map(|g| (g.range(), *g)).collect();
        let want: Vec<_> = m.allocs.iter().map(|(&s, &(e, v))| (s..e, v)).collect();
        assert_eq!(got, want);
        assert_eq!(a.len(), m.allocs.len());
        assert_eq!(a.is_empty(), m.allocs.is_empty());
        let gaps = m.gaps();
        assert_eq!(a.free_ranges().collect::<Vec<_>>(), gaps);
        let free: u32 = gaps.iter().map(|g| u32::from(g.end - g.start)).sum();
        assert_eq!(u32::from(a.free_space()), free);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if small() { 8 } else { 256 },
            ..ProptestConfig::default()
        })]

        #[test]
        fn model(space in space(), ops in prop::collection::vec(op(), 1..if small() { 24 } else { 80 })) {
            let a = AddressAllocator::<u8, u32>::new(space.clone()).unwrap();
            let mut m = Model { space, allocs: BTreeMap::new() };
            for (serial, op) in (0u32..).zip(ops) {
                match op {
                    Op::Allocate { size, align, place, at } => {
                        let placement = match place {
                            0 => Placement::Lowest,
                            1 => Placement::Highest,
                            // Mostly aligned exact starts, sometimes not.
                            _ if at % 5 == 0 => Placement::Exact(at),
                            _ => Placement::Exact(if align.is_power_of_two() { at & !(align - 1) } else { at }),
                        };
                        let mut called = false;
                        let got = a.allocate_with(size, align, placement, |r| {
                            called = true;
                            assert_eq!(r.end - r.start, size);
                            serial
                        });
                        let want = m.allocate(size, align, placement, serial);
                        prop_assert_eq!(&got, &want, "{:?} {:?} {:?}", size, align, placement);
                        prop_assert_eq!(called, got.is_ok());
                    }
                    Op::Reserve(s, e) => {
                        let got = a.reserve_with(s..e, |_| serial);
                        prop_assert_eq!(got, m.reserve(s..e, serial));
                    }
                    Op::Free(s, e) => prop_assert_eq!(a.free(s..e), m.free(s..e)),
                    Op::FreeLive(i) => {
                        if !m.allocs.is_empty() {
                            let (&s, &(e, _)) = m.allocs.iter().nth(i % m.allocs.len()).unwrap();
                            prop_assert_eq!(a.free(s..e), m.free(s..e));
                        }
                    }
                    Op::FreeAt(k) => prop_assert_eq!(a.free_at(k), m.free_at(k)),
                    Op::Lookup(k) => {
                        let got = a.lookup(k).map(|g| (g.range(), *g));
                        prop_assert_eq!(&got, &m.holding(k));
                        let tried = a.try_lookup(k).map(|g| (g.range(), *g));
                        match m.holding(k) {
                            Some(want) => prop_assert_eq!(tried, Ok(want)),
                            None => prop_assert_eq!(tried, Err(TryGetError::Vacant)),
                        }
                    }
                    Op::Update(k, v) => {
                        let got = a.update(k, |x| { let old = *x; *x = v; old });
                        let want = m.holding(k).map(|(r, old)| {
                            m.allocs.insert(r.start, (r.end, v));
                            old
                        });
                        prop_assert_eq!(got, want);
                    }
                }
                check_same(&a, &m);
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Edge cases.
    // ---------------------------------------------------------------------------------

    #[test]
    #[allow(clippy::reversed_empty_ranges)] // reversed ranges are the point
    fn invalid_input_is_an_error_not_a_panic() {
        assert_eq!(
            AddressAllocator::<u64>::new(10..3).unwrap_err(),
            AllocError::InvalidSpace { space: 10..3 }
        );
        let a = AddressAllocator::<u64>::new(0x1000..u64::MAX).unwrap();
        for align in [0, 3, 6, u64::MAX] {
            assert_eq!(
                a.allocate(1, align, Placement::Lowest),
                Err(AllocError::InvalidAlign { align })
            );
        }
        assert_eq!(
            a.allocate(0, 0, Placement::Lowest),
            Err(AllocError::InvalidSize)
        );
        assert_eq!(
            a.allocate(0x10, 0x10, Placement::Exact(0x1008)),
            Err(AllocError::Misaligned {
                start: 0x1008,
                align: 0x10
            })
        );
        // Overflowing K::MAX and leaving the space are the same error.
        assert_eq!(
            a.allocate(0x20, 0x10, Placement::Exact(u64::MAX - 0xf)),
            Err(AllocError::OutsideSpace {
                start: u64::MAX - 0xf,
                size: 0x20
            })
        );
        assert_eq!(
            a.allocate(0x10, 0x10, Placement::Exact(0)),
            Err(AllocError::OutsideSpace {
                start: 0,
                size: 0x10
            })
        );
        assert_eq!(
            a.allocate(u64::MAX, 1, Placement::Highest),
            Err(AllocError::OutOfSpace {
                size: u64::MAX,
                align: 1
            })
        );
        assert_eq!(
            a.allocate(1, 1 << 63, Placement::Highest),
            Ok((1 << 63)..(1 << 63) + 1)
        );
        // The very last allocatable key.
        assert_eq!(
            a.allocate(1, 1, Placement::Highest),
            Ok(u64::MAX - 1..u64::MAX)
        );
        assert_eq!(
            a.reserve(5..5),
            Err(AllocError::InvalidRange { range: 5..5 })
        );
        let reversed = 9..5;
        assert_eq!(
            a.free(reversed.clone()),
            Err(AllocError::InvalidRange { range: reversed })
        );
        assert_eq!(a.free_at(7), Err(AllocError::NotAllocated { at: 7 }));
        // Every message renders.
        for e in [
            AllocError::InvalidSpace { space: 1..0 },
            AllocError::InvalidSize,
            AllocError::NotAllocated { at: 3u64 },
            AllocError::Overlap {
                requested: 0..2,
                existing: 1..3,
            },
        ] {
            assert!(!e.to_string().is_empty());
        }
        assert!(format!("{a:?}").contains("AddressAllocator"));
    }

    #[test]
    fn whole_space_of_u8() {
        let a = AddressAllocator::<u8, ()>::new(0..255).unwrap();
        assert_eq!(a.allocate(255, 1, Placement::Lowest), Ok(0..255));
        assert_eq!(
            a.allocate(1, 1, Placement::Highest),
            Err(AllocError::OutOfSpace { size: 1, align: 1 })
        );
        assert_eq!(a.free_space(), 0);
        assert_eq!(a.free(0..255), Ok(()));
        assert_eq!(a.allocate(128, 128, Placement::Highest), Ok(0..128));
    }

    // ---------------------------------------------------------------------------------
    // Many threads: no two live allocations ever overlap, lookups agree.
    // ---------------------------------------------------------------------------------

    /// What each allocation carries: who made it, and where it was placed.
    #[derive(Clone, Debug, PartialEq)]
    struct Tag {
        thread: usize,
        serial: u64,
        range: Range<u64>,
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn threads_never_share_an_allocation() {
        const SPACE: Range<u64> = 0x10_0000..0x20_0000;
        let (threads, ops) = if small() { (3, 60) } else { (4, 10_000) };
        let a = AddressAllocator::<u64, Tag>::new(SPACE).unwrap();
        // Every live allocation, registered after `allocate` returned and unregistered
        // before `free` is called: an overlap here is two live allocations overlapping.
        let registry: Mutex<BTreeMap<u64, (u64, usize)>> = Mutex::new(BTreeMap::new());

        let register = |r: &Range<u64>, thread: usize| {
            let mut reg = registry.lock().unwrap();
            if let Some((&s, &(e, t))) = reg.range(..r.end).next_back() {
                assert!(
                    e <= r.start,
                    "thread {thread} got {r:x?}, overlapping {:x?} of thread {t}",
                    s..e
                );
            }
            reg.insert(r.start, (r.end, thread));
        };

        std::thread::scope(|s| {
            for thread in 0..threads {
                let (a, register, registry) = (&a, &register, &registry);
                s.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((thread as u64 + 1) * 0x1234_5678));
                    let mut live: Vec<Range<u64>> = Vec::new();
                    let (mut made_ok, mut freed) = (0, 0);
                    for serial in 0..ops {
                        match rng.below(10) {
                            0..=3 => {
                                let size = 1 + rng.below(0x4000);
                                let align = 1 << rng.below(14);
                                let placement = match rng.below(3) {
                                    0 => Placement::Lowest,
                                    1 => Placement::Highest,
                                    _ => Placement::Exact(
                                        (SPACE.start + rng.below(SPACE.end - SPACE.start))
                                            & !(align - 1),
                                    ),
                                };
                                let made = a.allocate_with(size, align, placement, |range| Tag {
                                    thread,
                                    serial,
                                    range,
                                });
                                match made {
                                    Ok(r) => {
                                        assert_eq!(r.end - r.start, size);
                                        assert_eq!(r.start % align, 0);
                                        if let Placement::Exact(at) = placement {
                                            assert_eq!(r.start, at);
                                        }
                                        register(&r, thread);
                                        live.push(r);
                                        made_ok += 1;
                                    }
                                    Err(AllocError::OutOfSpace { .. })
                                    | Err(AllocError::Overlap { .. })
                                    | Err(AllocError::OutsideSpace { .. }) => {}
                                    Err(e) => panic!("unexpected {e}"),
                                }
                            }
                            4..=5 if !live.is_empty() => {
                                let r = live.swap_remove(rng.below(live.len() as u64) as usize);
                                registry.lock().unwrap().remove(&r.start);
                                let tag = if rng.below(2) == 0 {
                                    a.free(r.clone()).unwrap()
                                } else {
                                    let (fr, tag) =
                                        a.free_at(r.start + rng.below(r.end - r.start)).unwrap();
                                    assert_eq!(fr, r);
                                    tag
                                };
                                assert_eq!((tag.thread, &tag.range), (thread, &r));
                                freed += 1;
                            }
                            6..=7 if !live.is_empty() => {
                                // An own allocation: must be found, whole and ours.
                                let r = &live[rng.below(live.len() as u64) as usize];
                                let k = r.start + rng.below(r.end - r.start);
                                let g = a.lookup(k).expect("own allocation vanished");
                                assert_eq!(g.range(), *r);
                                assert_eq!((g.thread, &g.range), (thread, r));
                            }
                            _ => {
                                // Anyone's: whatever is found is consistent with itself.
                                let k = SPACE.start + rng.below(SPACE.end - SPACE.start);
                                if let Some(g) = a.lookup(k) {
                                    assert!(g.range().contains(&k));
                                    assert_eq!(g.range, g.range());
                                }
                                if let Ok(g) = a.try_lookup(k) {
                                    assert_eq!(g.range, g.range());
                                }
                            }
                        }
                    }
                    // The mix really allocated and freed (not all OutOfSpace).
                    assert!(made_ok > ops / 20 && freed > ops / 20, "{made_ok} {freed}");
                    live
                });
            }
        });

        // What is left is exactly what the registry says, and frees cleanly.
        let reg = registry.into_inner().unwrap();
        let left: Vec<_> = a.iter().map(|g| (g.range(), g.thread)).collect();
        let want: Vec<_> = reg.iter().map(|(&s, &(e, t))| (s..e, t)).collect();
        assert_eq!(left, want);
        for (r, _) in left {
            a.free(r).unwrap();
        }
        assert!(a.is_empty());
        assert_eq!(a.free_ranges().collect::<Vec<_>>(), [SPACE]);
    }
}
