#!/usr/bin/env bash
# Builds geckodriver (Selenium's driver for Firefox; the browser suite's Firefox tests use it)
# with `cargo install` from the crate registry, at a pinned version, cached outside the
# repository under
#   ${TAPEDECK_GECKODRIVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/geckodriver}/<version>-<profile>/bin/
# so only a cold machine pays for the build (see docs/development.md); a warm run returns at
# once. The cache directory appears (by rename) only once its build finished. The build runs
# under `nice -n 19`.
#
# It is a test driver that forwards a few WebDriver commands to Firefox: its speed does not
# matter, its build time does. The release profile is overridden to skip optimisation
# (PROFILE below; the default opt-level 3 build took 22 to 32 minutes on two busy cores). The
# cache directory is keyed by that profile, so changing it builds a new binary once.
#
# geckodriver 0.37.1 is edition 2024 and its locked dependencies need Rust >= 1.86: the
# machine's rustup toolchain (~/.cargo/bin) builds it; Debian bookworm's cargo (rustc 1.63)
# is too old for it (and for any geckodriver that drives Firefox 153 ESR).
#
#   tests/browser/build-geckodriver.sh            build if missing, print the binary's path
#   tests/browser/build-geckodriver.sh --check    exit 1 (and build nothing) if it is missing
set -euo pipefail
VERSION=0.37.1
NEEDS_RUST=1.86
CACHE="${TAPEDECK_GECKODRIVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/geckodriver}"
# cargo's release profile, overridden through its environment (and part of the cache key).
PROFILE=(CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_LTO=false
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_INCREMENTAL=false)
PROFILE_KEY="$(printf '%s\n' "${PROFILE[@]}" | sha256sum | cut -c1-8)"
DEST="$CACHE/$VERSION-$PROFILE_KEY"
BIN="$DEST/bin/geckodriver"

if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
    echo "missing: geckodriver $VERSION ($BIN)" >&2
    exit 1
fi

export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || { echo "building geckodriver needs cargo (rustup)" >&2; exit 1; }
rust="$(rustc --version | awk '{print $2}')"
if [[ "$(printf '%s\n%s\n' "$NEEDS_RUST" "$rust" | sort -V | head -1)" != "$NEEDS_RUST" ]]; then
    echo "geckodriver $VERSION needs Rust >= $NEEDS_RUST, this machine's rustc is $rust" >&2
    exit 1
fi

tmp="$DEST.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
echo "--- building geckodriver $VERSION into $DEST ($(date -u +%H:%M:%S), rustc $rust)" >&2
start=$SECONDS
env "${PROFILE[@]}" CARGO_TARGET_DIR="$tmp/target" nice -n 19 cargo install --quiet --locked \
    --version "$VERSION" --root "$tmp/root" geckodriver >&2
mkdir -p "$tmp/out/bin"
mv "$tmp/root/bin/geckodriver" "$tmp/out/bin/geckodriver"
rm -rf "$DEST"
mv "$tmp/out" "$DEST"
echo "--- geckodriver $VERSION built in $((SECONDS - start)) s" >&2
echo "$BIN"
