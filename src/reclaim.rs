//! The one place that talks to the epoch library (crossbeam-epoch), and the recycling of
//! retired memory.
//!
//! Owns: pinning for readers' tree walks, deferred release of retired memory, and the free
//! blocks a map's writer sessions reuse. Must not: run user code — what is retired here is
//! raw memory (nodes, drained entries whose value was already moved out), handled by layout
//! alone, so no value's `Drop` can ever run inside a reclamation callback, on whatever
//! thread the collector picks.
//!
//! # Recycling
//!
//! A session copies every node on the paths it changes and allocates an entry per insert;
//! the commit retires as many blocks. Through the allocator that was about a third of a
//! one-op session, and in whichever reader thread crossbeam's collector ran the frees, it
//! contended with the writer for the allocator's lock. So a map recycles:
//!
//! 1. A commit puts the blocks it retires in its [`Blocks`]' *limbo* (no epoch work yet).
//! 2. Once the limbo holds a batch's worth, the commit hands it to the collector as one
//!    batch ([`Recycler::retire`]): one deferred function per batch, whose only work, after
//!    the grace period, is to move the batch into the map's pool. Handing a block over
//!    later than its unlink only delays its grace period, so retire-after-unlink holds.
//!    A batch is [`BATCH`] blocks while earlier batches come back promptly, and grows to
//!    [`MAX_BATCH`] while they are slow to (readers holding grace periods open); a session
//!    that retires [`BATCH`] blocks by itself hands over at once ([`Blocks::batch_ready`],
//!    [`Blocks::adapt_batch`]).
//! 3. The next session puts the pool's batches back into its [`Blocks`]' slabs
//!    ([`Recycler::take`]), which hand them out again.
//!
//! With one-op sessions (about five blocks each) that is one deferred function per dozen
//! sessions, or per ~200 while grace periods are long, instead of one per session.
//!
//! # Where the blocks live
//!
//! Every node and entry of a map is a block of one of its three slabs ([`Slab`]: one per
//! layout, carved from chunks of 4 to 64 KiB). Once the batches were slow to come back,
//! and for a while after, the slabs hand out the lowest free block first, so the live
//! blocks stay packed however long readers hold grace periods open; otherwise the block
//! freed last
//! ([`Blocks::packing`], and the module docs of `slab` for why and what it costs). Memory
//! goes back to the allocator a chunk at a time: every [`TRIM_PERIOD`] sessions, the
//! chunks whose blocks are all free and were not handed out lowest-first since the last
//! trim ([`Blocks::begin_session`]); every [`SPARSE_CHECK`] sessions while a slab is mostly
//! free (a map that shrank, or that a flood left so) and the batches were not slow to come
//! back within the hold (from [`MIN_HOLD`] sessions, longer while floods keep following
//! early trims), when the map also packs, so that its live blocks move down; at once,
//! after moving every entry and node down, in `RangeMap::shrink_to_fit`; and all of it
//! when the map is dropped. No block is ever freed on its own, so the pool and the limbo
//! hold only pointers.
//!
//! A grace period lasts until every pinned thread has unpinned, so a reader that the
//! scheduler takes off the CPU in the middle of a lookup holds every block retired after
//! it for a whole time slice. With more threads than cores that is the common case: in W2
//! (two readers and a writer on two cores) one thread is always off the CPU, usually a
//! pinned reader, and the writer's blocks come back in floods of tens of thousands after
//! each of its time slices. The slabs grow to hold the blocks in flight, and the trim
//! period is long enough that chunks a flood empties are not given back between floods.
//!
//! # Why crossbeam-epoch, not seize
//!
//! Measured on the lookup path (2-core VM, same process, best of 9 × 3M): pin + unpin
//! costs 11.3 / 11.4 ns with crossbeam-epoch against 12.5 / 12.3 ns for seize's
//! `enter` + drop (default `fast-barrier`); in noisier runs 5.9 vs 6.9 and 17.5 vs 16.7 ns —
//! the same within noise, against a whole `get` of 26–45 ns at N = 1k. With cost a wash,
//! the deciding facts are crossbeam-epoch's: it runs under loom (`crossbeam_loom`), and
//! garbage held back by a stalled thread stays bounded (seize 0.5 dropped that bound).
//! Under Miri, crossbeam-epoch needs Tree Borrows (it has a known Stacked Borrows
//! violation of its own) and permissive provenance (tagged pointers); see `.ci/run`.

use core::alloc::Layout;
use core::ptr::NonNull;
// Plain std: the pool is not part of the lock protocol that the loom models explore.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) use crossbeam_epoch::Guard;

