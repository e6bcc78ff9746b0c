#!/usr/bin/env bash
# Undoes netpol-up.sh DIR: the queue rules first (with nobody reading the queue they would drop
# every new pod connection), then kube-network-policies by the PID in DIR/pid/. The
# ServiceAccount and its RBAC stay with the node (node-down.sh ends it). Safe to run twice.
#
#   tests/cluster/netpol-down.sh DIR
set -uo pipefail
W="$(cd "${1:?usage: netpol-down.sh DIR}" && pwd)" || exit 0
CHAIN=TAPEDECK-NETPOL

while iptables -t mangle -D POSTROUTING -j "$CHAIN" 2>/dev/null; do :; done
iptables -t mangle -F "$CHAIN" 2>/dev/null
iptables -t mangle -X "$CHAIN" 2>/dev/null

file="$W/pid/kube-network-policies"
if [[ -f "$file" ]]; then
    pid="$(cat "$file")"
    # Only if that PID still runs the binary we started (not a recycled PID).
    if kill -0 "$pid" 2>/dev/null && [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */kube-network-policies ]]; then
        kill "$pid" # it handles SIGINT only; SIGTERM ends it at once
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$file"
fi
true
