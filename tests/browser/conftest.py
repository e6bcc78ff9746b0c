"""A real Chromium (Debian's, headless, fake camera and microphone) against `tapedeck up`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from harness import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--auto-select-desktop-capture-source=Entire screen",
]

pytestmark = pytest.mark.browser


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [
        what
        for what, ok in (
            ("the frontend build (make frontend)", (ROOT / "frontend/out/index.html").exists()),
            (f"Chromium at {CHROMIUM}", Path(CHROMIUM).exists()),
        )
        if not ok
    ]
    if not missing:
        return
    for item in items:
        if "browser" in item.keywords:
            if os.environ.get("CI"):  # CI installs both: missing them there is a failure
                item.add_marker(
                    pytest.mark.xfail(
                        reason="missing " + ", ".join(missing), strict=True, run=False
                    )
                )
            else:
                item.add_marker(pytest.mark.skip(reason="missing " + ", ".join(missing)))


@dataclass
class Tapedeck:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]

    def kill_child(self, role: str) -> None:
        """SIGKILL one of `up`'s children (storage or web); `up` restarts it."""
        import psutil

        for child in psutil.Process(self.process.pid).children(recursive=True):
            if child.cmdline()[-2:] == ["serve", role]:
                child.send_signal(signal.SIGKILL)
                return
        raise AssertionError(f"no {role} child")


@pytest.fixture(scope="module")
def tapedeck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tapedeck]:
    port = free_port()
    data_dir = tmp_path_factory.mktemp("browser") / "recordings"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEDECK_")}
    log = open(data_dir.parent / "up.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tapedeck", "up", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 30, "tapedeck up")
        yield Tapedeck(url, data_dir, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Playwright drives Debian's Chromium (never a downloaded one), each launch with a fresh
    temporary profile of its own."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, tapedeck: Tapedeck) -> Iterator[Page]:
    context = browser.new_context(
        base_url=tapedeck.url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.grant_permissions(["camera", "microphone"], origin=tapedeck.url)
    opened = context.new_page()
    yield opened
    context.close()