use crate::slab::Slab;
/// Blocks a map's limbo collects before they go to the collector as one batch, while the
/// batches come back promptly ([`Blocks::adapt_batch`]); and a session that by itself
/// retires this many hands its limbo over at once, whatever the batch.
pub(crate) const BATCH: usize = 64;
/// The largest batch: what small sessions fill before a hand-over while grace periods are
/// long. Each hand-over is one deferred function and one flush of crossbeam's bag (about 2
/// KiB that another thread frees; there the W2 writer slept on glibc's arena lock). Larger
/// batches take those sleeps away, but their blocks come back colder. Two forms whose
/// batches grew with a map's age were measured: one made W3's 64-op sessions wait three
/// sessions for their blocks, and the other (with the per-session rule) still made the
/// single-threaded W4 slower (benches/analysis.md, "The writer beside readers"). Hence
/// the per-session rule above, and growth only while batches are slow to come back.
const MAX_BATCH: usize = 1024;
/// Batches in flight at which a hand-over doubles the batch ([`Blocks::adapt_batch`]): a
/// writer alone, or beside readers that keep their CPUs, sees one or two in flight (its own
/// flushes end the grace periods); beside readers that lose the CPU while pinned, tens.
const SLOW_GRACE: usize = 8;
/// Batches in flight at or below which a hand-over halves the batch.
const PROMPT_GRACE: usize = 3;
/// Sessions a map keeps packing ([`Blocks::packing`]) after a hand-over found the batches
/// slow to come back. In W2 the two readers and the writer take turns on two cores, so the
/// batches come back slowly and promptly by turns; packing only in the slow turns left the
/// map spread. The writer alone never starts it.
const PACK_HOLD: u32 = 1 << 16;
/// Sessions between two trims of the slabs ([`Blocks::begin_session`]): long enough to
/// span many floods of returning blocks at full session rate (about 0.1 s at 600,000
/// sessions a second), so a chunk that each flood fills is never trimmed.
const TRIM_PERIOD: u32 = 1 << 16;
/// The shortest hold on early trims after a hand-over found the batches slow (the rule is
/// at [`Blocks::begin_session`]): what a map that made one flood and went quiet waits
/// before it gives the flood's chunks back (with a fixed hold of [`PACK_HOLD`], a map that
/// kept 500 of 50,000 ranges held 101 MB of a flood 49,152 sessions later;
/// `tests/memory.rs`). In the runner's W2, where floods come every few thousand sessions,
/// a hold of 4,096 let up to 7 early trims through per run, and chunks were allocated
/// again; at this length none fired (`benches/analysis.md`, "A shorter hold after a
/// flood").
const MIN_HOLD: u32 = 1 << 14;
/// Sessions between two looks at whether a slab is mostly free ([`Blocks::begin_session`]):
/// a trim then gives back the chunks left untouched since the look before.
const SPARSE_CHECK: u32 = 1 << 10;
/// Emptied batch vectors kept for their capacity.
const SPARE_CAP: usize = 4;

/// Pin the current thread: memory retired from now on is not freed until this guard (and
/// every other guard pinned before the retirement) is dropped.
#[inline]
pub(crate) fn pin() -> Guard {
    crossbeam_epoch::pin()
}

/// A block to reuse after a grace period: a pointer and the layout of the slab it came from.
pub(crate) struct Retired {
    ptr: *mut u8,
    layout: Layout,
}

impl Retired {
    /// # Safety
    /// `ptr` is a block the map's [`Blocks`] handed out for `layout` (from its slab for
    /// that layout), and needs no drop glue (only its bytes are reused).
    pub(crate) unsafe fn new(ptr: *mut u8, layout: Layout) -> Self {
        Retired { ptr, layout }
    }
}

/// Reuse rights to retired blocks on their way to a pool, which any thread may hold. Only
/// the map's writer session ever reads or writes the blocks themselves.
struct Batch(Vec<Retired>);

// SAFETY: a batch is only the right to reuse memory that no thread will use again once its
// grace period is over (the caller contract of `Recycler::retire`); moving that right to
// the collecting thread, or into the pool that another thread reads, is sound. Nothing
// dereferences the pointers on the way.
unsafe impl Send for Batch {}

/// A map's pool of retired batches whose grace period is over, waiting for its next writer
/// session ([`Recycler::take`]). Shared with the deferred functions of its pending batches,
/// so it outlives the map until the last of them has run.
pub(crate) struct Recycler {
    pool: Arc<Pool>,
}

