#!/usr/bin/env bash
# Coverage-guided fuzzing campaign (cargo-fuzz / libFuzzer on the stable toolchain):
# builds the targets in fuzz/ and runs each for SECONDS seconds (default 60), one after
# the other, nice'd, one job. README.md, "Fuzzing", has the targets and results.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      default: every im2rec target
#   FUZZ_RUNS=1000000 scripts/fuzz.sh 3600 lst  stop each target after 10^6 executions (or the time)
#   FUZZ_RECTRAIN=1 scripts/fuzz.sh 60         the rectrain targets (fuzz/rectrain; builds burn,
#                                               at opt-level 1: see fuzz/rectrain/Cargo.toml)
#
# New inputs that grow coverage are added to fuzz/corpus/<target>/ (commit the small
# ones); a crash, panic, timeout or out-of-memory stops that target and leaves the input
# in fuzz/artifacts/<target>/ (reproduce: cargo fuzz run <target> <file>). Exit status 1
# when any target failed. Needs a C compiler (libFuzzer is built from source) and
# installs cargo-fuzz with `cargo install` when missing. RUSTC_BOOTSTRAP=1 lets the
# stable compiler take the `-Z` flags cargo-fuzz passes; `--sanitizer none` because the
# code under test is safe Rust plus C that is not instrumented either way (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR  # the fuzz crates keep their own target/ folders
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
root=$PWD
if [ "${FUZZ_RECTRAIN:-0}" = 1 ]; then
  dir=$root/fuzz/rectrain
  default_targets="weights artifact_config hyperparameters mxnet_params mxnet_symbol"
  # An optimised instrumented build of burn takes over an hour on two cores; the dev
  # profile (opt-level 1, debug assertions) builds in minutes.
  profile=(--dev)
else
  dir=$root/fuzz
  default_targets="recordio rec_idx idx lst image_record image"
  # Release build with debug assertions and overflow checks (-a).
  profile=(-O -a)
fi
targets=${*:-$default_targets}
if [ ! -d fuzz/corpus/recordio ]; then
  (cd fuzz/seedgen && cargo run -q --release -- ../corpus)
fi
# No sanitizer. cargo runs from inside the fuzz crate: the repository's cargo guard lets
# builds under fuzz/ pass.
flags=(--sanitizer none "${profile[@]}")
cd "$dir"
nice cargo fuzz build --fuzz-dir "$dir" "${flags[@]}"
failed=0
for t in $targets; do
  mkdir -p "$root/fuzz/corpus/$t" "$dir/artifacts/$t"
  dict=()
  [ -f "$root/fuzz/dict/$t.dict" ] && dict=("-dict=$root/fuzz/dict/$t.dict")
  echo "== $t: ${seconds}s"
  # -rss_limit_mb: a decode may legitimately fill up to imageops::MAX_PIXELS (2^28)
  # pixels; -timeout: seconds per input before it counts as a hang.
  log="$dir/artifacts/$t/last-run.log"
  status=0
  nice cargo fuzz run --fuzz-dir "$dir" "${flags[@]}" "$t" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -runs="${FUZZ_RUNS:--1}" -timeout=10 -rss_limit_mb=3072 -max_len=65536 \
    -print_final_stats=1 "${dict[@]}" -artifact_prefix="$dir/artifacts/$t/" >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|panicked|^SUMMARY|^==[0-9]+== ERROR|Test unit written' "$log" || true
  if [ "$status" != 0 ]; then
    echo "== $t FAILED (exit $status; log $log, input in $dir/artifacts/$t/)"
    failed=1
  fi
done
exit "$failed"
