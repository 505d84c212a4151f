#!/usr/bin/env bash
# Every test Photon has: formatting, lints (warnings are errors), then the whole workspace's
# unit, integration and fuzz-corpus tests. Needs what scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test --workspace"
cargo test --workspace
