# shellcheck shell=bash
# Sourced by the scripts that run the workspace's binaries (bench.sh, audit-crash-loop.sh,
# restart-bench.sh, durability-bench.sh, multihost.sh, readme-check.sh): they
# find them through cargo, never through a hard-coded `target/release`, so that CARGO_TARGET_DIR,
# `build.target-dir` in a cargo config and CARGO_BUILD_TARGET are all respected.
#
#   cargo_target_dir             prints cargo's target directory (CARGO_TARGET_DIR, configs)
#   cargo_release_dir            prints the directory cargo puts release binaries in
#   cargo_release_bins PKG_ARGS  builds release binaries (cargo's progress and errors visible on
#                                stderr), then sets BIN to that directory
#   require_bins NAME...         fails, naming the missing ones, unless "$BIN/NAME" are executable
#
# Run from the workspace root (the scripts `cd` there first).

# The target directory, from `cargo metadata` (which resolves CARGO_TARGET_DIR and cargo configs
# the way `cargo build` does).
cargo_target_dir() {
  local meta dir
  meta=$(cargo metadata --format-version 1 --no-deps) || {
    echo "cargo metadata failed: is this the workspace root, with cargo on PATH?" >&2
    return 1
  }
  # "target_directory":"/abs/path" (a path with a quote or backslash would be escaped in JSON:
  # refused rather than misread).
  dir=$(printf '%s' "$meta" | grep -o '"target_directory":"[^"]*"' | head -n 1 | cut -d'"' -f4)
  if [ -z "$dir" ] || [ "${dir#*\\}" != "$dir" ]; then
    echo "cannot read target_directory from cargo metadata" >&2
    return 1
  fi
  printf '%s\n' "$dir"
}

# The release binaries' directory: the target directory, then the triple subdirectory when
# CARGO_BUILD_TARGET is set.
cargo_release_dir() {
  local dir
  dir=$(cargo_target_dir) || return 1
  if [ -n "${CARGO_BUILD_TARGET:-}" ]; then
    dir="$dir/$CARGO_BUILD_TARGET"
  fi
  printf '%s/release\n' "$dir"
}

# cargo_release_bins [cargo build args]: `cargo build --release` with the given package/bin
# selection (default: every binary of the workspace), then BIN=the release directory.
cargo_release_bins() {
  if [ $# -eq 0 ]; then set -- --bins; fi
  cargo build --release "$@" >&2 || {
    echo "cargo build --release $* failed (see above)" >&2
    return 1
  }
  BIN=$(cargo_release_dir) || return 1
}

require_bins() {
  local missing=() b
  for b in "$@"; do
    [ -x "$BIN/$b" ] || missing+=("$b")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "not built in $BIN: ${missing[*]}" >&2
    return 1
  fi
}
