"""Several storage replicas behind one client: each call goes to the session's owner.

The one place that maps a session to its owner's client (ingest, api, compile queue and
worker, operator, compile job all get one from `connect(settings)`). It is a `StorageClient`,
so callers keep speaking the session client's domain methods. A new session is placed by
`placement.place` over the replicas configured now and records its replica (the manifest, the
upload token); a known session's owner comes from a token (`pin`), a cache, or a lookup in
the rule's order. With one replica this is a plain `StorageClient` and changes nothing.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence

import grpc

from tapedeck._proto import storage_pb2 as pb
from tapedeck.placement import place, ranking
from tapedeck.sessions import new_session_id
from tapedeck.settings import Settings
from tapedeck.storage import errors
from tapedeck.storage.client import StorageClient, StorageError, TrackWriter
from tapedeck.storage.registry import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

KNOWN_OWNERS = 10_000
"""Owners remembered (a session's owner never changes, so a cached one is never stale)."""


def connect(settings: Settings) -> StorageClient:
    """The storage client for every caller: one replica's, or the router over several."""
    addrs = settings.replica_addrs()
    return StorageClient(addrs[0]) if len(addrs) == 1 else ReplicatedStorage(addrs)


def _key(session: pb.Session) -> tuple[int, str]:
    return (session.created_at_ms, session.id)


class ReplicatedStorage(StorageClient):
    def __init__(self, addrs: Sequence[str]) -> None:
        if not addrs:
            raise ValueError("no storage replica address")
        super().__init__(addrs[0])  # its own channel stays unused: every call is routed
        self.replicas = [StorageClient(a) for a in addrs]
        self.owners: OrderedDict[str, int] = OrderedDict()

    @property
    def count(self) -> int:
        return len(self.replicas)

    def at(self, replica: int) -> StorageClient:
        """Replica `replica`'s own client (`InvalidArgument` when there is no such replica)."""
        if not 0 <= replica < self.count:
            raise StorageError.of(
                grpc.StatusCode.INVALID_ARGUMENT, f"no storage replica {replica} (of {self.count})"
            )
        return self._plain(replica)

    def _plain(self, replica: int) -> StorageClient:
        return self.replicas[replica]

    def pin(self, session_id: str, replica: int) -> None:
        """Remember a session's owner (from a verified upload token, a manifest)."""
        self.owners[session_id] = replica
        self.owners.move_to_end(session_id)
        while len(self.owners) > KNOWN_OWNERS:
            self.owners.popitem(last=False)

    async def owner(self, session_id: str) -> StorageClient:
        """The owner's client. Without a record, the replicas are asked in the rule's order
        (the owner first unless replicas were added since): `NotFound` when none has it,
        `Unavailable` when one that might have it does not answer."""
        known = self.owners.get(session_id)
        if known is not None and known < self.count:
            return self._plain(known)
        unreachable: errors.StorageError | None = None
        for replica in ranking(session_id, self.count):
            try:
                await self._plain(replica).get_session(session_id)
            except errors.NotFound:
                continue
            except errors.InvalidArgument:
                raise
            except errors.StorageError as err:
                unreachable = err
                continue
            self.pin(session_id, replica)
            return self._plain(replica)
        if unreachable is not None:
            raise unreachable
        raise StorageError.of(grpc.StatusCode.NOT_FOUND, f"session {session_id} not found")

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()

    # --- the StorageClient calls, routed --------------------------------------------------------

    async def create_session(self, session_id: str = "", ttl_seconds: int = 0) -> pb.Session:
        session_id = session_id or new_session_id()
        replica = place(session_id, self.count)
        session = await self._plain(replica).create_session(session_id, ttl_seconds)
        self.pin(session_id, replica)
        return session

    async def get_session(self, session_id: str) -> pb.Session:
        return await (await self.owner(session_id)).get_session(session_id)

    async def update_session(self, request: pb.UpdateSessionRequest) -> pb.Session:
        return await (await self.owner(request.session_id)).update_session(request)

    async def delete_session(self, session_id: str) -> None:
        await (await self.owner(session_id)).delete_session(session_id)

    async def query_write_status(self, session_id: str, obj: str) -> pb.QueryWriteStatusResponse:
        return await (await self.owner(session_id)).query_write_status(session_id, obj)

    async def open_writer(
        self,
        session_id: str,
        obj: str,
        mime_type: str = "",
        started_at: float = 0.0,
        compile_generation: int = 0,
    ) -> TrackWriter:
        owner = await self.owner(session_id)
        return await owner.open_writer(session_id, obj, mime_type, started_at, compile_generation)

    async def read(
        self, session_id: str, obj: str, offset: int = 0, limit: int = 0
    ) -> AsyncIterator[bytes]:
        owner = await self.owner(session_id)
        async for chunk in owner.read(session_id, obj, offset, limit):
            yield chunk

    async def list_sessions(
        self,
        page_size: int = 0,
        page_token: str = "",
        states: Sequence[pb.SessionState.ValueType] | None = None,
    ) -> pb.ListSessionsResponse:
        """One page over every replica: the same keyset (creation time, id) on each, merged,
        so the cursor stays the one storage hands out."""
        pages = [
            await self._plain(r).list_sessions(page_size, page_token, states)
            for r in range(self.count)
        ]
        merged = sorted((s for p in pages for s in p.sessions), key=_key, reverse=True)
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        found = merged[:size]
        more = len(merged) > size or any(p.next_page_token for p in pages)
        for session in found:
            self.pin(session.id, session.replica)
        next_token = ""
        if more and found:
            last = found[-1]
            next_token = base64.urlsafe_b64encode(
                f"{last.created_at_ms}:{last.id}".encode()
            ).decode()
        return pb.ListSessionsResponse(sessions=found, next_page_token=next_token)
