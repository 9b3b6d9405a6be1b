#!/usr/bin/env bash
# Sanitizers over the crate's unit tests and the multi-thread stress and model tests, at
# small sizes (RCU_RANGEMAP_SMALL=1, PROPTEST_CASES=32).
#
#   SANITIZERS   which to run, space-separated: "address thread" (default)
#
# - AddressSanitizer (+ LeakSanitizer, which ASan runs at exit on Linux):
#   `--lib --test stress --test model`. No -Zbuild-std needed: only our code and its
#   dependencies are instrumented, and ASan intercepts every allocation anyway, std's
#   included.
# - ThreadSanitizer: `--lib --test stress` with -Zbuild-std (std must be instrumented too,
#   or its own synchronisation shows up as races). crossbeam-epoch does not drown it: on
#   x86_64 its pin uses an atomic RMW instead of a standalone SeqCst fence (which TSan
#   cannot model), and the runs here gave no report at all — while a mutant whose
#   `Writer::get_mut` skips the entry's write lock got a data-race report from the stress
#   tests at once. TSAN_OPTIONS makes the first report fatal.
#
# Both are built with `--cfg crossbeam_sanitize`, crossbeam's own switch for sanitizer
# runs: tiny garbage bags and eager collection, so retired nodes and entries are really
# freed (and their memory reused) during the tests, where a use-after-free can be seen.
#
# Leaks. Memory retired to crossbeam-epoch but not yet collected at exit stays reachable
# from crossbeam's global collector (a static), so LeakSanitizer does not report it:
# no suppressions file is needed. What LSan does report is memory nothing reaches: an
# entry or node the map unlinked and never retired, or never freed in `Drop`. (Checked
# by a mutant that skips retiring removed entries: LSan reported thousands of `Entry`
# allocations from `Writer::link`, while every value-level drop-counting test passed.)
#
# Needs nightly (and rust-src for TSan's -Zbuild-std) on x86_64 Linux; without them each
# sanitizer prints a loud SKIPPED banner and the script still exits 0. Any sanitizer
# report or test failure makes it exit non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0
export RCU_RANGEMAP_SMALL=1
export PROPTEST_CASES=${PROPTEST_CASES:-32}
SANITIZERS=${SANITIZERS:-"address thread"}

skipped() {
  echo
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo "!!! SKIPPED: $*"
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
}

t_start=$SECONDS
if ! cargo +nightly --version >/dev/null 2>&1; then
  skipped "sanitizers ($SANITIZERS): no nightly toolchain (cargo +nightly) on this machine"
  exit 0
fi
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
if [ "$host" != "x86_64-unknown-linux-gnu" ]; then
  skipped "sanitizers ($SANITIZERS): set up for x86_64-unknown-linux-gnu only, this is $host"
  exit 0
fi
echo "=== sanitizers: $(rustc +nightly --version) on $host"

failed=()

run_step() {
  local name=$1; shift
  echo
  echo "=== $name: $*"
  local t0=$SECONDS
  if "$@"; then
    echo "=== $name: ok in $((SECONDS - t0)) s"
  else
    echo "=== $name: FAILED (exit $?) after $((SECONDS - t0)) s"
    failed+=("$name")
  fi
}

for s in $SANITIZERS; do
  case $s in
    address)
      run_step asan env \
        RUSTFLAGS="-Zsanitizer=address --cfg crossbeam_sanitize" \
        ASAN_OPTIONS="detect_leaks=1:detect_stack_use_after_return=1" \
        CARGO_TARGET_DIR=target/asan \
        cargo +nightly test --target "$host" --lib --test stress --test model
      ;;
    thread)
      if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src' &&
         ! rustup component add --toolchain nightly rust-src >/dev/null 2>&1; then
        skipped "ThreadSanitizer: needs the nightly rust-src component for -Zbuild-std"
        continue
      fi
      run_step tsan env \
        RUSTFLAGS="-Zsanitizer=thread --cfg crossbeam_sanitize" \
        TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" \
        CARGO_TARGET_DIR=target/tsan \
        cargo +nightly test -Zbuild-std --target "$host" --lib --test stress
      ;;
    *)
      echo "=== unknown sanitizer '$s' (known: address thread)"
      failed+=("$s")
      ;;
  esac
done

echo
if [ ${#failed[@]} -ne 0 ]; then
  echo "=== sanitizers: FAILED: ${failed[*]} ($((SECONDS - t_start)) s)"
  exit 1
fi
echo "=== sanitizers: all passed in $((SECONDS - t_start)) s"
