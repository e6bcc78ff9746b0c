"""What a media file contains, read with PyAV (so the runtime never needs ffprobe).

MediaRecorder WebM has no duration in its header (it is written live, never rewritten),
so start and end are measured by demuxing every packet: no decoding, so an hour of media
takes about a second. The same pass proves the file is readable; a truncated tail (a
browser that crashed mid-cluster) is tolerated because FFmpeg tolerates it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av

from tapedeck.compiler.media import MediaInfo, StreamInfo


class Readable(Protocol):
    """A source PyAV reads front to back (no `seek`)."""

    def read(self, n: int = -1, /) -> bytes: ...


class ProbeError(Exception):
    """The file is missing, empty or not audio/video FFmpeg can read."""


@dataclass(slots=True)
class _Extent:
    """Packet count and timestamp bounds of one stream, in its own time base (integers: a
    Fraction per packet made probing an hour of media take seconds)."""

    packets: int = 0
    start: int | None = None
    end: int | None = None

    def bounds(self, time_base: Fraction | None) -> tuple[Fraction | None, Fraction | None]:
        if time_base is None or self.start is None or self.end is None:
            return None, None
        return self.start * time_base, self.end * time_base


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).rstrip(".")


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Read stream codecs, sizes and the real start/end of every stream in `path`."""
    file = Path(path)
    name = file.name
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise ProbeError(f"{name}: cannot read the file ({exc.strerror or exc})") from exc
    if size == 0:
        raise ProbeError(f"{name} is empty (0 bytes): nothing was recorded")
    return _probe(str(file), name, str(file), lambda: size)


def probe_stream(source: Readable, name: str, path: str, size: Callable[[], int]) -> MediaInfo:
    """`probe` of a file that is still being written, read front to back from `source`.

    `source.read` blocks until more bytes arrive and returns b"" once the file is complete,
    so the result is ready as soon as the last byte is; it equals `probe(path)` of the
    finished file (same demuxer, same packets). `size()` gives the final size.
    """
    return _probe(source, name, path, size)


def _probe(source: str | Readable, name: str, path: str, size: Callable[[], int]) -> MediaInfo:
    try:
        container = av.open(source, mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        if size() == 0:
            raise ProbeError(f"{name} is empty (0 bytes): nothing was recorded") from exc
        raise ProbeError(f"{name} is not a readable audio/video file: {_reason(exc)}") from exc
    with container:
        selected = [s for s in container.streams if isinstance(s, av.VideoStream | av.AudioStream)]
        extents = {s.index: _Extent() for s in selected}
        truncated = False
        if selected:
            try:
                for packet in container.demux(*selected):
                    _extend(extents, packet)
            except (av.FFmpegError, ValueError, EOFError):
                # A damaged tail: keep what was readable, like FFmpeg does.
                if not any(e.packets for e in extents.values()):
                    raise ProbeError(
                        f"{name} is not a readable audio/video file: no packet could be read"
                    ) from None
                truncated = True
        streams = tuple(_stream_info(s, extents[s.index]) for s in selected)
        format_name = container.format.name
    if not streams:
        raise ProbeError(f"{name} contains no audio or video stream")
    return MediaInfo(
        path=path,
        format_name=format_name,
        size=size(),
        streams=streams,
        truncated=truncated,
    )


def _extend(extents: dict[int, _Extent], packet: av.Packet[av.stream.Stream]) -> None:
    if packet.size == 0:  # PyAV's end-of-stream flush packets
        return
    ts = packet.pts if packet.pts is not None else packet.dts
    extent = extents.get(packet.stream.index)
    if extent is None or ts is None or packet.time_base is None:
        return
    end = ts + max(packet.duration or 0, 0)
    extent.packets += 1
    if extent.start is None or ts < extent.start:
        extent.start = ts
    if extent.end is None or end > extent.end:
        extent.end = end


def _stream_info(stream: av.VideoStream | av.AudioStream, extent: _Extent) -> StreamInfo:
    time_base = Fraction(stream.time_base) if stream.time_base is not None else None
    start, end = extent.bounds(time_base)
    if stream.start_time is not None and stream.time_base is not None and extent.packets:
        # libavformat's own start time is what FFmpeg rebases on; it already accounts
        # for edit lists and codec priming (an MP4's AAC starts at 0, not at -1024).
        start = stream.start_time * Fraction(stream.time_base)
    info = StreamInfo(
        index=stream.index,
        kind="video" if isinstance(stream, av.VideoStream) else "audio",
        codec=stream.codec_context.name,
        packets=extent.packets,
        start=float(start) if start is not None else None,
        end=float(end) if end is not None else None,
    )
    if isinstance(stream, av.VideoStream):
        video = stream.codec_context
        return replace(info, width=video.width or None, height=video.height or None)
    audio = stream.codec_context
    return replace(info, sample_rate=audio.sample_rate or None, channels=audio.channels or None)
