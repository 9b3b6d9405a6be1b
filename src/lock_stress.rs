//! Multi-thread stress of the entry lock alone ([`crate::lock`]) on std threads.
//!
//! Owns: tests that hammer one [`EntryLock`] (and, for the detach path, a short sequence of
//! them) with several readers and one writer on real threads, checking what loom checks
//! exhaustively on tiny models (`tests/loom.rs`) at a scale loom cannot reach, and under
//! Miri for data races on the guarded value. Must not: depend on the tree or the map; the
//! writers' lock of the map is stood in for by a `RwLock<()>` so the readers' slow path
//! ([`EntryLock::read_locked`]) is exercised too.
//!
//! Sizes: a full run takes well under two seconds in release; under Miri, or with
//! `RCU_RANGEMAP_SMALL` set, the iteration counts shrink to a few dozen.

use crate::lock::{EntryLock, LockDomain, ReadFail, ATTACHED, DETACHED, WRITER};
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::thread;

/// Reader threads per test (plus one writer).
const READERS: usize = 3;

/// Whether to run the small sizes (Miri, or `RCU_RANGEMAP_SMALL` set).
fn small() -> bool {
    cfg!(miri) || std::env::var_os("RCU_RANGEMAP_SMALL").is_some()
}

/// Writer sessions per test.
fn sessions() -> u64 {
    if small() {
        40
    } else {
        100_000
    }
}

/// A pair guarded by an [`EntryLock`]: the writer stores `.0` then `.1`, so a reader that
/// got in while the writer writes could see them differ.
struct Guarded {
    lock: EntryLock,
    pair: UnsafeCell<(u64, u64)>,
}

// SAFETY: `pair` is written only by the writer while it holds the entry write-locked (after
// `write_lock` returned and before `LockDomain::end`) or after `detach` drained it, and read
// only by readers holding a read count; the lock protocol orders every such write against
// every such read. That ordering is exactly what these tests check.
unsafe impl Sync for Guarded {}

impl Guarded {
    fn new(v: u64) -> Self {
        Guarded {
            lock: EntryLock::new_attached(),
            pair: UnsafeCell::new((v, v)),
        }
    }

    /// Read both halves (each a volatile load, so a torn pair is not optimised away).
    ///
    /// # Safety
    /// The caller holds a read count on `self.lock`, or no other thread runs.
    unsafe fn read(&self) -> (u64, u64) {
        let p = self.pair.get();
        // SAFETY: `p` is valid and aligned; the caller's read count orders this read after
        // the last write (the `Sync` impl's invariant).
        unsafe {
            (
                ptr::read_volatile(ptr::addr_of!((*p).0)),
                ptr::read_volatile(ptr::addr_of!((*p).1)),
            )
        }
    }

    /// Write `v` in two steps, `.0` first; `step` may yield between them to widen the
    /// window in which a broken lock would let a reader see a torn pair.
    ///
    /// # Safety
    /// The caller holds the entry write-locked (or drained and detached).
    unsafe fn write_two_steps(&self, v: u64, step: bool) {
        let p = self.pair.get();
        // SAFETY: `p` is valid and aligned; the caller's write lock excludes all readers.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*p).0), v) };
        if step {
            thread::yield_now();
        }
        // SAFETY: as above.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*p).1), v) };
    }
}

/// What one reader thread saw.
#[derive(Default, Debug)]
struct ReaderStats {
    /// Fast-path reads that succeeded.
    fast_ok: u64,
    /// Fast-path attempts refused with `Locked`.
    locked: u64,
    /// Fast-path attempts refused with `Detached` (the detach test only).
    detached: u64,
    /// Slow-path reads (after a `Locked` refusal).
    slow_ok: u64,
    /// Successful reads (either path) that happened before the writer had finished.
    ok_during_writer: u64,
}

