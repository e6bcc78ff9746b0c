"""The cluster suite's real node: images built, a kubelet on containerd, the chart installed.

node-up.sh starts a single-node Kubernetes (control plane, containerd + runc, kubelet,
kube-proxy, bridge CNI, CoreDNS) in a scratch directory and node-down.sh ends every process it
started by PID; this module runs them under the machine-wide node lock and gives tests a
ControlPlane client for the node's API server, kubectl and helm bound to it, pod logs through
the API server, and a resolver that asks the cluster's DNS.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cluster.controlplane import Binaries, ControlPlane

HERE = Path(__file__).resolve().parent
CHART = HERE.parents[1] / "charts" / "tapedeck"
LOCK = Path("/tmp/tapedeck-realnode.lock")
CURRENT = Path("/tmp/tapedeck-realnode.dir")  # the running node's directory, for a later cleanup
NODE_IP = "10.250.0.1"
NODE_NAME = "tapedeck-node"
DNS_IP = "10.96.0.10"


@dataclass(frozen=True)
class Image:
    name: str
    tag: str
    archive: Path

    @property
    def repository(self) -> str:
        return self.tag.rsplit(":", 1)[0]

    @property
    def version(self) -> str:
        return self.tag.rsplit(":", 1)[1]


def build_images() -> dict[str, Image]:
    """build-images.sh (cached: a warm run only hashes the inputs); name -> image."""
    result = subprocess.run(
        [str(HERE / "build-images.sh")], capture_output=True, text=True, timeout=3600
    )
    if result.returncode != 0:
        raise RuntimeError(f"build-images.sh exited {result.returncode}:\n{result.stderr[-5000:]}")
    images = {}
    for line in result.stdout.splitlines():
        name, tag, archive = line.split("=", 2)
        images[name] = Image(name, tag, Path(archive))
    return images


@contextmanager
def node_lock(timeout: float = 1800) -> Iterator[None]:
    """The machine-wide lock around a node's lifetime (one node per machine)."""
    with open(LOCK, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{LOCK} held for {timeout}s by another node") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class RealNode:
    """A running node: its directory, the admin kubeconfig and clients bound to it."""

    root: Path
    bins: Binaries
    images: dict[str, Image]
    kubectl_binary: Path
    ip: str = NODE_IP
    name: str = NODE_NAME
    cluster: ControlPlane = field(init=False)

    def __post_init__(self) -> None:
        # The API server's self-signed certificate (in pki/) names the node IP.
        self.cluster = ControlPlane(self.root, self.bins, server=f"https://{self.ip}:6443")

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    def env(self) -> dict[str, str]:
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(home / "helm-cache"),
            "HELM_CONFIG_HOME": str(home / "helm-config"),
            "HELM_DATA_HOME": str(home / "helm-data"),
        }

    def run(self, binary: Path, *args: str, check: bool = True, timeout: float = 300) -> str:
        result = subprocess.run(
            [str(binary), *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{binary.name} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout + result.stderr

    def kubectl(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        return self.run(self.kubectl_binary, *args, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        return self.run(self.bins.helm, *args, check=check, timeout=timeout)

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        status, body = self.cluster.raw(
            "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log?container={container}"
        )
        return body.decode(errors="replace") if status == 200 else ""

    def logs(self, namespace: str) -> str:
        """Every container log of a namespace, for failure messages."""
        parts = []
        status, body = self.cluster.raw("GET", f"/api/v1/namespaces/{namespace}/pods")
        for pod in json.loads(body).get("items", []) if status == 200 else []:
            name = pod["metadata"]["name"]
            for container in pod["spec"]["containers"]:
                log = self.pod_log(namespace, name, container["name"])
                parts.append(f"=== {name}/{container['name']}\n{log[-2500:]}")
        return "\n".join(parts)

    def tail(self, n: int = 4000) -> str:
        """The node's own logs (kubelet, containerd), for failure messages."""
        parts = []
        for name in ("kubelet", "containerd"):
            path = self.root / "logs" / f"{name}.log"
            if path.exists():
                parts.append(f"=== {name}\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    def resolve(self, name: str) -> str:
        """An A record from the cluster's DNS (CoreDNS behind the kube-dns Service)."""
        return resolve(name, DNS_IP)


@dataclass(frozen=True)
class InstalledChart:
    """A release of the chart on the real node (the `installed_chart` fixture)."""

    node: RealNode
    namespace: str
    release: str


def resolve(name: str, server: str, timeout: float = 5) -> str:
    """A minimal DNS A query over UDP (RFC 1035), so tests ask CoreDNS and nothing else."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    query = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, (server, 53))
        reply = sock.recv(4096)
    got, flags, _, answers = struct.unpack(">HHHH", reply[:8])
    if got != ident or flags & 0x000F:
        raise LookupError(f"{name}: DNS rcode {flags & 0x000F}")
    offset = 12 + len(question) + 4
    for _ in range(answers):
        # Names in answers are compressed pointers (2 bytes) to the question here.
        offset += 2 if reply[offset] & 0xC0 == 0xC0 else reply.index(b"\0", offset) + 1 - offset
        rtype, _, _, length = struct.unpack(">HHIH", reply[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            return socket.inet_ntoa(reply[offset : offset + 4])
        offset += length
    raise LookupError(f"{name}: no A record")


@contextmanager
def real_node_running(
    root: Path, bins: Binaries, images: dict[str, Image], kubectl: Path
) -> Iterator[RealNode]:
    """node-up.sh under the node lock; node-down.sh always, even after a failed start."""
    archives = [str(i.archive) for i in images.values()]
    with node_lock():
        # A run killed before its teardown left its node up: end it first (under the lock,
        # nobody else's node can be running).
        if CURRENT.exists():
            stale = Path(CURRENT.read_text().strip())
            if stale.is_dir():
                subprocess.run(
                    [str(HERE / "node-down.sh"), str(stale)], capture_output=True, timeout=300
                )
        CURRENT.write_text(f"{root}\n")
        try:
            started = subprocess.run(
                [str(HERE / "node-up.sh"), str(root), *archives],
                capture_output=True,
                text=True,
                timeout=900,
            )
            node = RealNode(root, bins, images, kubectl)
            if started.returncode != 0:
                raise RuntimeError(
                    f"node-up.sh exited {started.returncode}:\n{started.stderr[-5000:]}\n"
                    f"{node.tail()}"
                )
            yield node
        finally:
            subprocess.run(
                [str(HERE / "node-down.sh"), str(root)], capture_output=True, timeout=300
            )
            CURRENT.unlink(missing_ok=True)


def restricted_namespace(node: RealNode, name: str) -> None:
    status, reply = node.cluster.raw(
        "POST",
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
        },
    )
    assert status in (201, 409), reply


def host_path_volume(
    node: RealNode, namespace: str, release: str, size: str = "20Gi", index: int = 0
) -> Path:
    """A PersistentVolume on the node's disk, bound ahead to storage replica `index`'s claim
    (the chart's default claim names no storage class and the node has no provisioner). Owned
    by the chart's uid: hostPath volumes ignore fsGroup."""
    path = node.root / "pv" / (namespace if index == 0 else f"{namespace}-{index}")
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 10001, 10001)
    claim = f"data-{release}-storage-{index}"
    status, reply = node.cluster.raw(
        "POST",
        "/api/v1/persistentvolumes",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{claim}"},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "claimRef": {"namespace": namespace, "name": claim},
                "hostPath": {"path": str(path), "type": "Directory"},
            },
        },
    )
    assert status in (201, 409), reply
    return path


def image_values(node: RealNode) -> list[str]:
    """The only values a release on the node needs: the names of the images built here."""
    service, compile_ = node.images["tapedeck"], node.images["tapedeck-compile"]
    return [
        f"--set=image.repository={service.repository},image.tag={service.version}",
        f"--set=compileImage.repository={compile_.repository},compileImage.tag={compile_.version}",
    ]


def install(node: RealNode, namespace: str, *args: str, release: str = "tapedeck") -> str:
    """`helm install --wait` of the chart with the built images (plus `args`) into a new
    namespace enforcing the restricted Pod Security Standard; returns helm's output."""
    restricted_namespace(node, namespace)
    host_path_volume(node, namespace, release)
    return node.helm(
        "install",
        release,
        str(CHART),
        f"--namespace={namespace}",
        *image_values(node),
        *args,
        "--wait",
        "--timeout=300s",
        check=False,
    )


def dump(node: RealNode, namespace: str) -> str:
    """What to look at when a test on the node fails."""
    status, body = node.cluster.raw("GET", f"/api/v1/namespaces/{namespace}/pods")
    summary = [
        (
            p["metadata"]["name"],
            p.get("status", {}).get("phase"),
            [s.get("state") for s in p.get("status", {}).get("containerStatuses", [])],
        )
        for p in (json.loads(body).get("items", []) if status == 200 else [])
    ]
    return f"pods: {json.dumps(summary, indent=1)}\n{node.logs(namespace)}\n{node.tail()}"
