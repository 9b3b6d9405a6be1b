//! Address-space traces (`traces/FORMAT.md`): parsing, a sequential reference model, the
//! replay plan (events cut into writer batches and fault epochs), how each event is
//! applied to an [`RangeMap`], and the sequential check of a `RangeMap` replay against
//! the reference.
//!
//! Shared by `examples/replay.rs` and `tests/replay_check.rs` (both include this file with
//! `#[path]`), so the test checks exactly the code the example runs.

#![allow(dead_code)] // each includer uses a different part

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use rcu_rangemap::{RangeMap, TryGetError, Writer};

/// Page size: every length in a trace is rounded up to it.
pub const PAGE: u64 = 4096;

// -------------------------------------------------------------------------------------
// Values
// -------------------------------------------------------------------------------------

/// Protection bits of a mapping, `r`=4 `w`=2 `x`=1.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prot(pub u8);

impl Prot {
    pub const RW: Prot = Prot(6);

    fn parse(s: &str) -> Option<Prot> {
        let b = s.as_bytes();
        if b.len() != 3 {
            return None;
        }
        let mut p = 0;
        for (i, (&c, on)) in b.iter().zip([b'r', b'w', b'x']).enumerate() {
            match c {
                c if c == on => p |= 4 >> i,
                b'-' => {}
                _ => return None,
            }
        }
        Some(Prot(p))
    }
}

impl fmt::Debug for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |bit, ch| if self.0 & bit != 0 { ch } else { '-' };
        write!(f, "{}{}{}", c(4, 'r'), c(2, 'w'), c(1, 'x'))
    }
}

/// What a range map holds per mapping: its protection and where in its backing object
/// the mapping's first page lies.
///
/// The trace does not name files, so every `mmap` (and every `brk` growth) is treated as
/// mapping its own object — named by the trace line that created it — from offset 0.
/// That makes every mapping file-like: when a mapping is split (munmap/mprotect in the
/// middle, an overwriting mmap), the right-hand piece's `offset` must advance by the cut
/// distance, and the check compares offsets, so a wrong split is caught.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mapping {
    pub prot: Prot,
    /// Line number of the event that created the mapping.
    pub object: u32,
    /// Offset into the object of this piece's first key. `offset` plus the piece's
    /// length never passes `u64::MAX`, so [`split`] cannot overflow: pieces only shrink,
    /// except the last one an `mremap` grows, and [`Plan::build`] rejects a trace in which
    /// that one would pass it (the kernel refuses such an `mremap` too).
    pub offset: u64,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} obj@{} +{:#x}", self.prot, self.object, self.offset)
    }
}

/// The split rule for [`Writer::insert_with`]/[`Writer::remove_with`]: `v` keeps
/// `whole.start..at`, the returned value describes `at..whole.end`.
pub fn split(v: &mut Mapping, whole: Range<u64>, at: u64) -> Mapping {
    Mapping {
        offset: v.offset + (at - whole.start),
        ..*v
    }
}

// -------------------------------------------------------------------------------------
// Parsing
// -------------------------------------------------------------------------------------

/// One trace event as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Exec,
    Fork {
        parent: u32,
    },
    Mmap {
        addr: u64,
        len: u64,
        prot: Prot,
    },
    Munmap {
        addr: u64,
        len: u64,
    },
    Mprotect {
        addr: u64,
        len: u64,
        prot: Prot,
    },
    Mremap {
        old: u64,
        old_len: u64,
        new: u64,
        new_len: u64,
    },
    Brk {
        old: u64,
        new: u64,
    },
    Fault {
        addr: u64,
        access: u8,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// 1-based line number in the trace file.
    pub line: u32,
    pub pid: u32,
    pub tid: u32,
    pub op: Op,
}

/// A malformed trace, or a trace event that cannot be replayed, with its line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    pub line: u32,
    pub msg: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for TraceError {}

fn err<T>(line: u32, msg: impl Into<String>) -> Result<T, TraceError> {
    Err(TraceError {
        line,
        msg: msg.into(),
    })
}

fn hex(line: u32, what: &str, s: &str) -> Result<u64, TraceError> {
    // Digits only: `from_str_radix` would also take a sign (`0x+1000`).
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()));
    match digits.map(|d| u64::from_str_radix(d, 16)) {
        Some(Ok(v)) => Ok(v),
        _ => err(
            line,
            format!("bad {what} {s:?} (expected a hex number like 0x1000)"),
        ),
    }
}

