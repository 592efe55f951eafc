#!/usr/bin/env bash
# The long fault run: the engine's kill -9 loop with N kills (CI runs 20), the journal
# crash loop of the audit writer with N kills, then the risk-service faults at the engine level
# (slow replies, kill -9 + restart with --recover-from) on 30,000 orders with a 3 s fault.
#
#   scripts/chaos.sh [N]     (default 200)
#
# Each kill is followed by `audit verify`; at the end every input order must have exactly one
# decision and every accepted order must have reached the sink at least once.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
case "$N" in ''|*[!0-9]*) echo "chaos.sh: N must be a number of kills" >&2; exit 2 ;; esac
# Compile first, visibly (the runs below filter their output down to the summary lines).
echo "==> building the fault tests (cargo test -p engine --test chaos --test risk_faults --no-run)"
cargo test -p engine --test chaos --test risk_faults --no-run
echo "==> engine kill -9 loop: $N kills"
CHAOS_KILLS=$N cargo test -p engine --test chaos -- --nocapture 2>&1 | grep -E "chaos:|test result|panicked"
echo "==> journal writer crash loop: $N kills"
scripts/audit-crash-loop.sh "$N"
echo "==> risk service slow / killed and restarted: 30000 orders, 3 s fault"
RISK_FAULT_ORDERS=30000 RISK_FAULT_SLOW_MS=3000 cargo test -p engine --test risk_faults -- --nocapture 2>&1 \
  | grep -E "orders [0-9]+:|slow service:|restart:|test result|panicked"
echo "chaos.sh: PASSED ($N engine kills, $N writer kills, risk faults)"
echo "next: docs/reliability.md (each guarantee and the test that proves it); a longer run: scripts/chaos.sh 1000"
