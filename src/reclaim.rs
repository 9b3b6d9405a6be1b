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
//! 3. The next session takes the pool's batches into its [`Blocks`] free lists
//!    ([`Recycler::take`]) and allocates from them.
//!
//! With one-op sessions (about five blocks each) that is one deferred function per dozen
//! sessions, or per ~200 while grace periods are long, instead of one per session. Blocks
//! go back to the allocator beyond the caps below, when the free lists are trimmed
//! ([`Blocks::begin_session`]), and when the map (with its limbo and pool) is gone.
//!
//! # How many free blocks to keep
//!
//! A grace period lasts until every pinned thread has unpinned, so a reader that the
//! scheduler takes off the CPU in the middle of a lookup holds every block retired after
//! it for a whole time slice. With more threads than cores that is the common case: in W2
//! (two readers and a writer on two cores) one thread is always off the CPU, usually a
//! pinned reader, and the writer's blocks come back in floods of tens of thousands after
//! each of its time slices. With the free lists capped at 8,192 blocks per layout, each
//! flood overflowed them and each slice then allocated afresh: 0.6 – 0.85 million blocks
//! freed and as many allocated per second, about 40% of the writer's time. So the caps are
//! large enough for a flood ([`CLASS_CAP`], [`POOL_CAP`]), and what a map keeps follows
//! what it used: every [`TRIM_PERIOD`] sessions, the blocks that lay unused in a free list
//! all that time go back to the allocator. A map whose writer stops keeps its free blocks
//! until its next sessions or its drop.
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

/// Most blocks a map's pool keeps waiting for the next session (the rest are freed).
const POOL_CAP: usize = 1 << 16;
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
/// Most free blocks of one layout a map keeps: at 512 bytes for an internal node, 384 for
/// a leaf and 24 for a `u64` entry, at most 29 MiB for the three lists of a `u64` map.
const CLASS_CAP: usize = 1 << 15;
/// Sessions between two trims of the free lists ([`Blocks::begin_session`]): long enough to
/// span many floods of returning blocks at full session rate (about 0.1 s at 600,000
/// sessions a second), so a list that each flood drains is never trimmed.
const TRIM_PERIOD: u32 = 1 << 16;
/// Emptied batch vectors kept for their capacity.
const SPARE_CAP: usize = 4;

/// Pin the current thread: memory retired from now on is not freed until this guard (and
/// every other guard pinned before the retirement) is dropped.
#[inline]
pub(crate) fn pin() -> Guard {
    crossbeam_epoch::pin()
}

/// Raw memory to free after a grace period: a pointer and the layout it was allocated with.
pub(crate) struct Retired {
    ptr: *mut u8,
    layout: Layout,
}

impl Retired {
    /// # Safety
    /// `ptr` was allocated by the global allocator with `layout`, and needs no drop glue
    /// (only its bytes are freed).
    pub(crate) unsafe fn new(ptr: *mut u8, layout: Layout) -> Self {
        Retired { ptr, layout }
    }

