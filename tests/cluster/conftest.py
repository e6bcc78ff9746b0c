"""Fixtures of the cluster suite: a real control plane (API only), helm, the CRD, and a real
node (`real_node`, node.py) with the chart installed on it (`installed_chart`).

Without the binaries (tests/cluster/build-tools.sh and build-node.sh build them) the suite is
skipped, except in CI (CI=true) or with TAPEDECK_REQUIRE_CLUSTER=1, where that is an error.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.controlplane import ControlPlane, binaries
from cluster.helpers import Helm, install_crd
from cluster.node import (
    HERE,
    InstalledChart,
    RealNode,
    build_images,
    dump,
    install,
    real_node_running,
)


def required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("TAPEDECK_REQUIRE_CLUSTER") == "1"


def need(*paths: Path) -> None:
    """Skip (fail in CI) when a binary of build-tools.sh is missing."""
    missing = [p for p in paths if not os.access(p, os.X_OK)]
    if missing:
        message = f"missing {missing[0]}: run tests/cluster/build-tools.sh"
        if required():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def bins() -> Any:
    return binaries()


@pytest.fixture(scope="session")
def cluster(bins: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    need(bins.etcd, bins.kube_apiserver, bins.kube_controller_manager)
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"), bins)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def helm(bins: Any, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    need(bins.helm)
    home = tmp_path_factory.mktemp("helm")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-cluster"),
    }
    return Helm(bins.helm, env)


@pytest.fixture(scope="session")
def crd(cluster: ControlPlane) -> dict[str, Any]:
    """The chart's CRD, created and Established (helm install skips an existing one)."""
    return install_crd(cluster)


def node_binaries() -> dict[str, Path]:
    where = subprocess.run(
        [str(HERE / "build-node.sh"), "--where"], capture_output=True, text=True, check=True
    ).stdout
    return {k: Path(v) for k, v in (line.split("=", 1) for line in where.splitlines())}


@pytest.fixture(scope="session")
def real_node(bins: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A real Kubernetes node (kubelet, containerd, kube-proxy, CoreDNS) with the images built
    from docker/Dockerfile imported; held under the machine-wide node lock, torn down at the
    end of the session. Needs root (bridges, iptables, mounts)."""
    node_bins = node_binaries()
    need(bins.etcd, bins.kube_apiserver, bins.kube_controller_manager, bins.helm)
    missing = [p for p in node_bins.values() if not os.access(p, os.X_OK)]
    if missing:
        message = f"missing {missing[0]}: run tests/cluster/build-node.sh"
        if required():
            pytest.fail(message)
        pytest.skip(message)
    if os.geteuid() != 0:
        if required():
            pytest.fail("the real node needs root")
        pytest.skip("the real node needs root")
    images = build_images()
    root = tmp_path_factory.mktemp("node")
    with real_node_running(root, bins, images, node_bins["kubectl"]) as node:
        yield node


@pytest.fixture(scope="session")
def installed_chart(real_node: RealNode) -> Iterator[InstalledChart]:
    """The chart installed on the real node with its DEFAULT values plus only the image names
    (`helm install --wait`), in a namespace enforcing the restricted Pod Security Standard."""
    namespace, release = "tapedeck", "tapedeck"
    out = install(real_node, namespace, release=release)
    assert "STATUS: deployed" in out, out + dump(real_node, namespace)
    yield InstalledChart(real_node, namespace, release)
    real_node.helm("uninstall", release, f"--namespace={namespace}", "--wait", check=False)
