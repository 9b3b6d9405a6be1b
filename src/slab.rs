//! A map's own memory for one block layout: chunks carved into blocks, the lowest free
//! block handed out first.
//!
//! Owns: the chunks a map's nodes or entries of one layout live in, and which of their
//! blocks are free. Must not: know what a block holds, or be reached by more than one thread
//! at a time (the writer session that holds the map's writers' lock owns it, through
//! [`Blocks`](crate::reclaim::Blocks)).
//!
//! # Why a slab, and why lowest first
//!
//! Copy-on-write puts every changed path in a new block, so the live nodes and entries go
//! wherever the free blocks are. When readers hold grace periods open (two readers beside a
//! writer on two cores), many blocks wait out a grace period at any moment, and the live
//! ones are a minority of the blocks in circulation. Handed out LIFO, as malloc or a free
//! list does, they spread thinly over all of them: a 100k map churned so had its leaves on
//! 5,555 pages against 1,799 fresh, and its lookups ran at 0.62 – 0.94 of a fresh map's in
//! the same process (benches/analysis.md, "The slab again"). Handing out the lowest free
//! block first makes the live blocks settle into the lowest chunks, and one chunk stream
//! per layout keeps the small entries off the nodes' pages; neither alone came near.
//!
//! The lowest-first bookkeeping costs the writer a lookup and a bitmap update per block,
//! about 15 – 20% of a single-threaded writer's throughput (W3). So it runs only while the
//! map is *packing*: once its batches of retired blocks were slow to come back, which is
//! when blocks spread, and for a while after (`reclaim::Blocks::packing`). Otherwise a
//! freed block goes on a LIFO *hot* stack and is handed out again first, as warm as it
//! gets.
//!
//! # Layout of a chunk
//!
//! A chunk is one allocation aligned to its size, a power of two: the first 4 KiB (or
//! enough for four blocks), each next one twice the last, up to 64 KiB (unless a block
//! needs more), so that a small map stays small. A block's chunk is its address rounded
//! down to one of those sizes; blocks lie at `0`, `size`, `2 * size`, … Block `k` of chunk
//! `c` has the number `c << shift | k`, and one bit per number says whether it is free,
//! with two levels of summary bits above (a bit per word below that has one set). So the
//! lowest free block is three `trailing_zeros` away. A put finds its chunk's index in a
//! small hash table keyed by the chunk's address and sets a bit or three. Neither reads
//! or writes the block itself.

use core::alloc::Layout;
use core::ptr::NonNull;

/// Bytes of a full-sized chunk, unless a block needs more (then the next power of two that
/// holds four).
const CHUNK: usize = 1 << 16;
/// Bytes of the first chunk, unless a block needs more (then the next power of two that
/// holds four); each next one is twice the last, up to the full size.
const FIRST_CHUNK: usize = 1 << 12;
/// Bytes of the largest chunk a slab allocates: the largest power of two that is both a
/// valid [`Layout`] size (at most `isize::MAX` bytes: 1 GiB on 32-bit targets) and fits
/// 32 bits, as the reciprocal division of block offsets needs (`Slab::recip`: 2 GiB). So
/// 2 GiB on 64-bit targets and 1 GiB on 32-bit ones.
const MAX_CHUNK: usize = {
    let layout_max = isize::MAX as usize / 2 + 1;
    let offset_max = 1 << 31;
    if layout_max < offset_max {
        layout_max
    } else {
        offset_max
    }
};
/// The largest block a slab takes: four of them fill the largest chunk ([`MAX_CHUNK`]), so
/// 512 MiB on 64-bit targets and 256 MiB on 32-bit ones. `RangeMap::new` checks its entry
/// size against it at compile time.
pub(crate) const MAX_BLOCK: usize = MAX_CHUNK / 4;
/// Most blocks the hot stack holds; beyond it they go into the bitmap, where a trim can
/// find the chunks they free (a shrinking map's memory is not held on the stack).
const HOT_CAP: usize = 1 << 15;

/// One chunk's bookkeeping.
struct Chunk {
    /// The allocation, or `None` once the chunk went back to the allocator.
    base: Option<NonNull<u8>>,
    /// Whether a block was taken from the chunk's bitmap since the last trim.
    taken: bool,
}

/// Bit `i % 64` of word `i / 64`.
#[inline]
fn bit(i: usize) -> (usize, u64) {
    (i / 64, 1 << (i % 64))
}