fn id(line: u32, what: &str, s: &str) -> Result<u32, TraceError> {
    match s.parse() {
        // Digits only: `parse` would also take a sign (`+1`).
        Ok(v) if s.bytes().all(|b| b.is_ascii_digit()) => Ok(v),
        _ => err(line, format!("bad {what} {s:?} (expected a decimal id)")),
    }
}

/// A trace file's bytes as text; bytes that are not UTF-8 are an error at their line.
pub fn text(bytes: Vec<u8>) -> Result<String, TraceError> {
    String::from_utf8(bytes).or_else(|e| {
        let valid = e.utf8_error().valid_up_to();
        let newlines = e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        let line = u32::try_from(newlines + 1).unwrap_or(u32::MAX);
        err(line, "not UTF-8 text")
    })
}

/// Parses a whole trace. Comment (`#`) and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Event>, TraceError> {
    let mut events = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = u32::try_from(i + 1).or_else(|_| err(u32::MAX, "trace too long"))?;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        events.push(parse_line(line, l)?);
    }
    Ok(events)
}

fn parse_line(line: u32, l: &str) -> Result<Event, TraceError> {
    let f: Vec<&str> = l.split_ascii_whitespace().collect();
    if f.len() < 3 {
        return err(line, format!("expected `<pid> <tid> <op> ...`, got {l:?}"));
    }
    let pid = id(line, "pid", f[0])?;
    let tid = id(line, "tid", f[1])?;
    let args = &f[3..];
    let want = |n: usize| -> Result<(), TraceError> {
        if args.len() == n {
            Ok(())
        } else {
            err(
                line,
                format!("`{}` takes {n} arguments, got {}", f[2], args.len()),
            )
        }
    };
    let prot = |s: &str| {
        Prot::parse(s).map_or_else(
            || err(line, format!("bad protection {s:?} (expected like r-x)")),
            Ok,
        )
    };
    let op = match f[2] {
        "exec" => {
            want(0)?;
            Op::Exec
        }
        "fork" => {
            want(1)?;
            Op::Fork {
                parent: id(line, "parent pid", args[0])?,
            }
        }
        "mmap" => {
            want(3)?;
            Op::Mmap {
                addr: hex(line, "address", args[0])?,
                len: hex(line, "length", args[1])?,
                prot: prot(args[2])?,
            }
        }
        "munmap" => {
            want(2)?;
            Op::Munmap {
                addr: hex(line, "address", args[0])?,
                len: hex(line, "length", args[1])?,
            }
        }
        "mprotect" => {
            want(3)?;
            Op::Mprotect {
                addr: hex(line, "address", args[0])?,
                len: hex(line, "length", args[1])?,
                prot: prot(args[2])?,
            }
        }
        "mremap" => {
            want(4)?;
            Op::Mremap {
                old: hex(line, "old address", args[0])?,
                old_len: hex(line, "old length", args[1])?,
                new: hex(line, "new address", args[2])?,
                new_len: hex(line, "new length", args[3])?,
            }
        }
        "brk" => {
            want(2)?;
            Op::Brk {
                old: hex(line, "old break", args[0])?,
                new: hex(line, "new break", args[1])?,
            }
        }
        "fault" => {
            want(2)?;
            let access = match args[1] {
                "r" | "w" | "x" => args[1].as_bytes()[0],
                a => return err(line, format!("bad access {a:?} (expected r, w or x)")),
            };
            Op::Fault {
                addr: hex(line, "address", args[0])?,
                access,
            }
        }
        other => return err(line, format!("unknown operation {other:?}")),
    };
    Ok(Event { line, pid, tid, op })
}

// -------------------------------------------------------------------------------------
// The plan: events lowered to actions on numbered address spaces, cut into batches
// -------------------------------------------------------------------------------------

