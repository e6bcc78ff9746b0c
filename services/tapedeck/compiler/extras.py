"""What a compile writes beside the MP4: poster, storyboard, HLS. Pure planning, no I/O.

Every one is made from the compiled MP4 (not the tracks), so the poster and the storyboard show
what the player shows, and the HLS segments are the MP4's own packets (`-c copy`).

- Poster: a frame of a window a few seconds in (`POSTER_SKIP`), never the first frame (a
  browser recording's first frames are often black while the camera wakes up). FFmpeg samples
  the window's luma (`signalstats`, `POSTER_SAMPLES_PER_SECOND`) and the poster is the
  brightest sample that is not blown out (`pick_poster`). FFmpeg's `thumbnail` filter was
  tried first: its "most representative" frame is the average one, which on a dark camera
  (Chromium's fake device: mean luma cycling 9-33) was as dark as a black frame.
- Storyboard: one frame every `interval` seconds, scaled into fixed `TILE_W`x`TILE_H` cells
  (letterboxed) of a `COLUMNS`-wide sprite; the WebVTT index names each cell with
  `#xywh=`, which is all a player's seek-bar preview needs.
- HLS: CMAF (fMP4) segments of about `HLS_SEGMENT_SECONDS`, one rendition, a VOD playlist.
  Default on for recordings longer than `Settings.hls_min_seconds` (docs/decisions.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tapedeck.sessions import HLS_PLAYLIST, POSTER, STORYBOARD_SPRITE, STORYBOARD_VTT

POSTER_SKIP = 2.0
"""Seconds skipped before the poster's window (or a tenth of a short recording)."""
POSTER_WINDOW = 8.0
POSTER_WIDTH = 640
POSTER_SAMPLES_PER_SECOND = 4
BLOWN_OUT = 200.0
"""Mean luma above which a frame is a flash or a white screen, not a picture."""
LUMA_FILE = "luma.txt"
TILE_W, TILE_H = 160, 90
COLUMNS = 10
MAX_TILES = 100
"""A sprite of at most 10x10 cells (1600x900): one small JPEG, whatever the length."""
HLS_SEGMENT_SECONDS = 6
HLS_INIT = "hls-init.mp4"
HLS_SEGMENTS = "hls-%05d.m4s"
_HEAD = ("-hide_banner", "-nostdin", "-loglevel", "error", "-y")


@dataclass(frozen=True, slots=True)
class Job:
    """One FFmpeg run (argv without the binary) and the named outputs it leaves in its dir."""

    name: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExtrasPlan:
    jobs: tuple[Job, ...]
    storyboard_vtt: str | None
    """The WebVTT index's text (written by the caller), or None without a storyboard."""


def poster_window(duration: float) -> tuple[float, float]:
    """(start, length) of the window the poster is picked from."""
    start = min(POSTER_SKIP, duration * 0.1) if duration > 0 else 0.0
    length = min(POSTER_WINDOW, max(duration - start, 0.0)) if duration > 0 else POSTER_WINDOW
    return round(start, 3), round(max(length, 0.1), 3)


def parse_luma(text: str) -> list[tuple[float, float]]:
    """(seconds into the window, mean luma) from `metadata=mode=print` of `signalstats`."""
    samples: list[tuple[float, float]] = []
    at: float | None = None
    for line in text.splitlines():
        if line.startswith("frame:"):
            _, _, value = line.rpartition("pts_time:")
            try:
                at = float(value)
            except ValueError:
                at = None
        elif line.startswith("lavfi.signalstats.YAVG=") and at is not None:
            try:
                samples.append((at, float(line.partition("=")[2])))
            except ValueError:
                pass
            at = None
    return samples


def pick_poster(samples: list[tuple[float, float]], start: float) -> float:
    """The poster's time: the brightest sample that is not blown out (the earliest of equals),
    else the window's start."""
    usable = [(luma, -at) for at, luma in samples if luma <= BLOWN_OUT]
    if not usable:
        return start
    _, at = max(usable)
    return round(start - at, 3)


def poster_job(mp4: str, at: float, out_dir: str) -> Job:
    """The frame at `at` seconds as the poster JPEG (an accurate seek: the frame itself)."""
    return Job(
        "poster",
        (
            *_HEAD,
            *("-ss", f"{at:g}", "-i", mp4, "-an", "-sn", "-frames:v", "1", "-q:v", "3"),
            *("-vf", f"scale='min({POSTER_WIDTH},iw)':-2"),
            *("-progress", "pipe:1", f"{out_dir}/{POSTER}"),
        ),
    )


