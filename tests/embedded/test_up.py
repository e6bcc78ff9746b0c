"""`tapedeck up`: one command serves everything, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from harness import start_up

ROOT = Path(__file__).resolve().parents[2]


def test_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    up = start_up(tmp_path)
    try:
        assert httpx.get(f"{up.url}/healthz").json() == {"status": "ok"}
        created = httpx.post(f"{up.url}/api/sessions")
        assert created.status_code == 201
        assert (up.data_dir / created.json()["id"] / "session.json").exists()
        if (ROOT / "frontend" / "out" / "index.html").exists():
            page = httpx.get(f"{up.url}/")
            assert page.status_code == 200 and "<html" in page.text.lower()
        children = psutil.Process(up.process.pid).children(recursive=True)
        assert len(children) >= 2  # storage and web
    finally:
        up.stop()  # SIGINT, as Ctrl-C
    assert up.process.returncode == 0, up.log.read_text()
    assert "Tapedeck on http://127.0.0.1" in up.log.read_text()
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"children left running: {alive}"


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
