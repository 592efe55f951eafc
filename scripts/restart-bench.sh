#!/usr/bin/env bash
# Restart time of `engine replay --resume` (issue 13 item 1; docs/results.md, "Restart time").
# Makes a 1 M- and a 20 M-order journal (`bench gen` + `engine replay --rate max --risk inline
# --out none`; the 20 M one is ~3 GB), then times `--resume` on each finished journal (which
# resumes to nothing) RUNS times, alternating, printing the engine's own recovery line.
#
# Usage: scripts/restart-bench.sh WORKDIR [RUNS] [FLOW]
#        FLOW: default (the bench gen defaults: open orders pile up, the risk state grows with
#        the flow) or bounded (--cancel-share 0.45 --fill-share 0.30: a state of constant size)
#        REUSE=1 keeps a journal already in WORKDIR (made by an earlier run of this script)
#        instead of making it again (the 20 M one takes ~40 s and 3.4 GB).
# Lines printed per run: the engine's `recovered … in … ms` (journal + risk state), `read
# orders …` (the binary input from the resume point), `restart: ready … after … ms` (the
# restart time: command start to the pipeline taking its first order), and the wall time of
# the whole process (which adds the exit: freeing the risk state's tables) with its CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cargo-bins.sh
. scripts/cargo-bins.sh
work=${1:?usage: scripts/restart-bench.sh WORKDIR [RUNS] [default|bounded]}
runs=${2:-5}
flow=${3:-default}
cargo_release_bins -p engine -p bench
require_bins engine bench
mkdir -p "$work"
case $flow in
  default) shares=() ;;
  bounded) shares=(--cancel-share 0.45 --fill-share 0.30) ;;
  *) echo "FLOW is default or bounded" >&2; exit 2 ;;
esac
for n in 1000000 20000000; do
  f=$work/$flow-$n.bin
  [ -f "$f" ] || "$BIN/bench" gen --orders $n --seed 43 "${shares[@]}" --out "$f" >/dev/null
  if [ "${REUSE:-0}" = 1 ] && [ -d "$work/j-$flow-$n" ]; then
    echo "reusing $work/j-$flow-$n"
  else
    rm -rf "$work/j-$flow-$n"
    "$BIN/engine" replay "$f" --rate max --risk inline --out none --journal "$work/j-$flow-$n" \
      --fresh --no-progress --report /dev/null | grep throughput
  fi
  du -sh "$work/j-$flow-$n"
  ls -l "$work/j-$flow-$n"/*.snap
done
for i in $(seq 1 "$runs"); do
  for n in 1000000 20000000; do
    /usr/bin/time -f "$n run $i: wall %e s, cpu %U s user + %S s sys, max rss %M KB" \
      "$BIN/engine" replay "$work/$flow-$n.bin" --resume --rate max --risk inline --out none \
        --journal "$work/j-$flow-$n" --no-progress --report /dev/null 2>&1 |
      grep -E "recovered|read orders|restart: ready|wall" | sed 's/ records, [0-9]* segment.*risk state/ records; risk state/'
  done
done
