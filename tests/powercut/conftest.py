"""The power-cut file system (fs.py) as a fixture: `powercut_dir.path` is the mount,
`powercut_dir.cut()` loses everything that was not synced and mounts what survived.

Without FUSE (no /dev/fuse, fusermount3 or pyfuse3) the tests skip, except in CI, which
installs all three: there a missing FUSE fails the run instead of hiding the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from powercut.mount import PowerCutDir, powercut_mount


@pytest.fixture
def powercut_dir(tmp_path: Path) -> Iterator[PowerCutDir]:
    with powercut_mount(tmp_path) as mount:
        yield mount


_REPORT = pytest.StashKey[list[str]]()


@pytest.fixture
def powercut_report(request: pytest.FixtureRequest) -> list[str]:
    """Lines for the terminal summary: the randomized suite's seed and totals."""
    return request.config.stash.setdefault(_REPORT, [])


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    lines = config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("power-cut suite")
        for line in lines:
            terminalreporter.write_line(line)
