"""A storage server for the power-cut tests: in the test's loop, with a thread pool of its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from tapedeck._proto import storage_pb2_grpc as pb_grpc
from tapedeck.settings import Settings
from tapedeck.storage.backend import Backend, LocalBackend
from tapedeck.storage.client import StorageClient
from tapedeck.storage.server import StorageService, server_options


@contextlib.asynccontextmanager
async def storage_on(
    settings: Settings, backend: Backend | None = None
) -> AsyncIterator[StorageClient]:
    """Once it is stopped, every thread job it started has ended (its pool is drained), so
    nothing of a dead storage reaches the next mount."""
    executor = ThreadPoolExecutor(16, thread_name_prefix="powercut-io")
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        server = grpc.aio.server(options=server_options(settings))
        service = StorageService(backend or LocalBackend(settings.data_dir), settings)
        pb_grpc.add_StorageServicer_to_server(service, server)
        server.add_insecure_port(settings.storage_addr)
        await server.start()
        try:
            async with StorageClient(settings.storage_addr) as client:
                yield client
        finally:
            await server.stop(None)
    finally:
        executor.shutdown(wait=True)
