#!/usr/bin/env bash
# Photon's main job on a fresh machine (as root): set up, build (release), then the end-to-end
# propagation run on the testbed:
#
#   1 relay namespace + N gateway namespaces (default 8) on one bridge, every link limited to
#   1 Gbit/s with tc tbf (scripts/testbed.sh); `photon-relay run --backend dpdk` (DPDK's
#   af_packet PMD on the relay namespace's veth, no hugepages; the relay answers ARP/ICMP for its
#   address, which the kernel there then does not hold: testbed.sh --relay-no-ip; the nodes'
#   veths checksum UDP in software: --sw-checksums), or with PHOTON_RELAY_BACKEND=socket
#   `--backend socket` (kernel UDP sockets), in the relay namespace; in each gateway namespace `photon-gateway run` beside an emulated Bitcoin node
#   (`photon-perf emunode`, on 127.0.0.1 there). Gateway 0's node replays a trace built from
#   real mainnet blocks (their transactions first, as a Poisson mempool, then each block); the
#   other nodes record what reaches them, the gateways write stage logs. Then `photon-perf
#   report` builds the propagation report into perf/out/<timestamp>/.
#
# Everything runs from a temporary folder (keys, configs, logs, records; kept with the report)
# and is torn down on exit, failure or Ctrl-C.
#
# Environment: PHOTON_DEMO_GATEWAYS (8), PHOTON_DEMO_HEIGHTS (702861,574200,556977),
# PHOTON_DEMO_SPEED (trace speed-up, 90: 3 blocks 10 minutes apart in 20 s),
# PHOTON_DEMO_RATE (1gbit), PHOTON_DEMO_UPLINK_MBPS (the gateways' fragment pacing, network.
# uplink_mbps, 1000; a compressed block is 60-140 KB, so the relay's 7 copies of it fit the
# tbf queue of its 1 Gbit/s link),
# PHOTON_RELAY_BACKEND (dpdk or socket; dpdk),
# PHOTON_DEMO_RELAYS (1 or 2; 1. With 2: gateway 0, the source, registers at relay 0 and the
# other gateways at relay 1, the relays peered with static hop keys: every block crosses both),
# PHOTON_DEMO_FORWARDING (cut-through or store-and-forward: the relays' [relay] forwarding;
# cut-through), PHOTON_DEMO_ENCODING (compact, bip152 or full: the gateways' [block] encoding;
# compact), PHOTON_DEMO_ENCRYPT (true or false: [block] encrypt; true),
# PHOTON_DEMO_IDLE_SLEEP_US (the DPDK relay cores' [dataplane] idle_sleep_us: sleep after a run
# of empty polls, so that a busy-polling relay does not take a core from the gateways; 20),
# PHOTON_DEMO_OUT (the report's folder; perf/out/<timestamp>), PHOTON_DEMO_STATIC_NEIGHBOURS
# (1: with 2 DPDK relays each gets the other's MAC as a static [[neighbour]]; 0: they resolve
# each other by ARP),
# PHOTON_DEMO_SKIP_SETUP=1 (skip scripts/setup.sh), PHOTON_DEMO_SKIP_BUILD=1 (use the release
# binaries already built),
# PHOTON_DEMO_CAPTURE=path.pcap[ng] (replay a capture instead of PHOTON_DEMO_HEIGHTS: its
# transactions and blocks, each once at its first capture time over all the capture's peers,
# at the capture's own timing divided by PHOTON_DEMO_SPEED, whose default is then 1, real time;
# streamed as it plays, any length; the report adds each block's announcements across the
# capture's peers beside Photon's propagation of it. `photon-perf emunode --capture`),
# PHOTON_DEMO_NODE (emunode or bcoin; emunode. With bcoin: a real bcoin node on regtest beside
# every gateway instead of the emulated node; node 0 mines PHOTON_DEMO_BCOIN_BLOCKS (3) blocks,
# each filled with PHOTON_DEMO_BCOIN_TXS (280, ~1 MB) wallet transactions made at node 0 and
# carried to every mempool through Photon first; each block's arrival is read from each node's
# own chain. Then the same nodes' network without Photon: the same testbed links, the nodes
# each other's peers in a ring of PHOTON_DEMO_P2P_DEGREE (2: each node's peers are its two
# neighbours, so 8 nodes are up to 4 hops apart, as mainnet's ~10,000 nodes of degree 8 are
# about 4-5; degree 8 on 8 nodes would join every node to node 0 directly), the same kind of
# blocks; the report puts both side by side. `photon-perf bcoin-net`).
set -euo pipefail
CAPTURE=${PHOTON_DEMO_CAPTURE:-}
if [ -n "$CAPTURE" ]; then
  if [ ! -r "$CAPTURE" ]; then
    echo "demo: PHOTON_DEMO_CAPTURE=$CAPTURE is not a readable file" >&2
    exit 2
  fi
  CAPTURE=$(realpath "$CAPTURE")