/// The blocks of one layout that a map's nodes or entries are allocated from.
///
/// Invariants (every `unsafe` in this module rests on them):
/// - each `chunks[c].base` that is `Some` is an allocation of `chunk_size(c)` bytes aligned
///   to that size, by the global allocator, owned by the slab, and `table` holds
///   `(base, c)` (see [`Slab::locate`]);
/// - block `k < per_chunk(c)` of chunk `c` lies at offset `k * size`, and is free
///   exactly when bit `c << shift | k` of `free` is set; otherwise it is handed out and the
///   slab does not touch it, or it is on `hot` (free, its bit clear), once. No other bit of
///   `free` is set, and none at all for a chunk whose `base` is `None` (its index is then
///   in `vacant`), which has no block on `hot` either;
/// - bit `j` of `words` is set exactly when word `j` of `free` is non-zero, and bit `m` of
///   `groups` exactly when word `m` of `words` is; no word of `groups` below `hint` is
///   non-zero.
///
/// (`free_blocks` and `capacity` only count: no safety argument rests on them.)
pub(crate) struct Slab {
    /// The block layout: its size is a multiple of its alignment.
    layout: Layout,
    /// Bytes of a full-sized chunk (a power of two, and its alignment; at most
    /// [`MAX_CHUNK`], which makes [`Slab::chunk_layout`] valid for every chunk).
    chunk: usize,
    /// Bytes of chunk 0; chunk `c` has `first_chunk << c`, up to `chunk`.
    first_chunk: usize,
    /// Block numbers per chunk are `1 << shift` (at least 64, so a word of `free` never
    /// spans two chunks), for chunks of every size.
    shift: u32,
    /// `ceil(2^32 / size)`: `offset * recip >> 32` is `offset / size` for the offsets of
    /// blocks (multiples of `size` below `chunk`, at most [`MAX_CHUNK`] = 2^31), without a
    /// division. (With `offset = k * size` and `e = size * recip - 2^32 < size`, the
    /// product is `k * 2^32 + k * e`, and `k * e < chunk <= 2^32`; the product itself is
    /// below 2^63, in `u64` on every target.)
    recip: u64,
    chunks: Vec<Chunk>,
    /// Open addressing by chunk address (`base / first_chunk`, modulo the length, a power
    /// of two at least twice the chunks), linear probing: each live chunk's base and
    /// index, one load per put into a full-sized chunk; `(0, _)` is an empty slot.
    table: Vec<(usize, u32)>,
    /// Free blocks kept out of the bitmap, most recently put last, handed out before any
    /// other (see [`Slab::put`]); at most [`HOT_CAP`].
    hot: Vec<NonNull<u8>>,
    /// Indexes of chunks that went back to the allocator, for reuse.
    vacant: Vec<u32>,
    free: Vec<u64>,
    words: Vec<u64>,
    groups: Vec<u64>,
    hint: usize,
    /// Bits set in `free`.
    free_blocks: usize,
    /// Blocks in the live chunks.
    capacity: usize,
}

impl Slab {
    /// An empty slab for blocks of `layout` (allocates nothing).
    pub(crate) fn new(layout: Layout) -> Self {
        let layout = layout.pad_to_align();
        // A zero-sized layout takes a block of its alignment, not of one byte: blocks lie
        // at multiples of the size, and must be aligned.
        let size = layout.size().max(layout.align());
        // Before any arithmetic on it: `4 * size` and the doublings below stay within
        // `MAX_CHUNK`, so they cannot overflow a 32-bit `usize` (a block that large takes
        // a map's compile-time check to fail first: `MAX_BLOCK`).
        assert!(
            size <= MAX_BLOCK,
            "rcu-rangemap bug: a block of {size} bytes is too large for a slab"
        );
        let mut chunk = CHUNK.max(layout.align());
        while 4 * size > chunk {
            chunk *= 2;
        }
        // A power of two below `4 * size <= 4 * MAX_BLOCK = MAX_CHUNK` doubled: at most
        // `MAX_CHUNK` (and an alignment is at most 2^29, below it on every target).
        debug_assert!(chunk <= MAX_CHUNK);
        let per_chunk = chunk / size; // in a full-sized chunk, the most of any
        let first_chunk = FIRST_CHUNK
            .max(layout.align())
            .max((4 * size).next_power_of_two())
            .min(chunk);
        Slab {
            layout: Layout::from_size_align(size, layout.align()).expect("padded layout"),
            chunk,
            first_chunk,
            shift: per_chunk.next_power_of_two().max(64).trailing_zeros(),
            recip: (1u64 << 32).div_ceil(size as u64),
            chunks: Vec::new(),
            table: Vec::new(),
            hot: Vec::new(),
            vacant: Vec::new(),
            free: Vec::new(),
            words: Vec::new(),
            groups: Vec::new(),
            hint: 0,
            free_blocks: 0,
            capacity: 0,
        }
    }

    /// Bytes of chunk `c`.
    #[inline]
    fn chunk_size(&self, c: usize) -> usize {
        // Both are powers of two: a difference of exponents, not a division (every
        // packing put asks this, through `locate`).
        let doublings = (self.chunk.trailing_zeros() - self.first_chunk.trailing_zeros()) as usize;
        if c >= doublings {
            self.chunk
        } else {
            self.first_chunk << c
        }
    }

    /// Blocks in chunk `c`.
    #[inline]
    fn per_chunk(&self, c: usize) -> usize {
        self.chunk_size(c) / self.layout.size()
    }

