"""Real FFmpeg compiles of browser-shaped media, checked by reading the MP4 back with PyAV."""

from __future__ import annotations

import array
import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import psutil
import pytest

from media import ffmpeg_binary, make_garbage, make_h264_webm, packets, top_level_boxes
from tapedeck.compiler.plan import CompilePlan, OutputOptions, PlanError
from tapedeck.compiler.probe import ProbeError, probe
from tapedeck.compiler.run import CompileError, CompileResult, compile_files, run_ffmpeg

T0 = 1_760_000_000_000.0
FRAME = 1 / 30
SECONDS = 4.0  # the conftest fixtures' length


@dataclass
class Progress:
    values: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    async def __call__(self, fraction: float) -> None:
        self.values.append(fraction)
        self.times.append(time.monotonic())

    def check(self) -> None:
        assert self.values, "no progress reported"
        assert self.values == sorted(set(self.values)), self.values  # strictly increasing
        assert self.values[-1] == 1.0
        assert all(0.0 <= v <= 1.0 for v in self.values)


def compile_sync(
    inputs: list[tuple[str, Path, float | None]],
    output: Path,
    progress: Progress | None = None,
    options: OutputOptions | None = None,
    ffmpeg: str | None = None,
) -> CompileResult:
    return asyncio.run(
        compile_files(ffmpeg or ffmpeg_binary(), list(inputs), output, options, progress)
    )


def first_frame_time(path: Path) -> float:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert frame.time is not None
            return frame.time
    raise AssertionError("no video frame")


def audio_onset(path: Path, threshold: float = 0.01) -> float:
    """When the sine becomes audible: sync is about what is heard, not container fields."""
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            assert frame.format.name == "fltp" and frame.time is not None
            samples = array.array("f", bytes(frame.planes[0]))[: frame.samples]
            for i, value in enumerate(samples):
                if abs(value) > threshold:
                    return frame.time + i / frame.sample_rate
    raise AssertionError("no audible audio")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the common case: Chromium's H.264 camera + Opus microphone ---


@pytest.fixture(scope="module")
def remuxed(
    h264_webm: Path, opus_webm: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, CompileResult, Progress]]:
    out = tmp_path_factory.mktemp("remux") / "s.mp4"
    progress = Progress()
    result = compile_sync([("video", h264_webm, T0), ("audio", opus_webm, T0)], out, progress)
    yield out, result, progress


def test_h264_and_opus_become_h264_and_aac(
    remuxed: tuple[Path, CompileResult, Progress],
) -> None:
    out, result, progress = remuxed
    assert (result.video_codec, result.audio_codec) == ("h264", "aac")
    assert result.size == out.stat().st_size
    assert result.duration_seconds == pytest.approx(SECONDS, abs=0.3)
    info = probe(out)
    assert info.video is not None and info.video.duration == pytest.approx(SECONDS, abs=0.3)
    assert info.audio is not None and info.audio.duration == pytest.approx(SECONDS, abs=0.3)
    assert result.summary == "copy h264 video, opus→aac audio"
    progress.check()
    assert not out.with_name("s.mp4.part").exists()


def test_h264_video_is_stream_copied_byte_for_byte(
    remuxed: tuple[Path, CompileResult, Progress], h264_webm: Path
) -> None:
    source = packets(h264_webm, "video")
    assert len(source) == 120
    assert packets(remuxed[0], "video") == source


def test_moov_comes_before_mdat(remuxed: tuple[Path, CompileResult, Progress]) -> None:
    boxes = top_level_boxes(remuxed[0])
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")


def test_safari_style_mp4_with_aac_is_copied_entirely(
    remuxed: tuple[Path, CompileResult, Progress], tmp_path: Path
) -> None:
    source = remuxed[0]
    out = tmp_path / "again.mp4"
    result = compile_sync([("video", source, T0)], out)
    assert result.summary == "copy h264 video, copy aac audio from video"
    assert packets(out, "video") == packets(source, "video")
    assert packets(out, "audio") == packets(source, "audio")


# --- transcoding, single tracks ---


