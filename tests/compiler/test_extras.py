"""Planning of the poster, storyboard and HLS (pure: no FFmpeg here)."""

from __future__ import annotations

import pytest

from tapedeck.compiler.extras import (
    COLUMNS,
    MAX_TILES,
    TILE_H,
    TILE_W,
    parse_luma,
    pick_poster,
    plan_extras,
    poster_job,
    poster_window,
    storyboard_cells,
    storyboard_interval,
    storyboard_vtt,
    want_hls,
)

DIRS = {"poster": "/s/p", "storyboard": "/s/s", "hls": "/s/h"}


@pytest.mark.parametrize(
    ("duration", "window"),
    [(30.0, (2.0, 8.0)), (4.0, (0.4, 3.6)), (3600.0, (2.0, 8.0)), (0.0, (0.0, 8.0))],
)
def test_the_poster_is_picked_a_few_seconds_in_never_from_the_first_frame(
    duration: float, window: tuple[float, float]
) -> None:
    assert poster_window(duration) == window
    start, length = window
    if duration:
        assert start > 0 and start + length <= duration


@pytest.mark.parametrize(
    ("duration", "interval", "cells"),
    [(4.0, 1, 4), (14.5, 1, 15), (100.0, 1, 100), (101.0, 2, 51), (3600.0, 36, 100)],
)
def test_the_storyboard_has_at_most_a_hundred_cells(
    duration: float, interval: int, cells: int
) -> None:
    assert storyboard_interval(duration) == interval
    assert storyboard_cells(duration) == cells <= MAX_TILES


def test_the_webvtt_index_names_each_cell_of_the_sprite() -> None:
    text = storyboard_vtt(14.5)
    assert text.startswith("WEBVTT\n\n")
    cues = [block.split("\n") for block in text.strip().split("\n\n")[1:]]
    assert len(cues) == 15
    assert cues[0] == [
        "00:00:00.000 --> 00:00:01.000",
        f"storyboard.jpg#xywh=0,0,{TILE_W},{TILE_H}",
    ]
    assert cues[COLUMNS][1] == f"storyboard.jpg#xywh=0,{TILE_H},{TILE_W},{TILE_H}"
    assert cues[-1][0] == "00:00:14.000 --> 00:00:14.500"  # the last cue ends with the video
    hour = storyboard_vtt(3725.0).strip().split("\n\n")
    assert hour[-1].split("\n")[0] == "01:02:04.000 --> 01:02:05.000"  # 38 s cells


def test_hls_is_per_compile_and_otherwise_by_length() -> None:
    assert want_hls(3600, None, 600) and not want_hls(599, None, 600)
    assert want_hls(1, True, 600) and not want_hls(3600, False, 600)
    assert want_hls(0.5, None, 0)


def test_the_plan_copies_packets_into_fmp4_and_skips_pictures_without_video() -> None:
    plan = plan_extras("/s/out.mp4", 30.0, True, True, DIRS)
    assert [job.name for job in plan.jobs] == ["poster-luma", "storyboard", "hls"]
    luma, storyboard, hls = (" ".join(job.args) for job in plan.jobs)
    assert "-ss 2 -t 8 -i /s/out.mp4" in luma and "signalstats" in luma
    assert "file=/s/p/luma.txt" in luma and luma.endswith("-f null -")
    poster = " ".join(poster_job("/s/out.mp4", 3.25, "/s/p").args)
    assert "-ss 3.25 -i /s/out.mp4" in poster and poster.endswith("/s/p/poster.jpg")
    assert "tile=10x3" in storyboard and "fps=1/1" in storyboard
    assert "-skip_frame" not in storyboard  # every frame of a short recording
    long = " ".join(plan_extras("/s/out.mp4", 3600.0, True, True, DIRS).jobs[1].args)
    assert "-skip_frame nokey -i /s/out.mp4" in long and "fps=1/36" in long
    assert "-c copy" in hls and "-hls_segment_type fmp4" in hls and "-hls_playlist_type vod" in hls
    assert "libx264" not in hls and hls.endswith("/s/h/hls.m3u8")
    assert plan.storyboard_vtt is not None

    audio_only = plan_extras("/s/out.mp4", 30.0, False, True, DIRS)
    assert [job.name for job in audio_only.jobs] == ["hls"] and audio_only.storyboard_vtt is None
    assert plan_extras("/s/out.mp4", 30.0, False, False, DIRS).jobs == ()


LUMA = """frame:0    pts:0       pts_time:0
lavfi.signalstats.YAVG=16.0
frame:1    pts:1       pts_time:0.25
lavfi.signalstats.YAVG=31.9
frame:2    pts:2       pts_time:0.5
lavfi.signalstats.YAVG=235.0
frame:3    pts:3       pts_time:0.75
lavfi.signalstats.YAVG=31.9
frame:4    pts:4       pts_time:garbage
lavfi.signalstats.YAVG=99
"""


def test_the_poster_is_the_brightest_sample_that_is_not_blown_out() -> None:
    samples = parse_luma(LUMA)
    assert samples == [(0.0, 16.0), (0.25, 31.9), (0.5, 235.0), (0.75, 31.9)]
    assert pick_poster(samples, 2.0) == 2.25  # the earliest of the brightest, after the start
    assert pick_poster([(0.0, 250.0)], 2.0) == 2.0  # all white: the window's start
    assert pick_poster([], 0.4) == 0.4