/// An address-space change, lowered from a trace event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A new, empty space (exec; or a pid's first event).
    Create,
    /// A new space holding a copy of `parent`'s mappings (empty if the parent is unknown).
    Fork { parent: Option<u32> },
    /// Map `range` (overwriting whatever is there).
    Map { range: Range<u64>, value: Mapping },
    /// Unmap every key of `range`.
    Unmap { range: Range<u64> },
    /// Re-protect the mapped parts of `range`.
    Protect { range: Range<u64>, prot: Prot },
    /// Move/resize the mapping pieces of `old` to `new` (`line` names a fresh mapping if
    /// `old` holds nothing).
    Remap {
        old: Range<u64>,
        new: Range<u64>,
        line: u32,
    },
}

impl Action {
    /// The keys of its own space this action may change (for the staleness analysis).
    fn touched(&self) -> Option<Range<u64>> {
        match self {
            Action::Create | Action::Fork { .. } => None,
            Action::Map { range, .. } | Action::Unmap { range } | Action::Protect { range, .. } => {
                Some(range.clone())
            }
            Action::Remap { .. } => None, // handled by `touches`
        }
    }

    /// Whether this action may change what a lookup in `keys` answers.
    pub fn touches(&self, keys: &Range<u64>) -> bool {
        let hit = |r: &Range<u64>| r.start < keys.end && keys.start < r.end;
        match self {
            Action::Remap { old, new, .. } => hit(old) || hit(new),
            a => a.touched().is_some_and(|r| hit(&r)),
        }
    }
}

/// One action of the plan.
#[derive(Clone, Debug)]
pub struct Step {
    /// Trace line of the event.
    pub line: u32,
    /// Index of the address space it applies to.
    pub space: u32,
    pub action: Action,
}

/// Consecutive steps of one batch on the same space: one writer session.
#[derive(Clone, Debug)]
pub struct Session {
    pub space: u32,
    pub steps: Range<usize>,
}

/// A maximal run of consecutive address-space events (between faults). Batch `i` is
/// followed by the faults of epoch `i`.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub sessions: Vec<Session>,
}

/// A fault: a lookup, with the answer of the sequential reference at its point.
#[derive(Clone, Debug)]
pub struct Fault {
    pub line: u32,
    pub tid: u32,
    pub space: u32,
    pub epoch: u32,
    pub addr: u64,
    /// The reference's answer at this point of the trace.
    pub expected: Answer,
    /// Where in [`Plan::later`] the fault's later answers are.
    pub later: Range<u32>,
}

/// What a fault's lookup finds: the mapping holding its address, with its range, or none.
pub type Answer = Option<(Range<u64>, Mapping)>;

/// A trace, ready to replay.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Number of address spaces (a process has a new one at each exec).
    pub spaces: usize,
    /// Number of distinct pids.
    pub processes: usize,
    /// Distinct tids, in order of first appearance.
    pub threads: Vec<u32>,
    pub steps: Vec<Step>,
    pub batches: Vec<Batch>,
    pub faults: Vec<Fault>,
    /// For each fault (its [`Fault::later`]), in order: every answer other than the one
    /// before it that the reference gives its address after a session of the 255 batches
    /// that follow the fault's, with how many batches ahead (1 – 255). A reader that may see
    /// up to `w` batches ahead may get any of those up to `w` ahead, and nothing else but
    /// `expected`.
    pub later: Vec<(u8, Answer)>,
    /// Address-space events in the trace (exec, fork, mmap, ... — not faults).
    pub events: usize,
    /// The whole trace's non-comment line count (for progress).
    pub lines: u32,
}

fn range(line: u32, what: &str, addr: u64, len: u64) -> Result<Range<u64>, TraceError> {
    let len = len.checked_add(PAGE - 1).map(|l| l & !(PAGE - 1));
    match len.and_then(|l| addr.checked_add(l)) {
        Some(end) => Ok(addr..end),
        None => err(
            line,
            format!("{what} {addr:#x} + length overflows the 64-bit address space"),
        ),
    }
}

fn page_up(line: u32, x: u64) -> Result<u64, TraceError> {
    match x.checked_add(PAGE - 1) {
        Some(v) => Ok(v & !(PAGE - 1)),
        None => err(line, format!("break {x:#x} overflows")),
    }
}