def test_vp8_and_opus_are_encoded_to_h264_and_aac(
    vp8_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    out = tmp_path / "s.mp4"
    progress = Progress()
    result = compile_sync([("video", vp8_webm, T0), ("audio", opus_webm, T0)], out, progress)
    assert (result.video_codec, result.audio_codec) == ("h264", "aac")
    assert result.duration_seconds == pytest.approx(SECONDS, abs=0.3)
    info = probe(out)
    assert info.video is not None
    assert (info.video.width, info.video.height) == (640, 360)
    assert info.video.packets == 120  # variable frame rate kept: no duplicated frames
    progress.check()


def test_video_only(h264_webm: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.mp4"
    result = compile_sync([("video", h264_webm, T0)], out)
    assert (result.video_codec, result.audio_codec) == ("h264", None)
    info = probe(out)
    assert [s.kind for s in info.streams] == ["video"]
    assert info.duration == pytest.approx(SECONDS, abs=0.3)


def test_audio_only(opus_webm: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.mp4"
    result = compile_sync([("audio", opus_webm, T0)], out)
    assert (result.video_codec, result.audio_codec) == (None, "aac")
    info = probe(out)
    assert [(s.kind, s.codec) for s in info.streams] == [("audio", "aac")]
    assert info.duration == pytest.approx(SECONDS, abs=0.3)


# --- alignment: separate MediaRecorders, separate clocks ---


def test_audio_started_later_is_heard_later(
    h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    out = tmp_path / "s.mp4"
    compile_sync([("video", h264_webm, T0), ("audio", opus_webm, T0 + 500)], out)
    assert first_frame_time(out) == pytest.approx(0.0, abs=FRAME)
    assert audio_onset(out) - first_frame_time(out) == pytest.approx(0.5, abs=FRAME)


def test_video_started_later_is_shown_later(
    h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    out = tmp_path / "s.mp4"
    compile_sync([("video", h264_webm, T0 + 500), ("audio", opus_webm, T0)], out)
    assert audio_onset(out) == pytest.approx(0.0, abs=FRAME)
    assert first_frame_time(out) - audio_onset(out) == pytest.approx(0.5, abs=FRAME)
    assert packets(out, "video") == packets(h264_webm, "video")  # still a stream copy


def test_a_track_whose_first_timestamp_is_not_zero(opus_webm: Path, tmp_path: Path) -> None:
    # The recorder's clock ran 0.3 s before its first frame: that frame belongs at 0.3 s.
    late = make_h264_webm(tmp_path / "late.webm", 2.0, start=0.3)
    assert probe(late).start == pytest.approx(0.3)
    out = tmp_path / "s.mp4"
    compile_sync([("video", late, T0), ("audio", opus_webm, T0)], out)
    assert first_frame_time(out) - audio_onset(out) == pytest.approx(0.3, abs=FRAME)


def _bytes_in(directory: Path) -> int:
    total = 0
    for entry in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):  # stage outputs come and go
            total += entry.stat().st_size
    return total


HOUR_MS = 3_600_000.0


@pytest.mark.parametrize(
    ("late", "started_at"),
    [
        ("audio", T0 + 12 * HOUR_MS),  # encoded as 12 h of silence (FFmpeg 5.1)
        ("video", T0 + 10 * 8766 * HOUR_MS),  # an MP4 that says it lasts ten years
        ("audio", 1e15),  # beyond what aresample compensates: only the summary is wrong
    ],
    ids=["audio-12-hours-later", "video-10-years-later", "audio-at-1e15"],
)
async def test_a_start_hours_or_years_away_is_ignored(
    h264_webm: Path, opus_webm: Path, tmp_path: Path, late: str, started_at: float
) -> None:
    """A broken clock's `startedAt` must not become an -itsoffset of hours or years: the MP4
    would be that long, transcoded audio encoded as silence all along. The bytes written bound
    the test (twice the inputs'), so it fails at once rather than after the silence."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "s.mp4"
    limit = 2 * (h264_webm.stat().st_size + opus_webm.stat().st_size)
    starts = {"video": T0, "audio": T0, late: started_at}
    inputs = [("video", h264_webm, starts["video"]), ("audio", opus_webm, starts["audio"])]
    task = asyncio.create_task(compile_files(ffmpeg_binary(), inputs, out))
    while not task.done():
        written = _bytes_in(out_dir)
        if written > limit:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            pytest.fail(f"the compile wrote {written} bytes for {SECONDS} s of media")
        await asyncio.wait({task}, timeout=0.05)
    result = task.result()
    assert result.duration_seconds == pytest.approx(SECONDS, abs=0.3)
    info = probe(out)
    assert info.duration == pytest.approx(SECONDS, abs=0.3)
    assert info.audio is not None and info.audio.duration == pytest.approx(SECONDS, abs=0.3)
    assert audio_onset(out) == pytest.approx(first_frame_time(out), abs=FRAME)
    assert f"{late} start ignored" in result.summary


# --- failures ---


def test_garbage_input_is_a_readable_error_and_is_left_alone(
    h264_webm: Path, tmp_path: Path
) -> None:
    garbage = make_garbage(tmp_path / "audio.webm")
    before = digest(garbage), digest(h264_webm)
    out = tmp_path / "s.mp4"
    with pytest.raises(ProbeError) as caught:
        compile_sync([("video", h264_webm, T0), ("audio", garbage, T0)], out)
    message = str(caught.value)
    assert message.startswith("audio track: audio.webm is not a readable audio/video file")
    assert "Invalid data found" in message
    assert (digest(garbage), digest(h264_webm)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.webm"]


def test_empty_input_is_a_readable_error(tmp_path: Path) -> None:
    empty = tmp_path / "video.webm"
    empty.touch()
    with pytest.raises(ProbeError, match=r"video track: video.webm is empty \(0 bytes\)"):
        compile_sync([("video", empty, T0)], tmp_path / "s.mp4")


def test_no_tracks_is_a_plan_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError):
        compile_sync([], tmp_path / "s.mp4")


def test_ffmpeg_failure_reports_the_tail_of_its_stderr(tmp_path: Path) -> None:
    garbage = make_garbage(tmp_path / "video.webm", seed=1)
    before = digest(garbage)
    out = tmp_path / "s.mp4"
    plan = CompilePlan(
        args=("-hide_banner", "-nostdin", "-y", "-i", str(garbage), "-f", "mp4", str(out)),
        output_path=str(out),
        expected_duration=1.0,
        summary="",
        video_codec="h264",
        audio_codec=None,
    )
    with pytest.raises(CompileError) as caught:
        asyncio.run(run_ffmpeg(ffmpeg_binary(), plan, None))
    message = str(caught.value)
    assert message.startswith("FFmpeg failed (exit status ")
    assert "Invalid data found when processing input" in message
    assert " @ 0x" not in message  # memory addresses are noise
    assert len(message) < 2000
    assert not caught.value.retryable
    assert digest(garbage) == before


def test_a_missing_ffmpeg_binary_is_a_compile_error(opus_webm: Path, tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="cannot run FFmpeg"):
        compile_sync([("audio", opus_webm, T0)], tmp_path / "s.mp4", ffmpeg=str(tmp_path / "nope"))
    assert list(tmp_path.iterdir()) == []


# --- progress and cancellation (a paced source makes FFmpeg take real time) ---


def paced_plan(out: Path, seconds: float) -> CompilePlan:
    args = (
        "-hide_banner", "-nostdin", "-y", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=30:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-f", "mp4",
        "-progress", "pipe:1", "-nostats", "-stats_period", "0.05", str(out),
    )  # fmt: skip
    return CompilePlan(args, str(out), seconds, "paced", "h264", None)


async def test_progress_is_monotonic_throttled_and_ends_at_one(tmp_path: Path) -> None:
    progress = Progress()
    result = await run_ffmpeg(ffmpeg_binary(), paced_plan(tmp_path / "p.mp4", 1.5), progress)
    progress.check()
    assert len(progress.values) >= 3  # FFmpeg reported every 50 ms; we passed some on
    gaps = [b - a for a, b in zip(progress.times[:-2], progress.times[1:-1], strict=True)]
    assert all(gap >= 0.2 for gap in gaps), gaps  # at most ~4/s (the final 1.0 is exempt)
    assert result.duration_seconds == pytest.approx(1.5, abs=0.2)


async def test_cancelling_kills_ffmpeg(tmp_path: Path) -> None:
    me = psutil.Process()
    task = asyncio.create_task(run_ffmpeg(ffmpeg_binary(), paced_plan(tmp_path / "c.mp4", 30)))
    for _ in range(100):
        await asyncio.sleep(0.05)
        children = me.children()
        if children:
            break
    assert children, "FFmpeg did not start"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive


# --- probe ---


def test_probe_measures_live_webm_without_a_header_duration(
    h264_webm: Path, opus_webm: Path
) -> None:
    with av.open(str(h264_webm)) as container:
        assert container.duration is None  # like MediaRecorder output
    video = probe(h264_webm)
    assert video.format_name == "matroska,webm"
    assert video.video is not None and video.audio is None
    assert (video.video.codec, video.video.width, video.video.height) == ("h264", 640, 360)
    assert video.video.start == 0.0
    assert video.duration == pytest.approx(SECONDS, abs=0.05)
    audio = probe(opus_webm)
    assert audio.audio is not None
    assert (audio.audio.codec, audio.audio.sample_rate) == ("opus", 48000)
    assert audio.duration == pytest.approx(SECONDS, abs=0.05)


def test_probe_tolerates_a_truncated_tail(h264_webm: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.webm"
    data = h264_webm.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    info = probe(cut)
    assert info.video is not None
    assert 0.5 < info.duration < SECONDS


# --- the FFmpeg the runtime may ship with (imageio-ffmpeg's wheel) ---


def test_the_wheel_ffmpeg_compiles_and_aligns_too(
    vp8_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    wheel = imageio_ffmpeg.get_ffmpeg_exe()
    if Path(wheel).resolve() == Path(ffmpeg_binary()).resolve():
        pytest.skip("the wheel's FFmpeg is already the default")
    out = tmp_path / "s.mp4"
    progress = Progress()
    result = compile_sync(
        [("video", vp8_webm, T0), ("audio", opus_webm, T0 + 500)],
        out,
        progress,
        OutputOptions(max_height=240, preset="ultrafast"),
        ffmpeg=wheel,
    )
    assert (result.video_codec, result.audio_codec) == ("h264", "aac")
    assert result.duration_seconds == pytest.approx(SECONDS + 0.5, abs=0.3)
    info = probe(out)
    assert info.video is not None and (info.video.width, info.video.height) == (426, 240)
    assert audio_onset(out) - first_frame_time(out) == pytest.approx(0.5, abs=FRAME)
    progress.check()
