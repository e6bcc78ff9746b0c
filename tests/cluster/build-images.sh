#!/usr/bin/env bash
# Builds the images the cluster suite's real node runs, without a registry, and saves each as a
# docker-archive that node-up.sh imports into containerd (the chart then runs them with
# imagePullPolicy Never):
#   - Debian base images made with mmdebstrap from the machine's apt sources (Python 3.11, and
#     Node with the machine's own node/npm), standing in for the public python/node images;
#   - the two targets of docker/Dockerfile (service, compile), built UNCHANGED by `buildah bud`
#     through its PYTHON_IMAGE/NODE_IMAGE build args;
#   - a FROM-scratch pause image and a slim CoreDNS one from build-node.sh's binaries.
# Each archive is cached under
#   ${TAPEDECK_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/images}/<name>-<key>.tar
# where <key> hashes every input of the image (the Dockerfile, pyproject.toml, any lock file, the
# sources and the frontend for the targets; this script and the binary for the others), so a
# warm run builds nothing and a change rebuilds only what it touches.
#
#   tests/cluster/build-images.sh            build what is missing; print "name=archive" lines
#   tests/cluster/build-images.sh --check    exit 1 (and build nothing) if anything is missing
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${TAPEDECK_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tapedeck/images}"
export CONTAINERS_CONF="$HERE/containers.conf"
SUITE=bookworm

sha() { sha256sum | cut -c1-16; }
# The build context as docker/.dockerignore lets it through, plus the Dockerfile and lock files.
context_key() {
    (
        cd "$REPO"
        {
            printf '%s\n' docker/Dockerfile .dockerignore pyproject.toml
            find . -maxdepth 2 \( -name '*.lock' -o -name 'requirements*.txt' \) -path './docker/*' -printf '%P\n'
            find . -maxdepth 1 \( -name '*.lock' -o -name 'requirements*.lock' \) -printf '%P\n'
            find services operator frontend \
                \( -name node_modules -o -name out -o -name .next -o -name __pycache__ \) -prune \
                -o -type f ! -name '*.pyc' -print
        } | sort -u | while read -r f; do [[ -f "$f" ]] && sha256sum "$f"; done
    ) | sha
}
script_key() { { sed -n '/^# base:begin/,/^# base:end/p' "$0"; echo "$SUITE $*"; } | sha; }

# base:begin -- the inputs of the base images (hashed into their key)
base_python() {
    mmdebstrap --variant=minbase --include=ca-certificates,python3,python3-venv,python-is-python3 \
        --customize-hook='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/locale/*' \
        "$SUITE" "$1"
}
base_node() {
    mmdebstrap --variant=minbase --include=ca-certificates,libstdc++6 \
        --customize-hook='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/locale/*' \
        --customize-hook='copy-in /usr/bin/node /usr/local/bin' --customize-hook='mkdir -p "$1"/usr/local/lib' \
        --customize-hook='copy-in /usr/lib/node_modules /usr/local/lib' \
        --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1"/usr/local/bin/npm' \
        --customize-hook='ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1"/usr/local/bin/npx' \
        "$SUITE" "$1"
}
# base:end

NODE_VERSION="$(node --version)"
where() { "$HERE/build-node.sh" --where | sed -n "s/^$1=//p"; }
PAUSE="$(where pause)"
COREDNS="$(where coredns)"
CONTEXT="$(context_key)"
PY_KEY="$(script_key python)"
NODE_KEY="$(script_key node "$NODE_VERSION")"
TARGET_KEY="$(echo "$CONTEXT $PY_KEY $NODE_KEY" | sha)"
images() { # sets IMAGES: name|tag|archive of each image (pause, CoreDNS: keyed on build-node.sh's binaries)
    local pause_key coredns_key
    pause_key="$( ([[ -f "$PAUSE" ]] && sha <"$PAUSE") || echo missing)"
    coredns_key="$( ([[ -f "$COREDNS" ]] && sha <"$COREDNS") || echo missing)"
    IMAGES=(
        "tapedeck|localhost/tapedeck:$TARGET_KEY|$CACHE/tapedeck-$TARGET_KEY.tar"
        "tapedeck-compile|localhost/tapedeck-compile:$TARGET_KEY|$CACHE/tapedeck-compile-$TARGET_KEY.tar"
        "pause|localhost/pause:$pause_key|$CACHE/pause-$pause_key.tar"
        "coredns|localhost/coredns:$coredns_key|$CACHE/coredns-$coredns_key.tar"
    )
}
images

