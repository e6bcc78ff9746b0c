"""`tapedeck up`: one command serves everything, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from harness import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEDECK_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tapedeck",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "rec"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "tapedeck up")
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        created = httpx.post(f"{base}/api/sessions")
        assert created.status_code == 201
        assert (tmp_path / "rec" / created.json()["id"] / "session.json").exists()
        if (ROOT / "frontend" / "out" / "index.html").exists():
            page = httpx.get(f"{base}/")
            assert page.status_code == 200 and "<html" in page.text.lower()
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 2  # storage and web
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "Tapedeck on http://127.0.0.1" in output
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"children left running: {alive}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_up_refuses_public_bind_without_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEDECK_")}
    result = subprocess.run(
        [sys.executable, "-m", "tapedeck", "up", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "TAPEDECK_API_TOKEN" in result.stderr
