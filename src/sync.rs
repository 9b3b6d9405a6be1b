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

/// Delay injection (feature `delay-injection`, test-only): at the marked points of the lock,
/// lookup (between the descent and the count) and commit paths, sometimes yield or sleep so
/// stress tests widen the race windows.
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

/// The most bytes [`prefetch`] and [`prefetch_write`] ask for: 16 lines, as many as the
/// largest node has (an internal node with `u128` keys; `tree::node` asserts it fits) and
/// the entries of values up to ~1 KiB. The lines of a larger entry come in as its value is
/// moved in; a prefetch per line of, say, a 1 MiB value (16,384 of them) would cost far
/// more than the misses it could hide.
pub(crate) const PREFETCH_MAX: usize = 1024;

/// Ask the CPU to start loading the cache lines of the first `bytes` bytes at `p` (at most
/// [`PREFETCH_MAX`]), for loads or stores soon after that would otherwise wait on them. A
/// hint only: it never faults and changes no memory, so any address will do; a no-op off
/// x86-64 and under Miri.
#[inline]
pub(crate) fn prefetch(p: *const u8, bytes: usize) {
    let bytes = bytes.min(PREFETCH_MAX);
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

/// [`prefetch`], for lines the caller is about to write: asks for them in exclusive state.
/// A line that another core's cache holds (a recycled node block a reader walked, an entry
/// whose count a reader bumped) comes in *shared* after a read prefetch, and the first
/// store to it waits for a second round trip to take it over; PREFETCHW takes it over at
/// once. Where the CPU lacks PREFETCHW (CPUID `0x8000_0001`, ECX bit 8, checked once per
/// process), this is [`prefetch`]. Same contract: a hint, any address will do.
#[inline]
pub(crate) fn prefetch_write(p: *const u8, bytes: usize) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if has_prefetchw() {
        let bytes = bytes.min(PREFETCH_MAX);
        let mut off = 0;
        while off < bytes {
            // SAFETY: the CPU has PREFETCHW (checked above), and like every prefetch it
            // never faults and changes no memory, whatever the address.
            unsafe {
                core::arch::asm!(
                    "prefetchw byte ptr [{}]",
                    in(reg) p.wrapping_add(off),
                    options(nostack, readonly, preserves_flags)
                )
            };
            off += 64;
        }
        return;
    }
    prefetch(p, bytes)
}

/// Whether this CPU executes PREFETCHW (AMD's 3DNowPrefetch bit, which Intel sets too
/// since Broadwell). Asked of CPUID once, then cached.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline]
fn has_prefetchw() -> bool {
    // Plain std atomics: a cached fact about the CPU, not part of the lock protocol.
    use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
    /// 0: not asked yet; 1: no; 2: yes.
    static HAS: AtomicU8 = AtomicU8::new(0);
    // Relaxed, load and store: every thread that asks gets the same answer and stores the
    // same value, so a thread that reads 0 only asks again; nothing else is ordered by it.
    match HAS.load(Relaxed) {
        0 => {
            // SAFETY: CPUID exists on every x86-64 CPU, and leaf 0x8000_0000 reports the
            // highest extended leaf, so leaf 0x8000_0001 is only asked where it exists.
            // (`__cpuid` is a safe function in newer Rust; MSRV 1.75 needs the block.)
            #[allow(unused_unsafe)]
            let yes = unsafe {
                use core::arch::x86_64::__cpuid;
                __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
            };
            HAS.store(if yes { 2 } else { 1 }, Relaxed);
            yes
        }
        v => v == 2,
    }
}
