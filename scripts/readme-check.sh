#!/usr/bin/env bash
# Runs every command of README.md's ```sh blocks, as a newcomer would type them, on a fresh
# `git clone` of the current commit in a temporary directory, and fails if any command fails or
# leaves a file in the clone that is neither tracked nor ignored (`git status --porcelain`).
#
#   scripts/readme-check.sh [--with-tests] [--keep]
#
#   --with-tests  also run the README's test command (`cargo test --workspace`); by default it
#                 is skipped, saying so: scripts/ci.sh runs it on the same commit just before
#   --keep        keep the temporary directory (its path is printed)
#
# How the README is read: each ```sh block is split into sections at blank lines; a command is
# a line that is not a comment (a trailing `\` joins the next line; a trailing `  # ...` comment
# is dropped). Each section runs in a fresh `bash -euo pipefail` in the clone, so that its
# background jobs (`cmd &`) are that shell's %1, %2, ... as in a terminal; a job a section
# leaves running is killed by PID and named. A command that runs until stopped (`audit serve`)
# runs for SERVICE_SECONDS and must still be alive then; it is then stopped by its PID.
#
# Inputs are shortened by the substitutions below; each one must match a README command (a
# README edit that removes it fails here, so that this list is kept in step):
#   --orders 1000000          -> --orders 20000      (bench gen)
#   scripts/bench.sh --quick  -> scripts/bench.sh --smoke
#   scripts/chaos.sh 200      -> scripts/chaos.sh 2
# A command reading ../shared/data is skipped, saying so, when that data is absent.
#
# Environment: CARGO_TARGET_DIR points outside the clone: by default the target directory of
# the checkout this script is run from (`cargo metadata`), so that dependencies are not built
# again (the workspace's own crates are: the clone's files are new). HOME is a directory of the
# temporary tree (the README keeps keys in ~/.titanic); CARGO_HOME and RUSTUP_HOME keep their
# values. Needs git, curl and python3 (bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)

WITH_TESTS=0
KEEP=0
SERVICE_SECONDS=${SERVICE_SECONDS:-3}
while [ $# -gt 0 ]; do
  case "$1" in
    --with-tests) WITH_TESTS=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "readme-check.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

for tool in git curl python3; do
  command -v "$tool" >/dev/null || { echo "readme-check.sh: $tool is needed" >&2; exit 2; }
done

COMMIT=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "readme-check.sh: note: uncommitted changes are not checked (the clone is of $COMMIT)" >&2
fi
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  # shellcheck source=scripts/cargo-bins.sh
  . scripts/cargo-bins.sh
  CARGO_TARGET_DIR=$(cargo_target_dir) || exit 2
