#!/usr/bin/env bash
# Tears down what node-up.sh DIR started: each process by the PID in DIR/pid/ (SIGTERM, then
# SIGKILL), every container (through containerd, before it stops), then the mounts under DIR,
# the pods' cgroups, the KUBE-* iptables chains, the FORWARD rule and the two bridges.
# Safe to run twice, or after a node-up.sh that failed half-way.
#
#   tests/cluster/node-down.sh DIR
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
W="$(cd "${1:?usage: node-down.sh DIR}" && pwd)" || exit 0
NODE_BRIDGE=tdnode0 POD_BRIDGE=tdcni0

declare -A BIN
while IFS='=' read -r name path; do BIN[$name]=$path; done < <("$HERE/build-node.sh" --where)

stop() { # stop <name>: the process node-up.sh started, by its PID
    local file="$W/pid/$1" pid
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file")"
    # Only if that PID still runs the binary we started (not a recycled PID).
    if kill -0 "$pid" 2>/dev/null && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == *"/$1" ]]; then
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$file"
}

# NetworkPolicy enforcement, if netpol-up.sh started it: its queue rules, then its process.
"$HERE/netpol-down.sh" "$W"
stop kubelet
stop kube-proxy
if [[ -S "$W/containerd.sock" ]] && [[ -f "$W/pid/containerd" ]]; then
    ctr() { timeout 30 "${BIN[ctr]}" --address "$W/containerd.sock" -n k8s.io "$@"; }
    # Every container's task is killed and deleted (its shim then exits), then the container.
    for t in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill -s SIGKILL "$t" 2>/dev/null; done
    for t in $(ctr tasks ls -q 2>/dev/null); do ctr tasks delete -f "$t" >/dev/null 2>&1; done
    for c in $(ctr containers ls -q 2>/dev/null); do ctr containers rm "$c" >/dev/null 2>&1; done
fi
stop containerd
# A shim that outlived containerd: only those serving this node's state directory.
for pid in $(pgrep -x containerd-shim-runc-v2 2>/dev/null); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-address $W/containerd.sock"; then
        kill -9 "$pid" 2>/dev/null
    fi
done
"${BIN[kube-proxy]}" --cleanup >/dev/null 2>&1
# kube-proxy's chains and kubelet's KUBE-FIREWALL / KUBE-KUBELET-CANARY, and the jumps to them.
for cmd in iptables ip6tables; do
    for table in filter nat mangle; do
        "$cmd" -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -v '^-A KUBE-' |
            sed 's/^-A //' | while read -r rule; do eval "$cmd -t $table -D $rule"; done
        chains="$("$cmd" -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}')"
        for c in $chains; do "$cmd" -t "$table" -F "$c"; done
        for c in $chains; do "$cmd" -t "$table" -X "$c"; done
    done
done
iptables -D FORWARD -s 10.244.0.0/16 ! -o "$POD_BRIDGE" -j DROP 2>/dev/null
stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd
# Mounts under DIR (pod volumes, network namespaces, snapshots), deepest first.
awk -v w="$W" 'index($2, w "/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
done
# The pods' cgroups (kubelet's cgroupfs driver puts them under kubepods in every hierarchy).
for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$c" ]] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
done
ip link del "$POD_BRIDGE" 2>/dev/null
ip link del "$NODE_BRIDGE" 2>/dev/null
# The machine-wide settings node-up.sh found.
if [[ -f "$W/sysctl.saved" ]]; then
    while IFS='=' read -r key value; do echo "$value" >"/proc/sys/${key//.//}"; done <"$W/sysctl.saved"
fi
true
