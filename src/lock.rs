//! The per-entry refcount lock: the kernel's per-VMA lock (Dec 2024 rework), alone.
//!
//! Owns: the count word and lock sequence of one entry ([`EntryLock`]), and the map-wide
//! half of the protocol — the session sequence and the writer's wait slot
//! ([`LockDomain`]). Must not: know about trees, values or reclamation. It is kept this
//! small so that `tests/loom.rs` model-checks exactly this code (through `crate::sync`).
//!
//! # The count word (`EntryLock::count`, an `AtomicU32`)
//!
//! | value                    | name                | meaning                                                        |
//! |--------------------------|---------------------|----------------------------------------------------------------|
//! | `0`                      | [`DETACHED`]        | detached and drained: terminal, the entry may be retired        |
//! | `1`                      | [`ATTACHED`]        | in the published tree, no readers                               |
//! | `1 + r`                  |                     | attached, `r` readers (`1 + r <= READ_LIMIT`)                    |
//! | `WRITER + 1 + r`         | writer locking      | a writer turns new readers away and waits for `r` to leave      |
//! | `WRITER + r`             | detaching           | a writer detaches the entry and waits for `r` transient readers |
//!
//! [`WRITER`] is `1 << 30`, so every state fits below `2^31` and a count can never
//! overflow: readers increment only below [`READ_LIMIT`] (`WRITER - 1`), which leaves the
//! whole upper range to the writer offset.
//!
//! Legal transitions (and who makes them):
//!
//! | from                 | to                   | by                                                      |
//! |----------------------|----------------------|---------------------------------------------------------|
//! | `c` (`1 <= c < LIMIT`) | `c + 1`            | a reader ([`EntryLock::try_read`], [`EntryLock::read_locked`]) |
//! | `c + 1`              | `c`                  | a reader leaving ([`EntryLock::read_unlock`])            |
//! | `1 + r`              | `WRITER + 1 + r`     | the writer starting [`EntryLock::write_lock`]            |
//! | `WRITER + 1`         | `1`                  | the writer ending its lock step                         |
//! | `1 + r`              | `WRITER + r`         | the writer detaching ([`EntryLock::detach`])             |
//! | `WRITER`             | `0`                  | the writer, once the transient readers are gone         |
//!
//! # The sequences (`EntryLock::seq` and `LockDomain::seq`, `AtomicU64`)
//!
//! The domain's sequence is even while no writer session runs and odd (`S`) during one.
//! An entry whose `seq == S` is write-locked by session `S`; when the session ends the
//! domain moves to `S + 1` and every entry it locked is unlocked at once, with no
//! per-entry work. 64 bits cannot wrap, so a stale entry sequence can never alias the
//! current one (the kernel's 32-bit `vm_lock_seq` can, after 2^31 sessions).
//!
//! # The wake-up rule
//!
//! A reader that leaves a writer waiting wakes it through the [`LockDomain`] it was handed,
//! never through anything read from the entry after its decrement: the decrement may be
//! what lets the entry be freed (the kernel's 2025 use-after-free was a reader waking the
//! writer through a pointer read from a freed and reused VMA).

use crate::sync::{self, AtomicU32, AtomicU64, Mutex, Ordering, Thread};

/// Count of a detached, drained entry: terminal.
pub const DETACHED: u32 = 0;
/// The attach count: held by the published tree while the entry is in it.
pub const ATTACHED: u32 = 1;
/// The writer offset: present while a writer locks or detaches the entry. Readers fail
/// on any count at or above it.
pub const WRITER: u32 = 1 << 30;
/// Readers increment only while the count is below this; it leaves room for the writer
/// offset on top of every reader count.
pub const READ_LIMIT: u32 = WRITER - 1;

/// The entry sequence of an entry no session has locked. The domain sequence starts at 0
/// and moves by one per session start and end, so it never gets near this value.
const NEVER_LOCKED: u64 = u64::MAX;

/// Spins before a waiting writer parks. Under loom a spin is a yield, so keep it short.
#[cfg(not(loom))]
const SPINS: u32 = 64;
#[cfg(loom)]
const SPINS: u32 = 0; // a yield here hides the park path from loom (tests/loom.rs)

