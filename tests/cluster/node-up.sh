#!/usr/bin/env bash
# Starts a real single-node Kubernetes for the cluster suite in the scratch directory $1:
# etcd, kube-apiserver, kube-controller-manager (build-tools.sh's binaries), kube-scheduler,
# containerd v2 + Debian's runc, kubelet, kube-proxy (iptables mode), a bridge CNI and CoreDNS
# (build-node.sh's), then imports the given docker-archives into containerd.
#
#   tests/cluster/node-up.sh DIR [ARCHIVE...]     (root; the caller holds the node lock)
#
# Every process runs in the background with its PID in DIR/pid/<name>; node-down.sh DIR ends
# them by PID and removes what this script added to the machine. Nothing leaves the machine:
#   - the node's address, 10.250.0.1/32, sits on an empty bridge (kubelet refuses a loopback
#     node IP and this kernel has no dummy interfaces);
#   - pods live on the bridge tdcni0 (10.244.0.0/24) without masquerading, and an iptables
#     FORWARD rule drops whatever they send that does not stay on that bridge;
#   - CoreDNS serves cluster.local only (no upstream), and kubelet hands pods a resolv.conf
#     naming it; the apiserver reaches the kubelet by its InternalIP, never by a hostname.
# Only one such node may run on a machine at a time (fixed addresses, iptables, bridges).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
W="$(mkdir -p "${1:?usage: node-up.sh DIR [ARCHIVE...]}" && cd "$1" && pwd)"
shift
NODE_IP=10.250.0.1 PODS=10.244.0.0/24 SERVICES=10.96.0.0/24 DNS_IP=10.96.0.10 NODE=tapedeck-node
NODE_BRIDGE=tdnode0 POD_BRIDGE=tdcni0
ADMIN_TOKEN=tapedeck-cluster-tests-admin # controlplane.ADMIN_TOKEN

declare -A BIN
while IFS='=' read -r name path; do BIN[$name]=$path; done \
    < <("$HERE/build-tools.sh" --where; "$HERE/build-node.sh" --where)
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy containerd ctr \
    containerd-shim-runc-v2 bridge coredns; do
    [[ -x "${BIN[$b]}" ]] || { echo "missing ${BIN[$b]}: run build-tools.sh and build-node.sh" >&2; exit 1; }
done
for tool in runc iptables conntrack openssl; do
    command -v "$tool" >/dev/null || { echo "missing $tool (Debian package)" >&2; exit 1; }
done
CNI_BIN="$(dirname "${BIN[bridge]}")"
# containerd finds its shim on PATH.
export PATH="$(dirname "${BIN[containerd]}"):$PATH"

mkdir -p "$W"/{pki,cni/net.d,logs,pid,pv,pod-logs}
log() { echo "--- $* ($(date -u +%H:%M:%S))" >&2; }
start() { # start <name> <argv...>: in the background, its PID in pid/<name>
    local name=$1
    shift
    "$@" </dev/null >"$W/logs/$name.log" 2>&1 &
    echo $! >"$W/pid/$name"
}
alive() { kill -0 "$(cat "$W/pid/$1")" 2>/dev/null; }
wait_for() { # wait_for <name of the process> <seconds> <command...>
    local name=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ! alive "$name"; then echo "$name exited:" >&2; tail -30 "$W/logs/$name.log" >&2; exit 1; fi
        if ((SECONDS > deadline)); then echo "$name not ready in $seconds s:" >&2; tail -30 "$W/logs/$name.log" >&2; exit 1; fi
        sleep 0.5
    done
}

# Machine-wide settings the node changes (the bridge CNI turns on IP forwarding, kubelet sets
# its kernel tunables): saved once, node-down.sh puts them back.
SYSCTLS="net.ipv4.ip_forward vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.conf.all.route_localnet"
if [[ ! -f "$W/sysctl.saved" ]]; then
    for key in $SYSCTLS; do
        f="/proc/sys/${key//.//}"
        [[ -f "$f" ]] && echo "$key=$(cat "$f")"
    done >"$W/sysctl.saved"
fi

log "network"
if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
    ip addr add "$NODE_IP/32" dev "$NODE_BRIDGE"
    ip link set "$NODE_BRIDGE" up