fi
cd "$(dirname "$0")/.."
ROOT=$(pwd)

GATEWAYS=${PHOTON_DEMO_GATEWAYS:-8}
HEIGHTS=${PHOTON_DEMO_HEIGHTS:-702861,574200,556977}
if [ -n "$CAPTURE" ]; then SPEED=${PHOTON_DEMO_SPEED:-1}; else SPEED=${PHOTON_DEMO_SPEED:-90}; fi
RATE=${PHOTON_DEMO_RATE:-1gbit}
UPLINK=${PHOTON_DEMO_UPLINK_MBPS:-1000}
BACKEND=${PHOTON_RELAY_BACKEND:-dpdk}
RELAYS=${PHOTON_DEMO_RELAYS:-1}
FORWARDING=${PHOTON_DEMO_FORWARDING:-cut-through}
ENCODING=${PHOTON_DEMO_ENCODING:-compact}
ENCRYPT=${PHOTON_DEMO_ENCRYPT:-true}
IDLE_SLEEP_US=${PHOTON_DEMO_IDLE_SLEEP_US:-20}
NODE_KIND=${PHOTON_DEMO_NODE:-emunode}
BCOIN_BLOCKS=${PHOTON_DEMO_BCOIN_BLOCKS:-3}
BCOIN_TXS=${PHOTON_DEMO_BCOIN_TXS:-280}
P2P_DEGREE=${PHOTON_DEMO_P2P_DEGREE:-2}
PREFIX=phdemo
case "$NODE_KIND" in emunode|bcoin) ;; *) echo "demo: PHOTON_DEMO_NODE must be emunode or bcoin (got $NODE_KIND)" >&2; exit 2 ;; esac
if [ "$NODE_KIND" = bcoin ] && [ -n "$CAPTURE" ]; then
  echo "demo: PHOTON_DEMO_CAPTURE replays through emulated nodes; unset PHOTON_DEMO_NODE" >&2; exit 2
fi
case "$RELAYS" in 1|2) ;; *) echo "demo: PHOTON_DEMO_RELAYS must be 1 or 2 (got $RELAYS)" >&2; exit 2 ;; esac
case "$FORWARDING" in cut-through|store-and-forward) ;;
  *) echo "demo: PHOTON_DEMO_FORWARDING must be cut-through or store-and-forward (got $FORWARDING)" >&2; exit 2 ;;
esac
case "$ENCODING" in compact|bip152|full) ;;
  *) echo "demo: PHOTON_DEMO_ENCODING must be compact, bip152 or full (got $ENCODING)" >&2; exit 2 ;;
esac
case "$ENCRYPT" in true|false) ;;
  *) echo "demo: PHOTON_DEMO_ENCRYPT must be true or false (got $ENCRYPT)" >&2; exit 2 ;;
esac
case "$BACKEND" in
  socket) TESTBED_FLAGS=() ;;
  dpdk) TESTBED_FLAGS=(--relay-no-ip --sw-checksums) ;;
  *) echo "demo: PHOTON_RELAY_BACKEND must be socket or dpdk (got $BACKEND)" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (network namespaces, tc); run it with sudo" >&2
  exit 1
