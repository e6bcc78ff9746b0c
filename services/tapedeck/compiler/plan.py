"""Probe results → FFmpeg arguments. Pure: no I/O, no subprocess, so every rule is unit-tested.

Codecs (SPEC §8): H.264 video is stream-copied, so the common Chromium case
(`video/webm;codecs=h264,opus`) is a remux that takes seconds, not a re-encode. Anything
else (VP8, VP9, AV1), or H.264 taller than `max_height`, is encoded with libx264. Audio
becomes AAC unless it already is (Safari records MP4/AAC).

Alignment. Camera, microphone and screen are separate MediaRecorders, each with its own
WebM whose timestamps count from *its own* start, and the browser reports each start as a
wall-clock `startedAt` (epoch ms). A track's timestamp `t` therefore happened at
`startedAt + t`; placing every track on that shared clock is what keeps lips in sync.

- FFmpeg (without `-copyts`) rebases every input so its earliest packet is at 0. An input
  whose first packet is not at 0 (a recorder that started its clock before the first
  frame; Opus pre-skip) would be pulled earlier by that amount, so we add it back.
  `-copyts` would avoid the rebase, but FFmpeg's `-progress` time is then offset by the
  first timestamp it happened to report (FFmpeg 5.x), which breaks progress.
- The delay goes in `-itsoffset` on the input: it works with stream copy, costs nothing,
  and lands in the MP4 as an edit list. Transcoded audio additionally goes through
  `aresample=async=1:first_pts=0`, which turns a leading gap (and gaps from dropped audio
  later on) into real silence, so players that ignore edit lists stay in sync too.
- The earliest track defines 0; every offset is ≥ 0 relative to it.
- A first timestamp more than `MAX_LEAD_SECONDS` in is not a recorder's start-up
  latency but a foreign clock (e.g. a capture timestamp); such a track is placed by its
  first packet instead, rather than padded with minutes of nothing.
- A track without `started_at` (None, or protobuf's unset 0) is assumed to have started
  with the earliest one.
- So is a track whose `started_at` is more than `MAX_START_SPREAD` seconds after the earliest
  (`trusted_starts`). The recorders of one session start within a second of each other, a
  late-opening one within seconds; minutes, hours or years apart is a wrong clock, and its
  offset would make the MP4 that long (transcoded audio encoded as silence all along).

Transcoded video is letterboxed into a fixed even size: libx264 needs even dimensions,
and screen captures change resolution when the shared window is resized, which an
encoder that was opened at one size would otherwise reject.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tapedeck.compiler.media import MediaInfo, StreamInfo

TrackName = Literal["video", "audio", "screen"]
TRACK_NAMES: tuple[TrackName, ...] = ("video", "audio", "screen")
VIDEO_SOURCES: tuple[TrackName, ...] = ("video", "screen")
MAX_LEAD_SECONDS = 10.0
MAX_START_SPREAD = 60.0
"""Seconds a track's start may lie after the earliest's and still place it (see above)."""
AUDIO_BITRATE = "128k"
_HEAD = ("-hide_banner", "-nostdin", "-loglevel", "warning", "-y")


class PlanError(ValueError):
    """The inputs cannot make an MP4 (nothing usable, or contradictory arguments)."""


class OutputOptions(BaseModel):
    """Encoder choices; field aliases match the CRD's `spec.output` (camelCase)."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    video_codec: Literal["auto", "h264"] = "auto"
    """auto: copy H.264, encode the rest. h264: always re-encode with libx264."""
    crf: int = Field(default=23, ge=0, le=51)
    preset: Literal[
        "ultrafast",
        "superfast",
        "veryfast",
        "faster",
        "fast",
        "medium",
        "slow",
        "slower",
        "veryslow",
    ] = "veryfast"
    max_height: int | None = Field(default=None, ge=16, le=8640)
    hls: bool | None = None
    """Also write HLS; None: by length (`Settings.hls_min_duration`, compiler/extras.py)."""


@dataclass(frozen=True, slots=True)
class TrackInput:
    name: str
    """video, audio or screen (checked by `plan_compile`)."""
    path: str
    started_at: float | None
    """Wall-clock start from the browser, epoch milliseconds (None: unknown)."""
    info: MediaInfo


