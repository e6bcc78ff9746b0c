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
from tapedeck.webhooks.events import Event

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
        return cls(settings, replicas.connect(settings), Kube.from_settings(settings))

    def start_sweeper(self) -> None:
        """The storage-wide TTL sweep and idle finalization, as embedded mode runs them: in a
        cluster the operator is their home, and they also cover sessions without a resource
        (ones ingest created on its own)."""
        if self.sweeper is None:
            self.sweeper = asyncio.create_task(run_sweeper(self.storage, self.settings))

    def start_deliverer(self) -> None:
        """Storage's events as Kubernetes Events, and webhooks when this operator is the
        deployment's one deliverer (the chart's default: a single replica, so N api
        replicas never deliver twice)."""
        settings = self.settings
        if self.deliverer is not None or settings.mode != "cluster":
            return
        if settings.webhook_deliverer == "web":
            return  # the user chose the api to deliver; it alone reads the outbox
        from tapedeck.webhooks.deliverer import Deliverer, run_deliverer
        from tapedeck.webhooks.secret import resolve_webhook_secret
        from tapedeck_operator._events import post_session_event

        delivers = settings.webhook_delivered_by() == "operator"
        kube = self.kube

        async def kubernetes(event: Event) -> None:
            await post_session_event(kube, event)

        deliverer = Deliverer(
            settings,
            settings.webhook_url if delivers else [],
            resolve_webhook_secret(settings) if delivers else None,
            settings.secret_key,
            {"kubernetes-events": kubernetes},
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
