#!/usr/bin/env bash
# The whole CI gate, runnable by hand: formatting, lints, the README's test command, bench smoke runs.
# Usage: scripts/ci.sh            (everything)
#        SKIP_BENCH_SMOKE=1 scripts/ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
rustc --version

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "tests (the README's test command): cargo test --workspace"
cargo test --workspace

if [ -z "${SKIP_BENCH_SMOKE:-}" ]; then
  step "bench smoke: every criterion bench runs once (cargo bench -- --test)"
  scripts/bench-smoke.sh
fi

step "CI passed"
