from __future__ import annotations

import pytest

from tapedeck.sessions import (
    InvalidSessionId,
    InvalidTitle,
    default_title,
    is_object,
    is_output,
    is_output_name,
    is_valid_session_id,
    new_session_id,
    track_file_name,
    validate_session_id,
    validate_title,
)


def test_generated_ids_are_valid() -> None:
    assert all(is_valid_session_id(new_session_id()) for _ in range(100))


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "..",
        "../../etc/passwd",
        "abc",
        "a" * 64,
        "-abcdefgh",
        "ABCDEFGH",
        "abcdefg/h",
        "abcdefgh\n",
        "abcdefgh\x00",
        "abcdéfgh",
        "abc.defgh",
        "%2e%2e%2f1234",
    ],
)
def test_invalid_ids(bad: str) -> None:
    assert not is_valid_session_id(bad)
    with pytest.raises(InvalidSessionId):
        validate_session_id(bad)


def test_track_files() -> None:
    assert track_file_name("video") == "video.webm"
    with pytest.raises(ValueError, match="unknown track"):
        track_file_name("../x")


@pytest.mark.parametrize(
    ("given", "kept"),
    [("  Weekly   sync ", "Weekly sync"), ("Réunion 🎥", "Réunion 🎥"), ("x" * 200, "x" * 200)],
)
def test_titles_are_trimmed(given: str, kept: str) -> None:
    assert validate_title(given) == kept


@pytest.mark.parametrize(
    "bad", ["", "   ", "x" * 201, "a\x00b", "bell\x07", "rtl\u202eoverride", "lone\ud800", "\u200b"]
)
def test_titles_refuse_empty_long_and_control_characters(bad: str) -> None:
    with pytest.raises(InvalidTitle):
        validate_title(bad)


def test_named_outputs_are_flat_names() -> None:
    for good in ("poster.jpg", "storyboard.vtt", "hls.m3u8", "hls-init.mp4", "hls-00001.m4s"):
        assert is_output_name(good) and is_object(good) and is_output(good)
    for bad in ("output", "video", "../poster.jpg", "a/b.jpg", "POSTER.JPG", ".jpg", "x.exe"):
        assert not is_output_name(bad), bad
    assert is_object("video") and not is_output("video") and is_output("output")


def test_the_default_title_is_the_creation_time() -> None:
    assert default_title(1_764_303_440_186) == "Recording 2025-11-28 04:17 UTC"