@dataclass(frozen=True, slots=True)
class CompilePlan:
    args: tuple[str, ...]
    """FFmpeg argv without the binary."""
    output_path: str
    expected_duration: float
    """Seconds of output, the denominator of progress."""
    summary: str
    video_codec: str | None
    """Codec of the output's video stream (None: no video)."""
    audio_codec: str | None
    offsets: Mapping[str, float] = field(default_factory=dict)
    """`-itsoffset` per used track name, seconds."""
    stages: tuple[Stage, ...] = ()
    """The same compile in steps: each encoded stream on its own (see `Stage`)..."""
    mux: tuple[MuxInput, ...] = ()
    """...then every stream stream-copied into the MP4 (`mux_args`)."""

    def stage(self, kind: str) -> Stage | None:
        return next((s for s in self.stages if s.kind == kind), None)


@dataclass(frozen=True, slots=True)
class Stage:
    """One stream encoded on its own by an FFmpeg that reads one track.

    Input options, map, filters and encoder are those of the one-shot command, so the packets
    it writes are the ones the one-shot command would have muxed: encoding is deterministic
    and sees the same decoded input. The track may be the finished file or a pipe fed while
    the track is still being recorded (FFmpeg reads a live WebM front to back either way),
    which is what lets a compile start before the recording ends.
    """

    kind: Literal["video", "audio"]
    track: str
    input_args: tuple[str, ...]
    output_args: tuple[str, ...]
    output_path: str

    def args(self, source: str) -> tuple[str, ...]:
        """FFmpeg argv (without the binary) reading `source` (a path, or `pipe:0`)."""
        return (
            *_HEAD,
            *self.input_args,
            "-i",
            source,
            *self.output_args,
            "-progress",
            "pipe:1",
            "-nostats",
            self.output_path,
        )


@dataclass(frozen=True, slots=True)
class MuxInput:
    """One stream of the final MP4: taken from a track as recorded, or from a stage's output."""

    path: str
    stream: int
    offset: float
    """`-itsoffset` for a track (as in the one-shot command)."""
    stage: str | None = None
    """Kind of the stage whose output this is: its offset is that file's own start time, so
    FFmpeg's rebasing of every input to 0 leaves the stage's timestamps as they were."""


def mux_args(plan: CompilePlan, stage_starts: Mapping[str, float] | None = None) -> tuple[str, ...]:
    """FFmpeg argv that stream-copies `plan.mux` into `plan.output_path`.

    `stage_starts`: each stage output's start time in seconds (what FFmpeg will subtract).
    """
    if not plan.stages:
        return plan.args
    starts = stage_starts or {}
    args: list[str] = [*_HEAD]
    opened: dict[str, int] = {}
    for use in plan.mux:
        if use.path in opened:
            continue
        offset = starts.get(use.stage, 0.0) if use.stage else use.offset
        if offset:
            args += ["-itsoffset", _seconds(offset)]
        args += ["-i", use.path]
        opened[use.path] = len(opened)
    for use in plan.mux:
        args += ["-map", f"{opened[use.path]}:{use.stream}"]
    args += [
        "-c", "copy", "-movflags", "+faststart", "-f", "mp4",
        "-progress", "pipe:1", "-nostats",
        plan.output_path,
    ]  # fmt: skip
    return tuple(args)


@dataclass(frozen=True, slots=True)
class _Use:
    """One stream taken from one track."""

    track: TrackInput
    stream: StreamInfo


def _pick_video(by_name: Mapping[str, TrackInput]) -> _Use | None:
    for name in VIDEO_SOURCES:
        track = by_name.get(name)
        if track is not None and track.info.video is not None:
            return _Use(track, track.info.video)
    return None


def _pick_audio(by_name: Mapping[str, TrackInput], video: _Use | None) -> _Use | None:
    order: list[str] = ["audio"]
    if video is not None:
        order.append(video.track.name)
    order += [n for n in VIDEO_SOURCES if n not in order]
    for name in order:
        track = by_name.get(name)
        if track is not None and track.info.audio is not None:
            return _Use(track, track.info.audio)
    return None


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def target_size(
    width: int | None, height: int | None, max_height: int | None
) -> tuple[int, int] | None:
    """Even output size keeping the aspect ratio, no taller than `max_height`."""
    if not width or not height:
        return None
    out_h = height if max_height is None else min(height, max_height)
    out_h = _even(out_h)
    out_w = _even(round(width * out_h / height / 2) * 2)
    return out_w, out_h