impl Plan {
    /// Lowers parsed events into a plan and runs the reference model over it to record
    /// each fault's expected answer.
    pub fn build(events: &[Event]) -> Result<Plan, TraceError> {
        let mut plan = Plan::default();
        let mut current: BTreeMap<u32, u32> = BTreeMap::new(); // pid -> space
        let mut seen_tid = std::collections::HashSet::new();
        let mut last_was_fault = true;
        for e in events {
            if seen_tid.insert(e.tid) {
                plan.threads.push(e.tid);
            }
            plan.lines = e.line;
            let line = e.line;
            if let Op::Fault { addr, .. } = e.op {
                let space = plan.space_of(&mut current, e.pid, line);
                if plan.batches.is_empty() {
                    plan.batches.push(Batch::default());
                }
                plan.faults.push(Fault {
                    line,
                    tid: e.tid,
                    space,
                    epoch: (plan.batches.len() - 1) as u32,
                    addr,
                    expected: None,
                    later: 0..0,
                });
                last_was_fault = true;
                continue;
            }
            if last_was_fault {
                plan.batches.push(Batch::default());
                last_was_fault = false;
            }
            plan.events += 1;
            let (space, action) = match e.op {
                Op::Exec | Op::Fork { .. } => {
                    let action = match e.op {
                        Op::Fork { parent } => Action::Fork {
                            parent: current.get(&parent).copied(),
                        },
                        _ => Action::Create,
                    };
                    let s = plan.spaces as u32;
                    plan.spaces += 1;
                    if current.insert(e.pid, s).is_none() {
                        plan.processes += 1;
                    }
                    (s, action)
                }
                Op::Mmap { addr, len, prot } => (
                    plan.space_of(&mut current, e.pid, line),
                    Action::Map {
                        range: range(line, "mmap", addr, len)?,
                        value: Mapping {
                            prot,
                            object: line,
                            offset: 0,
                        },
                    },
                ),
                Op::Munmap { addr, len } => (
                    plan.space_of(&mut current, e.pid, line),
                    Action::Unmap {
                        range: range(line, "munmap", addr, len)?,
                    },
                ),
                Op::Mprotect { addr, len, prot } => (
                    plan.space_of(&mut current, e.pid, line),
                    Action::Protect {
                        range: range(line, "mprotect", addr, len)?,
                        prot,
                    },
                ),
                Op::Mremap {
                    old,
                    old_len,
                    new,
                    new_len,
                } => (
                    plan.space_of(&mut current, e.pid, line),
                    Action::Remap {
                        old: range(line, "mremap", old, old_len)?,
                        new: range(line, "mremap", new, new_len)?,
                        line,
                    },
                ),
                Op::Brk { old, new } => {
                    let space = plan.space_of(&mut current, e.pid, line);
                    let (old, new) = (page_up(line, old)?, page_up(line, new)?);
                    let action = if new > old {
                        Action::Map {
                            range: old..new,
                            value: Mapping {
                                prot: Prot::RW,
                                object: line,
                                offset: 0,
                            },
                        }
                    } else {
                        // Shrink (or the initial break, old == new: an empty no-op).
                        Action::Unmap { range: new..old }
                    };
                    (space, action)
                }
                Op::Fault { .. } => unreachable!(),
            };
            // Zero-length calls change nothing (the kernel would have refused them).
            let empty = match &action {
                Action::Map { range, .. }
                | Action::Unmap { range }
                | Action::Protect { range, .. } => range.is_empty(),
                Action::Remap { old, new, .. } => old.is_empty() && new.is_empty(),
                _ => false,
            };
            if !empty {
                plan.push_step(line, space, action);
            }
        }
        plan.run_reference()?;
        if plan.faults.is_empty() {
            return err(
                plan.lines.max(1),
                "the trace has no fault events: nothing to look up (empty, or comments only?)",
            );
        }
        Ok(plan)
    }

    /// The current space of `pid`; a pid whose first event is not exec/fork starts with
    /// an empty one.
    fn space_of(&mut self, current: &mut BTreeMap<u32, u32>, pid: u32, line: u32) -> u32 {
        if let Some(&s) = current.get(&pid) {
            return s;
        }
        let s = self.spaces as u32;
        self.spaces += 1;
        self.processes += 1;
        current.insert(pid, s);
        self.push_step(line, s, Action::Create);
        s
    }

