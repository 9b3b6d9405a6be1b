//! Values of odd sizes and alignments (a ZST, one byte, 4,095 and 4,097 bytes, a 4-KiB
//! aligned one) through every path that hands a block back or moves a value: overwrites
//! that split (clones), removals, the put-back (a range removed and inserted again in one
//! session), `clone`, `shrink_to_fit`, a leaked `Writer`, readers on other threads, and the
//! map's drop on a thread other than the one that built it.
//!
//! Every value carries its serial in its bytes and a pattern derived from it over the rest:
//! a block handed out twice, or reused while a value still lived in it, shows as a torn
//! pattern (checked on every read and every drop); each serial's drops are counted, so a
//! double drop panics where it happens and a leak shows at the end.

use rcu_rangemap::{EpochPin, RangeMap};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

/// Sizes scaled down under Miri.
const SMALL: bool = cfg!(miri);

/// One drop table per value type (tests run in parallel threads).
struct Table {
    created: AtomicUsize,
    /// Drops per serial (serials wrap past the table; only the tests' counts matter).
    per: Vec<AtomicU8>,
}

impl Table {
    const fn new() -> Self {
        Table {
            created: AtomicUsize::new(0),
            per: Vec::new(),
        }
    }
}

/// Values that know their serial and check their own bytes.
trait Probe: Clone + Send + Sync + 'static {
    fn table() -> &'static Mutex<Table>;
    fn make(serial: u32) -> Self;
    fn serial(&self) -> u32;
    /// Panics if the value's bytes are not the ones `make` wrote for its serial.
    fn check(&self);

    fn fresh() -> Self {
        let mut t = Self::table().lock().unwrap_or_else(|e| e.into_inner());
        let s = t.created.fetch_add(1, SeqCst);
        t.per.push(AtomicU8::new(0));
        Self::make(s as u32)
    }
    fn dropped(&self) {
        self.check();
        let t = Self::table().lock().unwrap_or_else(|e| e.into_inner());
        let n = t.per[self.serial() as usize].fetch_add(1, SeqCst);
        assert_eq!(n, 0, "value #{} dropped twice", self.serial());
    }
    /// Serials created and not dropped.
    fn live() -> Vec<u32> {
        let t = Self::table().lock().unwrap_or_else(|e| e.into_inner());
        (0..t.per.len())
            .filter(|&i| t.per[i].load(SeqCst) == 0)
            .map(|i| i as u32)
            .collect()
    }
}

/// A value type of `$n` bytes of payload after a `u32` serial, aligned to `$align`.
macro_rules! bytes_value {
    ($name:ident, $n:expr, $align:literal) => {
        #[repr(C, align($align))]
        struct $name {
            serial: [u8; 4],
            bytes: [u8; $n],
        }
        impl Probe for $name {
            fn table() -> &'static Mutex<Table> {
                static T: Mutex<Table> = Mutex::new(Table::new());
                &T
            }
            fn make(serial: u32) -> Self {
                // One fill (cheap under Miri), and the last byte told apart.
                let mut bytes = [serial as u8; $n];
                bytes[$n - 1] = !(serial as u8);
                $name {
                    serial: serial.to_le_bytes(),
                    bytes,
                }
            }
            fn serial(&self) -> u32 {
                u32::from_le_bytes(self.serial)
            }
            fn check(&self) {
                assert_eq!(
                    self as *const Self as usize % core::mem::align_of::<Self>(),
                    0,
                    "a misaligned value"
                );
                // Every byte natively; under Miri a sample (the bytes of a block overlap
                // in whole runs, and Miri reads the rest as it moves values).
                let step = if SMALL { 61 } else { 1 };
                let last = core::iter::once(($n - 1, &self.bytes[$n - 1]));
                for (i, &b) in self.bytes.iter().enumerate().step_by(step).chain(last) {
                    assert_eq!(
                        b,
                        if i == $n - 1 {
                            !(self.serial() as u8)
                        } else {
                            self.serial() as u8
                        },
                        "value #{} torn at byte {i}",
                        self.serial()
                    );
                }
            }
        }
        impl Clone for $name {
            fn clone(&self) -> Self {
                self.check();
                Self::fresh()
            }
        }
        impl Drop for $name {
            fn drop(&mut self) {
                self.dropped();
            }
        }
    };
}

// 4,095 bytes, alignment 1 (an entry of 16 + 4,095, padded to 4,112).
bytes_value!(Odd4095, 4091, 1);
// The same, for the readers' test (each type's drop table serves one test).
bytes_value!(Torn4095, 4091, 1);
// 4,097 bytes, alignment 1.
bytes_value!(Odd4097, 4093, 1);
// One page, aligned to a page: entries of 8 KiB at 4-KiB alignment.
bytes_value!(Page, 4092, 4096);
// Seven bytes, alignment 1.
bytes_value!(Seven, 3, 1);

