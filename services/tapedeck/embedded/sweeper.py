"""TTL sweeper and idle finalization, run periodically in embedded mode."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from tapedeck._proto import storage_pb2 as pb
from tapedeck.lifecycle import is_expired, should_finalize_idle
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient, StorageError
from tapedeck.storage.records import PB_TO_STATE, now_ms
from tapedeck.storage.session_client import SessionClient

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    expired: int = 0
    finalized: int = 0


# Sessions of one page handled at once: storage deletes a session's files in a thread, so a
# few calls in flight overlap that work with the next calls' round trips.
SWEEP_CONCURRENCY = 8


async def sweep_once(
    storage: StorageClient, settings: Settings, now: int | None = None
) -> SweepResult:
    now = now_ms() if now is None else now
    idle_ms = int(settings.idle_finalize.total_seconds() * 1000)
    result = SweepResult()
    slots = asyncio.Semaphore(SWEEP_CONCURRENCY)
    sessions = SessionClient(storage)

    async def sweep(session: pb.Session) -> None:
        async with slots:
            try:
                if is_expired(session.expires_at_ms, now):
                    if await sessions.delete_if_exists(session.id):
                        result.expired += 1
                    return
                last_write = max(
                    [session.created_at_ms, *(t.updated_at_ms for t in session.tracks)]
                )
                if should_finalize_idle(
                    PB_TO_STATE[session.state], session.writing, last_write, now, idle_ms
                ):
                    await sessions.finish_tracks(session.id)
                    result.finalized += 1
            except StorageError as err:  # deleted or changed meanwhile: the next sweep decides
                log.info("sweep skipped %s: %s", session.id, err.message)

    token = ""
    while True:
        page = await storage.list_sessions(500, token)
        await asyncio.gather(*(sweep(session) for session in page.sessions))
        token = page.next_page_token
        if not token:
            return result


async def run_sweeper(storage: StorageClient, settings: Settings) -> None:
    while True:
        try:
            result = await sweep_once(storage, settings)
            if result.expired or result.finalized:
                log.info("sweep: %d expired, %d finalized", result.expired, result.finalized)
        except StorageError as err:
            log.warning("sweep failed: %s", err.message)
        await asyncio.sleep(settings.sweep_interval.total_seconds())