/// Yields (after `SPINS` spins) a reader refused by a session waits for it to end, holding
/// nothing, before it gives up and queues on the map-wide lock (`LockDomain::wait_session_end`).
const WAIT_YIELDS: u32 = 16;

/// Why a read lock was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadFail {
    /// The count is 0: the entry left the tree and drained. Retry the lookup.
    Detached,
    /// A writer session holds the entry (or is detaching it).
    Locked,
    /// The reader count is at [`READ_LIMIT`].
    Limit,
}

/// A writer session's sequence number: odd, handed out by [`LockDomain::begin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session(u64);

impl Session {
    /// The raw sequence value (odd).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// The map-wide half of the lock: the session sequence and the writer's wait slot.
///
/// Invariant: at most one session is active at a time (the caller serialises writers),
/// so there is at most one waiter, and only the active writer stores to `seq` or to any
/// entry's `seq`.
#[derive(Debug)]
pub struct LockDomain {
    /// Even: no session. Odd `S`: session `S` is active.
    seq: AtomicU64,
    /// The active writer's thread, unparked by the reader that lets it go on.
    waiter: Mutex<Option<Thread>>,
}

impl Default for LockDomain {
    fn default() -> Self {
        Self::new()
    }
}

impl LockDomain {
    /// A domain with no session active.
    pub fn new() -> Self {
        LockDomain {
            seq: AtomicU64::new(0),
            waiter: Mutex::new(None),
        }
    }

    /// Start a session. The caller must hold the writers' exclusive lock.
    pub fn begin(&self) -> Session {
        // Relaxed load: only the (serialised) writer stores `seq`.
        let s = self.seq.load(Ordering::Relaxed) + 1;
        debug_assert!(s % 2 == 1, "a session is already active");
        // Release, not Relaxed: pairs with the Acquire re-check in `try_read`. A reader
        // that took its count in the previous session's time can read this value there
        // instead of that session's `end`; it then passes (its entry's `seq` is the older
        // session's) and reads what that session wrote. A plain store does not continue
        // `end`'s release sequence, so this store must carry the order itself: everything
        // before it (the previous session, through the writers' lock if another thread ran
        // it) happens before that reader's read. Found by Miri (`lock_stress`); the loom
        // model `reader_meets_the_next_session` fails without it.
        self.seq.store(s, Ordering::Release);
        Session(s)
    }

    /// End session `s`: every entry it locked becomes readable again, at once.
    pub fn end(&self, s: Session) {
        sync::inject_delay();
        // Release: pairs with the Acquire re-check in `try_read`; a reader that sees the
        // new sequence sees every write the session made under its entry locks.
        self.seq.store(s.0 + 1, Ordering::Release);
    }

    /// Commit session `s`'s lock steps, in the order the protocol needs:
    ///
    /// 1. `publish` makes the new version readable (the map's root store, Release).
    /// 2. Every entry the session removed (`removed`) is detached, waiting out the
    ///    transient readers that incremented meanwhile. Before step 3, because a reader
    ///    whose count arrives after the session's end passes the re-check and takes the
    ///    entry; after step 1, so that a reader refused as detached finds the new version
    ///    when it retries from the root.
    /// 3. The session ends: every entry it locked (and did not remove) is readable again.
    ///
    /// `Writer`'s commit and the loom models run this same function, so the models check
    /// the order the map commits in.
    pub fn commit<'e, I>(&self, s: Session, publish: impl FnOnce(), removed: impl FnOnce() -> I)
    where
        I: IntoIterator<Item = &'e EntryLock>,
    {
        publish();
        sync::inject_delay();
        for e in removed() {
            e.detach(self);
        }
        sync::inject_delay();
        self.end(s);
    }

    /// The current sequence (odd while a session is active).
    #[cfg_attr(not(loom), allow(dead_code))] // tests and models
    pub fn current(&self) -> u64 {
        // Relaxed: a snapshot for diagnostics and tests; protocol decisions reload.
        self.seq.load(Ordering::Relaxed)
    }

