"""Save screenshots of the recording view and the sessions view to docs/images/.

Runs `tapedeck up` on a free port and Debian's Chromium with fake devices, records a few
seconds and compiles them, so the pictures show the product as it is. `make screenshots`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

from harness import free_port, wait_for  # noqa: E402

IMAGES = ROOT / "docs" / "images"


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEDECK_")}
        up = subprocess.Popen(
            [sys.executable, "-m", "tapedeck", "up", "--port", str(port), "--data-dir", data_dir],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 30, "tapedeck up")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto("/")
                page.get_by_role("button", name="Start recording").click()
                page.wait_for_timeout(3500)
                IMAGES.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=IMAGES / "recording.png")
                page.get_by_role("button", name="Stop recording").click()
                row = page.get_by_test_id("session-row").first
                expect(row).to_be_visible(timeout=15_000)
                page.wait_for_timeout(1500)
                row.get_by_role("button", name="Compile").click()
                expect(row.get_by_role("link", name="Download")).to_be_visible(timeout=60_000)
                row.scroll_into_view_if_needed()
                page.wait_for_timeout(800)
                page.screenshot(path=IMAGES / "sessions.png", full_page=True)
                browser.close()
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(20)
    print(f"saved {IMAGES / 'recording.png'} and {IMAGES / 'sessions.png'}")


if __name__ == "__main__":
    main()