/// Invariant: no thread can reach any block of `ready` (each batch's grace period is over).
/// The pool never dereferences them: they may outlive their map's slabs, and then they are
/// only pointers that nobody follows. `nonempty` is set (under the lock) when a batch comes
/// back, and cleared when `take` empties `ready` and reads its `returned` count: a hint that
/// spares sessions the lock when there is nothing to take (a stale reading only delays a
/// take by a session).
struct Pool {
    ready: Mutex<Ready>,
    nonempty: AtomicBool,
}

#[derive(Default)]
struct Ready {
    batches: Vec<Batch>,
    /// Batches whose grace period ended since the last take.
    returned: usize,
}

impl Pool {
    /// Keep `batch` for the next session. Its blocks belong to the map's slabs, which take
    /// them back then; the pool keeps every batch, or the blocks would be lost until the
    /// map's drop.
    fn give_back(&self, batch: Batch) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready.returned += 1;
        ready.batches.push(batch);
        // Relaxed: a hint only (see `Pool`); the batch, and the count of returned ones,
        // are handed over by the mutex.
        self.nonempty.store(true, Ordering::Relaxed);
    }
}

impl Recycler {
    pub(crate) fn new() -> Self {
        Recycler {
            pool: Arc::new(Pool {
                ready: Mutex::new(Ready::default()),
                nonempty: AtomicBool::new(false),
            }),
        }
    }

    /// Give every block whose grace period is over back to `blocks`' slabs. Never blocks:
    /// if a collector is handing a batch in right now, the blocks wait for the next session.
    #[inline]
    pub(crate) fn take(&self, blocks: &mut Blocks) {
        // Relaxed: a hint (see `Pool`); the blocks are handed over under the mutex below.
        if !self.pool.nonempty.load(Ordering::Relaxed) {
            return;
        }
        self.take_ready(blocks);
    }

    #[cold]
    fn take_ready(&self, blocks: &mut Blocks) {
        match self.pool.ready.try_lock() {
            Ok(mut ready) => {
                blocks.in_flight = blocks.in_flight.saturating_sub(ready.returned);
                ready.returned = 0;
                self.pool.nonempty.store(false, Ordering::Relaxed);
                // Swap in the empty list kept from last time: no allocation either side.
                core::mem::swap(&mut ready.batches, &mut blocks.taken);
            }
            Err(_) => return,
        }
        let mut taken = core::mem::take(&mut blocks.taken);
        for Batch(mut batch) in taken.drain(..) {
            for r in batch.drain(..) {
                // SAFETY: pool invariant: nobody can reach the block.
                unsafe { blocks.put(r) };
            }
            if blocks.spare.len() < SPARE_CAP {
                blocks.spare.push(batch);
            }
        }
        blocks.taken = taken;
    }

    /// End of a commit: once `blocks`' limbo holds a batch's worth
    /// ([`Blocks::batch_ready`]), hand it to the collector ([`retire`](Self::retire)).
    #[inline]
    pub(crate) fn commit(&self, blocks: &mut Blocks) {
        if blocks.batch_ready() {
            blocks.adapt_batch();
            blocks.in_flight += 1;
            let capacity = 2 * blocks.batch;
            let next = blocks
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(capacity));
            let batch = core::mem::replace(&mut blocks.limbo, next);
            // SAFETY: `Blocks` invariant: the limbo's blocks are unlinked from every
            // published version, plain data, each listed once.
            unsafe { self.retire(batch) };
        }
    }

    /// Hand `blocks`' limbo to the collector now, whatever its length.
    #[cold]
    pub(crate) fn hand_over(&self, blocks: &mut Blocks) {
        if blocks.limbo.is_empty() {
            return;
        }
        blocks.in_flight += 1;
        let batch = core::mem::take(&mut blocks.limbo);
        // SAFETY: `Blocks` invariant: the limbo's blocks are unlinked from every published
        // version, plain data, each listed once.
        unsafe { self.retire(batch) };
    }

    /// Hand `batch` to the pool once every thread pinned now has unpinned: one deferred
    /// function for the whole batch.
    ///
    /// # Safety
    /// Every block is unreachable from every published tree version (retire-after-unlink),
    /// needs no drop glue, and is retired exactly once.
    unsafe fn retire(&self, batch: Vec<Retired>) {
        let batch = Batch(batch);
        let pool = Arc::clone(&self.pool);
        let guard = pin();
        // SAFETY: caller contract: after the grace period nobody can reach the blocks; the
        // function only moves them into the pool (which keeps or frees them by layout).
        unsafe {
            guard.defer_unchecked(move || pool.give_back(batch));
        }
        // Hand this thread's deferred functions to the global queue now and collect what
        // is ripe, instead of after 64 of them: the batch then comes back to the pool a few
        // sessions later rather than after thousands of blocks have piled up beyond the
        // pool's caps (and gone back to the allocator).
        guard.flush();
    }
}

