"""A storage server for the power-cut tests: in the test's loop, with a thread pool of its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from storage_fixtures import storage_serving
from tapedeck.settings import Settings
from tapedeck.storage.backend import Backend
from tapedeck.storage.client import StorageClient


@contextlib.asynccontextmanager
async def storage_on(
    settings: Settings, backend: Backend | None = None
) -> AsyncIterator[StorageClient]:
    """Once it is stopped, every thread job it started has ended (its pool is drained), so
    nothing of a dead storage reaches the next mount."""
    executor = ThreadPoolExecutor(16, thread_name_prefix="powercut-io")
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        async with storage_serving(settings, backend) as client:
            yield client
    finally:
        executor.shutdown(wait=True)