    fn push_step(&mut self, line: u32, space: u32, action: Action) {
        if self.batches.is_empty() {
            self.batches.push(Batch::default());
        }
        let i = self.steps.len();
        self.steps.push(Step {
            line,
            space,
            action,
        });
        let batch = self.batches.last_mut().unwrap();
        match batch.sessions.last_mut() {
            Some(s) if s.space == space && s.steps.end == i => s.steps.end = i + 1,
            _ => batch.sessions.push(Session {
                space,
                steps: i..i + 1,
            }),
        }
    }

    /// Fills in every fault's `expected` and its later answers ([`Plan::later`]) from the
    /// reference model. An `mremap` that grows a mapping past the largest offset (see
    /// [`Mapping`]) is an error at its line.
    fn run_reference(&mut self) -> Result<(), TraceError> {
        let mut spaces: Vec<RefSpace> = vec![RefSpace::default(); self.spaces];
        // Per space, the faults whose later answers are still being recorded (those of the
        // last 255 batches), each with its answers so far.
        let mut pending: Vec<Vec<usize>> = vec![Vec::new(); self.spaces];
        let mut later: Vec<Vec<(u8, Answer)>> = vec![Vec::new(); self.faults.len()];
        let mut next_fault = 0;
        for (epoch, batch) in self.batches.iter().enumerate() {
            for session in &batch.sessions {
                for step in &self.steps[session.steps.clone()] {
                    apply_ref(&mut spaces, step);
                    if let Action::Remap { new, .. } = &step.action {
                        // Only the last piece grows; the others keep their lengths.
                        let grown = new.end.checked_sub(1).and_then(|last| {
                            spaces[step.space as usize]
                                .lookup(last)
                                .map(|(r, v)| (r, *v))
                        });
                        if let Some((r, v)) = grown {
                            if v.offset.checked_add(r.end - r.start).is_none() {
                                return err(
                                    step.line,
                                    format!(
                                        "mremap grows {r:#x?} at offset {:#x} past the \
                                         largest offset",
                                        v.offset
                                    ),
                                );
                            }
                        }
                    }
                }
                // What readers of the faults before this batch may see from now on.
                let sp = &spaces[session.space as usize];
                let faults = &self.faults;
                pending[session.space as usize].retain(|&fi| {
                    let f = &faults[fi];
                    let Ok(ahead) = u8::try_from(epoch - f.epoch as usize) else {
                        return false;
                    };
                    let now = sp.lookup(f.addr).map(|(r, v)| (r, *v));
                    let last = later[fi].last().map_or(&f.expected, |(_, a)| a);
                    if now != *last {
                        later[fi].push((ahead, now));
                    }
                    true
                });
            }
            while next_fault < self.faults.len() && self.faults[next_fault].epoch as usize == epoch
            {
                let f = &mut self.faults[next_fault];
                f.expected = spaces[f.space as usize]
                    .lookup(f.addr)
                    .map(|(r, v)| (r, *v));
                pending[f.space as usize].push(next_fault);
                next_fault += 1;
            }
        }
        for (f, answers) in self.faults.iter_mut().zip(later) {
            let start = self.later.len() as u32;
            self.later.extend(answers);
            f.later = start..self.later.len() as u32;
        }
        Ok(())
    }

    /// Whether `got` is an answer a reader of fault `f` may get when it may see up to
    /// `window` batches ahead of the fault's: `f.expected`, or a later answer of the
    /// reference no further ahead ([`Plan::later`]).
    pub fn may_answer(&self, f: &Fault, got: &Answer, window: usize) -> Judged {
        if *got == f.expected {
            Judged::Exact
        } else if self.later[f.later.start as usize..f.later.end as usize]
            .iter()
            .any(|(ahead, a)| usize::from(*ahead) <= window && a == got)
        {
            Judged::Stale
        } else {
            Judged::Unexpected
        }
    }
}

/// How a concurrent reader's answer compares with the reference ([`Plan::may_answer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    /// The reference's answer at the fault's point in the trace.
    Exact,
    /// The reference's answer after a later session within the window.
    Stale,
    /// Neither: wrong.
    Unexpected,
}

// -------------------------------------------------------------------------------------
// The reference model: a plain BTreeMap of ranges, no cleverness
// -------------------------------------------------------------------------------------

/// A sequential range map: start -> (end, value). Non-overlapping, never coalesced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefSpace {
    map: BTreeMap<u64, (u64, Mapping)>,
}

