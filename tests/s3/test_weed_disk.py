"""The test store itself: `weed mini` refuses every write when its disk is nearly full (below
its 1 % minimum free space, or too little room for one volume of its auto-computed size), which
is what the cluster suite once saw as InternalError on every upload. With a disk of its own and
explicit volume settings it takes uploads however full the machine's disk is."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3_fixtures import WeedServer, need_weed, required

MiB = 1024 * 1024


@pytest.fixture
def nearly_full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 MiB file system of this test's own with 2 MiB left (mounting needs root)."""
    if os.geteuid() != 0:
        if required():
            pytest.fail("mounting a small file system needs root")
        pytest.skip("mounting a small file system needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(disk)], check=True)
    try:
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        subprocess.run(["fallocate", "-l", str(free - 2 * MiB), str(disk / "fill")], check=True)
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_weed_on_a_nearly_full_disk_is_refused_with_the_reason(nearly_full_disk: Path) -> None:
    """Without a disk of its own it would start and then fail every upload: refused up front."""
    server = WeedServer(need_weed(), nearly_full_disk / "weed")
    server.root.mkdir()
    with pytest.raises(RuntimeError, match="MiB free; SeaweedFS refuses writes"):
        server.start()
    assert server.process is None


def test_weed_takes_uploads_when_its_parent_disk_is_nearly_full(nearly_full_disk: Path) -> None:
    server = WeedServer(need_weed(), nearly_full_disk / "weed", disk_mb=256, max_volumes=3)
    server.root.mkdir()
    server.start()
    try:
        server.create_bucket("nearly-full")
        client: object = server.client()
        upload = client.create_multipart_upload(Bucket="nearly-full", Key="k")  # type: ignore[attr-defined]
        part = client.upload_part(  # type: ignore[attr-defined]
            Bucket="nearly-full",
            Key="k",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=os.urandom(5 * MiB),
        )
        assert part["ETag"], server.log_tail()
    finally:
        server.release()
    assert not os.path.ismount(server.data)
