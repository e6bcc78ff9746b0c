#!/usr/bin/env bash
# Enforces NetworkPolicies on the real node that node-up.sh DIR started (its bridge CNI ignores
# them): runs kube-network-policies (build-netpol.sh) as a host process with its own
# ServiceAccount, and sends every new connection to or from a pod through its nfqueue.
#
#   tests/cluster/netpol-up.sh DIR     (root; the caller holds the node lock)
#
# kube-network-policies installs its queue rules with nftables' `queue` statement, which this
# kernel lacks (CONFIG_NFT_QUEUE is not set: `nft add rule ... queue num 100` fails with "No
# such file or directory"); its attempt fails as a whole and changes nothing. The kernel does
# have the xtables NFQUEUE target (through nft_compat), so this script installs the same rules
# with iptables, in the chain TAPEDECK-NETPOL jumped to from mangle POSTROUTING:
#   - traffic of the node's root user passes (upstream's `meta skuid 0 accept`: kubelet probes,
#     and the tests' own connections from the host);
#   - established and related packets pass (only a connection's first packet is judged);
#   - every other packet from or to the pod network goes to queue 100, where kube-network-
#     policies answers accept or drop. No bypass: with nobody reading the queue, it is dropped
#     (upstream's default, fail closed), so the rules go in only once the queue is bound and go
#     out (netpol-down.sh) before the process stops.
# Upstream queues only the pods that some policy selects (an nftables set); queueing every pod
# gives the same verdicts, since a pod no policy selects is allowed both ways.
# Like upstream's postrouting hook, this does not see what pods send to the node's own address
# (the API server at 10.250.0.1:6443 is local: INPUT, not POSTROUTING).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
W="$(cd "${1:?usage: netpol-up.sh DIR}" && pwd)"
NODE_IP=10.250.0.1 PODS=10.244.0.0/24 NODE=tapedeck-node QUEUE=100 CHAIN=TAPEDECK-NETPOL
ADMIN_TOKEN=tapedeck-cluster-tests-admin # controlplane.ADMIN_TOKEN
BIN="$("$HERE/build-netpol.sh" --where)"
[[ -x "$BIN" ]] || { echo "missing $BIN: run tests/cluster/build-netpol.sh" >&2; exit 1; }
[[ -f "$W/pid/kube-apiserver" ]] || { echo "no node in $W (node-up.sh)" >&2; exit 1; }
log() { echo "--- $* ($(date -u +%H:%M:%S))" >&2; }
api() { # api <method> <path> [body]
    curl -sf --cacert "$W/pki/apiserver.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' -X "$1" "https://$NODE_IP:6443$2" ${3:+--data-binary "$3"}
}

log "kube-network-policies: ServiceAccount, RBAC, token"
# What upstream's install.yaml grants: read pods, namespaces, nodes and NetworkPolicies.
api POST /api/v1/namespaces/kube-system/serviceaccounts \
    '{"metadata": {"name": "kube-network-policies"}}' >/dev/null || true
api POST /apis/rbac.authorization.k8s.io/v1/clusterroles '{"metadata": {"name": "kube-network-policies"},
  "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"], "verbs": ["list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]}]}' \
    >/dev/null || true
api POST /apis/rbac.authorization.k8s.io/v1/clusterrolebindings '{"metadata": {"name": "kube-network-policies"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-network-policies"},
  "subjects": [{"kind": "ServiceAccount", "name": "kube-network-policies", "namespace": "kube-system"}]}' \
    >/dev/null || true
# It only knows the in-cluster configuration: a token and the CA at the well-known path, which
# it sees in a mount namespace of its own (nothing is written to the machine's /run).
SA="$W/netpol/serviceaccount"
mkdir -p "$SA"
api POST /api/v1/namespaces/kube-system/serviceaccounts/kube-network-policies/token \
    '{"spec": {"expirationSeconds": 86400}}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["status"]["token"], end="")' >"$SA/token"
cp "$W/pki/apiserver.crt" "$SA/ca.crt"
echo -n kube-system >"$SA/namespace"
chmod 600 "$SA/token"

log "kube-network-policies"
# unshare (no fork) and sh exec in place: the PID started is the binary's.
KUBERNETES_SERVICE_HOST=$NODE_IP KUBERNETES_SERVICE_PORT=6443 unshare --mount --propagation private \
    sh -c 'mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io &&
           cp -r "$1" /run/secrets/kubernetes.io/serviceaccount && shift && exec "$@"' sh "$SA" \
    "$BIN" --hostname-override="$NODE" --nfqueue-id="$QUEUE" --disable-nri \
    --netfilter-bug-1766-fix=false --metrics-bind-address=127.0.0.1:9080 \
    </dev/null >"$W/logs/kube-network-policies.log" 2>&1 &
echo $! >"$W/pid/kube-network-policies"
# Bound to its queue (listed in /proc/net/netfilter/nfnetlink_queue) only after its informers
# synced, so from then on every verdict knows every policy.
deadline=$((SECONDS + 60))
until awk -v q=$QUEUE '$1 == q {found = 1} END {exit !found}' /proc/net/netfilter/nfnetlink_queue; do
    if ! kill -0 "$(cat "$W/pid/kube-network-policies")" 2>/dev/null; then
        echo "kube-network-policies exited:" >&2; tail -30 "$W/logs/kube-network-policies.log" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then
        echo "kube-network-policies bound no queue in 60 s:" >&2; tail -30 "$W/logs/kube-network-policies.log" >&2
        exit 1
    fi
    sleep 0.5
done

log "queue rules"
iptables -t mangle -N "$CHAIN" 2>/dev/null || iptables -t mangle -F "$CHAIN"
iptables -t mangle -A "$CHAIN" -m owner --uid-owner 0 -j RETURN
iptables -t mangle -A "$CHAIN" -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
iptables -t mangle -A "$CHAIN" -s "$PODS" -j NFQUEUE --queue-num "$QUEUE"
iptables -t mangle -A "$CHAIN" -d "$PODS" -j NFQUEUE --queue-num "$QUEUE"
iptables -t mangle -C POSTROUTING -j "$CHAIN" 2>/dev/null || iptables -t mangle -A POSTROUTING -j "$CHAIN"
log "NetworkPolicies enforced"
