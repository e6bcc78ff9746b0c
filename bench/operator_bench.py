"""Operator: compile request → Job, and garbage collection of expired sessions, with a real
storage service and the operator (kopf) running as `tapedeck operator` runs it, against the
real control plane of the cluster tests (etcd + kube-apiserver + kube-controller-manager from
tests/cluster/build-tools.sh) when it is built, else against kmock's emulator (the operator
suite's harness, tests/operator_/operator_harness.py; its cost grows with every request it
has served, so keep `--requests` small there).

1. `--requests` RecordingSessions with `compile: true` for recorded sessions, one at a time:
   time from creating the resource to the compile Job existing. Baseline (same run, same
   emulator): creating that very Job directly with the same API client — what is left is the
   operator's own cost (watch, handler, storage checks, status patches).
2. `--expired` sessions in storage whose TTL has passed: time until the operator's sweeper has
   deleted them all. Baseline: deleting as many sessions with one `DeleteSession` call each.

    python bench/operator_bench.py [--requests 20] [--expired 10000] [--against emulator]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import kubernetes

from _common import ROOT, percentile, table

sys.path.insert(0, str(ROOT / "tests" / "operator_"))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

import kmock
from controlplane import ControlPlane, binaries
from helpers import create_namespace, install_crd

from harness import free_port
from operator_harness import (
    NS,
    SESSIONS,
    Cluster,
    apply,
    crd_resource_info,
    jobs,
    record,
    running_operator,
)
from tapedeck._proto import storage_pb2_grpc as pb_grpc
from tapedeck.cluster.kube import Kube
from tapedeck.compiler.plan import OutputOptions
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient
from tapedeck.storage.local import LocalBackend
from tapedeck.storage.server import StorageService
from tapedeck_operator.jobs import build_job, job_name

SWEEP = "0.5s"


@dataclass
class World:
    """A Kubernetes API, a storage service, and a way to run the operator against both."""

    kube: Kube
    settings: Settings
    storage: StorageClient
    operator: Callable[[], contextlib.AbstractAsyncContextManager[Any]]
    job_exists: Callable[[str], Awaitable[bool]]


def storage_settings(tmp: Path) -> Settings:
    return Settings(
        data_dir=tmp / "data",
        storage_addr=f"127.0.0.1:{free_port()}",
        namespace=NS,
        sweep_interval=SWEEP,  # type: ignore[arg-type]
        compile_image="tapedeck-compile:bench",
        max_open_sessions=1_000_000,  # 10,000 sessions exist at once here
    )


@contextlib.asynccontextmanager
async def emulator_world(tmp: Path) -> AsyncIterator[World]:
    settings = storage_settings(tmp)
    server = grpc.aio.server()
    pb_grpc.add_StorageServicer_to_server(
        StorageService(LocalBackend(settings.data_dir), settings), server
    )
    server.add_insecure_port(settings.storage_addr)
    await server.start()
    try:
        async with Cluster() as cluster, kmock.Server(cluster):
            cluster.resources.load_bundled()
            cluster.resources[SESSIONS] = crd_resource_info()
            import operator_harness

            operator_harness._server["url"] = str(cluster.url).rstrip("/")
            kube = Kube.for_server(str(cluster.url), NS)

            async def job_exists(name: str) -> bool:
                return any(j["metadata"]["name"] == name for j in jobs(cluster))

            async with StorageClient(settings.storage_addr) as storage:
                yield World(
                    kube, settings, storage, lambda: running_operator(settings, kube), job_exists
                )
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def cluster_world(tmp: Path) -> AsyncIterator[World]:
    """The control plane of tests/cluster, with storage and `tapedeck operator` as processes."""
    plane = ControlPlane(tmp / "control-plane", binaries())
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await asyncio.to_thread(plane.start)
        create_namespace(plane, NS)
        await asyncio.to_thread(install_crd, plane)
        settings = storage_settings(tmp)
        env = {
            **os.environ,
            "KUBECONFIG": str(plane.admin_kubeconfig),
            "TAPEDECK_DATA_DIR": str(settings.data_dir),
            "TAPEDECK_STORAGE_ADDR": settings.storage_addr,
            "TAPEDECK_NAMESPACE": NS,
            "TAPEDECK_SWEEP_INTERVAL": SWEEP,
            "TAPEDECK_COMPILE_IMAGE": settings.compile_image,
            "TAPEDECK_MAX_OPEN_SESSIONS": str(settings.max_open_sessions),
        }
        tapedeck = [sys.executable, "-m", "tapedeck"]
        with open(tmp / "storage.log", "wb") as log:
            processes.append(
                subprocess.Popen([*tapedeck, "serve", "storage"], env=env, stdout=log, stderr=log)
            )
        api = kubernetes.config.new_client_from_config(str(plane.admin_kubeconfig))  # type: ignore[no-untyped-call]
        kube = Kube(api, NS)

        @contextlib.asynccontextmanager
        async def operator() -> AsyncIterator[None]:
            liveness = f"http://127.0.0.1:{free_port()}/healthz"
            with open(tmp / "operator.log", "ab") as log:
                process = subprocess.Popen(
                    [*tapedeck, "operator", "-n", NS, "--liveness", liveness],
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            try:
                # Timed from the operator being ready (kopf answers its liveness probe), not
                # from its start.
                async with httpx.AsyncClient() as client:
                    for _ in range(600):
                        with contextlib.suppress(httpx.HTTPError):
                            if (await client.get(liveness)).status_code == 200:
                                break
                        await asyncio.sleep(0.05)
                yield
            finally:
                process.terminate()
                await asyncio.to_thread(process.wait, 30)

        async def job_exists(name: str) -> bool:
            return await kube.get_job(name) is not None

        async with StorageClient(settings.storage_addr) as storage:
            await storage.list_sessions(1)  # storage is up (the client retries while it starts)
            yield World(kube, settings, storage, operator, job_exists)
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
        plane.stop()


async def wait(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)


async def compile_to_job(world: World, n: int) -> tuple[list[float], list[float]]:
    operator: list[float] = []
    direct: list[float] = []
    async with world.operator():
        for i in range(n):
            sid = f"bench-{i:04d}-0000-0000-000000000000"
            await record(world.storage, sid, {"video": b"v" * 1000})
            name = job_name(sid, 0)
            started = time.perf_counter()
            await apply(world.kube, f"talk-{i}", {"sessionId": sid, "compile": True})
            await wait(lambda: world.job_exists(name))  # noqa: B023
            operator.append(time.perf_counter() - started)
        for i in range(n):
            owner = await world.kube.get_session(f"talk-{i}")
            assert owner is not None
            manifest = build_job(owner, f"direct-{i:04d}-0000", 0, OutputOptions(), world.settings)
            started = time.perf_counter()
            await world.kube.create_job(manifest)
            direct.append(time.perf_counter() - started)
        for i in range(n):  # the operator's finalizer deletes their data: storage is empty again
            await world.kube.delete_session(f"talk-{i}")
        await wait(_storage_empty(world.storage), timeout=120)
    return operator, direct


def _storage_empty(storage: StorageClient) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not (await storage.list_sessions(1)).sessions

    return check


async def expire(world: World, n: int) -> tuple[float, float]:
    storage = world.storage
    for _ in range(n):
        await storage.create_session(ttl_seconds=1)
    await asyncio.sleep(1.1)
    started = time.perf_counter()
    async with world.operator():
        await wait(_storage_empty(storage), timeout=3600)
        swept = time.perf_counter() - started
    ids = []
    for _ in range(n):
        ids.append((await storage.create_session(ttl_seconds=3600)).id)
    started = time.perf_counter()
    for sid in ids:
        await storage.delete_session(sid)
    direct = time.perf_counter() - started
    return swept, direct


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--expired", type=int, default=10_000)
    parser.add_argument(
        "--against",
        choices=("cluster", "emulator"),
        help="default: the real control plane when tests/cluster/build-tools.sh built it",
    )
    args = parser.parse_args()
    against = args.against or ("emulator" if binaries().missing() else "cluster")
    world_of = cluster_world if against == "cluster" else emulator_world
    print(f"against: {'the real control plane' if against == 'cluster' else 'kmock emulator'}\n")
    with tempfile.TemporaryDirectory() as tmp:
        async with world_of(Path(tmp)) as world:
            operator, direct = await compile_to_job(world, args.requests)
            swept, deleted = await expire(world, args.expired)
    print(f"### Compile request → Job ({args.requests} requests, one at a time)\n")
    print(
        table(
            ["path", "p50 ms", "p99 ms", "max ms"],
            [
                [name, f"{percentile(v, 0.5) * 1000:.1f}", f"{percentile(v, 0.99) * 1000:.1f}",
                 f"{max(v) * 1000:.1f}"]
                for name, v in (("operator (resource → Job)", operator),
                                ("direct Job create (baseline)", direct))
            ],
        )
    )  # fmt: skip
    print(f"\n### Garbage collection of {args.expired} expired sessions\n")
    print(
        table(
            ["path", "seconds", "sessions/s"],
            [
                ["operator sweeper", f"{swept:.1f}", f"{args.expired / swept:.0f}"],
                [
                    "DeleteSession loop (baseline)",
                    f"{deleted:.1f}",
                    f"{args.expired / deleted:.0f}",
                ],
            ],
        )
    )
    p50 = percentile(operator, 0.5)
    print(
        f"\nsummary: compile request → Job p50 {p50 * 1000:.0f} ms "
        f"({p50 / percentile(direct, 0.5):.0f}x a direct Job create); {args.expired} expired "
        f"sessions collected in {swept:.1f} s ({swept / deleted:.1f}x a bare DeleteSession loop)"
    )


if __name__ == "__main__":
    asyncio.run(main())
