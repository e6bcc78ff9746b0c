#!/usr/bin/env bash
# Builds the binaries the cluster tests run -- etcd, kube-apiserver, kube-controller-manager and
# helm -- from the Go modules pinned in tests/cluster/tools/<tool>/go.mod (+ go.sum), with the
# machine's Go. Each result is cached outside the repository under
#   ${TAPEDECK_CLUSTER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/cluster-bin}/<tool>-<version>/
# so only a cold machine pays for the build; a warm run returns at once. Idempotent: a cache
# directory appears (by rename) only once its build finished. The builds run under `nice -n 19`.
#
#   tests/cluster/build-tools.sh            build what is missing, print the cache directory
#   tests/cluster/build-tools.sh --check    exit 1 (and build nothing) if anything is missing
#   tests/cluster/build-tools.sh --where    print "binary=path" of every binary (built or not)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
TOOLS="$HERE/tools"
CACHE="${TAPEDECK_CLUSTER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/cluster-bin}"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath -mod=mod"

# version <tools dir> <module>: the version its go.mod requires (no network, no go command).
version() { awk -v m="$2" '$1 == "require" && $2 == m {print $3} $1 == m && $2 ~ /^v/ {print $2}' "$TOOLS/$1/go.mod" | head -1; }

K8S_VERSION="$(version kubernetes k8s.io/kubernetes)"
ETCD_VERSION="$(version etcd go.etcd.io/etcd/server/v3)"
HELM_VERSION="$(version helm helm.sh/helm/v3)"
GATEWAY_VERSION="$(version gateway-api sigs.k8s.io/gateway-api)"
KEDA_VERSION="$(version keda github.com/kedacore/keda/v2)"

# name|dir|version|binaries
WANT=(
    "etcd|$CACHE/etcd-$ETCD_VERSION|etcd"
    "helm|$CACHE/helm-$HELM_VERSION|helm"
    "kubernetes|$CACHE/kubernetes-$K8S_VERSION|kube-apiserver kube-controller-manager"
    "gateway-api|$CACHE/gateway-api-$GATEWAY_VERSION|httproutes.yaml"
    "keda|$CACHE/keda-$KEDA_VERSION|scaledobjects.yaml"
)

# shellcheck source=tests/cluster/cache-lib.sh
. "$HERE/cache-lib.sh"
answer_queries "$@"

build() { # build <name> <dest dir> <ldflags> <tags> <packages...>
    local name=$1 dest=$2 ldflags=$3 tags=$4
    shift 4
    local tmp="$dest.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    echo "--- building $name into $dest ($(date -u +%H:%M:%S))" >&2
    local start=$SECONDS
    (cd "$TOOLS/$name" && nice -n 19 "$GO" build -tags "$tags" -ldflags "$ldflags" -o "$tmp/" "$@")
    # go names the binary of go.etcd.io/etcd/server/v3 after "server".
    if [[ -e "$tmp/server" ]]; then mv "$tmp/server" "$tmp/etcd"; fi
    rm -rf "$dest"
    mv "$tmp" "$dest"
    echo "--- built $name in $((SECONDS - start)) s: $(du -sh "$dest" | cut -f1)" >&2
}

mkdir -p "$CACHE"
echo "--- $("$GO" version)" >&2

if missing "$CACHE/etcd-$ETCD_VERSION" etcd; then
    build etcd "$CACHE/etcd-$ETCD_VERSION" "-s -w" "" go.etcd.io/etcd/server/v3
fi

if missing "$CACHE/helm-$HELM_VERSION" helm; then
    # Helm's Makefile sets the Kubernetes version it assumes from its client-go (v0.N -> 1.N).
    cg="$(cd "$TOOLS/helm" && "$GO" list -m -f '{{.Version}}' k8s.io/client-go)"
    cg_minor="$(echo "$cg" | cut -d. -f2)"
    h=helm.sh/helm/v3
    build helm "$CACHE/helm-$HELM_VERSION" \
        "-s -w -X $h/internal/version.version=$HELM_VERSION -X $h/internal/version.gitTreeState=clean \
         -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$cg_minor \
         -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$cg_minor" \
        "" "$h/cmd/helm"
fi

if missing "$CACHE/kubernetes-$K8S_VERSION" kube-apiserver kube-controller-manager; then
    # As upstream's hack/lib/version.sh does; without it /version says v0.0.0-master.
    major="$(echo "${K8S_VERSION#v}" | cut -d. -f1)"
    minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
    ld="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    build kubernetes "$CACHE/kubernetes-$K8S_VERSION" "$ld" "selinux,notest,grpcnotrace" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
fi

if missing "$CACHE/gateway-api-$GATEWAY_VERSION" httproutes.yaml; then
    # Not built: the HTTPRoute CRD is a file of the pinned module (checked against go.sum).
    dir="$(cd "$TOOLS/gateway-api" && "$GO" mod download -json sigs.k8s.io/gateway-api |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    mkdir -p "$CACHE/gateway-api-$GATEWAY_VERSION.tmp.$$"
    cp "$dir/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml" \
        "$CACHE/gateway-api-$GATEWAY_VERSION.tmp.$$/httproutes.yaml"
    rm -rf "$CACHE/gateway-api-$GATEWAY_VERSION"
    mv "$CACHE/gateway-api-$GATEWAY_VERSION.tmp.$$" "$CACHE/gateway-api-$GATEWAY_VERSION"
    echo "--- gateway-api $GATEWAY_VERSION: HTTPRoute CRD copied" >&2
fi

if missing "$CACHE/keda-$KEDA_VERSION" scaledobjects.yaml; then
    # KEDA's own ScaledObject CRD, from its Go module (the chart's keda.enabled renders one).
    dir="$(cd "$TOOLS/keda" && "$GO" mod download -json github.com/kedacore/keda/v2 |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    mkdir -p "$CACHE/keda-$KEDA_VERSION.tmp.$$"
    cp "$dir/config/crd/bases/keda.sh_scaledobjects.yaml" \
        "$CACHE/keda-$KEDA_VERSION.tmp.$$/scaledobjects.yaml"
    rm -rf "$CACHE/keda-$KEDA_VERSION"
    mv "$CACHE/keda-$KEDA_VERSION.tmp.$$" "$CACHE/keda-$KEDA_VERSION"
    echo "--- keda $KEDA_VERSION: ScaledObject CRD copied" >&2
fi

echo "$CACHE"
