"""The WebhookOutbox gRPC service on a real storage server: read in order, acknowledge once;
and no outbox at all without webhooks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from harness import free_port
from tapedeck._proto import storage_pb2 as pb
from tapedeck._proto import storage_pb2_grpc as pb_grpc
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient
from tapedeck.storage.local import LocalBackend
from tapedeck.storage.server import StorageService, server_options
from tapedeck.webhooks.outbox import OUTBOX_DIR


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(options=server_options(settings))
    StorageService(LocalBackend(settings.data_dir), settings).add_to(server)
    server.add_insecure_port(settings.storage_addr)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(settings.storage_addr) as channel:
            yield channel
    finally:
        await server.stop(None)


def settings_for(tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path, storage_addr=f"127.0.0.1:{free_port()}", **extra)


async def test_read_in_order_and_acknowledge_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, webhook_url=["http://127.0.0.1:9/h"])
    async with serving(settings) as channel:
        outbox = pb_grpc.WebhookOutboxStub(channel)
        async with StorageClient(settings.storage_addr) as storage:
            first = await storage.create_session("abcdefgh-1")
            await storage.create_session("abcdefgh-2")
            await storage.delete_session(first.id)
        read = await outbox.ReadOutbox(pb.ReadOutboxRequest(limit=0))  # at least one
        assert read.pending == 3 and len(read.events) == 1
        read = await outbox.ReadOutbox(pb.ReadOutboxRequest(limit=10_000))
        assert [(e.type, e.session_id) for e in read.events] == [
            ("session.created", "abcdefgh-1"),
            ("session.created", "abcdefgh-2"),
            ("session.deleted", "abcdefgh-1"),
        ]
        ids = [read.events[0].id, "msg_unknown"]
        assert (await outbox.AckOutbox(pb.AckOutboxRequest(ids=ids))).removed == 1
        assert (await outbox.AckOutbox(pb.AckOutboxRequest(ids=ids))).removed == 0
        after = await outbox.ReadOutbox(pb.ReadOutboxRequest(limit=10))
        assert [e.id for e in after.events] == [e.id for e in read.events[1:]]


async def test_without_webhooks_storage_keeps_no_outbox(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with serving(settings) as channel:
        async with StorageClient(settings.storage_addr) as storage:
            await storage.create_session("abcdefgh-1")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.WebhookOutboxStub(channel).ReadOutbox(pb.ReadOutboxRequest(limit=1))
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert not (tmp_path / OUTBOX_DIR).exists()
