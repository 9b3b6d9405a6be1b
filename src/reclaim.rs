//! The one place that talks to the epoch library (crossbeam-epoch).
//!
//! Owns: pinning for readers' tree walks, and deferred freeing of retired memory. Must
//! not: run user code — what is retired here is raw memory (nodes, drained entries whose
//! value was already moved out), freed by layout alone, so no value's `Drop` can ever run
//! inside a reclamation callback, on whatever thread the collector picks.

use core::alloc::Layout;

pub(crate) use crossbeam_epoch::Guard;

/// Pin the current thread: memory retired from now on is not freed until this guard (and
/// every other guard pinned before the retirement) is dropped.
#[inline]
pub(crate) fn pin() -> Guard {
    crossbeam_epoch::pin()
}

/// Free `ptr` (allocated by the global allocator with `layout`) once every thread pinned
/// now has unpinned.
///
/// # Safety
/// `ptr` was allocated with `layout` by the global allocator, is unreachable from every
/// published tree version (retire-after-unlink), is retired exactly once, and needs no drop
/// glue (only its bytes are freed).
pub(crate) unsafe fn retire(guard: &Guard, ptr: *mut u8, layout: Layout) {
    struct Raw(*mut u8, Layout);
    // SAFETY: `Raw` is only deallocation rights to memory no thread uses any more (caller
    // contract); moving them to the collecting thread is sound.
    unsafe impl Send for Raw {}
    let raw = Raw(ptr, layout);
    // SAFETY: caller contract: after the grace period nobody can reach `ptr`, and the
    // closure only deallocates it with the layout it was allocated with.
    unsafe {
        guard.defer_unchecked(move || {
            let raw = raw;
            std::alloc::dealloc(raw.0, raw.1);
        });
    }
}
