"""`/readyz` with several storage replicas: every replica is asked, and the process is ready
while one serves (docs/decisions.md, "Readiness with several storage replicas"). Real storage
servers and the real web process (ingest) in this process, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from harness import free_port
from tapedeck.cli import web_server_options
from tapedeck.readiness import StorageReadiness, storage_readiness
from tapedeck.settings import Settings
from tapedeck.storage.server import serve
from tapedeck.webapp import create_app


def test_the_rule() -> None:
    assert storage_readiness([True]) == StorageReadiness(True, ())
    assert storage_readiness([False]) == StorageReadiness(False, (0,))
    assert storage_readiness([False, True, False]) == StorageReadiness(True, (0, 2))
    assert storage_readiness([False, False]) == StorageReadiness(False, (0, 1))
    assert storage_readiness([]).ready is False


@contextlib.asynccontextmanager
async def web_serving(settings: Settings) -> AsyncIterator[str]:
    options = {**web_server_options(settings), "log_level": "warning"}
    server = uvicorn.Server(uvicorn.Config(create_app(settings, ("ingest",)), **options))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the web process did not start"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await serving


async def answer_becomes(http: httpx.AsyncClient, status: int, body: dict[str, Any]) -> None:
    """A replica just stopped or started: its next health check says so."""
    deadline = time.monotonic() + 30
    while True:
        response = await http.get("/readyz")
        if (response.status_code, response.json()) == (status, body):
            return
        assert time.monotonic() < deadline, (response.status_code, response.text)
        await asyncio.sleep(0.1)


async def test_readyz_asks_every_replica(tmp_path: Path) -> None:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    # `storage_addr` names replica 0 (the chart's names the Service, which reaches any one).
    web = Settings(
        data_dir=tmp_path / "web",
        storage_addr=addrs[0],
        storage_addrs=",".join(addrs),  # type: ignore[arg-type]
        port=free_port(),
    )

    @contextlib.asynccontextmanager
    async def replica(index: int) -> AsyncIterator[None]:
        """Replica `index` as the storage process runs it (its health service included)."""
        settings = Settings(
            data_dir=tmp_path / f"volume-{index}", storage_addr=addrs[index], storage_replica=index
        )
        ready = asyncio.Event()
        serving = asyncio.create_task(serve(settings, ready))
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if serving.done():
            serving.result()  # its error
        try:
            yield
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving

    async with web_serving(web) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        async with replica(1):
            # replica 0 down: the sessions of replica 1 are still served
            await answer_becomes(http, 200, {"status": "ready", "unavailableReplicas": [0]})
            async with replica(0):
                await answer_becomes(http, 200, {"status": "ready"})
            await answer_becomes(http, 200, {"status": "ready", "unavailableReplicas": [0]})
        async with replica(0):
            # replica 1 down: the one `storage_addr` names serves, and that is not all
            await answer_becomes(http, 200, {"status": "ready", "unavailableReplicas": [1]})
        unavailable = {"code": "storage-unavailable", "message": "no storage replica serves"}
        await answer_becomes(http, 503, {"error": unavailable})