    /// Give the block back to the allocator.
    ///
    /// # Safety
    /// Nothing uses the block any more (the invariant of wherever it was kept).
    unsafe fn dealloc(self) {
        // SAFETY: `Retired::new`'s contract (allocated with `layout` by the global
        // allocator) and the caller's (unused).
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Deallocation rights to retired blocks on their way to a pool, which any thread may hold.
struct Batch(Vec<Retired>);

// SAFETY: a batch is only the right to reuse or free memory that no thread will use again
// once its grace period is over (the caller contract of `Recycler::retire`); moving that
// right to the collecting thread, or into the pool that another thread reads, is sound.
unsafe impl Send for Batch {}

/// A map's pool of retired batches whose grace period is over, waiting for its next writer
/// session ([`Recycler::take`]). Shared with the deferred functions of its pending batches,
/// so it outlives the map until the last of them has run.
pub(crate) struct Recycler {
    pool: Arc<Pool>,
}

/// Invariant: no thread can reach any block of `ready` (each batch's grace period is over);
/// `ready` holds at most `POOL_CAP` blocks in all. `nonempty` is set (under the lock) when a
/// batch comes back, kept or freed, and cleared when `take` empties `ready` and reads its
/// `returned` count: a hint that spares sessions the lock when there is nothing to take (a
/// stale reading only delays a take by a session).
struct Pool {
    ready: Mutex<Ready>,
    nonempty: AtomicBool,
}

#[derive(Default)]
struct Ready {
    batches: Vec<Batch>,
    blocks: usize,
    /// Batches whose grace period ended since the last take (kept or freed).
    returned: usize,
}

impl Pool {
    /// Keep `batch` for the next session, or free it if the pool is full.
    fn give_back(&self, batch: Batch) {
        let n = batch.0.len();
        let rejected = {
            let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
            ready.returned += 1;
            // Relaxed: a hint only (see `Pool`); the batch, and the count of returned
            // ones, are handed over by the mutex.
            self.nonempty.store(true, Ordering::Relaxed);
            if ready.blocks + n <= POOL_CAP {
                ready.blocks += n;
                ready.batches.push(batch);
                None
            } else {
                Some(batch)
            }
        };
        for r in rejected.into_iter().flat_map(|b| b.0) {
            // SAFETY: the batch's grace period is over (the deferred function that calls us
            // runs only then), so no thread can reach the block.
            unsafe { r.dealloc() };
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let ready = self.ready.get_mut().unwrap_or_else(|p| p.into_inner());
        for r in ready.batches.drain(..).flat_map(|b| b.0) {
            // SAFETY: type invariant: unreachable; the pool was its last owner.
            unsafe { r.dealloc() };
        }
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

    /// Move every block whose grace period is over into `blocks`' free lists. Never blocks:
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
                ready.blocks = 0;
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

/// A map's block bookkeeping, carried from one writer session to the next: the free blocks
/// nodes and entries are allocated from (one free list per layout the map uses: leaf,
/// internal node, entry), and the retired blocks not yet handed to the collector.
///
/// Invariants:
/// - every block in a class's `free` was allocated by the global allocator with the class's
///   `layout`, and no thread can reach it (it was retired and its grace period is over, or
///   the session allocated it and unlinked it before publishing); each list holds at most
///   [`CLASS_CAP`] blocks;
/// - a class's `low` is at most the length its list has had at any moment since the last
///   trim (so the list's first `low` blocks have not been taken since);
/// - every block in `limbo` is unreachable from every tree version published from now on
///   (a committed session unlinked it), needs no drop glue, and is listed once; readers
///   pinned before its unlink may still read it, so it is reused or freed only after a
///   grace period ([`Recycler::commit`], or `Drop`);
/// - `taken` and `spare` are empty lists kept for their capacity.
///
/// (`limbo_at_begin`, `in_flight` and `batch` only pace the hand-overs: no safety argument
/// rests on them, and a wrong count could only make a batch hand over early or late.)
pub(crate) struct Blocks {
    classes: [Class; 3],
    limbo: Vec<Retired>,
    /// `limbo`'s length when the current session began.
    limbo_at_begin: usize,
    /// Batches handed to the collector whose return the map has not seen yet.
    in_flight: usize,
    /// Blocks the limbo collects before a hand-over ([`Blocks::adapt_batch`]).
    batch: usize,
    spare: Vec<Vec<Retired>>,
    taken: Vec<Batch>,
    /// Sessions begun since the last trim.
    sessions: u32,
}

/// The free blocks of one layout (see [`Blocks`]' invariants).
struct Class {
    layout: Layout,
    /// Taken from the end, so the blocks at the front are the longest unused.
    free: Vec<NonNull<u8>>,
    /// The fewest blocks `free` has held since the last trim.
    low: usize,
}

impl Blocks {
    /// Empty free lists for the given layouts.
    pub(crate) fn new(layouts: [Layout; 3]) -> Self {
        Blocks {
            classes: layouts.map(|layout| Class {
                layout,
                free: Vec::new(),
                low: 0,
            }),
            limbo: Vec::new(),
            limbo_at_begin: 0,
            in_flight: 0,
            batch: BATCH,
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
    /// every free block that none of them took.
    #[inline]
    pub(crate) fn begin_session(&mut self) {
        self.limbo_at_begin = self.limbo.len();
        self.sessions += 1;
        if self.sessions >= TRIM_PERIOD {
            self.trim();
        }
    }

    /// Free each list's first `low` blocks (untouched since the last trim); start a period.
    #[cold]
    fn trim(&mut self) {
        self.sessions = 0;
        for c in &mut self.classes {
            for b in c.free.drain(..c.low) {
                // SAFETY: type invariant: allocated with `c.layout`, unreachable.
                unsafe { std::alloc::dealloc(b.as_ptr(), c.layout) };
            }
            c.low = c.free.len();
        }
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

    /// A block for `layout`: a recycled one if there is one, else a new allocation.
    #[inline]
    pub(crate) fn alloc(&mut self, layout: Layout) -> NonNull<u8> {
        if let Some(c) = self.classes.iter_mut().find(|c| c.layout == layout) {
            if let Some(b) = c.free.pop() {
                c.low = c.low.min(c.free.len());
                // Start taking over the block the next allocation of this layout gets (a
                // node copy is a burst of stores into a cold block, often one a reader's
                // cache still holds): one-op sessions at N = 10k, 2M in 0.68–0.78 s against
                // 0.71–0.78 s with a read prefetch, six alternating runs beside CI; with a
                // write prefetch, the flat-out W2 writer ÷ SkipMap's went from 0.95 to 1.10
                // at N = 100k and from 1.18 to 1.39 at 1k (see `sync::prefetch_write`).
                if let Some(&next) = c.free.last() {
                    crate::sync::prefetch_write(next.as_ptr(), layout.size());
                }
                return b;
            }
        }
        debug_assert!(layout.size() > 0);
        // SAFETY: `layout` is non-zero-sized (nodes and entries hold a lock or keys).
        let p = unsafe { std::alloc::alloc(layout) };
        NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
    }

    /// Keep the block for reuse, or free it if its list is full or its layout is not one
    /// of ours.
    ///
    /// # Safety
    /// `r`'s block is unreachable by every thread and needs no drop glue.
    pub(crate) unsafe fn put(&mut self, r: Retired) {
        match self.classes.iter_mut().find(|c| c.layout == r.layout) {
            Some(c) if c.free.len() < CLASS_CAP => {
                // SAFETY (invariant): allocated with this layout (`Retired::new`), and
                // unreachable (caller contract). Never null: it was allocated.
                c.free.push(unsafe { NonNull::new_unchecked(r.ptr) });
            }
            // SAFETY: caller contract.
            _ => unsafe { r.dealloc() },
        }
    }

    /// Free blocks of each class, for tests.
    #[cfg(test)]
    fn free_counts(&self) -> [usize; 3] {
        [0, 1, 2].map(|i| self.classes[i].free.len())
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        if !self.limbo.is_empty() {
            // Readers pinned before the limbo's blocks were unlinked may still read them
            // (if this is the map's drop, none is left, but a grace period is cheap here).
            let batch = Batch(core::mem::take(&mut self.limbo));
            let free = move || {
                for r in batch.0 {
                    // SAFETY: type invariant (unlinked, plain data, listed once), and this
                    // runs after the grace period below.
                    unsafe { r.dealloc() };
                }
            };
            // SAFETY: `free` runs only once every thread pinned now has unpinned.
            unsafe { pin().defer_unchecked(free) };
        }
        for c in &mut self.classes {
            for b in c.free.drain(..) {
                // SAFETY: type invariant: allocated with `c.layout`, unreachable.
                unsafe { std::alloc::dealloc(b.as_ptr(), c.layout) };
            }
        }
    }
}

// SAFETY: the blocks are unused memory (type invariant) that the owner may reuse or free on
// any thread.
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

    /// `n` fresh blocks of class 0, through `put`.
    fn fill(b: &mut Blocks, n: usize) {
        for r in fresh_batch(b, n).0 {
            // SAFETY: allocated with its layout just now, reachable by nobody, plain bytes.
            unsafe { b.put(r) };
        }
    }

    /// A batch of `n` fresh blocks of `b`'s class 0.
    fn fresh_batch(b: &Blocks, n: usize) -> Batch {
        let layout = b.classes[0].layout;
        Batch(
            (0..n)
                .map(|_| {
                    // SAFETY: non-zero-sized layout.
                    let p = unsafe { std::alloc::alloc(layout) };
                    assert!(!p.is_null());
                    // SAFETY: allocated with `layout` just now, reachable by nobody.
                    unsafe { Retired::new(p, layout) }
                })
                .collect(),
        )
    }

    /// One session that takes a block of class 0 and gives it back.
    fn session_using_one(b: &mut Blocks) {
        b.begin_session();
        let layout = b.classes[0].layout;
        let p = b.alloc(layout);
        // SAFETY: a free block just taken, used by nobody.
        unsafe { b.put(Retired::new(p.as_ptr(), layout)) };
    }

    /// Skip to the session that completes the period, and begin it (it trims). Counting
    /// the sessions one by one would take Miri minutes.
    fn end_period(b: &mut Blocks) {
        b.sessions = TRIM_PERIOD - 1;
        b.begin_session();
    }

    #[test]
    fn trims_free_blocks_that_a_whole_period_left_unused() {
        let mut b = blocks();
        fill(&mut b, 100);
        // The period the blocks arrived in started with an empty list, so none of them
        // was unused throughout it.
        end_period(&mut b);
        assert_eq!(b.free_counts(), [100, 0, 0]);
        // Each session of this period takes one block, so 99 stay unused throughout.
        for _ in 0..3 {
            session_using_one(&mut b);
        }
        end_period(&mut b);
        assert_eq!(b.free_counts(), [1, 0, 0]);
        // A period that takes nothing gives back the last one.
        end_period(&mut b);
        assert_eq!(b.free_counts(), [0, 0, 0]);
    }

    #[test]
    fn the_session_that_completes_a_period_trims() {
        let mut b = blocks();
        fill(&mut b, 5);
        end_period(&mut b);
        b.sessions = TRIM_PERIOD - 2;
        b.begin_session();
        assert_eq!(b.free_counts(), [5, 0, 0], "trimmed a session early");
        b.begin_session();
        assert_eq!(b.free_counts(), [0, 0, 0]);
    }

    /// A session that retires `n` blocks of class 0 into `b`'s limbo and commits.
    fn session_retiring(r: &Recycler, b: &mut Blocks, n: usize) {
        b.begin_session();
        let layout = b.classes[0].layout;
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
    fn a_take_counts_down_the_batches_that_came_back_kept_or_freed() {
        let r = Recycler::new();
        let mut b = blocks();
        b.in_flight = 5;
        r.pool.give_back(fresh_batch(&b, 3));
        r.pool.give_back(fresh_batch(&b, 4));
        // A full pool frees the next batch, which has come back all the same.
        r.pool.ready.lock().unwrap().blocks = POOL_CAP;
        r.pool.give_back(fresh_batch(&b, 2));
        r.take(&mut b);
        assert_eq!(b.in_flight, 2);
        assert_eq!(b.free_counts(), [7, 0, 0]);
    }

    #[test]
    fn a_list_drained_within_the_period_is_not_trimmed() {
        let mut b = blocks();
        fill(&mut b, 10);
        end_period(&mut b);
        let layout = b.classes[0].layout;
        // One session of the next period takes all ten (and allocates one more) and gives
        // them back: every block was used, so the trim keeps them all.
        b.begin_session();
        let taken: Vec<_> = (0..11).map(|_| b.alloc(layout)).collect();
        for p in taken {
            // SAFETY: free blocks just taken or allocated, used by nobody.
            unsafe { b.put(Retired::new(p.as_ptr(), layout)) };
        }
        end_period(&mut b);
        assert_eq!(b.free_counts(), [11, 0, 0]);
    }
}
