#!/usr/bin/env bash
# Builds Traefik, the ingress controller the browser-through-ingress test runs, from the Go module
# github.com/traefik/traefik/v3 at the pinned version below, with the machine's Go. Traefik's
# go.mod has replace directives, so it cannot be `go install`ed as a dependency: the module is
# downloaded through the module proxy (checked against go.sum's checksum database like any
# module) and built as the main module from a scratch copy. The result is cached outside the
# repository under
#   ${TAPEDECK_TRAEFIK_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/traefik}/traefik-<version>/traefik
# and appears (by rename) only once its build finished. The build runs under `nice -n 19`.
#
#   tests/cluster/build-traefik.sh            build it if missing, print the cache directory
#   tests/cluster/build-traefik.sh --check    exit 1 (and build nothing) if it is missing
#   tests/cluster/build-traefik.sh --where    print the binary's path (built or not)
#   tests/cluster/build-traefik.sh --download only download the modules the build needs (CI
#                                             overlaps this with other builds)
set -euo pipefail
TRAEFIK_MODULE=github.com/traefik/traefik/v3
TRAEFIK_VERSION=v3.6.12
CACHE="${TAPEDECK_TRAEFIK_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/traefik}"
DEST="$CACHE/traefik-$TRAEFIK_VERSION"

# shellcheck source=tests/cluster/go-main-lib.sh
source "$(dirname "$0")/go-main-lib.sh"
pkg=github.com/traefik/traefik/v3/pkg/version
build_main_module traefik "$TRAEFIK_MODULE" "$TRAEFIK_VERSION" "$DEST" ./cmd/traefik \
    "-s -w -X $pkg.Version=$TRAEFIK_VERSION -X $pkg.Codename=tapedeck-test" "${1:-}"
