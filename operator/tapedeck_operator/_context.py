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
from tapedeck.storage.client import StorageClient
from tapedeck.storage.session_client import SessionClient

MEMO_KEY = "tapedeck"


@dataclass
class Context:
    settings: Settings
    storage: StorageClient
    kube: Kube
    sweeper: asyncio.Task[None] | None = field(default=None, repr=False)
    deliverer: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def sessions(self) -> SessionClient:
        return SessionClient(self.storage)

    @classmethod
    def from_environment(cls) -> Context:
        settings = get_settings()
        return cls(settings, StorageClient(settings.storage_addr), Kube.from_settings(settings))

    def start_sweeper(self) -> None:
        """The storage-wide TTL sweep and idle finalization, as embedded mode runs them: in a
        cluster the operator is their home, and they also cover sessions without a resource
        (ones ingest created on its own)."""
        if self.sweeper is None:
            self.sweeper = asyncio.create_task(run_sweeper(self.storage, self.settings))

    def start_deliverer(self) -> None:
        """Webhooks, when this operator is the deployment's one deliverer (the chart's
        default: a single replica, so N api replicas never deliver twice)."""
        if self.deliverer is None and self.settings.webhook_delivered_by() == "operator":
            from tapedeck.webhooks.deliverer import Deliverer, run_deliverer
            from tapedeck.webhooks.secret import resolve_webhook_secret

            deliverer = Deliverer(
                self.settings, resolve_webhook_secret(self.settings), self.settings.secret_key
            )
            self.deliverer = asyncio.create_task(run_deliverer(deliverer))

    async def close(self) -> None:
        for task in (self.sweeper, self.deliverer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.sweeper = self.deliverer = None
        await self.storage.close()


def context(memo: Any) -> Context:
    ctx = memo[MEMO_KEY]
    assert isinstance(ctx, Context)
    return ctx
