"""`tapedeck operator` and `kopf run -m tapedeck_operator.handlers` as processes: they log in
through a kubeconfig, serve /healthz, and act on a resource."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness import free_port
from operator_harness import NS, Cluster, apply, eventually, record, status_of
from tapedeck.cluster.kube import Kube
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "tapedeck"), "operator", "-n", NS, "--liveness", "http://127.0.0.1:{port}/healthz"],
        [
            str(BIN / "kopf"), "run", "--standalone", "-n", NS,
            "--liveness", "http://127.0.0.1:{port}/healthz", "-m", "tapedeck_operator.handlers",
        ],
    ],
    ids=["tapedeck-operator", "kopf-run"],
)  # fmt: skip
async def test_entry_point(
    command: list[str],
    k8s: Cluster,
    kube: Kube,
    storage: StorageClient,
    settings: Settings,
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
current-context: test
clusters: [{{name: test, cluster: {{server: "{str(k8s.url).rstrip("/")}"}}}}]
users: [{{name: test, user: {{}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test, namespace: {NS}}}}}]
"""
    )
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "TAPEDECK_STORAGE_ADDR": settings.storage_addr,
        "TAPEDECK_NAMESPACE": NS,
    }
    log = open(tmp_path / "operator.log", "wb")
    process = subprocess.Popen(
        [part.format(port=port) for part in command], env=env, stdout=log, stderr=log
    )
    try:
        async with httpx.AsyncClient() as client:

            async def healthy() -> bool:
                try:
                    reply = await client.get(f"http://127.0.0.1:{port}/healthz")
                except httpx.HTTPError:
                    assert process.poll() is None, "the operator exited"
                    return False
                return reply.status_code == 200

            await eventually(healthy, "/healthz", timeout=30)
        await record(storage, "abcdefgh-entry", {"video": b"v" * 10})
        await apply(kube, "abcdefgh-entry", {})
        await eventually(
            lambda: status_of(k8s, "abcdefgh-entry").get("phase") == "Recorded", "Recorded"
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(process.wait, 20)
        finally:
            process.kill()
            log.close()
            print((tmp_path / "operator.log").read_text()[-3000:])
