"""plan_compile is pure: these tests build MediaInfo by hand and read the argv."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapedeck.compiler.media import MediaInfo, StreamInfo
from tapedeck.compiler.plan import (
    MAX_START_SPREAD,
    CompilePlan,
    OutputOptions,
    PlanError,
    TrackInput,
    mux_args,
    plan_compile,
    target_size,
    trusted_starts,
)

T0 = 1_760_000_000_000.0  # epoch ms, as the browser sends it


def video(
    codec: str = "h264",
    start: float = 0.0,
    seconds: float = 4.0,
    size: tuple[int, int] = (640, 360),
    index: int = 0,
) -> StreamInfo:
    return StreamInfo(
        index=index,
        kind="video",
        codec=codec,
        packets=120,
        start=start,
        end=start + seconds,
        width=size[0],
        height=size[1],
    )


def audio(
    codec: str = "opus", start: float = 0.0, seconds: float = 4.0, index: int = 0
) -> StreamInfo:
    return StreamInfo(
        index=index,
        kind="audio",
        codec=codec,
        packets=200,
        start=start,
        end=start + seconds,
        sample_rate=48000,
        channels=1,
    )


def track(name: str, *streams: StreamInfo, started_at: float | None = T0) -> TrackInput:
    path = f"/rec/{name}.webm"
    info = MediaInfo(path=path, format_name="matroska,webm", size=1000, streams=streams)
    return TrackInput(name=name, path=path, started_at=started_at, info=info)


def plan(*tracks: TrackInput, **options: object) -> CompilePlan:
    return plan_compile(list(tracks), "/out/s.mp4", OutputOptions.model_validate(options))


def opt(p: CompilePlan, flag: str) -> str:
    """The value after the first occurrence of `flag`."""
    return p.args[p.args.index(flag) + 1]


def input_offset(p: CompilePlan, path: str) -> float:
    """The -itsoffset applied to the input `path` (0 when none)."""
    i = p.args.index(path)
    assert p.args[i - 1] == "-i"
    return float(p.args[i - 2]) if p.args[i - 3] == "-itsoffset" else 0.0


# --- codecs ---


def test_h264_is_stream_copied_and_opus_becomes_aac() -> None:
    p = plan(track("video", video("h264")), track("audio", audio("opus")))
    assert opt(p, "-c:v") == "copy"
    assert "libx264" not in p.args
    assert opt(p, "-c:a") == "aac"
    assert opt(p, "-b:a") == "128k"
    assert (p.video_codec, p.audio_codec) == ("h264", "aac")
    assert p.summary == "copy h264 video, opus→aac audio"


@pytest.mark.parametrize("codec", ["vp8", "vp9", "av1"])
def test_other_video_codecs_are_encoded_with_libx264(codec: str) -> None:
    p = plan(track("video", video(codec)))
    assert opt(p, "-c:v") == "libx264"
    assert opt(p, "-crf") == "23"
    assert opt(p, "-preset") == "veryfast"
    assert opt(p, "-pix_fmt") == "yuv420p"
    assert opt(p, "-fps_mode:v") == "vfr"
    assert p.summary.startswith(f"{codec}→h264 video")


def test_crf_and_preset_are_passed_through() -> None:
    p = plan(track("video", video("vp9")), crf=30, preset="ultrafast")
    assert (opt(p, "-crf"), opt(p, "-preset")) == ("30", "ultrafast")


def test_options_accept_the_crd_spelling_and_validate() -> None:
    options = OutputOptions.model_validate({"videoCodec": "h264", "crf": 20, "maxHeight": 720})
    assert (options.video_codec, options.crf, options.max_height) == ("h264", 20, 720)
    with pytest.raises(ValueError):
        OutputOptions(crf=60)
    with pytest.raises(ValueError):
        OutputOptions.model_validate({"preset": "ludicrous"})


def test_forcing_h264_reencodes_h264() -> None:
    p = plan(track("video", video("h264")), video_codec="h264")
    assert opt(p, "-c:v") == "libx264"


def test_aac_audio_is_copied() -> None:
    p = plan(track("video", video("h264"), audio("aac", index=1)))
    assert opt(p, "-c:a") == "copy"
    assert "-af" not in p.args
    assert p.summary == "copy h264 video, copy aac audio from video"


def test_faststart_progress_and_mp4_output() -> None:
    p = plan(track("video", video()))
    assert opt(p, "-movflags") == "+faststart"
    assert opt(p, "-f") == "mp4"
    assert opt(p, "-progress") == "pipe:1"
    assert {"-nostats", "-y", "-nostdin"} <= set(p.args)
    assert p.args[-1] == "/out/s.mp4"
    assert p.output_path == "/out/s.mp4"


# --- scaling ---


def test_max_height_scales_keeping_aspect_with_even_dimensions() -> None:
    p = plan(track("video", video("vp8", size=(1280, 720))), max_height=480)
    assert opt(p, "-vf").startswith("scale=854:480:")
    assert "pad=854:480" in opt(p, "-vf")


def test_odd_max_height_and_odd_sources_round_down_to_even() -> None:
    assert target_size(1280, 720, 481) == (854, 480)
    assert target_size(641, 361, None) == (640, 360)
    assert target_size(1920, 1080, 2000) == (1920, 1080)
    assert target_size(None, 720, 480) is None


def test_taller_h264_is_encoded_to_honour_max_height() -> None:
    p = plan(track("video", video("h264", size=(1920, 1080))), max_height=720)
    assert opt(p, "-c:v") == "libx264"
    assert opt(p, "-vf").startswith("scale=1280:720:")
    assert "1080p is taller than 720p" in p.summary


def test_h264_within_max_height_is_still_copied() -> None:
    p = plan(track("video", video("h264", size=(1280, 720))), max_height=1080)
    assert opt(p, "-c:v") == "copy"
    assert "-vf" not in p.args


def test_unknown_dimensions_use_an_expression_filter() -> None:
    stream = StreamInfo(index=0, kind="video", codec="vp8", packets=1, start=0.0, end=1.0)
    p = plan(track("video", stream), max_height=480)
    assert opt(p, "-vf") == "scale=w=-2:h=trunc(min(ih\\,480)/2)*2,setsar=1"


# --- which streams ---


def test_audio_only() -> None:
    p = plan(track("audio", audio()))
    assert p.args.count("-i") == 1
    assert opt(p, "-map") == "0:0"
    assert "-c:v" not in p.args
    assert (p.video_codec, p.audio_codec) == (None, "aac")


def test_video_only() -> None:
    p = plan(track("video", video()))
    assert "-c:a" not in p.args
    assert (p.video_codec, p.audio_codec) == ("h264", None)


def test_audio_comes_from_the_video_file_when_there_is_no_audio_track() -> None:
    p = plan(track("video", video(), audio(index=1)))
    assert p.args.count("-i") == 1
    assert [p.args[i + 1] for i, a in enumerate(p.args) if a == "-map"] == ["0:0", "0:1"]


def test_the_audio_track_wins_over_audio_inside_the_video_file() -> None:
    p = plan(track("video", video(), audio(index=1)), track("audio", audio()))
    assert [p.args[i + 1] for i, a in enumerate(p.args) if a == "-map"] == ["0:0", "1:0"]
    assert p.args[p.args.index("-i", p.args.index("-i") + 1) + 1] == "/rec/audio.webm"


def test_screen_is_the_video_when_there_is_no_camera() -> None:
    p = plan(track("screen", video("vp8")), track("audio", audio()))
    assert "/rec/screen.webm" in p.args
    assert "from screen" in p.summary


def test_camera_wins_over_screen() -> None:
    p = plan(track("screen", video("vp8")), track("video", video("h264")))
    assert "/rec/screen.webm" not in p.args
    assert opt(p, "-c:v") == "copy"


def test_no_inputs_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="no usable audio or video"):
        plan_compile([], "/out/s.mp4")


def test_tracks_with_only_headers_are_not_usable() -> None:
    empty = StreamInfo(index=0, kind="video", codec="h264")  # no packets
    with pytest.raises(PlanError, match="no usable audio or video"):
        plan(track("video", empty))


def test_unknown_or_duplicate_tracks_and_overwriting_an_input_are_refused() -> None:
    with pytest.raises(PlanError, match="unknown track"):
        plan(track("webcam", video()))
    with pytest.raises(PlanError, match="twice"):
        plan(track("video", video()), track("video", video()))
    with pytest.raises(PlanError, match="output path is one of the inputs"):
        plan_compile([track("video", video())], "/rec/../rec/video.webm")


# --- alignment ---


def test_later_audio_is_delayed_by_the_start_difference() -> None:
    p = plan(track("video", video()), track("audio", audio(), started_at=T0 + 500))
    assert input_offset(p, "/rec/video.webm") == 0.0
    assert input_offset(p, "/rec/audio.webm") == 0.5
    assert opt(p, "-af") == "aresample=async=1:first_pts=0"
    assert p.offsets == {"video": 0.0, "audio": 0.5}
    assert p.expected_duration == pytest.approx(4.5)
    assert "audio delayed 0.500 s" in p.summary


def test_later_video_is_delayed_by_the_start_difference() -> None:
    p = plan(track("video", video(), started_at=T0 + 250), track("audio", audio()))
    assert input_offset(p, "/rec/video.webm") == 0.25
    assert input_offset(p, "/rec/audio.webm") == 0.0


def test_a_first_timestamp_after_zero_is_kept_relative_to_the_start() -> None:
    # FFmpeg rebases each input to its first packet; the plan adds that lead back.
    p = plan(track("video", video(start=0.3)), track("audio", audio()))
    assert input_offset(p, "/rec/video.webm") == 0.3
    assert input_offset(p, "/rec/audio.webm") == 0.0
    assert p.expected_duration == pytest.approx(4.3)


def test_opus_pre_skip_before_zero_shifts_everything_else_by_it() -> None:
    p = plan(track("video", video()), track("audio", audio(start=-0.007)))
    assert input_offset(p, "/rec/video.webm") == pytest.approx(0.007)
    assert input_offset(p, "/rec/audio.webm") == 0.0


def test_a_foreign_clock_is_placed_by_its_first_packet() -> None:
    p = plan(track("video", video(start=3600.0)), track("audio", audio(), started_at=T0 + 100))
    assert input_offset(p, "/rec/video.webm") == 0.0
    assert input_offset(p, "/rec/audio.webm") == 0.1
    assert p.expected_duration == pytest.approx(4.1)


def test_streams_of_one_file_keep_their_own_relative_timing() -> None:
    p = plan(track("video", video(start=0.0), audio(start=0.2, index=1)))
    assert "-itsoffset" not in p.args
    assert p.expected_duration == pytest.approx(4.2)


@pytest.mark.parametrize("unknown", [None, 0.0, float("nan")])
def test_a_missing_start_is_treated_as_the_earliest(unknown: float | None) -> None:
    p = plan(track("video", video(), started_at=unknown), track("audio", audio(), started_at=T0))
    assert "-itsoffset" not in p.args


YEAR_MS = 365.25 * 86400 * 1000


@pytest.mark.parametrize("far", [1e15, T0 + 10 * YEAR_MS, T0 + MAX_START_SPREAD * 1000 + 1])
def test_a_start_too_far_from_the_earliest_is_treated_as_unknown(far: float) -> None:
    # Recorders start within a second of each other: years apart is a broken clock, and an
    # -itsoffset of years made FFmpeg encode silence until the timeout or a full disk.
    p = plan(track("video", video()), track("audio", audio(), started_at=far))
    assert "-itsoffset" not in p.args
    assert p.offsets == {"video": 0.0, "audio": 0.0}
    assert p.expected_duration == pytest.approx(4.0)
    assert "audio start ignored" in p.summary
    assert all(not s.input_args for s in p.stages)


def test_a_start_within_the_spread_still_delays_its_track() -> None:
    p = plan(track("video", video()), track("audio", audio(), started_at=T0 + 59_000))
    assert input_offset(p, "/rec/audio.webm") == 59.0
    assert "ignored" not in p.summary


@pytest.mark.parametrize(
    ("given", "trusted", "ignored"),
    [
        ({}, {}, {}),
        ({"video": T0, "audio": None}, {"video": T0, "audio": None}, {}),
        ({"video": T0, "audio": 0.0}, {"video": T0, "audio": None}, {}),
        ({"video": float("inf"), "audio": T0}, {"video": None, "audio": T0}, {}),
        ({"video": T0, "audio": T0 + 60_000}, {"video": T0, "audio": T0 + 60_000}, {}),
        ({"video": T0, "audio": 1e15}, {"video": T0, "audio": None}, {"audio": 1e15 - T0}),
        # The earliest is the reference: a start far before the others leaves them unknown,
        # which aligns both tracks at 0 just the same.
        ({"video": 1.0, "audio": T0}, {"video": 1.0, "audio": None}, {"audio": T0 - 1.0}),
    ],
)
def test_trusted_starts(
    given: dict[str, float | None], trusted: dict[str, float | None], ignored: dict[str, float]
) -> None:
    got = trusted_starts(given)
    assert (got.starts, got.ignored) == (trusted, ignored)


@given(
    delays=st.lists(st.floats(0, 30_000), min_size=2, max_size=2),
    leads=st.lists(st.floats(-0.05, 2.0), min_size=2, max_size=2),
)
def test_offsets_are_non_negative_and_preserve_wall_clock_order(
    delays: list[float], leads: list[float]
) -> None:
    v = track("video", video(start=leads[0]), started_at=T0 + delays[0])
    a = track("audio", audio(start=leads[1]), started_at=T0 + delays[1])
    p = plan(v, a)
    assert min(p.offsets.values()) == 0.0
    assert all(o >= 0 for o in p.offsets.values())
    # Output time of each first packet = offset (FFmpeg rebased the input to its start).
    # Relative to each other they must match startedAt + first timestamp.
    want = (delays[1] / 1000 + leads[1]) - (delays[0] / 1000 + leads[0])
    assert p.offsets["audio"] - p.offsets["video"] == pytest.approx(want, abs=2e-6)


# --- stages: the same compile in steps (compile while recording) ---


def test_encoded_streams_become_stages_with_the_one_shot_arguments() -> None:
    p = plan(
        track("video", video("vp8")),
        track("audio", audio(), started_at=T0 + 500),
    )
    assert [s.kind for s in p.stages] == ["video", "audio"]
    vstage, astage = p.stages
    assert vstage.track == "video" and astage.track == "audio"
    assert astage.input_args == ("-itsoffset", "0.5")  # the track's delay, as in one shot
    for stage in p.stages:
        args = stage.args("pipe:0")
        # Every encoder argument of the one-shot command is in the stage, in the same order.
        encoder = list(args[args.index("-map") + 2 : args.index("-f")])
        start = p.args.index(encoder[0])
        assert list(p.args[start : start + len(encoder)]) == encoder
        assert args[args.index("-i") + 1] == "pipe:0"
        assert args[-1] == stage.output_path and stage.output_path.startswith("/out/s.mp4.")
    assert p.stage("video") is vstage and p.stage("screen") is None


def test_mux_copies_tracks_with_their_offsets_and_stage_outputs_as_they_start() -> None:
    p = plan(
        track("video", video("h264"), started_at=T0 + 250),
        track("audio", audio()),
    )
    assert [s.kind for s in p.stages] == ["audio"]
    args = mux_args(p, {"audio": 0.021333})
    at = args.index("/rec/video.webm")
    assert args[at - 3 : at] == ("-itsoffset", "0.25", "-i")
    at = args.index(p.stages[0].output_path)
    assert args[at - 3 : at] == ("-itsoffset", "0.021333", "-i")
    assert args[args.index("-map") : args.index("-c")] == ("-map", "0:0", "-map", "1:0")
    assert "copy" in args and "+faststart" in args and args[-1] == "/out/s.mp4"


def test_one_file_with_both_streams_is_copied_and_staged() -> None:
    p = plan(track("video", video("h264", index=0), audio(index=1)))
    assert [(s.kind, s.track) for s in p.stages] == [("audio", "video")]
    assert "0:1" in p.stages[0].output_args
    args = mux_args(p, {"audio": 0.0})
    assert args.count("-i") == 2  # the recorded file (video) and the stage's output (audio)


def test_nothing_encoded_means_no_stages_and_the_one_shot_command() -> None:
    p = plan(track("video", video("h264")), track("audio", audio("aac")))
    assert p.stages == () and mux_args(p) == p.args
