"""Helpers of the cluster suite: waiting, helm, namespaces, pods."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cluster.controlplane import ControlPlane, bin_cache, module_version

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tapedeck"
CRD = CHART / "crds" / "recordingsessions.tapedeck.io.yaml"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def built_at(script: str) -> Path:
    """Where build script `script` (in tests/cluster) puts its binary, built or not: its own
    `--where` answers, so the cache rule (version, `TAPEDECK_*_BIN`, `XDG_CACHE_HOME`) is
    written once, in the script."""
    where = subprocess.run(
        [str(Path(__file__).resolve().parent / script), "--where"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not where.startswith("/"):
        raise AssertionError(f"{script} --where printed {where!r}, not an absolute path")
    return Path(where)


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as err:  # report the last failure if it never succeeds
            last = err
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Helm:
    binary: Path
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        result = subprocess.run(
            [str(self.binary), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout + result.stderr


def gateway_crd() -> Path:
    version = module_version("gateway-api", "sigs.k8s.io/gateway-api")
    return bin_cache() / f"gateway-api-{version}" / "httproutes.yaml"


def install_crd(cluster: ControlPlane) -> dict[str, Any]:
    """Creates the chart's CRD (or finds it) and waits until it is Established and served."""
    body: dict[str, Any] = yaml.safe_load(CRD.read_text())
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    status, reply = cluster.raw("POST", path, body)
    assert status in (201, 409), reply[:2000]
    name = body["metadata"]["name"]

    def established() -> bool:
        got = cluster.request("GET", f"{path}/{name}")
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in got.get("status", {}).get("conditions", [])
        )

    wait_until(established, 30, "the CRD to be established")
    # Discovery lags behind Established a little.
    wait_until(lambda: cluster.raw("GET", "/apis/tapedeck.io/v1alpha1")[0] == 200, 30, "discovery")
    return body


def create_namespace(cluster: ControlPlane, name: str) -> None:
    status, reply = cluster.raw(
        "POST",
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                # The chart's pods must pass the "restricted" Pod Security Standard.
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
        },
    )
    assert status in (201, 409), reply


def delete_namespace(cluster: ControlPlane, name: str, timeout: float = 90) -> None:
    cluster.raw("DELETE", f"/api/v1/namespaces/{name}")
    try:
        wait_until(
            lambda: cluster.raw("GET", f"/api/v1/namespaces/{name}")[0] == 404,
            timeout,
            f"namespace {name} to be deleted",
            interval=0.5,
        )
    except TimeoutError as err:
        body = cluster.raw("GET", f"/api/v1/namespaces/{name}")[1]
        left = cluster.raw("GET", f"/api/v1/namespaces/{name}/pods")[1]
        raise TimeoutError(
            f"{err}\n{body.decode()[-2000:]}\npods: {left.decode()[:3000]}"
        ) from None


def create_secret(cluster: ControlPlane, namespace: str, name: str, data: dict[str, str]) -> None:
    """Created, or replaced when there (set-up may run again, with new credentials)."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    status, reply = cluster.raw("POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
    if status == 409:
        path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        status, reply = cluster.raw("PUT", path, secret)
    assert status in (200, 201), reply


def api_token(cluster: ControlPlane, namespace: str, secret: str = "tapedeck-secret") -> str:
    """The release's API token, as a person reads it (the chart generates one by default)."""
    data = cluster.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{secret}")["data"]
    return base64.b64decode(data["api-token"]).decode()


def create_recording_session(
    cluster: ControlPlane, namespace: str, session_id: str, **spec: Any
) -> dict[str, Any]:
    """A RecordingSession for a stored session, as `kubectl apply` makes it (e.g. compile=True)."""
    return cluster.request(
        "POST",
        f"/apis/tapedeck.io/v1alpha1/namespaces/{namespace}/recordingsessions",
        {
            "apiVersion": "tapedeck.io/v1alpha1",
            "kind": "RecordingSession",
            "metadata": {"name": session_id},
            "spec": spec,
        },
    )


def pods(cluster: ControlPlane, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    query = f"?labelSelector={selector}" if selector else ""
    items: list[dict[str, Any]] = cluster.request(
        "GET", f"/api/v1/namespaces/{namespace}/pods{query}"
    )["items"]
    return items


def pod_ip(cluster: ControlPlane, namespace: str, component: str) -> str:
    """The address of a Ready pod of a component (on the node's pod bridge, reachable from here)."""

    def ready_ip() -> str | None:
        for pod in pods(cluster, namespace, f"app.kubernetes.io/component={component}"):
            conditions = pod.get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                ip: str = pod["status"]["podIP"]
                return ip
        return None

    ip: str = wait_until(ready_ip, 60, f"a ready {component} pod")
    return ip


def restarts(cluster: ControlPlane, namespace: str) -> dict[str, int]:
    return {
        p["metadata"]["name"]: sum(
            s.get("restartCount", 0) for s in p.get("status", {}).get("containerStatuses", [])
        )
        for p in pods(cluster, namespace)
    }


def keda_crd() -> Path:
    """KEDA's ScaledObject CRD, copied by build-tools.sh from its Go module."""
    version = module_version("keda", "github.com/kedacore/keda/v2")
    return bin_cache() / f"keda-{version}" / "scaledobjects.yaml"
