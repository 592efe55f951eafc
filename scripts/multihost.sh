#!/usr/bin/env bash
# A multi-host rehearsal on one machine (docs/operations.md, "Multi-host rehearsal"): the engine,
# the risk server, the downstream sink and the audit gap-fill service each in a Linux network
# namespace of its own, joined by veth pairs to a bridge in a fifth namespace, with CURVE on every
# link (keys from `audit curve-keygen`, each server accepting only the engine's public key).
#
#   scripts/multihost.sh [--orders N] [--rate R] [--delays "0 1 50 150"]
#
# For each one-way delay D (ms; `tc netem` on the risk host's interface, so the risk round trip
# grows by D: 0 = plain veth, 1 = LAN, 50 = WAN, 150 = past the 100 ms timeout; where the kernel has no sch_netem, a relay in the
# risk host, scripts/delay_relay.py, holds the risk server's replies D ms instead) it replays the same N orders at R orders/s through
# `engine replay --risk tcp://10.77.0.2:5555` and prints the report's figures (accepted, rejected,
# risk batches, mean batch, timeouts, p50/p99 latency), with a fresh risk server per delay. After the last run, `audit tail` in the
# audit namespace fetches the journal from `audit serve` over CURVE and checks its chain.
#
# Needs root (ip netns, tc). Without root it prints SKIP and exits 0 (exit 1 under CI=true).
# Binaries: $BIN if set (a directory holding engine, risk-server, audit and bench, e.g. the one
# engine/tests/multihost.rs gets from cargo), else a release build found through cargo
# (scripts/cargo-bins.sh). Only addresses inside the namespaces (10.77.0.0/24) are used; the
# namespaces are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERS=20000
RATE=20000
DELAYS="0 1 50 150"
while [ $# -gt 0 ]; do
  case "$1" in
    --orders) ORDERS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --delays) DELAYS=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
  echo "SKIP multihost: needs root with ip and tc (network namespaces, netem)"
  [ "${CI:-}" = true ] && exit 1
  exit 0
fi

if [ -z "${BIN:-}" ]; then
  # shellcheck source=scripts/cargo-bins.sh
  . scripts/cargo-bins.sh
  cargo_release_bins -p engine -p risk -p audit -p bench
  require_bins engine risk-server audit bench
fi
BIN=$(cd "$BIN" && pwd)

