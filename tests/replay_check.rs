//! The trace replay of `examples/replay.rs`, tested: its parser (errors carry line
//! numbers), the replay semantics on a hand-written trace with known answers, the
//! sequential check and the concurrent replay on the bundled real trace, and that a
//! wrong answer is caught and named by its line.
//!
//! The example's logic is included, not copied: the same files as the example.

#[path = "../examples/replay/bench.rs"]
mod bench;
#[path = "../examples/replay/trace.rs"]
mod trace;

use std::ops::Range;

use trace::{parse, Answer, Mapping, Plan, Prot};

/// Every operation of the format, with the answers worked out by hand below.
const SNIPPET: &str = "\
# program: hand-written
100 100 exec
100 100 mmap 0x10000 0x4000 r-x
100 100 mmap 0x20000 0x3001 rw-
100 100 fault 0x13fff x
100 100 fault 0x23000 w
100 100 fault 0x24000 r
100 100 mprotect 0x11000 0x1000 r--
100 100 mprotect 0x30000 0x1000 r--
100 101 fault 0x12800 r
100 101 fault 0x11000 r
100 100 munmap 0x22000 0x1000
100 101 fault 0x22000 r
100 101 fault 0x23004 r
100 100 mremap 0x23000 0x1000 0x40000 0x3000
100 100 fault 0x42fff r
100 100 fault 0x23000 r
100 100 mremap 0x10000 0x4000 0x10000 0x1800
100 100 fault 0x12000 r
100 100 fault 0x11800 r
100 100 brk 0x50000 0x50000
100 100 brk 0x50000 0x52800
100 100 fault 0x52fff w
200 200 fork 100
100 100 brk 0x53000 0x51000
200 200 fault 0x52000 r
100 100 fault 0x52000 r

200 200 mmap 0x51000 0x1000 --x
200 200 fault 0x52010 r
200 201 fault 0x51000 x
200 201 fault 0x50fff r
200 200 exec
200 200 fault 0x52010 r
200 200 mmap 0x1000 0x0 rw-
400 400 fault 0x1000 r
";

fn m(prot: &str, object: u32, offset: u64) -> Mapping {
    let p = prot
        .bytes()
        .zip([4u8, 2, 1])
        .map(|(c, b)| if c == b'-' { 0 } else { b })
        .sum();
    Mapping {
        prot: Prot(p),
        object,
        offset,
    }
}

fn hit(r: Range<u64>, prot: &str, object: u32, offset: u64) -> Answer {
    Some((r, m(prot, object, offset)))
}

/// Every space's final contents, by the sequential reference (all steps in trace order).
fn final_contents(plan: &Plan) -> Vec<Vec<(Range<u64>, Mapping)>> {
    let mut refs = vec![trace::RefSpace::default(); plan.spaces];
    for step in &plan.steps {
        trace::apply_ref(&mut refs, step);
    }
    refs.iter().map(|r| r.contents()).collect()
}

/// After a concurrent replay, every `rcu_rangemap` space was created (by its Create or
/// Fork: forks are `RangeMap::clone`s) and holds the reference's final contents.
fn assert_final_rcu(plan: &Plan, spaces: &[trace::Space]) {
    let want = final_contents(plan);
    assert_eq!(spaces.len(), want.len());
    for (i, (s, want)) in spaces.iter().zip(&want).enumerate() {
        let map = s.get().unwrap_or_else(|| panic!("space {i} never created"));
        let got: Vec<_> = map.iter().map(|g| (g.range(), *g)).collect();
        assert_eq!(&got, want, "space {i}");
        assert_eq!(map.len(), want.len(), "space {i}");
    }
}

