"""A real Chromium (Debian's, headless, fake camera and microphone) against `tapedeck up`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from harness import Up

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
def page(browser: Browser, up: Up) -> Iterator[Page]:
    context = browser.new_context(
        base_url=up.url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.grant_permissions(["camera", "microphone"], origin=up.url)
    opened = context.new_page()
    yield opened
    context.close()
