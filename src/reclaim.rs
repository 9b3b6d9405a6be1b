//! The one place that talks to the epoch library (crossbeam-epoch).
//!
//! Owns: pinning for readers' tree walks, and deferred freeing of retired memory. Must
//! not: run user code — what is retired here is raw memory (nodes, drained entries whose
//! value was already moved out), freed by layout alone, so no value's `Drop` can ever run
//! inside a reclamation callback, on whatever thread the collector picks.
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

pub(crate) use crossbeam_epoch::Guard;

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
}

/// Free every block of `batch` once every thread pinned now has unpinned: one deferred
/// function per commit, however many blocks it retires.
///
/// # Safety
/// Every block is unreachable from every published tree version (retire-after-unlink) and
/// retired exactly once.
pub(crate) unsafe fn retire(guard: &Guard, batch: Vec<Retired>) {
    struct Batch(Vec<Retired>);
    // SAFETY: a `Batch` is only deallocation rights to memory no thread uses any more
    // (caller contract); moving them to the collecting thread is sound.
    unsafe impl Send for Batch {}
    let batch = Batch(batch);
    // SAFETY: caller contract: after the grace period nobody can reach the blocks, and the
    // closure only deallocates each with the layout it was allocated with (`Retired::new`).
    unsafe {
        guard.defer_unchecked(move || {
            let batch = batch;
            for r in batch.0 {
                std::alloc::dealloc(r.ptr, r.layout);
            }
        });
    }
}