    /// The layout of the blocks this slab hands out (`Slab::new`'s, padded).
    #[cfg(test)]
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// The block put last while not packing, else the lowest free block, else one in a new
    /// chunk.
    #[inline]
    pub(crate) fn alloc(&mut self) -> NonNull<u8> {
        if let Some(b) = self.hot.pop() {
            // Start taking over the block the next allocation gets (a node copy is a burst
            // of stores into a cold block, often one a reader's cache still holds). Measured
            // on the free lists this stack replaces: one-op sessions at N = 10k, 2M in
            // 0.68–0.78 s against 0.71–0.78 s with a read prefetch, six alternating runs
            // beside CI; with a write prefetch, the flat-out W2 writer ÷ SkipMap's went
            // from 0.95 to 1.10 at N = 100k and from 1.18 to 1.39 at 1k (see
            // `sync::prefetch_write`).
            if let Some(next) = self.hot.last() {
                crate::sync::prefetch_write(next.as_ptr(), self.layout.size());
            }
            return b;
        }
        let i = match self.lowest() {
            Some(i) => i,
            None => self.grow(),
        };
        let mask = (1usize << self.shift) - 1;
        let (c, k) = (i >> self.shift, i & mask);
        let size = self.layout.size();
        let (free, words, groups) = (
            &mut self.free[..],
            &mut self.words[..],
            &mut self.groups[..],
        );
        let (j, b) = bit(i);
        let rest = free[j] & !b;
        free[j] = rest;
        self.free_blocks -= 1;
        if rest == 0 {
            let (m, b) = bit(j);
            words[m] &= !b;
            if words[m] == 0 {
                let (g, b) = bit(m);
                groups[g] &= !b;
            }
        }
        let chunk = &mut self.chunks[c];
        chunk.taken = true;
        let base = chunk
            .base
            .expect("a free block lies in a live chunk")
            .as_ptr();
        // Start taking over the block the next allocation gets if it is in the same word (a
        // node copy is a burst of stores into a cold block): see `sync::prefetch_write`.
        if rest != 0 {
            let next = (j * 64 + rest.trailing_zeros() as usize) & mask;
            // Only the address is formed, for a prefetch (which never faults).
            crate::sync::prefetch_write(base.wrapping_add(next * size), size);
        }
        // SAFETY: block `k` of a live chunk lies inside it (invariant), so the offset is in
        // bounds and the result is not null.
        unsafe { NonNull::new_unchecked(base.add(k * size)) }
    }

    /// Give a block back: it is free again. While `packing`, it goes into the bitmap (after
    /// the hot stack's), so that the lowest free block is handed out first; otherwise on
    /// the hot stack, to be handed out again first.
    ///
    /// # Safety
    /// `block` was handed out by this slab's [`alloc`](Self::alloc), has not been put back
    /// since, and nobody will read or write it again (it may be handed out anew).
    #[inline]
    pub(crate) unsafe fn put(&mut self, block: NonNull<u8>, packing: bool) {
        if packing || self.hot.len() >= HOT_CAP {
            if !self.hot.is_empty() {
                self.cool();
            }
            // SAFETY: caller contract.
            unsafe { self.put_lowest(block) };
        } else {
            self.hot.push(block);
        }
    }

    /// Move the hot stack's blocks into the bitmap.
    pub(crate) fn cool(&mut self) {
        let mut hot = core::mem::take(&mut self.hot);
        for b in hot.drain(..) {
            // SAFETY: invariant: a block on `hot` is free and its bit is clear, as for a
            // block handed out; moving it from `hot` to the bitmap keeps it listed once.
            unsafe { self.put_lowest(b) };
        }
        self.hot = hot;
    }

    /// Set a block's bit.
    ///
    /// # Safety
    /// As for [`put`](Self::put) (or the block is on `hot`, and was just taken off it).
    #[inline]
    unsafe fn put_lowest(&mut self, block: NonNull<u8>) {
        let addr = block.as_ptr() as usize;
        // The block lies in a live chunk of ours (caller contract).
        let (c, base) = self.locate(addr);
        let offset = addr - base;
        self.set_free((c << self.shift) | self.index_at(offset));
    }

    /// The index in its chunk of the block at `offset` from the chunk's base (a multiple of
    /// the block size below `chunk`): `offset / size`, by the reciprocal (see `recip`).
    #[inline]
    fn index_at(&self, offset: usize) -> usize {
        debug_assert_eq!(offset % self.layout.size(), 0);
        debug_assert!(offset < self.chunk);
        ((offset as u64 * self.recip) >> 32) as usize
    }

    /// The index and base of the live chunk holding `addr`: rounded down to each chunk
    /// size, the largest first, `addr` gives a base that `table` may hold, of a chunk that
    /// may hold `addr` (a smaller chunk can start where a larger one would have). Panics if
    /// there is none (a block not of this slab: a bug in this crate).
    #[inline]
    fn locate(&self, addr: usize) -> (usize, usize) {
        let mut size = self.chunk;
        loop {
            let base = addr & !(size - 1);
            if let Some(c) = self.find(base) {
                if addr - base < self.chunk_size(c) {
                    return (c, base);
                }
            }
            assert!(
                size > self.first_chunk,
                "rcu-rangemap bug: a block not of this slab"
            );
            size /= 2;
        }
    }