#[test]
fn snippet_answers_are_the_hand_worked_ones() {
    let plan = Plan::build(&parse(SNIPPET).unwrap()).unwrap();
    let want: Vec<(u32, Answer)> = vec![
        (5, hit(0x10000..0x14000, "r-x", 3, 0)),
        // Length 0x3001 rounds up to 0x4000.
        (6, hit(0x20000..0x24000, "rw-", 4, 0)),
        (7, None),
        // mprotect of the middle page splits the mapping in three, offsets following.
        (10, hit(0x12000..0x14000, "r-x", 3, 0x2000)),
        (11, hit(0x11000..0x12000, "r--", 3, 0x1000)),
        // munmap of the middle of B.
        (13, None),
        (14, hit(0x23000..0x24000, "rw-", 4, 0x3000)),
        // mremap moves B's last page and grows it: the offset travels along.
        (16, hit(0x40000..0x43000, "rw-", 4, 0x3000)),
        (17, None),
        // mremap shrinking A in place to 0x2000 (0x1800 rounded): its pieces truncated.
        (19, None),
        (20, hit(0x11000..0x12000, "r--", 3, 0x1000)),
        // The initial break maps nothing; growth maps the new pages.
        (23, hit(0x50000..0x53000, "rw-", 22, 0)),
        // The child keeps the copy; the parent's heap shrank.
        (26, hit(0x50000..0x53000, "rw-", 22, 0)),
        (27, None),
        // An mmap over the middle of the child's heap splits it.
        (30, hit(0x52000..0x53000, "rw-", 22, 0x2000)),
        (31, hit(0x51000..0x52000, "--x", 29, 0)),
        (32, hit(0x50000..0x51000, "rw-", 22, 0)),
        // exec starts empty; a zero-length mmap maps nothing; an unknown pid is empty.
        (34, None),
        (36, None),
    ];
    let got: Vec<_> = plan
        .faults
        .iter()
        .map(|f| (f.line, f.expected.clone()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(plan.threads, [100, 101, 200, 201, 400]);
    // Processes 100, 200, 400; spaces: 100's exec, 200's fork and exec, 400's implicit one.
    assert_eq!((plan.processes, plan.spaces), (3, 4));

    // rcu_rangemap agrees with the reference on all of it, sequentially...
    let report = trace::check(&plan, |_| {}).unwrap();
    assert_eq!(
        (report.faults, report.hits, report.misses),
        (want.len(), 12, 7)
    );
    // ...and concurrently, whatever the window, with a pin per lookup or per epoch.
    concurrently::<bench::Rcu>(&plan, want.len());
    concurrently::<bench::RcuPinned>(&plan, want.len());
}

/// Replays `plan` on `B` with every window and reader count the snippet test asks for.
fn concurrently<B: bench::Backend<Space = trace::Space>>(plan: &Plan, faults: usize) {
    for window in [0, 1, 3] {
        for readers in [1, 2] {
            let work = bench::split_work(plan, readers);
            let (r, spaces) = bench::run::<B>(plan, &work, window);
            assert!(r.ok(), "{}: {:?}", B::NAME, r.errors);
            assert_final_rcu(plan, &spaces);
            assert_eq!(r.exact + r.stale, faults as u64);
            if window == 0 {
                assert_eq!(r.exact, faults as u64);
            }
        }
    }
}

#[test]
fn trace_errors_name_their_line() {
    let cases = [
        ("1 1 exec\n1 1 mmap 0x1000 0x1000\n", 2, "takes 3 arguments"),
        (
            "# c\n\n1 1 exec\n1 1 mmap 0x1000 4096 r--\n",
            4,
            "bad length",
        ),
        ("1 1 frobnicate 0x1\n", 1, "unknown operation"),
        ("1 1 mmap 0x1000 0x1000 rwz\n", 1, "bad protection"),
        ("x 1 exec\n", 1, "bad pid"),
        ("1 1 fault 0x1000 q\n", 1, "bad access"),
        ("1 1 fault 0xzz r\n", 1, "bad address"),
        ("1 1\n", 1, "expected `<pid> <tid> <op>"),
        ("1 1 fork\n", 1, "takes 1 arguments"),
        (
            "1 1 exec\n1 1 exec\n1 1 brk 0x0 0xfffffffffffffff1\n",
            3,
            "overflows",
        ),
        (
            "1 1 mmap 0xfffffffffffff000 0x2000 r--\n",
            1,
            "overflows the 64-bit address space",
        ),
        // Numbers are digits only, without a sign.
        ("1 1 mmap 0x+1000 0x1000 rw-\n", 1, "bad address"),
        ("+1 1 exec\n", 1, "bad pid"),
        // The last piece, moved down and grown, keeps its offset (0x8000000000000000)
        // and would need offsets past u64::MAX: a later cut would overflow.
        (
            "1 1 mmap 0x0 0xfffffffffffff000 rw-\n\
             1 1 munmap 0x0 0x8000000000000000\n\
             1 1 mremap 0x8000000000000000 0x7ffffffffffff000 0x0 0xfffffffffffff000\n\
             1 1 fault 0xd000000000000000 r\n",
            3,
            "past the largest offset",
        ),
        // Nothing to look up.
        ("# only a comment\n", 1, "no fault events"),
        (
            "1 1 exec\n1 1 mmap 0x1000 0x1000 r--\n",
            2,
            "no fault events",
        ),
    ];
    for (text, line, what) in cases {
        let e = parse(text).and_then(|ev| Plan::build(&ev)).expect_err(text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(what), "{text:?}: {e}");
        assert!(e.to_string().starts_with(&format!("line {line}: ")));
    }
}

/// A byte that is not UTF-8 is an error at its line, not a whole-file failure.
#[test]
fn bytes_that_are_not_text_name_their_line() {
    let e = trace::text(b"1 1 exec\n# caf\xe9\n1 1 fault 0x1000 r\n".to_vec()).unwrap_err();
    assert_eq!(e.to_string(), "line 2: not UTF-8 text");
    assert_eq!(trace::text(b"1 1 exec\n".to_vec()).unwrap(), "1 1 exec\n");
}

#[test]
fn a_wrong_answer_fails_the_check_at_its_line() {
    let mut plan = Plan::build(&parse(SNIPPET).unwrap()).unwrap();
    // Pretend the reference expected something else at line 14.
    let f = plan.faults.iter_mut().find(|f| f.line == 14).unwrap();
    f.expected = hit(0x23000..0x24000, "rw-", 4, 0x2000);
    let e = trace::check(&plan, |_| {}).unwrap_err();
    assert_eq!(e.line, 14, "{e}");
    let work = bench::split_work(&plan, 2);
    let r = bench::run::<bench::Rcu>(&plan, &work, 0).0;
    assert_eq!(r.unexpected, 1);
    assert!(r.errors[0].starts_with("line 14: "), "{:?}", r.errors);
    assert!(!r.ok());
}

/// A concurrent reader's answer that differs from the reference is allowed only if the
/// reference gives it after a session within the window; any other answer is wrong, even
/// where later sessions change the mapping (the rule before counted those as stale).
#[test]
fn a_stale_answer_must_be_one_a_later_session_gives() {
    let plan = Plan::build(
        &parse(
            "1 1 mmap 0x10000 0x1000 r--\n\
             1 1 fault 0x10000 r\n\
             1 1 mprotect 0x10000 0x1000 rw-\n\
             1 1 fault 0x10000 r\n\
             1 1 munmap 0x10000 0x1000\n\
             1 1 fault 0x10000 r\n",
        )
        .unwrap(),
    )
    .unwrap();
    let f = &plan.faults[0];
    let (now, next) = (
        hit(0x10000..0x11000, "r--", 1, 0),
        hit(0x10000..0x11000, "rw-", 1, 0),
    );
    let judge = |got: &Answer, window| plan.may_answer(f, got, window);
    use trace::Judged::*;
    assert_eq!(judge(&now, 0), Exact);
    assert_eq!((judge(&next, 0), judge(&next, 1)), (Unexpected, Stale));
    assert_eq!((judge(&None, 1), judge(&None, 2)), (Unexpected, Stale));
    let never = hit(0x10000..0x12000, "r--", 1, 0);
    assert_eq!(judge(&never, 4), Unexpected);
}

fn bundled() -> Plan {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/python-threads.trace");
    let text = std::fs::read_to_string(path).unwrap();
    Plan::build(&parse(&text).unwrap()).unwrap()
}

#[test]
#[cfg_attr(miri, ignore)] // 50 000 events: far too slow under Miri (and it reads a file)
fn bundled_trace_checks_sequentially() {
    let plan = bundled();
    // The numbers of traces/SUMMARY.md.
    assert_eq!(plan.faults.len(), 48068);
    assert_eq!(plan.processes, 41);
    let mut last = 0;
    let r = trace::check(&plan, |line| {
        assert!(line >= last);
        last = line;
    })
    .unwrap();
    assert_eq!((r.hits, r.misses), (48068, 0));
    assert_eq!(r.events, 2127);
}

#[test]
#[cfg_attr(miri, ignore)] // 50 000 events: far too slow under Miri (and it reads a file)
fn bundled_trace_replays_concurrently_on_every_map() {
    let plan = bundled();
    let work = bench::split_work(&plan, 2);
    assert_eq!(
        work.iter().map(|w| w.faults.len()).sum::<usize>(),
        plan.faults.len()
    );
    let (rcu, spaces) = bench::run::<bench::Rcu>(&plan, &work, 2);
    assert_final_rcu(&plan, &spaces);
    let (pinned, spaces) = bench::run::<bench::RcuPinned>(&plan, &work, 2);
    assert_final_rcu(&plan, &spaces);
    let (locked, spaces) = bench::run::<bench::Locked>(&plan, &work, 2);
    let want = final_contents(&plan);
    for (i, (s, want)) in spaces.iter().zip(&want).enumerate() {
        assert_eq!(&s.read().unwrap().contents(), want, "space {i}");
    }
    for r in [&rcu, &pinned, &locked] {
        assert!(r.ok(), "{:?} {:?}", r.errors, r.writer_error);
        assert_eq!(r.lookups, 48068);
        assert_eq!(r.exact + r.stale, 48068);
    }
}

/// The ceiling row's backend replays the same scheme: every fault is looked up once, the
/// writer goes through every batch, and no answer is judged (it answers nothing).
#[test]
#[cfg_attr(miri, ignore)] // reads a file; the scheme is covered by the test above
fn the_ceiling_replays_every_fault_and_judges_none() {
    let plan = bundled();
    let work = bench::split_work(&plan, 2);
    let (bare, spaces) = bench::run::<bench::Bare>(&plan, &work, 2);
    assert_eq!(spaces.len(), plan.spaces);
    assert!(bare.ok(), "{:?} {:?}", bare.errors, bare.writer_error);
    assert_eq!(bare.lookups, 48068);
    assert_eq!((bare.hits, bare.exact, bare.stale), (0, 0, 0));
}

/// The `writer alone` line's measurement applies every session of the snippet without an
/// error, on both maps, and reports a time per event.
#[test]
fn the_writer_alone_applies_every_session() {
    let plan = Plan::build(&parse(SNIPPET).unwrap()).unwrap();
    for us in [
        bench::writer_alone_us::<bench::Rcu>(&plan, 3),
        bench::writer_alone_us::<bench::Locked>(&plan, 3),
    ] {
        let us = us.unwrap();
        assert!(us.is_finite() && us > 0.0, "{us}");
    }
}
