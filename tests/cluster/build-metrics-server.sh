#!/usr/bin/env bash
# Builds metrics-server (the resource metrics API the HPA reads: CPU and memory of pods, scraped
# from the kubelet's /metrics/resource) from the Go module sigs.k8s.io/metrics-server at the
# pinned version below, with the machine's Go. The module is downloaded through the module proxy
# (checked against the checksum database like any module) and built as the main module, with its
# own go.sum, from a scratch copy. The result is cached outside the repository under
#   ${TAPEDECK_METRICS_SERVER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/metrics-server}/metrics-server-<version>/metrics-server
# and appears (by rename) only once its build finished. The build runs under `nice -n 19`.
# v0.9.1 needs Go >= 1.26.10; v0.9.0 (k8s.io/* v0.36.2, like the node) builds with this Go.
#
#   tests/cluster/build-metrics-server.sh            build it if missing, print the cache directory
#   tests/cluster/build-metrics-server.sh --check    exit 1 (and build nothing) if it is missing
#   tests/cluster/build-metrics-server.sh --where    print the binary's path (built or not)
set -euo pipefail
MODULE=sigs.k8s.io/metrics-server
VERSION=v0.9.0
CACHE="${TAPEDECK_METRICS_SERVER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/metrics-server}"
DEST="$CACHE/metrics-server-$VERSION"

# shellcheck source=tests/cluster/go-main-lib.sh
source "$(dirname "$0")/go-main-lib.sh"
build_main_module metrics-server "$MODULE" "$VERSION" "$DEST" ./cmd/metrics-server \
    "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$VERSION" "${1:-}"
