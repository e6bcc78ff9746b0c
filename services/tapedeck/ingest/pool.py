"""One receive budget for every connection of an ingest process.

Each connection already stops reading past its own window (`max_inflight_bytes`), but that
bounds one stream, not hundreds: in a reconnect storm, when storage falls behind for a few
seconds, every stream's frames pile up in ingest at once (docs/performance.md: 1.5 MiB per
stream on a busy machine, and a backlog in fresh memory costs page faults that grow it). The
pool counts frames received and not yet acknowledged by storage, across connections; while it
holds `max_bytes` or more, no connection reads its next frame, so the rest waits in the
kernel's socket buffers and the clients' (TCP backpressure), not in our heap.
"""

from __future__ import annotations

import asyncio


class ReceivePool:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        """0: unbounded."""
        self.held = 0
        self._freed = asyncio.Event()

    def full(self) -> bool:
        return bool(self.max_bytes) and self.held >= self.max_bytes

    async def room(self) -> None:
        """Returns once the pool is below its size (a frame is never cut: the one read next
        may take it past its size)."""
        while self.full():
            self._freed.clear()
            await self._freed.wait()

    def take(self, size: int) -> None:
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size
        self._freed.set()
