#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/*_fuzz.cc) with clang and runs each one
# for a bounded time, one after the other.
#   scripts/fuzz.sh [seconds-per-target] [build-dir]     (defaults: 60, /work/build-fuzz)
# Environment:
#   FUZZ_RUNS=N      stop each target after N executions instead (still capped by time)
#   FUZZ_TARGETS="a b"  only these targets
#   FUZZ_JOBS=2      build parallelism
# Each run starts from the committed seeds in fuzz/corpus/<target>/ and grows a
# working corpus in <build-dir>/corpus/<target>/; crashes land in
# <build-dir>/artifacts/<target>/ and make the script exit non-zero.
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
BUILD_DIR="${2:-/work/build-fuzz}"
SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOBS="${FUZZ_JOBS:-2}"

CC=clang CXX=clang++ cmake -S "$SRC_DIR" -B "$BUILD_DIR" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVERDANT_BUILD_FUZZ=ON -DVERDANT_WITH_TORCH=OFF \
  -DVERDANT_BUILD_TESTS=OFF -DVERDANT_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD_DIR" --target verdant_fuzz -j "$JOBS"

targets="${FUZZ_TARGETS:-$(cd "$SRC_DIR/fuzz" && ls *_fuzz.cc | sed 's/\.cc$//')}"
status=0
summary=""
for t in $targets; do
  corpus="$BUILD_DIR/corpus/$t"
  artifacts="$BUILD_DIR/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  log="$BUILD_DIR/$t.log"
  args=(-max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -detect_leaks=1
        -artifact_prefix="$artifacts/" -max_len=4096)
  [[ -n "${FUZZ_RUNS:-}" ]] && args+=(-runs="$FUZZ_RUNS")
  echo "== $t (${SECONDS_PER_TARGET}s${FUZZ_RUNS:+, $FUZZ_RUNS runs})"
  if ! "$BUILD_DIR/$t" "${args[@]}" "$corpus" "$SRC_DIR/fuzz/corpus/$t" >"$log" 2>&1; then
    echo "!! $t found a crash; see $log and $artifacts"
    status=1
  fi
  execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
  rate=$(grep -a 'stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -1)
  cov=$(grep -a -o 'cov: [0-9]*' "$log" | tail -1)
  line="$t: ${execs:-?} executions, ${rate:-?} exec/s, ${cov:-cov: ?}"
  echo "   $line"
  summary+="$line"$'\n'
done
echo
echo "$summary"
exit $status
