"""`tapedeck serve storage` as a container runs it: PID 1, where the kernel drops every signal
the process has no handler for. Deleting a storage pod must not wait out the whole grace
period (found on a real node: 32 s for `storage-0`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness import free_port, storage_healthy, wait_for

EXIT_WAIT = 20.0  # a bound for the test to give up, not a measured time


def pid_namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not pid_namespace_available(), reason="needs unshare --pid (root)")
def test_storage_as_pid_1_stops_on_sigterm(tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "TAPEDECK_DATA_DIR": str(tmp_path / "data"),
        "TAPEDECK_STORAGE_ADDR": addr,
    }
    launcher = subprocess.Popen(
        ["unshare", "--pid", "--fork", sys.executable, "-m", "tapedeck", "serve", "storage"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: storage_healthy(addr), what="storage health")
        (storage,) = psutil.Process(launcher.pid).children()  # PID 1 inside its namespace
        storage.send_signal(signal.SIGTERM)
        try:
            storage.wait(EXIT_WAIT)
        except psutil.TimeoutExpired:
            pytest.fail("storage as PID 1 ignored SIGTERM")
        assert launcher.wait(EXIT_WAIT) == 0
    finally:
        if launcher.poll() is None:
            for child in psutil.Process(launcher.pid).children(recursive=True):
                child.kill()
            launcher.kill()
            launcher.wait()
