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
# Every target is built with `--cfg crossbeam_sanitize` (crossbeam-epoch's switch for
# sanitizer runs: tiny garbage bags, eager collection, so retired memory is really freed
# and reused while the map runs, where AddressSanitizer can see a use-after-free). The
# concurrent target also gets the crate's `delay-injection` feature (random yields/sleeps
# in the lock and commit paths widen race windows); it runs last, so the rebuild that
# feature needs happens once.
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
# concurrent last (see above)
targets="$(echo "$targets" | tr ' ' '\n' | grep -v '^concurrent$' | tr '\n' ' ')$(echo "$targets" | tr ' ' '\n' | grep '^concurrent$')"
export RUSTFLAGS="${RUSTFLAGS:-} --cfg crossbeam_sanitize"
features_of() {
  case $1 in
    concurrent) echo "--features delay-injection" ;;
    *) echo "" ;;
  esac
}

echo "=== fuzz: building targets: $targets"
t0=$SECONDS
if ! cargo +nightly fuzz build; then
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
  # shellcheck disable=SC2046 # the feature flags are two words on purpose
  cargo +nightly fuzz run $(features_of "$t") "$t" "corpus-run/$t" "corpus/$t" -- \
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
      echo "    reproduce: (cd fuzz && RUSTFLAGS='--cfg crossbeam_sanitize' cargo +nightly fuzz run $(features_of "$t") $t $a)"
    done
  done
  exit 1
fi
echo "=== fuzz: all targets passed in $((SECONDS - t_start)) s"
