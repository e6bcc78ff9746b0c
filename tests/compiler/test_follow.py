"""Compiling while recording gives the MP4 a one-shot compile gives.

The one-shot reference is the single FFmpeg command of `CompilePlan.args`; the staged compile
(`compile_files`: one FFmpeg per encoded stream, then a stream-copy mux) must write the same
packets, and so must stages fed through a pipe while a track is still growing
(`compiler.follow.Mirror`), with probes made on the growing file (`probe_stream`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from media import ffmpeg_binary, make_h264_opus_webm, make_opus_webm, packet_digest
from tapedeck.compiler.follow import Mirror, _Reader
from tapedeck.compiler.plan import TrackInput, plan_compile
from tapedeck.compiler.probe import probe, probe_stream
from tapedeck.compiler.run import RunningStage, compile_files, run_args, run_ffmpeg

T0 = 1_760_000_000_000.0


def one_shot(inputs: list[tuple[str, Path, float]], out: Path) -> str:
    tracks = [TrackInput(n, str(p), s, probe(p)) for n, p, s in inputs]
    asyncio.run(run_ffmpeg(ffmpeg_binary(), plan_compile(tracks, str(out))))
    return packet_digest(out)


def staged(inputs: list[tuple[str, Path, float]], out: Path) -> str:
    result = asyncio.run(compile_files(ffmpeg_binary(), list(inputs), out))
    assert result.summary
    return packet_digest(out)


@pytest.mark.parametrize(
    ("video_delay_ms", "audio_delay_ms"),
    [(0.0, 0.0), (0.0, 480.0), (350.0, 0.0)],
    ids=["aligned", "audio-late", "video-late"],
)
def test_staged_vp8_compile_has_the_packets_of_the_one_shot_command(
    vp8_webm: Path, opus_webm: Path, tmp_path: Path, video_delay_ms: float, audio_delay_ms: float
) -> None:
    inputs = [
        ("video", vp8_webm, T0 + video_delay_ms),
        ("audio", opus_webm, T0 + audio_delay_ms),
    ]
    assert staged(inputs, tmp_path / "staged.mp4") == one_shot(inputs, tmp_path / "one.mp4")


def test_staged_remux_has_the_packets_of_the_one_shot_command(
    h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    inputs = [("video", h264_webm, T0 + 200), ("audio", opus_webm, T0)]
    assert staged(inputs, tmp_path / "staged.mp4") == one_shot(inputs, tmp_path / "one.mp4")


def test_staged_audio_from_the_video_file(tmp_path: Path) -> None:
    both = make_h264_opus_webm(tmp_path / "both.webm", 3.0)
    inputs = [("video", both, T0)]
    assert staged(inputs, tmp_path / "staged.mp4") == one_shot(inputs, tmp_path / "one.mp4")


async def grow(mirror: Mirror, source: Path, pieces: int = 7) -> None:
    """Appends `source` to `mirror` in uneven pieces with pauses, like a recording."""
    data = source.read_bytes()
    step = len(data) // pieces + 1
    for i in range(0, len(data), step):
        mirror.append(data[i : i + step])
        await asyncio.sleep(0.05)
    mirror.finish()


async def follow_and_compile(
    inputs: list[tuple[str, Path, float]], scratch: Path, out: Path
) -> tuple[dict[str, object], dict[str, object]]:
    """What `compiler.follow` does, without storage: mirrors grow while stages run on them."""
    mirrors = {
        name: Mirror(name, scratch / f"{name}.webm", started) for name, _path, started in inputs
    }
    probes = {
        name: asyncio.ensure_future(
            asyncio.to_thread(probe_stream, _Reader(m), m.path.name, str(m.path), m.current_size)
        )
        for name, m in mirrors.items()
    }
    # Plan from the finished files (the follower plans from the first bytes; the plan is the
    # same, which compile_files checks), then start the stages on the growing mirrors.
    tracks = [TrackInput(n, str(mirrors[n].path), s, probe(p)) for n, p, s in inputs]
    plan = plan_compile(tracks, str(out.with_name(f"{out.name}.part")))
    running = {
        stage.kind: RunningStage(
            stage,
            asyncio.create_task(
                run_args(
                    ffmpeg_binary(),
                    stage.args("pipe:0"),
                    feed=mirrors[stage.track].feed,
                    background=True,
                    finish_progress=False,
                )
            ),
        )
        for stage in plan.stages
    }
    assert running, "the plan has stages to run early"
    await asyncio.gather(*(grow(mirrors[n], p) for n, p, _s in inputs))
    infos = {name: await future for name, future in probes.items()}
    files = {name: probe(m.path) for name, m in mirrors.items()}
    await compile_files(
        ffmpeg_binary(),
        [(n, mirrors[n].path, s) for n, _p, s in inputs],
        out,
        infos=infos,
        running=running,
    )
    assert all(r.task.done() for r in running.values())
    return dict(infos), dict(files)


def test_stages_fed_while_tracks_grow_give_the_one_shot_mp4(vp8_webm: Path, tmp_path: Path) -> None:
    opus = make_opus_webm(tmp_path / "late.webm", 4.0)
    inputs = [("video", vp8_webm, T0), ("audio", opus, T0 + 300)]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "followed.mp4"
    streamed, files = asyncio.run(follow_and_compile(inputs, scratch, out))
    assert streamed == files  # probing a growing file = probing the finished one
    assert packet_digest(out) == one_shot(inputs, tmp_path / "one.mp4")
    assert not list(scratch.glob("*.part*"))  # stage outputs are cleaned up


def test_a_stage_that_failed_early_is_run_again_on_the_file(
    h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    inputs = [("video", h264_webm, T0), ("audio", opus_webm, T0)]
    tracks = [TrackInput(n, str(p), s, probe(p)) for n, p, s in inputs]
    out = tmp_path / "out.mp4"
    plan = plan_compile(tracks, str(out.with_name(f"{out.name}.part")))

    async def run() -> None:
        async def cut_short(stdin: asyncio.StreamWriter) -> None:
            stdin.write(b"\x1aE\xdf\xa3 not a whole webm")

        stage = plan.stages[0]
        early = asyncio.create_task(
            run_args(ffmpeg_binary(), stage.args("pipe:0"), feed=cut_short, finish_progress=False)
        )
        await asyncio.wait([early])
        await compile_files(
            ffmpeg_binary(), inputs, out, running={"audio": RunningStage(stage, early)}
        )

    asyncio.run(run())
    assert packet_digest(out) == one_shot(inputs, tmp_path / "one.mp4")


def test_probe_stream_waits_for_bytes_and_ends_with_the_track(
    opus_webm: Path, tmp_path: Path
) -> None:
    async def run() -> None:
        mirror = Mirror("audio", tmp_path / "audio.webm", T0)
        probing = asyncio.ensure_future(
            asyncio.to_thread(
                probe_stream, _Reader(mirror), "audio.webm", str(mirror.path), mirror.current_size
            )
        )
        await asyncio.sleep(0.2)
        assert not probing.done()  # nothing to read yet: it waits rather than failing
        await grow(mirror, opus_webm)
        info = await probing
        assert info == probe(mirror.path)

    asyncio.run(run())
