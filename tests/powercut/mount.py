"""Drive fs.py from a test: mount it, cut the power, unmount it (see conftest.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
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
    """One mount of fs.py over a backing directory that outlives every cut.

    The file systems are forked by one `fs.py --zygote` process per fixture, so a cut costs a
    fork and a mount, not a new interpreter."""

    def __init__(self, path: Path, backing: Path, log: Path) -> None:
        self.path, self.backing, self.log = path, backing, log
        self.cuts = 0
        self._dead = False  # powered off: the mount is there but its process is gone
        self._mounted = False
        self._zygote: subprocess.Popen[str] | None = None

    def _command(self, *words: str) -> str:
        zygote = self._zygote
        assert zygote is not None and zygote.stdin is not None and zygote.stdout is not None
        zygote.stdin.write("\t".join(words) + "\n")
        zygote.stdin.flush()
        return zygote.stdout.readline().strip()

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.backing.mkdir(parents=True, exist_ok=True)
        if self._zygote is None:
            with open(self.log, "a") as log:
                self._zygote = subprocess.Popen(
                    [sys.executable, str(FS), "--zygote"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
        # fs.py prints it once the kernel has the mount
        line = self._command("mount", str(self.path), str(self.backing))
        if line != "mounted" or not os.path.ismount(self.path):
            self._stop_zygote()
            raise MountFailed(f"fs.py did not mount: {self.log.read_text()[-2000:]}")
        self._mounted = True

    def cut(self) -> None:
        """The power goes and comes back: only what was synced is there."""
        self.power_off()
        self.power_on()

    def power_off(self) -> None:
        """fs.py exits between two requests, keeping only what was synced. The mount stays, dead:
        every call on it, by path or descriptor, fails (ENOTCONN), so a storage still running
        can neither write nor acknowledge anything more, and nothing lands beside the mount."""
        assert self._mounted, "not mounted"
        assert self._command("cut") == "cut"
        self._mounted = False
        self._dead = True

    def power_on(self, path: Path | None = None) -> None:
        """Mount what survived (a new fs.py over the same backing directory); at `path` from
        now on, if given: then work of a dead storage that outlives it (a delete runs to its
        end) can never reach the new mount, not even after this."""
        assert self._dead, "power_off first"
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=True)
        self._dead = False
        if path is not None and path != self.path:
            shutil.rmtree(self.path, ignore_errors=True)  # late calls now fail: ENOENT
            self.path = path
        self.cuts += 1
        self.mount()

    def unmount(self) -> None:
        if self._dead:
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)
            self._dead = False
        if self._mounted:
            self._mounted = False
            done = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
            if done.returncode == 0:
                self._command("wait")
            else:  # still busy: a test left a descriptor open
                self._command("cut")
                subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)
        self._stop_zygote()

    def _stop_zygote(self) -> None:
        zygote, self._zygote = self._zygote, None
        if zygote is None:
            return
        assert zygote.stdin is not None and zygote.stdout is not None
        zygote.stdin.close()  # EOF: it stops its file system, if any, and exits
        try:
            zygote.wait(timeout=30)
        except subprocess.TimeoutExpired:
            zygote.kill()
            zygote.wait()
        zygote.stdout.close()


@contextlib.contextmanager
def powercut_mount(tmp_path: Path) -> Iterator[PowerCutDir]:
    """A mounted power-cut file system under `tmp_path`, unmounted afterwards; skips (fails in
    CI) where FUSE is missing."""
    reason = fuse_missing()
    if reason is not None:
        unavailable(reason)
    mount = PowerCutDir(tmp_path / "mnt", tmp_path / "disk", tmp_path / "powercut.log")
    try:
        mount.mount()
    except MountFailed as exc:
        unavailable(str(exc))
    try:
        yield mount
    finally:
        mount.unmount()
