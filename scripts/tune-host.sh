#!/usr/bin/env bash
# Host tuning for the engine: checks (no root needed) or applies (root) the settings that matter
# for tail latency. Why each one matters, and how to set it by hand: docs/tuning.md.
#
#   scripts/tune-host.sh --check [--cores LIST]
#   scripts/tune-host.sh --apply [--cores LIST] [--dry-run]
#
# --check prints one row per setting: STATUS (ok | differs | unknown), SETTING, RECOMMENDED,
# CURRENT. It always exits 0 when it could run (a differing host is a finding, not an error).
# --apply changes what can change at run time, prints how to revert each change, and never edits
# boot configuration: it prints the kernel command line to use instead.
set -euo pipefail

# ---- limits and recommendations (one place) --------------------------------------------------
readonly SWAPPINESS_MAX=10               # vm.swappiness at or below this is ok
readonly SWAPPINESS_APPLY=10             # what --apply writes
readonly BUSY_POLL_US=50                 # net.core.busy_poll / busy_read recommended, in us
readonly CSTATE_EXIT_LATENCY_MAX_US=10   # deepest enabled C-state on a pinned core, in us
readonly TIMER_SLACK_MAX_NS=1000         # timer slack at or below this is ok, in ns
readonly CAP_IPC_LOCK_BIT=14             # capability(7): lets mlockall ignore RLIMIT_MEMLOCK
readonly PF_KTHREAD=$((0x00200000))      # /proc/PID/stat flags: a kernel thread
readonly PF_NO_SETAFFINITY=$((0x04000000)) # ... whose affinity only the kernel sets (per-CPU, workqueue)
readonly CPUMASK_MAX_CPUS=64             # the workqueue cpumask is handled up to this many CPUs

# TUNE_HOST_ROOT: prefix for /proc, /sys and /etc (tests point it at a fake tree). With it set,
# --apply writes only under that prefix and runs no system command.
ROOT="${TUNE_HOST_ROOT:-}"
PROC="$ROOT/proc"
SYS="$ROOT/sys"
ETC="$ROOT/etc"
CPU_SYS="$SYS/devices/system/cpu"

usage() {
  cat <<EOF
Usage: scripts/tune-host.sh --check [--cores LIST]
       scripts/tune-host.sh --apply [--cores LIST] [--dry-run]

Checks or applies the host settings that matter for the engine's tail latency
(docs/tuning.md explains each one).

  --check        Print one row per setting: STATUS (ok | differs | unknown), SETTING,
                 RECOMMENDED, CURRENT. Needs no root; exits 0 whatever it finds.
  --apply        As root: change the settings that can change at run time (CPU governor,
                 transparent huge pages, swap, swappiness, NUMA balancing, C-states, clocksource,
                 busy polling, irqbalance and IRQ affinity, movable kernel threads and the
                 unbound-workqueue CPU mask), printing how to revert each one.
                 Never edits boot configuration: prints the kernel command line to use instead.
  --dry-run      With --apply: print what would change, change nothing (no root needed).
  --cores LIST   The CPUs the engine's pinned stages will use, as a kernel CPU list
                 ("2,3" or "2-5"). Default: every online CPU except CPU 0.
  -h, --help     This help.

Environment: TUNE_HOST_ROOT=DIR reads /proc, /sys and /etc under DIR instead (for tests);
with it, --apply writes only under DIR and runs no system command.
EOF
}

die() {
  printf 'tune-host.sh: %s\n' "$*" >&2
  exit 2
}

# ---- helpers ----------------------------------------------------------------------------------

# Reads a one-line file; prints nothing and fails when unreadable.
read_file() {
  local f=$1
  [[ -r $f ]] || return 1
  local v
  v=$(head -n 1 -- "$f" 2>/dev/null) || return 1
  printf '%s' "$v"
}

# "0-3,8" -> "0 1 2 3 8". Fails on anything else.
expand_cpulist() {
  local list=$1 part i
  local -a parts out=()
  IFS=',' read -r -a parts <<<"$list"
  for part in "${parts[@]}"; do
    [[ -z $part ]] && continue
    if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
      for ((i = BASH_REMATCH[1]; i <= BASH_REMATCH[2]; i++)); do out+=("$i"); done
    elif [[ $part =~ ^[0-9]+$ ]]; then
      out+=("$part")
    else
      return 1
    fi
  done
  printf '%s' "${out[*]}"
}

# in_set CPU "CPU CPU ..."
in_set() {
  local x=$1 y
  for y in $2; do [[ $x == "$y" ]] && return 0; done
  return 1
}

