//! Regression tests for what the fuzz targets under `fuzz/` found, one per finding, each
//! the minimized input written out as plain API calls.

use rcu_rangemap::RangeMap;

/// F1 (fuzz target `ops`): `Writer::overlapping` with an empty or reversed range yielded
/// the entries spanning it (`hi > start && lo < end` holds for an entry around a reversed
/// range), while `RangeMap::overlapping` yields nothing for such a range.
/// Fixed in bf159d4 (every tree walk treats an empty or reversed range as overlapping
/// nothing).
#[test]
fn f1_writer_overlapping_empty_or_reversed_range_yields_nothing() {
    let map = RangeMap::<u16, u32>::new();
    let mut w = map.write();
    w.insert(3..32755, 1);
    #[allow(clippy::reversed_empty_ranges)]
    let reversed: Vec<_> = w.overlapping(768..115).collect();
    assert!(reversed.is_empty(), "reversed range: {reversed:?}");
    let empty: Vec<_> = w.overlapping(177..177).collect();
    assert!(empty.is_empty(), "empty range: {empty:?}");
    w.commit();
    // The published map's answer, for comparison.
    #[allow(clippy::reversed_empty_ranges)]
    let published = map.overlapping(768..115).count();
    assert_eq!(published, 0);
    assert_eq!(map.overlapping(177..177).count(), 0);
}