    /// The index of the live chunk at `base`, if there is one.
    #[inline]
    fn find(&self, base: usize) -> Option<usize> {
        let mask = self.table.len() - 1;
        let mut h = (base >> self.first_chunk.trailing_zeros()) & mask;
        loop {
            match self.table[h] {
                (b, c) if b == base => return Some(c as usize),
                (0, _) => return None,
                _ => h = (h + 1) & mask,
            }
        }
    }

    /// Rebuild `table` for the live chunks, at least twice as long as there are chunks.
    fn rehash(&mut self) {
        let len = (2 * self.chunks.len()).next_power_of_two().max(8);
        self.table.clear();
        self.table.resize(len, (0, 0));
        for c in 0..self.chunks.len() {
            if let Some(base) = self.chunks[c].base {
                self.enter(base.as_ptr() as usize, c);
            }
        }
    }

    /// Add chunk `c` at `base` to `table` (which has room).
    fn enter(&mut self, base: usize, c: usize) {
        let mask = self.table.len() - 1;
        let mut h = (base >> self.first_chunk.trailing_zeros()) & mask;
        while self.table[h].0 != 0 {
            h = (h + 1) & mask;
        }
        self.table[h] = (base, c as u32);
    }

    /// Mark block number `i` free, with its summary bits.
    #[inline]
    fn set_free(&mut self, i: usize) {
        let (free, words, groups) = (
            &mut self.free[..],
            &mut self.words[..],
            &mut self.groups[..],
        );
        let (j, b) = bit(i);
        debug_assert_eq!(free[j] & b, 0, "block {i} freed twice");
        let was = free[j];
        free[j] = was | b;
        self.free_blocks += 1;
        if was == 0 {
            let (m, b) = bit(j);
            let was = words[m];
            words[m] = was | b;
            if was == 0 {
                let (g, b) = bit(m);
                groups[g] |= b;
                self.hint = self.hint.min(g);
            }
        }
    }

    /// The number of the lowest free block, moving the hint up past empty groups.
    #[inline]
    fn lowest(&mut self) -> Option<usize> {
        let (free, words, groups) = (&self.free[..], &self.words[..], &self.groups[..]);
        while let Some(&g) = groups.get(self.hint) {
            if g != 0 {
                let m = self.hint * 64 + g.trailing_zeros() as usize;
                let j = m * 64 + words[m].trailing_zeros() as usize;
                return Some(j * 64 + free[j].trailing_zeros() as usize);
            }
            self.hint += 1;
        }
        None
    }

    /// A new chunk, at the lowest vacant index or the end, with all its blocks free;
    /// returns the number of its first block.
    #[cold]
    fn grow(&mut self) -> usize {
        let c = match self.vacant.iter().enumerate().min_by_key(|&(_, &i)| i) {
            Some((at, _)) => self.vacant.swap_remove(at) as usize,
            None => {
                self.chunks.push(Chunk {
                    base: None,
                    taken: false,
                });
                let numbers = self.chunks.len() << self.shift;
                self.free.resize(numbers / 64, 0);
                self.words.resize(self.free.len().div_ceil(64), 0);
                self.groups.resize(self.words.len().div_ceil(64), 0);
                self.chunks.len() - 1
            }
        };
        let layout = self.chunk_layout(c);
        // SAFETY: a chunk is at least `FIRST_CHUNK` bytes, so non-zero.
        let base = unsafe { std::alloc::alloc(layout) };
        let Some(base) = NonNull::new(base) else {
            std::alloc::handle_alloc_error(layout)
        };
        self.chunks[c].base = Some(base);
        self.capacity += self.per_chunk(c);
        if 2 * self.chunks.len() > self.table.len() {
            self.rehash();
        } else {
            self.enter(base.as_ptr() as usize, c);
        }
        for k in 0..self.per_chunk(c) {
            self.set_free((c << self.shift) | k);
        }
        c << self.shift
    }

    /// The allocation layout of chunk `c`: its size, aligned to itself.
    fn chunk_layout(&self, c: usize) -> Layout {
        let size = self.chunk_size(c);
        Layout::from_size_align(size, size).expect("a power of two, at most MAX_CHUNK")
    }

