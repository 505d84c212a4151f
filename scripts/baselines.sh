#!/usr/bin/env bash
# The perf issue's baselines in one session, on the same testbed (scripts/demo.sh, one variant
# after the other, the same trace, the same build), then `photon-perf compare` side by side:
#
#   ours                 DPDK relay, cut-through, compact blocks (relay-assigned short IDs), sealed
#   socket               (b) the kernel-socket relay backend instead of DPDK
#   store-and-forward    (a) the relay holds each block until it could rebuild it, then forwards
#   bip152               (c) every known transaction referenced by a 6-byte ID (BIP152-sized)
#   full                 (c) uncompressed: the serialized block itself
#   no-encryption        (d) no sealing, no key-release wait
#   2-relay              (e) source gateway at relay 0, receivers at relay 1
#   2-relay-full-ct      uncompressed blocks over the 2-relay path, cut-through  } goal 2
#   2-relay-full-sf      the same, store-and-forward                              }
#   p2p                  (not in the default list) real bcoin nodes: through Photon, then the same
#                        nodes as a P2P network without Photon (PHOTON_DEMO_NODE=bcoin); its
#                        own workload (regtest blocks of wallet txs), so it is not in compare.md
#                        but its side-by-side table is printed and appended there
#
# Output: perf/out/baselines-<timestamp>/<variant>/ (each variant's report, records, logs,
# configs) and compare.md there. Environment: PHOTON_BASELINES (space-separated subset of the
# variants above, in the order to run), PHOTON_BASELINES_ROUNDS (runs of the whole list,
# interleaved, 1), PHOTON_BASELINES_FULL_UPLINK_MBPS (the source gateways' pacing for the
# uncompressed variants, 140: a 1.4 MB block's 7 copies on the relay's 1 Gbit/s link then
# fit its tbf queue), and every PHOTON_DEMO_* setting of demo.sh (applied to all variants
# unless a variant sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

VARIANTS=${PHOTON_BASELINES:-"ours socket store-and-forward bip152 full no-encryption 2-relay 2-relay-full-ct 2-relay-full-sf"}
ROUNDS=${PHOTON_BASELINES_ROUNDS:-1}
FULL_UPLINK=${PHOTON_BASELINES_FULL_UPLINK_MBPS:-140}

if [ "$(id -u)" -ne 0 ]; then
  echo "baselines: needs root (network namespaces, tc); run it with sudo" >&2
  exit 1
fi
if [ "${PHOTON_DEMO_SKIP_SETUP:-0}" != 1 ]; then
  bash scripts/setup.sh
fi
echo "== building (release)"
cargo build --release -p photon-perf -p photon-relay -p photon-gateway

variant_env() { # variant -> environment assignments for demo.sh
  case "$1" in
    ours) echo "" ;;
    socket) echo "PHOTON_RELAY_BACKEND=socket" ;;
    store-and-forward) echo "PHOTON_DEMO_FORWARDING=store-and-forward" ;;
    bip152) echo "PHOTON_DEMO_ENCODING=bip152" ;;
    full) echo "PHOTON_DEMO_ENCODING=full PHOTON_DEMO_UPLINK_MBPS=$FULL_UPLINK" ;;
    no-encryption) echo "PHOTON_DEMO_ENCRYPT=false" ;;
    2-relay) echo "PHOTON_DEMO_RELAYS=2" ;;
    2-relay-full-ct) echo "PHOTON_DEMO_RELAYS=2 PHOTON_DEMO_ENCODING=full PHOTON_DEMO_UPLINK_MBPS=$FULL_UPLINK" ;;
    2-relay-full-sf) echo "PHOTON_DEMO_RELAYS=2 PHOTON_DEMO_ENCODING=full PHOTON_DEMO_UPLINK_MBPS=$FULL_UPLINK PHOTON_DEMO_FORWARDING=store-and-forward" ;;
    p2p) echo "PHOTON_DEMO_NODE=bcoin" ;;
    *) echo "baselines: unknown variant $1" >&2; return 1 ;;
  esac
}
for v in $VARIANTS; do variant_env "$v" >/dev/null; done

SESSION=$ROOT/perf/out/baselines-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$SESSION"
RUNS=()
P2P_RUNS=()
for round in $(seq 1 "$ROUNDS"); do
  for v in $VARIANTS; do
    label=$v
    [ "$ROUNDS" -gt 1 ] && label="$v#$round"
    out="$SESSION/${label//#/-}"
    echo "== [$label] $(variant_env "$v")"
    # shellcheck disable=SC2046 # word splitting of the assignments is intended
    if ! env $(variant_env "$v") PHOTON_DEMO_SKIP_SETUP=1 PHOTON_DEMO_SKIP_BUILD=1 PHOTON_DEMO_OUT="$out" \
      bash scripts/demo.sh >"$SESSION/${label//#/-}.log" 2>&1; then
      echo "baselines: variant $label failed; its log: $SESSION/${label//#/-}.log" >&2
      tail -n 20 "$SESSION/${label//#/-}.log" >&2
      exit 1
    fi
    grep -E "time to 90%" "$out/report.md" | head -n 1 || true
    if [ "$v" = p2p ]; then P2P_RUNS+=("$out"); continue; fi
    RUNS+=("$label=$out")
  done
done

GOALS=()
SFX=""
if [ "$ROUNDS" -gt 1 ]; then SFX="#1"; fi
case " $VARIANTS " in *" ours "*) GOALS+=(--ours "ours$SFX") ;; esac
case " $VARIANTS " in *" 2-relay-full-ct "*)
  case " $VARIANTS " in *" 2-relay-full-sf "*)
    GOALS+=(--cut-through "2-relay-full-ct$SFX" --store-and-forward "2-relay-full-sf$SFX") ;;
  esac ;;
esac
# The links' rate as demo.sh sets it (tc's units: gbit, mbit, kbit).
RATE=${PHOTON_DEMO_RATE:-1gbit}
case "$RATE" in
  *gbit) RATE_MBPS=$(( ${RATE%gbit} * 1000 )) ;;
  *mbit) RATE_MBPS=${RATE%mbit} ;;
  *) echo "baselines: PHOTON_DEMO_RATE $RATE: use <n>gbit or <n>mbit" >&2; exit 2 ;;
esac
echo
if [ ${#RUNS[@]} -eq 0 ]; then
  : >"$SESSION/compare.md"
else
target/release/photon-perf compare "${RUNS[@]}" --block data/bitcoin/mainnet/702861.raw \
  --rate-mbps "$RATE_MBPS" --path-delay-ms 0 "${GOALS[@]}" --out "$SESSION/compare.md"
fi
for out in "${P2P_RUNS[@]}"; do
  sed -n '/^## bcoin through Photon vs/,$p' "$out/report.md" | tee -a "$SESSION/compare.md"
done
echo
echo "baselines: $SESSION/compare.md; each variant's report, records and logs under $SESSION/"
