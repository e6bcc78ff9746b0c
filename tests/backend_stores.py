"""The backends the conformance suite (tests/storage/test_backend_conformance.py) runs against.

Adding a backend = one `StoreFactory` here and one `pytest.param` in `BACKENDS`; the suite's
tests do not change. A factory is a context manager that makes one empty store for one test
and removes it afterwards:

    factory(tmp_path, capacity) -> Store

`capacity`: how many bytes the store's volume holds before a write fails with ENOSPC (the
local backend mounts a tmpfs of that size; a tiered backend gives its write-ahead volume that
size), or None for no limit that a test could reach.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import pytest

from tapedeck.storage.backend import Backend
from tapedeck.storage.local import MANIFEST, LocalBackend


class Store(Protocol):
    def backend(self) -> Backend:
        """A new backend over this store; a second call is what a restart of storage sees."""
        ...

    def corrupt_manifest(self, session_id: str) -> None:
        """Replace a saved manifest with bytes that are not one (a torn or foreign object)."""
        ...


StoreFactory = Callable[[Path, int | None], AbstractContextManager[Store]]


@contextlib.contextmanager
def small_tmpfs(mount: Path, capacity: int) -> Iterator[Path]:
    """A tmpfs of `capacity` bytes (storage's full volume); skipped where mounting is not
    allowed, failed in CI."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={capacity}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a small tmpfs: {done.stderr}")
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def backend(self) -> Backend:
        return LocalBackend(self.root)

    def corrupt_manifest(self, session_id: str) -> None:
        (self.root / session_id / MANIFEST).write_bytes(b'{"id": "torn')


@contextlib.contextmanager
def local_store(tmp_path: Path, capacity: int | None) -> Iterator[Store]:
    if capacity is None:
        yield LocalStore(tmp_path / "recordings")
        return
    with small_tmpfs(tmp_path / "volume", capacity) as volume:
        yield LocalStore(volume / "recordings")


class S3TieredStore:
    """The S3 tier: a volume (small when asked) in front of a prefix of its own in the real
    SeaweedFS bucket (tests/s3_fixtures.py)."""

    def __init__(self, volume: Path) -> None:
        from s3_fixtures import new_place

        self.volume = volume
        self.settings = new_place().settings()

    def backend(self) -> Backend:
        from tapedeck.storage.s3tier import S3TieredBackend

        return S3TieredBackend(self.volume, self.settings)

    def corrupt_manifest(self, session_id: str) -> None:
        (self.volume / session_id / MANIFEST).write_bytes(b'{"id": "torn')


@contextlib.contextmanager
def s3_tiered_store(tmp_path: Path, capacity: int | None) -> Iterator[Store]:
    if capacity is None:
        yield S3TieredStore(tmp_path / "recordings")
        return
    with small_tmpfs(tmp_path / "volume", capacity) as volume:
        yield S3TieredStore(volume / "recordings")


BACKENDS = [
    pytest.param(local_store, id="local"),
    pytest.param(s3_tiered_store, id="s3-tiered"),
]