impl core::fmt::Debug for Recycler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Recycler").finish_non_exhaustive()
    }
}

/// A map's block bookkeeping, carried from one writer session to the next: the slabs its
/// nodes and entries are allocated from (one per layout the map uses: leaf, internal node,
/// entry), and the retired blocks not yet handed to the collector.
///
/// Invariants:
/// - every node and entry of the map, published, retired or in flight, is a block of one of
///   `classes`' slabs, handed out for that class's layout; a block the slab holds free is
///   reachable by no thread (it was retired and its grace period is over, or the session
///   allocated it and unlinked it before publishing);
/// - every block in `limbo` is unreachable from every tree version published from now on
///   (a committed session unlinked it), needs no drop glue, and is listed once; readers
///   pinned before its unlink may still read it, so it is reused only after a grace period
///   ([`Recycler::commit`]);
/// - `Blocks` is dropped only when no thread can reach any of its blocks: its map is being
///   dropped (so no reader borrows it), or it never served a map. Its slabs then free
///   every chunk, whatever the limbo and the pool still list;
/// - `taken` and `spare` are empty lists kept for their capacity.
///
/// (`limbo_at_begin`, `in_flight`, `batch`, `packing_left`, `slow_left`, `hold`,
/// `trimmed_early` and `sessions` only pace the hand-overs and trims and choose the reuse
/// order: no safety argument rests on them, and a wrong count could only make a batch hand
/// over early or late, a chunk go back early or late, or a block be reused in another
/// order.)
pub(crate) struct Blocks {
    /// Each slab with the layout it serves (as asked for, before the slab pads it).
    classes: [(Layout, Slab); 3],
    limbo: Vec<Retired>,
    /// `limbo`'s length when the current session began.
    limbo_at_begin: usize,
    /// Batches handed to the collector whose return the map has not seen yet.
    in_flight: usize,
    /// Blocks the limbo collects before a hand-over ([`Blocks::adapt_batch`]).
    batch: usize,
    /// Sessions left to pack ([`Blocks::packing`]).
    packing_left: u32,
    /// Sessions left before the slabs may be trimmed early for being mostly free
    /// ([`Blocks::begin_session`]): set to `hold` by a hand-over that found the batches
    /// slow.
    slow_left: u32,
    /// The hold on early trims after a slow hand-over, from [`MIN_HOLD`] to [`PACK_HOLD`].
    hold: u32,
    /// Whether an early trim ran since the last slow hand-over.
    trimmed_early: bool,
    spare: Vec<Vec<Retired>>,
    taken: Vec<Batch>,
    /// Sessions begun since the last trim.
    sessions: u32,
}

impl Blocks {
    /// Empty slabs for the given layouts (allocates nothing).
    pub(crate) fn new(layouts: [Layout; 3]) -> Self {
        Blocks {
            classes: layouts.map(|layout| (layout, Slab::new(layout))),
            limbo: Vec::new(),
            limbo_at_begin: 0,
            in_flight: 0,
            batch: BATCH,
            packing_left: 0,
            slow_left: 0,
            hold: MIN_HOLD,
            trimmed_early: false,
            spare: Vec::new(),
            taken: Vec::new(),
            sessions: 0,
        }
    }

    /// Before a hand-over: if the batches handed over earlier are slow to come back (many
    /// in flight: readers hold their grace periods open, as W2's two readers beside a
    /// writer on two cores do while off the CPU), double the batch, up to [`MAX_BATCH`]; if
    /// they come back promptly (a writer alone, whose own flushes end the grace periods),
    /// halve it, down to [`BATCH`], so the blocks come back while still in cache.
    fn adapt_batch(&mut self) {
        if self.in_flight >= SLOW_GRACE {
            self.batch = (self.batch * 2).min(MAX_BATCH);
            self.packing_left = PACK_HOLD;
            if self.trimmed_early {
                // The chunks that trim gave back were needed again: hold longer.
                self.hold = (self.hold * 2).min(PACK_HOLD);
                self.trimmed_early = false;
            }
            self.slow_left = self.hold;
        } else if self.in_flight <= PROMPT_GRACE {
            self.batch = (self.batch / 2).max(BATCH);
        }
    }

    /// Whether the session ending now should hand the limbo over: it retired [`BATCH`]
    /// blocks by itself, or the limbo holds the current batch ([`Blocks::adapt_batch`]).
    fn batch_ready(&self) -> bool {
        // The limbo only grows between a session's begin and its commit; saturating all
        // the same, so a commit without a begin can only hand over late, never panic.
        let this_session = self.limbo.len().saturating_sub(self.limbo_at_begin);
        this_session >= BATCH || self.limbo.len() >= self.batch
    }

