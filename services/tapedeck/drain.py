"""SIGTERM's drain, shared by the server loop (which starts it), `/readyz` (which turns 503)
and ingest (which stops reading frames, waits for storage's acks and closes with 1012).

Kubernetes sends SIGTERM and removes the pod from the Service's endpoints at the same time, so
for a moment new sockets still arrive: they are refused with 1012 rather than met by a closed
port. The drain is bounded by `TAPEDECK_DRAIN_TIMEOUT`; the chart's
`terminationGracePeriodSeconds` leaves room for it plus the server's own shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)


class Drain:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.started = asyncio.Event()
        self._settlers: list[Callable[[], Awaitable[None]]] = []

    @property
    def draining(self) -> bool:
        return self.started.is_set()

    def on_drain(self, settled: Callable[[], Awaitable[None]]) -> None:
        """`settled()` returns once its part has nothing left in flight."""
        self._settlers.append(settled)

    async def run(self) -> bool:
        """Start draining and wait until every part settled; False when the timeout cut it
        short (the server then closes what is left with 1012 anyway)."""
        log.info("draining: refusing new sockets, closing open ones once acknowledged")
        self.started.set()
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.gather(*(settled() for settled in self._settlers))
        except TimeoutError:
            log.warning("drain timed out after %g s; closing what is left", self.timeout)
            return False
        log.info("drained")
        return True


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but the first SIGTERM (or SIGINT) drains before it stops: uvicorn
    alone stops listening and cuts every socket at once. A second signal stops it the plain
    way (uvicorn closes what is left with 1012)."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_requested = False
        self.draining: asyncio.Task[bool] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_requested:
            super().handle_exit(sig, frame)
        self.drain_requested = True

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's main loop asks this every 0.1 s whether to stop: not before the drain."""
        if self.drain_requested and self.draining is None:
            self.draining = asyncio.create_task(self.drain.run())
        if self.draining is not None and self.draining.done():
            return True
        return await super().on_tick(counter)