# all_in "A B" "A B C": every CPU of the first set is in the second.
all_in() {
  local x
  for x in $1; do in_set "$x" "$2" || return 1; done
  return 0
}

# "0 1 2" -> "0,1,2"
join_commas() {
  local -a cpus
  read -r -a cpus <<<"$1"
  local IFS=,
  printf '%s' "${cpus[*]}"
}

# Value of a kernel boot parameter (last occurrence wins); fails when absent.
cmdline_param() {
  local name=$1 tok found=1 value=""
  local cmdline
  cmdline=$(read_file "$PROC/cmdline") || return 1
  for tok in $cmdline; do
    [[ $tok == "--" ]] && break # the rest is for init
    if [[ $tok == "$name="* ]]; then
      value=${tok#"$name="}
      found=0
    elif [[ $tok == "$name" ]]; then
      value=""
      found=0
    fi
  done
  printf '%s' "$value"
  return "$found"
}

# The selected value of a sysfs multiple-choice file: "always [madvise] never" -> "madvise".
bracketed() {
  local v=$1
  v=${v#*[}
  printf '%s' "${v%%]*}"
}

is_vm() {
  grep -qw hypervisor "$PROC/cpuinfo" 2>/dev/null
}

N_OK=0
N_DIFF=0
N_UNKNOWN=0
row() { # STATUS SETTING RECOMMENDED CURRENT
  printf '%-8s %-26s %-40s %s\n' "$1" "$2" "$3" "$4"
  case $1 in
  ok) N_OK=$((N_OK + 1)) ;;
  differs) N_DIFF=$((N_DIFF + 1)) ;;
  *) N_UNKNOWN=$((N_UNKNOWN + 1)) ;;
  esac
}

# ---- arguments --------------------------------------------------------------------------------