    /// Give back to the allocator every chunk whose blocks are all free (the hot stack's
    /// included) and, unless `all`, from whose bitmap no block was taken since the last
    /// trim; start a new period.
    pub(crate) fn trim(&mut self, all: bool) {
        self.cool();
        // Its room too: while a map shrinks, the stack fills up to its cap (256 KiB).
        self.hot.shrink_to_fit();
        let words_per_chunk = (1 << self.shift) / 64;
        for c in 0..self.chunks.len() {
            let words = c * words_per_chunk..(c + 1) * words_per_chunk;
            let free: u32 = self.free[words.clone()]
                .iter()
                .map(|w| w.count_ones())
                .sum();
            let (layout, per_chunk) = (self.chunk_layout(c), self.per_chunk(c));
            let chunk = &mut self.chunks[c];
            let taken = core::mem::replace(&mut chunk.taken, false);
            let Some(base) = chunk.base else { continue };
            if free as usize != per_chunk || (taken && !all) {
                continue;
            }
            chunk.base = None;
            self.vacant.push(c as u32);
            self.capacity -= per_chunk;
            self.free_blocks -= per_chunk;
            for j in words {
                self.free[j] = 0;
                let (m, b) = bit(j);
                self.words[m] &= !b;
                if self.words[m] == 0 {
                    let (g, b) = bit(m);
                    self.groups[g] &= !b;
                }
            }
            // SAFETY: invariant: our allocation with `layout`; no block of it is handed out
            // (all its bits were set) and its bits were just cleared, so nothing refers to it.
            unsafe { std::alloc::dealloc(base.as_ptr(), layout) };
        }
        self.rehash();
    }

    /// Whether most of the slab is free: three quarters of its blocks or more (the hot
    /// stack's included), and enough to fill two full-sized chunks. So it is after a map
    /// shrank; but also after a flood of blocks that waited out a long grace period came
    /// back, which is why `Blocks::begin_session` does not act on it within a hold of slow
    /// batches.
    pub(crate) fn sparse(&self) -> bool {
        let free = self.free_blocks + self.hot.len();
        4 * free >= 3 * self.capacity && free * self.layout.size() >= 2 * self.chunk
    }

    /// Blocks free and handed out, for tests.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let free = self
            .free
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum::<usize>()
            + self.hot.len();
        let blocks: usize = (0..self.chunks.len())
            .filter(|&c| self.chunks[c].base.is_some())
            .map(|c| self.per_chunk(c))
            .sum();
        assert_eq!(
            (self.free_blocks + self.hot.len(), self.capacity),
            (free, blocks),
            "the counts kept disagree with the bitmap"
        );
        (free, blocks - free)
    }

    /// Chunks allocated now.
    #[cfg(test)]
    pub(crate) fn live_chunks(&self) -> usize {
        self.chunks.iter().filter(|c| c.base.is_some()).count()
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        for c in 0..self.chunks.len() {
            if let Some(base) = self.chunks[c].base {
                // SAFETY: invariant: our allocation with this layout. Whoever owns the slab
                // guarantees that nothing uses its blocks any more (see `Blocks`).
                unsafe { std::alloc::dealloc(base.as_ptr(), self.chunk_layout(c)) };
            }
        }
    }
}

impl core::fmt::Debug for Slab {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Slab")
            .field("layout", &self.layout)
            .field("chunks", &self.chunks.len())
            .field("blocks", &self.capacity)
            .field("free", &(self.free_blocks + self.hot.len()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(s: &mut Slab, n: usize) -> Vec<NonNull<u8>> {
        (0..n).map(|_| s.alloc()).collect()
    }

    fn give(s: &mut Slab, blocks: impl IntoIterator<Item = NonNull<u8>>) {
        for b in blocks {
            // SAFETY: handed out by `s`, given back once, unused after.
            unsafe { s.put(b, true) };
        }
    }

    /// The index of the chunk holding `block`.
    fn chunk_of(s: &Slab, block: NonNull<u8>) -> usize {
        s.locate(block.as_ptr() as usize).0
    }

    #[test]
    fn chunks_grow_from_small_to_full_size() {
        let mut s = Slab::new(Layout::from_size_align(384, 64).unwrap());
        let sizes: Vec<_> = (0..6).map(|c| s.chunk_size(c)).collect();
        assert_eq!(sizes, [4096, 8192, 16384, 32768, 65536, 65536]);
        // A map with one block of this size holds one small chunk.
        let b = s.alloc();
        assert_eq!(s.chunks[0].base.map(|p| p.as_ptr()), Some(b.as_ptr()));
        give(&mut s, [b]);
        let big = Slab::new(Layout::from_size_align(40_000, 8).unwrap());
        assert_eq!(
            big.chunk_size(0),
            big.chunk,
            "four blocks need the full size"
        );
    }

    #[test]
    fn hands_out_distinct_aligned_blocks_in_address_order() {
        let mut s = Slab::new(Layout::from_size_align(384, 64).unwrap());
        let n = s.per_chunk(0) + s.per_chunk(1) + s.per_chunk(2) + 3;
        let blocks = take(&mut s, n);
        for w in blocks.windows(2) {
            if chunk_of(&s, w[0]) == chunk_of(&s, w[1]) {
                assert_eq!(w[1].as_ptr() as usize - w[0].as_ptr() as usize, 384);
            } else {
                assert_eq!(chunk_of(&s, w[0]) + 1, chunk_of(&s, w[1]));
            }
        }
        assert!(blocks.iter().all(|b| b.as_ptr() as usize % 64 == 0));
        let mut sorted: Vec<_> = blocks.iter().map(|b| b.as_ptr() as usize).collect();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), n, "a block was handed out twice");
        assert_eq!(s.counts().1, n);
        give(&mut s, blocks);
        assert_eq!(s.counts().1, 0);
    }

