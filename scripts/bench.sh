#!/usr/bin/env bash
# The standard benchmark suite: our engine beside the source design's baseline, in one run.
#
#   scripts/bench.sh            full suite (1 M generated orders; ~15-25 minutes on 2 cores)
#   scripts/bench.sh --quick    the same scenarios on smaller inputs (under 3 minutes after the build)
#   scripts/bench.sh --out DIR  results elsewhere (default: results/)
#
# For every scenario it writes DIR/<scenario>.json (the replay report) and DIR/<scenario>.hgrm
# (HdrHistogram percentile distribution, µs), then DIR/plots/ (bench plot) and DIR/summary.txt
# (throughput and percentiles side by side, with the ratios to the baseline).
#
# Scenarios:
#   embedded-max        risk embedded (inproc), journal on, --rate max, PUSH to a sink process
#   tcp-max             risk-server process over tcp, journal on, --rate max, PUSH to a sink
#   tcp-rate-<R>        the same at a fixed open-loop rate R (10k, 100k, 500k orders/s)
#   lobster-<name>      each LOBSTER file of ../shared/data/lobster (when present), tcp risk, max
#   baseline-tcp        the source design: one synchronous JSON REQ per order (same risk-server)
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
OUT=results
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  ORDERS=200000; RATE_SECONDS=2; BASELINE_ORDERS=5000; LOBSTER_MAX=1
else
  ORDERS=1000000; RATE_SECONDS=10; BASELINE_ORDERS=50000; LOBSTER_MAX=99
fi

echo "==> building release binaries"
cargo build --release --bins --quiet
BIN=target/release
mkdir -p "$OUT/sink"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# start_risk: a fresh risk-server (fresh positions and order ids) on a free port; sets RISK, RISK_PID.
start_risk() {
  local port; port=$(free_port)
  RISK=tcp://127.0.0.1:$port
  "$BIN/risk-server" --config examples/limits.toml --bind "$RISK" >"$WORK/risk-$port.log" 2>&1 &
  RISK_PID=$!
  PIDS+=("$RISK_PID")
  for _ in $(seq 50); do grep -q "listening on" "$WORK/risk-$port.log" && return 0; sleep 0.1; done
  cat "$WORK/risk-$port.log" >&2; echo "risk-server did not start" >&2; exit 1
}
stop_risk() { kill -TERM "$RISK_PID" 2>/dev/null || true; wait "$RISK_PID" 2>/dev/null || true; }

echo "==> generating $ORDERS orders"
"$BIN/bench" gen --orders "$ORDERS" --accounts 16 --symbols 20 --seed 42 --out "$WORK/orders.bin" >/dev/null

# replay NAME FILE [engine args...]: one scenario with a fresh risk-server, sink and journal.
# The string @RISK@ among the engine args stands for the fresh risk-server's endpoint.
replay() {
  local name=$1 file=$2; shift 2
  start_risk
  local args=()
  for a in "$@"; do args+=("${a//@RISK@/$RISK}"); done
  local port; port=$(free_port)
  "$BIN/bench" sink --bind "tcp://127.0.0.1:$port" --idle-exit-ms 0 --report "$OUT/sink/$name.json" \
    >"$WORK/sink-$name.log" 2>&1 &
  local sink=$!
  PIDS+=("$sink")
  echo "==> $name"
  "$BIN/engine" replay "$file" --journal "$WORK/journal-$name" --fresh --no-progress \
    --out "tcp://127.0.0.1:$port" --report "$OUT/$name.json" --hgrm "$OUT/$name.hgrm" "${args[@]}" \
    | sed -n '1,25p'
  kill -INT "$sink" 2>/dev/null || true
  wait "$sink" 2>/dev/null || true
  stop_risk
  "$BIN/audit" verify "$WORK/journal-$name" | tail -n 1
}

replay embedded-max "$WORK/orders.bin" --risk embedded --warmup 10000
replay tcp-max "$WORK/orders.bin" --risk @RISK@ --warmup 10000

for rate in 10000 100000 500000; do
  n=$((rate * RATE_SECONDS))
  "$BIN/bench" gen --orders "$n" --accounts 16 --symbols 20 --seed 43 --out "$WORK/rate-$rate.bin" >/dev/null
  replay "tcp-rate-$((rate / 1000))k" "$WORK/rate-$rate.bin" --risk @RISK@ --rate "$rate" --warmup $((n / 20))
done

LOBSTER_DIR=../shared/data/lobster
if [ -d "$LOBSTER_DIR" ]; then
  count=0
  for f in "$LOBSTER_DIR"/*_message_*.csv.gz; do
    [ "$count" -ge "$LOBSTER_MAX" ] && break
    name=lobster-$(basename "$f" | cut -d_ -f1,2 | tr '[:upper:]' '[:lower:]')-l$(basename "$f" .csv.gz | sed 's/.*_message_//')
    replay "$name" "$f" --risk @RISK@
    count=$((count + 1))
  done
else
  echo "==> $LOBSTER_DIR is absent: skipping the LOBSTER scenarios"
fi

echo "==> baseline-tcp (the source design, $BASELINE_ORDERS orders)"
start_risk
"$BIN/bench" baseline "$WORK/orders.bin" --risk "$RISK" --limit "$BASELINE_ORDERS" \
  --report "$OUT/baseline-tcp.json" --hgrm "$OUT/baseline-tcp.hgrm" | sed -n '1,12p'
stop_risk

echo "==> plots"
"$BIN/bench" plot "$OUT" --out "$OUT/plots"

echo "==> summary ($OUT/summary.txt)"
python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, pathlib, sys
d = pathlib.Path(sys.argv[1])
rows = []
for p in sorted(d.glob("*.json")):
    if p.name.endswith(".sink.json"):
        continue
    r = json.loads(p.read_text())
    if "throughput_per_s" not in r:
        continue
    rows.append((p.stem, r))
base = next((r for n, r in rows if r.get("baseline")), None)
print(f"{'scenario':<28}{'orders':>10}{'orders/s':>12}{'p50 µs':>10}{'p99 µs':>10}{'p99.9 µs':>10}{'max µs':>10}{'× baseline':>12}")
for name, r in rows:
    l = r["latency_us"]
    ratio = f"{r['throughput_per_s'] / base['throughput_per_s']:.1f}" if base and base["throughput_per_s"] else "-"
    print(f"{name:<28}{r['orders']:>10}{r['throughput_per_s']:>12.0f}{l['p50']:>10.1f}{l['p99']:>10.1f}{l['p999']:>10.1f}{l['max']:>10.1f}{ratio:>12}")
PY
