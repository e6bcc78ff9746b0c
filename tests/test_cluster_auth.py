"""In a cluster, the api refuses to serve /api to anyone unless told so (issue 13, item 15).

Embedded mode refuses a non-loopback address without a token; a cluster pod always listens
on 0.0.0.0, so there the rule is: a token, or an explicit TAPEDECK_ALLOW_ANONYMOUS=true (the
chart's auth.allowAnonymous). Real `tapedeck serve` processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import free_port, wait_for

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "http://127.0.0.1:%d"}}]
users: [{name: none, user: {}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def cluster_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A cluster pod's settings; the API server named by the kubeconfig is not there (the api
    only needs it for RecordingSessions, which these tests never touch)."""
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG % free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAPEDECK_", "KUBE"))}
    return {
        **env,
        "KUBECONFIG": str(kubeconfig),
        "TAPEDECK_MODE": "cluster",
        "TAPEDECK_NAMESPACE": "tapedeck",
        "TAPEDECK_HOST": "127.0.0.1",
        "TAPEDECK_PORT": str(free_port()),
        "TAPEDECK_STORAGE_ADDR": f"127.0.0.1:{free_port()}",
        "TAPEDECK_SECRET_KEY": "k" * 48,
        **extra,
    }


@pytest.mark.parametrize("role", ["api", "web"])
def test_cluster_api_without_token_refuses_to_start(role: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tapedeck", "serve", role],
        env=cluster_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "refusing to serve /api without TAPEDECK_API_TOKEN" in done.stderr, done.stderr
    assert "TAPEDECK_ALLOW_ANONYMOUS=true" in done.stderr  # the way out, named


def test_an_empty_token_is_no_token(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tapedeck", "serve", "api"],
        env=cluster_env(tmp_path, TAPEDECK_API_TOKEN=""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "TAPEDECK_API_TOKEN" in done.stderr, done.stderr


@pytest.fixture
def serving(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    role, extra = request.param
    env = cluster_env(tmp_path, **extra)
    process = subprocess.Popen(
        [sys.executable, "-m", "tapedeck", "serve", role],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{env['TAPEDECK_PORT']}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz").status_code == 200
        except httpx.TransportError:
            return process.poll() is not None  # exited: said below

    try:
        wait_for(up, timeout=60, what=f"{role} /healthz")
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"{role} exited {process.returncode}: {out[-2000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(20)


@pytest.mark.parametrize(
    "serving",
    [
        ("api", {"TAPEDECK_ALLOW_ANONYMOUS": "true"}),
        ("api", {"TAPEDECK_API_TOKEN": "t" * 32}),
        ("ingest", {}),  # ingest serves no /api: upload tokens guard it
    ],
    indirect=True,
    ids=["anonymous-allowed", "with-token", "ingest"],
)
def test_what_may_start(serving: str) -> None:
    assert httpx.get(f"{serving}/healthz").status_code == 200
