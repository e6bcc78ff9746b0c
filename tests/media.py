"""Test media in the shapes browsers record, made with the real FFmpeg binary.

Like MediaRecorder output, the files are written live (`-live 1`): no duration in the
header and no cues, so whatever reads them must measure them. H.264 goes into Matroska
with a `.webm` name, which is what Chromium's `video/webm;codecs=h264` really is (FFmpeg's
strict `webm` muxer refuses H.264). Sources are synthetic (testsrc2, sine) and encoders
run at their fastest settings so a fixture costs well under a second per second of media.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

import av

from tapedeck.settings import Settings

Size = tuple[int, int]


def ffmpeg_binary() -> str:
    """The FFmpeg the tests record with (TAPEDECK_FFMPEG, else PATH, else the wheel's)."""
    return Settings().ffmpeg_path()


def _record(
    path: str | os.PathLike[str],
    sources: list[str],
    codecs: list[str],
    muxer: str,
    seconds: float,
    start: float,
    ffmpeg: str | None,
) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [ffmpeg or ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    argv += sources
    argv += ["-t", f"{seconds:g}", *codecs]
    if start:
        argv += ["-output_ts_offset", f"{start:g}"]
    argv += ["-f", muxer, "-live", "1", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"making {out.name} failed: {done.stderr.strip()[-2000:]}")
    return out


def _testsrc(seconds: float, fps: int, size: Size) -> list[str]:
    w, h = size
    return ["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}:duration={seconds:g}"]


def _sine(seconds: float, frequency: int, sample_rate: int) -> list[str]:
    return [
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={frequency}:sample_rate={sample_rate}:duration={seconds:g}",
    ]


def _h264(fps: int) -> list[str]:
    # Baseline, no B-frames, a keyframe every ~2 s: what Chromium's encoder produces.
    return [
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", str(2 * fps),
    ]  # fmt: skip


def _vp8(fps: int) -> list[str]:
    return [
        "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
        "-b:v", "1M", "-g", str(2 * fps),
    ]  # fmt: skip


def _opus() -> list[str]:
    return ["-c:a", "libopus", "-b:a", "64k", "-ar", "48000"]


def make_h264_webm(
    path: str | os.PathLike[str],
    seconds: float,
    fps: int = 30,
    size: Size = (640, 360),
    *,
    start: float = 0.0,
    ffmpeg: str | None = None,
) -> Path:
    """H.264 in Matroska named .webm (Chromium). `start`: first timestamp, seconds."""
    return _record(
        path, _testsrc(seconds, fps, size), _h264(fps), "matroska", seconds, start, ffmpeg
    )


def make_vp8_webm(
    path: str | os.PathLike[str],
    seconds: float,
    fps: int = 30,
    size: Size = (640, 360),
    *,
    start: float = 0.0,
    ffmpeg: str | None = None,
) -> Path:
    """VP8 WebM (Firefox, older Chromium)."""
    return _record(path, _testsrc(seconds, fps, size), _vp8(fps), "webm", seconds, start, ffmpeg)


def make_opus_webm(
    path: str | os.PathLike[str],
    seconds: float,
    *,
    frequency: int = 440,
    sample_rate: int = 48000,
    start: float = 0.0,
    ffmpeg: str | None = None,
) -> Path:
    """Opus WebM from a microphone-only MediaRecorder (`audio/webm;codecs=opus`)."""
    return _record(
        path, _sine(seconds, frequency, sample_rate), _opus(), "webm", seconds, start, ffmpeg
    )


def make_h264_opus_webm(
    path: str | os.PathLike[str],
    seconds: float,
    fps: int = 30,
    size: Size = (640, 360),
    *,
    start: float = 0.0,
    ffmpeg: str | None = None,
) -> Path:
    """Both streams in one file (`video/webm;codecs=h264,opus`, one MediaRecorder)."""
    sources = _testsrc(seconds, fps, size) + _sine(seconds, 440, 48000)
    codecs = ["-map", "0:v", "-map", "1:a", *_h264(fps), *_opus()]
    return _record(path, sources, codecs, "matroska", seconds, start, ffmpeg)


def make_garbage(path: str | os.PathLike[str], n: int = 64 * 1024, *, seed: int = 0) -> Path:
    """`n` random bytes (deterministic per seed) that no demuxer accepts."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(random.Random(seed).randbytes(n))
    return out


# --- checks on what came out ---


def packets(path: Path, kind: str) -> list[bytes]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def packet_digest(path: Path) -> str:
    """Streams, and each stream's packets (bytes, pts, dts) in order: equal digests, equal media
    content. How the muxer interleaves the streams is layout, not content: a staged compile and
    a one-shot one place a track's last packets differently when the other track runs on."""
    with av.open(str(path)) as container:
        streams = {
            s.index: hashlib.sha256(f"{s.type}:{s.codec_context.name}:{s.time_base}".encode())
            for s in container.streams
        }
        for packet in container.demux():
            if packet.size:
                h = streams[packet.stream.index]
                h.update(f"{packet.pts}:{packet.dts}".encode())
                h.update(bytes(packet))
    return hashlib.sha256(
        "".join(h.hexdigest() for _, h in sorted(streams.items())).encode()
    ).hexdigest()


def top_level_boxes(path: Path) -> list[str]:
    boxes: list[str] = []
    with path.open("rb") as f:
        while header := f.read(8):
            size, kind = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
            boxes.append(kind)
            if size == 1:
                size = int.from_bytes(f.read(8), "big") - 8
            elif size == 0:
                break
            f.seek(size - 8, 1)
    return boxes


class ExtrasGate:
    """An FFmpeg (`script`) that holds the runs making a compile's extras (the poster's luma
    samples, the storyboard's tiles, the HLS remux) until `open()`, and marks `reached` when
    the first one starts; every other run (the compile itself) goes straight through. A test
    sees a session between its `ready` and its extras without timing anything."""

    def __init__(self, root: Path) -> None:
        self.opened, self.reached = root / "extras-gate-open", root / "extras-reached"
        self.script = root / "ffmpeg-extras-gated"
        self.script.write_text(
            "#!/bin/sh\n"
            'case "$*" in\n'
            f'  *signalstats*|*tile=*|*"-f hls"*) touch "{self.reached}"\n'
            f'    while [ ! -e "{self.opened}" ]; do sleep 0.05; done ;;\n'
            "esac\n"
            f'exec "{ffmpeg_binary()}" "$@"\n'
        )
        self.script.chmod(0o755)

    def open(self) -> None:
        self.opened.touch()
