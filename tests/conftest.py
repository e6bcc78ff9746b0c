from __future__ import annotations

from pathlib import Path

import pytest

from media import make_h264_webm, make_opus_webm, make_vp8_webm

pytest_plugins = ["stack_fixtures", "storage_fixtures", "s3_fixtures"]

# --- media fixtures ---
# Built once per test session with the real FFmpeg (tests/media.py); treat them as
# read-only: copy one before handing it to code that may write.

FIXTURE_SECONDS = 4.0


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def h264_webm(media_dir: Path) -> Path:
    return make_h264_webm(media_dir / "h264.webm", FIXTURE_SECONDS)


@pytest.fixture(scope="session")
def vp8_webm(media_dir: Path) -> Path:
    return make_vp8_webm(media_dir / "vp8.webm", FIXTURE_SECONDS)


@pytest.fixture(scope="session")
def opus_webm(media_dir: Path) -> Path:
    return make_opus_webm(media_dir / "opus.webm", FIXTURE_SECONDS)