def _video_filter(stream: StreamInfo, max_height: int | None) -> str:
    size = target_size(stream.width, stream.height, max_height)
    if size is None:
        limit = "ih" if max_height is None else f"min(ih\\,{max_height})"
        return f"scale=w=-2:h=trunc({limit}/2)*2,setsar=1"
    w, h = size
    return (
        f"scale={w}:{h}:force_original_aspect_ratio=decrease,"
        f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1"
    )


def _needs_transcode(stream: StreamInfo, options: OutputOptions) -> str | None:
    """Why the video must be re-encoded, or None when stream copy is right."""
    if stream.codec != "h264":
        return f"{stream.codec} is not H.264"
    if options.video_codec == "h264":
        return "re-encode requested"
    if options.max_height is not None and (stream.height or 0) > options.max_height:
        return f"{stream.height}p is taller than {options.max_height}p"
    return None


def _wall_clock(started_at: float | None) -> float | None:
    """A usable epoch-ms start, or None: protobuf's unset 0 must not become 1970."""
    if started_at is None or not math.isfinite(started_at) or started_at <= 0:
        return None
    return float(started_at)


@dataclass(frozen=True, slots=True)
class TrustedStarts:
    starts: Mapping[str, float | None]
    """Epoch ms per track, None where unknown (missing, or ignored)."""
    ignored: Mapping[str, float]
    """Tracks whose start was ignored: milliseconds after the earliest start."""


def trusted_starts(started_at: Mapping[str, float | None]) -> TrustedStarts:
    """The starts to place tracks by: a start more than `MAX_START_SPREAD` after the earliest
    counts as unknown, like a missing one (see the module docstring)."""
    starts = {name: _wall_clock(value) for name, value in started_at.items()}
    known = [v for v in starts.values() if v is not None]
    if not known:
        return TrustedStarts(starts, {})
    earliest = min(known)
    ignored = {
        name: value - earliest
        for name, value in starts.items()
        if value is not None and value - earliest > MAX_START_SPREAD * 1000
    }
    return TrustedStarts({n: None if n in ignored else v for n, v in starts.items()}, ignored)


