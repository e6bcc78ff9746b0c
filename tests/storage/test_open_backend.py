"""open_backend with the S3 tier's settings: a bad configuration stops storage with a readable
message, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapedeck.settings import Settings
from tapedeck.storage.backend import open_backend


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("TAPEDECK_S3_BUCKET", "td", "bucket"),
        ("TAPEDECK_S3_PART_SIZE", "12", "part size"),
        ("TAPEDECK_S3_ADDRESSING_STYLE", "sideways", "addressing_style"),
    ],
)
def test_a_bad_s3_setting_stops_storage_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    monkeypatch.setenv("TAPEDECK_S3_BUCKET", "tapedeck-ok")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        open_backend(Settings(data_dir=tmp_path, s3_bucket="tapedeck-ok"))
    message = str(stopped.value.code)
    assert said in message and value in message, message
    assert "Traceback" not in message