/// One entry, one writer changing its pair in two steps per session, `READERS` readers
/// taking the fast path and falling back to the slow path when refused. No reader ever
/// sees a torn pair; a reader's successive reads never go back in time; the writer
/// completes every session; the readers' reads succeed.
#[test]
fn readers_never_see_a_torn_pair() {
    let sessions = sessions();
    let domain = LockDomain::new();
    let entry = Guarded::new(0);
    // The map's writers' lock: writers exclusive for a whole session, slow readers shared.
    let writers = RwLock::new(());
    let writer_done = AtomicBool::new(false);
    let sessions_done = AtomicUsize::new(0);

    let stats: Vec<ReaderStats> = thread::scope(|scope| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut st = ReaderStats::default();
                    let mut last = 0;
                    loop {
                        // Acquire: pairs with the writer's Release store below; once set,
                        // every session has ended before this attempt.
                        let done = writer_done.load(Ordering::Acquire);
                        let seen = match entry.lock.try_read(&domain) {
                            Ok(()) => {
                                // SAFETY: we hold a read count.
                                let pair = unsafe { entry.read() };
                                entry.lock.read_unlock(&domain);
                                st.fast_ok += 1;
                                // Leave the writer some CPU on a small machine.
                                if st.fast_ok % 16 == 0 {
                                    thread::yield_now();
                                }
                                pair
                            }
                            Err(ReadFail::Locked) => {
                                assert!(!done, "refused after the last session ended");
                                st.locked += 1;
                                // Slow path: no session can be active under the shared lock.
                                let _shared = writers.read().unwrap();
                                assert_eq!(entry.lock.read_locked(), Ok(()));
                                // SAFETY: we hold a read count.
                                let pair = unsafe { entry.read() };
                                entry.lock.read_unlock(&domain);
                                st.slow_ok += 1;
                                pair
                            }
                            Err(other) => panic!("unexpected refusal {other:?}"),
                        };
                        assert_eq!(seen.0, seen.1, "torn pair {seen:?}");
                        assert!(seen.0 >= last, "went back from {last} to {}", seen.0);
                        last = seen.0;
                        if done {
                            assert_eq!(last, sessions, "a read after the writer saw an old value");
                            break;
                        }
                        st.ok_during_writer += 1;
                    }
                    st
                })
            })
            .collect();

        scope.spawn(|| {
            for v in 1..=sessions {
                let _exclusive = writers.write().unwrap();
                let s = domain.begin();
                entry.lock.write_lock(&domain, s);
                // Transient readers may hold counts now (they back off at their re-check),
                // but no writer offset is left and the entry is ours.
                assert!(entry.lock.is_locked_by(s));
                assert!((ATTACHED..WRITER).contains(&entry.lock.count()));
                // SAFETY: we hold the entry write-locked.
                unsafe { entry.write_two_steps(v, v % 4 == 0) };
                domain.end(s);
                sessions_done.fetch_add(1, Ordering::Relaxed);
            }
            // Release: pairs with the readers' Acquire load.
            writer_done.store(true, Ordering::Release);
        });

        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });

    assert_eq!(sessions_done.load(Ordering::Relaxed) as u64, sessions);
    assert_eq!(entry.lock.count(), ATTACHED);
    // SAFETY: all other threads have been joined.
    assert_eq!(unsafe { entry.read() }, (sessions, sessions));
    let fast_ok: u64 = stats.iter().map(|s| s.fast_ok).sum();
    let slow_ok: u64 = stats.iter().map(|s| s.slow_ok).sum();
    assert!(stats.iter().all(|s| s.fast_ok >= 1), "{stats:?}");
    assert!(fast_ok + slow_ok >= READERS as u64, "{stats:?}");
    eprintln!("readers_never_see_a_torn_pair: {sessions} sessions, readers {stats:?}");
}