    /// Count a writer session; every [`TRIM_PERIOD`] sessions, give back to the allocator
    /// every chunk whose blocks are all free and none was taken from its bitmap since the
    /// last trim ([`Slab::trim`]).
    ///
    /// Every [`SPARSE_CHECK`] sessions, if a slab is mostly free ([`Slab::sparse`]: the map
    /// shrank), trim then and pack for [`PACK_HOLD`] sessions, so that the live blocks move
    /// into the lowest chunks as sessions copy them, and the chunks above empty. Without
    /// that, a map that kept 1% of 200,000 ranges still held 8.6 MB (12.7 at most) after a
    /// million more sessions of churn (blocks were reused LIFO, all over the chunks); with
    /// it, 0.42 MB (`benches/analysis.md`, "A map that shrank").
    ///
    /// But not within `hold` sessions of a hand-over that found the batches slow: then the
    /// free blocks may be the last flood's, and the next flood needs them. In the runner's W2
    /// at N = 1k, early trims with no hold gave back chunks that the next flood allocated
    /// again: 160 early trims and 4,096 or more chunk allocations in one run, against 512 –
    /// 1,023 with a fixed hold of [`PACK_HOLD`] (counts printed at powers of two). The hold
    /// starts at [`MIN_HOLD`], so that a map that made one flood and went quiet gives it back
    /// soon; each flood that follows an early trim doubles it ([`Blocks::adapt_batch`]), and
    /// a trim period that ends more than a hold after the last slow hand-over resets it.
    #[inline]
    pub(crate) fn begin_session(&mut self) {
        self.limbo_at_begin = self.limbo.len();
        self.packing_left = self.packing_left.saturating_sub(1);
        self.slow_left = self.slow_left.saturating_sub(1);
        self.sessions += 1;
        if self.sessions >= TRIM_PERIOD {
            if self.slow_left == 0 {
                self.hold = MIN_HOLD;
            }
            self.trim(false);
        } else if self.sessions % SPARSE_CHECK == 0 && self.slow_left == 0 && self.sparse() {
            self.packing_left = PACK_HOLD;
            self.trimmed_early = true;
            self.trim(false);
        }
    }

    /// Whether a slab is mostly free ([`Slab::sparse`]): the map shrank.
    #[cold]
    fn sparse(&self) -> bool {
        self.classes.iter().any(|(_, slab)| slab.sparse())
    }

    /// Trim every slab ([`Slab::trim`], `all` as there); start a period. If `all`, give
    /// back the room of the lists kept for their capacity too.
    #[cold]
    pub(crate) fn trim(&mut self, all: bool) {
        self.sessions = 0;
        if all {
            self.spare = Vec::new();
            self.limbo.shrink_to_fit();
            self.taken.shrink_to_fit();
        }
        for (_, slab) in &mut self.classes {
            slab.trim(all);
        }
    }

    /// Pack from now on ([`Blocks::packing`], for [`PACK_HOLD`] sessions), the hot blocks
    /// too: every block allocated next is the lowest free one.
    #[cold]
    pub(crate) fn pack(&mut self) {
        self.packing_left = PACK_HOLD;
        for (_, slab) in &mut self.classes {
            slab.cool();
        }
    }

    /// Whether every block a commit retired is back in the slabs: none in the limbo, no
    /// batch in flight.
    pub(crate) fn settled(&self) -> bool {
        self.limbo.is_empty() && self.in_flight == 0
    }

    /// Queue a block a committed session unlinked, for reuse after a grace period.
    ///
    /// # Safety
    /// `r`'s block is unreachable from the tree version just published and every later one,
    /// needs no drop glue, and is queued once.
    #[inline]
    pub(crate) unsafe fn retire_later(&mut self, r: Retired) {
        self.limbo.push(r);
    }

    /// The slab serving `layout`. Nodes and entries ask only for the three layouts the map
    /// was made with, so any other is a bug in this crate.
    #[inline]
    fn slab(&mut self, layout: Layout) -> &mut Slab {
        match self.classes.iter_mut().find(|(l, _)| *l == layout) {
            Some((_, slab)) => slab,
            None => panic!("rcu-rangemap bug: no slab for {layout:?}"),
        }
    }

    /// A free block for `layout` (one of the map's three), as [`Slab::alloc`] picks it.
    #[inline]
    pub(crate) fn alloc(&mut self, layout: Layout) -> NonNull<u8> {
        self.slab(layout).alloc()
    }

