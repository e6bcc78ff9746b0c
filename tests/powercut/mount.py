"""Drive fs.py from a test: mount it, cut the power, unmount it (see conftest.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

FS = Path(__file__).with_name("fs.py")


def fuse_missing() -> str | None:
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (apt-get install fuse3)"
    for module in ("pyfuse3", "trio"):
        if importlib.util.find_spec(module) is None:
            return f"no {module} (pip install -r tests/powercut/requirements.txt)"
    return None


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):  # CI installs FUSE: missing it there is a failure, not a skip
        pytest.fail(f"the power-cut suite needs FUSE: {reason}", pytrace=False)
    pytest.skip(f"the power-cut suite needs FUSE: {reason}")


class MountFailed(RuntimeError):
    pass


class PowerCutDir:
    """One mount of fs.py over a backing directory that outlives every cut."""

    def __init__(self, path: Path, backing: Path, log: Path) -> None:
        self.path, self.backing, self.log = path, backing, log
        self.cuts = 0
        self._dead = False  # powered off: the mount is there but its process is gone
        self._process: subprocess.Popen[str] | None = None

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.backing.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            process = subprocess.Popen(
                [sys.executable, str(FS), str(self.path), str(self.backing)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert process.stdout is not None
        line = process.stdout.readline()  # fs.py prints it once the kernel has the mount
        if line.strip() != "mounted" or not os.path.ismount(self.path):
            process.kill()
            self._reap(process)
            raise MountFailed(f"fs.py did not mount: {self.log.read_text()[-2000:]}")
        self._process = process

    def cut(self) -> None:
        """The power goes and comes back: only what was synced is there."""
        self.power_off()
        self.power_on()

    def power_off(self) -> None:
        """fs.py exits between two requests, keeping only what was synced. The mount stays, dead:
        every call on it, by path or descriptor, fails (ENOTCONN), so a storage still running
        can neither write nor acknowledge anything more, and nothing lands beside the mount."""
        process = self._process
        assert process is not None, "not mounted"
        process.send_signal(signal.SIGUSR1)
        self._reap(process)
        self._process = None
        self._dead = True

    def power_on(self) -> None:
        """Mount what survived (a new fs.py over the same backing directory)."""
        assert self._dead, "power_off first"
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=True)
        self._dead = False
        self.cuts += 1
        self.mount()

    def unmount(self) -> None:
        if self._dead:
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)
            self._dead = False
        process = self._process
        if process is None:
            return
        self._process = None
        done = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
        if done.returncode != 0:  # still busy: a test left a descriptor open
            process.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)
        self._reap(process)

    @staticmethod
    def _reap(process: subprocess.Popen[str]) -> None:
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