if [[ "${1:-}" == "--check" ]]; then
    status=0
    for i in "${IMAGES[@]}"; do
        IFS='|' read -r name tag archive <<<"$i"
        [[ -f "$archive" ]] || { echo "missing: $name ($archive)" >&2; status=1; }
    done
    exit $status
fi

mkdir -p "$CACHE"
exists() { podman image exists "$1"; }
save() { # save <tag> <archive>: atomically
    podman save --format docker-archive -o "$2.tmp.$$" "$1"
    mv "$2.tmp.$$" "$2"
}

base() { # base <kind> <tag> [import --change args...]
    local kind=$1 tag=$2
    shift 2
    exists "$tag" && return 0
    local start=$SECONDS tmp
    tmp="$(mktemp -d)"
    echo "--- base image $tag ($(date -u +%H:%M:%S))" >&2
    (renice -n 19 "$BASHPID" >/dev/null && "base_$kind" "$tmp/root.tar") >&2
    podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        "$@" "$tmp/root.tar" "$tag" >/dev/null
    rm -rf "$tmp"
    echo "--- base image $tag in $((SECONDS - start)) s" >&2
}

PY_BASE="localhost/tapedeck-base/python:3.11-$PY_KEY"
NODE_BASE="localhost/tapedeck-base/node:${NODE_VERSION#v}-$NODE_KEY"
for i in "${IMAGES[@]:0:2}"; do
    IFS='|' read -r name tag archive <<<"$i"
    [[ -f "$archive" ]] && continue
    if ! exists "$tag"; then
        base python "$PY_BASE"
        # The registry traffic of npm inside the build goes through the machine's TLS proxy.
        base node "$NODE_BASE" --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt'
        target=$([[ $name == tapedeck ]] && echo service || echo compile)
        start=$SECONDS
        echo "--- buildah bud --target $target -t $tag ($(date -u +%H:%M:%S))" >&2
        # The machine's CA bundle, for pip and npm behind a TLS-intercepting proxy.
        nice -n 19 buildah bud --network=host --layers -f "$REPO/docker/Dockerfile" \
            -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
            --build-arg PYTHON_IMAGE="$PY_BASE" --build-arg NODE_IMAGE="$NODE_BASE" \
            --target "$target" -t "$tag" "$REPO" >&2
        echo "--- built $tag in $((SECONDS - start)) s" >&2
    fi
    save "$tag" "$archive"
done

scratch() { # scratch <tag> <archive> <binary> <user>: a FROM scratch image of one static binary
    [[ -f "$2" ]] && return 0
    [[ -x "$3" ]] || { echo "$3 missing: run tests/cluster/build-node.sh" >&2; exit 1; }
    if ! exists "$1"; then
        local dir
        dir="$(mktemp -d)"
        cp "$3" "$dir/"
        printf 'FROM scratch\nCOPY %s /%s\nUSER %s\nENTRYPOINT ["/%s"]\n' \
            "$(basename "$3")" "$(basename "$3")" "$4" "$(basename "$3")" >"$dir/Containerfile"
        buildah bud -q -t "$1" "$dir" >&2
        rm -rf "$dir"
    fi
    save "$1" "$2"
}
images
IFS='|' read -r _ tag archive <<<"${IMAGES[2]}"
scratch "$tag" "$archive" "$PAUSE" 65535:65535
IFS='|' read -r _ tag archive <<<"${IMAGES[3]}"
scratch "$tag" "$archive" "$COREDNS" 65532:65532

for i in "${IMAGES[@]}"; do
    IFS='|' read -r name tag archive <<<"$i"
    echo "$name=$tag=$archive"
done