fi
export CARGO_TARGET_DIR
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/readme-check.XXXXXX")
cleanup() {
  if [ "$KEEP" = 1 ]; then echo "readme-check.sh: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
CLONE=$WORK/repo
echo "==> fresh clone of $COMMIT in $CLONE (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
git clone -q --no-checkout "$SRC" "$CLONE"
git -C "$CLONE" checkout -q --detach "$COMMIT"
# ../shared of the clone is the checkout's ../shared (the LOBSTER data), when there is one.
if [ -d "$SRC/../shared" ]; then ln -s "$(cd "$SRC/../shared" && pwd)" "$WORK/shared"; fi
mkdir -p "$WORK/home"

# The README's commands, one per line, sections separated by an empty line.
extract() {
  awk '
    /^```sh[[:space:]]*$/ { inblock = 1; print ""; next }
    /^```/ && inblock { inblock = 0; print ""; next }
    !inblock { next }
    {
      line = $0
      if (cont != "") { sub(/^[[:space:]]+/, "", line); line = cont " " line; cont = "" }
      if (line ~ /\\$/) { sub(/[[:space:]]*\\$/, "", line); cont = line; next }
      if (line ~ /^[[:space:]]*$/) { print ""; next }
      if (line ~ /^[[:space:]]*#/) next
      sub(/[[:space:]][[:space:]]+#[^"'\'']*$/, "", line)
      print line
    }
  ' README.md
}

SUBSTITUTIONS=(
  "--orders 1000000|--orders 20000"
  "scripts/bench.sh --quick|scripts/bench.sh --smoke"
  "scripts/chaos.sh 200|scripts/chaos.sh 2"
)
COMMANDS=$(extract)
for s in "${SUBSTITUTIONS[@]}"; do
  from=${s%%|*} to=${s#*|}
  if ! grep -qF -- "$from" <<<"$COMMANDS"; then
    echo "readme-check.sh: README has no command with '$from' any more: update SUBSTITUTIONS" >&2
    exit 1
  fi
  COMMANDS=${COMMANDS//"$from"/"$to"}
done

# One section's script: each command echoed, then run; background jobs are listed at the end.
section_script() {
  echo 'set -euo pipefail'
  local cmd
  while IFS= read -r cmd; do
    printf 'printf "+ %%s\\n" %q >&2\n' "$cmd"
    if [[ "$cmd" == *" -- serve "* ]]; then
      # Runs until stopped: alive after a few seconds, then stopped by PID.
      printf '%s &\nsvc=$!\nsleep %s\n' "${cmd% &}" "$SERVICE_SECONDS"
      printf 'kill -0 "$svc" 2>/dev/null || { echo "readme-check: exited early: %s" >&2; wait "$svc"; exit 1; }\n' "${cmd//\"/\\\"}"
      printf 'kill "$svc"; wait "$svc" || true\n'
    elif [[ "$cmd" == "kill %"* ]]; then
      # The README stops its background jobs: each must still be running (a sink that could
      # not bind, say, has ended by itself, and `kill %1 %2` alone would not say so).
      # (`jobs -r` rather than `kill -0`: a job that has ended may not be reaped yet; a plain
      # `jobs` first updates the shell's job table, which `$(jobs ...)` only copies.)
      printf 'jobs >/dev/null; for j in %s; do [ -n "$(jobs -r "$j" 2>/dev/null)" ] || { echo "readme-check: background job $j ended before this: %s" >&2; exit 1; }; done\n' "${cmd#kill }" "$cmd"
      printf '%s\n' "$cmd"
      printf 'wait || true\n'
    else
      printf '%s\n' "$cmd"
    fi
  done
  # Jobs still running at the end of the section: named, stopped by PID.
  echo 'for p in $(jobs -p); do kill -0 "$p" 2>/dev/null || continue; echo "readme-check: stopping PID $p, left running by this section" >&2; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done'
}

run_section() {
  local n=$1 body=$2
  local script=$WORK/section-$n.sh
  section_script <<<"${body%$'\n'}" >"$script"
  echo "==> README section $n"
  local t0=$SECONDS status=0
  (cd "$CLONE" && HOME="$WORK/home" bash "$script") || status=$?
  if [ "$status" != 0 ]; then
    echo "readme-check.sh: FAILED: README section $n (exit status $status):" >&2
    sed 's/^/    /' <<<"$body" >&2
    exit 1
  fi
  echo "    section $n passed in $((SECONDS - t0)) s"
}

n=0
section=""
flush() {
  [ -n "$section" ] || return 0
  n=$((n + 1))
  run_section "$n" "$section"
  section=""
}
while IFS= read -r cmd; do
  if [ -z "$cmd" ]; then flush; continue; fi
  if [ "$cmd" = "cargo test --workspace" ] && [ "$WITH_TESTS" = 0 ]; then
    echo "==> skipped: '$cmd' (scripts/ci.sh runs it on this commit; --with-tests runs it here)"
    continue
  fi
  if [[ "$cmd" == *../shared/data/* ]] && [ ! -d "$WORK/shared/data" ]; then
    echo "==> skipped: '$cmd' (../shared/data is absent)"
    continue
  fi
  section+="$cmd"$'\n'
done <<<"$COMMANDS"
flush

echo "==> files left in the clone that are neither tracked nor ignored"
left=$(git -C "$CLONE" status --porcelain)
if [ -n "$left" ]; then
  echo "$left" >&2
  echo "readme-check.sh: FAILED: README commands left the files above (add them to .gitignore, or stop writing them)" >&2
  exit 1
fi
echo "    none"
echo "readme-check.sh: PASSED: $n README sections on a fresh clone of $COMMIT"
