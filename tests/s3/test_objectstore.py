"""storage/objectstore.py against a real SeaweedFS: multipart by the caller's upload id and
part ETags, ranged GETs, small PUT/GET, keyset listing, presigned GETs, and its error kinds."""

from __future__ import annotations

import os

import httpx
import pytest

from s3_fixtures import S3Place
from tapedeck.storage.objectstore import (
    ObjectNotFound,
    ObjectStore,
    StoreRefused,
    StoreUnreachable,
)

MiB = 1024 * 1024


async def test_multipart_continues_from_a_saved_upload_id(s3_place: S3Place) -> None:
    data = os.urandom(11 * MiB)
    async with ObjectStore(s3_place.settings()) as store:
        upload_id = await store.create_multipart("track")
        first = await store.upload_part("track", upload_id, 1, data[: 5 * MiB])
    # Another client (a restarted process) with only the id goes on with the same upload.
    async with ObjectStore(s3_place.settings()) as store:
        assert await store.list_parts("track", upload_id) == [first]
        second = await store.upload_part("track", upload_id, 2, data[5 * MiB : 10 * MiB])
        third = await store.upload_part("track", upload_id, 3, data[10 * MiB :])
        await store.complete_multipart("track", upload_id, [third, first, second])
        assert (await store.head("track")).size == len(data)
        assert await store.get_range("track", 5 * MiB - 2, 4) == data[5 * MiB - 2 : 5 * MiB + 2]
        assert await store.get("track") == data
        assert await store.get_range("track", len(data), 10) == b""


async def test_an_aborted_upload_is_gone(s3_place: S3Place) -> None:
    async with ObjectStore(s3_place.settings()) as store:
        upload_id = await store.create_multipart("abandoned")
        await store.upload_part("abandoned", upload_id, 1, b"x" * 1000)
        await store.abort_multipart("abandoned", upload_id)
        await store.abort_multipart("abandoned", upload_id)  # twice is fine
        with pytest.raises(ObjectNotFound):
            await store.head("abandoned")


async def test_listing_is_a_keyset_walk(s3_place: S3Place) -> None:
    async with ObjectStore(s3_place.settings()) as store:
        for name in ("sessions/b/m", "sessions/a/m", "sessions/c/m", "other/x"):
            await store.put(name, name.encode())
        page = await store.list_keys("sessions/", limit=2)
        assert [item.key for item in page] == ["sessions/a/m", "sessions/b/m"]
        rest = await store.list_keys("sessions/", start_after=page[-1].key)
        assert [item.key for item in rest] == ["sessions/c/m"]
        assert await store.delete_prefix("sessions/") == 3
        assert [item.key for item in await store.list_keys("")] == ["other/x"]


async def test_presigned_get_carries_the_content_disposition(s3_place: S3Place) -> None:
    settings = s3_place.settings(
        public_endpoint=s3_place.server.endpoint.replace("127.0.0.1", "localhost")
    )
    async with ObjectStore(settings) as store:
        await store.put("file.mp4", b"0123456789")
        url = await store.presign_get("file.mp4", 60, 'attachment; filename="a b.mp4"')
    assert url.startswith(settings.public_endpoint or "")
    answer = httpx.get(url, headers={"Range": "bytes=2-4"})
    assert answer.status_code == 206, answer.text
    assert answer.content == b"234"
    assert answer.headers["content-disposition"] == 'attachment; filename="a b.mp4"'


async def test_errors_are_not_found_refused_or_unreachable(s3_place: S3Place) -> None:
    async with ObjectStore(s3_place.settings()) as store:
        with pytest.raises(ObjectNotFound):
            await store.get("never-written")
    async with ObjectStore(s3_place.settings(secret_access_key="wrong")) as store:
        with pytest.raises(StoreRefused) as refused:
            await store.put("x", b"x")
        assert refused.value.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId")
    closed = s3_place.settings(endpoint_url="http://127.0.0.1:9", connect_timeout=0.5)
    async with ObjectStore(closed, retries=1) as store:
        with pytest.raises(StoreUnreachable):
            await store.put("x", b"x")