    /// Give the block back to its slab, for reuse.
    ///
    /// # Safety
    /// `r`'s block is unreachable by every thread and needs no drop glue (and, by
    /// `Retired::new`'s contract, was handed out by this `Blocks` for its layout).
    pub(crate) unsafe fn put(&mut self, r: Retired) {
        let packing = self.packing();
        // SAFETY: caller contract: handed out by this slab, once, and unreachable now.
        unsafe {
            self.slab(r.layout)
                .put(NonNull::new_unchecked(r.ptr), packing)
        }
    }

    /// Whether freed blocks should go where the lowest is handed out first: for
    /// [`PACK_HOLD`] sessions after a hand-over found the batches slow to come back
    /// ([`Blocks::adapt_batch`]). Then many blocks are in flight, the live ones are a
    /// minority of those in circulation, and a LIFO reuse spreads them thinly (see `slab`).
    /// A writer alone, or beside readers that keep their CPUs, reuses the warmest block
    /// instead, which is cheaper.
    #[inline]
    fn packing(&self) -> bool {
        self.packing_left > 0
    }

    /// Blocks free in each class's slab, for tests.
    #[cfg(test)]
    fn free_counts(&self) -> [usize; 3] {
        [0, 1, 2].map(|i| self.classes[i].1.counts().0)
    }

    /// Blocks handed out (live, in the limbo or in flight) and chunks allocated, in each
    /// class's slab, for tests.
    #[cfg(test)]
    pub(crate) fn usage(&self) -> [(usize, usize); 3] {
        [0, 1, 2].map(|i| {
            let slab = &self.classes[i].1;
            (slab.counts().1, slab.live_chunks())
        })
    }
}

