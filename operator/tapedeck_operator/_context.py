"""What every handler needs: settings, the storage client and the Kubernetes client.

Built once at startup (or handed in through kopf's `memo` by an embedding program or a
test) and kept in `memo.tapedeck`, which kopf copies into every resource's memo.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from tapedeck.cluster.kube import Kube
from tapedeck.embedded.sweeper import run_sweeper
from tapedeck.settings import Settings, get_settings
from tapedeck.storage import replicas
from tapedeck.storage.client import StorageClient
from tapedeck.storage.session_client import SessionClient

MEMO_KEY = "tapedeck"


@dataclass
class Context:
    settings: Settings
    storage: StorageClient
    kube: Kube
    sweeper: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def sessions(self) -> SessionClient:
        return SessionClient(self.storage)

    @classmethod
    def from_environment(cls) -> Context:
        settings = get_settings()
        return cls(settings, replicas.connect(settings), Kube.from_settings(settings))

    def start_sweeper(self) -> None:
        """The storage-wide TTL sweep and idle finalization, as embedded mode runs them: in a
        cluster the operator is their home, and they also cover sessions without a resource
        (ones ingest created on its own)."""
        if self.sweeper is None:
            self.sweeper = asyncio.create_task(run_sweeper(self.storage, self.settings))

    async def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
            self.sweeper = None
        await self.storage.close()


def context(memo: Any) -> Context:
    ctx = memo[MEMO_KEY]
    assert isinstance(ctx, Context)
    return ctx
