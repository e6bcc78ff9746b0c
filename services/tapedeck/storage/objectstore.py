"""An S3-compatible bucket, spoken through aiobotocore (docs/decisions.md: why not obstore).

Only what the object tier needs: multipart uploads whose id and part ETags the caller keeps
(so another process can continue the same upload), ranged GETs, small PUT/GET for manifests,
listing by prefix with a `start_after` cursor, presigned GETs for a public endpoint, and the
bucket's lifecycle rule for abandoned uploads. Keys given here are relative to the configured
prefix. Errors are three kinds: `ObjectNotFound`, `StoreRefused` (the store answered no:
credentials, a missing bucket, a policy) and `StoreUnreachable` (no answer: retry later).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)

from tapedeck.sessions import OUTPUT
from tapedeck.settings import S3Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

READ_CHUNK = 1024 * 1024
_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}


class ObjectStoreError(Exception):
    """Anything the bucket did not do."""


class ObjectNotFound(ObjectStoreError):
    pass


class StoreRefused(ObjectStoreError):
    """The store answered and said no (credentials, a missing bucket, a policy, a bad part)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class StoreUnreachable(ObjectStoreError):
    """No answer (connection refused, timeout, 5xx): worth trying again later."""


@dataclass(frozen=True)
class Part:
    number: int
    etag: str


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str


def track_key(session_id: str, track: str) -> str:
    """The key layout (docs/storage.md), relative to the prefix; ids are validated by callers."""
    return f"sessions/{session_id}/{track}.webm"


def output_key(session_id: str, name: str = OUTPUT) -> str:
    """The MP4, or a named output of the compile (poster.jpg, hls.m3u8, ...: validated names)."""
    if name == OUTPUT:
        return f"sessions/{session_id}/{session_id}.mp4"
    return f"sessions/{session_id}/out-{name}"


def manifest_key(session_id: str) -> str:
    return f"sessions/{session_id}/session.json"


LISTING = "listing/"
"""Newest-first keys of every session: one object per session, a copy of its manifest."""
_NEWEST = 10**13 - 1  # inverted creation times sort newest first, fixed width until 2286


def listing_key(session_id: str, created_at_ms: int) -> str:
    """`listing/{inverted ms}-{id}`: key order is newest first, so a page is a `start-after`
    keyset walk from the last key seen (docs/storage.md)."""
    return f"{LISTING}{_NEWEST - created_at_ms:013d}-{session_id}"


def _translate(error: Exception) -> ObjectStoreError:
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _NOT_FOUND or (status == 404 and code != "NoSuchBucket"):
            return ObjectNotFound(code or "404")
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            return StoreUnreachable(f"{code or status}: {info.get('Message', '')}")
        return StoreRefused(code or str(status), str(info.get("Message", "")))
    if isinstance(
        error, EndpointConnectionError | ConnectionError | HTTPClientError | ReadTimeoutError
    ):
        return StoreUnreachable(str(error))
    if isinstance(error, OSError):
        return StoreUnreachable(str(error))
    return ObjectStoreError(str(error))


@contextlib.contextmanager
def _errors() -> Any:
    try:
        yield
    except ObjectStoreError:
        raise
    except (ClientError, BotoCoreError, OSError) as e:
        raise _translate(e) from e


def _config(settings: S3Settings, retries: int) -> AioConfig:
    return AioConfig(
        s3={"addressing_style": settings.addressing_style},
        request_checksum_calculation=settings.checksum,
        response_checksum_validation=settings.checksum,
        retries={"mode": "standard", "total_max_attempts": retries},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=32,
        signature_version="s3v4",  # SigV2 presigns (botocore's default) break on response-* params
    )


