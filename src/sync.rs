//! The atomics, thread and park primitives the lock protocol is built from.
//!
//! Owns: the one switch between `std` (normal builds) and `loom` (`--cfg loom`), so the
//! code in [`crate::lock`] that loom explores is exactly the code that ships.
//! Must not: contain protocol logic. Everything here is a re-export or a thin helper.

#[cfg(loom)]
pub(crate) use loom::{
    sync::atomic::{AtomicU32, AtomicU64},
    sync::Mutex,
    thread::{current, park, Thread},
};

#[cfg(not(loom))]
pub(crate) use std::{
    sync::atomic::{AtomicU32, AtomicU64},
    sync::Mutex,
    thread::{current, park, Thread},
};

pub(crate) use core::sync::atomic::Ordering;

/// One step of a bounded spin. Under loom a spin must be a yield, or the model checker
/// would explore an unbounded busy loop.
#[inline]
pub(crate) fn spin() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// Give the CPU to another thread (a real yield under loom too).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Delay injection (feature `delay-injection`, test-only): at the marked points of the lock
/// and commit paths, sometimes yield or sleep so stress tests widen the race windows.
/// Compiles to nothing without the feature and under loom (loom already explores every
/// interleaving).
#[inline]
pub(crate) fn inject_delay() {
    #[cfg(all(feature = "delay-injection", not(loom)))]
    delay::maybe_delay();
}

#[cfg(all(feature = "delay-injection", not(loom)))]
mod delay {
    use std::cell::Cell;

    thread_local! {
        static STATE: Cell<u64> = Cell::new(0x9E37_79B9_7F4A_7C15 ^ (std::process::id() as u64));
    }

    pub(super) fn maybe_delay() {
        let r = STATE.with(|s| {
            // xorshift64*: cheap, per-thread, no shared state.
            let mut x = s.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            s.set(x);
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        });
        match r % 64 {
            0 => std::thread::sleep(std::time::Duration::from_micros(50)),
            1..=7 => std::thread::yield_now(),
            _ => {}
        }
    }
}

/// Ask the CPU to start loading the cache lines of the `bytes` bytes at `p`, for loads or
/// stores soon after that would otherwise wait on them. A hint only: it never faults and
/// changes no memory, so any address will do; a no-op off x86-64 and under Miri.
#[inline]
pub(crate) fn prefetch(p: *const u8, bytes: usize) {
    let mut off = 0;
    while off < bytes {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // SAFETY: a prefetch never faults and changes no memory, whatever the address.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(off) as *const i8,
            )
        };
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = p;
        off += 64;
    }
}