    #[test]
    fn takes_the_lowest_free_block_first() {
        let mut s = Slab::new(Layout::new::<[u64; 3]>());
        let n = s.per_chunk(0) + s.per_chunk(1) + s.per_chunk(2);
        let blocks = take(&mut s, n);
        // Free one block high up, then one low down: the low one comes back first.
        let (high, low) = (blocks[blocks.len() - 5], blocks[7]);
        give(&mut s, [high, low]);
        assert_eq!(s.alloc(), low);
        assert_eq!(s.alloc(), high);
        // A fresh chunk is used only once every block below is taken.
        let next = s.alloc();
        assert_eq!(chunk_of(&s, next), 3);
        give(&mut s, blocks);
        give(&mut s, [next]);
    }

    #[test]
    fn is_sparse_once_three_quarters_are_free_and_fill_two_full_chunks() {
        let mut s = Slab::new(Layout::new::<[u64; 64]>());
        let full = s.chunk / s.layout.size();
        let mut blocks = take(&mut s, 4 * full);
        assert!(!s.sparse());
        // Half free: not yet.
        give(&mut s, blocks.drain(2 * full..));
        assert!(!s.sparse());
        let (free, used) = s.counts();
        // Three quarters free (the hot stack's count): sparse.
        give(&mut s, blocks.drain(free / 3..));
        let (free, used_now) = s.counts();
        assert!(4 * free >= 3 * (free + used_now) && used_now < used);
        assert!(s.sparse());
        s.trim(false);
        assert!(s.sparse(), "a trim found chunks it could not give back");
        s.trim(false);
        assert_eq!(s.counts().1, used_now);
        assert!(!s.sparse(), "wholly free chunks were not given back");
        give(&mut s, blocks);
        // All free but less than two full chunks' worth: a small map is never sparse.
        let mut small = Slab::new(Layout::new::<[u64; 64]>());
        let few = take(&mut small, full);
        give(&mut small, few);
        assert!(!small.sparse());
    }

    #[test]
    fn trims_chunks_left_empty_and_untouched_for_a_period() {
        let mut s = Slab::new(Layout::new::<[u64; 64]>());
        let (p0, p1, p2) = (s.per_chunk(0), s.per_chunk(1), s.per_chunk(2));
        let blocks = take(&mut s, p0 + p1 + p2);
        assert_eq!(s.live_chunks(), 3);
        // The third chunk empties; the first two keep their first block each.
        let (keep, rest): (Vec<_>, Vec<_>) = blocks
            .into_iter()
            .enumerate()
            .partition(|&(i, _)| i == 0 || i == p0);
        give(&mut s, rest.into_iter().map(|(_, b)| b));
        // Blocks were taken from all three in this period: nothing goes yet.
        s.trim(false);
        assert_eq!(s.live_chunks(), 3);
        s.trim(false);
        assert_eq!(s.live_chunks(), 2);
        assert_eq!(s.counts(), (p0 + p1 - 2, 2));
        // The vacant index is reused, and the trimmed chunk's blocks are gone from the lists.
        let again = take(&mut s, p0 + p1 - 2 + 1);
        assert_eq!(chunk_of(&s, again[again.len() - 1]), 2);
        assert_eq!(s.live_chunks(), 3);
        give(&mut s, again);
        give(&mut s, keep.into_iter().map(|(_, b)| b));
        s.trim(false);
        s.trim(false);
        assert_eq!(s.live_chunks(), 0);
        assert_eq!(s.counts(), (0, 0));
    }

    /// The number the slab gives `block` (its chunk's index, then its place).
    fn number(s: &Slab, block: NonNull<u8>) -> usize {
        let at = block.as_ptr() as usize;
        let (c, base) = (0..s.chunks.len())
            .find_map(|c| {
                let base = s.chunks[c].base?.as_ptr() as usize;
                (base <= at && at < base + s.chunk_size(c)).then_some((c, base))
            })
            .expect("a block of a live chunk");
        (c << s.shift) | ((at - base) / s.layout.size())
    }

    /// Random takes and puts against a model: every take is the lowest block not handed
    /// out, in the chunks so far, or the first of a new chunk.
    #[test]
    fn random_takes_and_puts_always_get_the_lowest_free_block() {
        let mut s = Slab::new(Layout::from_size_align(8192, 8).unwrap());
        assert_eq!((s.per_chunk(0), s.per_chunk(1), s.shift), (4, 8, 6));
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut out: Vec<NonNull<u8>> = Vec::new();
        let mut handed = std::collections::BTreeSet::new();
        for _ in 0..if cfg!(miri) { 300 } else { 5_000 } {
            if out.is_empty() || next() % 5 < 3 {
                let want = (0..)
                    .flat_map(|c| (c << s.shift)..(c << s.shift) + s.per_chunk(c))
                    .find(|i| !handed.contains(i))
                    .unwrap();
                let b = s.alloc();
                assert_eq!(number(&s, b), want);
                handed.insert(want);
                out.push(b);
            } else {
                let b = out.swap_remove(next() as usize % out.len());
                handed.remove(&number(&s, b));
                give(&mut s, [b]);
            }
            assert_eq!(s.counts().1, handed.len());
        }
        give(&mut s, out);
    }