const _: () = assert!(core::mem::size_of::<Odd4095>() == 4095);
const _: () = assert!(core::mem::size_of::<Odd4097>() == 4097);
const _: () = assert!(core::mem::size_of::<Page>() == 4096);
const _: () = assert!(core::mem::size_of::<Seven>() == 7);

/// One byte: its serial modulo 256, so the drop table counts serials mod 256 as one (a
/// double drop still shows in the final count).
#[derive(Debug)]
struct One(u8);

impl Probe for One {
    fn table() -> &'static Mutex<Table> {
        static T: Mutex<Table> = Mutex::new(Table::new());
        &T
    }
    fn make(serial: u32) -> Self {
        One(serial as u8)
    }
    fn serial(&self) -> u32 {
        u32::from(self.0)
    }
    fn check(&self) {}
    fn fresh() -> Self {
        ONE_LIVE.fetch_add(1, SeqCst);
        let t = Self::table().lock().unwrap_or_else(|e| e.into_inner());
        let s = t.created.fetch_add(1, SeqCst);
        One(s as u8)
    }
    fn dropped(&self) {
        let was = ONE_LIVE.fetch_sub(1, SeqCst);
        assert!(was > 0, "more drops than values");
    }
    fn live() -> Vec<u32> {
        vec![0; ONE_LIVE.load(SeqCst)]
    }
}
static ONE_LIVE: AtomicUsize = AtomicUsize::new(0);
impl Clone for One {
    fn clone(&self) -> Self {
        Self::fresh()
    }
}
impl Drop for One {
    fn drop(&mut self) {
        self.dropped();
    }
}

/// A zero-sized value: only counted.
struct Zst;
static ZST_LIVE: AtomicUsize = AtomicUsize::new(0);
impl Probe for Zst {
    fn table() -> &'static Mutex<Table> {
        static T: Mutex<Table> = Mutex::new(Table::new());
        &T
    }
    fn make(_: u32) -> Self {
        Zst
    }
    fn serial(&self) -> u32 {
        0
    }
    fn check(&self) {}
    fn fresh() -> Self {
        ZST_LIVE.fetch_add(1, SeqCst);
        Zst
    }
    fn dropped(&self) {
        let was = ZST_LIVE.fetch_sub(1, SeqCst);
        assert!(was > 0, "more drops than values");
    }
    fn live() -> Vec<u32> {
        vec![0; ZST_LIVE.load(SeqCst)]
    }
}
impl Clone for Zst {
    fn clone(&self) -> Self {
        Self::fresh()
    }
}
impl Drop for Zst {
    fn drop(&mut self) {
        self.dropped();
    }
}

/// Every value readable in `map` is intact; returns how many.
fn check_all<V: Probe>(map: &RangeMap<u32, V>) -> usize {
    let mut n = 0;
    for g in map.iter() {
        g.check();
        n += 1;
    }
    assert_eq!(n, map.len());
    n
}

/// The whole workout for one value type.
fn exercise<V: Probe>() {
    // Under Miri fewer of the large ones: it copies them byte by byte.
    let big = core::mem::size_of::<V>() > 64;
    let n: u32 = match (SMALL, big) {
        (true, true) => 16,
        (true, false) => 24,
        _ => 600,
    };
    let map = RangeMap::<u32, V>::new();
    {
        let mut w = map.write();
        for i in 0..n {
            w.try_insert(i * 10..i * 10 + 5, V::fresh())
                .unwrap_or_else(|_| panic!("free"));
        }
    }
    assert_eq!(check_all(&map), n as usize);

    // Readers on another thread, each batch under one pin, while sessions overwrite
    // (splitting: clones), remove, and put ranges back (the entry kept, refilled).
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut pin = EpochPin::new();
            let mut k = 0u32;
            // Under Miri, a bounded number of turns: its scheduler would otherwise give
            // this loop most of the steps.
            let mut turns = if SMALL { 4 } else { u32::MAX };
            while !stop.load(SeqCst) && turns > 0 {
                turns -= 1;
                for _ in 0..16 {
                    if let Some(g) = map.get_pinned(k % (n * 10), &pin) {
                        g.check();
                    }
                    k = k.wrapping_add(7);
                }
                pin.repin();
                if let Some(g) = map.iter().next() {
                    g.check();
                }
            }
        });
        let rounds = if SMALL { 6 } else { 300 };
        for r in 0..rounds {
            let a = (r * 37) % n;
            let mut w = map.write();
            match r % 5 {
                0 => {
                    // Overwrite across two entries: one split at each end.
                    for (_, v) in w.insert(a * 10 + 2..a * 10 + 13, V::fresh()) {
                        v.check();
                    }
                }
                1 => {
                    for (_, v) in w.remove(a * 10 + 1..a * 10 + 3) {
                        v.check();
                    }
                }
                2 => {
                    // The put-back: same range, new value (the old entry is kept).
                    if let Some((range, v)) = w.remove_entry(a * 10) {
                        v.check();
                        drop(v);
                        w.try_insert(range, V::fresh())
                            .unwrap_or_else(|_| panic!("free again"));
                    }
                }
                3 => {
                    // An overwrite of exactly one entry's range: also kept.
                    if let Some((range, _)) = w.get(a * 10 + 4) {
                        let range = range.clone();
                        drop(w.insert(range, V::fresh()));
                    }
                }
                _ => {
                    if let Some((_, v)) = w.get_mut(a * 10) {
                        v.check();
                        *v = V::fresh();
                    }
                }
            }
            w.commit();
        }
        stop.store(true, SeqCst);
    });
    let kept = check_all(&map);

    // A clone, dropped; then the original shrinks.
    let copy = map.clone();
    assert_eq!(check_all(&copy), kept);
    drop(copy);
    drop(map.write().remove(0..(n * 10) * 3 / 4));
    map.shrink_to_fit();
    let kept = check_all(&map);

    // A leaked session: one range removed whole, one trimmed, one put back, one new.
    let leaked = {
        let mut w = map.write();
        let hi = n * 10;
        let mut gone = Vec::new();
        if let Some((_, v)) = w.remove_entry(hi - 10) {
            gone.push(v);
        }
        for (_, v) in w.remove(hi - 19..hi - 17) {
            gone.push(v);
        }
        if let Some((range, v)) = w.remove_entry(hi - 30) {
            gone.push(v);
            w.try_insert(range, V::fresh())
                .unwrap_or_else(|_| panic!("free"));
        }
        w.try_insert(hi + 100..hi + 200, V::fresh())
            .unwrap_or_else(|_| panic!("free"));
        std::mem::forget(w);
        for v in &gone {
            v.check();
        }
        gone
    };
    assert!(kept >= 3);
    drop(leaked);

    // Dropped on another thread (the map is `Send`), while this one holds a pin.
    let pin = EpochPin::new();
    std::thread::spawn(move || drop(map)).join().unwrap();
    drop(pin);
}