impl RefSpace {
    pub fn lookup(&self, addr: u64) -> Option<(Range<u64>, &Mapping)> {
        let (&s, (e, v)) = self.map.range(..=addr).next_back()?;
        (addr < *e).then_some((s..*e, v))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contents(&self) -> Vec<(Range<u64>, Mapping)> {
        self.map.iter().map(|(&s, &(e, v))| (s..e, v)).collect()
    }

    /// Removes `r`, splitting straddling mappings; returns the removed pieces (clipped
    /// to `r`, offsets adjusted), in key order.
    pub fn cut(&mut self, r: Range<u64>) -> Vec<(Range<u64>, Mapping)> {
        let mut out = Vec::new();
        if r.is_empty() {
            return out;
        }
        let first = match self.map.range(..r.start).next_back() {
            Some((&s, &(e, _))) if e > r.start => s,
            _ => r.start,
        };
        let hit: Vec<u64> = self.map.range(first..r.end).map(|(&s, _)| s).collect();
        for s in hit {
            let (e, mut v) = self.map.remove(&s).unwrap();
            let mut whole = s..e;
            if whole.start < r.start {
                let right = split(&mut v, whole.clone(), r.start);
                self.map.insert(whole.start, (r.start, v));
                v = right;
                whole.start = r.start;
            }
            if whole.end > r.end {
                let right = split(&mut v, whole.clone(), r.end);
                self.map.insert(r.end, (whole.end, right));
                whole.end = r.end;
            }
            out.push((whole, v));
        }
        out
    }

    pub fn insert(&mut self, r: Range<u64>, v: Mapping) {
        self.cut(r.clone());
        self.map.insert(r.start, (r.end, v));
    }
}

/// The new pieces of an mremap: the old pieces shifted from `old` to `new`, truncated
/// to `new`, the last one extended to `new.end` on growth. `fresh` if `old` held nothing.
pub fn remap_pieces(
    pieces: Vec<(Range<u64>, Mapping)>,
    old: &Range<u64>,
    new: &Range<u64>,
    line: u32,
) -> Vec<(Range<u64>, Mapping)> {
    if pieces.is_empty() {
        let fresh = Mapping {
            prot: Prot::RW,
            object: line,
            offset: 0,
        };
        return if new.is_empty() {
            vec![]
        } else {
            vec![(new.clone(), fresh)]
        };
    }
    let mut out: Vec<(Range<u64>, Mapping)> = Vec::new();
    for (r, v) in pieces {
        // r lies inside old, so these differences are in range; new.start + them may not
        // be, so saturate (beyond new.end is dropped anyway).
        let s = new.start.saturating_add(r.start - old.start);
        let e = new.start.saturating_add(r.end - old.start).min(new.end);
        if s >= e {
            break;
        }
        out.push((s..e, v));
    }
    if new.end - new.start > old.end - old.start {
        if let Some(last) = out.last_mut() {
            last.0.end = new.end;
        }
    }
    out
}

/// Applies one step to the reference spaces.
pub fn apply_ref(spaces: &mut [RefSpace], step: &Step) {
    let space = step.space as usize;
    match &step.action {
        Action::Create => spaces[space] = RefSpace::default(),
        Action::Fork { parent } => {
            spaces[space] = parent.map_or_else(RefSpace::default, |p| spaces[p as usize].clone())
        }
        action => apply_ref_one(&mut spaces[space], action),
    }
}

/// Applies a space-local action (not Create/Fork) to one reference space.
pub fn apply_ref_one(sp: &mut RefSpace, action: &Action) {
    match action {
        Action::Map { range, value } => sp.insert(range.clone(), *value),
        Action::Unmap { range } => {
            sp.cut(range.clone());
        }
        Action::Protect { range, prot } => {
            for (r, v) in sp.cut(range.clone()) {
                sp.map
                    .insert(r.start, (r.end, Mapping { prot: *prot, ..v }));
            }
        }
        Action::Remap { old, new, line } => {
            let pieces = sp.cut(old.clone());
            for (r, v) in remap_pieces(pieces, old, new, *line) {
                sp.insert(r, v);
            }
        }
        Action::Create | Action::Fork { .. } => unreachable!("not space-local"),
    }
}

// -------------------------------------------------------------------------------------
// The same actions on rcu_rangemap
// -------------------------------------------------------------------------------------

/// The map under test.
pub type Map = RangeMap<u64, Mapping>;

/// A process address space in the map under test. Each space index is created exactly
/// once, by its Create or Fork step — the first step of the space's first session — so
/// the map is set then: [`RangeMap::new`] for a Create (or a fork of an unknown parent),
/// [`RangeMap::clone`] of the parent's published map for a Fork (see [`open_session`]).
pub type Space = OnceLock<Map>;

/// Applies a space-local action (not Create/Fork) inside a writer session.
pub fn apply_map(w: &mut Writer<'_, u64, Mapping>, action: &Action) -> Result<(), String> {
    match action {
        Action::Map { range, value } => {
            drop(w.insert_with(range.clone(), *value, split));
        }
        Action::Unmap { range } => {
            drop(w.remove_with(range.clone(), split));
        }
        Action::Protect { range, prot } => {
            for (r, v) in w.remove_with(range.clone(), split) {
                w.try_insert(r.clone(), Mapping { prot: *prot, ..v })
                    .map_err(|e| format!("mprotect: re-inserting {r:#x?} failed: {e}"))?;
            }
        }
        Action::Remap { old, new, line } => {
            let pieces: Vec<_> = w.remove_with(old.clone(), split).into_iter().collect();
            for (r, v) in remap_pieces(pieces, old, new, *line) {
                drop(w.insert_with(r, v, split));
            }
        }
        Action::Create | Action::Fork { .. } => {
            return Err(format!(
                "{action:?} in the middle of a session (a space is created only by the first \
                 step of its first session)"
            ))
        }
    }
    Ok(())
}

/// Prepares one session of the plan: if its first step is the Create or Fork of its
/// space, creates the space's map — empty, or a clone of the parent's published map (the
/// parent's sessions of this batch are committed by then, and no session is open on it:
/// one thread applies all sessions) — and returns the space's map with the steps left
/// for the writer session. A space created twice, used before its creation, or forked
/// from a parent not created yet is an error, with the step's line.
pub fn open_session<'a>(
    maps: &'a [Space],
    steps: &'a [Step],
    session: &Session,
) -> Result<(&'a Map, &'a [Step]), (u32, String)> {
    let steps = &steps[session.steps.clone()];
    let slot = &maps[session.space as usize];
    let Some((first, rest)) = steps.split_first() else {
        return Err((0, format!("empty session on space {}", session.space)));
    };
    let created = match &first.action {
        Action::Create | Action::Fork { parent: None } => RangeMap::new(),
        Action::Fork { parent: Some(p) } => match maps[*p as usize].get() {
            Some(parent) => parent.clone(),
            None => {
                return Err((
                    first.line,
                    format!("fork from space {p}, which is not created yet"),
                ))
            }
        },
        _ => {
            return match slot.get() {
                Some(map) => Ok((map, steps)),
                None => Err((
                    first.line,
                    format!("space {} used before its creation", session.space),
                )),
            }
        }
    };
    if slot.set(created).is_err() {
        return Err((first.line, format!("space {} created twice", session.space)));
    }
    Ok((slot.get().expect("just set"), rest))
}

