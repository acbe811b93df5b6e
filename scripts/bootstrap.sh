#!/usr/bin/env bash
# Installs the Debian bookworm packages that authproxy's build and tests need.
# Idempotent: packages already present are left alone, and apt-get runs only when
# something is missing. Run as root on a fresh machine: scripts/bootstrap.sh
set -euo pipefail

build_pkgs=(
  build-essential cmake pkg-config
  libuv1-dev libmbedtls-dev libcjson-dev node-llhttp libnftnl-dev libmnl-dev
)
test_pkgs=(
  clang libclang-rt-14-dev      # libFuzzer targets (scripts/fuzz.sh)
  nftables iproute2 procps      # inspect namespaces and tables in integration tests
  curl openssl ca-certificates python3 nodejs   # clients and fake upstreams
  python3-cryptography          # certificates with chosen dates and chains:
                                # test_upstream_chain_*, test_jail_upstream_cert_clock,
                                # test_serve_ca_expired
  containernetworking-plugins   # test_cni.sh: the reference loopback plugin (/usr/lib/cni)
  runc busybox-static           # test_oci_container.sh: a real container (runc; crun is
                                # tried if installed and runc cannot run), a static busybox
                                # as its root filesystem
  strace                        # test_callback_attach_cost.sh: the daemon's route queries
  gdb                           # test_upstream_pool_reset_before_head.sh: holds open a
                                # race microseconds wide (the proxy stopped mid-write)
)

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: must run as root (it installs Debian packages): sudo $0" >&2
  exit 1
fi

missing=()
for p in "${build_pkgs[@]}" "${test_pkgs[@]}"; do
  # A package counts as present when dpkg reports it installed; nodejs may come from
  # another repository (NodeSource) and still satisfy the tests, so accept a node binary.
  if [ "$p" = nodejs ] && command -v node >/dev/null 2>&1; then
    continue
  fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all ${#build_pkgs[@]} build and ${#test_pkgs[@]} test packages already installed; nothing to do"
  exit 0
fi

echo "bootstrap: installing ${#missing[@]} package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "bootstrap: installed ${missing[*]}"
