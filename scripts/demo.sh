#!/usr/bin/env bash
# Photon's main job on embedded defaults, for a fresh machine: set up, build, run.
# For now: forward packets between two DPDK virtual devices on Photon's own binding and print
# the rate beside dpdk-testpmd's on the same devices.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== building (release)"
cargo build --release -p photon-perf
echo "== io-forward between net_null0 and net_null1"
./target/release/photon-perf iofwd --seconds "${PHOTON_DEMO_SECONDS:-3}" 2> >(grep -v -e '^EAL: ' -e '^TELEMETRY' >&2)
