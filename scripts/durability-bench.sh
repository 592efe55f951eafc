#!/usr/bin/env bash
# Cost of `--durability batch` against `none` (issue 13 item 6; docs/results.md), alternating
# runs: `engine replay --risk inline --out none` at `--rate max` (1 M orders) and at 10 k/s
# (50,000 orders), and with RISK=tcp at 10 k/s against a fresh `risk-server` per run.
#
# Usage: scripts/durability-bench.sh WORKDIR max|10k [PAIRS]     (RISK=tcp for a risk-server)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cargo-bins.sh
. scripts/cargo-bins.sh
work=${1:?usage: scripts/durability-bench.sh WORKDIR max|10k [PAIRS]}
mode=${2:?max or 10k}
pairs=${3:-5}
cargo_release_bins -p engine -p bench -p risk
require_bins engine bench risk-server
mkdir -p "$work"
case $mode in
  max) n=1000000; rate=max ;;
  10k) n=50000; rate=10000 ;;
  *) echo "max or 10k" >&2; exit 2 ;;
esac
file=$work/orders-$n.bin
[ -f "$file" ] || "$BIN/bench" gen --orders $n --seed 43 --out "$file" >/dev/null
for i in $(seq 1 "$pairs"); do
  for d in none batch; do
    rm -rf "$work/jd"
    risk=(--risk inline)
    rs=
    if [ "${RISK:-inline}" = tcp ]; then
      port=$((20000 + RANDOM % 20000))
      "$BIN/risk-server" --config examples/limits.toml --bind tcp://127.0.0.1:$port >/dev/null 2>&1 &
      rs=$!
      sleep 0.3
      risk=(--risk "tcp://127.0.0.1:$port")
    fi
    rep=$work/d-$mode-${RISK:-inline}-$d-$i.json
    "$BIN/engine" replay "$file" --rate $rate "${risk[@]}" --out none --journal "$work/jd" --fresh \
      --no-progress --durability $d --report "$rep" >/dev/null 2>&1
    if [ -n "$rs" ]; then kill "$rs"; wait "$rs" 2>/dev/null || true; fi
    python3 - "$d" "$rep" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
l = r["latency_us"]
print(f"{sys.argv[1]:5} {r['orders']:8} orders {r['throughput_per_s']:10.0f}/s "
      f"p50 {l['p50']:8.1f} p99 {l['p99']:9.1f} p99.9 {l['p999']:9.1f} max {l['max']:9.1f} µs")
PY
  done
done
