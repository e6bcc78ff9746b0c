"""Run FFmpeg for a plan: progress from `-progress`, a bounded error tail, cancellation.

FFmpeg's stderr can be megabytes on a long broken input, so only its last few KiB are
kept: the cause of a failure is at the end. Progress arrives as `key=value` blocks on
stdout (`-progress pipe:1`) and is turned into a monotonic 0..1 fraction, rate-limited so
a slow callback (a gRPC status update) cannot become the bottleneck. A cancelled compile
kills FFmpeg rather than leaving it writing to a file nobody will read.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av

from tapedeck.compiler.extras import (
    LUMA_FILE,
    Job,
    parse_luma,
    pick_poster,
    plan_extras,
    poster_job,
    poster_window,
)
from tapedeck.compiler.media import MediaInfo
from tapedeck.compiler.plan import (
    CompilePlan,
    OutputOptions,
    PlanError,
    Stage,
    TrackInput,
    mux_args,
    plan_compile,
)
from tapedeck.compiler.probe import ProbeError, probe
from tapedeck.processes import child_command
from tapedeck.sessions import HLS_PLAYLIST, STORYBOARD_VTT, is_output_name

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float], Awaitable[None] | None]

STDERR_TAIL_BYTES = 4096
TAIL_LINES = 5
PROGRESS_INTERVAL = 0.25  # at most ~4 reports per second
KILL_WAIT_SECONDS = 5.0

_ADDRESS = re.compile(r" @ 0x[0-9a-f]+\]")


class CompileError(Exception):
    """FFmpeg failed; the message is the readable tail of what it said."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        """True when running again might succeed (FFmpeg was killed, e.g. out of memory)."""


@dataclass(frozen=True, slots=True)
class CompileResult:
    size: int
    duration_seconds: float
    video_codec: str | None
    audio_codec: str | None
    summary: str = ""


class _Tail:
    """The last `limit` bytes written to it, never more."""

    def __init__(self, limit: int = STDERR_TAIL_BYTES) -> None:
        self._limit = limit
        self._data = bytearray()
        self.dropped = False

    def feed(self, chunk: bytes) -> None:
        self._data += chunk
        excess = len(self._data) - self._limit
        if excess > 0:
            del self._data[:excess]
            self.dropped = True

    def lines(self, count: int = TAIL_LINES) -> list[str]:
        """The last meaningful lines: no blanks, repeats or memory addresses."""
        text = self._data.decode("utf-8", errors="replace").replace("\r", "\n")
        raw = text.split("\n")
        if self.dropped:
            raw = raw[1:]  # the first line was cut in the middle
        lines: list[str] = []
        for line in raw:
            line = _ADDRESS.sub("]", line).strip()
            if line and (not lines or lines[-1] != line):
                lines.append(line[:300])
        return lines[-count:]


def failure_message(returncode: int, tail: _Tail) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        head = f"FFmpeg was killed ({name})"
    else:
        head = f"FFmpeg failed (exit status {returncode})"
    lines = tail.lines()
    return f"{head}: " + "\n".join(lines) if lines else f"{head} without an error message"


async def _report(callback: ProgressCallback | None, fraction: float) -> None:
    """Calls a progress callback, sync or async."""
    if callback is not None:
        result = callback(fraction)
        if inspect.isawaitable(result):
            await result


class _Progress:
    """Monotonic, clamped, rate-limited fraction reports; 1.0 only on success."""

    def __init__(self, expected: float, callback: ProgressCallback | None) -> None:
        self._expected = expected
        self._callback = callback
        self._last = 0.0
        self._last_at: float | None = None
        self.seconds = 0.0

    async def _emit(self, fraction: float) -> None:
        self._last = fraction
        self._last_at = time.monotonic()
        await _report(self._callback, fraction)

    async def update(self, seconds: float) -> None:
        self.seconds = max(self.seconds, seconds)
        if self._expected <= 0:
            return
        fraction = min(max(seconds / self._expected, 0.0), 0.999)
        if fraction <= self._last:
            return
        if self._last_at is not None and time.monotonic() - self._last_at < PROGRESS_INTERVAL:
            return  # a later block will carry a newer value
        await self._emit(fraction)

    async def finish(self) -> None:
        await self._emit(1.0)


def _out_time(block: dict[str, str]) -> float | None:
    """Seconds of output written, from one `-progress` block."""
    for key in ("out_time_us", "out_time_ms"):  # out_time_ms is microseconds too (sic)
        value = block.get(key, "")
        if value.lstrip("-").isdigit():
            micros = int(value)
            return micros / 1_000_000 if micros >= 0 else None
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", block.get("out_time", ""))
    if match:
        hours, minutes, secs = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(secs)
    return None


async def _read_progress(
    stream: asyncio.StreamReader,
    progress: _Progress,
    on_seconds: Callable[[float], None] | None = None,
) -> None:
    block: dict[str, str] = {}
    async for raw in stream:
        key, sep, value = raw.decode("utf-8", errors="replace").strip().partition("=")
        if not sep:
            continue
        block[key] = value
        if key == "progress":
            seconds = _out_time(block)
            if seconds is not None:
                await progress.update(seconds)
                if on_seconds is not None:
                    on_seconds(seconds)
            block = {}


async def _drain(stream: asyncio.StreamReader, tail: _Tail) -> None:
    while chunk := await stream.read(4096):
        tail.feed(chunk)


StdinFeed = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def run_args(
    ffmpeg: str,
    args: Sequence[str],
    expected_duration: float = 0.0,
    on_progress: ProgressCallback | None = None,
    *,
    feed: StdinFeed | None = None,
    background: bool = False,
    finish_progress: bool = True,
    pass_fds: Sequence[int] = (),
    on_seconds: Callable[[float], None] | None = None,
) -> float:
    """Run FFmpeg with `args` (which must include `-progress pipe:1`); report progress;
    raise CompileError on failure. Returns the seconds of output FFmpeg reported.

    `feed` writes FFmpeg's standard input (a track still being recorded) and closes it.
    `background`: a speculative run, at a lower CPU priority. `pass_fds`: descriptors the
    child inherits (inputs read as `pipe:FD`). `on_seconds`: each output time FFmpeg reports.
    """
    program = shutil.which(ffmpeg)
    if program is None:  # checked here: the wrapper of `child_command` would only exit 127
        raise CompileError(f"cannot run FFmpeg ({ffmpeg}): not found, or not executable")
    try:
        proc = await asyncio.create_subprocess_exec(
            *child_command([program, *args], nice=10 if background else 0),
            stdin=asyncio.subprocess.PIPE if feed else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=tuple(pass_fds),
        )
    except OSError as exc:
        raise CompileError(f"cannot run FFmpeg ({ffmpeg}): {exc.strerror or exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    tail = _Tail()
    progress = _Progress(expected_duration, on_progress)
    drain = asyncio.create_task(_drain(proc.stderr, tail))
    feeding: asyncio.Task[None] | None = None
    if feed is not None:
        assert proc.stdin is not None
        feeding = asyncio.create_task(_feed(feed, proc.stdin))
    try:
        await _read_progress(proc.stdout, progress, on_seconds)
        await drain
        returncode = await proc.wait()
        if feeding is not None:
            await feeding
    except BaseException:
        # Cancelled (or the callback failed): FFmpeg must not outlive the compile.
        drain.cancel()
        if feeding is not None:
            feeding.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), KILL_WAIT_SECONDS)
        raise
    if returncode != 0:
        raise CompileError(failure_message(returncode, tail), retryable=returncode < 0)
    if finish_progress:
        await progress.finish()
    return progress.seconds


async def _feed(feed: StdinFeed, stdin: asyncio.StreamWriter) -> None:
    try:
        await feed(stdin)
    except (BrokenPipeError, ConnectionResetError):
        pass  # FFmpeg stopped reading: its exit status says why
    finally:
        stdin.close()


async def run_ffmpeg(
    ffmpeg: str, plan: CompilePlan, on_progress: ProgressCallback | None = None
) -> CompileResult:
    """Run FFmpeg with `plan.args` (the one-shot command); report progress; raise
    CompileError on failure."""
    seconds = await run_args(ffmpeg, plan.args, plan.expected_duration, on_progress)
    size = await asyncio.to_thread(os.path.getsize, plan.output_path)
    return CompileResult(
        size=size,
        duration_seconds=seconds or plan.expected_duration,
        video_codec=plan.video_codec,
        audio_codec=plan.audio_codec,
        summary=plan.summary,
    )


class Ahead(Protocol):
    """The final mux run while recording (compiler/livemux.py)."""

    def matches(self, plan: CompilePlan) -> bool:
        """It runs exactly `plan`'s one-shot command (on the same tracks)."""

    async def wait(self) -> None:
        """Until its MP4 is complete at `plan.output_path`; CompileError: not usable."""

    def cancel(self) -> None: ...