/// The detach path under load. Each session removes the live entry (moves its value out,
/// publishes the next entry, detaches the removed one and "retires" it by overwriting its
/// value) and ends. Readers look up the live entry and `try_read` it, often just as it is
/// being removed (transient readers the detach waits out). A reader that gets `Ok` must see
/// that entry's live value, never a moved-out or retired one; every removed entry ends at
/// `DETACHED`.
#[test]
fn removed_entries_are_never_read() {
    /// The pair of a removed entry once its value is moved out.
    const MOVED: u64 = u64::MAX - 1;
    /// The pair of a retired entry.
    const RETIRED: u64 = u64::MAX;

    let sessions = if small() { 24 } else { 50_000 };
    let domain = LockDomain::new();
    // Entry `i`'s live value is `i`. Entries are never freed here: "retired" is the value.
    let entries: Vec<Guarded> = (0..=sessions).map(Guarded::new).collect();
    // The published "tree": the index of the live entry.
    let live = AtomicUsize::new(0);
    let writer_done = AtomicBool::new(false);
    let retired = AtomicUsize::new(0);

    let stats: Vec<ReaderStats> = thread::scope(|scope| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut st = ReaderStats::default();
                    for n in 0u64.. {
                        // Acquire: pairs with the writer's Release stores.
                        let done = writer_done.load(Ordering::Acquire);
                        let i = live.load(Ordering::Acquire);
                        let e = &entries[i];
                        // Sometimes dawdle between the lookup and the lock, as a tree walk
                        // can: the entry may be removed meanwhile (a transient reader).
                        if n % 8 == 0 {
                            thread::yield_now();
                        }
                        match e.lock.try_read(&domain) {
                            Ok(()) => {
                                // SAFETY: we hold a read count.
                                let pair = unsafe { e.read() };
                                e.lock.read_unlock(&domain);
                                assert_eq!(pair, (i as u64, i as u64), "entry {i} read {pair:?}");
                                st.fast_ok += 1;
                                if done {
                                    break;
                                }
                                st.ok_during_writer += 1;
                            }
                            Err(ReadFail::Locked) => {
                                assert!(!done, "refused after the last session ended");
                                st.locked += 1;
                                thread::yield_now();
                            }
                            Err(ReadFail::Detached) => {
                                assert!(!done, "the live entry is detached");
                                st.detached += 1;
                            }
                            Err(ReadFail::Limit) => panic!("limit with {READERS} readers"),
                        }
                    }
                    st
                })
            })
            .collect();

        scope.spawn(|| {
            for (i, old) in entries[..sessions as usize].iter().enumerate() {
                let s = domain.begin();
                old.lock.write_lock(&domain, s);
                // SAFETY: we hold `old` write-locked.
                unsafe { old.write_two_steps(MOVED, i % 16 == 0) };
                // Release: publishes the next entry (the new "root").
                live.store(i + 1, Ordering::Release);
                old.lock.detach(&domain);
                assert_eq!(old.lock.count(), DETACHED);
                // SAFETY: `old` is detached and drained: no reader holds or can take a count.
                unsafe { old.write_two_steps(RETIRED, false) };
                retired.fetch_add(1, Ordering::Relaxed);
                domain.end(s);
                // Let readers at the new live entry now and then.
                if i % 4 == 0 {
                    thread::yield_now();
                }
            }
            // Release: pairs with the readers' Acquire load.
            writer_done.store(true, Ordering::Release);
        });

        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });

    assert_eq!(retired.load(Ordering::Relaxed) as u64, sessions);
    for (i, e) in entries.iter().enumerate() {
        let last = i as u64 == sessions;
        assert_eq!(e.lock.count(), if last { ATTACHED } else { DETACHED });
        // SAFETY: all other threads have been joined.
        let pair = unsafe { e.read() };
        assert_eq!(
            pair,
            if last {
                (sessions, sessions)
            } else {
                (RETIRED, RETIRED)
            }
        );
    }
    assert!(stats.iter().all(|s| s.fast_ok >= 1), "{stats:?}");
    eprintln!("removed_entries_are_never_read: {sessions} sessions, readers {stats:?}");
}