fi
if [ "${PHOTON_DEMO_SKIP_SETUP:-0}" != 1 ]; then
  bash scripts/setup.sh
fi
if [ "${PHOTON_DEMO_SKIP_BUILD:-0}" != 1 ]; then
  echo "== building (release)"
  cargo build --release -p photon-perf -p photon-relay -p photon-gateway
fi
BIN=$ROOT/target/release

STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=${PHOTON_DEMO_OUT:-$ROOT/perf/out/$STAMP}
WORK=$(mktemp -d /tmp/photon-demo.XXXXXX)
mkdir -p "$OUT" "$WORK/records" "$WORK/logs"
PIDS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  bash scripts/testbed.sh down --prefix "$PREFIX" >/dev/null 2>&1 || true
  cp -r "$WORK/logs" "$WORK/records" "$WORK/configs" "$OUT/" 2>/dev/null || true
  rm -rf "$WORK"
  if [ $rc -ne 0 ]; then
    echo "demo: failed (exit $rc); logs, configs and records are in $OUT" >&2
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ns() { echo "$PREFIX-$1"; }
gw_addr() { echo "10.77.$((1 + $1 / 250)).$((1 + $1 % 250))"; }

echo "== keys ($RELAYS relay(s) and $GATEWAYS gateways) in $WORK/configs"
mkdir -p "$WORK/configs"
RELAY_KEYS=()
for r in $(seq 0 $((RELAYS - 1))); do
  RELAY_KEYS+=("$("$BIN/photon-relay" keygen --out "$WORK/configs/relay$r.key")")
done
GW_KEYS=()
for i in $(seq 0 $((GATEWAYS - 1))); do
  GW_KEYS+=("$("$BIN/photon-gateway" keygen --out "$WORK/configs/gw$i.key")")
done

echo "== testbed: $RELAYS relay(s), $GATEWAYS gateways, links limited to $RATE"
tb=$(bash scripts/testbed.sh up --gateways "$GATEWAYS" --relays "$RELAYS" --rate "$RATE" --prefix "$PREFIX" \
  "${TESTBED_FLAGS[@]}")
echo "${tb%%$'\n'*}"

# Socket buffers for bursts of ~1,100 datagrams per block (SO_RCVBUF is capped by rmem_max).
for k in net.core.rmem_max net.core.wmem_max; do
  if [ "$(sysctl -n $k)" -lt 16777216 ]; then
    echo "   raising $k to 16777216 (was $(sysctl -n $k))"
    sysctl -qw "$k=16777216"
  fi
done

quoted_keys() { # all gateway keys but $1, as a TOML array body
  local out="" j
  for j in "${!GW_KEYS[@]}"; do
    [ "$j" = "$1" ] && continue
    out+="\"${GW_KEYS[$j]}\", "
  done
  echo "${out%, }"
}

