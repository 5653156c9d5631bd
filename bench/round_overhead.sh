#!/usr/bin/env bash
# Round overhead against Flower (issue 9): the synthetic no-train workload
# (`verdant demo --model synthetic:N --no-train`: clients answer with the
# received model plus small noise) through the whole pipeline — selection,
# Noise-encrypted channels, codecs, FedAvg, the ledger — in three scenarios,
# each with the default settings (encryption on, `identity` codec) and with an
# `int8` uplink:
#   S1: 10 client processes, 1M float32 parameters
#   S2: 10 client processes, 10M parameters
#   S3: 100 client processes, 100k parameters
# and prints a markdown table with Flower 1.6.0's figures (gRPC, stock FedAvg,
# no training, same machine type) beside ours.
#
# Usage: bench/round_overhead.sh [OUT]       (default OUT: out/round_overhead)
# Environment: VERDANT_BIN (build/verdant), ROUNDS (20), SCENARIOS ("S1 S2 S3"),
#              CODECS ("identity int8"; an entry UP/DOWN also sets the downlink,
#              e.g. "int8/delta:int8"), FORCE=1 reruns finished runs.
# Measure on a quiet machine (load average well under 2 on the 2-core
# reference machine): every client shares the cores with the coordinator.
#
# Columns:
#   median round wall   median of rounds.csv wall_seconds (the round's tasks
#                       queued -> aggregation done; the clients' work included)
#   coord. CPU / round  summary.json coordinator_rounds_cpu_seconds / rounds:
#                       user + system CPU of the coordinator process (the demo
#                       process; clients are separate processes) from round 1's
#                       selection to the last round's report, i.e. without
#                       start-up and the wait for clients (coordinator_cpu_seconds,
#                       the whole run, is in the run's summary.json)
#   coord. peak RSS     coordinator_peak_rss_mb (getrusage ru_maxrss, MiB)
#   wire / round        (bytes_up + bytes_down) / rounds, socket bytes with
#                       framing and record overhead, MB (1e6)
# Needs only bash, awk and sort.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/round_overhead}
bin=${VERDANT_BIN:-build/verdant}
rounds=${ROUNDS:-20}
scenarios=${SCENARIOS:-"S1 S2 S3"}
codecs=${CODECS:-"identity int8"}
mkdir -p "$out/runs"
[ -x "$bin" ] || { echo "no $bin: build it with cmake --build build --target verdant" >&2; exit 1; }

# Scenario: clients, parameters, Flower's wall s, CPU s, RSS MB, wire MB per round.
scenario() {
  case $1 in
    S1) echo "10 1000000 0.287 0.165 533 80" ;;
    S2) echo "10 10000000 3.50 1.93 4261 800" ;;
    S3) echo "100 100000 0.49 0.27 415 80" ;;
    *) echo "unknown scenario $1 (S1, S2, S3)" >&2; exit 2 ;;
  esac
}

# summary.json is pretty-printed, one key per line: "key": value,
get() { awk -v k="\"$2\":" '$1 == k { v = $2; gsub(/[",]/, "", v); print v }' "$1/summary.json"; }
# Median of rounds.csv's wall_seconds (column 9).
median_wall() {
  awk -F, 'NR > 1 && $9 != "" { print $9 }' "$1/rounds.csv" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

run() {  # run DIR ARGS...
  local dir=$1; shift
  if [ -z "${FORCE:-}" ] && [ -f "$dir/summary.json" ] && grep -q '"status": "ok"' "$dir/summary.json"; then return 0; fi
  rm -rf "$dir"
  echo "== $(basename "$dir"): verdant demo $* (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$bin" demo --seed 1 --out "$dir" "$@" > "$dir.log" 2>&1 || echo "   (exit $?; see $dir.log)" >&2
}

table="$out/round_overhead.md"
{
  echo "| scenario | codec | median round wall | coord. CPU / round | coord. peak RSS | wire / round | Flower: wall / CPU / RSS / wire | wall vs Flower | RSS vs Flower |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$table"
for s in $scenarios; do
  read -r clients params f_wall f_cpu f_rss f_wire <<< "$(scenario "$s")"
  for spec in $codecs; do
    codec=${spec%%/*}
    down=identity
    [ "$spec" = "$codec" ] || down=${spec#*/}
    dir="$out/runs/$s-${spec//[\/:]/_}"
    # 100 client processes take a while to start and connect; the demo waits
    # up to 120 s for all of them, and a round may take up to --round-timeout.
    run "$dir" --model "synthetic:$params" --no-train --clients "$clients" --rounds "$rounds" --codec "$codec" \
      --downlink "$down" --round-timeout 600
    if [ ! -f "$dir/summary.json" ] || ! grep -q '"status": "ok"' "$dir/summary.json"; then
      echo "| $s | \`$spec\` | failed (see $dir.log) | | | | | | |" >> "$table"
      continue
    fi
    n=$(get "$dir" rounds_completed)
    wall=$(median_wall "$dir")
    cpu=$(awk -v c="$(get "$dir" coordinator_rounds_cpu_seconds)" -v n="$n" 'BEGIN { printf "%.3f", c / n }')
    rss=$(awk -v r="$(get "$dir" coordinator_peak_rss_mb)" 'BEGIN { printf "%.0f", r }')
    wire=$(awk -v u="$(get "$dir" bytes_up)" -v d="$(get "$dir" bytes_down)" -v n="$n" 'BEGIN { printf "%.1f", (u + d) / n / 1e6 }')
    awk -v s="$s ($clients clients, $params params)" -v codec="$spec" -v wall="$wall" -v cpu="$cpu" -v rss="$rss" \
      -v wire="$wire" -v fw="$f_wall" -v fc="$f_cpu" -v fr="$f_rss" -v fb="$f_wire" 'BEGIN {
        printf "| %s | `%s` | %.3f s | %s s | %s MB | %s MB | %s s / %s s / %s MB / %s MB | %.2fx | %.2fx |\n",
          s, codec, wall, cpu, rss, wire, fw, fc, fr, fb, wall / fw, rss / fr }' >> "$table"
  done
done
echo "machine: $(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds per run" >> "$table"
cat "$table"
