"""Shared by the bench scripts: the test harness (real processes), media makers, fixtures
cached between runs, process sampling with psutil, and Markdown tables.

Every script prints one or more Markdown tables and ends with one line starting `summary:`;
`bench/report.py` collects them into docs/performance.md.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402
import media  # noqa: E402

__all__ = [
    "ROOT",
    "UNLIMITED",
    "Sampler",
    "fixture",
    "harness",
    "media",
    "percentile",
    "table",
]

MiB = 1024 * 1024
CACHE = Path(os.environ.get("TAPEDECK_BENCH_CACHE", Path.home() / ".cache" / "tapedeck-bench"))
LOOP_SECONDS = 30  # fixtures are 30 s of encoded media, stream-copied in a loop to any length
VIDEO_BITRATE = "2500k"  # what the ingest benchmark assumes a camera sends
UNLIMITED = {"sessions_per_minute": "0", "max_open_sessions": "100000", "ingest_max_streams": "0"}
"""Settings for a stack whose capacity is measured: no rate limit, no session cap and no
admission cap (`TAPEDECK_INGEST_MAX_STREAMS`, 200 by default, refuses the 201st stream with
1013: a benchmark of 300 streams would measure the cap, not the process)."""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest-rank; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable in a terminal too)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    head = cells[0]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


# --- fixtures ------------------------------------------------------------------------------


def _ffmpeg() -> str:
    return media.ffmpeg_binary()


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr[-2000:]}")


def fixture(kind: str, seconds: float) -> Path:
    """A recording as a browser makes it (live WebM/Matroska, no cues), cached on disk.

    kind: `h264` (Matroska, Chromium's `video/webm;codecs=h264`), `vp8` (WebM) — both 640x360
    at 30 fps and 2.5 Mbit/s — or `opus` (WebM, 64 kbit/s). 30 s are encoded once and then
    stream-copied in a loop to the length wanted, so a 60-minute fixture costs seconds.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    ext = "mkv" if kind == "h264" else "webm"
    muxer = "matroska" if kind == "h264" else "webm"
    out = CACHE / f"{kind}-{seconds:g}s.{ext}"
    if out.exists():
        return out
    base = CACHE / f"{kind}-loop.{ext}"
    if not base.exists():
        src_video = ["-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={LOOP_SECONDS}"]
        rate = ["-b:v", VIDEO_BITRATE, "-maxrate", VIDEO_BITRATE, "-bufsize", VIDEO_BITRATE]
        if kind == "h264":
            args = [
                *src_video, "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "60", *rate,
            ]  # fmt: skip
        elif kind == "vp8":
            args = [
                *src_video, "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
                "-g", "60", *rate,
            ]  # fmt: skip
        elif kind == "opus":
            sine = f"sine=frequency=440:sample_rate=48000:duration={LOOP_SECONDS}"
            args = [
                "-f", "lavfi", "-i", sine, "-c:a", "libopus", "-b:a", "64k",
            ]  # fmt: skip
        else:
            raise ValueError(kind)
        tmp = base.with_suffix(".tmp")
        _run(
            [
                _ffmpeg(),
                "-hide_banner",
                "-nostdin",
                "-y",
                *args,
                "-f",
                muxer,
                "-live",
                "1",
                str(tmp),
            ]
        )
        tmp.replace(base)
    loops = max(0, int(-(-seconds // LOOP_SECONDS)) - 1)
    tmp = out.with_suffix(".tmp")
    _run(
        [
            _ffmpeg(), "-hide_banner", "-nostdin", "-y", "-stream_loop", str(loops),
            "-i", str(base), "-t", f"{seconds:g}", "-c", "copy",
            "-f", muxer, "-live", "1", str(tmp),
        ]
    )  # fmt: skip
    tmp.replace(out)
    return out


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


# --- processes -----------------------------------------------------------------------------


@dataclass
class Usage:
    cpu_percent: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)

    @property
    def cpu(self) -> float:
        """Mean CPU over the sampling, % of one core (200 = both cores)."""
        return mean(self.cpu_percent)

    @property
    def rss_max(self) -> int:
        return max(self.rss, default=0)


class Sampler:
    """Samples CPU and RSS of named processes (with their children) every `interval` s."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.usage = {name: Usage() for name in pids}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        for proc in self.procs.values():
            proc.cpu_percent(None)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, proc in self.procs.items():
                try:
                    self.usage[name].cpu_percent.append(proc.cpu_percent(None))
                    self.usage[name].rss.append(proc.memory_info().rss)
                except psutil.Error:
                    pass


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def machine() -> str:
    """One line about where the figures come from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 1024**3
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Linux {os.uname().release}, "
        f"Python {sys.version.split()[0]}"
    )


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError(what)