# The DPDK backend: the af_packet PMD on the relay namespace's eth0 (through its qdisc, so that
# the relay's egress is limited by the same tbf as the socket backend's: qdisc_bypass=0), on
# ordinary memory. Gateways' MACs are learned from their registration frames; gateways resolve
# the relay's by ARP, which the relay answers; with 2 relays each knows the other's MAC from a
# static [[neighbour]] entry. The socket backend ignores [[port]], [eal] and [[neighbour]].
relay_addr() { echo "10.77.0.$((1 + $1))"; }
hex16() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
# Static hop keys of the relay-relay link, one per direction (testbeds without the handshake).
KEY01=$(hex16)
KEY10=$(hex16)
for r in $(seq 0 $((RELAYS - 1))); do
  {
    cat <<EOF
[relay]
node_id = $((r + 1))
ip = "$(relay_addr "$r")"
prefix_len = 16
udp_port = 4433
cores = [$((1 - r % 2))]
main_core = $((r % 2))
forwarding = "$FORWARDING"

[dataplane]
idle_sleep_us = $IDLE_SLEEP_US

[eal]
file_prefix = "photon-demo-r$r"
no_huge = true
memory_mb = 512
args = ["--no-shconf", "--log-level", "lib.eal:notice"]

[[port]]
name = "net_af_packet0"
vdev = "net_af_packet0,iface=eth0,qdisc_bypass=0,framecnt=2048"

[control]
identity_file = "relay$r.key"
gateways = [$(quoted_keys none)]
allow_any_gateway = false
# Each relay of the mesh its own short-ID range and gateway node ids (configs/relay.toml).
short_id_first = $((r * 134217728))
short_id_count = 134217728
first_gateway_node_id = $(((r + 1) * 1000))

[socket]
bind = "$(relay_addr "$r"):4433"
recv_buffer = 16777216
send_buffer = 16777216

[metrics]
enabled = false

[perf]
stage_log = "$WORK/records/relay$r.stages.jsonl"
node_name = "relay$r"

[log]
level = "info"
EOF
    if [ "$RELAYS" = 2 ]; then
      o=$((1 - r))
      if [ "$r" = 0 ]; then send=$KEY01; recv=$KEY10; else send=$KEY10; recv=$KEY01; fi
      if [ "${PHOTON_DEMO_STATIC_NEIGHBOURS:-1}" = 1 ]; then
        mac=$(ip -n "$(ns "r$o")" -o link show eth0 | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)
        printf '\n[[neighbour]]\nip = "%s"\nmac = "%s"\n' "$(relay_addr "$o")" "$mac"
      fi
      cat <<EOF

[[peer]]
node_id = $((o + 1))
addr = "$(relay_addr "$o"):4433"
send_key = "$send"
recv_key = "$recv"
EOF
    fi
  } >"$WORK/configs/relay$r.toml"
done

for i in $(seq 0 $((GATEWAYS - 1))); do
  # The emulated node plays Bitcoin Core, which takes unsolicited blocks: pushed, one round
  # trip sooner. bcoin takes only what it asked for: announced (the gateway's default).
  if [ "$NODE_KIND" = bcoin ]; then NODE_ADDR="$(gw_addr "$i"):48444"; NODE_NETWORK=regtest; DELIVERY=announce
  else NODE_ADDR="127.0.0.1:8333"; NODE_NETWORK=bitcoin; DELIVERY=push; fi
  r=0 # with 2 relays, the source (gateway 0) is at relay 0 and the receivers at relay 1
  if [ "$RELAYS" = 2 ] && [ "$i" != 0 ]; then r=1; fi
  cat >"$WORK/configs/gw$i.toml" <<EOF
[identity]
key_file = "gw$i.key"

[node]
address = "$NODE_ADDR"
network = "$NODE_NETWORK"
delivery = "$DELIVERY"

[network]
listen = "$(gw_addr "$i"):9500"
uplink_mbps = $UPLINK
trusted_origins = [$(quoted_keys "$i")]
recv_buffer_kb = 16384

[[relays]]
address = "$(relay_addr "$r"):4433"
public_key = "${RELAY_KEYS[$r]}"

[block]
encoding = "$ENCODING"
encrypt = $ENCRYPT

[key_release]
policy = "receipts"
receivers = $((GATEWAYS - 1))

[perf]
stage_log = "$WORK/records/gw$i.stages.jsonl"
node_name = "gw$i"

[log]
level = "info"
EOF
done

echo "== starting $RELAYS relay(s) ($BACKEND backend, $FORWARDING), $((GATEWAYS - 1)) receiving nodes and $GATEWAYS gateways"
for r in $(seq 0 $((RELAYS - 1))); do
  ip netns exec "$(ns "r$r")" "$BIN/photon-relay" run --backend "$BACKEND" --config "$WORK/configs/relay$r.toml" \
    >"$WORK/logs/relay$r.log" 2>&1 &
  RELAY_PID=$!
  PIDS+=("$RELAY_PID")
  # Gateways register at start: wait for the relay's data path (EAL start-up with DPDK).
  for _ in $(seq 100); do
    grep -q -E "socket backend running|DPDK data path running" "$WORK/logs/relay$r.log" && break
    if ! kill -0 "$RELAY_PID" 2>/dev/null; then
      echo "demo: relay $r exited at start:" >&2; tail -n 20 "$WORK/logs/relay$r.log" >&2; exit 1
    fi
    sleep 0.1
  done
