"""Making a change of a directory durable: what `fsync` of a file does not cover.

A file's `fsync` makes its bytes durable, not its name: a created, renamed or removed entry
survives a power cut only once its directory is fsynced (tests/powercut/ proves each case).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