def storyboard_interval(duration: float) -> int:
    """Whole seconds between cells: one a second, coarser so at most `MAX_TILES` cells."""
    return max(1, math.ceil(duration / MAX_TILES)) if duration > 0 else 1


KEYFRAMES_ONLY_INTERVAL = 10
"""Cells this far apart (recordings of about 17 minutes and more) are taken from keyframes
only: decoding every frame of an hour costs minutes of CPU, and a preview a few seconds off is
still a preview of that stretch."""


def keyframes_only(duration: float) -> bool:
    return storyboard_interval(duration) >= KEYFRAMES_ONLY_INTERVAL


def storyboard_cells(duration: float) -> int:
    return max(1, min(MAX_TILES, math.ceil(duration / storyboard_interval(duration))))


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def storyboard_vtt(duration: float, sprite_url: str = STORYBOARD_SPRITE) -> str:
    """The WebVTT index: cue k covers [k*interval, (k+1)*interval) and names cell k."""
    interval = storyboard_interval(duration)
    lines = ["WEBVTT", ""]
    for k in range(storyboard_cells(duration)):
        start = k * interval
        end = min((k + 1) * interval, duration) if duration > 0 else start + interval
        if end <= start:
            break
        x, y = (k % COLUMNS) * TILE_W, (k // COLUMNS) * TILE_H
        lines += [
            f"{_timestamp(start)} --> {_timestamp(end)}",
            f"{sprite_url}#xywh={x},{y},{TILE_W},{TILE_H}",
            "",
        ]
    return "\n".join(lines)


def want_hls(duration: float, requested: bool | None, min_seconds: float) -> bool:
    """Per compile: `requested` wins; otherwise HLS for recordings of `min_seconds` or more."""
    if requested is not None:
        return requested
    return duration >= min_seconds


def plan_extras(
    mp4: str, duration: float, has_video: bool, hls: bool, dirs: dict[str, str]
) -> ExtrasPlan:
    """The FFmpeg runs for `mp4` (`duration` seconds). `dirs`: job name → its output dir.

    Without video there is no poster or storyboard; HLS still applies (audio only).
    """
    jobs: list[Job] = []
    vtt = None
    if has_video:
        start, length = poster_window(duration)
        # The luma of the window's samples; the caller picks (`pick_poster`), then `poster_job`.
        jobs.append(
            Job(
                "poster-luma",
                (
                    *_HEAD,
                    *("-ss", f"{start:g}", "-t", f"{length:g}", "-i", mp4, "-an", "-sn"),
                    "-vf",
                    f"fps={POSTER_SAMPLES_PER_SECOND},signalstats,"
                    f"metadata=mode=print:key=lavfi.signalstats.YAVG:"
                    f"file={dirs['poster']}/{LUMA_FILE}",
                    *("-progress", "pipe:1", "-f", "null", "-"),
                ),
            )
        )
        cells = storyboard_cells(duration)
        rows = math.ceil(cells / COLUMNS)
        columns = min(COLUMNS, cells)
        fit = (
            f"fps=1/{storyboard_interval(duration)},"
            f"scale={TILE_W}:{TILE_H}:force_original_aspect_ratio=decrease,"
            f"pad={TILE_W}:{TILE_H}:(ow-iw)/2:(oh-ih)/2,tile={columns}x{rows}"
        )
        jobs.append(
            Job(
                "storyboard",
                (
                    *_HEAD,
                    *(("-skip_frame", "nokey") if keyframes_only(duration) else ()),
                    *("-i", mp4, "-an", "-sn", "-vf", fit, "-frames:v", "1", "-q:v", "5"),
                    *("-progress", "pipe:1", f"{dirs['storyboard']}/{STORYBOARD_SPRITE}"),
                ),
            )
        )
        vtt = storyboard_vtt(duration)
    if hls:
        jobs.append(
            Job(
                "hls",
                (
                    *_HEAD,
                    *("-i", mp4, "-map", "0", "-c", "copy", "-f", "hls"),
                    *("-hls_segment_type", "fmp4", "-hls_time", str(HLS_SEGMENT_SECONDS)),
                    *("-hls_playlist_type", "vod", "-hls_flags", "independent_segments"),
                    *("-hls_fmp4_init_filename", HLS_INIT),
                    *("-hls_segment_filename", f"{dirs['hls']}/{HLS_SEGMENTS}"),
                    *("-progress", "pipe:1", f"{dirs['hls']}/{HLS_PLAYLIST}"),
                ),
            )
        )
    return ExtrasPlan(tuple(jobs), vtt)


__all__ = ["STORYBOARD_VTT", "ExtrasPlan", "Job", "plan_extras", "storyboard_vtt", "want_hls"]
