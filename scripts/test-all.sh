#!/usr/bin/env bash
# Sets up the machine, then runs every check CI runs: format, lints (warnings are errors) and
# every test (unit and integration, one dev-profile build shared by all).
#
# Builds go to $CARGO_TARGET_DIR, by default ~/.cache/cloudlake/target (outside the clone, so a
# second clone or a CI rerun reuses the compiled dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cloudlake/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test"
cargo test --locked --all-targets
