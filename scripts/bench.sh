#!/usr/bin/env bash
# The standard benchmark suite: our engine beside the source design's baseline, in one run.
#
#   scripts/bench.sh            full suite (1 M generated orders, 10 s per fixed rate)
#   scripts/bench.sh --quick    the same scenarios on smaller inputs (2 s per fixed rate; about
#                               2-4 minutes on 2 cores once the release build is done)
#   scripts/bench.sh --smoke    every scenario once on tiny inputs (20 k orders, 0.2 s per fixed
#                               rate, no LOBSTER): checks that the suite runs (scripts/readme-check.sh);
#                               its figures mean nothing
#   scripts/bench.sh --out DIR  results elsewhere (default: results/; its *.json and *.hgrm are
#                               replaced)
#
# Binaries come from `cargo build --release --bins`, found through cargo (CARGO_TARGET_DIR is
# respected: scripts/cargo-bins.sh). Needs python3 (a free TCP port for the audit feed).
#
# For every scenario it writes DIR/<scenario>.json (the replay report), DIR/<scenario>.hgrm
# (HdrHistogram percentile distribution, µs) and DIR/<scenario>.hdr (the histogram in
# HdrHistogram's V2 compressed format, ns; what bench plot reads), DIR/sink/<scenario>.json (what the sink counted),
# then DIR/plots/ (bench plot) and DIR/summary.txt (bench summary: the scenarios side by side,
# each target met or not). Every scenario gets a fresh risk-server, sink and journal; the risk
# and the sink are separate processes over tcp loopback.
#
# Scenarios (<mode> is each of auto and dedicated, run one after the other):
#   tcp-10k-<mode>       risk-server over tcp, --rate 10000, --threading <mode>
#   tcp-100k-<mode>      the same at --rate 100000
#   inline-100k-<mode>   --risk inline --idle spin at --rate 100000
#   inline-100k-pinned   the same, placed as docs/tuning.md tells a tuned host: the engine's
#                        shared thread pinned to the last CPU of the affinity mask (--pin; its
#                        other threads kept off that CPU), the sink on the other CPUs (taskset).
#                        Only with 2 or more CPUs in the mask. Run scripts/tune-host.sh --apply
#                        --cores <that CPU> first for the tuned host's figures (kernel threads
#                        and IRQs off the CPU); the suite itself changes nothing on the host.
#   tcp-max-<mode>       risk-server over tcp, --rate max (latency there is queueing)
#   inline-max-<mode>    --risk inline, --rate max
#   tcp-500k-auto        risk-server over tcp, --rate 500000
#   embedded-max         --risk embedded (inproc risk thread), --rate max
#   lobster-<name>       each LOBSTER file of ../shared/data/lobster (when present), tcp, max
#   baseline-10k         the source design (one JSON REQ per order, PUSH to a sink, PUB of an
#                        audit event per order) at 10 k/s, on the same orders as tcp-10k-*
#   baseline-100k        the same at 100 k/s (beyond what one round trip per order sustains: its
#                        latency shows the queue it builds), on the first orders of that file
#   baseline-max         the same at --rate max
# A scenario whose engine flags (--threading, --risk inline) this engine does not know is
# skipped with a message saying so, and its targets read "no data"; except that an engine
# without --threading runs the `dedicated` scenarios without the flag (one thread per stage is
# all it has), saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cargo-bins.sh
. scripts/cargo-bins.sh

QUICK=0
OUT=results
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --smoke) QUICK=smoke ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = smoke ]; then
  ORDERS=20000; RATE_MS=200; BASELINE_ORDERS=500; LOBSTER_MAX=0
elif [ "$QUICK" = 1 ]; then
  ORDERS=200000; RATE_MS=2000; BASELINE_ORDERS=5000; LOBSTER_MAX=1
else
  ORDERS=1000000; RATE_MS=10000; BASELINE_ORDERS=50000; LOBSTER_MAX=99