class RunningStage:
    """A stage started ahead of the compile (by `compile.follow`), on a track still arriving."""

    def __init__(self, stage: Stage, task: asyncio.Task[float]) -> None:
        self.stage, self.task = stage, task

    def cancel(self) -> None:
        self.task.cancel()


async def run_staged(
    ffmpeg: str,
    plan: CompilePlan,
    paths: Mapping[str, str],
    on_progress: ProgressCallback | None = None,
    running: Mapping[str, RunningStage] | None = None,
) -> None:
    """Run `plan` as its stages (at once: one per core) and then the stream-copy mux.

    `paths`: track name → file. A stage in `running` that is exactly the planned one is
    awaited instead of started again (its packets are the same); any other is cancelled.
    """
    running = dict(running or {})
    video = plan.stage("video")
    longest = video or plan.stages[0]
    expected = plan.expected_duration

    async def scaled(fraction: float) -> None:  # stages are most of the work; the mux the rest
        await _report(on_progress, fraction * 0.95)

    async def run_stage(stage: Stage, ahead: RunningStage | None) -> float:
        if ahead is not None:
            try:
                return await ahead.task
            except CompileError:
                pass  # e.g. fed a track that was cut short: run it on the whole file
        progress = scaled if stage is longest else None
        return await run_args(
            ffmpeg, stage.args(paths[stage.track]), expected, progress, finish_progress=False
        )

    tasks: list[asyncio.Task[float]] = []
    reused = 0
    for stage in plan.stages:
        ahead = running.pop(stage.kind, None)
        if ahead is not None and ahead.stage != stage:
            ahead.cancel()
            ahead = None
        reused += ahead is not None
        tasks.append(asyncio.create_task(run_stage(stage, ahead)))
    if reused == len(plan.stages):
        await scaled(0.9)  # encoded while recording: only the last seconds and the mux are left
    for leftover in running.values():
        leftover.cancel()
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

    def stage_starts() -> dict[str, float]:
        return {stage.kind: _start_seconds(stage.output_path) for stage in plan.stages}

    starts = await asyncio.to_thread(stage_starts)
    await run_args(ffmpeg, mux_args(plan, starts), 0.0, None)
    await _report(on_progress, 1.0)


