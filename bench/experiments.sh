#!/usr/bin/env bash
# Runs the measured tables of the docs: every codec (docs/compression.md),
# every strategy and the robustness runs (docs/strategies.md), and every
# selector over six grid zones (docs/carbon.md). Each run is a real
# `verdant demo` (10-12 LibTorch clients on loopback, Fashion-MNIST).
# Usage: bench/experiments.sh [codecs|strategies|robustness|carbon|all] [OUT]
# Results: OUT/<table>.md (markdown) and each run's folder. Takes about
# 1 min per run on the 2-core reference machine; `all` is ~60 runs.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
out=${2:-out/experiments}
bin=${VERDANT_BIN:-build/verdant}
mkdir -p "$out/runs"

# summary.json is pretty-printed one key per line: "key": value,
get() { awk -v k="\"$2\":" '$1 == k { v = $2; gsub(/[",]/, "", v); print v }' "$1/summary.json"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

run() {  # run NAME ARGS...
  local name=$1; shift
  local dir="$out/runs/$name"
  if [ -f "$dir/summary.json" ] && grep -q '"status": "ok"' "$dir/summary.json"; then return 0; fi
  rm -rf "$dir"
  echo "== $name: verdant demo $*" >&2
  "$bin" demo --seed 1 --out "$dir" "$@" > "$out/runs/$name.log" 2>&1 || echo "   (exit $?)" >&2
}

codecs() {
  local f="$out/codecs.md"
  echo "| partition | codec | final accuracy | bytes up | bytes down | uplink reduction |" > "$f"
  echo "|---|---|---|---|---|---|" >> "$f"
  for part in iid dirichlet:0.5; do
    local base_up=""
    for codec in identity fp16 int8 int4 qsgd:16 topk:0.1+int8 topk:0.01+int8; do
      local name="codec-${part//:/}-${codec//[:+]/_}"
      run "$name" --clients 10 --rounds 20 --model mlp --partition "$part" --codec "$codec"
      local d="$out/runs/$name"
      [ -f "$d/summary.json" ] || continue
      local up; up=$(get "$d" bytes_up)
      [ -n "$base_up" ] || base_up=$up
      printf "| %s | \`%s\` | %.4f | %s MB | %s MB | %.1fx |\n" "$part" "$codec" "$(get "$d" final_accuracy)" \
        "$(mb "$up")" "$(mb "$(get "$d" bytes_down)")" "$(awk -v a="$base_up" -v b="$up" 'BEGIN{print a/b}')" >> "$f"
    done
    local name="codec-${part//:/}-int8-down-delta_int8"
    run "$name" --clients 10 --rounds 20 --model mlp --partition "$part" --codec int8 --downlink delta:int8
    local d="$out/runs/$name"
    if [ -f "$d/summary.json" ]; then
      printf "| %s | \`int8\`, downlink \`delta:int8\` | %.4f | %s MB | %s MB | %.1fx |\n" "$part" \
        "$(get "$d" final_accuracy)" "$(mb "$(get "$d" bytes_up)")" "$(mb "$(get "$d" bytes_down)")" \
        "$(awk -v a="$base_up" -v b="$(get "$d" bytes_up)" 'BEGIN{print a/b}')" >> "$f"
    fi
  done
  cat "$f"
}

strategies() {
  local f="$out/strategies.md"
  echo "| strategy | options | final accuracy | final loss |" > "$f"
  echo "|---|---|---|---|" >> "$f"
  while IFS='|' read -r s opts; do
    local name="strategy-$s"
    # shellcheck disable=SC2086
    run "$name" --clients 10 --rounds 30 --model mlp --partition dirichlet:0.5 --strategy "$s" $opts
    local d="$out/runs/$name"
    [ -f "$d/summary.json" ] || continue
    printf "| \`%s\` | \`%s\` | %.4f | %.4f |\n" "$s" "${opts:-defaults}" "$(get "$d" final_accuracy)" \
      "$(get "$d" final_loss)" >> "$f"
  done <<'LIST'
fedavg|
fedavgm|--momentum 0.9
fedprox|--mu 0.01
fedadagrad|
fedadam|
fedyogi|
median|
trimmedmean|--beta 0.2
krum|--f 2
multikrum|--f 2 --m 6
dp-fedavg|--clip-norm 1 --noise-multiplier 0.1
LIST
  cat "$f"
}

robustness() {
  local f="$out/robustness.md"
  echo "| strategy | attack (2 of 10 clients) | final accuracy | finite model | failed client-rounds |" > "$f"
  echo "|---|---|---|---|---|" >> "$f"
  for s in fedavg median trimmedmean krum; do
    local opts=""
    [ "$s" = trimmedmean ] && opts="--beta 0.2"
    [ "$s" = krum ] && opts="--f 2"
    for attack in none scale:1e6 nan; do
      local name="robust-$s-${attack//[:.]/_}"
      local adv=(--adversarial 2 --attack "$attack")
      [ "$attack" = none ] && adv=()
      # shellcheck disable=SC2086
      run "$name" --clients 10 --rounds 30 --model mlp --partition iid --strategy "$s" $opts "${adv[@]}"
      local d="$out/runs/$name"
      [ -f "$d/summary.json" ] || continue
      local acc; acc=$(get "$d" final_accuracy)
      local loss; loss=$(get "$d" final_loss)
      local finite=yes
      case "$loss" in *nan*|*inf*|null|"") finite=no ;; esac
      local failed; failed=$(awk -F, 'NR > 1 { s += $4 } END { print s + 0 }' "$d/rounds.csv")
      printf "| \`%s\` | %s | %.4f | %s | %s |\n" "$s" "$attack" "$acc" "$finite" "$failed" >> "$f"
    done
  done
  cat "$f"
}

carbon() {
  local f="$out/carbon.md"
  echo "| selector | final accuracy | emissions_g (operational) | embodied_g | energy (J) | rounds | deferred h | participation Gini |" > "$f"
  echo "|---|---|---|---|---|---|---|---|" >> "$f"
  for sel in random eligible carbon carbon-deferral oort utility-per-gram; do
    local name="carbon-$sel"
    run "$name" --clients 12 --clients-per-round 4 --rounds 20 --model mlp --partition iid \
      --zones NO,ES,US-CISO,US-MISO,US-AZPS,BR --selector "$sel" --max-defer-h 12
    local d="$out/runs/$name"
    [ -f "$d/summary.json" ] || continue
    local deferred; deferred=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; ++i) if ($i == "deferred_seconds") c = i }
                                         NR > 1 { s += $c } END { printf "%.1f", s / 3600 }' "$d/rounds.csv")
    printf "| \`%s\` | %.4f | %.4f | %.4f | %.1f | %s | %s | %.3f |\n" "$sel" "$(get "$d" final_accuracy)" \
      "$(get "$d" emissions_g)" "$(get "$d" embodied_g)" "$(get "$d" energy_joules)" \
      "$(get "$d" rounds_completed)" "$deferred" "$(get "$d" participation_gini)" >> "$f"
  done
  cat "$f"
}

case "$what" in
  codecs) codecs ;;
  strategies) strategies ;;
  robustness) robustness ;;
  carbon) carbon ;;
  all) carbon; codecs; strategies; robustness ;;
  *) echo "usage: $0 [codecs|strategies|robustness|carbon|all] [OUT]" >&2; exit 2 ;;
esac
