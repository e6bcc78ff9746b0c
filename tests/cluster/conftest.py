"""Fixtures of the cluster suite: a real control plane, the node agent, helm, the CRD.

Without the binaries (tests/cluster/build-tools.sh builds them) the suite is skipped, except
in CI (CI=true) or with TAPEDECK_REQUIRE_CLUSTER=1, where that is an error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.controlplane import ControlPlane, Process, binaries
from cluster.helpers import AGENT, REPO, Agent, Helm, install_crd, wait_until


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
def frontend_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = REPO / "frontend" / "out"
    if (built / "index.html").exists():
        return built
    stand_in = tmp_path_factory.mktemp("frontend")
    (stand_in / "index.html").write_text("<!doctype html><title>Tapedeck</title>\n")
    return stand_in


@pytest.fixture(scope="session")
def agent(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, frontend_dir: Path
) -> Iterator[Agent]:
    state = tmp_path_factory.mktemp("agent")
    venv_bin = Path(sys.executable).parent
    process = Process(
        "agent",
        [
            sys.executable,
            str(AGENT),
            f"--kubeconfig={cluster.admin_kubeconfig}",
            f"--state-dir={state}",
            f"--kubelet-version={cluster.bins.kubernetes_version}",
            f"--command=tapedeck={venv_bin / 'tapedeck'}",
            f"--command=python={sys.executable}",
            f"--command=python3={sys.executable}",
            f"--image-path=/app/frontend={frontend_dir}",
        ],
        state / "agent.log",
    )
    process.start()
    try:
        wait_until(
            lambda: cluster.raw("GET", "/api/v1/nodes/agent-0")[0] == 200, 30, "the agent's node"
        )
        yield Agent(process, state)
    finally:
        process.stop(timeout=20)


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
def kube_helm(helm: Helm, cluster: ControlPlane) -> Helm:
    """helm talking to the test cluster as its admin."""
    return Helm(helm.binary, {**helm.env, "KUBECONFIG": str(cluster.admin_kubeconfig)})


@pytest.fixture(scope="session")
def crd(cluster: ControlPlane) -> dict[str, Any]:
    """The chart's CRD, created and Established (helm install skips an existing one)."""
    return install_crd(cluster)
