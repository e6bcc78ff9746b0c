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

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

if [[ "${1:-}" == "--where" ]]; then
    echo "$DEST/kube-network-policies"
    exit 0
fi
if [[ -x "$DEST/kube-network-policies" ]]; then
    echo "$DEST"
    exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
    echo "missing: kube-network-policies ($DEST)" >&2
    exit 1
fi

mkdir -p "$CACHE"
tmp="$DEST.tmp.$$"
src="$tmp/src"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
start=$SECONDS
echo "--- $("$GO" version); building kube-network-policies $NETPOL_VERSION into $DEST ($(date -u +%H:%M:%S))" >&2
dir="$(cd "$tmp" && GOFLAGS=-mod=mod "$GO" mod download -json "$NETPOL_MODULE@$NETPOL_VERSION" |
    awk -F'"' '$2 == "Dir" {print $4}')"
cp -r "$dir" "$src"
chmod -R u+w "$src"
(cd "$src" && CGO_ENABLED=0 nice -n 19 "$GO" build -trimpath -mod=mod -ldflags "-s -w" \
    -o "$tmp/out/kube-network-policies" ./cmd)
rm -rf "$DEST"
mv "$tmp/out" "$DEST"
echo "--- built kube-network-policies in $((SECONDS - start)) s: $(du -sh "$DEST" | cut -f1)" >&2
echo "$DEST"
