#!/usr/bin/env bash
# Photon's one-command setup for a fresh Debian 12 / Ubuntu machine. Idempotent: run it again
# at any time. Installs what is missing, reserves hugepages when it may, and prints what it did
# and what it could not do. Nothing else in the repository assumes a package this script does
# not install.
set -uo pipefail

did=()
could_not=()
say() { printf '[setup] %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    say "not root and no sudo: cannot install packages or reserve hugepages"; fi
fi

# Debian packages: DPDK 22.11 (library, headers, PMDs, dpdk-testpmd), the toolchain pieces
# bindgen and the C shim need, and the tools the tests and the testbed use.
PACKAGES=(
  libdpdk-dev dpdk dpdk-dev          # DPDK 22.11 LTS: libraries + pkg-config, PMDs, dpdk-testpmd
  pkg-config clang libclang-dev      # bindgen over DPDK's headers, and its cflags
  build-essential                    # cc for the C shim
  iproute2 tcpdump ethtool iputils-ping fonts-dejavu-core  # netns, veth, tc; captures; testbed ping; plot labels
  python3 python3-bitcoinlib         # the independent Bitcoin P2P node used in tests
  coreutils procps psmisc            # stdbuf (testpmd output), pkill
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/photon-setup-apt.log 2>&1; then
    did+=("installed ${missing[*]}")
  else
    could_not+=("install ${missing[*]} (see /tmp/photon-setup-apt.log)")
  fi
else
  did+=("all Debian packages already present")
fi

if pkg-config --atleast-version=22.11 libdpdk 2>/dev/null; then
  did+=("DPDK $(pkg-config --modversion libdpdk) found by pkg-config")
else
  could_not+=("find DPDK >= 22.11 with pkg-config (libdpdk-dev)")
fi

# Rust: the machine's toolchain, with rustfmt and clippy for the test command.
if command -v cargo >/dev/null 2>&1; then
  for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
      rustup component add "$comp" >/dev/null 2>&1 && did+=("added rust component $comp") || could_not+=("add rust component $comp")
    fi
  done
  did+=("$(cargo --version)")
else
  could_not+=("find cargo: install Rust (rustup) first")
fi

# Hugepages: DPDK runs faster with them; every Photon test and the demo also run without
# (--no-huge), so failing here is not fatal.
HP=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
if [ -w "$HP" ] || [ -n "$SUDO" ]; then
  cur=$(cat "$HP" 2>/dev/null || echo 0)
  if [ "${cur:-0}" -lt 256 ]; then echo 256 | $SUDO tee "$HP" >/dev/null 2>&1 || true; fi
  cur=$(cat "$HP" 2>/dev/null || echo 0)
  if [ "${cur:-0}" -ge 1 ]; then
    mkdir -p /dev/hugepages 2>/dev/null || $SUDO mkdir -p /dev/hugepages
    if ! mount | grep -q 'type hugetlbfs'; then $SUDO mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null || true; fi
    if mount | grep -q 'type hugetlbfs'; then did+=("hugepages: $cur x 2 MiB reserved, hugetlbfs mounted")
    else could_not+=("mount hugetlbfs (runs use --no-huge)"); fi
  else
    could_not+=("reserve hugepages (runs use --no-huge)")
  fi
else
  could_not+=("reserve hugepages: $HP not writable (runs use --no-huge)")
fi

# Network namespaces (tests that need them skip with a printed reason where they cannot be made).
if ip netns add photon-setup-probe 2>/dev/null; then
  ip netns del photon-setup-probe; did+=("network namespaces work")
else
  could_not+=("create network namespaces (namespace tests will skip)")
fi

# Node.js and bcoin (a full Bitcoin node in JavaScript, from the npm registry), for the tests
# and the demo with real nodes. Installed into perf/nodes/bcoin from its committed lockfile;
# nothing is downloaded at run time. Install scripts build mrmr (node-gyp, build-essential); leveldown's
# prebuilt binary is picked at run time and bcoin's other native parts fall back to JS.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  say "installing Node.js and npm (Debian)"
  if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >>/tmp/photon-setup-apt.log 2>&1; then
    did+=("installed nodejs npm")
  else
    could_not+=("install nodejs npm (see /tmp/photon-setup-apt.log): the bcoin tests will fail")
  fi
fi
BCOIN_DIR="$(cd "$(dirname "$0")/.." && pwd)/perf/nodes/bcoin"
if command -v npm >/dev/null 2>&1; then
  stamp="$BCOIN_DIR/node_modules/.photon-lock.sha256"
  want=$(sha256sum "$BCOIN_DIR/package-lock.json" | cut -d' ' -f1)
  if [ -x "$BCOIN_DIR/node_modules/bcoin/bin/node" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    did+=("bcoin $(node -p 'require(process.argv[1]).version' "$BCOIN_DIR/node_modules/bcoin/package.json") already installed (node $(node --version))")
  elif (cd "$BCOIN_DIR" && npm ci --no-audit --no-fund >/tmp/photon-setup-npm.log 2>&1); then
    echo "$want" >"$stamp"
    did+=("installed bcoin into perf/nodes/bcoin (node $(node --version))")
  else
    could_not+=("npm ci in perf/nodes/bcoin (see /tmp/photon-setup-npm.log): the bcoin tests will fail")
  fi
fi

say "done:"
for d in "${did[@]}"; do say "  + $d"; done
if [ ${#could_not[@]} -gt 0 ]; then
  say "could not:"
  for c in "${could_not[@]}"; do say "  - $c"; done
fi
# Only a missing DPDK or cargo stops the build; everything else degrades with a message.
pkg-config --exists libdpdk && command -v cargo >/dev/null 2>&1
