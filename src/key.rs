//! The key types: every unsigned primitive integer, through the sealed [`Key`] trait.
//!
//! Owns: the arithmetic the map needs on keys, all of it checked — nothing here wraps
//! near `K::MAX`. Must not: know about trees or entries.

use core::fmt::Debug;
use core::hash::Hash;

mod sealed {
    pub trait Sealed {}
}

/// An unsigned primitive integer usable as a [`RangeMap`](crate::RangeMap) key:
/// `u8`, `u16`, `u32`, `u64`, `u128` and `usize`.
///
/// Sealed: the map's gap arithmetic relies on the exact semantics of these types.
///
/// ```
/// use rcu_rangemap::Key;
/// assert_eq!(<u8 as Key>::MAX, 255);
/// assert_eq!(<u64 as Key>::ZERO, 0);
/// ```
pub trait Key:
    sealed::Sealed + Copy + Ord + Hash + Debug + Default + Send + Sync + 'static
{
    /// The smallest key, `0`.
    const ZERO: Self;
    /// The largest key. Ranges are half-open, so `MAX` itself is never covered.
    const MAX: Self;
    /// `self + rhs`, or `None` on overflow.
    fn checked_add(self, rhs: Self) -> Option<Self>;
    /// `self - rhs` where `rhs <= self`; callers guarantee it (debug-asserted).
    fn sub(self, rhs: Self) -> Self;
    /// Whether `self` is a power of two (zero is not).
    fn is_power_of_two(self) -> bool;
    /// Round up to a multiple of `align` (a power of two), or `None` on overflow.
    fn align_up(self, align: Self) -> Option<Self>;
    /// Round down to a multiple of `align` (a power of two).
    fn align_down(self, align: Self) -> Self;
    /// Widen to `u128`, for display and for tests.
    fn to_u128(self) -> u128;
}

macro_rules! impl_key {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Key for $t {
            const ZERO: Self = 0;
            const MAX: Self = <$t>::MAX;
            #[inline]
            fn checked_add(self, rhs: Self) -> Option<Self> {
                <$t>::checked_add(self, rhs)
            }
            #[inline]
            fn sub(self, rhs: Self) -> Self {
                debug_assert!(rhs <= self);
                self - rhs
            }
            #[inline]
            fn is_power_of_two(self) -> bool {
                <$t>::is_power_of_two(self)
            }
            #[inline]
            fn align_up(self, align: Self) -> Option<Self> {
                debug_assert!(align.is_power_of_two());
                Some(<$t>::checked_add(self, align - 1)? & !(align - 1))
            }
            #[inline]
            fn align_down(self, align: Self) -> Self {
                debug_assert!(align.is_power_of_two());
                self & !(align - 1)
            }
            #[inline]
            fn to_u128(self) -> u128 {
                self as u128
            }
        }
    )*};
}

impl_key!(u8, u16, u32, u64, u128, usize);

#[cfg(test)]
mod tests {
    use super::Key;

    #[test]
    fn align_near_max_never_wraps() {
        assert_eq!(Key::align_up(250u8, 8), None);
        assert_eq!(Key::align_up(248u8, 8), Some(248));
        assert_eq!(Key::align_up(241u8, 16), None);
        assert_eq!(Key::align_down(255u8, 16), 240);
        assert_eq!(Key::checked_add(u64::MAX, 1), None);
    }
}