done
STOP=$WORK/stop
NODE_PIDS=()
REPORT_FLAGS=()
# A capture plays as long as it lasts: the receivers then stop only on the stop file.
MAX_S=600
if [ -n "$CAPTURE" ]; then MAX_S=604800; fi
bcoin_nodes() { # ns:address of every node, node 0 first
  local out="" i
  for i in $(seq 0 $((GATEWAYS - 1))); do out+="$(ns "g$i"):$(gw_addr "$i"),"; done
  echo "${out%,}"
}
if [ "$NODE_KIND" = bcoin ]; then
  echo "== starting $GATEWAYS gateways beside $GATEWAYS bcoin nodes (regtest); node 0 mines"
  for i in $(seq 0 $((GATEWAYS - 1))); do
    ip netns exec "$(ns "g$i")" "$BIN/photon-gateway" run --config "$WORK/configs/gw$i.toml" \
      >"$WORK/logs/gw$i.log" 2>&1 &
    PIDS+=($!)
  done
  # Runs in node 0's namespace: the nodes' RPC is on their testbed addresses.
  ip netns exec "$(ns g0)" "$BIN/photon-perf" bcoin-net --nodes "$(bcoin_nodes)" --dir "$WORK/bcoin" \
    --mode photon --blocks "$BCOIN_BLOCKS" --txs-per-block "$BCOIN_TXS" \
    --records "$WORK/records/bcoin.jsonl" --summary "$WORK/bcoin-photon.json" \
    2> >(tee "$WORK/logs/bcoin-photon.log" >&2) &
  SRC=$!
  PIDS+=("$SRC")
  wait "$SRC"
  echo "bcoin regtest, blocks of ${BCOIN_TXS} wallet txs mined at node 0" >"$WORK/description.txt"
else
for i in $(seq 1 $((GATEWAYS - 1))); do
  ip netns exec "$(ns "g$i")" "$BIN/photon-perf" emunode --name "node$i" --listen 127.0.0.1:8333 \
    --records "$WORK/records/node$i.jsonl" --stop-file "$STOP" --max-seconds "$MAX_S" \
    >"$WORK/logs/node$i.log" 2>&1 &
  PIDS+=($!)
  NODE_PIDS+=($!)
done
sleep 0.5
for i in $(seq 0 $((GATEWAYS - 1))); do
  ip netns exec "$(ns "g$i")" "$BIN/photon-gateway" run --config "$WORK/configs/gw$i.toml" \
    >"$WORK/logs/gw$i.log" 2>&1 &
  PIDS+=($!)
done

REPORT_FLAGS=()
if [ -n "$CAPTURE" ]; then
  echo "== replaying capture $CAPTURE at node0 (gateway 0), ${SPEED}x real time"
  SOURCE_FLAGS=(--capture "$CAPTURE" --summary-out "$WORK/records/capture-summary.json")
  REPORT_FLAGS=(--capture-summary "$WORK/records/capture-summary.json")
else
  echo "== replaying blocks $HEIGHTS at node0 (gateway 0), ${SPEED}x real time"
  SOURCE_FLAGS=(--replay "$HEIGHTS" --blocks-dir "$ROOT/data/bitcoin/mainnet")
fi
ip netns exec "$(ns g0)" "$BIN/photon-perf" emunode --name node0 --listen 127.0.0.1:8333 \
  --records "$WORK/records/node0.jsonl" "${SOURCE_FLAGS[@]}" \
  --speed "$SPEED" --start-delay-s 3 --linger-s 5 --description-out "$WORK/description.txt" \
  2> >(tee "$WORK/logs/node0.log" >&2) &
