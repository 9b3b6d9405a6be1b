#!/usr/bin/env bash
# Fuzz smoke run: build every cargo-fuzz target under fuzz/ and run each for a bounded
# time, starting from the committed seeds in fuzz/corpus/<target>/.
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   space-separated subset of targets (default: all of `cargo fuzz list`)
#
# Needs the nightly toolchain (libFuzzer + AddressSanitizer instrumentation) and
# cargo-fuzz (installed here with `cargo install cargo-fuzz --locked` if missing). If
# either cannot be had, prints a loud SKIPPED banner and exits 0: a machine without
# nightly cannot fuzz, and that is reported, not failed.
#
# Fails (non-zero) if any target crashes, panics (a model mismatch), leaks, times out
# (a deadlock: -timeout below) or runs out of memory. Every target is run even if an
# earlier one failed; the crashing inputs are left in fuzz/artifacts/<target>/ and listed
# at the end with the command that reproduces each.
#
# One build serves every target, with two switches for the concurrent one that cost the
# others next to nothing: the crate's `delay-injection` feature (random yields/sleeps in
# the lock and commit paths widen race windows) and `--cfg crossbeam_sanitize`
# (crossbeam-epoch's switch for sanitizer runs: tiny garbage bags, eager collection, so
# retired memory is really freed and reused while readers run, where AddressSanitizer
# can see a use-after-free).
#
# New inputs found during the run go to a scratch corpus (fuzz/corpus-run/, ignored by
# git) so the committed seeds stay small.
set -uo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
export CARGO_TERM_COLOR=never

skipped() {
  echo
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo "!!! SKIPPED: $*"
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  exit 0
}

t_start=$SECONDS

if ! cargo +nightly --version >/dev/null 2>&1; then
  skipped "fuzzing: no nightly toolchain (cargo +nightly) on this machine"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "=== fuzz: installing cargo-fuzz"
  if ! cargo install cargo-fuzz --locked; then
    skipped "fuzzing: cargo-fuzz is not installed and could not be installed"
  fi
fi
echo "=== fuzz: $(cargo +nightly fuzz --version), $(rustc +nightly --version)"

cd fuzz
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
export RUSTFLAGS="${RUSTFLAGS:-} --cfg crossbeam_sanitize"
features="--features delay-injection"

echo "=== fuzz: building targets: $targets"
t0=$SECONDS
# shellcheck disable=SC2086 # $features is two words on purpose
if ! cargo +nightly fuzz build $features; then
  echo "=== fuzz: BUILD FAILED"
  exit 1
fi
echo "=== fuzz: built in $((SECONDS - t0)) s"

failed=()
stamp=$(mktemp)
for t in $targets; do
  mkdir -p "corpus-run/$t" "corpus/$t"
  echo
  echo "=== fuzz: $t for ${FUZZ_SECONDS} s"
  t0=$SECONDS
  # shellcheck disable=SC2086
  cargo +nightly fuzz run $features "$t" "corpus-run/$t" "corpus/$t" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=30 -rss_limit_mb=3072 -print_final_stats=1 \
    2>&1 | tee "corpus-run/$t.log" |
    grep -E '^#[0-9]+[[:space:]]+(DONE|pulse)|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|Done [0-9]+ runs'
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "=== fuzz: $t FAILED (exit $rc) after $((SECONDS - t0)) s; full log: fuzz/corpus-run/$t.log"
    grep -m1 -A20 -E "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" "corpus-run/$t.log"
    failed+=("$t")
  else
    echo "=== fuzz: $t ok in $((SECONDS - t0)) s"
  fi
done

echo
if [ ${#failed[@]} -ne 0 ]; then
  echo "=== fuzz: FAILED targets: ${failed[*]}"
  for t in "${failed[@]}"; do
    find "artifacts/$t" -type f -newer "$stamp" 2>/dev/null | while read -r a; do
      echo "    reproduce: (cd fuzz && RUSTFLAGS='--cfg crossbeam_sanitize' cargo +nightly fuzz run $features $t $a)"
    done
  done
  exit 1
fi
echo "=== fuzz: all targets passed in $((SECONDS - t_start)) s"
