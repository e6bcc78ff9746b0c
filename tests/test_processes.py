"""Children started with `child_command` die with their parent and take the niceness asked."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from tapedeck.processes import child_command

PARENT = """
import subprocess, sys
from tapedeck.processes import child_command
child = subprocess.Popen(child_command(["sleep", "120"], nice=int(sys.argv[1])))
print(child.pid, flush=True)
child.wait()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_its_parent_and_runs_at_the_niceness_asked() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, "10"], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    deadline = time.monotonic() + 10
    while child.name() != "sleep":  # nice and setpriv exec into it, keeping the pid
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert child.nice() == psutil.Process().nice() + 10
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    child.wait(10)  # raises TimeoutExpired if the child outlived its parent


def test_without_niceness_the_program_is_run_as_given() -> None:
    argv = child_command(["ffmpeg", "-version"])
    assert argv[-2:] == ["ffmpeg", "-version"] and "nice" not in " ".join(argv)
