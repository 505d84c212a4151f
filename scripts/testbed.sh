#!/usr/bin/env bash
# Photon's testbed: network namespaces joined by veth pairs to one bridge.
#
#   scripts/testbed.sh up   [--gateways N] [--relays 1|2] [--rate RATE] [--prefix P] [--relay-no-ip]
#                             [--sw-checksums]
#   scripts/testbed.sh down [--prefix P]
#   scripts/testbed.sh status [--prefix P]
#
# Layout (prefix P, default "phtb"):
#   P-sw       a namespace holding the bridge br0 (the switch; the root namespace is untouched)
#   P-r0, P-r1 relay namespaces      10.77.0.1, 10.77.0.2   /16
#   P-g0..     gateway namespaces    10.77.1.1, 10.77.1.2 ... (gateway i: 10.77.(1 + i/250).(1 + i%250))
# Each node's eth0 is one end of a veth pair; the other end (P-<node> in P-sw) is on br0. With
# --rate, both directions of every link are limited with `tc tbf` (e.g. 1gbit, 100mbit).
# --relay-no-ip leaves the relays' eth0 without an address (up, no IP): for a relay that owns
# its address itself on that veth (the DPDK backend with the af_packet PMD answers ARP and ICMP
# for it), so that the kernel in its namespace neither answers ARP for it nor takes its traffic.
# --sw-checksums turns TX checksum offload off on every node's eth0 (ethtool -K eth0 tx off), so
# that UDP packets leave with their full checksum: offloaded, a veth hands on only the pseudo-
# header's partial sum (CHECKSUM_PARTIAL), which a kernel receiver accepts but a DPDK relay on
# af_packet reads as the packet's checksum (its cut-through fan-out derives each copy's checksum
# from the received one, so every copy would carry a wrong one).
# Only addresses in 10.77.0.0/16 inside these namespaces are used. `down` removes every
# namespace whose name starts with "P-" (also what a crashed `up` left); `up` removes what it
# made so far if it fails half-way (trap).
set -euo pipefail

cmd=${1:-}
shift || true
GATEWAYS=8
RELAYS=1
RATE=""
PREFIX=phtb
RELAY_NO_IP=0
SW_CHECKSUMS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --gateways) GATEWAYS=$2; shift 2 ;;
    --relays) RELAYS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --relay-no-ip) RELAY_NO_IP=1; shift ;;
    --sw-checksums) SW_CHECKSUMS=1; shift ;;
    *) echo "testbed: unknown argument $1" >&2; exit 2 ;;
  esac
done
# Interface names are at most 15 bytes: "<prefix>-g<index>".
if [ ${#PREFIX} -gt 8 ] || ! [[ $PREFIX =~ ^[a-z][a-z0-9]*$ ]]; then
  echo "testbed: --prefix must be 1-8 lowercase letters/digits starting with a letter" >&2; exit 2
fi
if ! [[ $GATEWAYS =~ ^[0-9]+$ ]] || [ "$GATEWAYS" -lt 1 ] || [ "$GATEWAYS" -gt 2000 ]; then
  echo "testbed: --gateways must be 1..2000" >&2; exit 2
fi
if [ "$RELAYS" != 1 ] && [ "$RELAYS" != 2 ]; then
  echo "testbed: --relays must be 1 or 2" >&2; exit 2
fi

SW="$PREFIX-sw"

gateway_addr() { echo "10.77.$((1 + $1 / 250)).$((1 + $1 % 250))"; }
relay_addr() { echo "10.77.0.$((1 + $1))"; }

down() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  # veth ends left in the root namespace by an interrupted `up`.
  for dev in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$PREFIX-" || true); do
    ip link del "$dev" 2>/dev/null || true
  done
}

limit() { # namespace device
  [ -z "$RATE" ] && return 0
  ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "$RATE" burst 256kb latency 50ms
}

add_node() { # name address (empty: no address)
  local name=$1 addr=$2 ns="$PREFIX-$1"
  ip netns add "$ns"
  ip link add "$PREFIX-$name" type veth peer name "$PREFIX-${name}p"
  ip link set "$PREFIX-$name" netns "$SW"
  ip link set "$PREFIX-${name}p" netns "$ns"
  ip -n "$ns" link set "$PREFIX-${name}p" name eth0
  if [ -n "$addr" ]; then
    ip -n "$ns" addr add "$addr/16" dev eth0
  else # nor an IPv6 link-local address (no router/neighbour solicitations from the kernel)
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 2>/dev/null || true
  fi
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  if [ "$SW_CHECKSUMS" = 1 ]; then ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null; fi
  ip -n "$SW" link set "$PREFIX-$name" master br0
  ip -n "$SW" link set "$PREFIX-$name" up
  limit "$ns" eth0
  limit "$SW" "$PREFIX-$name"
}

up() {
  if [ "$(id -u)" -ne 0 ]; then echo "testbed: needs root (network namespaces)" >&2; exit 1; fi
  down
  trap 'echo "testbed: up failed; removing what it made" >&2; down' ERR INT TERM
  ip netns add "$SW"
  ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link set br0 up
  ip -n "$SW" link set lo up
  for r in $(seq 0 $((RELAYS - 1))); do
    if [ "$RELAY_NO_IP" = 1 ]; then add_node "r$r" ""; else add_node "r$r" "$(relay_addr "$r")"; fi
  done
  for g in $(seq 0 $((GATEWAYS - 1))); do add_node "g$g" "$(gateway_addr "$g")"; done
  trap - ERR INT TERM
  echo "testbed $PREFIX up: $RELAYS relay(s), $GATEWAYS gateway(s)${RATE:+, links limited to $RATE}"
  for r in $(seq 0 $((RELAYS - 1))); do
    echo "  $PREFIX-r$r $(relay_addr "$r")$([ "$RELAY_NO_IP" = 1 ] && echo " (not on the kernel's eth0)")"
  done
  for g in $(seq 0 $((GATEWAYS - 1))); do echo "  $PREFIX-g$g $(gateway_addr "$g")"; done
}

case "$cmd" in
  up) up ;;
  down) down; echo "testbed $PREFIX down" ;;
  status) ip netns list | grep "^$PREFIX-" || echo "testbed $PREFIX: nothing up" ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
