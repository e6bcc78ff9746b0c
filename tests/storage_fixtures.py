"""A real storage server in the test's event loop (registered from conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from harness import free_port
from tapedeck.settings import Settings
from tapedeck.storage.backend import Backend
from tapedeck.storage.client import StorageClient
from tapedeck.storage.local import LocalBackend
from tapedeck.storage.server import StorageService, server_options


@pytest.fixture
def storage_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        storage_addr=f"127.0.0.1:{free_port()}",
        max_session_bytes=1_000_000,
    )


@contextlib.asynccontextmanager
async def storage_serving(
    settings: Settings, backend: Backend | None = None
) -> AsyncIterator[StorageClient]:
    """A real grpc.aio storage server on `settings.storage_addr`, and a client for it."""
    server = grpc.aio.server(options=server_options(settings))
    # `add_to`: the Storage service, and the webhook outbox's when the settings keep one.
    StorageService(backend or LocalBackend(settings.data_dir), settings).add_to(server)
    server.add_insecure_port(settings.storage_addr)
    await server.start()
    try:
        async with StorageClient(settings.storage_addr) as client:
            yield client
    finally:
        await server.stop(None)


@pytest.fixture
async def storage(storage_settings: Settings) -> AsyncIterator[StorageClient]:
    async with storage_serving(storage_settings) as client:
        yield client