def _span(ms: float) -> str:
    seconds = ms / 1000
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _round(value: float) -> float:
    return round(value, 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def _seconds(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def _check_inputs(inputs: Sequence[TrackInput], output_path: str) -> dict[str, TrackInput]:
    by_name: dict[str, TrackInput] = {}
    for track in inputs:
        if track.name not in TRACK_NAMES:
            raise PlanError(f"unknown track {track.name!r}: expected video, audio or screen")
        if track.name in by_name:
            raise PlanError(f"track {track.name!r} given twice")
        by_name[track.name] = track
    out = os.path.normpath(output_path)
    if any(os.path.normpath(t.path) == out for t in inputs):
        raise PlanError("the output path is one of the inputs; refusing to overwrite a track")
    return by_name


def plan_compile(
    inputs: Sequence[TrackInput], output_path: str, options: OutputOptions | None = None
) -> CompilePlan:
    """Decide streams, codecs and offsets for one MP4 from probed tracks."""
    options = options or OutputOptions()
    by_name = _check_inputs(inputs, output_path)
    video = _pick_video(by_name)
    audio = _pick_audio(by_name, video)
    if video is None and audio is None:
        names = ", ".join(t.name for t in inputs) or "none"
        raise PlanError(f"no usable audio or video in the recorded tracks (tracks: {names})")
    uses = [u for u in (video, audio) if u is not None]

    # Inputs in first-use order; a track that gives both streams is opened once.
    tracks: list[TrackInput] = []
    for use in uses:
        if use.track not in tracks:
            tracks.append(use.track)

    # Place each track on the shared wall clock (see the module docstring).
    trusted = trusted_starts({t.name: t.started_at for t in tracks})
    starts = trusted.starts
    known = [v for v in starts.values() if v is not None]
    t0 = min(known) if known else 0.0
    placed: dict[str, float] = {}
    for track in tracks:
        start = starts[track.name]
        wall = 0.0 if start is None else (start - t0) / 1000.0
        lead = min(u.stream.start or 0.0 for u in uses if u.track is track)
        origin = lead if lead > MAX_LEAD_SECONDS else 0.0
        placed[track.name] = wall - origin
    zero = min(placed[u.track.name] + (u.stream.start or 0.0) for u in uses)
    # FFmpeg subtracts each input's own start (`info.start`); -itsoffset adds it back.
    offsets: dict[str, float] = {
        t.name: _round(placed[t.name] + t.info.start - zero) for t in tracks
    }
    expected = max(offsets[u.track.name] + (u.stream.end or 0.0) - u.track.info.start for u in uses)

    args: list[str] = [*_HEAD]
    for track in tracks:
        if offsets[track.name]:
            args += ["-itsoffset", _seconds(offsets[track.name])]
        args += ["-i", track.path]
    index = {t.name: i for i, t in enumerate(tracks)}
    for use in uses:
        args += ["-map", f"{index[use.track.name]}:{use.stream.index}"]

    parts: list[str] = []
    encoders: dict[str, list[str]] = {}  # kind → encoder arguments, for streams not copied
    video_codec: str | None = None
    if video is not None:
        video_codec = "h264"
        source = "" if video.track.name == "video" else f" from {video.track.name}"
        reason = _needs_transcode(video.stream, options)
        if reason is None:
            args += ["-c:v", "copy"]
            parts.append(f"copy h264 video{source}")
        else:
            size = target_size(video.stream.width, video.stream.height, options.max_height)
            encoders["video"] = [
                "-c:v", "libx264", "-preset", options.preset, "-crf", str(options.crf),
                "-pix_fmt", "yuv420p", "-vf", _video_filter(video.stream, options.max_height),
                # Keep the recorder's own frame times (WebM is variable frame rate);
                # a guessed constant rate could duplicate frames by the hundred.
                "-fps_mode:v", "vfr", "-enc_time_base:v", "1:1000",
            ]  # fmt: skip
            args += encoders["video"]
            dims = f", {size[0]}x{size[1]}" if size else ""
            parts.append(
                f"{video.stream.codec}→h264 video{source} "
                f"({reason}; crf {options.crf}, {options.preset}{dims})"
            )
    audio_codec: str | None = None
    if audio is not None:
        audio_codec = "aac"
        source = "" if audio.track.name == "audio" else f" from {audio.track.name}"
        if audio.stream.codec == "aac":
            args += ["-c:a", "copy"]
            parts.append(f"copy aac audio{source}")
        else:
            encoders["audio"] = [
                "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-af", "aresample=async=1:first_pts=0",
            ]  # fmt: skip
            args += encoders["audio"]
            parts.append(f"{audio.stream.codec}→aac audio{source}")
    for name, after in trusted.ignored.items():
        parts.append(
            f"{name} start ignored ({_span(after)} after the earliest; "
            f"over {MAX_START_SPREAD:g} s is a wrong clock)"
        )
    for name, offset in offsets.items():
        if offset >= 0.0005:
            parts.append(f"{name} delayed {offset:.3f} s")

    args += [
        "-movflags", "+faststart", "-f", "mp4",
        "-progress", "pipe:1", "-nostats",
        output_path,
    ]  # fmt: skip
    stages: list[Stage] = []
    mux: list[MuxInput] = []
    chosen: list[tuple[str, _Use | None]] = [("video", video), ("audio", audio)]
    for kind, picked in chosen:
        if picked is None:
            continue
        use = picked
        name = use.track.name
        if kind not in encoders:
            mux.append(MuxInput(use.track.path, use.stream.index, offsets[name]))
            continue
        offset = offsets[name]
        stage = Stage(
            kind="video" if kind == "video" else "audio",
            track=name,
            input_args=("-itsoffset", _seconds(offset)) if offset else (),
            output_args=("-map", f"0:{use.stream.index}", *encoders[kind], "-f", "mp4"),
            output_path=f"{output_path}.{kind}.mp4",
        )
        stages.append(stage)
        mux.append(MuxInput(stage.output_path, 0, 0.0, stage=kind))
    return CompilePlan(
        args=tuple(args),
        output_path=output_path,
        expected_duration=max(0.0, expected),
        summary=", ".join(parts),
        video_codec=video_codec,
        audio_codec=audio_codec,
        offsets=offsets,
        stages=tuple(stages),
        mux=tuple(mux),
    )
