#!/usr/bin/env bash
# Scale benchmark of the fleet simulator, energy-only (issue 7): generate a
# fleet into a temporary folder, then time `verdant simulate` on it, each
# under /usr/bin/time -v, and print wall time, peak RSS, client-rounds per
# second and fleet events per second. Generation and simulation are timed
# separately; the issue's target concerns the simulation.
#
# Usage: bench/sim_scale.sh
# Environment (defaults: the issue's target):
#   DEVICES (1000000)  DAYS (7)  CLIENTS (1000 per round)  INTERVAL (10m)
#   ROUNDS  (unset: DAYS x 24 h / INTERVAL; set to time only the first N rounds)
#   MODEL   (synthetic:1000 — 1,000 float32 parameters, 4 kB: the update each
#            client-round encodes, decodes and aggregates; energy-only rounds
#            measure the pipeline and the fleet, not model size)
#   CODEC (int8)  SELECTOR (random)  SEED (1)
#   ZONES (US-CISO,US-ERCO,US-PJM,US-MISO,ES,NO)
#   VERDANT_BIN (build/verdant)  KEEP=1 keeps the temporary folder (printed)
# Needs bash, awk, python3 (reads summary.json) and GNU time (/usr/bin/time).
# Report the machine load beside the figures: the run prints `uptime` before
# and after.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${VERDANT_BIN:-build/verdant}
devices=${DEVICES:-1000000}
days=${DAYS:-7}
clients=${CLIENTS:-1000}
interval=${INTERVAL:-10m}
model=${MODEL:-synthetic:1000}
codec=${CODEC:-int8}
selector=${SELECTOR:-random}
seed=${SEED:-1}
zones=${ZONES:-US-CISO,US-ERCO,US-PJM,US-MISO,ES,NO}
[ -x "$bin" ] || { echo "sim_scale: no $bin (build first, or set VERDANT_BIN)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "sim_scale: needs GNU time at /usr/bin/time" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sim_scale.XXXXXX")
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$tmp"' EXIT; fi
echo "sim_scale: $devices devices, $days days, $clients clients per round every $interval, model $model," \
     "codec $codec, selector $selector${ROUNDS:+, first $ROUNDS rounds}; folder $tmp"
echo "load before: $(uptime)"

# The figures of one /usr/bin/time -v log: wall seconds and peak RSS (MB).
wall_of() { awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0;
  for (i = 1; i <= n; ++i) s = s * 60 + p[i]; print s }' "$1"; }
rss_of() { awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"; }  # MiB

"/usr/bin/time" -v -o "$tmp/generate.time" "$bin" fleet generate --devices "$devices" --days "$days" \
  --zones "$zones" --seed "$seed" --out "$tmp/fleet" | tee "$tmp/generate.log"
events=$(($(wc -l < "$tmp/fleet/events.csv") - 1))
mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f", b / 1e6 }'; }
echo "generate: wall $(wall_of "$tmp/generate.time") s, peak RSS $(rss_of "$tmp/generate.time") MB," \
     "devices.csv $(mb "$tmp/fleet/devices.csv") MB, events.csv $(mb "$tmp/fleet/events.csv") MB, $events events"

rounds_flag=()
[ -n "${ROUNDS:-}" ] && rounds_flag=(--rounds "$ROUNDS")
"/usr/bin/time" -v -o "$tmp/simulate.time" "$bin" simulate --fleet "$tmp/fleet" --selector "$selector" \
  --clients-per-round "$clients" --round-interval "$interval" --days "$days" "${rounds_flag[@]}" \
  --codec "$codec" --model "$model" --seed "$seed" --out "$tmp/out" --no-progress | tee "$tmp/simulate.log"
wall=$(wall_of "$tmp/simulate.time")
python3 - "$tmp/out/summary.json" "$wall" "$(rss_of "$tmp/simulate.time")" <<'EOF'
import json, sys
summary, wall, rss = json.load(open(sys.argv[1])), float(sys.argv[2]), sys.argv[3]
s = summary["simulation"]
inside = summary.get("wall_seconds", 0.0)
print(f"simulate: wall {wall:.1f} s (process; {inside:.1f} s in the coordinator's run), peak RSS {rss} MB")
print(f"simulate: {s['client_rounds']:.0f} client-rounds, {s['events_applied']:.0f} events applied, "
      f"{s['virtual_seconds'] / 3600:.1f} virtual h")
print(f"throughput (process wall): {s['client_rounds'] / wall:,.0f} client-rounds/s, "
      f"{s['events_applied'] / wall:,.0f} events/s")
EOF
echo "load after: $(uptime)"
