#!/usr/bin/env bash
# Runs every criterion bench once, in criterion's test mode (what `cargo test --benches` does: each
# benchmark body executes once and must not panic), so that no bench rots.
# Real figures come from `cargo bench` in release (see docs/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --benches
echo "bench smoke: ok"