// SAFETY: the slabs' chunks and the limbo's pointers are memory that only the session
// holding the map's writers' lock touches (type invariant); the owner may use or free
// them on any thread.
unsafe impl Send for Blocks {}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks() -> Blocks {
        Blocks::new([
            Layout::new::<[u64; 4]>(),
            Layout::new::<[u64; 8]>(),
            Layout::new::<u64>(),
        ])
    }

    /// A batch of `n` blocks of `b`'s class 0, taken from its slab.
    fn fresh_batch(b: &mut Blocks, n: usize) -> Batch {
        let layout = b.classes[0].0;
        Batch(
            (0..n)
                .map(|_| {
                    let p = b.alloc(layout);
                    // SAFETY: handed out by `b` for `layout` just now, reachable by nobody.
                    unsafe { Retired::new(p.as_ptr(), layout) }
                })
                .collect(),
        )
    }

    /// Chunks of class 0 allocated now.
    fn chunks(b: &Blocks) -> usize {
        b.classes[0].1.live_chunks()
    }

    /// Skip to the session that completes the period, and begin it (it trims). Counting
    /// the sessions one by one would take Miri minutes.
    fn end_period(b: &mut Blocks) {
        b.sessions = TRIM_PERIOD - 1;
        b.begin_session();
    }

    #[test]
    fn the_session_that_completes_a_period_trims_the_chunks_it_left_free() {
        let mut b = blocks();
        for r in fresh_batch(&mut b, 5).0 {
            // SAFETY: handed out by `b` just now, reachable by nobody, plain bytes.
            unsafe { b.put(r) };
        }
        assert_eq!(b.classes[0].1.counts().1, 0, "a block was not given back");
        // The period the blocks were taken in keeps their chunk.
        end_period(&mut b);
        assert_eq!(chunks(&b), 1);
        b.sessions = TRIM_PERIOD - 2;
        b.begin_session();
        assert_eq!(chunks(&b), 1, "trimmed a session early");
        b.begin_session();
        assert_eq!(chunks(&b), 0);
        assert_eq!(b.free_counts(), [0, 0, 0]);
    }

    /// Blocks whose class 0 has 1-KiB blocks, 64 to a full chunk: few enough for Miri.
    fn kib_blocks() -> Blocks {
        Blocks::new([
            Layout::new::<[u64; 128]>(),
            Layout::new::<[u64; 8]>(),
            Layout::new::<u64>(),
        ])
    }

    #[test]
    fn a_map_that_shrank_packs_and_trims_early() {
        let mut b = kib_blocks();
        let mut taken = fresh_batch(&mut b, 8 * 64).0;
        let live = chunks(&b);
        // Half given back: not sparse, so the checks within a period change nothing.
        for r in taken.drain(4 * 64..) {
            // SAFETY: handed out by `b` above, reachable by nobody, plain bytes.
            unsafe { b.put(r) };
        }
        for _ in 0..2 {
            b.sessions = SPARSE_CHECK - 1;
            b.begin_session();
        }
        assert!(!b.packing() && chunks(&b) == live);
        // Seven eighths: the next check starts packing and trims, but the chunks were
        // taken from in this period; the one after gives back those left untouched.
        for r in taken.drain(64..) {
            // SAFETY: as above.
            unsafe { b.put(r) };
        }
        b.sessions = 2 * SPARSE_CHECK - 1;
        b.begin_session();
        assert!(b.packing());
        assert_eq!(chunks(&b), live);
        // Not while the batches were slow to come back lately (the next flood's blocks).
        b.in_flight = SLOW_GRACE;
        b.adapt_batch();
        b.in_flight = 0;
        b.sessions = SPARSE_CHECK - 1;
        b.begin_session();
        assert_eq!(chunks(&b), live, "trimmed early beside slow batches");
        b.slow_left = 1;
        b.sessions = SPARSE_CHECK - 1;
        b.begin_session();
        assert!(
            chunks(&b) < live / 2,
            "{} of {live} chunks kept",
            chunks(&b)
        );
        assert_eq!(b.classes[0].1.counts().1, 64);
        for r in taken {
            // SAFETY: as above.
            unsafe { b.put(r) };
        }
    }

    #[test]
    fn floods_after_early_trims_lengthen_the_hold() {
        let mut b = kib_blocks();
        let kept = fresh_batch(&mut b, 64).0;
        let slow = |b: &mut Blocks| {
            b.in_flight = SLOW_GRACE;
            b.adapt_batch();
            b.in_flight = 0;
        };
        slow(&mut b);
        assert_eq!(
            b.slow_left, MIN_HOLD,
            "a first flood holds early trims briefly"
        );
        slow(&mut b);
        assert_eq!(
            b.slow_left, MIN_HOLD,
            "floods with no early trim between keep the hold"
        );
        for k in 1..=3 {
            // Seven eighths free again, and the hold run out: the next look trims early.
            if !b.sparse() {
                for r in fresh_batch(&mut b, 7 * 64).0 {
                    // SAFETY: handed out by `b` just now, reachable by nobody, plain bytes.
                    unsafe { b.put(r) };
                }
            }
            b.slow_left = 1;
            b.sessions = SPARSE_CHECK - 1;
            b.begin_session();
            assert!(
                b.trimmed_early,
                "no early trim once the hold ran out (round {k})"
            );
            slow(&mut b);
            assert_eq!(b.slow_left, (MIN_HOLD << k).min(PACK_HOLD), "round {k}");
        }
        // A trim period that ends more than a hold after the last flood resets it.
        b.slow_left = 1;
        end_period(&mut b);
        slow(&mut b);
        assert_eq!(b.slow_left, MIN_HOLD);
        // But not one that ends within it.
        b.trimmed_early = true;
        slow(&mut b);
        assert_eq!(b.slow_left, 2 * MIN_HOLD);
        end_period(&mut b);
        slow(&mut b);
        assert_eq!(b.slow_left, 2 * MIN_HOLD);
        for r in kept {
            // SAFETY: as above.
            unsafe { b.put(r) };
        }
    }

    /// A session that retires `n` blocks of class 0 into `b`'s limbo and commits.
    fn session_retiring(r: &Recycler, b: &mut Blocks, n: usize) {
        b.begin_session();
        let layout = b.classes[0].0;
        for _ in 0..n {
            let p = b.alloc(layout);
            // SAFETY: a block just allocated, reachable by nobody, plain bytes.
            unsafe { b.retire_later(Retired::new(p.as_ptr(), layout)) };
        }
        r.commit(b);
    }

    /// Sessions of 8 blocks until one commit hands the limbo over; returns how many blocks
    /// went (no take runs in between, so nothing counts down what is in flight).
    fn until_hand_over(r: &Recycler, b: &mut Blocks) -> usize {
        for _ in 0..MAX_BATCH {
            let before = b.limbo.len();
            session_retiring(r, b, 8);
            if b.limbo.is_empty() {
                return before + 8;
            }
        }
        panic!("no hand-over within {MAX_BATCH} sessions");
    }

    #[test]
    fn batches_stay_small_while_they_come_back_promptly() {
        let r = Recycler::new();
        let mut b = blocks();
        for _ in 0..PROMPT_GRACE {
            assert_eq!(until_hand_over(&r, &mut b), BATCH);
        }
        assert_eq!(b.in_flight, PROMPT_GRACE);
        assert_eq!(b.batch, BATCH);
    }

    #[test]
    fn batches_grow_while_they_come_back_slowly_and_shrink_when_they_do_not() {
        let r = Recycler::new();
        let mut b = blocks();
        b.in_flight = SLOW_GRACE;
        // Each hand-over with SLOW_GRACE or more in flight doubles the next batch.
        assert_eq!(until_hand_over(&r, &mut b), BATCH);
        assert_eq!(until_hand_over(&r, &mut b), 2 * BATCH);
        assert_eq!(until_hand_over(&r, &mut b), 4 * BATCH);
        for _ in 0..6 {
            until_hand_over(&r, &mut b);
        }
        assert_eq!(b.batch, MAX_BATCH, "the batch outgrew its cap");
        // Between the thresholds it stays; at or below PROMPT_GRACE it halves.
        b.in_flight = PROMPT_GRACE + 1;
        assert_eq!(until_hand_over(&r, &mut b), MAX_BATCH);
        assert_eq!(b.batch, MAX_BATCH);
        b.in_flight = PROMPT_GRACE;
        assert_eq!(until_hand_over(&r, &mut b), MAX_BATCH);
        assert_eq!(b.batch, MAX_BATCH / 2);
        b.in_flight = 0;
        assert_eq!(until_hand_over(&r, &mut b), MAX_BATCH / 2);
        assert_eq!(b.batch, MAX_BATCH / 4);
    }

    #[test]
    fn a_session_that_retires_a_batch_hands_over_at_once() {
        let r = Recycler::new();
        let mut b = blocks();
        b.batch = MAX_BATCH; // small sessions wait for a large batch
        session_retiring(&r, &mut b, 8);
        assert_eq!(b.limbo.len(), 8);
        session_retiring(&r, &mut b, BATCH - 1);
        assert_eq!(b.limbo.len(), 8 + BATCH - 1);
        session_retiring(&r, &mut b, BATCH);
        assert!(
            b.limbo.is_empty(),
            "a session's own batch waited for others"
        );
    }

    #[test]
    fn a_take_counts_down_the_batches_that_came_back_and_reuses_their_blocks() {
        let r = Recycler::new();
        let mut b = blocks();
        b.in_flight = 5;
        for n in [3, 4, 2] {
            let batch = fresh_batch(&mut b, n);
            r.pool.give_back(batch);
        }
        let free = b.free_counts()[0];
        r.take(&mut b);
        assert_eq!(b.in_flight, 2);
        assert_eq!(
            b.free_counts()[0],
            free + 9,
            "the batches' blocks were not reused"
        );
    }

    #[test]
    fn blocks_are_reused_lowest_first_for_a_while_after_batches_were_slow() {
        let mut b = blocks();
        let layout = b.classes[0].0;
        let taken: Vec<_> = (0..8).map(|_| b.alloc(layout)).collect();
        let (low, high) = (taken[2], taken[6]);
        let give = |b: &mut Blocks, p: NonNull<u8>| {
            // SAFETY: handed out by `b` above, given back once, used by nobody.
            unsafe { b.put(Retired::new(p.as_ptr(), layout)) }
        };
        // Batches come back promptly: the block given back last is reused first.
        give(&mut b, low);
        give(&mut b, high);
        assert_eq!(b.alloc(layout), high);
        assert_eq!(b.alloc(layout), low);
        // A hand-over finds them slow: the lowest free block is reused first.
        b.in_flight = SLOW_GRACE;
        b.adapt_batch();
        give(&mut b, low);
        give(&mut b, high);
        assert_eq!(b.alloc(layout), low);
        assert_eq!(b.alloc(layout), high);
        // So it stays after they come back promptly again, until the hold runs out.
        b.in_flight = 0;
        b.adapt_batch();
        b.begin_session();
        give(&mut b, low);
        give(&mut b, high);
        assert_eq!(b.alloc(layout), low);
        assert_eq!(b.alloc(layout), high);
        b.packing_left = 1;
        b.begin_session();
        give(&mut b, low);
        give(&mut b, high);
        assert_eq!(b.alloc(layout), high, "still lowest first after the hold");
        assert_eq!(b.alloc(layout), low);
    }

    #[test]
    fn blocks_of_a_chunk_in_use_within_the_period_are_not_trimmed() {
        let mut b = blocks();
        let layout = b.classes[0].0;
        end_period(&mut b);
        // One session of the period takes a block and gives it back.
        b.begin_session();
        let p = b.alloc(layout);
        // SAFETY: a free block just taken, used by nobody.
        unsafe { b.put(Retired::new(p.as_ptr(), layout)) };
        end_period(&mut b);
        assert_eq!(chunks(&b), 1, "a chunk used this period was trimmed");
        end_period(&mut b);
        assert_eq!(chunks(&b), 0);
    }
}