/// What the leaked session's own unpublished entries hold is leaked with it: the split
/// entry's two pieces outside the removed range (its original value and a clone), the
/// put-back value and the new range's; everything else was dropped exactly once (a
/// second drop panics where it happens).
fn finish<V: Probe>() {
    let live = V::live();
    assert_eq!(live.len(), 4, "values not dropped: {live:?}");
}

#[test]
fn zero_sized_values() {
    exercise::<Zst>();
    finish::<Zst>();
}

#[test]
fn one_byte_values() {
    exercise::<One>();
    finish::<One>();
}

#[test]
fn seven_byte_values() {
    exercise::<Seven>();
    finish::<Seven>();
}

#[test]
fn values_of_4095_bytes() {
    exercise::<Odd4095>();
    finish::<Odd4095>();
}

#[test]
fn values_of_4097_bytes() {
    exercise::<Odd4097>();
    finish::<Odd4097>();
}

#[test]
fn page_aligned_values() {
    exercise::<Page>();
    finish::<Page>();
}

/// Readers on two threads check every byte of 4,095-byte values they hold while the writer
/// puts the same ranges back again and again (the entry kept and refilled in place, the
/// new entry's block reused at once) and rewrites values with `get_mut`: a read that
/// overlapped a refill, or a guard on a block reused meanwhile, shows as a torn value.
#[test]
fn readers_never_see_a_put_back_half_written() {
    let n: u32 = if SMALL { 4 } else { 64 };
    let sessions = if SMALL { 8 } else { 4_000 };
    let map = RangeMap::<u32, Torn4095>::new();
    {
        let mut w = map.write();
        for i in 0..n {
            w.try_insert(i * 2..i * 2 + 1, Torn4095::fresh())
                .unwrap_or_else(|_| panic!("free"));
        }
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let (map, stop) = (&map, &stop);
            s.spawn(move || {
                let mut k = t;
                let mut turns = if SMALL { 16 } else { u32::MAX };
                while !stop.load(SeqCst) && turns > 0 {
                    turns -= 1;
                    let g = map.get((k % n) * 2).expect("always mapped");
                    g.check();
                    // Hold it a moment: the writer must wait for it, not refill under it.
                    std::hint::black_box(&*g);
                    g.check();
                    drop(g);
                    k = k.wrapping_add(3);
                }
            });
        }
        for r in 0..sessions {
            let k = (r % n) * 2;
            let mut w = map.write();
            if r % 3 == 0 {
                *w.get_mut(k).unwrap().1 = Torn4095::fresh();
            } else {
                let (range, v) = w.remove_entry(k).unwrap();
                v.check();
                drop(v);
                w.try_insert(range, Torn4095::fresh())
                    .unwrap_or_else(|_| panic!("free"));
            }
            w.commit();
        }
        stop.store(true, SeqCst);
    });
    assert_eq!(check_all(&map), n as usize);
}