/// Applies one session of a batch: the space's creation if the session starts with it,
/// then one writer session on its map for the other steps (none if there are none).
pub fn apply_session_map(
    maps: &[Space],
    steps: &[Step],
    session: &Session,
) -> Result<(), (u32, String)> {
    let (map, steps) = open_session(maps, steps, session)?;
    if steps.is_empty() {
        return Ok(());
    }
    let mut w = map.write();
    for step in steps {
        apply_map(&mut w, &step.action).map_err(|m| (step.line, m))?;
    }
    w.commit();
    Ok(())
}

// -------------------------------------------------------------------------------------
// Sequential check: the map replay against the reference, event by event
// -------------------------------------------------------------------------------------

/// What a passed check saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub events: usize,
    pub sessions: usize,
    pub faults: usize,
    pub hits: usize,
    pub misses: usize,
}

/// The first difference, with the trace line where it showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailure {
    pub line: u32,
    pub msg: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

fn fail<T>(line: u32, msg: String) -> Result<T, CheckFailure> {
    Err(CheckFailure { line, msg })
}

/// Replays `plan` sequentially on `rcu_rangemap` (per session of the plan: the space's
/// creation by [`open_session`] if the session starts with it, then one writer session —
/// the same code the throughput replay runs) and on the reference model, and compares:
/// every fault's `get` and `try_get` answer (range and value), the length after every
/// event (the new map's after a Create/Fork, the session's view after the other steps),
/// and the whole map contents after every session.
/// `progress(line)` is called now and then.
pub fn check(plan: &Plan, mut progress: impl FnMut(u32)) -> Result<CheckReport, CheckFailure> {
    let maps: Vec<Space> = (0..plan.spaces).map(|_| OnceLock::new()).collect();
    let mut refs: Vec<RefSpace> = vec![RefSpace::default(); plan.spaces];
    let mut report = CheckReport {
        events: plan.events,
        ..CheckReport::default()
    };
    let mut next_fault = 0;
    for (epoch, batch) in plan.batches.iter().enumerate() {
        for session in &batch.sessions {
            let all = &plan.steps[session.steps.clone()];
            let (map, rest) = match open_session(&maps, &plan.steps, session) {
                Ok(x) => x,
                Err((line, m)) => return fail(line, m),
            };
            let want_len = |refs: &[RefSpace], got: usize, step: &Step| {
                let want = refs[session.space as usize].len();
                if got == want {
                    Ok(())
                } else {
                    fail(
                        step.line,
                        format!("after {:?}: {got} mappings, reference {want}", step.action),
                    )
                }
            };
            // The creating step, if any: compare the fresh (or cloned) map's length.
            for step in &all[..all.len() - rest.len()] {
                apply_ref(&mut refs, step);
                want_len(&refs, map.len(), step)?;
            }
            let mut w = map.write();
            for step in rest {
                if let Err(m) = apply_map(&mut w, &step.action) {
                    return fail(step.line, m);
                }
                apply_ref(&mut refs, step);
                want_len(&refs, w.len(), step)?;
            }
            w.commit();
            report.sessions += 1;
            let last = plan.steps[session.steps.end - 1].line;
            let got: Vec<_> = map.iter().map(|g| (g.range(), *g)).collect();
            let want = refs[session.space as usize].contents();
            if got != want {
                return fail(last, diff(&got, &want));
            }
            if map.len() != want.len() {
                return fail(
                    last,
                    format!("len() is {}, contents hold {}", map.len(), want.len()),
                );
            }
            progress(last);
        }
        while next_fault < plan.faults.len() && plan.faults[next_fault].epoch as usize == epoch {
            let f = &plan.faults[next_fault];
            next_fault += 1;
            let want = refs[f.space as usize].lookup(f.addr).map(|(r, v)| (r, *v));
            let Some(map) = maps[f.space as usize].get() else {
                return fail(
                    f.line,
                    format!("fault on space {}, not created yet", f.space),
                );
            };
            let got = map.get(f.addr).map(|g| (g.range(), *g));
            if got != want {
                return fail(
                    f.line,
                    format!(
                        "fault at {:#x}: get answered {got:x?}, reference {want:x?}",
                        f.addr
                    ),
                );
            }
            let tried = match map.try_get(f.addr) {
                Ok(g) => Some((g.range(), *g)),
                Err(TryGetError::Vacant) => None,
                Err(e) => {
                    return fail(
                        f.line,
                        format!("fault at {:#x}: try_get failed with no writer: {e}", f.addr),
                    )
                }
            };
            if tried != want {
                return fail(
                    f.line,
                    format!(
                        "fault at {:#x}: try_get answered {tried:x?}, reference {want:x?}",
                        f.addr
                    ),
                );
            }
            if want != f.expected {
                return fail(f.line, "reference replay is not deterministic".into());
            }
            report.faults += 1;
            if want.is_some() {
                report.hits += 1;
            } else {
                report.misses += 1;
            }
        }
    }
    Ok(report)
}

fn diff(got: &[(Range<u64>, Mapping)], want: &[(Range<u64>, Mapping)]) -> String {
    let i = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    format!(
        "map contents differ from the reference at mapping #{i}: map has {:x?}, reference {:x?} \
         ({} vs {} mappings)",
        got.get(i),
        want.get(i),
        got.len(),
        want.len()
    )
}
