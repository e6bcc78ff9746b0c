"""The HMAC key kept in DATA_DIR/.tapedeck-secret: never empty, never weak, one per data dir."""

from __future__ import annotations

import multiprocessing
import stat
import threading
from pathlib import Path

import pytest

from tapedeck import webapp
from tapedeck.settings import Settings
from tapedeck.webapp import SECRET_FILE, resolve_secret

STRONG = 32  # characters


def settings_for(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, secret_key=None)


def stored(data_dir: Path) -> str:
    return (data_dir / SECRET_FILE).read_text().strip()


def test_a_new_data_dir_gets_a_strong_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "recordings"
    key = resolve_secret(settings_for(data_dir))
    assert len(key) >= STRONG
    assert stored(data_dir) == key
    assert stat.S_IMODE((data_dir / SECRET_FILE).stat().st_mode) == 0o600
    assert resolve_secret(settings_for(data_dir)) == key  # the next start keeps it


@pytest.mark.parametrize(
    "content",
    ["", "\n", "   \n\t", "abc", "x" * (STRONG - 1) + "\n", "\0" * 43, "k" * 40 + "\0\0\0"],
)
def test_an_empty_or_short_key_is_replaced(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty file (a crash or ENOSPC between create and write) was used as the key:
    then anyone could mint upload tokens and signed download URLs."""
    (tmp_path / SECRET_FILE).write_text(content)
    key = resolve_secret(settings_for(tmp_path))
    assert len(key) >= STRONG and key != content.strip()
    assert stored(tmp_path) == key
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    assert "replacing it" in caplog.text
    assert resolve_secret(settings_for(tmp_path)) == key
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]  # no temporary file left


def test_a_valid_key_is_kept(tmp_path: Path) -> None:
    key = "k" * STRONG
    (tmp_path / SECRET_FILE).write_text(key + "\n")
    assert resolve_secret(settings_for(tmp_path)) == key
    assert (tmp_path / SECRET_FILE).read_text() == key + "\n"


def test_a_configured_key_wins(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="configured")
    assert resolve_secret(settings) == "configured"
    assert not (tmp_path / SECRET_FILE).exists()


def test_a_start_that_dies_while_writing_leaves_no_empty_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key file is either absent or whole: a start that dies on the way (here: while
    producing the key) leaves nothing the next start would take for a key."""

    def dies() -> str:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(webapp, "new_secret", dies)
        with pytest.raises(OSError):
            resolve_secret(settings_for(tmp_path))
    path = tmp_path / SECRET_FILE
    assert not path.exists() or len(path.read_text().strip()) >= STRONG
    key = resolve_secret(settings_for(tmp_path))
    assert len(key) >= STRONG and stored(tmp_path) == key


def test_a_failed_fsync_leaves_no_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(webapp.os, "fsync", full)
        with pytest.raises(OSError):
            resolve_secret(settings_for(tmp_path))
    assert list(tmp_path.iterdir()) == []  # neither the key nor a temporary file
    assert len(resolve_secret(settings_for(tmp_path))) >= STRONG


def test_without_hard_links_the_key_is_still_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(src: str, dst: str) -> None:
        raise OSError(1, "Operation not permitted")

    with monkeypatch.context() as patched:
        patched.setattr(webapp.os, "link", unsupported)
        key = resolve_secret(settings_for(tmp_path))
    assert len(key) >= STRONG and stored(tmp_path) == key
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]


def _resolve_when_released(data_dir: str, barrier: threading.Barrier) -> str:
    barrier.wait()
    return resolve_secret(settings_for(Path(data_dir)))


@pytest.mark.parametrize("initial", [None, "", "short"])
def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path, initial: str | None) -> None:
    """`tapedeck up` starts several processes on one data dir; tokens one signs, another
    checks, so they must all end up with the same key."""
    if initial is not None:
        (tmp_path / SECRET_FILE).write_text(initial)
    workers = 4
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(workers)
        with context.Pool(workers) as pool:
            keys = pool.starmap(
                _resolve_when_released, [(str(tmp_path), barrier)] * workers, chunksize=1
            )
    assert len(set(keys)) == 1, keys
    assert len(keys[0]) >= STRONG and stored(tmp_path) == keys[0]
