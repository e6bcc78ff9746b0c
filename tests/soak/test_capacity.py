"""The power-cut file system's capacity option, the nemesis's full disk: ENOSPC beyond the
room the control file gives, set and cleared while mounted, and again after a cut."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import wait_for
from powercut.mount import PowerCutDir, powercut_mount


@pytest.fixture
def mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PowerCutDir]:
    monkeypatch.setenv("POWERCUT_CAPACITY_FILE", str(tmp_path / "capacity"))
    with powercut_mount(tmp_path) as mount:
        yield mount


def append(path: Path, n: int) -> bool:
    """Appends n bytes; False when the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, b"x" * n)
        return True
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
        return False
    finally:
        os.close(fd)


def test_room_is_enforced_and_cleared(mounted: PowerCutDir, tmp_path: Path) -> None:
    control = tmp_path / "capacity"
    f = mounted.path / "f"
    assert append(f, 100_000)  # no control file: unlimited

    control.write_text("0")
    wait_for(lambda: not append(f, 1), what="the disk to fill")
    size = f.stat().st_size
    with open(f, "r+b") as out:  # rewriting in place takes no room
        out.write(b"y" * 10)
    with pytest.raises(OSError) as full:
        os.truncate(f, size + 1)
    assert full.value.errno == errno.ENOSPC
    assert f.stat().st_size == size

    control.write_text("1000")
    wait_for(lambda: append(f, 600), what="room for 1000 bytes")
    assert not append(f, 600)  # 400 left
    assert append(f, 400)
    assert not append(f, 1)
    assert f.stat().st_size == size + 1000

    control.unlink()
    wait_for(lambda: append(f, 5000), what="space to return")
    assert append(f, 100_000)


def test_the_option_holds_across_a_cut(mounted: PowerCutDir, tmp_path: Path) -> None:
    (tmp_path / "capacity").write_text("0")
    mounted.cut()
    wait_for(lambda: not append(mounted.path / "g", 1), what="a full disk after the cut")
    (tmp_path / "capacity").unlink()
    wait_for(lambda: append(mounted.path / "g", 1), what="space to return")
