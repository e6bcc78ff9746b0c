#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (the S3 server the tests run: `weed mini`) from its Go module, pinned
# below, with the machine's Go -- like tests/cluster/build-tools.sh. The binary is cached outside
# the repository under
#   ${TAPEDECK_S3_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/s3-bin}/weed-<version>/weed
# so only a cold machine pays for the build (measured in docs/development.md). Idempotent: the
# cache directory appears (by rename) only once its build finished. Runs under `nice -n 19`.
#
#   tests/s3/build-weed.sh            build it if missing, print the binary's path
#   tests/s3/build-weed.sh --check    exit 1 (and build nothing) if it is missing
set -euo pipefail
MODULE=github.com/seaweedfs/seaweedfs
# The pseudo-version the Go module proxy served on 2026-12-04 (`weed version`: 30GB 4.53).
VERSION=v0.0.0-20261109003541-7506e5f91cd6
CACHE="${TAPEDECK_S3_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/s3-bin}"
DEST="$CACHE/weed-$VERSION"

if [[ -x "$DEST/weed" ]]; then
    echo "$DEST/weed"
    exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
    echo "missing: weed ($DEST)" >&2
    exit 1
fi

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath -mod=mod"
mkdir -p "$CACHE"
tmp="$DEST.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
echo "--- $("$GO" version); building weed $VERSION into $DEST ($(date -u +%H:%M:%S))" >&2
start=$SECONDS
# The module cache is read-only and the module's own go.mod (its replaces) must apply: build in a
# writable copy of the downloaded module.
dir="$(cd "$tmp" && "$GO" mod download -json "$MODULE@$VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -n "$dir" ]] || { echo "go mod download $MODULE@$VERSION failed" >&2; exit 1; }
cp -r "$dir" "$tmp/src"
chmod -R u+w "$tmp/src"
(cd "$tmp/src" && nice -n 19 "$GO" build -ldflags "-s -w" -o "$tmp/bin/weed" ./weed)
rm -rf "$DEST"
mv "$tmp/bin" "$DEST"
echo "--- built weed in $((SECONDS - start)) s: $(du -sh "$DEST/weed" | cut -f1)" >&2
echo "$DEST/weed"