class ObjectStore:
    """One bucket (and prefix). Open with `async with ObjectStore(settings) as store`; the
    client and its connection pool live as long as the store."""

    def __init__(self, settings: S3Settings, retries: int = 3) -> None:
        if not settings.bucket:
            raise ValueError("TAPEDECK_S3_BUCKET is not set")
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self._retries = retries
        self._stack = contextlib.AsyncExitStack()
        self._client: S3Client | None = None
        self._signer: S3Client | None = None

    def _client_args(self, endpoint: str | None) -> dict[str, Any]:
        s = self.settings
        args: dict[str, Any] = {"region_name": s.region, "endpoint_url": endpoint}
        if s.access_key_id and s.secret_access_key:
            args["aws_access_key_id"] = s.access_key_id.get_secret_value()
            args["aws_secret_access_key"] = s.secret_access_key.get_secret_value()
        # Otherwise botocore's own chain: web identity (IRSA / workload identity), profiles.
        return args

    async def __aenter__(self) -> ObjectStore:
        session = get_session()
        config = _config(self.settings, self._retries)
        self._client = cast(
            "S3Client",
            await self._stack.enter_async_context(
                session.create_client(
                    "s3", config=config, **self._client_args(self.settings.endpoint_url)
                )
            ),
        )
        public = self.settings.public_endpoint or self.settings.endpoint_url
        if public != self.settings.endpoint_url:
            # Presigning is local: a client for the address browsers reach, never called.
            self._signer = cast(
                "S3Client",
                await self._stack.enter_async_context(
                    session.create_client("s3", config=config, **self._client_args(public))
                ),
            )
        else:
            self._signer = self._client
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        self._client = self._signer = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("ObjectStore used outside `async with`")
        return self._client

    def key(self, name: str) -> str:
        return self.prefix + name

    # --- small objects (manifests) ---

    async def put(self, name: str, data: bytes | io.BytesIO, content_type: str = "") -> str:
        """Whole object in one request; returns its ETag."""
        extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        with _errors():
            answer = await self.client.put_object(
                Bucket=self.bucket, Key=self.key(name), Body=data, **extra
            )
        return answer["ETag"].strip('"')

    async def get(self, name: str) -> bytes:
        with _errors():
            answer = await self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            async with answer["Body"] as body:
                data: bytes = await body.read()
        return data

    async def head(self, name: str) -> Listed:
        with _errors():
            answer = await self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        return Listed(name, answer["ContentLength"], answer["ETag"].strip('"'))

    async def delete(self, name: str) -> None:
        """Absent is fine (S3's DELETE is idempotent)."""
        with _errors():
            await self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    # --- ranged reads ---

    async def read(self, name: str, offset: int = 0, limit: int = 0) -> AsyncGenerator[bytes, None]:
        """Bytes [offset, offset+limit) (to the end when limit is 0), in chunks of ~1 MiB."""
        if limit < 0 or offset < 0:
            raise ValueError("offset and limit must not be negative")
        end = "" if limit == 0 else str(offset + limit - 1)
        with _errors():
            try:
                answer = await self.client.get_object(
                    Bucket=self.bucket, Key=self.key(name), Range=f"bytes={offset}-{end}"
                )
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") == "InvalidRange":
                    return  # offset at (or past) the end: nothing to read
                raise
            async with answer["Body"] as body:
                async for chunk in body.iter_chunks(READ_CHUNK):
                    yield chunk

    async def get_range(self, name: str, offset: int, length: int) -> bytes:
        return b"".join([chunk async for chunk in self.read(name, offset, length)])

    # --- listing ---

    async def list_keys(
        self, prefix: str = "", start_after: str = "", limit: int = 1000
    ) -> list[Listed]:
        """Keys under `prefix` (relative names), in key order, after `start_after`: a keyset
        cursor that needs no server-side state."""
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.key(prefix),
            "MaxKeys": min(limit, 1000),
        }
        if start_after:
            args["StartAfter"] = self.key(start_after)
        with _errors():
            answer = await self.client.list_objects_v2(**args)
        cut = len(self.prefix)
        return [
            Listed(item["Key"][cut:], item["Size"], item["ETag"].strip('"'))
            for item in answer.get("Contents", [])
        ]

    async def delete_prefix(self, prefix: str) -> int:
        """Every object under `prefix` (and every unfinished upload there); returns the count."""
        count = 0
        while True:
            found = await self.list_keys(prefix, limit=1000)
            if not found:
                break
            with _errors():
                await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.key(f.key)} for f in found], "Quiet": True},
                )
            count += len(found)
        with _errors():
            answer = await self.client.list_multipart_uploads(
                Bucket=self.bucket, Prefix=self.key(prefix)
            )
        for upload in answer.get("Uploads", []):
            with contextlib.suppress(ObjectNotFound), _errors():
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        return count

    # --- multipart ---

    async def create_multipart(self, name: str, content_type: str = "") -> str:
        extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        with _errors():
            answer = await self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key(name), **extra
            )
        return answer["UploadId"]

    async def upload_part(
        self, name: str, upload_id: str, number: int, data: bytes | io.BytesIO
    ) -> Part:
        with _errors():
            answer = await self.client.upload_part(
                Bucket=self.bucket,
                Key=self.key(name),
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
        return Part(number, answer["ETag"].strip('"'))

    async def list_parts(self, name: str, upload_id: str) -> list[Part]:
        """Parts the store has: a process that died between a part's upload and saving its ETag
        learns it here instead of uploading it again."""
        parts: list[Part] = []
        marker = 0
        while True:
            with _errors():
                answer = await self.client.list_parts(
                    Bucket=self.bucket,
                    Key=self.key(name),
                    UploadId=upload_id,
                    PartNumberMarker=marker,
                )
            parts += [Part(p["PartNumber"], p["ETag"].strip('"')) for p in answer.get("Parts", [])]
            if not answer.get("IsTruncated"):
                return parts
            marker = answer["NextPartNumberMarker"]

    async def complete_multipart(self, name: str, upload_id: str, parts: Sequence[Part]) -> str:
        """Returns the object's ETag."""
        with _errors():
            answer = await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key(name),
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": p.number, "ETag": f'"{p.etag}"'}
                        for p in sorted(parts, key=lambda p: p.number)
                    ]
                },
            )
        return answer["ETag"].strip('"')

    async def abort_multipart(self, name: str, upload_id: str) -> None:
        with contextlib.suppress(ObjectNotFound), _errors():
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key(name), UploadId=upload_id
            )

    # --- downloads and the bucket ---

    async def presign_get(self, name: str, expires_seconds: int, filename_header: str = "") -> str:
        """A GET URL for the public endpoint; `filename_header` becomes the response's
        Content-Disposition (signed, so it cannot be changed by whoever holds the URL)."""
        if self._signer is None:
            raise RuntimeError("ObjectStore used outside `async with`")
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(name)}
        if filename_header:
            params["ResponseContentDisposition"] = filename_header
        return await self._signer.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_seconds
        )

    async def abort_incomplete_uploads_after(self, days: int) -> None:
        """The bucket lifecycle rule that removes multipart uploads abandoned for `days`
        (a deleted session's, a replica's lost for good). Replaces the bucket's rules."""
        with _errors():
            await self.client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": "tapedeck-abort-incomplete-multipart",
                            "Filter": {"Prefix": self.prefix},
                            "Status": "Enabled",
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
                        }
                    ]
                },
            )


class Presigner:
    """Download URLs for the api. Presigning is computed locally (no request to the store); the
    client is opened at the first URL and closed with the app."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._store = ObjectStore(settings)
        self._opened = False
        self._lock = asyncio.Lock()

    async def url(self, name: str, disposition: str) -> str:
        async with self._lock:
            if not self._opened:
                await self._store.__aenter__()
                self._opened = True
        return await self._store.presign_get(name, self.settings.download_expiry, disposition)

    async def close(self) -> None:
        async with self._lock:
            if self._opened:
                await self._store.__aexit__(None, None, None)
                self._opened = False
