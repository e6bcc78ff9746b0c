#!/usr/bin/env bash
# Builds kube-network-policies, the SIG Network reference NetworkPolicy implementation (nfqueue:
# the kernel hands each new connection's first packet to it, it answers accept or drop), which
# the NetworkPolicy test runs on the real node (netpol-up.sh). From the Go module
# sigs.k8s.io/kube-network-policies at the pinned version below, with the machine's Go: the
# module is downloaded through the module proxy (checked against the checksum database like any
# module) and built as the main module from a scratch copy, unchanged. The result is cached
# outside the repository under
#   ${TAPEDECK_NETPOL_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/netpol}/kube-network-policies-<version>/kube-network-policies
# and appears (by rename) only once its build finished. The build runs under `nice -n 19`.
#
#   tests/cluster/build-netpol.sh            build it if missing, print the cache directory
#   tests/cluster/build-netpol.sh --check    exit 1 (and build nothing) if it is missing
#   tests/cluster/build-netpol.sh --where    print the binary's path (built or not)
set -euo pipefail
NETPOL_MODULE=sigs.k8s.io/kube-network-policies
NETPOL_VERSION=v0.8.0
CACHE="${TAPEDECK_NETPOL_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/netpol}"
DEST="$CACHE/kube-network-policies-$NETPOL_VERSION"

# shellcheck source=tests/cluster/go-main-lib.sh
source "$(dirname "$0")/go-main-lib.sh"
build_main_module kube-network-policies "$NETPOL_MODULE" "$NETPOL_VERSION" "$DEST" ./cmd \
    "-s -w" "${1:-}"
