//! `allocator`: allocate / reserve / free / lookup sequences on
//! `rcu_rangemap::allocator::AddressAllocator` against a reference allocator.
//!
//! The reference is the model of `fuzz_support` (a `BTreeMap` of allocations) plus the
//! allocator's documented rules, applied in its documented order: size, alignment, then
//! for exact placement misalignment, the space bounds and overlap, for lowest/highest the
//! first fit from the start/end of the space (found in the model's gaps, and for `u8` also
//! by brute force). Every error is compared exactly (`AllocError` is `PartialEq`), every
//! success by range and value, and `make` must run exactly once, with the allocated
//! range, and only on success. Keys are `u8` or clustered `u16` (see `FKey::decode`), so
//! spaces ending at `K::MAX`, overflowing `start + size`, and huge alignments are common.

#![no_main]

use std::cell::Cell;
use std::ops::Range;

use arbitrary::Arbitrary;
use fuzz_support::{key, kmax, live, narrow, wide, Counted, FKey, Model};
use libfuzzer_sys::fuzz_target;
use rcu_rangemap::allocator::{AddressAllocator, AllocError, Placement};
use rcu_rangemap::{Fit, TryGetError};

const MAX_OPS: usize = 256;

#[derive(Arbitrary, Debug)]
struct Input {
    wide: bool,
    space: (u16, u16),
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Place {
    Lowest,
    Highest,
    Exact(u16),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Allocate {
        size: u16,
        align: u8,
        place: Place,
        tag: u16,
    },
    /// `allocate` (value `V::default()`).
    AllocateDefault {
        size: u16,
        align: u8,
        place: Place,
    },
    Reserve {
        a: u16,
        b: u16,
        tag: u16,
    },
    Free {
        a: u16,
        b: u16,
    },
    /// Free the n-th live allocation by its exact range (so frees often succeed).
    FreeNth {
        n: u8,
    },
    FreeAt {
        k: u16,
    },
    Lookup {
        k: u16,
    },
    TryLookup {
        k: u16,
    },
    Update {
        k: u16,
        add: u16,
    },
    Iter,
    FreeRanges,
    /// `as_map().find_gap` over a sub-window, as an allocator user would probe.
    Probe {
        w0: u16,
        w1: u16,
        size: u16,
        align: u8,
        highest: bool,
    },
}

type V = Counted<u32>;

/// An alignment from raw input: mostly a power of two (up to `K::MAX`'s top bit), sometimes
/// an arbitrary value (zero and non-powers of two included) to exercise `InvalidAlign`.
fn decode_align<K: FKey>(raw: u8) -> K {
    if raw & 0x80 == 0 {
        key::<K>(1u128 << (u32::from(raw) % K::BITS))
    } else {
        K::decode_size(u16::from(raw & 0x7f) * 0x203)
    }
}

struct Ref<K: FKey> {
    space: Range<u128>,
    model: Model<u32>,
    _k: std::marker::PhantomData<K>,
}

impl<K: FKey> Ref<K> {
    fn err_outside(&self, start: u128, size: u128) -> AllocError<K> {
        AllocError::OutsideSpace {
            start: key(start),
            size: key(size),
        }
    }

    fn overlap(&self, r: &Range<u128>) -> Option<AllocError<K>> {
        self.model
            .overlapping(r.start, r.end)
            .first()
            .map(|(existing, _)| AllocError::Overlap {
                requested: narrow(r),
                existing: narrow(existing),
            })
    }

