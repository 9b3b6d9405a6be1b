//! Loom models of the per-entry refcount lock (`src/lock.rs`, DESIGN.md section 2).
//!
//! Every model drives the real `rcu_rangemap::lock` code, built against loom's atomics,
//! mutex and park/unpark through `src/sync.rs`. The data a lock guards is a
//! `loom::cell::UnsafeCell`, so loom reports any access to it that the lock's orderings do
//! not put in happens-before order (a data race, or a use after "free"). A lost wake-up
//! shows as a loom deadlock: every model has a writer that parks until a reader wakes it.
//!
//! | model                                  | what it proves |
//! |----------------------------------------|----------------|
//! | `reader_vs_writer`, `two_readers_vs_writer` | a reader never reads while the writer writes its two-step value; a reader never sees a torn value; a reader that starts after `end` succeeds and sees the complete new value (the two steps also stand for a put-back commit's move-out and refill, `Writer`'s `keep_entry`: both are writes of the session that holds the entry write-locked) |
//! | `writer_wakeup_never_lost`             | two readers leaving in any order while the writer waits in `write_lock` always wake it (the model terminates) |
//! | `detach_race_single_retire`            | the seed thread's detach race: a reader's `try_read` (and one retry) racing `write_lock` + move-out + `detach` + `end`; the entry is retired exactly once, only at `DETACHED`, and a reader that got `Ok` read the live value and released it before the move-out (the payload is overwritten at move-out and poisoned at retire: a later read would be a race) |
//! | `reused_entry_wake_held_reader`        | the 2025 kernel use-after-free: a reader's release races the writer draining, detaching and reusing the entry for another domain; the reader wakes through its own domain, never reads the reused `owner` field, and the right writer is woken |
//! | `reused_entry_wake_transient_reader`   | the same with a reader whose `try_read` races the session, so the wake-up can come from a transient reader the writer waits for in `detach` |
//! | `read_limit_two_fast_readers`          | at `READ_LIMIT - 1` two racing `try_read`s: exactly one succeeds, the other gets `Limit` and leaves the count unchanged |
//! | `read_limit_fast_and_slow_reader`      | the same with one fast-path and one slow-path (`read_locked`) reader |
//! | `session_end_unlocks_all_entries`      | two entries locked in one session refuse a reader with `Locked` during it, and both accept it (with the session's writes visible) once the reader sees the domain sequence move |
//! | `reader_meets_the_next_session`        | a reader whose re-check reads the *next* session's start (not the end of the session that wrote the entry) still has that writer's data in happens-before order: found by Miri in `lock_stress` (begin stored the sequence Relaxed, and a plain store does not continue `end`'s release sequence) |
//! | `transient_reader_of_removed_entry`    | a reader that meets an entry the session holds and then removes never gets `Ok`, in any interleaving, and the entry is retired only after its count is back to `DETACHED` |
//! | `commit_publishes_detaches_then_ends`  | the commit order, through `LockDomain::commit` (the function `Writer`'s commit runs): a reader of the old version never gets `Ok` on an entry the session removed and emptied, and a reader refused as detached finds the new version when it reloads the root |
//!
//! What the suite relies on, and its known blind spots:
//!
//! - `lock.rs` uses `SPINS = 0` under loom, so a waiting writer registers and parks at
//!   once. With a spin (a `yield_now` under loom) loom never explored the writer parking in
//!   `detach`: a `read_unlock` that forgot to wake on `count == WRITER` passed every model.
//!   Loom's DPOR does not backtrack into a thread that is in its yield state.
//! - Loom's `unpark` hands the unparker's causality to the target at once, even if the
//!   target never parks; loom also cannot take an `unpark` of a thread blocked in `join`.
//!   So writers here are spawned threads, and `main` only joins.
//! - Preemption-bounded: `two_readers_vs_writer` runs with at most two preemptions.
//! - Mutation-checked: each of these breakages made at least one model fail, and each
//!   model failed on at least one of them — a missed wake on either wait, registering
//!   after the check, no re-check, no detach wait, `seq` stored after the unlocking
//!   subtraction, a single park without re-check, an off-by-one limit, and (in the test)
//!   the kernel's read of the entry's owner after the decrement or a wake through another
//!   domain; in the commit, the session's end before the detach and the detach before the
//!   publish.
//! - Orderings (one Acquire/Release at a time made Relaxed, 2026-12-01): caught are
//!   `begin`'s and `end`'s stores, `try_read`'s first count load, CAS and re-check,
//!   `read_unlock`'s decrement, `write_lock`'s wait and subtraction, and `detach`'s final
//!   store. Not caught, each for a reason:
//!   - `write_lock`'s `fetch_add` (Acquire): redundant, the wait's Acquire load after it
//!     synchronises with the same releases.
//!   - `read_locked`'s loads: the writers' lock, which slow-path readers hold, orders the
//!     session's writes for them (see the comment there).
//!   - `detach`'s `fetch_add` (AcqRel) and its wait's Acquire load: they order a transient
//!     reader's accesses before the entry's reuse, but such a reader touches only the
//!     lock's atomics between its increment and decrement, which loom does not check
//!     against a reuse; and with one or two transient readers the wake-up's mutex orders
//!     them anyway. A model with three transient readers and a probe cell did not finish
//!     in 300 s. In the map, epoch reclamation orders the reuse in any case.
//! - Not here: the map's root store in `publish` (Release, paired with the Acquire load in
//!   `RangeMap::root`). The root is a std atomic outside these models (crossbeam-epoch is
//!   not loom-aware); Miri checks it instead. `stress::fresh_root_is_read_whole` fails
//!   under Miri with either side Relaxed, on every seed tried (a reader polling for a key
//!   only the next commit inserts descends the new root with nothing else ordering its
//!   nodes), and in a Miri run of all of `tests/stress.rs` `drop_counting` or
//!   `removed_never_readable` failed too. The first mutation run missed it because it ran
//!   only `stress::torn_values`, whose writer, under Miri's speed and the test's 300 ms
//!   cap, ran three sessions that all kept the published root (`get_mut`s and put-backs).
//!
//! Run (as CI does):
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=3 cargo test --release --test loom`.
//! Without `LOOM_MAX_PREEMPTIONS` the models use a bound of 3 as well.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use rcu_rangemap::lock::{EntryLock, LockDomain, ReadFail, ATTACHED, DETACHED, READ_LIMIT};

/// Preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set.
const DEFAULT_PREEMPTIONS: usize = 3;

/// Run `f` under loom with a bounded number of preemptions.
fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    model_bounded(usize::MAX, f);
}

/// Run `f` under loom with at most `max` preemptions (fewer if `LOOM_MAX_PREEMPTIONS`
/// says so): for the models with more threads, whose state space grows fastest.
fn model_bounded<F>(max: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    let bound = builder.preemption_bound.unwrap_or(DEFAULT_PREEMPTIONS);
    builder.preemption_bound = Some(bound.min(max));
    // Count the explored executions (a std atomic: outside the model).
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = std::time::Instant::now();
    {
        let runs = runs.clone();
        builder.check(move || {
            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f();
        });
    }
    eprintln!(
        "{}: {} executions in {:.2?} (preemption bound {:?})",
        thread_name(),
        runs.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed(),
        builder.preemption_bound,
    );
}

/// The running test's name (the test harness names its threads after the tests).
fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_string()
}

/// The payload value of a live entry.
const LIVE: u32 = 7;
/// What the writer leaves in the payload when it moves a removed entry's value out.
const MOVED: u32 = 0x3017;
/// What the retiring thread writes over the payload: standing in for "freed".
const POISON: u32 = 0xDEAD;

/// An entry: the lock and the data it guards.
struct Entry {
    lock: EntryLock,
    /// Written by the writer in two steps (`.0` then `.1`); `.0 == .1` between sessions.
    value: UnsafeCell<(u32, u32)>,
}

impl Entry {
    fn new() -> Self {
        Entry {
            lock: EntryLock::new_attached(),
            value: UnsafeCell::new((0, 0)),
        }
    }

    /// Read the guarded value. The caller holds a read count (or is the writer).
    fn read(&self) -> (u32, u32) {
        // SAFETY: the pointer is valid (the cell lives in an `Arc`); loom checks that the
        // read is ordered after every write.
        self.value.with(|p| unsafe { *p })
    }

    /// The writer's two-step update: `.0` first, then `.1`, as two separate accesses.
    fn write_two_steps(&self, v: u32) {
        // SAFETY: as in `read`; loom checks that no read runs concurrently.
        self.value.with_mut(|p| unsafe { (*p).0 = v });
        self.value.with_mut(|p| unsafe { (*p).1 = v });
    }
}

/// An entry whose memory is retired (poisoned) or reused once it is detached.
struct Retirable {
    lock: EntryLock,
    /// `LIVE` while the entry is live, `POISON` after the retire.
    payload: UnsafeCell<u32>,
    /// Which domain the entry belongs to. Reinitialised when the memory is reused.
    owner: UnsafeCell<u32>,
    /// How many times the entry was retired.
    retired: AtomicUsize,
}

impl Retirable {
    fn new(owner: u32) -> Self {
        Retirable {
            lock: EntryLock::new_attached(),
            payload: UnsafeCell::new(LIVE),
            owner: UnsafeCell::new(owner),
            retired: AtomicUsize::new(0),
        }
    }

    /// Read the payload; the caller holds a read count.
    fn read_payload(&self) -> u32 {
        // SAFETY: valid pointer; loom checks the read against the retire's write.
        self.payload.with(|p| unsafe { *p })
    }

    /// Read the owner field; the caller holds a read count.
    fn read_owner(&self) -> u32 {
        // SAFETY: valid pointer; loom checks the read against the reuse's write.
        self.owner.with(|p| unsafe { *p })
    }

    /// The writer moves the value out of an entry it removes (holding its write lock).
    fn move_out(&self) {
        // SAFETY: valid pointer; loom reports a race if any reader access is unordered.
        self.payload.with_mut(|p| unsafe { *p = MOVED });
    }

    /// Hand the entry to "reclamation": only legal once the count is `DETACHED`.
    fn retire(&self) {
        assert_eq!(
            self.lock.count(),
            DETACHED,
            "retire before the count drained"
        );
        // SAFETY: valid pointer; loom reports a race if any reader access is unordered.
        self.payload.with_mut(|p| unsafe { *p = POISON });
        // Relaxed: a plain counter, read after the joins.
        self.retired.fetch_add(1, Ordering::Relaxed);
    }

    /// The retired memory is reused for a new entry of another domain.
    fn reuse_for(&self, owner: u32) {
        // SAFETY: valid pointer; loom reports a race if any reader access is unordered.
        self.owner.with_mut(|p| unsafe { *p = owner });
        self.payload.with_mut(|p| unsafe { *p = LIVE });
    }
}

/// One reader attempt of model 1: `try_read`, read the two-step value, `read_unlock`.
/// Returns whether it succeeded.
fn model1_attempt(domain: &LockDomain, entry: &Entry, ended: &AtomicBool) -> bool {
    // Acquire: if set, `end` happens before this attempt.
    let after_end = ended.load(Ordering::Acquire);
    // Relaxed snapshot of the domain sequence: if it shows the ended session, coherence
    // makes `try_read`'s Acquire re-check see it too, and the protocol alone must order the
    // session's writes before our read. (It does not promise success: without
    // happens-before the first count load may still see the writer offset and refuse,
    // which is allowed — the caller falls back to the slow path.)
    let saw_end = domain.current() == 2;
    match entry.lock.try_read(domain) {
        Ok(()) => {
            let (a, b) = entry.read();
            entry.lock.read_unlock(domain);
            assert_eq!(a, b, "torn read: ({a}, {b})");
            if after_end || saw_end {
                assert_eq!(a, 1, "a reader after the session saw the old value");
            }
            true
        }
        Err(fail) => {
            assert_eq!(fail, ReadFail::Locked);
            assert!(!after_end, "refused after the session ended");
            false
        }
    }
}

/// Model 1: `readers` reader threads, `attempts` attempts each, against a writer session
/// that updates the value in two steps.
fn model1(readers: usize, attempts: usize, max_preemptions: usize) {
    model_bounded(max_preemptions, move || {
        let domain = Arc::new(LockDomain::new());
        let entry = Arc::new(Entry::new());
        // Set by the writer after `end`: a reader that sees it starts after the session.
        let ended = Arc::new(AtomicBool::new(false));

        let writer = {
            let (domain, entry, ended) = (domain.clone(), entry.clone(), ended.clone());
            thread::spawn(move || {
                let s = domain.begin();
                entry.lock.write_lock(&domain, s);
                entry.write_two_steps(1);
                domain.end(s);
                // Release: pairs with the readers' Acquire load of the flag.
                ended.store(true, Ordering::Release);
            })
        };

        let readers: Vec<_> = (0..readers)
            .map(|_| {
                let (domain, entry, ended) = (domain.clone(), entry.clone(), ended.clone());
                thread::spawn(move || {
                    for _ in 0..attempts {
                        model1_attempt(&domain, &entry, &ended);
                    }
                })
            })
            .collect();

        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(entry.lock.count(), ATTACHED);
        assert_eq!(entry.read(), (1, 1));
        // After the joins (happens-before), a new reader succeeds and sees the new value.
        assert!(model1_attempt(&domain, &entry, &ended));
    });
}

/// Model 1: one reader (two attempts, so it can fail during the session and succeed
/// after it) against the writer.
#[test]
fn reader_vs_writer() {
    model1(1, 2, usize::MAX);
}

/// Model 1 with two concurrent readers (one attempt each): one reader's release may be
/// the wake-up while the other is refused or transient. Three threads: at most two
/// preemptions (three took over ten minutes).
#[test]
fn two_readers_vs_writer() {
    model1(2, 1, 2);
}

/// Model 2: two readers holding counts leave, in every order, while the writer waits in
/// `write_lock`. A lost wake-up is a loom deadlock.
///
/// The writer is a spawned thread, not the one that joins: a reader's wake-up may land
/// after the writer has already seen the count drop and moved on, and loom (unlike std)
/// cannot take an `unpark` of a thread that is blocked in `join`.
#[test]
fn writer_wakeup_never_lost() {
    model(|| {
        let domain = Arc::new(LockDomain::new());
        let entry = Arc::new(Entry::new());
        assert_eq!(entry.lock.try_read(&domain), Ok(()));
        assert_eq!(entry.lock.try_read(&domain), Ok(()));
        assert_eq!(entry.lock.count(), ATTACHED + 2);

        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (domain, entry) = (domain.clone(), entry.clone());
                thread::spawn(move || {
                    assert_eq!(entry.read(), (0, 0));
                    entry.lock.read_unlock(&domain);
                })
            })
            .collect();

        let writer = {
            let (domain, entry) = (domain.clone(), entry.clone());
            thread::spawn(move || {
                let s = domain.begin();
                entry.lock.write_lock(&domain, s);
                assert_eq!(entry.lock.count(), ATTACHED);
                assert!(entry.lock.is_locked_by(s));
                // Both readers' reads are ordered before this write (else loom reports a
                // race).
                entry.write_two_steps(1);
                domain.end(s);
            })
        };

        for r in readers {
            r.join().unwrap();
        }
        writer.join().unwrap();
        assert_eq!(entry.lock.count(), ATTACHED);
        assert_eq!(entry.read(), (1, 1));
    });
}

/// Model 3: the detach race from the seed thread. A reader's `try_read` (retried once
/// after a failure, as a lookup would) races the writer's `write_lock` + move-out +
/// `detach` + retire + `end`.
#[test]
fn detach_race_single_retire() {
    model(|| {
        let domain = Arc::new(LockDomain::new());
        let entry = Arc::new(Retirable::new(1));

        let writer = {
            let (domain, entry) = (domain.clone(), entry.clone());
            thread::spawn(move || {
                let s = domain.begin();
                entry.lock.write_lock(&domain, s);
                // The commit moves the removed value out under the entry lock.
                entry.move_out();
                entry.lock.detach(&domain);
                entry.retire();
                domain.end(s);
            })
        };

        let reader = {
            let (domain, entry) = (domain.clone(), entry.clone());
            thread::spawn(move || {
                let mut oks = 0;
                for _ in 0..2 {
                    match entry.lock.try_read(&domain) {
                        Ok(()) => {
                            // Ordered before the move-out (so never `MOVED`) and the
                            // retire's poison write; else loom reports a race.
                            assert_eq!(entry.read_payload(), LIVE);
                            entry.lock.read_unlock(&domain);
                            oks += 1;
                        }
                        Err(ReadFail::Locked | ReadFail::Detached) => {}
                        Err(ReadFail::Limit) => panic!("limit with one reader"),
                    }
                }
                oks
            })
        };

        writer.join().unwrap();
        let oks = reader.join().unwrap();
        assert!(oks <= 2);
        assert_eq!(
            entry.retired.load(Ordering::Relaxed),
            1,
            "retired not exactly once"
        );
        assert_eq!(entry.lock.count(), DETACHED);
        // A detached entry stays detached: a late reader fails without changing the count.
        assert_eq!(entry.lock.try_read(&domain), Err(ReadFail::Detached));
        assert_eq!(entry.lock.count(), DETACHED);
    });
}

/// The domain ids of model 4.
const DOMAIN_A: u32 = 1;
const DOMAIN_B: u32 = 2;

/// Model 4a: the reused-entry wake-up race (the kernel's 2025 use-after-free). A reader of
/// domain A holds a count when the writer of A begins; the writer waits in `write_lock`,
/// detaches the entry, and its memory is reused for an entry of domain B (the `owner`
/// field is rewritten). The reader's release must wake A's writer through the domain it
/// holds, never through the entry: reading `owner` after the decrement races the reuse
/// (loom reports it), and a wake-up sent anywhere but A leaves A's writer parked (loom
/// reports a deadlock).
#[test]
fn reused_entry_wake_held_reader() {
    model(|| {
        let domain_a = Arc::new(LockDomain::new());
        let entry = Arc::new(Retirable::new(DOMAIN_A));
        assert_eq!(entry.lock.try_read(&domain_a), Ok(()));

        let reader = {
            let (domain_a, entry) = (domain_a.clone(), entry.clone());
            thread::spawn(move || {
                // Before the release the count keeps the entry (and its owner) stable.
                assert_eq!(entry.read_owner(), DOMAIN_A);
                assert_eq!(entry.read_payload(), LIVE);
                entry.lock.read_unlock(&domain_a);
                // Nothing of the entry is touched from here on.
            })
        };

        let writer = {
            let (domain_a, entry) = (domain_a.clone(), entry.clone());
            thread::spawn(move || {
                let s = domain_a.begin();
                entry.lock.write_lock(&domain_a, s);
                entry.lock.detach(&domain_a);
                entry.retire();
                entry.reuse_for(DOMAIN_B);
                domain_a.end(s);
            })
        };

        reader.join().unwrap();
        writer.join().unwrap();
        assert_eq!(entry.retired.load(Ordering::Relaxed), 1);
        assert_eq!(entry.read_owner(), DOMAIN_B);
    });
}

/// Model 4b: as 4a, but the reader's `try_read` races the session, so it may be a
/// transient reader the writer waits for in `detach` (whose release then wakes it while
/// the writer is about to reuse the memory), a plain reader the writer waits for in
/// `write_lock`, or refused.
#[test]
fn reused_entry_wake_transient_reader() {
    model(|| {
        let domain_a = Arc::new(LockDomain::new());
        let entry = Arc::new(Retirable::new(DOMAIN_A));

        let reader = {
            let (domain_a, entry) = (domain_a.clone(), entry.clone());
            thread::spawn(move || {
                if entry.lock.try_read(&domain_a).is_ok() {
                    assert_eq!(entry.read_owner(), DOMAIN_A);
                    assert_eq!(entry.read_payload(), LIVE);
                    entry.lock.read_unlock(&domain_a);
                }
            })
        };

        let writer = {
            let (domain_a, entry) = (domain_a.clone(), entry.clone());
            thread::spawn(move || {
                let s = domain_a.begin();
                entry.lock.write_lock(&domain_a, s);
                entry.lock.detach(&domain_a);
                entry.retire();
                entry.reuse_for(DOMAIN_B);
                domain_a.end(s);
            })
        };

        reader.join().unwrap();
        writer.join().unwrap();
        assert_eq!(entry.retired.load(Ordering::Relaxed), 1);
        assert_eq!(entry.read_owner(), DOMAIN_B);
    });
}

/// Model 5a: the limit. Two fast-path readers race for the last count below the limit.
#[test]
fn read_limit_two_fast_readers() {
    model(|| {
        let domain = Arc::new(LockDomain::new());
        let lock = Arc::new(EntryLock::with_count(READ_LIMIT - 1));

        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (domain, lock) = (domain.clone(), lock.clone());
                // The winner keeps its count until after the joins.
                thread::spawn(move || lock.try_read(&domain))
            })
            .collect();
        let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();

        let oks = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(oks, 1, "results: {results:?}");
        assert!(
            results.contains(&Err(ReadFail::Limit)),
            "results: {results:?}"
        );
        // Only the winner's increment is there.
        assert_eq!(lock.count(), READ_LIMIT);
        lock.read_unlock(&domain);
        assert_eq!(lock.count(), READ_LIMIT - 1);
    });
}

/// Model 5b: the limit with one fast-path and one slow-path (`read_locked`) reader.
#[test]
fn read_limit_fast_and_slow_reader() {
    model(|| {
        let domain = Arc::new(LockDomain::new());
        let lock = Arc::new(EntryLock::with_count(READ_LIMIT - 1));

        let fast = {
            let (domain, lock) = (domain.clone(), lock.clone());
            thread::spawn(move || lock.try_read(&domain))
        };
        let slow = {
            let lock = lock.clone();
            thread::spawn(move || lock.read_locked())
        };
        let results = [fast.join().unwrap(), slow.join().unwrap()];

        let oks = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(oks, 1, "results: {results:?}");
        assert!(
            results.contains(&Err(ReadFail::Limit)),
            "results: {results:?}"
        );
        assert_eq!(lock.count(), READ_LIMIT);
        lock.read_unlock(&domain);
        assert_eq!(lock.count(), READ_LIMIT - 1);
    });
}

/// Model 6: session end unlocks every entry of the session at once. Two entries are locked
/// in session `S`; a reader checks them while the session is known to hold them (refused
/// with `Locked`, count unchanged); the writer then writes both and ends the session; the
/// reader waits until it sees the domain sequence move (a Relaxed load, so only the
/// protocol's own Acquire/Release can make the session's writes visible) and reads both.
#[test]
fn session_end_unlocks_all_entries() {
    model(|| {
        let domain = Arc::new(LockDomain::new());
        let entries = Arc::new([Entry::new(), Entry::new()]);
        // Handshake flags: "both entries are locked" and "the reader has checked that".
        let locked = Arc::new(AtomicBool::new(false));
        let checked = Arc::new(AtomicBool::new(false));

        let writer = {
            let (domain, entries) = (domain.clone(), entries.clone());
            let (locked, checked) = (locked.clone(), checked.clone());
            thread::spawn(move || {
                let s = domain.begin();
                for e in entries.iter() {
                    e.lock.write_lock(&domain, s);
                }
                // Release/Acquire: the reader's refused attempts happen during the session.
                locked.store(true, Ordering::Release);
                while !checked.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                // Written after the handshake: only `end` publishes these to the reader.
                for e in entries.iter() {
                    e.write_two_steps(1);
                }
                domain.end(s);
            })
        };

        let reader = {
            let (domain, entries) = (domain.clone(), entries.clone());
            thread::spawn(move || {
                while !locked.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                for e in entries.iter() {
                    assert_eq!(e.lock.try_read(&domain), Err(ReadFail::Locked));
                    assert_eq!(e.lock.count(), ATTACHED);
                }
                checked.store(true, Ordering::Release);
                // `current` is a Relaxed load: only the protocol orders what follows.
                while domain.current() % 2 == 1 {
                    thread::yield_now();
                }
                for e in entries.iter() {
                    assert_eq!(e.lock.try_read(&domain), Ok(()));
                    assert_eq!(e.read(), (1, 1));
                }
                for e in entries.iter() {
                    e.lock.read_unlock(&domain);
                }
            })
        };

        writer.join().unwrap();
        reader.join().unwrap();
        for e in entries.iter() {
            assert_eq!(e.lock.count(), ATTACHED);
        }
    });
}

/// Model 7: the transient reader of a removed entry. The reader learns that the session
/// holds the entry through a Relaxed flag, so its early sequence check may still see the
/// old (unlocked) sequences and its increment may land while the session holds the entry;
/// the session then detaches the entry, retires it and ends. The reader must never get
/// `Ok` (it would read a retired entry), and the retire must wait until its count is gone.
#[test]
fn transient_reader_of_removed_entry() {
    model(|| {
        let domain = Arc::new(LockDomain::new());
        let entry = Arc::new(Retirable::new(1));
        let locked = Arc::new(AtomicBool::new(false));

        let writer = {
            let (domain, entry, locked) = (domain.clone(), entry.clone(), locked.clone());
            thread::spawn(move || {
                let s = domain.begin();
                entry.lock.write_lock(&domain, s);
                // Relaxed: tells the reader "now", without ordering anything for it.
                locked.store(true, Ordering::Relaxed);
                entry.lock.detach(&domain);
                entry.retire();
                domain.end(s);
            })
        };

        let reader = {
            let (domain, entry) = (domain.clone(), entry.clone());
            thread::spawn(move || {
                while !locked.load(Ordering::Relaxed) {
                    thread::yield_now();
                }
                match entry.lock.try_read(&domain) {
                    Ok(()) => {
                        // Never reached in a correct protocol; the read would race the
                        // retire, and the assertion names the bug either way.
                        let v = entry.read_payload();
                        entry.lock.read_unlock(&domain);
                        panic!("a transient reader of a removed entry got Ok (payload {v:#x})");
                    }
                    Err(ReadFail::Locked | ReadFail::Detached) => {}
                    Err(ReadFail::Limit) => panic!("limit with one reader"),
                }
            })
        };

        writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(entry.retired.load(Ordering::Relaxed), 1);
        assert_eq!(
            entry.lock.count(),
            DETACHED,
            "a count came back after the detach"
        );
    });
}

/// A writer runs session 1, which locks the entry and writes it, then session 2, which does
/// not touch it. A reader whose count increment reads from session 1's unlocking
/// subtraction can see session 2's start (3) in its re-check instead of session 1's end
/// (2); it then gets `Ok`, and its read of session 1's data must still be ordered after the
/// writes — so `begin` must release, not just store. Miri found the missing order in
/// `src/lock_stress.rs`; with `begin` storing Relaxed this model fails with a data race.
#[test]
fn reader_meets_the_next_session() {
    model(|| {
        let domain = Arc::new(LockDomain::new());
        let entry = Arc::new(Entry::new());
        let writer = {
            let (domain, entry) = (domain.clone(), entry.clone());
            thread::spawn(move || {
                let s1 = domain.begin();
                entry.lock.write_lock(&domain, s1);
                entry.write_two_steps(1);
                domain.end(s1);
                let s2 = domain.begin();
                domain.end(s2);
            })
        };
        let reader = {
            let (domain, entry) = (domain.clone(), entry.clone());
            thread::spawn(move || {
                if entry.lock.try_read(&domain).is_ok() {
                    let (a, b) = entry.read();
                    entry.lock.read_unlock(&domain);
                    assert_eq!(a, b, "torn read: ({a}, {b})");
                }
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(entry.read(), (1, 1));
    });
}

/// Model 9: the commit order itself, through `LockDomain::commit`, the function `Writer`'s
/// commit runs: publish the new version, detach the removed entries, then end the session.
/// A reader finds the entry in the old version (the root still `OLD`) while the session
/// removes it and moves its value out. It must never get `Ok` after the move-out (with the
/// session's end before the detach, a reader whose count arrives in between passes the
/// re-check and reads the moved-out value), and a reader refused as detached must find
/// the new version when it reloads the root (with the detach before the publish, or
/// without the orderings that carry the publish to it, it finds the same entry again).
#[test]
fn commit_publishes_detaches_then_ends() {
    const OLD: usize = 1;
    const NEW: usize = 2;
    model(|| {
        let domain = Arc::new(LockDomain::new());
        let entry = Arc::new(Retirable::new(1));
        // The published root: which version a reader descends.
        let root = Arc::new(AtomicUsize::new(OLD));

        let writer = {
            let (domain, entry, root) = (domain.clone(), entry.clone(), root.clone());
            thread::spawn(move || {
                let s = domain.begin();
                entry.lock.write_lock(&domain, s);
                entry.move_out();
                domain.commit(
                    s,
                    // Release: as the map's `publish`.
                    || root.store(NEW, Ordering::Release),
                    || [&entry.lock],
                );
                entry.retire();
            })
        };

        let reader = {
            let (domain, entry, root) = (domain.clone(), entry.clone(), root.clone());
            thread::spawn(move || {
                // Acquire: as the map's `root`.
                if root.load(Ordering::Acquire) != OLD {
                    return; // the new version no longer holds the entry
                }
                match entry.lock.try_read(&domain) {
                    Ok(()) => {
                        // Before the move-out (else loom reports a race, or this fails).
                        assert_eq!(entry.read_payload(), LIVE);
                        entry.lock.read_unlock(&domain);
                    }
                    Err(ReadFail::Detached) => assert_eq!(
                        root.load(Ordering::Acquire),
                        NEW,
                        "a reader refused as detached found the old version again"
                    ),
                    Err(ReadFail::Locked) => {}
                    Err(ReadFail::Limit) => panic!("limit with one reader"),
                }
            })
        };

        writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(entry.retired.load(Ordering::Relaxed), 1);
    });
}
