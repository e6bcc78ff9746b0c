"""The nemesis run, short: 4 clients for 40 s under a dozen faults of every kind, then the
checker (`make soak` is the long run: 20 clients, 10 minutes, 100+ faults)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from powercut.mount import fuse_missing, unavailable

pytestmark = pytest.mark.faults
NEMESIS = Path(__file__).with_name("nemesis.py")
SEED = 10  # its first 40 s hold every kind of fault (test_schedule.py checks the schedule)


def test_a_short_nemesis_run_loses_nothing(tmp_path: Path) -> None:
    reason = fuse_missing()
    if reason is not None:
        unavailable(reason)
    done = subprocess.run(
        [
            *(sys.executable, str(NEMESIS), "--seed", str(SEED), "--seconds", "40"),
            *("--clients", "4", "--mean-gap", "3", "--work", str(tmp_path / "work")),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert f"seed:                      {SEED}" in out
    injected = re.search(r"faults injected:\s+(\d+)", out)
    assert injected and int(injected.group(1)) >= 8, out[-3000:]
    compared = re.search(r"sessions compiled and compared: (\d+)", out)
    assert compared and int(compared.group(1)) >= 4, out[-3000:]
    assert re.search(r"acknowledged bytes lost:\s+0\n", out)
    assert re.search(r"violations:\s+0\n", out)
