# Shared by build-traefik.sh, build-netpol.sh and build-metrics-server.sh (sourced): builds a Go
# module as the main module (its own go.mod, replaces and go.sum apply) from a scratch copy of
# what the module proxy serves (checked against the checksum database like any module), under
# `nice -n 19`, into a cache directory that appears (by rename) only once the build finished.

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

# build_main_module <binary> <module> <version> <dest dir> <package> <ldflags> [mode]
#   mode "":           build if missing; print the cache directory
#   mode --check:      exit 1 (and build nothing) if it is missing
#   mode --where:      print the binary's path (built or not)
#   mode --download:   only download the modules the build needs (CI overlaps this with builds)
build_main_module() {
    local binary=$1 module=$2 version=$3 dest=$4 package=$5 ldflags=$6 mode=${7:-}
    if [[ "$mode" == "--where" ]]; then
        echo "$dest/$binary"
        exit 0
    fi
    if [[ -x "$dest/$binary" ]]; then
        echo "$dest"
        exit 0
    fi
    if [[ "$mode" == "--check" ]]; then
        echo "missing: $binary ($dest)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$dest")"
    tmp="$dest.tmp.$$"  # global: the EXIT trap removes it
    trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
    rm -rf "$tmp"
    mkdir -p "$tmp"
    local start=$SECONDS src="$tmp/src" dir doing=building
    [[ "$mode" == "--download" ]] && doing="fetching the modules of"
    echo "--- $("$GO" version); $doing $binary $version for $dest ($(date -u +%H:%M:%S))" >&2
    dir="$(cd "$tmp" && GOFLAGS=-mod=mod "$GO" mod download -json "$module@$version" |
        awk -F'"' '$2 == "Dir" {print $4}')"
    cp -r "$dir" "$src"
    chmod -R u+w "$src"
    if [[ "$mode" == "--download" ]]; then
        # Loading the packages fetches exactly the modules `go build` would, and compiles nothing.
        (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" list -deps "$package" >/dev/null)
        echo "--- $binary $version: modules downloaded in $((SECONDS - start)) s" >&2
        exit 0
    fi
    (cd "$src" && CGO_ENABLED=0 nice -n 19 "$GO" build -trimpath -mod=mod -ldflags "$ldflags" \
        -o "$tmp/out/$binary" "$package")
    rm -rf "$dest"
    mv "$tmp/out" "$dest"
    echo "--- built $binary in $((SECONDS - start)) s: $(du -sh "$dest" | cut -f1)" >&2
    echo "$dest"
}
