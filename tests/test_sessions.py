from __future__ import annotations

import pytest

from tapedeck.sessions import (
    InvalidSessionId,
    is_valid_session_id,
    new_session_id,
    track_file_name,
    validate_session_id,
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
