# shellcheck shell=bash
# Sourced by the scripts that run the workspace's binaries (bench.sh, audit-crash-loop.sh,
# restart-bench.sh, durability-bench.sh, multihost.sh, readme-check.sh): they
# find them through cargo, never through a hard-coded `target/release`: the directory is the one
# cargo's own build messages name for the executables it built, so CARGO_TARGET_DIR,
# `build.target-dir` and `build.target` in a cargo config, CARGO_BUILD_TARGET and any layout
# cargo chooses are all respected without this file guessing how cargo lays out its output.
#
#   cargo_target_dir             prints cargo's target directory (CARGO_TARGET_DIR, configs)
#   cargo_bins_dir BUILD_ARGS    `cargo build BUILD_ARGS`, then prints the directory of the
#                                executables it built (cargo's progress and errors on stderr)
#   cargo_release_bins PKG_ARGS  cargo_bins_dir --release PKG_ARGS (default: every binary of the
#                                workspace) into BIN
#   bins_dir_of_messages         reads cargo's JSON build messages on stdin and prints the
#                                directory of their executables (one directory, or it fails)
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

# The directory of the executables named in cargo's `--message-format=json` messages on stdin:
# the "executable" field of its compiler-artifact messages (null for libraries and build
# scripts). A path with a quote or backslash would be escaped in JSON: refused rather than misread.
bins_dir_of_messages() {
  local exes dirs
  exes=$(grep -o '"executable":"[^"]*"' | cut -d'"' -f4) || true
  if [ -z "$exes" ]; then
    echo "cargo built no executable (no \"executable\" in its build messages)" >&2
    return 1
  fi
  if printf '%s\n' "$exes" | grep -q '\\'; then
    echo "cannot read an executable's path from cargo's build messages" >&2
    return 1
  fi
  dirs=$(printf '%s\n' "$exes" | sed 's|/[^/]*$||' | sort -u)
  if [ "$(printf '%s\n' "$dirs" | wc -l)" -ne 1 ]; then
    echo "cargo built executables in more than one directory: $(printf '%s\n' "$dirs" | tr '\n' ' ')" >&2
    return 1
  fi
  printf '%s\n' "$dirs"
}

# cargo_bins_dir [cargo build args]: builds, then prints where cargo says the executables are.
cargo_bins_dir() {
  local messages
  messages=$(cargo build --message-format=json-render-diagnostics "$@") || {
    echo "cargo build $* failed (see above)" >&2
    return 1
  }
  printf '%s\n' "$messages" | bins_dir_of_messages
}

# cargo_release_bins [cargo build args]: `cargo build --release` with the given package/bin
# selection (default: every binary of the workspace), then BIN=the directory cargo built them in.
cargo_release_bins() {
  if [ $# -eq 0 ]; then set -- --bins; fi
  BIN=$(cargo_bins_dir --release "$@") || return 1
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
