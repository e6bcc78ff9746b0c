"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries come from tests/cluster/build-tools.sh (built from the Go modules pinned in
tests/cluster/tools/*/go.mod and cached outside the repository). Every process is started
here and stopped by its PID; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOOLS = HERE / "tools"

# Controllers of this API-only control plane (no node: the real node, node-up.sh, runs its own
# with every default controller). Without the PVC-protection controller a StatefulSet's claim
# keeps its finalizer and its namespace never goes.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "job-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "disruption-controller",
    "persistentvolumeclaim-protection-controller",
    "pod-garbage-collector-controller",
    "root-ca-certificate-publisher-controller",
)

ADMIN_TOKEN = "tapedeck-cluster-tests-admin"


def module_version(tool: str, module: str) -> str:
    """The version tools/<tool>/go.mod requires for `module` (as build-tools.sh reads it)."""
    text = (TOOLS / tool / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
    if not match:
        raise LookupError(f"{module} is not required by tools/{tool}/go.mod")
    return match.group(1)


def bin_cache() -> Path:
    if os.environ.get("TAPEDECK_CLUSTER_BIN"):
        return Path(os.environ["TAPEDECK_CLUSTER_BIN"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tapedeck" / "cluster-bin"


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    helm: Path
    kubernetes_version: str

    def missing(self) -> list[Path]:
        return [
            p
            for p in (self.etcd, self.kube_apiserver, self.kube_controller_manager, self.helm)
            if not os.access(p, os.X_OK)
        ]


def binaries() -> Binaries:
    cache = bin_cache()
    k8s = module_version("kubernetes", "k8s.io/kubernetes")
    etcd = module_version("etcd", "go.etcd.io/etcd/server/v3")
    helm = module_version("helm", "helm.sh/helm/v3")
    return Binaries(
        etcd=cache / f"etcd-{etcd}" / "etcd",
        kube_apiserver=cache / f"kubernetes-{k8s}" / "kube-apiserver",
        kube_controller_manager=cache / f"kubernetes-{k8s}" / "kube-controller-manager",
        helm=cache / f"helm-{helm}" / "helm",
        kubernetes_version=k8s,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, then SIGKILL; only the process this object started."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager in `root`, with an admin kubeconfig."""

    root: Path
    bins: Binaries
    processes: list[Process] = field(default_factory=list)
    server: str = ""

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_file(self) -> Path:
        # kube-apiserver writes a self-signed serving certificate into --cert-dir.
        return self.pki / "apiserver.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    def start(self) -> ControlPlane:
        self.root.mkdir(parents=True, exist_ok=True)
        self.pki.mkdir(exist_ok=True)
        sa_key = self.pki / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True
        )
        (self.root / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')

        client, peer = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client}"
        etcd = Process(
            "etcd",
            [
                str(self.bins.etcd),
                "--name=tests",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=tests=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self.root / "etcd.log",
        )
        self._launch(etcd)
        self._wait(lambda: _get(f"{etcd_url}/health").get("health") == "true", etcd, 30)

        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        apiserver = Process(
            "kube-apiserver",
            [
                str(self.bins.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.pki}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                f"--token-auth-file={self.root / 'tokens.csv'}",
                "--allow-privileged=false",
                # PodSecurity is on by default; this one makes the operator's Role prove that
                # it may set blockOwnerDeletion on the Jobs it owns (recordingsessions/finalizers).
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--v=0",
            ],
            self.root / "kube-apiserver.log",
        )
        self._launch(apiserver)
        self._wait(lambda: self._readyz(), apiserver, 90)
        self._write_kubeconfig(self.admin_kubeconfig, token=ADMIN_TOKEN)

        kcm = Process(
            "kube-controller-manager",
            [
                str(self.bins.kube_controller_manager),
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--authentication-kubeconfig={self.admin_kubeconfig}",
                f"--authorization-kubeconfig={self.admin_kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=false",
                f"--controllers={','.join(CONTROLLERS)}",
                "--concurrent-gc-syncs=5",
                "--v=0",
            ],
            self.root / "kube-controller-manager.log",
        )
        self._launch(kcm)
        # The controller manager is up once it created the default ServiceAccount.
        self._wait(
            lambda: self.raw("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            kcm,
            60,
        )
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def _launch(self, process: Process) -> None:
        self.processes.append(process)
        process.start()

    def _wait(self, check: Any, process: Process, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
            try:
                if check():
                    return
            except (OSError, ValueError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{process.name} not ready in {timeout}s:\n{process.tail()}")

    def _readyz(self) -> bool:
        status, _ = self.raw("GET", "/readyz")
        return status == 200

    # --- a tiny client for the harness itself (tests use the kubernetes package) ---

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str = ADMIN_TOKEN,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": content_type,
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, data = self.raw(method, path, body, **kw)
        if status >= 400:
            raise RuntimeError(f"{method} {path}: {status} {data[:500]!r}")
        return json.loads(data) if data else None

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A real bound token for a ServiceAccount (TokenRequest), as a pod would get."""
        reply = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            },
        )
        token: str = reply["status"]["token"]
        return token

    def write_kubeconfig(
        self, path: Path, *, token: str, namespace: str = "default", user: str = "user"
    ) -> Path:
        return self._write_kubeconfig(path, token=token, namespace=namespace, user=user)

    def _write_kubeconfig(
        self, path: Path, *, token: str, namespace: str = "default", user: str = "admin"
    ) -> Path:
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tests",
                    "cluster": {"server": self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "tests",
                    "context": {"cluster": "tests", "user": user, "namespace": namespace},
                }
            ],
            "current-context": "tests",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as reply:
        return json.loads(reply.read())