def _start_seconds(path: str) -> float:
    """The start time FFmpeg will rebase a stage's output by (microseconds, exactly)."""
    try:
        with av.open(path) as container:
            start = container.start_time
    except (av.FFmpegError, OSError) as exc:
        raise CompileError(f"a compile stage wrote an unreadable file: {exc}") from exc
    return (start or 0) / 1_000_000


def _load_inputs(
    inputs: Sequence[tuple[str, str | os.PathLike[str], float | None]], output: Path
) -> list[TrackInput]:
    tracks: list[TrackInput] = []
    for name, path, started_at in inputs:
        if Path(path).resolve() == output.resolve():
            raise PlanError("the output path is one of the inputs; refusing to overwrite a track")
        try:
            info = probe(path)
        except ProbeError as exc:
            raise ProbeError(f"{name} track: {exc}") from exc
        tracks.append(TrackInput(name=name, path=os.fspath(path), started_at=started_at, info=info))
    return tracks


@dataclass(frozen=True, slots=True)
class _Written:
    size: int
    duration: float
    video: str | None
    audio: str | None


def _finish(plan: CompilePlan, partial: Path, output: Path) -> _Written:
    """Check the written file is what the plan promised, then move it into place.

    FFmpeg exited 0, so the MP4's own index (moov) is read rather than every packet again.
    """
    try:
        with av.open(str(partial)) as container:
            codecs = {
                kind: next(
                    (s.codec_context.name for s in container.streams if s.type == kind), None
                )
                for kind in ("video", "audio")
            }
            duration = (container.duration or 0) / 1_000_000
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise CompileError(f"FFmpeg wrote an unreadable file: {exc}") from exc
    for kind, want in (("video", plan.video_codec), ("audio", plan.audio_codec)):
        got = codecs[kind]
        if got != want:
            raise CompileError(f"FFmpeg wrote {kind} as {got or 'nothing'}, expected {want}")
    size = partial.stat().st_size
    partial.replace(output)
    return _Written(size, duration, codecs["video"], codecs["audio"])


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


