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


# --- outputs shipped as they grow ------------------------------------------------------------
#
# An output (the MP4 a follower uploads while the session records) ships like a track: every
# whole part becomes the next part of one multipart upload while it grows. Unlike a track it
# may rewrite one region of its committed bytes once (the MP4's head, ftyp + moov + the media
# box's header, filled in last), so the parts that hold the head stay on the volume: a rewrite
# is applied there and those parts are uploaded again at publish (S3 keeps the last upload of
# a part number). Every other shipped part leaves the volume at once.


class OutputUpload(BaseModel):
    """`{id}/.{name}.{token}.output-upload.json`: an output's multipart upload in progress, so
    that a restart (which voids every output stream) finds and aborts it."""

    name: str
    upload_id: str


@dataclass(frozen=True)
class NextBox:
    offset: int


@dataclass(frozen=True)
class HeadEnds:
    """The media box starts here: the head is every byte before `end` (its 16-byte header
    included: FFmpeg writes the box's size there, or turns the placeholder before it into a
    64-bit size)."""

    end: int


@dataclass(frozen=True)
class NeedBytes:
    """The next box header is not committed yet."""


@dataclass(frozen=True)
class NotMp4:
    """Not a box: the output has no MP4 head to find."""


BoxStep = NextBox | HeadEnds | NeedBytes | NotMp4
_BOX_TYPE_BYTES = frozenset(range(0x20, 0x7F)) | {0xA9}


def next_box(offset: int, header: bytes) -> BoxStep:
    """One step of the walk over an MP4's top-level boxes: `header` is up to 16 committed
    bytes at `offset` (the start of a box). The walk ends at the media box (`mdat`)."""
    if len(header) < 8:
        return NeedBytes()
    size = int.from_bytes(header[:4], "big")
    kind = header[4:8]
    if not all(b in _BOX_TYPE_BYTES for b in kind):
        return NotMp4()
    if kind == b"mdat":
        return HeadEnds(offset + 16)
    if size == 1:
        if len(header) < 16:
            return NeedBytes()
        size = int.from_bytes(header[8:16], "big")
    if size < 8:
        return NotMp4()  # 0 ("to the end") or damaged: no media box after it
    return NextBox(offset + size)


def head_window(head_end: int | None, part_size: int) -> int:
    """The bytes the volume keeps until publish: the parts holding the head (at least part 1;
    part 1 alone when the output is not an MP4, whose one rewrite may then only be there)."""
    if head_end is None:
        return part_size
    return max(1, -(-head_end // part_size)) * part_size


def parts_of(start: int, end: int, part_size: int) -> range:
    """The part numbers that hold bytes [start, end)."""
    if end <= start:
        return range(0)
    return range(start // part_size + 1, (end - 1) // part_size + 2)


def rewrite_reaches_trimmed(
    start: int, end: int, size: int, part_size: int, trimmed: tuple[int, int]
) -> bool:
    """Whether a rewrite of [start, end) needs bytes no longer on the volume: the parts it
    touches are uploaded again whole, from the volume."""
    touched = parts_of(start, end, part_size)
    if not touched:
        return False
    low = (touched[0] - 1) * part_size
    high = min(touched[-1] * part_size, size)
    return low < trimmed[1] and trimmed[0] < high
