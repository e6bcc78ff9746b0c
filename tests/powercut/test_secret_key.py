"""The generated HMAC key (`DATA_DIR/.tapedeck-secret`) is durable once the web process uses
it, and an empty key file is never taken for a key.

Found by the nemesis (tests/soak/, seed 2): the key was written without an fsync, a power cut
left the file empty, and the restarted web process signed and checked every token with the
empty string as its key: every upload token issued before the cut was refused (4401, and the
clients gave up their recordings), and anyone could forge tokens for any session.
"""

from __future__ import annotations

from pathlib import Path

from powercut.mount import PowerCutDir
from tapedeck.settings import Settings
from tapedeck.webapp import SECRET_FILE, resolve_secret


def test_the_generated_secret_survives_a_power_cut(powercut_dir: PowerCutDir) -> None:
    settings = Settings(data_dir=powercut_dir.path)
    secret = resolve_secret(settings)
    assert len(secret) >= 32
    powercut_dir.cut()
    assert (powercut_dir.path / SECRET_FILE).read_text().strip() == secret
    assert resolve_secret(settings) == secret


def test_an_empty_secret_file_is_replaced_not_used(tmp_path: Path) -> None:
    """What an older version left after a power cut: the entry, without its content."""
    (tmp_path / SECRET_FILE).write_text("")
    secret = resolve_secret(Settings(data_dir=tmp_path))
    assert len(secret) >= 32
    assert (tmp_path / SECRET_FILE).read_text().strip() == secret
    assert resolve_secret(Settings(data_dir=tmp_path)) == secret
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]  # no temporary file left


def test_a_configured_secret_is_used_as_is(tmp_path: Path) -> None:
    assert resolve_secret(Settings(data_dir=tmp_path, secret_key="configured")) == "configured"
    assert not (tmp_path / SECRET_FILE).exists()