fi
iptables -C FORWARD -s 10.244.0.0/16 ! -o "$POD_BRIDGE" -j DROP 2>/dev/null ||
    iptables -I FORWARD 1 -s 10.244.0.0/16 ! -o "$POD_BRIDGE" -j DROP

log "control plane"
[[ -f "$W/pki/sa.key" ]] || openssl genrsa -out "$W/pki/sa.key" 2048 2>/dev/null
printf '%s\n' "$ADMIN_TOKEN,admin,admin,\"system:masters\"" \
    "tapedeck-node-token,system:node:$NODE,$NODE,\"system:nodes\"" \
    "tapedeck-proxy-token,system:kube-proxy,kube-proxy" >"$W/tokens.csv"
kubeconfig() { # kubeconfig <file> <token>
    cat >"$1" <<K
apiVersion: v1
kind: Config
clusters: [{name: node, cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$W/pki/apiserver.crt"}}]
users: [{name: user, user: {token: $2}}]
contexts: [{name: node, context: {cluster: node, user: user}}]
current-context: node
K
    chmod 600 "$1"
}
kubeconfig "$W/admin.kubeconfig" "$ADMIN_TOKEN"
# The aggregation layer's front proxy: the API server presents this client certificate to
# extension API servers (metrics-server), which trust its X-Remote-User headers by this CA.
if [[ ! -f "$W/pki/front-proxy-client.crt" ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=front-proxy-ca \
        -keyout "$W/pki/front-proxy-ca.key" -out "$W/pki/front-proxy-ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=front-proxy-client \
        -keyout "$W/pki/front-proxy-client.key" -out "$W/pki/front-proxy-client.csr" 2>/dev/null
    openssl x509 -req -days 2 -in "$W/pki/front-proxy-client.csr" -CA "$W/pki/front-proxy-ca.crt" \
        -CAkey "$W/pki/front-proxy-ca.key" -CAcreateserial -out "$W/pki/front-proxy-client.crt" \
        -extfile <(echo extendedKeyUsage=clientAuth) 2>/dev/null
fi
kubeconfig "$W/node.kubeconfig" tapedeck-node-token
kubeconfig "$W/proxy.kubeconfig" tapedeck-proxy-token

start etcd "${BIN[etcd]}" --name=node --data-dir="$W/etcd" --listen-client-urls=http://127.0.0.1:2379 \
    --advertise-client-urls=http://127.0.0.1:2379 --listen-peer-urls=http://127.0.0.1:2380 \
    --initial-advertise-peer-urls=http://127.0.0.1:2380 --initial-cluster=node=http://127.0.0.1:2380 \
    --unsafe-no-fsync --log-level=warn
wait_for etcd 30 curl -sf http://127.0.0.1:2379/health
start kube-apiserver "${BIN[kube-apiserver]}" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 --cert-dir="$W/pki" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$W/pki/sa.key" --service-account-signing-key-file="$W/pki/sa.key" \
    --service-cluster-ip-range="$SERVICES" --authorization-mode=Node,RBAC --token-auth-file="$W/tokens.csv" \
    --enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement \
    --allow-privileged=false --kubelet-preferred-address-types=InternalIP \
    --requestheader-client-ca-file="$W/pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- --enable-aggregator-routing=true \
    --proxy-client-cert-file="$W/pki/front-proxy-client.crt" --proxy-client-key-file="$W/pki/front-proxy-client.key"
wait_for kube-apiserver 120 curl -sf --cacert "$W/pki/apiserver.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://$NODE_IP:6443/readyz"
common=(--kubeconfig="$W/admin.kubeconfig" --authentication-kubeconfig="$W/admin.kubeconfig"
    --authorization-kubeconfig="$W/admin.kubeconfig" --leader-elect=false --bind-address=127.0.0.1)
start kube-controller-manager "${BIN[kube-controller-manager]}" "${common[@]}" --secure-port=10257 \
    --service-account-private-key-file="$W/pki/sa.key" --root-ca-file="$W/pki/apiserver.crt" \
    --use-service-account-credentials=false
start kube-scheduler "${BIN[kube-scheduler]}" "${common[@]}" --secure-port=10259

log "containerd"
cat >"$W/cni/net.d/10-pods.conflist" <<J
{"cniVersion": "1.0.0", "name": "pods", "plugins": [
  {"type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$PODS"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$W/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
J
PAUSE_IMAGE=""
for archive in "$@"; do
    case "$(basename "$archive")" in pause-*) PAUSE_IMAGE="localhost/pause:$(basename "$archive" .tar | sed 's/^pause-//')" ;; esac
done
[[ -n "$PAUSE_IMAGE" ]] || { echo "no pause-<key>.tar among the archives" >&2; exit 1; }
cat >"$W/containerd.toml" <<T
version = 3
root = '$W/containerd/root'
state = '$W/containerd/state'
[grpc]
  address = '$W/containerd.sock'
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '$PAUSE_IMAGE'
[plugins.'io.containerd.cri.v1.runtime']
  # root here lacks CAP_SYS_RESOURCE: runc cannot give the sandbox an oom_score_adj of -998.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = '$(command -v runc)'
  Root = '$W/containerd/runc'
  SystemdCgroup = false
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['$CNI_BIN']
  conf_dir = '$W/cni/net.d'
T
start containerd "${BIN[containerd]}" --config "$W/containerd.toml"
wait_for containerd 30 test -S "$W/containerd.sock"
ctr() { "${BIN[ctr]}" --address "$W/containerd.sock" -n k8s.io "$@"; }
wait_for containerd 30 ctr version
for archive in "$@"; do
    log "import $(basename "$archive")"
    ctr images import "$archive" >/dev/null
done

log "kubelet, kube-proxy"
echo "nameserver $DNS_IP" >"$W/resolv.conf"
cat >"$W/kubelet.yaml" <<Y
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$W/containerd.sock
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: $W/resolv.conf
failSwapOn: false
podLogsDir: $W/pod-logs
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
Y
start kubelet "${BIN[kubelet]}" --config="$W/kubelet.yaml" --kubeconfig="$W/node.kubeconfig" \
    --hostname-override="$NODE" --node-ip="$NODE_IP" --root-dir="$W/kubelet"
cat >"$W/kube-proxy.yaml" <<Y
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $W/proxy.kubeconfig}
mode: iptables
clusterCIDR: 10.244.0.0/16
hostnameOverride: $NODE
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0}
Y
start kube-proxy "${BIN[kube-proxy]}" --config="$W/kube-proxy.yaml"

log "CoreDNS"
COREDNS_IMAGE=""
for archive in "$@"; do
    case "$(basename "$archive")" in coredns-*) COREDNS_IMAGE="localhost/coredns:$(basename "$archive" .tar | sed 's/^coredns-//')" ;; esac
done
[[ -n "$COREDNS_IMAGE" ]] || { echo "no coredns-<key>.tar among the archives" >&2; exit 1; }
api() { # api <method> <path> [body]
    curl -sf --cacert "$W/pki/apiserver.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' -X "$1" "https://$NODE_IP:6443$2" ${3:+--data-binary "$3"}
}
python3 - "$HERE/coredns.json" "$COREDNS_IMAGE" "$DNS_IP" >"$W/coredns.objects" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
paths = {"ServiceAccount": "/api/v1/namespaces/kube-system/serviceaccounts",
         "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
         "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
         "ConfigMap": "/api/v1/namespaces/kube-system/configmaps",
         "Deployment": "/apis/apps/v1/namespaces/kube-system/deployments",
         "Service": "/api/v1/namespaces/kube-system/services"}
for item in doc["items"]:
    if item["kind"] == "Deployment":
        item["spec"]["template"]["spec"]["containers"][0]["image"] = sys.argv[2]
    if item["kind"] == "Service":
        item["spec"]["clusterIP"] = sys.argv[3]
    print(paths[item["kind"]], json.dumps(item))
PY
while read -r path body; do api POST "$path" "$body" >/dev/null; done <"$W/coredns.objects"

log "waiting for the node"
node_ready() {
    api GET "/api/v1/nodes/$NODE" | python3 -c '
import json, sys
s = json.load(sys.stdin).get("status") or {}
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", [])) else 1)'
}
wait_for kubelet 120 node_ready
dns_ready() {
    api GET /apis/apps/v1/namespaces/kube-system/deployments/coredns | python3 -c '
import json, sys
sys.exit(0 if (json.load(sys.stdin).get("status") or {}).get("readyReplicas") == 1 else 1)'
}
wait_for kubelet 120 dns_ready
log "node $NODE Ready"
