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
#   tests/cluster/build-traefik.sh --download only download the modules the build needs (CI
#                                             overlaps this with other builds)
set -euo pipefail
TRAEFIK_MODULE=github.com/traefik/traefik/v3
TRAEFIK_VERSION=v3.6.12
CACHE="${TAPEDECK_TRAEFIK_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/traefik}"
DEST="$CACHE/traefik-$TRAEFIK_VERSION"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

if [[ -x "$DEST/traefik" ]]; then
    echo "$DEST"
    exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
    echo "missing: traefik ($DEST)" >&2
    exit 1
fi

mkdir -p "$CACHE"
tmp="$DEST.tmp.$$"
src="$tmp/src"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
start=$SECONDS
doing=$([[ "${1:-}" == "--download" ]] && echo "fetching the modules of" || echo building)
echo "--- $("$GO" version); $doing traefik $TRAEFIK_VERSION for $DEST ($(date -u +%H:%M:%S))" >&2
dir="$(cd "$tmp" && GOFLAGS=-mod=mod "$GO" mod download -json "$TRAEFIK_MODULE@$TRAEFIK_VERSION" |
    awk -F'"' '$2 == "Dir" {print $4}')"
cp -r "$dir" "$src"
chmod -R u+w "$src"
if [[ "${1:-}" == "--download" ]]; then
    # Loading the packages fetches exactly the modules `go build` would, and compiles nothing.
    (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" list -deps ./cmd/traefik >/dev/null)
    echo "--- traefik $TRAEFIK_VERSION: modules downloaded in $((SECONDS - start)) s" >&2
    exit 0
fi
pkg=github.com/traefik/traefik/v3/pkg/version
(cd "$src" && CGO_ENABLED=0 nice -n 19 "$GO" build -trimpath -mod=mod \
    -ldflags "-s -w -X $pkg.Version=$TRAEFIK_VERSION -X $pkg.Codename=tapedeck-test" \
    -o "$tmp/out/traefik" ./cmd/traefik)
rm -rf "$DEST"
mv "$tmp/out" "$DEST"
echo "--- built traefik in $((SECONDS - start)) s: $(du -sh "$DEST" | cut -f1)" >&2
echo "$DEST"