MODE=""
DRY_RUN=0
CORES_ARG=""
while [[ $# -gt 0 ]]; do
  case $1 in
  --check) [[ -z $MODE ]] || die "give one of --check or --apply"; MODE=check ;;
  --apply) [[ -z $MODE ]] || die "give one of --check or --apply"; MODE=apply ;;
  --dry-run) DRY_RUN=1 ;;
  --cores)
    [[ $# -ge 2 ]] || die "--cores needs a CPU list, e.g. --cores 2,3"
    CORES_ARG=$2
    shift
    ;;
  --cores=*) CORES_ARG=${1#--cores=} ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
[[ -n $MODE ]] || { usage >&2; die "give --check or --apply"; }
[[ $DRY_RUN -eq 0 || $MODE == apply ]] || die "--dry-run goes with --apply"

ONLINE_LIST=$(read_file "$CPU_SYS/online") || die "cannot read $CPU_SYS/online"
ONLINE=$(expand_cpulist "$ONLINE_LIST") || die "cannot parse $CPU_SYS/online: $ONLINE_LIST"
if [[ -n $CORES_ARG ]]; then
  CORES=$(expand_cpulist "$CORES_ARG") || die "--cores $CORES_ARG: expected a CPU list such as 2,3 or 2-5"
  [[ -n $CORES ]] || die "--cores $CORES_ARG: empty list"
  for c in $CORES; do
    in_set "$c" "$ONLINE" || die "--cores $CORES_ARG: CPU $c is not online (online: $ONLINE_LIST)"
  done
  CORES_WHY="from --cores"
else
  CORES=""
  for c in $ONLINE; do [[ $c == 0 ]] || CORES="${CORES:+$CORES }$c"; done
  [[ -n $CORES ]] || CORES=0
  CORES_WHY="default: every online CPU except 0; choose with --cores"
fi
CORES_LIST=$(join_commas "$CORES")
HOUSEKEEPING=""
for c in $ONLINE; do in_set "$c" "$CORES" || HOUSEKEEPING="${HOUSEKEEPING:+$HOUSEKEEPING }$c"; done
HOUSEKEEPING_LIST=$(join_commas "$HOUSEKEEPING")

if is_vm; then VM_NOTE="in this VM"; else VM_NOTE="on this host"; fi

# ---- checks -----------------------------------------------------------------------------------

check_governor() {
  local c gov parts=() status=ok
  for c in $CORES; do
    if gov=$(read_file "$CPU_SYS/cpu$c/cpufreq/scaling_governor"); then
      parts+=("cpu$c=$gov")
      [[ $gov == performance ]] || status=differs
    else
      row unknown "cpufreq governor" "performance" "unknown (no cpufreq $VM_NOTE)"
      return
    fi
  done
  row "$status" "cpufreq governor" "performance" "${parts[*]}"
}

# isolcpus / nohz_full / rcu_nocbs: the pinned cores must be in the parameter's CPU list.
check_boot_cpulist() {
  local name=$1 recommended=$2 value cpus status
  if ! value=$(cmdline_param "$name"); then
    row differs "$name" "$recommended" "absent from the kernel command line"
    return
  fi
  # isolcpus=[flag,...,]cpulist: flags are words.
  cpus=$(printf '%s' "$value" | tr ',' '\n' | grep -E '^[0-9]' | paste -sd, -) || cpus=""
  status=differs
  if cpus=$(expand_cpulist "$cpus") && all_in "$CORES" "$cpus"; then status=ok; fi
  if [[ $name == isolcpus ]]; then
    local isolated
    isolated=$(read_file "$CPU_SYS/isolated") || isolated="?"
    row "$status" "$name" "$recommended" "$name=$value (kernel isolated: ${isolated:-none})"
  else
    row "$status" "$name" "$recommended" "$name=$value"
  fi
}

irqbalance_pid() {
  local d comm
  for d in "$PROC"/[0-9]*; do
    comm=$(read_file "$d/comm") || continue
    if [[ $comm == irqbalance ]]; then
      printf '%s' "${d##*/}"
      return 0
    fi
  done
  return 1
}

check_irqbalance() {
  local pid banned="" f
  for f in "$ETC/default/irqbalance" "$ETC/sysconfig/irqbalance"; do
    [[ -r $f ]] || continue
    banned=$(sed -n 's/^[[:space:]]*IRQBALANCE_BANNED_CPULIST=["'\'']\{0,1\}\([0-9,-]*\).*/\1/p' "$f" | tail -n 1)
  done
  if pid=$(irqbalance_pid); then
    local cpus
    if [[ -n $banned ]] && cpus=$(expand_cpulist "$banned") && all_in "$CORES" "$cpus"; then
      row ok "irqbalance" "stopped, or banning $CORES_LIST" "running (pid $pid), banned CPUs $banned"
    else
      row differs "irqbalance" "stopped, or banning $CORES_LIST" "running (pid $pid)${banned:+, banned CPUs $banned}"
    fi
  else
    row ok "irqbalance" "stopped, or banning $CORES_LIST" "not running"
  fi
}

check_irq_affinity() {
  local f irq list cpus total=0 on_cores=0 example="" c
  for f in "$PROC"/irq/[0-9]*/smp_affinity_list; do
    [[ -e $f ]] || continue
    list=$(read_file "$f") || continue
    total=$((total + 1))
    cpus=$(expand_cpulist "$list") || continue
    for c in $CORES; do
      if in_set "$c" "$cpus"; then
        on_cores=$((on_cores + 1))
        irq=${f%/smp_affinity_list}
        [[ -n $example ]] || example=" (e.g. IRQ ${irq##*/} -> $list)"
        break
      fi
    done
  done
  if [[ $total -eq 0 ]]; then
    row unknown "irq affinity" "no IRQ on $CORES_LIST" "unknown (no readable $PROC/irq/*/smp_affinity_list)"
  elif [[ $on_cores -eq 0 ]]; then
    row ok "irq affinity" "no IRQ on $CORES_LIST" "0 of $total IRQs may run on $CORES_LIST"
  else
    row differs "irq affinity" "no IRQ on $CORES_LIST" "$on_cores of $total IRQs may run on $CORES_LIST$example"
  fi
}

check_thp() {
  local name=$1 file=$2 v sel
  if v=$(read_file "$file"); then
    sel=$(bracketed "$v")
    if [[ $sel == never || $sel == madvise ]]; then
      row ok "$name" "never (madvise ok)" "$sel"
    else
      row differs "$name" "never (madvise ok)" "$sel"
    fi
  else
    row unknown "$name" "never (madvise ok)" "unknown (no $file)"
  fi
}

check_swap() {
  local lines used
  if [[ ! -r $PROC/swaps ]]; then
    row unknown "swap" "off" "unknown (no $PROC/swaps)"
    return
  fi
  lines=$(($(wc -l <"$PROC/swaps") - 1))
  if [[ $lines -le 0 ]]; then
    row ok "swap" "off" "off"
  else
    used=$(awk 'NR > 1 { s += $4 } END { print s + 0 }' "$PROC/swaps")
    row differs "swap" "off" "$lines device(s) active, $used KiB used"
  fi
}

check_swappiness() {
  local v
  if v=$(read_file "$PROC/sys/vm/swappiness"); then
    if [[ $v -le $SWAPPINESS_MAX ]]; then
      row ok "vm.swappiness" "<= $SWAPPINESS_MAX" "$v"
    else
      row differs "vm.swappiness" "<= $SWAPPINESS_MAX" "$v"
    fi
  else
    row unknown "vm.swappiness" "<= $SWAPPINESS_MAX" "unknown (no $PROC/sys/vm/swappiness)"
  fi
}

check_numa() {
  local d nodes=() layout=() node_of_cores="" n list cpus c
  for d in "$SYS"/devices/system/node/node[0-9]*; do
    [[ -d $d ]] || continue
    n=${d##*/node}
    list=$(read_file "$d/cpulist") || list="?"
    nodes+=("$n")
    layout+=("node$n: $list")
    cpus=$(expand_cpulist "$list") || cpus=""
    for c in $CORES; do
      if in_set "$c" "$cpus" && ! in_set "$n" "$node_of_cores"; then
        node_of_cores="${node_of_cores:+$node_of_cores }$n"
      fi
    done
  done
  if [[ ${#nodes[@]} -eq 0 ]]; then
    row unknown "numa layout" "pinned cores on one node" "unknown (no $SYS/devices/system/node)"
  else
    local IFS=';'
    local desc="${#nodes[@]} node(s) (${layout[*]})"
    unset IFS
    local count
    count=$(wc -w <<<"$node_of_cores")
    if [[ $count -le 1 ]]; then
      row ok "numa layout" "pinned cores on one node" "$desc; $CORES_LIST on node ${node_of_cores:-?}"
    else
      row differs "numa layout" "pinned cores on one node" "$desc; $CORES_LIST span nodes $node_of_cores"
    fi
  fi
  local v
  if v=$(read_file "$PROC/sys/kernel/numa_balancing"); then
    if [[ $v == 0 ]]; then row ok "kernel.numa_balancing" "0" "$v"; else row differs "kernel.numa_balancing" "0" "$v"; fi
  else
    row ok "kernel.numa_balancing" "0" "absent (kernel has no automatic NUMA balancing)"
  fi
}

# The deepest enabled idle state of each pinned core must wake within the limit.
check_cstates() {
  local driver c s lat name dis worst_lat worst parts=() status=ok recommended
  recommended="deepest state exits in <= ${CSTATE_EXIT_LATENCY_MAX_US} us"
  driver=$(read_file "$CPU_SYS/cpuidle/current_driver") || driver=""
  if [[ -z $driver || $driver == none ]]; then
    row unknown "c-states (cpuidle)" "$recommended" "unknown (no cpuidle driver $VM_NOTE)"
    return
  fi
  for c in $CORES; do
    worst_lat=-1
    worst="none"
    for s in "$CPU_SYS/cpu$c"/cpuidle/state[0-9]*; do
      [[ -d $s ]] || continue
      dis=$(read_file "$s/disable") || dis=0
      [[ $dis == 0 ]] || continue
      lat=$(read_file "$s/latency") || continue
      name=$(read_file "$s/name") || name="${s##*/}"
      if [[ $lat -gt $worst_lat ]]; then
        worst_lat=$lat
        worst="$name ${lat} us"
      fi
    done
    parts+=("cpu$c: $worst")
    [[ $worst_lat -le $CSTATE_EXIT_LATENCY_MAX_US ]] || status=differs
  done
  row "$status" "c-states (cpuidle)" "$recommended" "driver $driver; ${parts[*]}"
}

check_clocksource() {
  local cur avail
  if cur=$(read_file "$SYS/devices/system/clocksource/clocksource0/current_clocksource"); then
    avail=$(read_file "$SYS/devices/system/clocksource/clocksource0/available_clocksource") || avail="?"
    avail=$(printf '%s' "$avail" | xargs)
    if [[ $cur == tsc ]]; then
      row ok "clocksource" "tsc" "$cur (available: $avail)"
    else
      row differs "clocksource" "tsc" "$cur (available: $avail)"
    fi
  else
    row unknown "clocksource" "tsc" "unknown (no clocksource in sysfs)"
  fi
}

check_timer_slack() {
  local v recommended="<= $TIMER_SLACK_MAX_NS ns for the engine"
  if v=$(read_file "$PROC/self/timerslack_ns"); then
    if [[ $v -le $TIMER_SLACK_MAX_NS ]]; then
      row ok "timer slack" "$recommended" "$v ns (inherited from this shell)"
    else
      row differs "timer slack" "$recommended" "$v ns (inherited from this shell)"
    fi
  else
    row unknown "timer slack" "$recommended" "unknown (no $PROC/self/timerslack_ns)"
  fi
}

check_sysctl_min() {
  local name=$1 file=$2 want=$3 v
  if v=$(read_file "$file"); then
    if [[ $v -ge $want ]]; then row ok "$name" "$want (us)" "$v"; else row differs "$name" "$want (us)" "$v"; fi
  else
    row unknown "$name" "$want (us)" "unknown (no $file)"
  fi
}

check_memlock() {
  local lim cap_eff have_cap=0
  lim=$(ulimit -l)
  if cap_eff=$(grep -m1 '^CapEff:' "$PROC/self/status" 2>/dev/null | awk '{ print $2 }') && [[ -n $cap_eff ]]; then
    if (((16#$cap_eff >> CAP_IPC_LOCK_BIT) & 1)); then have_cap=1; fi
  fi
  local cur="$lim KiB"
  [[ $lim != unlimited ]] || cur="unlimited"
  if [[ $lim == unlimited ]]; then
    row ok "memlock limit" "unlimited (engine calls mlockall)" "$cur"
  elif [[ $have_cap -eq 1 ]]; then
    row ok "memlock limit" "unlimited (engine calls mlockall)" "$cur, but CAP_IPC_LOCK held (root): mlockall is not limited"
  else
    row differs "memlock limit" "unlimited (engine calls mlockall)" "$cur"
  fi
}

check_smt() {
  local c sib parts=() status=ok control s
  control=$(read_file "$CPU_SYS/smt/control") || control="unknown"
  for c in $CORES; do
    if ! sib=$(read_file "$CPU_SYS/cpu$c/topology/thread_siblings_list"); then
      row unknown "smt siblings" "no online sibling of $CORES_LIST" "unknown (no topology for cpu$c)"
      return
    fi
    local others=""
    for s in $(expand_cpulist "$sib" || true); do
      [[ $s == "$c" ]] && continue
      in_set "$s" "$ONLINE" || continue
      others="${others:+$others,}$s"
    done
    if [[ -z $others ]]; then
      parts+=("cpu$c: none")
    else
      parts+=("cpu$c: $others online")
      status=differs
    fi
  done
  row "$status" "smt siblings" "no online sibling of $CORES_LIST" "${parts[*]} (smt control: $control)"
}

# Movable kernel threads (kthreads whose affinity user space may set: not per-CPU, not workqueue
# workers) that may run on a pinned core. A spinning stage shares its core with whatever the
# scheduler puts there; a kernel thread such as kdamond or khugepaged can take it for
# milliseconds (docs/tuning.md, "Kernel threads"). Prints "PID COMM LIST" per thread.
movable_kthreads_on_cores() {
  local d stat rest flags list cpus c comm
  local -a f
  for d in "$PROC"/[0-9]*; do
    stat=$(read_file "$d/stat") || continue
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    flags=${f[6]:-0}
    [[ $flags =~ ^[0-9]+$ ]] || continue
    (((flags & PF_KTHREAD) != 0 && (flags & PF_NO_SETAFFINITY) == 0)) || continue
    list=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "$d/status" 2>/dev/null) || continue
    [[ -n $list ]] || continue
    cpus=$(expand_cpulist "$list") || continue
    [[ $(wc -w <<<"$cpus") -gt 1 ]] || continue # bound to one CPU: per-CPU work
    for c in $CORES; do
      if in_set "$c" "$cpus"; then
        comm=$(read_file "$d/comm") || comm="?"
        printf '%s %s %s\n' "${d##*/}" "$comm" "$list"
        break
      fi
    done
  done
}

check_kthreads() {
  local lines n first
  local -a f
  lines=$(movable_kthreads_on_cores)
  n=$(grep -c . <<<"$lines" || true)
  if [[ $n -eq 0 ]]; then
    row ok "kernel threads" "movable ones off $CORES_LIST" "none may run on $CORES_LIST"
  else
    first=$(head -n 1 <<<"$lines")
    read -r -a f <<<"$first"
    row differs "kernel threads" "movable ones off $CORES_LIST" "$n may run on $CORES_LIST (e.g. ${f[1]} -> ${f[2]})"
  fi
}

# "3" or "ffffffff,0000000f" -> the CPUs of the mask, as a space-separated list. Fails on
# anything else, or on a mask of more than CPUMASK_MAX_CPUS CPUs.
cpumask_to_cpus() {
  local hex=${1//,/} out=() i v
  [[ $hex =~ ^[0-9a-fA-F]+$ ]] || return 1
  hex=$(sed 's/^0*//' <<<"$hex")
  [[ ${#hex} -le $((CPUMASK_MAX_CPUS / 4)) ]] || return 1
  [[ -n $hex ]] || { printf ''; return 0; }
  v=$((16#$hex))
  for ((i = 0; i < CPUMASK_MAX_CPUS; i++)); do
    if (((v >> i) & 1)); then out+=("$i"); fi
  done
  printf '%s' "${out[*]}"
}

# "0 1" -> "3" (hex, in 32-bit groups separated by commas as the kernel prints masks).
cpus_to_cpumask() {
  local v=0 c lo hi
  for c in $1; do
    [[ $c -lt $CPUMASK_MAX_CPUS ]] || return 1
    v=$((v | (1 << c)))
  done
  lo=$((v & 0xffffffff))
  hi=$(((v >> 32) & 0xffffffff))
  if [[ $hi -ne 0 ]]; then printf '%x,%08x' "$hi" "$lo"; else printf '%x' "$lo"; fi
}

# The CPUs unbound workqueues (kworker/uN:M, writeback, ...) may run on.
check_workqueue_mask() {
  local f="$SYS/devices/virtual/workqueue/cpumask" v cpus c on=""
  if ! v=$(read_file "$f"); then
    row unknown "workqueue cpumask" "housekeeping CPUs only" "unknown (no $f)"
    return
  fi
  if ! cpus=$(cpumask_to_cpus "$v"); then
    row unknown "workqueue cpumask" "housekeeping CPUs only" "$v (not understood)"
    return
  fi
  for c in $CORES; do in_set "$c" "$cpus" && on="${on:+$on,}$c"; done
  if [[ -z $on ]]; then
    row ok "workqueue cpumask" "housekeeping CPUs only" "$v"
  else
    row differs "workqueue cpumask" "housekeeping CPUs only" "$v (includes $on)"
  fi
}

run_checks() {
  printf '%-8s %-26s %-40s %s\n' STATUS SETTING RECOMMENDED CURRENT
  check_governor
  check_boot_cpulist isolcpus "managed_irq,domain,$CORES_LIST"
  check_boot_cpulist nohz_full "$CORES_LIST"
  check_boot_cpulist rcu_nocbs "$CORES_LIST"
  check_irqbalance
  check_irq_affinity
  check_kthreads
  check_workqueue_mask
  check_thp "transparent hugepages" "$SYS/kernel/mm/transparent_hugepage/enabled"
  check_thp "thp defrag" "$SYS/kernel/mm/transparent_hugepage/defrag"
  check_swap
  check_swappiness
  check_numa
  check_cstates
  check_clocksource
  check_timer_slack
  check_sysctl_min net.core.busy_poll "$PROC/sys/net/core/busy_poll" "$BUSY_POLL_US"
  check_sysctl_min net.core.busy_read "$PROC/sys/net/core/busy_read" "$BUSY_POLL_US"
  check_memlock
  check_smt
}

kernel_cmdline() {
  local line="isolcpus=managed_irq,domain,$CORES_LIST nohz_full=$CORES_LIST rcu_nocbs=$CORES_LIST"
  [[ -n $HOUSEKEEPING_LIST ]] && line+=" irqaffinity=$HOUSEKEEPING_LIST"
  line+=" transparent_hugepage=never"
  printf '%s' "$line"
}

# ---- apply ------------------------------------------------------------------------------------

REVERTS=()
N_CHANGED=0
N_FAILED=0

# set_value LABEL FILE NEW OLD: writes NEW into FILE, records how to put OLD back.
set_value() {
  local label=$1 file=$2 new=$3 old=$4
  if [[ $old == "$new" ]]; then
    return
  fi
  if [[ $DRY_RUN -eq 1 ]]; then
    printf 'would change  %-26s %s -> %s  (%s)\n' "$label" "$old" "$new" "$file"
    REVERTS+=("echo '$old' > $file")
    return
  fi
  if { printf '%s\n' "$new" >"$file"; } 2>/dev/null; then
    printf 'changed       %-26s %s -> %s  (%s)\n' "$label" "$old" "$new" "$file"
    printf '              revert: echo '\''%s'\'' > %s\n' "$old" "$file"
    REVERTS+=("echo '$old' > $file")
    N_CHANGED=$((N_CHANGED + 1))
  else
    printf 'FAILED        %-26s %s -> %s  (%s: the kernel refused the write)\n' "$label" "$old" "$new" "$file"
    N_FAILED=$((N_FAILED + 1))
  fi
}

# run_system LABEL REVERT COMMAND...: a command outside sysfs/procfs (systemctl, swapoff).
run_system() {
  local label=$1 revert=$2
  shift 2
  if [[ $DRY_RUN -eq 1 || -n $ROOT ]]; then
    printf 'would run     %-26s %s\n' "$label" "$*"
    REVERTS+=("$revert")
    return
  fi
  if "$@" >/dev/null 2>&1; then
    printf 'ran           %-26s %s\n' "$label" "$*"
    printf '              revert: %s\n' "$revert"
    REVERTS+=("$revert")
    N_CHANGED=$((N_CHANGED + 1))
  else
    printf 'FAILED        %-26s %s\n' "$label" "$*"
    N_FAILED=$((N_FAILED + 1))
  fi
}

not_applied() { # LABEL WHY
  printf 'not changed   %-26s %s\n' "$1" "$2"
}

apply_all() {
  local c f old v
  # CPU frequency governor.
  for c in $CORES; do
    f="$CPU_SYS/cpu$c/cpufreq/scaling_governor"
    if old=$(read_file "$f"); then
      set_value "cpufreq governor cpu$c" "$f" performance "$old"
    else
      not_applied "cpufreq governor cpu$c" "no cpufreq $VM_NOTE"
    fi
  done
  # irqbalance first, or it moves the IRQs back.
  if irqbalance_pid >/dev/null; then
    if command -v systemctl >/dev/null 2>&1 || [[ -n $ROOT ]]; then
      run_system "irqbalance" "systemctl start irqbalance" systemctl stop irqbalance
    else
      not_applied "irqbalance" "running, and no systemctl here: stop it by hand"
    fi
  fi
  # IRQ affinity: every IRQ that may run on a pinned core goes to the housekeeping CPUs.
  if [[ -z $HOUSEKEEPING_LIST ]]; then
    not_applied "irq affinity" "--cores covers every online CPU: no CPU left for IRQs"
  else
    local irq_file list cpus
    for irq_file in "$PROC"/irq/[0-9]*/smp_affinity_list; do
      [[ -e $irq_file ]] || continue
      list=$(read_file "$irq_file") || continue
      cpus=$(expand_cpulist "$list") || continue
      for c in $CORES; do
        if in_set "$c" "$cpus"; then
          local irq=${irq_file%/smp_affinity_list}
          set_value "irq ${irq##*/} affinity" "$irq_file" "$HOUSEKEEPING_LIST" "$list"
          break
        fi
      done
    done
  fi
  # Kernel threads that user space may move, and unbound workqueues: to the housekeeping CPUs.
  if [[ -z $HOUSEKEEPING_LIST ]]; then
    not_applied "kernel threads" "--cores covers every online CPU: no CPU left for them"
  else
    local pid comm list
    while read -r pid comm list; do
      [[ -n $pid ]] || continue
      run_system "kthread $pid ($comm)" "taskset -pc $list $pid" taskset -pc "$HOUSEKEEPING_LIST" "$pid"
    done <<<"$(movable_kthreads_on_cores)"
    local wq="$SYS/devices/virtual/workqueue/cpumask" mask
    if old=$(read_file "$wq"); then
      if mask=$(cpus_to_cpumask "$HOUSEKEEPING"); then
        local cpus_now
        cpus_now=$(cpumask_to_cpus "$old") || cpus_now=""
        [[ $cpus_now == "$HOUSEKEEPING" ]] || set_value "workqueue cpumask" "$wq" "$mask" "$old"
      else
        not_applied "workqueue cpumask" "more than $CPUMASK_MAX_CPUS CPUs: write the mask by hand"
      fi
    fi
  fi
  # Transparent huge pages.
  for f in enabled defrag; do
    local thp="$SYS/kernel/mm/transparent_hugepage/$f"
    if v=$(read_file "$thp"); then
      old=$(bracketed "$v")
      # madvise is fine too: nothing here asks for huge pages.
      [[ $old == madvise ]] || set_value "thp $f" "$thp" never "$old"
    fi
  done
  # Swap.
  if [[ -r $PROC/swaps ]] && [[ $(wc -l <"$PROC/swaps") -gt 1 ]]; then
    run_system "swap" "swapon -a" swapoff -a
  fi
  if old=$(read_file "$PROC/sys/vm/swappiness") && [[ $old -gt $SWAPPINESS_MAX ]]; then
    set_value "vm.swappiness" "$PROC/sys/vm/swappiness" "$SWAPPINESS_APPLY" "$old"
  fi
  if old=$(read_file "$PROC/sys/kernel/numa_balancing"); then
    set_value "kernel.numa_balancing" "$PROC/sys/kernel/numa_balancing" 0 "$old"
  fi
  # C-states deeper than the limit, on the pinned cores only.
  local s lat dis
  for c in $CORES; do
    for s in "$CPU_SYS/cpu$c"/cpuidle/state[0-9]*; do
      [[ -d $s ]] || continue
      lat=$(read_file "$s/latency") || continue
      dis=$(read_file "$s/disable") || continue
      if [[ $lat -gt $CSTATE_EXIT_LATENCY_MAX_US ]]; then
        set_value "cpu$c idle ${s##*/} ($lat us)" "$s/disable" 1 "$dis"
      fi
    done
  done
  # Clocksource.
  local cs="$SYS/devices/system/clocksource/clocksource0"
  if old=$(read_file "$cs/current_clocksource"); then
    if [[ " $(read_file "$cs/available_clocksource" || true) " == *" tsc "* ]]; then
      set_value "clocksource" "$cs/current_clocksource" tsc "$old"
    elif [[ $old != tsc ]]; then
      not_applied "clocksource" "tsc is not available (unstable TSC?): see docs/tuning.md"
    fi
  fi
  # Busy polling.
  for f in busy_poll busy_read; do
    if old=$(read_file "$PROC/sys/net/core/$f") && [[ $old -lt $BUSY_POLL_US ]]; then
      set_value "net.core.$f" "$PROC/sys/net/core/$f" "$BUSY_POLL_US" "$old"
    fi
  done
  # What a running system cannot change from here.
  not_applied "timer slack" "per process: start the engine from a shell that ran 'echo 1 > /proc/\$\$/timerslack_ns' (root), or have it call prctl(PR_SET_TIMERSLACK)"
  not_applied "memlock limit" "set LimitMEMLOCK=infinity in the engine's systemd unit, or 'memlock unlimited' in /etc/security/limits.d/ (or run it with CAP_IPC_LOCK)"
  not_applied "numa layout" "start the engine with 'numactl --cpunodebind=N --membind=N' for the node of $CORES_LIST"
  for c in $CORES; do
    local sib
    sib=$(read_file "$CPU_SYS/cpu$c/topology/thread_siblings_list") || continue
    for s in $(expand_cpulist "$sib" || true); do
      if [[ $s != "$c" ]] && in_set "$s" "$ONLINE" && ! in_set "$s" "$CORES"; then
        not_applied "smt sibling cpu$s" "a capacity decision left to you: 'echo 0 > $CPU_SYS/cpu$s/online' (revert: echo 1)"
      fi
    done
  done
  not_applied "isolcpus/nohz_full/rcu_nocbs" "boot-time only: use the kernel command line below"
}

# ---- main -------------------------------------------------------------------------------------

KERNEL=$(uname -r 2>/dev/null || echo "?")
printf '# tune-host.sh %s: kernel %s, %s online CPU(s) (%s)%s\n' "$MODE" "$KERNEL" \
  "$(wc -w <<<"$ONLINE")" "$ONLINE_LIST" "$(if is_vm; then printf ', virtual machine'; fi)"
printf '# cores checked: %s (%s); housekeeping: %s\n' "$CORES_LIST" "$CORES_WHY" "${HOUSEKEEPING_LIST:-none}"
[[ -z $ROOT ]] || printf '# TUNE_HOST_ROOT=%s: reading (and writing) under that tree\n' "$ROOT"

if [[ $MODE == apply && $DRY_RUN -eq 0 && -z $ROOT && $EUID -ne 0 ]]; then
  die "--apply needs root (try --apply --dry-run to see what it would do)"
fi

run_checks
printf '# %d ok, %d differ, %d unknown\n' "$N_OK" "$N_DIFF" "$N_UNKNOWN"

if [[ $MODE == apply ]]; then
  printf '\n# applying (run-time settings only%s)\n' "$(if [[ $DRY_RUN -eq 1 ]]; then printf ', dry run: nothing is changed'; fi)"
  apply_all
  printf '# %d changed, %d failed\n' "$N_CHANGED" "$N_FAILED"
  if [[ ${#REVERTS[@]} -gt 0 ]]; then
    printf '\n# to revert everything (as root; lost at reboot anyway):\n'
    printf '%s\n' "${REVERTS[@]}"
  fi
fi

printf '\n# boot-time settings (this script never edits boot configuration). Kernel command line:\n'
printf '#   %s\n' "$(kernel_cmdline)"
printf '# add it to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub (or grub2-mkconfig), reboot.\n'
if [[ $MODE == apply && $N_FAILED -gt 0 ]]; then
  exit 1
fi
exit 0