    #[test]
    fn while_not_packing_the_block_put_last_comes_back_first() {
        let mut s = Slab::new(Layout::new::<[u64; 8]>());
        let blocks = take(&mut s, 10);
        let (low, high) = (blocks[1], blocks[8]);
        // SAFETY (both): handed out by `s`, given back once, unused after.
        unsafe { s.put(low, false) };
        unsafe { s.put(high, false) };
        assert_eq!(s.alloc(), high);
        assert_eq!(s.alloc(), low);
        // The bitmap's lowest comes next: the first block never handed out.
        let next = s.alloc();
        assert_eq!(next.as_ptr() as usize, blocks[9].as_ptr() as usize + 64);
        give(&mut s, blocks.into_iter().chain([next]));
    }

    #[test]
    fn a_packing_put_moves_the_hot_blocks_into_the_bitmap_first() {
        let mut s = Slab::new(Layout::new::<[u64; 8]>());
        let blocks = take(&mut s, 10);
        // SAFETY (all three): handed out by `s`, given back once, unused after.
        unsafe { s.put(blocks[5], false) };
        unsafe { s.put(blocks[2], false) };
        unsafe { s.put(blocks[7], true) };
        // Lowest first now, the hot ones included.
        assert_eq!(s.alloc(), blocks[2]);
        assert_eq!(s.alloc(), blocks[5]);
        assert_eq!(s.alloc(), blocks[7]);
        give(&mut s, blocks);
    }

    #[test]
    fn a_trim_counts_the_hot_blocks_as_free() {
        let mut s = Slab::new(Layout::new::<[u64; 8]>());
        let blocks = take(&mut s, 10);
        for b in blocks {
            // SAFETY: handed out by `s`, given back once, unused after.
            unsafe { s.put(b, false) };
        }
        assert_eq!(s.counts().1, 0);
        s.trim(false);
        s.trim(false);
        assert_eq!(
            s.live_chunks(),
            0,
            "a chunk whose blocks were all hot was kept"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)] // 32,768 puts: minutes under Miri
    fn the_hot_stack_is_capped() {
        let mut s = Slab::new(Layout::new::<u64>());
        let blocks = take(&mut s, HOT_CAP + 1);
        for (n, b) in blocks.into_iter().enumerate() {
            assert_eq!(s.hot.len(), n);
            // SAFETY: handed out by `s`, given back once, unused after.
            unsafe { s.put(b, false) };
        }
        // The put past the cap moved the stack into the bitmap, and itself.
        assert!(s.hot.is_empty());
        assert_eq!(s.counts().1, 0);
    }

    /// The largest block a map may ask for (`MAX_BLOCK`, at the smallest and the largest
    /// alignment) and the sizes just below it get chunks of at most `MAX_CHUNK`, whose
    /// layouts are valid on this target (on a 32-bit one, a 512-MiB limit gave 2-GiB
    /// chunks, over `isize::MAX`: `chunk_layout` panicked), and blocks whose index the
    /// reciprocal computes exactly. Nothing is allocated: `Slab::new` takes no memory, and
    /// a chunk this large would not fit Miri.
    #[test]
    fn the_largest_blocks_get_valid_chunk_layouts() {
        assert_eq!(MAX_CHUNK, 4 * MAX_BLOCK);
        assert!(MAX_CHUNK.is_power_of_two() && MAX_CHUNK <= 1 << 31);
        assert!(Layout::from_size_align(MAX_CHUNK, MAX_CHUNK).is_ok());
        // Rust's largest alignment is 2^29 (a `repr(align)` limit), below every MAX_BLOCK.
        let aligns = [1, 8, 4096, (1 << 29).min(MAX_BLOCK)];
        let sizes = [
            MAX_BLOCK,
            MAX_BLOCK - 8,
            MAX_BLOCK / 4 * 3,
            MAX_BLOCK / 2 + 8,
        ];
        for (size, align) in sizes.into_iter().flat_map(|s| aligns.map(|a| (s, a))) {
            let layout = Layout::from_size_align(size, align).unwrap();
            let s = Slab::new(layout);
            let size = s.layout().size();
            assert!(s.chunk <= MAX_CHUNK && s.per_chunk(0) >= 4, "{layout:?}");
            for c in 0..4 {
                let l = s.chunk_layout(c);
                assert_eq!((l.size(), l.align()), (s.chunk_size(c), s.chunk_size(c)));
                for k in 0..s.per_chunk(c) {
                    assert_eq!(s.index_at(k * size), k, "{layout:?}, block {k}");
                }
            }
        }
    }