    /// Reader side: wait, holding nothing, until the session active now (if any) has ended —
    /// spin briefly, then yield, a bounded number of times. Returns whether no session or a
    /// different one was active at the last look (then a retried lookup may succeed); `false`
    /// means the session is still running and the caller should block elsewhere.
    ///
    /// A refused reader that waits here rather than on the writers' lock leaves the next
    /// session free to start the moment this one ends.
    // Under loom `SPINS` is 0, so clippy sees `i < SPINS` as always false: meant (the model
    // checks the yields alone; the spins are for the shipped build, where `SPINS` is 64).
    #[cfg_attr(loom, allow(clippy::absurd_extreme_comparisons))]
    pub fn wait_session_end(&self) -> bool {
        // Relaxed, both loads: they only decide how long to wait. The caller's retried
        // `try_read` re-checks the sequence with Acquire before it trusts anything.
        let s = self.seq.load(Ordering::Relaxed);
        if s % 2 == 0 {
            return true;
        }
        for i in 0..SPINS + WAIT_YIELDS {
            if i < SPINS {
                sync::spin();
            } else {
                sync::yield_now();
            }
            if self.seq.load(Ordering::Relaxed) != s {
                return true;
            }
        }
        false
    }

    /// Wake the active writer, if one waits.
    fn wake(&self) {
        if let Some(t) = self
            .waiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            t.unpark();
        }
    }

    /// Wait until `done()` holds: spin briefly, then register in the wait slot and park.
    /// Only the active writer calls this; the reader whose release makes `done()` true
    /// unparks whoever is registered (`wake`).
    ///
    /// No wake-up is lost. The registration and the reader's `wake` both take the slot's
    /// mutex. If the reader's `wake` comes first, its decrement happens before our
    /// registration (its unlock synchronises with our lock), so the check after registering
    /// sees it and we do not park. If our registration comes first, the reader unparks us;
    /// an unpark that lands before the park leaves the token set and the park returns.
    /// A stale registration (an earlier session's thread) only costs a spurious unpark.
    // Under loom `SPINS` is 0, so clippy sees the spin loop's range as empty: meant (the
    // model goes straight to the park path; the spins are for the shipped build).
    #[cfg_attr(loom, allow(clippy::reversed_empty_ranges))]
    fn wait_until(&self, done: impl Fn() -> bool) {
        for _ in 0..SPINS {
            if done() {
                return;
            }
            sync::spin();
        }
        *self.waiter.lock().unwrap_or_else(|e| e.into_inner()) = Some(sync::current());
        while !done() {
            sync::park();
        }
    }
}

/// The lock embedded in every entry.
///
/// Invariants (the table in the module docs): `count` moves only along the legal
/// transitions; only the active session's writer stores `seq`, and only while it holds
/// the writer offset (`write_lock`) — so a reader whose increment succeeded after that
/// store sees it; once `count` is [`DETACHED`] it never changes again.
#[derive(Debug)]
pub struct EntryLock {
    count: AtomicU32,
    /// The last session that write-locked this entry ([`NEVER_LOCKED`]: none).
    seq: AtomicU64,
}

impl EntryLock {
    /// A lock for an entry about to enter the tree: attached, no readers, not locked.
    pub fn new_attached() -> Self {
        EntryLock {
            count: AtomicU32::new(ATTACHED),
            seq: AtomicU64::new(NEVER_LOCKED),
        }
    }

    /// A lock for an entry created inside session `s`: attached, and write-locked by `s`
    /// from birth (it is unpublished until `s` commits, so no reader can be waited for).
    pub fn new_locked(s: Session) -> Self {
        EntryLock {
            count: AtomicU32::new(ATTACHED),
            seq: AtomicU64::new(s.0),
        }
    }

    /// A lock in an arbitrary count state, for tests of the limit and of detaching.
    #[doc(hidden)]
    #[cfg_attr(not(loom), allow(dead_code))] // tests and models
    pub fn with_count(count: u32) -> Self {
        EntryLock {
            count: AtomicU32::new(count),
            seq: AtomicU64::new(NEVER_LOCKED),
        }
    }