P="tt$$"        # namespace prefix: one per run, so runs side by side do not collide
HOSTS="engine risk sink audit"
declare -A ADDR=([engine]=10.77.0.1 [risk]=10.77.0.2 [sink]=10.77.0.3 [audit]=10.77.0.4)
WORK=$(mktemp -d /tmp/multihost.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for h in $HOSTS switch; do ip netns del "$P-$h" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# In a subshell (`in_ns … &`, `$(in_ns …)`) it execs, so that `$!` is the service itself and
# cleanup's kill reaches it (a kill of the subshell left the service running, orphaned).
in_ns() {
  local h=$1
  shift
  if [ "$BASH_SUBSHELL" -gt 0 ]; then exec ip netns exec "$P-$h" "$@"; fi
  ip netns exec "$P-$h" "$@"
}

# --- the network: one bridge, one veth pair per host ---------------------------------------
ip netns add "$P-switch"
in_ns switch ip link add br0 type bridge
in_ns switch ip link set br0 up
in_ns switch ip link set lo up
for h in $HOSTS; do
  ip netns add "$P-$h"
  # Both ends created inside the namespaces: nothing appears in the root namespace.
  ip link add "v-$h" netns "$P-switch" type veth peer name eth0 netns "$P-$h"
  in_ns switch ip link set "v-$h" master br0 up
  in_ns "$h" ip addr add "${ADDR[$h]}/24" dev eth0
  in_ns "$h" ip link set eth0 up
  in_ns "$h" ip link set lo up
done
echo "namespaces: $(ip netns list | grep -c "^$P-") ($HOSTS, switch; prefix $P-); subnet 10.77.0.0/24"
echo "work dir: $WORK (removed at exit, with every service started in it)"

# --- keys: one pair per host, outside any git work tree --------------------------------------
K=$WORK/keys
mkdir -m 0700 "$K"
for h in engine risk sink; do "$BIN/audit" curve-keygen --out "$K/$h" >/dev/null; done
cp "$K/engine.curve.pub" "$K/clients"   # every server lets in only the engine

# --- the services ---------------------------------------------------------------------------
"$BIN/bench" gen --orders "$ORDERS" --accounts 16 --symbols 20 --seed 15 --out "$WORK/orders.bin" >/dev/null
cp examples/limits.toml "$WORK/limits.toml"

# A fresh risk server per case: one that had seen the orders of an earlier case would reject them
# all as duplicate order ids.
start_risk() {
  in_ns risk "$BIN/risk-server" --config "$WORK/limits.toml" --bind "tcp://${ADDR[risk]}:5555" \
    --curve-key "$K/risk.curve" --curve-clients "$K/clients" >"$WORK/risk.out" 2>"$WORK/risk.err" &
  RISK=$!
  PIDS+=($RISK)
  for _ in $(seq 50); do grep -q "listening on" "$WORK/risk.out" && break; sleep 0.1; done
  grep -q "listening on" "$WORK/risk.out" || { cat "$WORK/risk.err"; echo "risk-server did not start"; exit 1; }
}
stop_risk() { kill "$RISK" 2>/dev/null || true; wait "$RISK" 2>/dev/null || true; }
start_risk
echo "risk-server: $(head -n1 "$WORK/risk.out") (CURVE, client list)"
stop_risk

NETEM=1
if ! in_ns risk tc qdisc add dev eth0 root netem delay 1ms 2>/dev/null; then
  NETEM=0
  echo "note: tc netem is not available in this kernel (sch_netem): each delay is made by a relay in the risk host instead (scripts/delay_relay.py: the risk server's replies held D ms, as netem on its interface holds its packets)"
fi
in_ns risk tc qdisc del dev eth0 root 2>/dev/null || true
for D in $DELAYS; do
  in_ns risk tc qdisc del dev eth0 root 2>/dev/null || true
  RISK_PORT=5555
  HOW=""
  start_risk
  if [ "$D" != 0 ]; then
    if [ "$NETEM" = 1 ]; then
      in_ns risk tc qdisc add dev eth0 root netem delay "${D}ms"
      HOW=" (netem)"
    else
      in_ns risk python3 scripts/delay_relay.py "${ADDR[risk]}" 5556 "${ADDR[risk]}" 5555 "$D" \
        >"$WORK/relay$D.out" 2>"$WORK/relay$D.err" &
      RELAY=$!
      PIDS+=($RELAY)
      for _ in $(seq 50); do grep -q "relay ready" "$WORK/relay$D.out" && break; sleep 0.1; done
      grep -q "relay ready" "$WORK/relay$D.out" || { cat "$WORK/relay$D.err"; echo "delay relay did not start"; exit 1; }
      RISK_PORT=5556
      HOW=" (relay)"
    fi
  fi
  rm -rf "$WORK/journal"
  in_ns sink "$BIN/bench" sink --bind "tcp://${ADDR[sink]}:5600" --curve-key "$K/sink.curve" \
    --curve-clients "$K/clients" --idle-exit-ms 3000 --report "$WORK/sink$D.json" \
    >/dev/null 2>"$WORK/sink$D.err" &
  SINK=$!
  PIDS+=($SINK)
  sleep 0.3
  start=$(date +%s.%N)
  in_ns engine "$BIN/engine" replay "$WORK/orders.bin" --rate "$RATE" --no-progress \
    --journal "$WORK/journal" --fresh --report "$WORK/r$D.json" \
    --risk "tcp://${ADDR[risk]}:$RISK_PORT" --risk-server-key "$K/risk.curve.pub" --curve-key "$K/engine.curve" \
    --out "tcp://${ADDR[sink]}:5600" --egress-server-key "$K/sink.curve.pub" \
    >"$WORK/engine$D.out" 2>"$WORK/engine$D.err" || { cat "$WORK/engine$D.err"; exit 1; }
  end=$(date +%s.%N)
  D_LAST=$D
  wait "$SINK" || true
  if [ -n "${RELAY:-}" ]; then
    kill "$RELAY" 2>/dev/null || true
    wait "$RELAY" 2>/dev/null || true
    RELAY=""
  fi
  stop_risk
  python3 - "$WORK/r$D.json" "$D" "$start" "$end" "$WORK/sink$D.json" "$HOW" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
sink = json.load(open(sys.argv[5]))
risk, lat = r["risk"], r["latency_us"]
print(f"delay {sys.argv[2]:>3} ms{sys.argv[6]}: orders {r['orders']}, accepted {r['accepted']}, rejected {r['rejected']}, "
      f"risk batches {risk['batches']}, mean batch {risk['mean_batch']:.1f}, timeouts {risk['timeouts']}, "
      f"max wait {risk['wait_max_us']/1000:.1f} ms, p50 {lat['p50']/1000:.2f} ms, p99 {lat['p99']/1000:.2f} ms, "
      f"throughput {r['throughput_per_s']:.0f}/s, wall {float(sys.argv[4]) - float(sys.argv[3]):.1f} s; "
      f"sink (CURVE): {sink.get('unique')} orders, {sink.get('duplicates')} duplicates")
EOF
done
in_ns risk tc qdisc del dev eth0 root 2>/dev/null || true

# --- the journal from another host: audit serve in its namespace, audit tail from the engine's --
in_ns audit "$BIN/audit" serve "$WORK/journal" --bind "tcp://${ADDR[audit]}:5700" \
  --curve-key "$K/engine.curve" --curve-clients "$K/clients" >"$WORK/serve.out" 2>"$WORK/serve.err" &
PIDS+=($!)
sleep 0.5
last=$(python3 -c "import json;print(json.load(open('$WORK/r$D_LAST.json'))['journal']['records'])")
in_ns engine "$BIN/audit" tail --quiet --sub "tcp://${ADDR[engine]}:5800" --serve "tcp://${ADDR[audit]}:5700" \
  --until-seq "$last" --curve-server-key "$K/engine.curve.pub" --curve-key "$K/engine.curve"
echo "audit tail over CURVE from ${ADDR[engine]} to ${ADDR[audit]}: chain verified to record $last"
