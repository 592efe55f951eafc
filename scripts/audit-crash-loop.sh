#!/usr/bin/env bash
# The long form of audit/tests/crash.rs: a journal writer process (`audit append-test`) is
# killed with SIGKILL at random moments, N times; after each kill the journal is recovered
# (`audit recover`, what the engine does on restart) and verified, and the last sequence number
# the writer reported as appended must still be there.
#
# Usage: scripts/audit-crash-loop.sh [KILLS] [DURABILITY]     (defaults: 200, none)
#        AUDIT_BIN=path/to/audit scripts/audit-crash-loop.sh   (default: `cargo build --release
#        -p audit --bin audit`, found in cargo's target directory, CARGO_TARGET_DIR respected)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cargo-bins.sh
. scripts/cargo-bins.sh

kills=${1:-200}
durability=${2:-none}
if [ -n "${AUDIT_BIN:-}" ]; then
  bin=$AUDIT_BIN
else
  echo "==> building the audit binary (cargo build --release -p audit --bin audit)"
  cargo_release_bins -p audit --bin audit
  bin=$BIN/audit
fi
if [ ! -x "$bin" ]; then
  echo "audit-crash-loop.sh: $bin is not an executable" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
journal="$work/journal"
reported=0

for i in $(seq 1 "$kills"); do
  "$bin" append-test "$journal" --count 1000000000 --vary --payload-bytes 200 \
    --segment-size-bytes 65536 --durability "$durability" >"$work/out" 2>"$work/err" &
  pid=$!
  # Opening verifies the whole journal first (time grows with its size): wait (at most 30 s)
  # for the first append, so that every kill lands mid-stream.
  for _ in $(seq 300); do grep -qE '^[0-9]+$' "$work/out" && break; sleep 0.1; done
  # 2..200 ms of appending, then SIGKILL.
  sleep "0.$(printf '%03d' $((RANDOM % 199 + 2)))"
  if ! kill -9 "$pid" 2>/dev/null; then
    # It ended before the kill: that is a failure of the writer, not of the loop.
    status=0
    wait "$pid" || status=$?
    echo "FAILED at kill $i: $bin append-test exited by itself (status $status) before the kill" >&2
    cat "$work/out" "$work/err" >&2
    exit 1
  fi
  wait "$pid" 2>/dev/null || true
  # The last complete line is the last seq reported as appended (a cut-off line is smaller).
  last=$(grep -E '^[0-9]+$' "$work/out" | tail -n 1 || true)
  if [ -n "$last" ] && [ "$last" -gt "$reported" ]; then
    reported=$last
  fi
  "$bin" recover "$journal" >"$work/recover"
  verify=$("$bin" verify "$journal" --json)
  last_seq=$(printf '%s' "$verify" | grep -o '"last_seq":[0-9]*' | cut -d: -f2)
  if [ -z "$last_seq" ] || [ "$last_seq" -lt "$reported" ]; then
    echo "FAILED after kill $i: reported $reported, journal ends at ${last_seq:-nothing}" >&2
    cat "$work/recover" >&2
    exit 1
  fi
  reported=$last_seq
  if [ $((i % 20)) -eq 0 ]; then
    [ -t 1 ] && printf '\r%40s\r' ''
    echo "kill $i: $last_seq records, verify OK ($(grep 'torn tail' "$work/recover"))"
  elif [ -t 1 ]; then
    # Progress on a terminal: the kill in progress, overwritten in place.
    printf '\rkill %d/%d: %d records, verify OK' "$i" "$kills" "$last_seq"
  fi
done
[ -t 1 ] && printf '\r%60s\r' ''
echo "PASSED: $kills kills, $reported records, every reported record present, verify OK"
