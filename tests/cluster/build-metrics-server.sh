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
set -euo pipefail
MODULE=sigs.k8s.io/metrics-server
VERSION=v0.9.0
CACHE="${TAPEDECK_METRICS_SERVER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/metrics-server}"
DEST="$CACHE/metrics-server-$VERSION"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

if [[ -x "$DEST/metrics-server" ]]; then
    echo "$DEST"
    exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
    echo "missing: metrics-server ($DEST)" >&2
    exit 1
fi

mkdir -p "$CACHE"
tmp="$DEST.tmp.$$"
src="$tmp/src"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
start=$SECONDS
echo "--- $("$GO" version); building metrics-server $VERSION into $DEST ($(date -u +%H:%M:%S))" >&2
dir="$(cd "$tmp" && GOFLAGS=-mod=mod "$GO" mod download -json "$MODULE@$VERSION" |
    awk -F'"' '$2 == "Dir" {print $4}')"
cp -r "$dir" "$src"
chmod -R u+w "$src"
(cd "$src" && CGO_ENABLED=0 nice -n 19 "$GO" build -trimpath -mod=mod \
    -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$VERSION" \
    -o "$tmp/out/metrics-server" ./cmd/metrics-server)
rm -rf "$DEST"
mv "$tmp/out" "$DEST"
echo "--- built metrics-server in $((SECONDS - start)) s: $(du -sh "$DEST" | cut -f1)" >&2
echo "$DEST"
