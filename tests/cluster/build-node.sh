#!/usr/bin/env bash
# Builds what the cluster suite's real node runs -- kubelet, kube-scheduler, kube-proxy, containerd
# (+ ctr, runc shim), the CNI plugins, a slim CoreDNS and a static pause -- and the kubectl the
# tests drive it with, from the Go modules
# pinned in tests/cluster/tools/<tool>/go.mod (+ go.sum), with the machine's Go (pause: gcc, from
# the pinned k8s.io/kubernetes module's source). runc, iptables and conntrack are Debian's.
# Each result is cached outside the repository under
#   ${TAPEDECK_NODE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/node-bin}/<tool>-<version>/
# so only a cold machine pays for the build. Idempotent: a cache directory appears (by rename)
# only once its build finished. The builds run under `nice -n 19`.
#
#   tests/cluster/build-node.sh            build what is missing, print the cache directory
#   tests/cluster/build-node.sh --check    exit 1 (and build nothing) if anything is missing
#   tests/cluster/build-node.sh --where    print "binary=path" of every binary (built or not)
#   tests/cluster/build-node.sh --download only download the modules the missing builds need
#                                          (CI overlaps this with the control plane's build)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
TOOLS="$HERE/tools"
CACHE="${TAPEDECK_NODE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/node-bin}"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath -mod=mod"

# version <tools dir> <module>: the version its go.mod requires (no network, no go command).
version() { awk -v m="$2" '$1 == "require" && $2 == m {print $3} $1 == m && $2 ~ /^v/ {print $2}' "$TOOLS/$1/go.mod" | head -1; }

K8S_VERSION="$(version kubernetes k8s.io/kubernetes)"
CONTAINERD_VERSION="$(version containerd github.com/containerd/containerd/v2)"
CNI_VERSION="$(version cni-plugins github.com/containernetworking/plugins)"
COREDNS_VERSION="$(version coredns github.com/coredns/coredns)"

# Build tags. Kubernetes': upstream's, as in build-tools.sh, so a package compiled for one binary
# is reused from Go's build cache by the others (tags are not part of a package's cache key, the
# files they select are; kubectl, built without them, imports none of the packages they change).
# containerd's: without the snapshotters and the tracing exporter the node does not use (btrfs is
# cgo-only anyway; CRI stays): 988 packages instead of 1037. A cache directory whose binaries
# depend on tags of ours is keyed by them (tagkey), so changing them builds new binaries once
# instead of reusing stale ones.
K8S_TAGS="selinux,notest,grpcnotrace"
CONTAINERD_TAGS="urfave_cli_no_docs no_btrfs no_devmapper no_zfs no_tracing"
tagkey() { echo "$*" | sha256sum | cut -c1-8; }

# name|dir|binaries
WANT=(
    "kubernetes|$CACHE/kubernetes-$K8S_VERSION|kubelet kube-scheduler kube-proxy pause"
    "containerd|$CACHE/containerd-$CONTAINERD_VERSION-$(tagkey "$CONTAINERD_TAGS")|containerd ctr containerd-shim-runc-v2"
    "cni-plugins|$CACHE/cni-plugins-$CNI_VERSION|bridge loopback host-local portmap"
    "coredns|$CACHE/coredns-$COREDNS_VERSION|coredns"
    "kubectl|$CACHE/kubectl-$K8S_VERSION|kubectl"
)

# shellcheck source=tests/cluster/cache-lib.sh
. "$HERE/cache-lib.sh"
answer_queries "$@"
FETCH_ONLY=$([[ "${1:-}" == "--download" ]] && echo 1 || true)

build() { # build <tools dir> <dest dir> <ldflags> <tags> <packages...>; leaves "$dest.tmp.$$"
    local name=$1 dest=$2 ldflags=$3 tags=$4
    shift 4
    if [[ -n "$FETCH_ONLY" ]]; then
        # Loading the packages fetches exactly the modules `go build` would, and compiles nothing.
        (cd "$TOOLS/$name" && "$GO" list -deps -tags "$tags" "$@" >/dev/null)
        return
    fi
    local tmp="$dest.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    echo "--- building $name into $dest ($(date -u +%H:%M:%S))" >&2
    (cd "$TOOLS/$name" && nice -n 19 "$GO" build -tags "$tags" -ldflags "$ldflags" -o "$tmp/" "$@")
}

publish() { # publish <dest dir> <start seconds>: the finished build becomes the cache entry
    local dest=$1 start=$2
    [[ -z "$FETCH_ONLY" ]] || return 0
    rm -rf "$dest"
    mv "$dest.tmp.$$" "$dest"
    echo "--- built $(basename "$dest") in $((SECONDS - start)) s: $(du -sh "$dest" | cut -f1)" >&2
}

mkdir -p "$CACHE"
echo "--- $("$GO" version)" >&2

# As upstream's hack/lib/version.sh does (the same flags as build-tools.sh's control plane).
major="$(echo "${K8S_VERSION#v}" | cut -d. -f1)"
minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
K8S_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    K8S_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

dest="$CACHE/kubernetes-$K8S_VERSION"
if missing "$dest" kubelet kube-scheduler kube-proxy pause; then
    start=$SECONDS
    build kubernetes "$dest" "$K8S_LDFLAGS" "$K8S_TAGS" \
        k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
    # The pod sandbox's pause process, from the same module's source, static (a FROM scratch image).
    src="$(cd "$TOOLS/kubernetes" && "$GO" list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
    if [[ -z "$FETCH_ONLY" ]]; then
        nice -n 19 gcc -Os -Wall -Werror -static -DVERSION="$K8S_VERSION-tapedeck" -o "$dest.tmp.$$/pause" "$src"
        strip "$dest.tmp.$$/pause"
    fi
    publish "$dest" $start
fi

dest="$CACHE/containerd-$CONTAINERD_VERSION-$(tagkey "$CONTAINERD_TAGS")"
if missing "$dest" containerd ctr containerd-shim-runc-v2; then
    start=$SECONDS
    build containerd "$dest" "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
        "$CONTAINERD_TAGS" github.com/containerd/containerd/v2/cmd/containerd \
        github.com/containerd/containerd/v2/cmd/ctr github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
    publish "$dest" $start
fi

dest="$CACHE/cni-plugins-$CNI_VERSION"
if missing "$dest" bridge loopback host-local portmap; then
    start=$SECONDS
    p=github.com/containernetworking/plugins/plugins
    build cni-plugins "$dest" "-s -w" "" $p/main/bridge $p/main/loopback $p/ipam/host-local $p/meta/portmap
    publish "$dest" $start
fi

dest="$CACHE/coredns-$COREDNS_VERSION"
if missing "$dest" coredns; then
    start=$SECONDS
    build coredns "$dest" "-s -w" "" .
    publish "$dest" $start
fi

dest="$CACHE/kubectl-$K8S_VERSION"
if missing "$dest" kubectl; then
    start=$SECONDS
    build kubernetes "$dest" "$K8S_LDFLAGS" "" k8s.io/kubernetes/cmd/kubectl
    publish "$dest" $start
fi

echo "$CACHE"
