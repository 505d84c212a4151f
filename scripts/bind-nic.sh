#!/usr/bin/env bash
# Binds a NIC to vfio-pci for the DPDK relay (a thin wrapper around DPDK's dpdk-devbind.py,
# from Debian's `dpdk` package), or gives it back to its kernel driver.
#
#   scripts/bind-nic.sh status                  # what dpdk-devbind sees
#   scripts/bind-nic.sh bind 0000:01:00.0       # -> vfio-pci (loads the module, checks IOMMU)
#   scripts/bind-nic.sh unbind 0000:01:00.0 ixgbe   # back to a kernel driver
#
# Then set the PCI address in the relay config (configs/relay-nic.toml, [[port]] device).
set -euo pipefail

DEVBIND=$(command -v dpdk-devbind.py || command -v dpdk-devbind || true)
if [ -z "$DEVBIND" ]; then
  echo "bind-nic: dpdk-devbind.py not found: run scripts/setup.sh (Debian package 'dpdk')" >&2
  exit 1
fi

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage

check_pci() {
  if ! [[ "$1" =~ ^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$ ]]; then
    echo "bind-nic: '$1' is not a PCI address like 0000:01:00.0 (see: $0 status)" >&2
    exit 2
  fi
  if [ ! -e "/sys/bus/pci/devices/$1" ]; then
    echo "bind-nic: no PCI device $1 on this machine (see: $0 status)" >&2
    exit 2
  fi
}

case "$1" in
  status)
    "$DEVBIND" --status-dev net
    ;;
  bind)
    [ $# -eq 2 ] || usage
    check_pci "$2"
    if [ "$(id -u)" -ne 0 ]; then echo "bind-nic: run as root" >&2; exit 1; fi
    modprobe vfio-pci
    if [ -z "$(ls -A /sys/kernel/iommu_groups 2>/dev/null)" ]; then
      echo "bind-nic: no IOMMU groups: enable VT-d/AMD-Vi (intel_iommu=on / amd_iommu=on), or as a" >&2
      echo "          last resort: echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode" >&2
      exit 1
    fi
    if ip -br link 2>/dev/null | grep -q UP && [ -e "/sys/bus/pci/devices/$2/net" ]; then
      for ifc in /sys/bus/pci/devices/"$2"/net/*; do
        ifc=$(basename "$ifc")
        echo "bind-nic: taking $ifc down (it leaves the kernel)"
        ip link set "$ifc" down
      done
    fi
    "$DEVBIND" -b vfio-pci "$2"
    "$DEVBIND" --status-dev net | grep -F "$2"
    ;;
  unbind)
    [ $# -eq 3 ] || usage
    check_pci "$2"
    "$DEVBIND" -b "$3" "$2"
    "$DEVBIND" --status-dev net | grep -F "$2"
    ;;
  *) usage ;;
esac