fi
# The tools' own "next:" hints (log target `hint`) are for a person at a prompt, not for this
# suite's output.
nohint() { RUST_LOG="${RUST_LOG:-info},hint=off" "$@"; }
# On a terminal, each scenario's line says how far the suite is (scenarios done, time so far).
DONE=0
say() {
  if [ -t 1 ]; then
    printf '==> [%d done, %dm%02ds] %s\n' "$DONE" $((SECONDS / 60)) $((SECONDS % 60)) "$*"
  else
    printf '==> %s\n' "$*"
  fi
}
MODES=(auto dedicated)

echo "==> building release binaries (cargo build --release --bins)"
cargo_release_bins
require_bins engine bench risk-server audit
echo "    binaries in $BIN"

mkdir -p "$OUT/sink"
rm -f "$OUT"/*.json "$OUT"/*.hgrm "$OUT"/*.hdr "$OUT"/sink/*.json "$OUT/summary.txt"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")
PIDS=()
SKIPPED=()
SINK_WRAP=()
FAILED=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A free TCP port on loopback (for the baseline's audit PUB, which the sink must know in advance).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# wait_line FILE PATTERN WHAT: waits (5 s at most) for a line matching PATTERN in FILE; prints
# the first match.
wait_line() {
  local file=$1 pattern=$2 what=$3
  for _ in $(seq 50); do
    if grep -m 1 -E "$pattern" "$file" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  cat "$file" >&2
  echo "$what did not start" >&2
  return 1
}

# start_risk: a fresh risk-server (fresh positions and order ids) on a free port; sets RISK, RISK_PID.
start_risk() {
  local log="$WORK/risk-$RANDOM.log"
  "$BIN/risk-server" --config examples/limits.toml --bind 'tcp://127.0.0.1:*' >"$log" 2>&1 &
  RISK_PID=$!
  PIDS+=("$RISK_PID")
  RISK=$(wait_line "$log" '^listening on ' risk-server | sed 's/^listening on //')
}
stop_risk() { kill -TERM "$RISK_PID" 2>/dev/null || true; wait "$RISK_PID" 2>/dev/null || true; }

# start_sink NAME [sink args]: a fresh `bench sink` on a free port; sets SINK, SINK_PID.
start_sink() {
  local name=$1; shift
  local log="$WORK/sink-$name.log"
  ${SINK_WRAP[@]+"${SINK_WRAP[@]}"} "$BIN/bench" sink --bind 'tcp://127.0.0.1:*' --idle-exit-ms 0 \
    --report "$OUT/sink/$name.json" "$@" >"$log" 2>&1 &
  SINK_PID=$!
  PIDS+=("$SINK_PID")
  SINK=$(wait_line "$log" '^sink: bound to ' 'bench sink' | sed 's/^sink: bound to //')
}
stop_sink() {
  kill -INT "$SINK_PID" 2>/dev/null || true
  wait "$SINK_PID" 2>/dev/null || true
  tail -n 2 "$WORK/sink-$1.log" | sed 's/^/    /'
}

echo "==> generating $ORDERS orders"
nohint "$BIN/bench" gen --orders "$ORDERS" --accounts 16 --symbols 20 --seed 42 --out "$WORK/orders.bin" >/dev/null
nohint "$BIN/bench" gen --orders 100 --accounts 16 --symbols 20 --seed 1 --out "$WORK/probe.bin" >/dev/null

# engine_accepts ARGS...: whether `engine replay` runs with these flags (a 100-order replay,
# embedded risk unless ARGS name one); when it refuses, PROBE_WHY says why (its first error line).
declare -A PROBED=() PROBED_WHY=()
engine_accepts() {
  local key="flags:$*"
  if [ -z "${PROBED[$key]:-}" ]; then
    rm -rf "$WORK/probe-journal"
    if "$BIN/engine" replay "$WORK/probe.bin" --journal "$WORK/probe-journal" --fresh --no-progress \
      "$@" >/dev/null 2>"$WORK/probe.err"; then
      PROBED[$key]=yes
    else
      PROBED[$key]=no
      PROBED_WHY[$key]=$(grep -m 1 -iE 'error|invalid|unexpected' "$WORK/probe.err" || head -n 1 "$WORK/probe.err")
    fi
  fi
  PROBE_WHY=${PROBED_WHY[$key]:-}
  [ "${PROBED[$key]}" = yes ]
}

# probe_flags ARGS...: the flags among ARGS that a recent engine may not have yet.
probe_flags() {
  local out=() prev=
  for a in "$@"; do
    case "$prev" in
      --threading) out+=(--threading "$a") ;;
      --risk) [ "$a" = inline ] && out+=(--risk inline) ;;
    esac
    prev=$a
  done
  if [ ${#out[@]} -gt 0 ]; then printf '%s\n' "${out[@]}"; fi
}

# without_threading ARGS...: ARGS less any `--threading MODE`, one per line.
without_threading() {
  local skip=0 a
  for a in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    if [ "$a" = --threading ]; then skip=1; continue; fi
    printf '%s\n' "$a"
  done
}

# replay NAME FILE [engine args...]: one scenario with a fresh risk-server, sink and journal.
# The string @RISK@ among the engine args stands for the fresh risk-server's endpoint.
replay() {
  local name=$1 file=$2; shift 2
  local probe=() rest=() given=("$@")
  mapfile -t probe < <(probe_flags "$@")
  if [ ${#probe[@]} -gt 0 ] && ! engine_accepts "${probe[@]}"; then
    local why=$PROBE_WHY
    # An engine from before --threading runs one thread per stage, which is what
    # `--threading dedicated` asks for: run that scenario without the flag, and say so.
    mapfile -t rest < <(without_threading "${probe[@]}")
    if [[ " ${probe[*]} " == *" --threading dedicated "* ]] && engine_accepts "${rest[@]}"; then
      echo "==> $name: this engine refuses --threading ($why); running it without the flag: its one thread per stage is the dedicated mode"
      mapfile -t given < <(without_threading "$@")
    else
      echo "==> $name: SKIPPED, this engine refuses '${probe[*]}': $why"
      SKIPPED+=("$name")
      return 0
    fi
  fi
  start_risk
  local args=()
  for a in "${given[@]}"; do args+=("${a//@RISK@/$RISK}"); done
  start_sink "$name"
  say "$name"
  DONE=$((DONE + 1))
  local status=0
  "$BIN/engine" replay "$file" --journal "$WORK/journal-$name" --fresh --no-progress \
    --out "$SINK" --report "$OUT/$name.json" --hgrm "$OUT/$name.hgrm" "${args[@]}" \
    >"$WORK/engine-$name.log" 2>&1 || status=$?
  sed -n '1,25p' "$WORK/engine-$name.log"
  stop_sink "$name"
  stop_risk
  if [ "$status" != 0 ]; then
    echo "==> $name: FAILED (engine exit status $status)"
    tail -n 5 "$WORK/engine-$name.log"
    FAILED+=("$name")
    rm -f "$OUT/$name.json" "$OUT/$name.hgrm" "$OUT/$name.hdr"
    return 0
  fi
  echo "    audit verify of the journal: $(nohint "$BIN/audit" verify "$WORK/journal-$name" | tail -n 1)"
  rm -rf "$WORK/journal-$name"
}

# baseline NAME FILE RATE LIMIT [warmup]: the source design against a fresh risk-server, PUSHing
# to a fresh sink that also subscribes to its audit PUB.
baseline() {
  local name=$1 file=$2 rate=$3 limit=$4 warmup=${5:-0}
  start_risk
  local audit; audit="tcp://127.0.0.1:$(free_port)"
  start_sink "$name" --audit-sub "$audit"
  say "$name (the source design, --rate $rate, $limit orders)"
  DONE=$((DONE + 1))
  local status=0
  "$BIN/bench" baseline "$file" --risk "$RISK" --out "$SINK" --audit-pub "$audit" --rate "$rate" \
    --limit "$limit" --warmup "$warmup" --report "$OUT/$name.json" --hgrm "$OUT/$name.hgrm" \
    >"$WORK/baseline-$name.log" 2>&1 || status=$?
  sed -n '1,14p' "$WORK/baseline-$name.log"
  stop_sink "$name"
  stop_risk
  if [ "$status" != 0 ]; then
    echo "==> $name: FAILED (exit status $status)"
    FAILED+=("$name")
    rm -f "$OUT/$name.json" "$OUT/$name.hgrm" "$OUT/$name.hdr"
  fi
}

for mode in "${MODES[@]}"; do
  replay "tcp-max-$mode" "$WORK/orders.bin" --risk @RISK@ --threading "$mode" --warmup 10000
  replay "inline-max-$mode" "$WORK/orders.bin" --risk inline --threading "$mode" --warmup 10000
done
replay embedded-max "$WORK/orders.bin" --risk embedded --warmup 10000
baseline baseline-max "$WORK/orders.bin" max "$BASELINE_ORDERS"

for rate in 10000 100000; do
  n=$((rate * RATE_MS / 1000))
  k=$((rate / 1000))k
  nohint "$BIN/bench" gen --orders "$n" --accounts 16 --symbols 20 --seed 43 --out "$WORK/rate-$rate.bin" >/dev/null
  for mode in "${MODES[@]}"; do
    replay "tcp-$k-$mode" "$WORK/rate-$rate.bin" --risk @RISK@ --rate "$rate" --threading "$mode" \
      --warmup $((n / 20))
    if [ "$rate" = 100000 ]; then
      replay "inline-$k-$mode" "$WORK/rate-$rate.bin" --risk inline --idle spin --rate "$rate" \
        --threading "$mode" --warmup $((n / 20))
    fi
  done
  if [ "$rate" = 100000 ]; then
    # The tuned placement (see the header): the spinning thread alone on the last CPU.
    mapfile -t CPUS < <(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)), sep="\n")')
    if [ "${#CPUS[@]}" -ge 2 ]; then
      PIN_CPU=${CPUS[-1]}
      OTHERS=$(IFS=,; echo "${CPUS[*]:0:${#CPUS[@]}-1}")
      SINK_WRAP=(taskset -c "$OTHERS")
      replay "inline-$k-pinned" "$WORK/rate-$rate.bin" --risk inline --idle spin --rate "$rate" \
        --threading auto --pin "$PIN_CPU" --warmup $((n / 20))
      SINK_WRAP=()
    else
      echo "==> inline-$k-pinned: SKIPPED, one CPU in the affinity mask (nothing to pin apart)"
      SKIPPED+=("inline-$k-pinned")
    fi
  fi
  # The baseline on the same orders at the same rate; beyond what it sustains, fewer of them.
  limit=$n
  if [ "$rate" -gt 10000 ] && [ "$limit" -gt "$BASELINE_ORDERS" ]; then limit=$BASELINE_ORDERS; fi
  baseline "baseline-$k" "$WORK/rate-$rate.bin" "$rate" "$limit" $((limit / 20))
done

n=$((500000 * RATE_MS / 1000))
nohint "$BIN/bench" gen --orders "$n" --accounts 16 --symbols 20 --seed 44 --out "$WORK/rate-500000.bin" >/dev/null
replay tcp-500k-auto "$WORK/rate-500000.bin" --risk @RISK@ --rate 500000 --threading auto --warmup $((n / 20))

LOBSTER_DIR=../shared/data/lobster
if [ -d "$LOBSTER_DIR" ]; then
  count=0
  for f in "$LOBSTER_DIR"/*_message_*.csv.gz; do
    [ -e "$f" ] || continue
    [ "$count" -ge "$LOBSTER_MAX" ] && break
    name=lobster-$(basename "$f" | cut -d_ -f1,2 | tr '[:upper:]' '[:lower:]')-l$(basename "$f" .csv.gz | sed 's/.*_message_//')
    replay "$name" "$f" --risk @RISK@
    count=$((count + 1))
  done
else
  echo "==> $LOBSTER_DIR is absent: skipping the LOBSTER scenarios"
fi

echo "==> plots"
"$BIN/bench" plot "$OUT" --out "$OUT/plots"

echo "==> summary ($OUT/summary.txt)"
{
  "$BIN/bench" summary "$OUT"
  if [ ${#SKIPPED[@]} -gt 0 ]; then
    echo
    echo "Skipped (this engine does not have their flags yet): ${SKIPPED[*]}"
  fi
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo
    echo "FAILED: ${FAILED[*]}"
  fi
} | tee "$OUT/summary.txt"
[ ${#FAILED[@]} -eq 0 ]
echo "next: $OUT/summary.txt (each target met or not), $OUT/plots/latency.png and throughput.png;"
echo "      docs/results.md says how the published figures were measured"