async def compile_files(
    ffmpeg: str,
    inputs: Sequence[tuple[str, str | os.PathLike[str], float | None]],
    output_path: str | os.PathLike[str],
    options: OutputOptions | None = None,
    on_progress: ProgressCallback | None = None,
    *,
    infos: Mapping[str, MediaInfo] | None = None,
    running: Mapping[str, RunningStage] | None = None,
    ahead: Ahead | None = None,
) -> CompileResult:
    """Probe, plan and run one compile of local files into `output_path`.

    FFmpeg writes to a `.part` file beside the output, renamed into place only after the
    result reads back as the planned streams, so a failure never leaves a half-written MP4
    and never touches the inputs. Streams that are encoded (not copied) run as stages, one
    FFmpeg each, at the same time, and a stream-copy mux joins them. `infos` are probes
    already made (by a follower), `running` stages it already started, `ahead` the final mux
    it ran while recording (used when it is this plan's command and succeeded). Raises ProbeError,
    PlanError or CompileError, each with a message fit to show a user.
    """
    output = Path(output_path)
    if infos is None:
        tracks = await asyncio.to_thread(_load_inputs, inputs, output)
    else:
        tracks = [
            TrackInput(name=name, path=os.fspath(path), started_at=started_at, info=infos[name])
            for name, path, started_at in inputs
        ]
    partial = output.with_name(f"{output.name}.part")
    plan = plan_compile(tracks, str(partial), options)
    muxed = False
    if ahead is not None:
        if ahead.matches(plan):
            try:
                await ahead.wait()
                muxed = True
            except CompileError as err:
                log.info("the mux run while recording is not used: %s", err)
        if not muxed:
            ahead.cancel()
    try:
        if muxed:
            for leftover in (running or {}).values():
                leftover.cancel()
        elif plan.stages:
            paths = {t.name: t.path for t in tracks}
            await run_staged(ffmpeg, plan, paths, on_progress, running)
        else:
            for leftover in (running or {}).values():
                leftover.cancel()
            await run_ffmpeg(ffmpeg, plan, on_progress)
        result = await asyncio.to_thread(_finish, plan, partial, output)
    except BaseException:
        _discard(partial)
        raise
    finally:
        for stage in plan.stages:
            _discard(Path(stage.output_path))
    return CompileResult(
        size=result.size,
        duration_seconds=result.duration,
        video_codec=result.video,
        audio_codec=result.audio,
        summary=plan.summary,
    )


async def _poster(ffmpeg: str, mp4: Path, duration: float, out_dir: Path) -> Job:
    """The poster from the luma samples `poster-luma` left in `out_dir`."""
    start, _ = poster_window(duration)
    luma = await asyncio.to_thread((out_dir / LUMA_FILE).read_text)
    await asyncio.to_thread((out_dir / LUMA_FILE).unlink)
    job = poster_job(str(mp4), pick_poster(parse_luma(luma), start), str(out_dir))
    await run_args(ffmpeg, job.args, 0.0, None, finish_progress=False)
    return job


async def write_extras(
    ffmpeg: str,
    mp4: Path,
    duration: float,
    has_video: bool,
    hls: bool,
    scratch: Path,
) -> list[tuple[str, Path]]:
    """Poster, storyboard and HLS from the compiled MP4 (compiler/extras.py): the named
    outputs made, as (name, file). Best effort: the MP4 is the product, so an extra that
    FFmpeg fails on is left out (and logged), never a failed compile."""
    dirs = {name: scratch / f"extras-{name}" for name in ("poster", "storyboard", "hls")}
    for path in dirs.values():
        await asyncio.to_thread(path.mkdir, exist_ok=True)
    plan = plan_extras(str(mp4), duration, has_video, hls, {k: str(v) for k, v in dirs.items()})
    made: list[tuple[str, Path]] = []
    for job in plan.jobs:
        try:
            await run_args(ffmpeg, job.args, 0.0, None, finish_progress=False)
            if job.name == "poster-luma":
                job = await _poster(ffmpeg, mp4, duration, dirs["poster"])
        except (CompileError, OSError) as err:
            log.warning("the %s of %s was not made: %s", job.name, mp4.name, err)
            continue
        found = sorted(await asyncio.to_thread(list, dirs[job.name].iterdir()))
        made += [(p.name, p) for p in found if is_output_name(p.name)]
        if job.name == "storyboard" and plan.storyboard_vtt is not None:
            vtt = dirs["storyboard"] / STORYBOARD_VTT
            await asyncio.to_thread(vtt.write_text, plan.storyboard_vtt)
            made.append((STORYBOARD_VTT, vtt))
    # The playlist last: whoever lists the outputs as they land sees no playlist without parts.
    made.sort(key=lambda item: item[0] == HLS_PLAYLIST)
    return made