    /// The raw count, for assertions and `Debug`.
    #[cfg_attr(not(loom), allow(dead_code))] // tests and models
    pub fn count(&self) -> u32 {
        // Relaxed: a snapshot; nothing is ordered by it.
        self.count.load(Ordering::Relaxed)
    }

    /// Reader fast path: take a read count without any map-wide lock.
    ///
    /// On `Ok` the caller holds one count and must give it back with
    /// [`read_unlock`](Self::read_unlock); on `Err` it holds nothing.
    #[inline]
    pub fn try_read(&self, domain: &LockDomain) -> Result<(), ReadFail> {
        // Early check, Relaxed both: only a hint that saves the RMW while a session holds
        // the entry. A stale answer either way is corrected by the re-check below.
        if self.seq.load(Ordering::Relaxed) == domain.seq.load(Ordering::Relaxed) {
            return Err(ReadFail::Locked);
        }
        // Acquire on every read of the count: pairs with the writer's Release steps
        // (`write_lock`'s subtraction, `detach`'s store), so a refused reader that retries
        // sees the tree version published before them.
        let mut c = self.count.load(Ordering::Acquire);
        loop {
            if c == DETACHED {
                return Err(ReadFail::Detached);
            }
            if c >= WRITER {
                return Err(ReadFail::Locked);
            }
            if c >= READ_LIMIT {
                return Err(ReadFail::Limit);
            }
            match self.count.compare_exchange_weak(
                c,
                c + 1,
                // Acquire: pairs with the Release in `write_lock` (and with earlier
                // readers' releases through the RMW chain) — if this increment comes after
                // a session's lock step, the `seq` load below sees that session.
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        sync::inject_delay();
        // Re-check. The entry's `seq` is ordered by the Acquire increment above (Relaxed is
        // enough here); the domain's with Acquire, pairing with the Release in
        // `LockDomain::end`: if the session that locked this entry has ended, everything
        // it wrote is visible.
        let entry_seq = self.seq.load(Ordering::Relaxed);
        if entry_seq == domain.seq.load(Ordering::Acquire) {
            self.read_unlock(domain);
            return Err(ReadFail::Locked);
        }
        Ok(())
    }

    /// Reader slow path, called with the writers' lock held shared (no session can be
    /// active, so the entry is attached and unlocked). Fails only at the limit.
    #[inline]
    pub fn read_locked(&self) -> Result<(), ReadFail> {
        // Acquire: pairs with the last writer's Release steps on this entry. It does not
        // order what a session wrote under the entry's lock (its last Release step on the
        // count, `write_lock`'s subtraction, comes before those writes, and `end` releases
        // the domain's sequence, which this path never loads): the writers' lock the caller
        // holds does that (a scratch loom model of a slow-path reader without it raced).
        let mut c = self.count.load(Ordering::Acquire);
        loop {
            debug_assert!(
                c != DETACHED && c < WRITER,
                "slow-path read during a session"
            );
            if c >= READ_LIMIT {
                return Err(ReadFail::Limit);
            }
            match self
                .count
                .compare_exchange_weak(c, c + 1, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(now) => c = now,
            }
        }
    }

    /// Give back one read count; wake the writer if this was the reader it waited for.
    ///
    /// After the decrement this touches nothing of the entry — the decrement may be what
    /// lets it be freed — and wakes through `domain`, which the caller keeps alive.
    #[inline]
    pub fn read_unlock(&self, domain: &LockDomain) {
        sync::inject_delay();
        // Release: pairs with the writer's Acquire wait in `write_lock`/`detach`; our reads
        // of the value happen before the writer changes or moves it.
        let prev = self.count.fetch_sub(1, Ordering::Release);
        // `self` may be gone from here on: only `prev` and `domain` are used.
        let now = prev - 1;
        if now == WRITER + ATTACHED || now == WRITER {
            // The slot's mutex orders this with the writer's registration
            // (`LockDomain::wait_until` explains why no wake-up is lost).
            domain.wake();
        }
    }

    /// Whether session `s` holds this entry write-locked.
    #[inline]
    pub fn is_locked_by(&self, s: Session) -> bool {
        // Relaxed: only the active writer (the caller) stores `seq`.
        self.seq.load(Ordering::Relaxed) == s.0
    }

    /// Writer lock, inside session `s`: turn new readers away, wait for the current ones to
    /// leave, and mark the entry locked by `s` until [`LockDomain::end`]. A no-op when `s`
    /// already holds it. The entry must be attached.
    pub fn write_lock(&self, domain: &LockDomain, s: Session) {
        if self.is_locked_by(s) {
            return;
        }
        // Acquire: if no reader is left, the count already reads `WRITER + 1` and we must
        // still see the releases of the readers that left (this RMW continues their release
        // sequences). Nothing of ours needs publishing: a refused reader takes the slow path.
        // (Belt and braces: `wait_until` below always makes an Acquire load of the count,
        // which reads this RMW's value or a later one of the same release sequences, so
        // the loom models pass with this Relaxed too.)
        let prev = self.count.fetch_add(WRITER, Ordering::Acquire);
        debug_assert!(
            (ATTACHED..WRITER).contains(&prev),
            "write_lock of a detached or writer-held entry: {prev:#x}"
        );
        sync::inject_delay();
        // Acquire: pairs with the Release decrement in `read_unlock`; every leaving
        // reader's accesses happen before ours.
        domain.wait_until(|| self.count.load(Ordering::Acquire) == WRITER + ATTACHED);
        // Relaxed: published by the Release subtraction below.
        self.seq.store(s.0, Ordering::Relaxed);
        // Release: pairs with the Acquire increment in `try_read`; a reader that gets in
        // after this sees `seq == s` and backs off.
        self.count.fetch_sub(WRITER, Ordering::Release);
    }

    /// Detach, at commit: after the new tree version is published and before
    /// [`LockDomain::end`]. Makes the entry unreadable for good and waits out the transient
    /// readers (those that incremented while the session held it and are backing off).
    /// On return the count is [`DETACHED`]; the caller retires the entry, exactly once.
    ///
    /// The entry must be attached and write-locked by the active session.
    pub fn detach(&self, domain: &LockDomain) {
        // From `1 + r` to `WRITER + r` in one step: the attach count goes and the writer
        // offset turns every new reader away. AcqRel. Release: publishes the new tree
        // version (stored before this) to readers that fail here and retry. Acquire: see
        // the releases of readers that already left.
        let prev = self.count.fetch_add(WRITER - ATTACHED, Ordering::AcqRel);
        debug_assert!(
            (ATTACHED..WRITER).contains(&prev),
            "detach of a detached or writer-held entry: {prev:#x}"
        );
        sync::inject_delay();
        if prev != ATTACHED {
            // Acquire: pairs with the Release decrement in `read_unlock`.
            domain.wait_until(|| self.count.load(Ordering::Acquire) == WRITER);
        }
        // Nobody else writes the count at `WRITER`: readers refuse without writing and no
        // reader holds a count. Release: as above, for readers that see `DETACHED`.
        self.count.store(DETACHED, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn session(domain: &LockDomain) -> Session {
        domain.begin()
    }

    #[test]
    fn new_entry_is_attached_and_readable() {
        let d = LockDomain::new();
        let l = EntryLock::new_attached();
        assert_eq!(l.count(), ATTACHED);
        assert_eq!(l.try_read(&d), Ok(()));
        assert_eq!(l.count(), ATTACHED + 1);
        l.read_unlock(&d);
        assert_eq!(l.count(), ATTACHED);
    }

    #[test]
    fn detached_entry_refuses_readers() {
        let d = LockDomain::new();
        let l = EntryLock::with_count(DETACHED);
        assert_eq!(l.try_read(&d), Err(ReadFail::Detached));
        assert_eq!(l.count(), DETACHED);
    }

    #[test]
    fn writer_offset_refuses_readers() {
        let d = LockDomain::new();
        for c in [WRITER, WRITER + 1, WRITER + 7] {
            let l = EntryLock::with_count(c);
            assert_eq!(l.try_read(&d), Err(ReadFail::Locked));
            assert_eq!(
                l.count(),
                c,
                "a refused reader must leave the count unchanged"
            );
        }
    }

    #[test]
    fn limit_refuses_fast_and_slow_readers() {
        let d = LockDomain::new();
        let l = EntryLock::with_count(READ_LIMIT);
        assert_eq!(l.try_read(&d), Err(ReadFail::Limit));
        assert_eq!(l.read_locked(), Err(ReadFail::Limit));
        assert_eq!(l.count(), READ_LIMIT);
        let below = EntryLock::with_count(READ_LIMIT - 1);
        assert_eq!(below.try_read(&d), Ok(()));
        assert_eq!(below.count(), READ_LIMIT);
        // Room is left for the writer offset on top of the fullest reader count.
        assert!(READ_LIMIT.checked_add(WRITER).is_some());
    }

    #[test]
    fn locked_entry_refuses_until_session_ends() {
        let d = LockDomain::new();
        let l = EntryLock::new_attached();
        let s = session(&d);
        l.write_lock(&d, s);
        assert!(l.is_locked_by(s));
        assert_eq!(l.count(), ATTACHED);
        assert_eq!(l.try_read(&d), Err(ReadFail::Locked));
        assert_eq!(l.count(), ATTACHED);
        d.end(s);
        assert!(!l.is_locked_by(session(&d)));
        assert_eq!(l.try_read(&d), Ok(()));
        l.read_unlock(&d);
    }

    #[test]
    fn write_lock_is_idempotent_within_a_session() {
        let d = LockDomain::new();
        let l = EntryLock::new_attached();
        let s = session(&d);
        l.write_lock(&d, s);
        l.write_lock(&d, s);
        assert_eq!(l.count(), ATTACHED);
        d.end(s);
    }

    #[test]
    fn sessions_are_odd_and_end_even() {
        let d = LockDomain::new();
        assert_eq!(d.current() % 2, 0);
        let s = d.begin();
        assert_eq!(s.get() % 2, 1);
        assert_eq!(d.current(), s.get());
        d.end(s);
        assert_eq!(d.current(), s.get() + 1);
    }

    #[test]
    fn slow_path_ignores_entry_sequence() {
        // A slow-path reader holds the writers' lock shared, so no session is active; an
        // entry locked by an ended session is readable.
        let d = LockDomain::new();
        let l = EntryLock::new_attached();
        let s = d.begin();
        l.write_lock(&d, s);
        d.end(s);
        assert_eq!(l.read_locked(), Ok(()));
        assert_eq!(l.count(), ATTACHED + 1);
        l.read_unlock(&d);
    }

    #[test]
    fn detach_without_readers_drains_at_once() {
        let d = LockDomain::new();
        let l = EntryLock::new_attached();
        let s = d.begin();
        l.write_lock(&d, s);
        l.detach(&d);
        assert_eq!(l.count(), DETACHED);
        // Still in the session: the early sequence check refuses first.
        assert_eq!(l.try_read(&d), Err(ReadFail::Locked));
        d.end(s);
        assert_eq!(l.try_read(&d), Err(ReadFail::Detached));
    }

    #[test]
    fn transient_reader_is_refused_and_waited_for() {
        let d = LockDomain::new();
        let l = EntryLock::new_attached();
        let s = d.begin();
        l.write_lock(&d, s);
        // A transient reader: incremented while the session holds the entry.
        l.count.fetch_add(1, Ordering::Relaxed);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                l.read_unlock(&d);
            });
            l.detach(&d);
        });
        assert_eq!(l.count(), DETACHED);
        d.end(s);
    }

    #[test]
    fn writer_waits_for_reader_then_locks() {
        let d = LockDomain::new();
        let l = EntryLock::new_attached();
        assert_eq!(l.try_read(&d), Ok(()));
        let s = d.begin();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while l.count() < WRITER {
                    std::thread::yield_now();
                }
                // While the writer waits, new readers are turned away.
                assert_eq!(l.try_read(&d), Err(ReadFail::Locked));
                l.read_unlock(&d);
            });
            l.write_lock(&d, s);
        });
        assert_eq!(l.count(), ATTACHED);
        assert!(l.is_locked_by(s));
        d.end(s);
    }
}
