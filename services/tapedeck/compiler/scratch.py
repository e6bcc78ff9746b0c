"""Scratch space of compiles and followers: one directory per run, under one root.

A run (`tapedeck compile ID`, `python -m tapedeck.compiler.follow ID`) copies the session's
tracks into `{root}/{session_id}.{pid}`. Runs are SIGKILLed (the embedded worker kills them
at a timeout or a stop; `up` kills children with their parent), so a run cannot be trusted
to remove its own copies, which may be a deleted session's media. The name says whose a
directory is: the embedded worker removes a run's directory once that process has exited,
and at start every run directory whose process is gone (`stale_runs`).

Whether a run's process is gone is asked of the kernel, not of PIDs: the run holds an
exclusive `flock` on `LOCK` inside its directory for as long as it lives, and the directory
appears under its run name only once that lock is held. A PID says nothing across PID
namespaces (a worker in a container, a run under `unshare`) and can be reused; a lock is
released exactly when its holder dies, whatever namespace either side is in.

The root is private to its user (0700, owned by us, not a symlink): the system's temporary
directory is shared, and the copies are people's recordings.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tapedeck.sessions import is_valid_session_id, validate_session_id

_PID = re.compile(r"[0-9]{1,10}", re.ASCII)
LOCK = ".run.lock"
_held: dict[Path, int] = {}  # run directory → the descriptor holding its lock, in this process


class ScratchError(OSError):
    """The scratch root cannot be used safely (not ours, not a directory)."""


def run_name(session_id: str, pid: int) -> str:
    """The directory name of process `pid`'s run for `session_id`."""
    return f"{validate_session_id(session_id)}.{pid}"


def parse_run_name(name: str) -> tuple[str, int] | None:
    """(session id, pid) of a run directory's name; None for anything else."""
    session_id, dot, pid = name.rpartition(".")
    if not dot or not is_valid_session_id(session_id) or not _PID.fullmatch(pid):
        return None
    return session_id, int(pid)


def stale_runs(names: Iterable[str], alive: Callable[[str], bool]) -> list[str]:
    """Names of run directories whose process is gone: `alive(name)` is False.
    Names that are not runs are never stale (they are not ours to remove)."""
    return [name for name in names if parse_run_name(name) is not None and not alive(name)]


def run_alive(run_dir: Path) -> bool:
    """Whether a process still holds the lock of the run in `run_dir` (a run without a lock
    file is a leftover: dead)."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def ensure_root(root: Path) -> Path:
    """Create the root (0700) or check that an existing one is ours alone."""
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700, parents=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise ScratchError(errno.ENOTDIR, "scratch directory is not a directory", str(root))
    if info.st_uid != os.getuid():
        raise ScratchError(errno.EPERM, "scratch directory belongs to another user", str(root))
    if info.st_mode & 0o077:
        root.chmod(0o700)
    return root


def make_run_dir(root: Path, session_id: str) -> Path:
    """This process's run directory for `session_id`, new and empty."""
    name = run_name(session_id, os.getpid())
    path = ensure_root(root) / name
    # Left by a dead process that had our pid (we are alive, and make one run per id).
    shutil.rmtree(path, ignore_errors=True)
    # Built under a name that is not a run's, locked, then renamed: a sweeper never sees the
    # run directory unlocked.
    staging = root / f".{name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    fd = os.open(staging / LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    staging.rename(path)
    _held[path] = fd
    return path


@contextlib.contextmanager
def run_directory(root: Path, session_id: str) -> Iterator[Path]:
    """`make_run_dir`, removed again on the way out (when we live to see it)."""
    path = make_run_dir(root, session_id)
    try:
        yield path
    finally:
        remove_tree(path)


def remove_tree(path: Path) -> None:
    """Remove `path` and everything below it (releasing our lock if it is our run); a few
    tries, since a killed run's FFmpeg may still be dying (it is killed with its parent) and
    create a file meanwhile."""
    fd = _held.pop(path, None)
    if fd is not None:
        os.close(fd)
    for attempt in range(3):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.1 * (attempt + 1))


def remove_run(root: Path, session_id: str, pid: int) -> None:
    """Remove the run directory of process `pid` (after it exited, whatever the exit)."""
    remove_tree(root / run_name(session_id, pid))


def sweep(root: Path, alive: Callable[[Path], bool] = run_alive) -> list[str]:
    """Remove run directories whose process is gone; returns their names."""
    try:
        names = [entry.name for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    stale = stale_runs(names, lambda name: alive(root / name))
    for name in stale:
        remove_tree(root / name)
    return stale
