from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from tapedeck.lifecycle import MAX_TTL
from tapedeck.settings import Settings, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("5m", 300),
        ("24h", 86400),
        ("1h30m", 5400),
        ("2d", 172800),
        ("250ms", 0.25),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "5 m", "5x", "-5m", "1h-30m", "m5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPEDECK_SESSION_TTL", "2h")
    monkeypatch.setenv("TAPEDECK_DATA_DIR", "/srv/rec")
    monkeypatch.setenv("TAPEDECK_MAX_FRAME_BYTES", "1024")
    settings = Settings()
    assert settings.session_ttl == timedelta(hours=2)
    assert settings.data_dir == Path("/srv/rec") and settings.max_frame_bytes == 1024


def test_ffmpeg_falls_back_to_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    path = Settings().ffmpeg_path()
    assert "imageio_ffmpeg" in path and Path(path).exists()
    monkeypatch.setenv("TAPEDECK_FFMPEG", "/opt/ffmpeg")
    assert Settings().ffmpeg_path() == "/opt/ffmpeg"


@pytest.mark.parametrize("text", ["1000000000d", "9" * 400])
def test_durations_too_large_for_a_timedelta_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("ttl", ["100000000d", "3651d", "1000000000d", "0s"])
def test_session_ttl_is_bounded(monkeypatch: pytest.MonkeyPatch, ttl: str) -> None:
    monkeypatch.setenv("TAPEDECK_SESSION_TTL", ttl)
    with pytest.raises(ValidationError, match="session_ttl"):
        Settings()


def test_session_ttl_at_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPEDECK_SESSION_TTL", "3650d")
    assert Settings().session_ttl == MAX_TTL


def test_every_websocket_implementation_offered_is_the_installed_uvicorns() -> None:
    """TAPEDECK_WS_IMPLEMENTATION's choices are `ws` protocols of the uvicorn installed, so
    with the oldest uvicorn pyproject.toml allows (make test-lowest) too: `websockets-sansio`
    is not in 0.30, where the web process never started with it."""
    from typing import get_args

    from uvicorn.config import WS_PROTOCOLS

    choices = get_args(Settings.model_fields["ws_implementation"].annotation)
    assert choices
    assert set(choices) <= set(WS_PROTOCOLS), sorted(WS_PROTOCOLS)
