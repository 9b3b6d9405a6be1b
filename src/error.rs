//! Error types: what was wrong with a request, in words a user can act on.

use core::fmt;
use core::ops::Range;

use crate::key::Key;

/// Why [`RangeMap::try_get`](crate::RangeMap::try_get) answered without a guard.
///
/// ```
/// use rcu_rangemap::{RangeMap, TryGetError};
///
/// let map = RangeMap::<u32, u8>::new();
/// map.write().insert(0..10, 1);
/// assert_eq!(map.try_get(10).unwrap_err(), TryGetError::Vacant);
/// let mut w = map.write();
/// w.get_mut(5); // the session write-locks the entry
/// assert_eq!(map.try_get(5).unwrap_err(), TryGetError::Locked);
/// w.commit();
/// assert_eq!(*map.try_get(5).unwrap(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TryGetError {
    /// No entry holds the key.
    Vacant,
    /// A writer session holds the entry that holds the key; it becomes readable when the
    /// session commits ([`RangeMap::get`](crate::RangeMap::get) waits for that).
    Locked,
    /// The entry's reader count is at its limit (about 2^30 concurrent guards).
    Limit,
}

impl fmt::Display for TryGetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryGetError::Vacant => "no entry holds the key",
            TryGetError::Locked => "the entry holding the key is locked by a writer session",
            TryGetError::Limit => "the entry holding the key has the maximum number of readers",
        })
    }
}

impl std::error::Error for TryGetError {}

/// Why an insertion was refused.
///
/// ```
/// use rcu_rangemap::{InsertErrorKind, RangeMap};
///
/// let map = RangeMap::<u32, ()>::new();
/// let mut w = map.write();
/// assert_eq!(w.try_insert(5..5, ()).unwrap_err().kind(), &InsertErrorKind::InvalidRange);
/// w.try_insert(0..10, ()).unwrap();
/// let err = w.try_insert(8..12, ()).unwrap_err();
/// assert_eq!(err.kind(), &InsertErrorKind::Occupied { existing: 0..10 });
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InsertErrorKind<K> {
    /// The range is empty or reversed (`start >= end`).
    InvalidRange,
    /// Some key of the range is taken; `existing` is the first entry in the way.
    Occupied {
        /// The range of the first overlapping entry.
        existing: Range<K>,
    },
}

/// A refused [`Writer::try_insert`](crate::Writer::try_insert): why, and the value handed
/// back.
///
/// ```
/// use rcu_rangemap::{InsertErrorKind, RangeMap};
///
/// let map = RangeMap::<u32, String>::new();
/// let mut w = map.write();
/// w.try_insert(10..20, "a".to_string()).unwrap();
/// let err = w.try_insert(15..30, "b".to_string()).unwrap_err();
/// assert_eq!(err.kind(), &InsertErrorKind::Occupied { existing: 10..20 });
/// assert_eq!(err.into_value(), "b");
/// ```
pub struct InsertError<K, V> {
    kind: InsertErrorKind<K>,
    range: Range<K>,
    value: V,
}

impl<K: Key, V> InsertError<K, V> {
    pub(crate) fn new(kind: InsertErrorKind<K>, range: Range<K>, value: V) -> Self {
        InsertError { kind, range, value }
    }

    /// Why the insertion was refused.
    ///
    /// ```
    /// use rcu_rangemap::{InsertErrorKind, RangeMap};
    ///
    /// let map = RangeMap::<u32, ()>::new();
    /// let mut w = map.write();
    /// let err = w.try_insert(9..3, ()).unwrap_err();
    /// assert_eq!(err.kind(), &InsertErrorKind::InvalidRange);
    /// ```
    pub fn kind(&self) -> &InsertErrorKind<K> {
        &self.kind
    }

    /// The range that was asked for.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, ()>::new();
    /// let mut w = map.write();
    /// w.insert(0..10, ());
    /// assert_eq!(w.try_insert(5..15, ()).unwrap_err().range(), 5..15);
    /// ```
    pub fn range(&self) -> Range<K> {
        self.range.clone()
    }

    /// The value, handed back unchanged.
    ///
    /// ```
    /// use rcu_rangemap::RangeMap;
    ///
    /// let map = RangeMap::<u32, Vec<u8>>::new();
    /// let mut w = map.write();
    /// w.insert(0..10, vec![1]);
    /// let back = w.try_insert(0..1, vec![2, 3]).unwrap_err().into_value();
    /// assert_eq!(back, [2, 3]); // nothing is lost on a refusal
    /// ```
    pub fn into_value(self) -> V {
        self.value
    }
}

impl<K: Key, V> fmt::Debug for InsertError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertError")
            .field("kind", &self.kind)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl<K: Key, V> fmt::Display for InsertError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            InsertErrorKind::InvalidRange => write!(
                f,
                "cannot insert {:?}: a range must have start < end",
                self.range
            ),
            InsertErrorKind::Occupied { existing } => write!(
                f,
                "cannot insert {:?}: it overlaps the existing entry {:?}",
                self.range, existing
            ),
        }
    }
}

impl<K: Key, V> std::error::Error for InsertError<K, V> {}
