"""What the S3 tier does next for one track: pure planning, no I/O (storage/s3tier.py acts).

A track is shipped to the bucket while it records, as one multipart upload of equal parts of
`part_size` bytes (R2 demands equal parts; S3 wants >= 5 MiB but the last). Its `UploadState`
is persisted beside the session on the volume after every step, so a restarted storage
continues the same upload. Bytes below `punched` are gone from the volume (shipped, holes
punched in the file); the volume keeps the unshipped bytes plus a window of shipped ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel


class ShippedPart(BaseModel):
    number: int
    etag: str
    size: int


class UploadState(BaseModel):
    part_size: int
    upload_id: str = ""
    parts: list[ShippedPart] = []
    punched: int = 0
    """Bytes [0, punched) are no longer on the volume."""
    completed: bool = False
    size: int = 0
    """The object's size, once completed."""

    @property
    def shipped(self) -> int:
        return sum(p.size for p in self.parts)


@dataclass(frozen=True)
class Idle:
    """Nothing to do until more bytes are durable or the track finishes."""


@dataclass(frozen=True)
class CreateUpload:
    pass


@dataclass(frozen=True)
class UploadPart:
    number: int
    offset: int
    length: int


@dataclass(frozen=True)
class PutWhole:
    """A track that finished smaller than one part: one PUT (abandoning any upload begun)."""

    length: int


@dataclass(frozen=True)
class Complete:
    pass


Action = Idle | CreateUpload | UploadPart | PutWhole | Complete

MAX_PARTS = 10_000


def plan(state: UploadState, durable: int, finished: bool) -> Action:
    """The next step for a track whose durable size is `durable`."""
    if state.completed:
        return Idle()
    shipped = state.shipped
    if durable < shipped:
        raise ValueError(f"durable size {durable} below the shipped {shipped}")
    remaining = durable - shipped
    if not state.parts and finished and durable <= state.part_size:
        return PutWhole(durable)
    if remaining >= state.part_size or (finished and remaining > 0):
        if not state.upload_id:
            return CreateUpload()
        number = len(state.parts) + 1
        if number > MAX_PARTS:
            raise ValueError(f"a track of more than {MAX_PARTS} parts: raise the part size")
        return UploadPart(number, shipped, min(state.part_size, remaining))
    if finished:
        return Complete()
    return Idle()


def wake_at(state: UploadState) -> int | None:
    """The durable size from which `plan` has work for a live track (the next whole part);
    None once completed. Below it an append need not wake the shipper (a track's finish
    wakes it whatever its size)."""
    if state.completed:
        return None
    return state.shipped + state.part_size


def punch_to(state: UploadState, keep: int, page: int = 4096) -> int:
    """Where the volume's copy may start now: all of it goes once the object is complete;
    before that, shipped bytes older than the last `keep` (whole pages only)."""
    if state.completed:
        return state.size
    target = max(0, state.shipped - keep)
    return max(state.punched, target - target % page)


@dataclass(frozen=True)
class FromBucket:
    pass


@dataclass(frozen=True)
class FromVolume:
    pass


@dataclass(frozen=True)
class Shipped:
    """Shipped and punched, but the upload is not complete: S3 cannot read its parts yet."""


def read_source(state: UploadState | None, offset: int) -> FromBucket | FromVolume | Shipped:
    if state is None:
        return FromVolume()
    if state.completed:
        return FromBucket()
    if offset >= state.punched:
        return FromVolume()
    return Shipped()
