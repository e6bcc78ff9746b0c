"""The power-cut file system keeps exactly what was synced: real mount, real syscalls."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import pytest

from powercut.mount import PowerCutDir


def write(path: Path, data: bytes, sync: bool = False, flags: int = os.O_CREAT) -> None:
    fd = os.open(path, os.O_WRONLY | flags, 0o640)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_written_not_synced_is_gone(powercut_dir: PowerCutDir) -> None:
    f = powercut_dir.path / "f"
    write(f, b"hello")
    assert f.read_bytes() == b"hello"  # reads see the cache
    powercut_dir.cut()
    assert not f.exists()


def test_file_and_directory_synced_are_kept(powercut_dir: PowerCutDir) -> None:
    f = powercut_dir.path / "f"
    write(f, b"hello", sync=True)
    sync_dir(powercut_dir.path)
    powercut_dir.cut()
    assert f.read_bytes() == b"hello"
    assert (powercut_dir.backing / "f").read_bytes() == b"hello"  # the disk is the backing dir


def test_directory_synced_before_the_file_keeps_the_later_file_sync(
    powercut_dir: PowerCutDir,
) -> None:
    f = powercut_dir.path / "f"
    write(f, b"early")
    sync_dir(powercut_dir.path)
    with open(f, "ab") as out:
        out.write(b"+late")
        out.flush()
        os.fdatasync(out.fileno())
    powercut_dir.cut()
    assert f.read_bytes() == b"early+late"


def test_file_synced_but_not_its_directory_is_gone(powercut_dir: PowerCutDir) -> None:
    f = powercut_dir.path / "f"
    write(f, b"hello", sync=True)
    powercut_dir.cut()
    assert not f.exists()


def test_directory_synced_but_not_the_file_keeps_an_empty_file(
    powercut_dir: PowerCutDir,
) -> None:
    f = powercut_dir.path / "f"
    write(f, b"hello")
    sync_dir(powercut_dir.path)
    powercut_dir.cut()
    assert f.read_bytes() == b""


def test_data_after_the_last_fsync_is_lost(powercut_dir: PowerCutDir) -> None:
    f = powercut_dir.path / "f"
    write(f, b"kept", sync=True)
    sync_dir(powercut_dir.path)
    write(f, b"lost", flags=os.O_APPEND)
    assert f.read_bytes() == b"keptlost"
    powercut_dir.cut()
    assert f.read_bytes() == b"kept"


def test_truncate_is_undone_unless_the_file_is_synced(powercut_dir: PowerCutDir) -> None:
    a, b = powercut_dir.path / "a", powercut_dir.path / "b"
    for f in (a, b):
        write(f, b"0123456789", sync=True)
    sync_dir(powercut_dir.path)
    os.truncate(a, 3)
    with open(b, "r+b") as f:
        f.truncate(3)
        os.fsync(f.fileno())
    powercut_dir.cut()
    assert a.read_bytes() == b"0123456789"
    assert b.read_bytes() == b"012"


def test_rename_over_a_file_without_directory_sync_brings_the_old_file_back(
    powercut_dir: PowerCutDir,
) -> None:
    final, tmp = powercut_dir.path / "manifest", powercut_dir.path / ".manifest.tmp"
    write(final, b"old", sync=True)
    sync_dir(powercut_dir.path)
    write(tmp, b"new", sync=True)
    os.replace(tmp, final)
    assert final.read_bytes() == b"new"
    powercut_dir.cut()
    assert final.read_bytes() == b"old"
    assert not tmp.exists()


def test_rename_with_directory_sync_is_kept(powercut_dir: PowerCutDir) -> None:
    final, tmp = powercut_dir.path / "manifest", powercut_dir.path / ".manifest.tmp"
    write(final, b"old", sync=True)
    sync_dir(powercut_dir.path)
    write(tmp, b"new", sync=True)
    os.replace(tmp, final)
    sync_dir(powercut_dir.path)
    powercut_dir.cut()
    assert final.read_bytes() == b"new"
    assert sorted(os.listdir(powercut_dir.path)) == ["manifest"]


def test_rename_between_directories_needs_both_synced(powercut_dir: PowerCutDir) -> None:
    src, dst = powercut_dir.path / "src", powercut_dir.path / "dst"
    src.mkdir()
    dst.mkdir()
    sync_dir(powercut_dir.path)
    write(src / "f", b"data", sync=True)
    sync_dir(src)
    os.rename(src / "f", dst / "f")
    sync_dir(dst)
    sync_dir(src)
    powercut_dir.cut()
    assert not (src / "f").exists()
    assert (dst / "f").read_bytes() == b"data"


def test_unlink_without_directory_sync_brings_the_file_back(powercut_dir: PowerCutDir) -> None:
    gone, back = powercut_dir.path / "gone", powercut_dir.path / "back"
    for f in (gone, back):
        write(f, b"x", sync=True)
    sync_dir(powercut_dir.path)
    os.unlink(gone)
    sync_dir(powercut_dir.path)
    os.unlink(back)
    assert not back.exists()
    powercut_dir.cut()
    assert not gone.exists()
    assert back.read_bytes() == b"x"


def test_mkdir_needs_the_parent_synced_and_its_entries_their_own(
    powercut_dir: PowerCutDir,
) -> None:
    d = powercut_dir.path / "d"
    d.mkdir()
    sync_dir(d)  # syncing the directory itself does not make its own entry durable
    powercut_dir.cut()
    assert not d.exists()
    d.mkdir()
    write(d / "f", b"data", sync=True)
    sync_dir(powercut_dir.path)  # `d` is durable now, but empty: its entries are not
    powercut_dir.cut()
    assert os.listdir(d) == []
    write(d / "f", b"data", sync=True)
    write(d / "g", b"data", sync=True)
    sync_dir(d)
    powercut_dir.cut()
    assert sorted(os.listdir(d)) == ["f", "g"]
    assert (d / "f").read_bytes() == b"data"


def test_rmdir_without_parent_sync_brings_the_directory_back(
    powercut_dir: PowerCutDir,
) -> None:
    d = powercut_dir.path / "d"
    d.mkdir()
    write(d / "f", b"data", sync=True)
    sync_dir(d)
    sync_dir(powercut_dir.path)
    os.unlink(d / "f")
    os.rmdir(d)
    powercut_dir.cut()
    assert (d / "f").read_bytes() == b"data"
    os.unlink(d / "f")
    os.rmdir(d)
    sync_dir(powercut_dir.path)
    powercut_dir.cut()
    assert not d.exists()


def test_open_descriptors_fail_after_a_cut_and_cuts_repeat(powercut_dir: PowerCutDir) -> None:
    f = powercut_dir.path / "f"
    write(f, b"1", sync=True)
    sync_dir(powercut_dir.path)
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"2")
        powercut_dir.cut()
        with pytest.raises(OSError) as err:
            os.write(fd, b"3")
        assert err.value.errno == errno.ENOTCONN
    finally:
        with contextlib.suppress(OSError):  # closed, but the flush to a dead mount fails
            os.close(fd)
    for _ in range(3):
        powercut_dir.cut()
    assert f.read_bytes() == b"1"
    assert powercut_dir.cuts == 4