SRC=$!
PIDS+=("$SRC")
# In the background and waited for, so that a signal to this script is handled at once.
wait "$SRC"
fi

# Gateways and relay first (their stage logs are written per block), then the nodes, which
# write their records when they see the stop file.
for pid in "${PIDS[@]}"; do
  case " ${NODE_PIDS[*]} " in *" $pid "*) ;; *) kill "$pid" 2>/dev/null || true ;; esac
done
touch "$STOP"
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
PIDS=()
if [ "$NODE_KIND" = bcoin ]; then
  echo "== the same: $GATEWAYS bcoin nodes as a P2P network on the same links, no Photon"
  ip netns exec "$(ns g0)" "$BIN/photon-perf" bcoin-net --nodes "$(bcoin_nodes)" --dir "$WORK/bcoin-p2p" \
    --mode p2p --degree "$P2P_DEGREE" --blocks "$BCOIN_BLOCKS" --txs-per-block "$BCOIN_TXS" \
    --records "$WORK/bcoin-p2p.jsonl" --summary "$WORK/bcoin-p2p.json" \
    2> >(tee "$WORK/logs/bcoin-p2p.log" >&2) &
  SRC=$!
  PIDS+=("$SRC")
  wait "$SRC"
  PIDS=()
  cp "$WORK/bcoin-photon.json" "$WORK/bcoin-p2p.json" "$WORK/records/"
fi
bad=$(grep -l -E "panicked|ERROR" "$WORK"/logs/*.log || true)
if [ -n "$bad" ]; then
  echo "   note: errors in $(echo "$bad" | xargs -n1 basename | tr '\n' ' ')(see $OUT/logs)"
fi

echo "== report"
"$BIN/photon-perf" report "$WORK"/records/*.jsonl --out "$OUT" \
  --description "$(cat "$WORK/description.txt"), $GATEWAYS gateways, $RELAYS relay(s) ($BACKEND backend, $FORWARDING), blocks $ENCODING, encrypt $ENCRYPT, links $RATE" \
  "${REPORT_FLAGS[@]}" >"$WORK/report.txt"
if [ "$NODE_KIND" = bcoin ]; then
  python3 - "$WORK/bcoin-photon.json" "$WORK/bcoin-p2p.json" >>"$OUT/report.md" <<'PY'
import json, sys
ph, p2p = (json.load(open(p)) for p in sys.argv[1:3])
print("\n## bcoin through Photon vs the same nodes as a P2P network (same run, same links)\n")
print("Time to 90%% of the %d receiving nodes, from node 0's `generatetoaddress` returning (the block mined) to each node's own best block being it (RPC, polled every 5 ms). P2P: a ring, each node connecting out to the next %d (degree %d).\n" % (ph["nodes"] - 1, p2p["degree"] // 2, p2p["degree"]))
print("| block | size (B) | txs | Photon t90 (ms) | P2P t90 (ms) | Photon / P2P |")
print("|---|---|---|---|---|---|")
tp, tq = [], []
for i, (a, b) in enumerate(zip(ph["blocks"], p2p["blocks"])):
    tp.append(a["t90_ms"]); tq.append(b["t90_ms"])
    print("| %d | %d / %d | %d / %d | %.1f | %.1f | %.2f |" % (i + 1, a["bytes"], b["bytes"], a["txs"], b["txs"], a["t90_ms"], b["t90_ms"], a["t90_ms"] / b["t90_ms"]))
print("| mean | | | %.1f | %.1f | **%.2f** |" % (sum(tp) / len(tp), sum(tq) / len(tq), sum(tp) / sum(tq)))
PY
fi
cat "$OUT/report.md"
echo
echo "report: $OUT/report.md, $OUT/report.json; plots: $(cd "$OUT" && ls *.png *.svg | tr '\n' ' ')"
echo "records, stage logs, configs and logs: $OUT/{records,configs,logs}"
