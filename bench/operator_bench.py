"""Operator: compile request → Job, and garbage collection of expired sessions, against kmock's
Kubernetes emulator (the operator suite's harness, tests/operator_/operator_harness.py) and a
real storage service, with the operator (kopf) running as `tapedeck operator` runs it.

1. `--requests` RecordingSessions with `compile: true` for recorded sessions, one at a time:
   time from creating the resource to the compile Job existing. Baseline (same run, same
   emulator): creating that very Job directly with the same API client — what is left is the
   operator's own cost (watch, handler, storage checks, status patches).
2. `--expired` sessions in storage whose TTL has passed: time until the operator's sweeper has
   deleted them all. Baseline: deleting as many sessions with one `DeleteSession` call each.

    python bench/operator_bench.py [--requests 20] [--expired 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from _common import ROOT, percentile, table

sys.path.insert(0, str(ROOT / "tests" / "operator_"))

import kmock

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
from tapedeck.storage.backend import LocalBackend
from tapedeck.storage.client import StorageClient
from tapedeck.storage.server import StorageService
from tapedeck_operator.jobs import build_job, job_name


@contextlib.asynccontextmanager
async def world(tmp: Path) -> AsyncIterator[tuple[Cluster, Kube, Settings, StorageClient]]:
    settings = Settings(
        data_dir=tmp / "data",
        storage_addr=f"127.0.0.1:{free_port()}",
        namespace=NS,
        sweep_interval="0.5s",  # type: ignore[arg-type]
        compile_image="tapedeck-compile:bench",
        max_open_sessions=1_000_000,  # 10,000 sessions exist at once here
    )
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
            async with StorageClient(settings.storage_addr) as storage:
                yield cluster, kube, settings, storage
    finally:
        await server.stop(None)


async def wait(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)


async def compile_to_job(n: int) -> tuple[list[float], list[float]]:
    operator: list[float] = []
    direct: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with world(Path(tmp)) as (cluster, kube, settings, storage):
            async with running_operator(settings, kube):
                for i in range(n):
                    sid = f"bench-{i:04d}-0000-0000-000000000000"
                    await record(storage, sid, {"video": b"v" * 1000})
                    name = job_name(sid, 0)
                    started = time.perf_counter()
                    await apply(kube, f"talk-{i}", {"sessionId": sid, "compile": True})
                    await wait(lambda: any(j["metadata"]["name"] == name for j in jobs(cluster)))  # noqa: B023
                    operator.append(time.perf_counter() - started)
            for i in range(n):
                owner = {
                    "apiVersion": "tapedeck.io/v1alpha1",
                    "kind": "RecordingSession",
                    "metadata": {"name": f"direct-{i}", "namespace": NS, "uid": f"uid-{i}"},
                }
                manifest = build_job(owner, f"direct-{i:04d}-0000", 0, OutputOptions(), settings)
                started = time.perf_counter()
                await kube.create_job(manifest)
                direct.append(time.perf_counter() - started)
    return operator, direct


async def expire(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with world(Path(tmp)) as (_cluster, kube, settings, storage):
            for _ in range(n):
                await storage.create_session(ttl_seconds=1)
            await asyncio.sleep(1.1)
            started = time.perf_counter()
            async with running_operator(settings, kube):
                while (await storage.list_sessions(1)).sessions:
                    await asyncio.sleep(0.05)
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
    args = parser.parse_args()
    operator, direct = await compile_to_job(args.requests)
    swept, deleted = await expire(args.expired)
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
