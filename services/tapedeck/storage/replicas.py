"""Several storage replicas behind one client: each call goes to the session's owner.

The one place that maps a session to its owner's client (ingest, api, compile queue and
worker, operator, compile job all get one from `connect(settings)`). It is a `StorageClient`,
so callers keep speaking the session client's domain methods. A new session is placed by
`placement.place` over the replicas configured now and records its replica (the manifest, the
upload token); a known session's owner comes from a token (`pin`), a cache, or a lookup in
the rule's order. With one replica this is a plain `StorageClient` and changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence

import grpc

from tapedeck._proto import storage_pb2 as pb
from tapedeck.placement import ranking
from tapedeck.sessions import OUTPUT, InvalidSessionId, State, new_session_id, validate_session_id
from tapedeck.settings import S3Settings, Settings
from tapedeck.storage import errors
from tapedeck.storage.client import StorageClient, StorageError, TrackWriter
from tapedeck.storage.objectstore import (
    LISTING,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    listing_key,
    manifest_key,
    output_key,
    track_key,
)
from tapedeck.storage.records import PB_TO_STATE, SessionRecord, to_pb
from tapedeck.storage.registry import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, matches

KNOWN_OWNERS = 10_000
"""Owners remembered (a session's owner never changes, so a cached one is never stale)."""


def connect(settings: Settings) -> StorageClient:
    """The storage client for every caller: one replica's, or the router over several (which
    lists and reads finished data from the bucket when the tier is on)."""
    addrs = settings.replica_addrs()
    if len(addrs) == 1:
        return StorageClient(addrs[0])
    bucket = None
    if settings.s3_bucket:
        bucket = BucketView(S3Settings())
    return ReplicatedStorage(addrs, bucket)


def _unavailable(err: ObjectStoreError) -> StorageError:
    return StorageError.of(grpc.StatusCode.UNAVAILABLE, f"the bucket: {err}")


FINAL = frozenset({State.READY, State.FAILED, State.EXPIRED})


class BucketView:
    """What anyone may read from the bucket (docs/storage.md, "Who writes what"): manifest
    copies, the listing, completed tracks and outputs. Read-only: owners write."""

    def __init__(self, settings: S3Settings) -> None:
        self.store = ObjectStore(settings)
        self._stack: contextlib.AsyncExitStack | None = None

    async def _open(self) -> ObjectStore:
        if self._stack is None:
            stack = contextlib.AsyncExitStack()
            await stack.enter_async_context(self.store)
            self._stack = stack
        return self.store

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    async def manifest(self, session_id: str) -> SessionRecord | None:
        """The bucket's copy of the manifest; None when there is none (yet)."""
        store = await self._open()
        try:
            data = await store.get(manifest_key(session_id))
        except ObjectNotFound:
            return None
        except ObjectStoreError as err:
            raise _unavailable(err) from None
        return SessionRecord.model_validate_json(data)

    async def session(self, record: SessionRecord) -> pb.Session:
        """The session as its manifest copy says, sizes from the completed objects."""
        store = await self._open()
        sizes: dict[str, int] = {}
        for track in record.tracks.values():
            if track.finished:
                with contextlib.suppress(ObjectStoreError):
                    sizes[track.name] = (await store.head(track_key(record.id, track.name))).size
        return to_pb(record, sizes, writing=False)

    async def page(
        self, page_size: int, page_token: str, states: frozenset[State], query: str = ""
    ) -> tuple[list[SessionRecord], str]:
        """Newest first after the cursor: a `start-after` walk over `listing/` keys."""
        store = await self._open()
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        start = ""
        if page_token:
            try:
                created, _, sid = base64.urlsafe_b64decode(page_token).decode().partition(":")
                start = listing_key(validate_session_id(sid), int(created))
            except (ValueError, InvalidSessionId):
                raise StorageError.of(
                    grpc.StatusCode.INVALID_ARGUMENT, "malformed page token"
                ) from None
        found: list[SessionRecord] = []
        try:
            while len(found) <= size:
                keys = await store.list_keys(LISTING, start, limit=size + 1)
                if not keys:
                    break
                copies = await asyncio.gather(*(store.get(k.key) for k in keys))
                for data in copies:
                    record = SessionRecord.model_validate_json(data)
                    if (not states or record.state in states) and matches(record, query):
                        found.append(record)
                start = keys[-1].key
        except ObjectStoreError as err:
            raise _unavailable(err) from None
        more = len(found) > size
        found = found[:size]
        next_token = ""
        if more and found:
            last = found[-1]
            next_token = base64.urlsafe_b64encode(
                f"{last.created_at_ms}:{last.id}".encode()
            ).decode()
        return found, next_token

    async def read(
        self, session_id: str, obj: str, offset: int, limit: int
    ) -> AsyncIterator[bytes]:
        """A completed object's bytes; `NotFound` when the bucket does not have it whole."""
        store = await self._open()
        name = output_key(session_id) if obj == OUTPUT else track_key(session_id, obj)
        try:
            await store.head(name)
            async for chunk in store.read(name, offset, limit):
                yield chunk
        except ObjectNotFound:
            raise StorageError.of(
                grpc.StatusCode.NOT_FOUND, f"{obj} of {session_id} is not in the bucket"
            ) from None
        except ObjectStoreError as err:
            raise _unavailable(err) from None


def _key(session: pb.Session) -> tuple[int, str]:
    return (session.created_at_ms, session.id)


class ReplicatedStorage(StorageClient):
    def __init__(self, addrs: Sequence[str], bucket: BucketView | None = None) -> None:
        if not addrs:
            raise ValueError("no storage replica address")
        self.bucket = bucket
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
        if self.bucket is not None:  # the manifest copy names its owner (once shipped)
            with contextlib.suppress(errors.Unavailable):
                record = await self.bucket.manifest(session_id)
                if record is not None and record.replica < self.count:
                    self.pin(session_id, record.replica)
                    return self._plain(record.replica)
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
        if self.bucket is not None:
            await self.bucket.close()

    # --- the StorageClient calls, routed --------------------------------------------------------

    async def create_session(
        self, session_id: str = "", ttl_seconds: int = 0, title: str = ""
    ) -> pb.Session:
        """On the replica the rule places it on; when that one is full (StorageFull: below its
        free-space reserve), on the next in the rule's order, where a lookup finds it too.
        StorageFull when every replica is."""
        session_id = session_id or new_session_id()
        full: errors.StorageFull | None = None
        for replica in ranking(session_id, self.count):
            try:
                session = await self._plain(replica).create_session(session_id, ttl_seconds, title)
            except errors.StorageFull as err:
                full = err
                continue
            self.pin(session_id, replica)
            return session
        assert full is not None
        raise full

    async def get_session(self, session_id: str) -> pb.Session:
        """From the owner; while it is down, the bucket's copy (a finished session's is
        whole; a live one's is as of its last manifest save)."""
        try:
            return await (await self.owner(session_id)).get_session(session_id)
        except errors.Unavailable:
            if self.bucket is None:
                raise
            record = await self.bucket.manifest(session_id)
            if record is None:
                raise
            return await self.bucket.session(record)

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
        """From the owner; while it is down, completed objects from the bucket (resuming
        where the owner's stream stopped)."""
        sent = 0
        try:
            owner = await self.owner(session_id)
            async for chunk in owner.read(session_id, obj, offset, limit):
                sent += len(chunk)
                yield chunk
            return
        except errors.Unavailable as err:
            if self.bucket is None:
                raise
            down = err
        rest = limit - sent if limit else 0
        if limit and rest <= 0:
            return
        try:
            async for chunk in self.bucket.read(session_id, obj, offset + sent, rest):
                yield chunk
        except errors.NotFound:
            raise down from None

    async def list_sessions(
        self,
        page_size: int = 0,
        page_token: str = "",
        states: Sequence[pb.SessionState.ValueType] | None = None,
        query: str = "",
    ) -> pb.ListSessionsResponse:
        """One page, newest first. With the tier: a keyset walk over the bucket's listing,
        live sessions refreshed from their owners (the bucket's copy while one is down).
        Without: every replica's page for the same keyset (creation time, id), merged, so the
        cursor stays the one storage hands out."""
        if self.bucket is not None:
            wanted = frozenset(PB_TO_STATE[s] for s in states or [])
            records, next_token = await self.bucket.page(page_size, page_token, wanted, query)
            found = await asyncio.gather(*(self._fresh(r) for r in records))
            return pb.ListSessionsResponse(sessions=found, next_page_token=next_token)
        pages = [
            await self._plain(r).list_sessions(page_size, page_token, states, query)
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

    async def _fresh(self, record: SessionRecord) -> pb.Session:
        assert self.bucket is not None
        self.pin(record.id, record.replica)
        if record.replica < self.count:
            try:
                return await self._plain(record.replica).get_session(record.id)
            except (errors.Unavailable, errors.NotFound):
                pass  # down (or just deleted): the bucket's copy
        return await self.bucket.session(record)
