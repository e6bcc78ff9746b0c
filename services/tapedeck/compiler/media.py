"""What a media file contains, as plain data: planning a compile needs it, and whoever plans
(the operator, the api) must not need PyAV, which only the compile image installs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StreamKind = Literal["video", "audio"]


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One audio or video stream. Times are seconds on the file's own timeline."""

    index: int
    kind: StreamKind
    codec: str
    packets: int = 0
    start: float | None = None
    """Smallest packet pts (None when the stream has no packets)."""
    end: float | None = None
    """Largest packet pts + its duration."""
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None

    @property
    def duration(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max(0.0, self.end - self.start)

    @property
    def usable(self) -> bool:
        """A stream FFmpeg can actually take media from (a header alone is not enough)."""
        return self.packets > 0 and self.start is not None


@dataclass(frozen=True, slots=True)
class MediaInfo:
    path: str
    format_name: str
    size: int
    streams: tuple[StreamInfo, ...]
    truncated: bool = False
    """Demuxing stopped at a damaged tail; the packets before it are still usable."""

    @property
    def start(self) -> float:
        """Earliest packet pts of any stream: the point FFmpeg rebases this input on."""
        starts = [s.start for s in self.streams if s.start is not None]
        return min(starts) if starts else 0.0

    @property
    def end(self) -> float:
        ends = [s.end for s in self.streams if s.end is not None]
        return max(ends) if ends else 0.0

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    def first(self, kind: StreamKind) -> StreamInfo | None:
        """The first usable stream of a kind (what a compile would take)."""
        return next((s for s in self.streams if s.kind == kind and s.usable), None)

    @property
    def video(self) -> StreamInfo | None:
        return self.first("video")

    @property
    def audio(self) -> StreamInfo | None:
        return self.first("audio")
