"""Scratch directories: names that say whose they are, a private root, and which are stale.

The end-to-end proof (children SIGKILLed under a real worker) is tests/embedded/test_scratch.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import wait_for
from tapedeck.compiler.scratch import (
    ScratchError,
    ensure_root,
    make_run_dir,
    parse_run_name,
    remove_tree,
    run_alive,
    run_directory,
    run_name,
    stale_runs,
    sweep,
)
from tapedeck.sessions import InvalidSessionId
from tapedeck.settings import Settings

SID = "0123abcd-session"


@pytest.mark.parametrize("bad", ["../../etc", "a/b/c/d/e/f", "SHOUTING-ID", "short", "", "x" * 64])
def test_a_session_id_never_becomes_a_path_unvalidated(bad: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidSessionId):
        run_name(bad, 1)
    with pytest.raises(InvalidSessionId):
        make_run_dir(tmp_path / "root", bad)
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").iterdir())


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        (f"{SID}.42", (SID, 42)),
        (f"{SID}.0042", (SID, 42)),
        (SID, None),
        (f"{SID}.", None),
        (f"{SID}.4x2", None),
        (f"{SID}.\u0663", None),  # an Arabic-Indic digit: int() takes it, we do not
        (f"{SID}.12345678901", None),
        ("../x.1", None),
        ("Not-A-Session.1", None),
        ("notes.txt", None),
        ("lost+found", None),
    ],
)
def test_run_names(name: str, parsed: tuple[str, int] | None) -> None:
    assert parse_run_name(name) == parsed


def test_only_runs_whose_process_is_gone_are_stale() -> None:
    alive = {"aaaaaaaa-1.10", "cccccccc-3.30"}
    names = ["aaaaaaaa-1.10", "bbbbbbbb-2.20", "cccccccc-3.31", "notes", "UPPER-CASE.20"]
    assert stale_runs(names, lambda name: name in alive) == ["bbbbbbbb-2.20", "cccccccc-3.31"]


def test_a_run_is_alive_while_its_process_holds_the_lock(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; "
        "from tapedeck.compiler.scratch import make_run_dir; "
        f"print(make_run_dir(Path(sys.argv[1]), {SID!r}), flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        run = Path(child.stdout.readline().decode().strip())
        assert run.name == run_name(SID, child.pid)
        assert run_alive(run)
    finally:
        child.kill()
        child.wait()
    assert not run_alive(run)  # the kernel released the lock with the process
    leftover = tmp_path / run_name(SID, 7)
    leftover.mkdir()
    assert not run_alive(leftover)  # no lock file: left by a run from before the locks


def test_the_root_is_created_private_and_a_run_directory_removed_on_the_way_out(
    tmp_path: Path,
) -> None:
    root = tmp_path / "deep" / "scratch"
    with pytest.raises(RuntimeError), run_directory(root, SID) as run:
        assert run == root / f"{SID}.{os.getpid()}"
        assert run_alive(run) and sweep(root) == []
        assert (root.stat().st_mode & 0o777, run.stat().st_mode & 0o777) == (0o700, 0o700)
        (run / "video.webm").write_bytes(b"media")
        raise RuntimeError("the compile failed")
    assert not run.exists() and root.exists()


def test_a_leftover_with_our_pid_is_replaced_by_an_empty_run(tmp_path: Path) -> None:
    old = tmp_path / f"{SID}.{os.getpid()}"
    old.mkdir(parents=True)
    (old / "video.webm").write_bytes(b"someone else's")
    run = make_run_dir(tmp_path, SID)
    assert [p.name for p in run.iterdir()] == [".run.lock"]
    remove_tree(run)


def test_a_root_that_is_not_a_private_directory_is_refused_or_made_private(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ScratchError, match="not a directory"):
        ensure_root(link)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert ensure_root(shared).stat().st_mode & 0o777 == 0o700


def test_sweep_removes_stale_runs_and_nothing_else(tmp_path: Path) -> None:
    for name in ("aaaaaaaa-1.10", "bbbbbbbb-2.20", "Foreign.20"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_bytes(b"x")
    (tmp_path / "cccccccc-3.30").write_text("a file, not a run directory")
    assert sweep(tmp_path, lambda run: run.name.endswith(".10")) == ["bbbbbbbb-2.20"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "Foreign.20",
        "aaaaaaaa-1.10",
        "cccccccc-3.30",
    ]
    assert sweep(tmp_path / "missing") == []


def test_the_default_root_is_per_user_under_the_temporary_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Settings(scratch_dir=tmp_path).scratch_root() == tmp_path
    monkeypatch.setenv("TAPEDECK_SCRATCH_DIR", str(tmp_path / "env"))
    assert Settings().scratch_root() == tmp_path / "env"
    monkeypatch.delenv("TAPEDECK_SCRATCH_DIR")
    root = Settings().scratch_root()
    assert root.name == f"tapedeck-scratch-{os.getuid()}"


def test_a_live_run_in_another_pid_namespace_is_not_swept(tmp_path: Path) -> None:
    """A worker and a run need not share a PID namespace (containers, `unshare`, a second test
    run): liveness is the run's lock, which the kernel keeps for whoever holds it, wherever."""
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("needs unshare --pid (root)")
    code = (
        "import sys, time; from pathlib import Path; "
        "from tapedeck.compiler.scratch import make_run_dir; "
        f"print(make_run_dir(Path(sys.argv[1]), {SID!r}).name, flush=True); time.sleep(60)"
    )
    run = subprocess.Popen(
        ["unshare", "--pid", "--fork", sys.executable, "-c", code, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stdout is not None
        name = run.stdout.readline().strip()
        assert name == f"{SID}.1"  # PID 1 of its namespace: another process out here
        assert sweep(tmp_path) == []
        assert (tmp_path / name).is_dir()
    finally:
        run.kill()
        run.wait()
    # The namespace's PID 1 ignores SIGTERM from out here: SIGKILL.
    subprocess.run(["pkill", "-KILL", "-f", str(tmp_path)], check=False)
    wait_for(lambda: sweep(tmp_path) == [name], 20, "the dead run to be swept")
    assert not (tmp_path / name).exists()