    /// The documented outcome of `allocate(size, align, place)`.
    fn allocate(
        &self,
        size: u128,
        align: u128,
        place: &Placement<K>,
    ) -> Result<Range<u128>, AllocError<K>> {
        if size == 0 {
            return Err(AllocError::InvalidSize);
        }
        if !align.is_power_of_two() {
            return Err(AllocError::InvalidAlign { align: key(align) });
        }
        match *place {
            Placement::Exact(start) => {
                let start = start.to_u128();
                if start % align != 0 {
                    return Err(AllocError::Misaligned {
                        start: key(start),
                        align: key(align),
                    });
                }
                let end = start + size;
                if end > kmax::<K>() || start < self.space.start || end > self.space.end {
                    return Err(self.err_outside(start, size));
                }
                let r = start..end;
                match self.overlap(&r) {
                    Some(e) => Err(e),
                    None => Ok(r),
                }
            }
            Placement::Lowest | Placement::Highest => {
                let highest = matches!(place, Placement::Highest);
                let (w0, w1) = (self.space.start, self.space.end);
                let got = self.model.find_gap(w0, w1, size, align, highest);
                if K::BITS == 8 {
                    let brute = self.model.find_gap_brute(w0, w1, size, align, highest);
                    assert_eq!(got, brute, "harness bug: model find_gap vs brute force");
                }
                got.ok_or(AllocError::OutOfSpace {
                    size: key(size),
                    align: key(align),
                })
            }
        }
    }
}

fuzz_target!(|input: Input| {
    if input.wide {
        run::<u16>(&input);
    } else {
        run::<u8>(&input);
    }
    assert_eq!(live(), 0, "values leaked or dropped twice");
});

fn run<K: FKey>(input: &Input) {
    let (s0, s1) = (K::decode(input.space.0), K::decode(input.space.1));
    let a = match AddressAllocator::<K, V>::new(s0..s1) {
        Ok(a) => {
            assert!(s0 < s1, "new({s0:?}..{s1:?}) accepted an empty space");
            a
        }
        Err(e) => {
            assert!(s0 >= s1, "new({s0:?}..{s1:?}) refused: {e}");
            assert_eq!(e, AllocError::InvalidSpace { space: s0..s1 });
            return;
        }
    };
    assert_eq!(a.space(), s0..s1);
    let mut r = Ref::<K> {
        space: s0.to_u128()..s1.to_u128(),
        model: Model::new(kmax::<K>()),
        _k: std::marker::PhantomData,
    };
    for op in input.ops.iter().take(MAX_OPS) {
        apply(&a, &mut r, op);
        assert_eq!(a.len(), r.model.len(), "len after {op:?}");
        assert_eq!(a.is_empty(), r.model.is_empty(), "is_empty after {op:?}");
    }
    // Everything, at the end.
    let got: Vec<_> = a.iter().map(|g| (wide(&g.range()), g.0)).collect();
    assert_eq!(got, r.model.entries(), "iter at the end");
    drop(a);
}

fn apply<K: FKey>(a: &AddressAllocator<K, V>, r: &mut Ref<K>, op: &Op) {
    match *op {
        Op::Allocate {
            size,
            align,
            ref place,
            tag,
        } => allocate(a, r, size, align, place, Some(u32::from(tag))),
        Op::AllocateDefault {
            size,
            align,
            ref place,
        } => allocate(a, r, size, align, place, None),
        Op::Reserve { a: s, b: e, tag } => {
            let (s, e) = (K::decode(s), K::decode(e));
            let (s128, e128) = (s.to_u128(), e.to_u128());
            let want = if s128 >= e128 {
                Err(AllocError::InvalidRange { range: s..e })
            } else if s128 < r.space.start || e128 > r.space.end {
                Err(r.err_outside(s128, e128 - s128))
            } else if let Some(err) = r.overlap(&(s128..e128)) {
                Err(err)
            } else {
                Ok(())
            };
            let calls = Cell::new(0);
            let got = a.reserve_with(s..e, |range| {
                calls.set(calls.get() + 1);
                assert_eq!(range, s..e, "reserve_with: make got another range");
                Counted::new(u32::from(tag))
            });
            assert_eq!(got, want, "reserve_with({s:?}..{e:?})");
            assert_eq!(
                calls.get(),
                usize::from(want.is_ok()),
                "reserve_with: make calls"
            );
            if want.is_ok() {
                r.model.insert_free(s128..e128, u32::from(tag));
            }
        }
        Op::Free { a: s, b: e } => {
            let (s, e) = (K::decode(s), K::decode(e));
            free(a, r, s..e);
        }
        Op::FreeNth { n } => {
            if r.model.is_empty() {
                return;
            }
            let (range, _) = r.model.entries()[usize::from(n) % r.model.len()].clone();
            free(a, r, narrow(&range));
        }
        Op::FreeAt { k } => {
            let k = K::decode(k);
            let want = match r.model.at(k.to_u128()) {
                Some((range, v)) => Ok((narrow::<K>(&range), *v)),
                None => Err(AllocError::NotAllocated { at: k }),
            };
            let got = a.free_at(k).map(|(range, v)| (range, v.0));
            assert_eq!(got, want, "free_at({k:?})");
            if let Ok((range, _)) = want {
                r.model.m.remove(&range.start.to_u128());
            }
        }
        Op::Lookup { k } => {
            let k = K::decode(k);
            let want = r.model.at(k.to_u128()).map(|(range, v)| (range, *v));
            let got = a.lookup(k).map(|g| (wide(&g.range()), g.0));
            assert_eq!(got, want, "lookup({k:?})");
        }
        Op::TryLookup { k } => {
            let k = K::decode(k);
            let want = r
                .model
                .at(k.to_u128())
                .map(|(range, v)| (range, *v))
                .ok_or(TryGetError::Vacant);
            let got = a.try_lookup(k).map(|g| (wide(&g.range()), g.0));
            assert_eq!(got, want, "try_lookup({k:?})");
        }
        Op::Update { k, add } => {
            let k = K::decode(k);
            let want = r.model.at_mut(k.to_u128()).map(|(_, v)| {
                *v = v.wrapping_add(u32::from(add));
                *v
            });
            let got = a.update(k, |v| {
                v.0 = v.0.wrapping_add(u32::from(add));
                v.0
            });
            assert_eq!(got, want, "update({k:?})");
        }
        Op::Iter => {
            let got: Vec<_> = a.iter().map(|g| (wide(&g.range()), g.0)).collect();
            assert_eq!(got, r.model.entries(), "iter");
        }
        Op::FreeRanges => {
            let want = r.model.gaps(r.space.start, r.space.end);
            let got: Vec<_> = a.free_ranges().map(|g| wide(&g)).collect();
            assert_eq!(got, want, "free_ranges");
            let total: u128 = want.iter().map(|g| g.end - g.start).sum();
            assert_eq!(a.free_space().to_u128(), total, "free_space");
        }
        Op::Probe {
            w0,
            w1,
            size,
            align,
            highest,
        } => {
            let (w0, w1) = (K::decode(w0), K::decode(w1));
            let size = K::decode_size(size).to_u128().max(1);
            let align = fuzz_support::decode_align::<K>(align).to_u128();
            let fit = if highest { Fit::Highest } else { Fit::Lowest };
            let want = r
                .model
                .find_gap(w0.to_u128(), w1.to_u128(), size, align, highest);
            let got = a
                .as_map()
                .find_gap(w0..w1, key(size), key(align), fit)
                .map(|g| wide(&g));
            assert_eq!(
                got, want,
                "find_gap({w0:?}..{w1:?}, {size}, {align}, {fit:?})"
            );
        }
    }
}

fn allocate<K: FKey>(
    a: &AddressAllocator<K, V>,
    r: &mut Ref<K>,
    size: u16,
    align: u8,
    place: &Place,
    tag: Option<u32>,
) {
    let size: K = K::decode_size(size);
    let align: K = decode_align(align);
    let place = match *place {
        Place::Lowest => Placement::Lowest,
        Place::Highest => Placement::Highest,
        Place::Exact(s) => Placement::Exact(K::decode(s)),
    };
    let want = r.allocate(size.to_u128(), align.to_u128(), &place);
    let calls = Cell::new(0);
    let got = match tag {
        Some(tag) => a.allocate_with(size, align, place, |range| {
            calls.set(calls.get() + 1);
            if let Ok(w) = &want {
                assert_eq!(wide(&range), *w, "allocate_with: make got another range");
            }
            Counted::new(tag)
        }),
        None => a.allocate(size, align, place),
    };
    let got = got.map(|g| wide(&g));
    assert_eq!(got, want, "allocate({size:?}, {align:?}, {place:?})");
    if tag.is_some() {
        assert_eq!(
            calls.get(),
            usize::from(want.is_ok()),
            "allocate_with: make calls"
        );
    }
    if let Ok(range) = want {
        r.model.insert_free(range, tag.unwrap_or_default());
    }
}

fn free<K: FKey>(a: &AddressAllocator<K, V>, r: &mut Ref<K>, range: Range<K>) {
    let (s, e) = (range.start.to_u128(), range.end.to_u128());
    let want = if s >= e {
        Err(AllocError::InvalidRange {
            range: range.clone(),
        })
    } else {
        match r.model.at(s) {
            None => Err(AllocError::NotAllocated { at: range.start }),
            Some((allocated, _)) if allocated != (s..e) => Err(AllocError::RangeMismatch {
                requested: range.clone(),
                allocated: narrow(&allocated),
            }),
            Some((_, v)) => Ok(*v),
        }
    };
    let got = a.free(range.clone()).map(|v| v.0);
    assert_eq!(got, want, "free({range:?})");
    if want.is_ok() {
        r.model.m.remove(&s);
    }
}