    /// The reciprocal division at sizes of every kind, over whole full-sized chunks.
    #[test]
    fn block_indexes_by_reciprocal_are_exact() {
        for size in [1, 3, 7, 24, 40, 384, 4112, 40_000, 65_535, (3 << 20) + 8] {
            let s = Slab::new(Layout::from_size_align(size, 1).unwrap());
            let per_chunk = s.chunk / s.layout().size();
            let step = if cfg!(miri) { per_chunk / 64 + 1 } else { 1 };
            for k in (0..per_chunk).step_by(step).chain([per_chunk - 1]) {
                assert_eq!(s.index_at(k * size), k, "size {size}, block {k}");
            }
        }
    }

    #[test]
    fn blocks_larger_than_a_chunk_get_larger_chunks() {
        let mut s = Slab::new(Layout::from_size_align(40_000, 8).unwrap());
        assert!(s.per_chunk(0) >= 4);
        let blocks = take(&mut s, 9);
        give(&mut s, blocks);
        let tiny = Slab::new(Layout::new::<u8>());
        assert_eq!(tiny.layout().size(), 1);
    }

    /// A zero-sized layout with an alignment gets blocks that are aligned and distinct.
    #[test]
    fn zero_sized_blocks_keep_their_alignment() {
        for layout in [Layout::new::<()>(), Layout::new::<[u64; 0]>()] {
            let layout = layout.align_to(64).unwrap();
            let mut s = Slab::new(layout);
            let blocks = take(&mut s, 3);
            for b in &blocks {
                assert_eq!(b.as_ptr() as usize % 64, 0, "misaligned");
            }
            assert!(blocks[0] != blocks[1] && blocks[1] != blocks[2]);
            give(&mut s, blocks);
        }
    }

    /// Random takes, puts (hot and packing), cools and trims (periodic and `all`) for odd
    /// and large layouts (one byte; 4,112 bytes, the entry of a 4,095-byte value; 8 KiB at
    /// 4-KiB alignment; 40,000 bytes; 3 MiB at 1-MiB alignment): every block handed out lies
    /// in a live chunk, aligned, and overlaps no other block handed out (each carries its
    /// own byte pattern, checked when it comes back, so Miri also sees every byte of it
    /// written in bounds); the counts agree with the bitmap throughout; and a trim gives
    /// back exactly the chunks with no block handed out.
    #[test]
    fn random_mixed_operations_on_odd_layouts_keep_blocks_disjoint() {
        let layouts = [
            Layout::from_size_align(1, 1).unwrap(),
            Layout::from_size_align(4112, 8).unwrap(),
            Layout::from_size_align(8192, 4096).unwrap(),
            Layout::from_size_align(40_000, 8).unwrap(),
            Layout::from_size_align(3 << 20, 1 << 20).unwrap(),
        ];
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for layout in layouts {
            let mut s = Slab::new(layout);
            let size = s.layout().size();
            // Only the first and last 8 bytes of a large block are patterned: enough to
            // tell two blocks apart, and Miri stays quick.
            let marks = |b: NonNull<u8>| {
                [0, size.saturating_sub(8).max(1) - 1].map(|o| b.as_ptr().wrapping_add(o))
            };
            let ops = if cfg!(miri) { 200 } else { 20_000 } / if size > 1 << 20 { 20 } else { 1 };
            let mut out: Vec<(NonNull<u8>, u8)> = Vec::new();
            for op in 0..ops {
                match next(20) {
                    0..=9 => {
                        let b = s.alloc();
                        let at = b.as_ptr() as usize;
                        assert_eq!(at % layout.align(), 0, "misaligned");
                        let (c, base) = s.locate(at);
                        assert!(at + size <= base + s.chunk_size(c), "block past its chunk");
                        for &(o, _) in &out {
                            let o = o.as_ptr() as usize;
                            assert!(o + size <= at || at + size <= o, "blocks overlap");
                        }
                        let tag = op as u8;
                        for m in marks(b) {
                            // SAFETY: inside the block just handed out (checked above).
                            unsafe { m.write(tag) };
                        }
                        out.push((b, tag));
                    }
                    10..=17 if !out.is_empty() => {
                        let (b, tag) = out.swap_remove(next(out.len() as u64) as usize);
                        for m in marks(b) {
                            // SAFETY: a block still handed out, written when it was taken.
                            assert_eq!(
                                unsafe { m.read() },
                                tag,
                                "a block was written by another's owner"
                            );
                        }
                        // SAFETY: handed out by `s`, given back once, unused after.
                        unsafe { s.put(b, next(2) == 0) };
                    }
                    18 => s.cool(),
                    _ => {
                        let all = next(2) == 0;
                        s.trim(all);
                        if all {
                            let held: std::collections::BTreeSet<usize> = out
                                .iter()
                                .map(|&(b, _)| s.locate(b.as_ptr() as usize).0)
                                .collect();
                            assert_eq!(
                                s.live_chunks(),
                                held.len(),
                                "a free chunk was kept, or a used one freed"
                            );
                        }
                    }
                }
                assert_eq!(s.counts().1, out.len());
            }
            give(&mut s, out.into_iter().map(|(b, _)| b));
            s.trim(true);
            assert_eq!(s.live_chunks(), 0);
        }
    }
}
