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
# TAPEDECK_TEST_CHROMIUM: another binary (tests/browser/test_prerequisites.py uses it).
CHROMIUM = (
    os.environ.get("TAPEDECK_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
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


# axe-core's browser script, a dev dependency of the frontend (there after `npm ci`).
AXE_SCRIPT = ROOT / "frontend/node_modules/axe-core/axe.min.js"


def missing_prerequisites() -> list[str]:
    return [
        what
        for what, ok in (
            ("the frontend build (make frontend)", (ROOT / "frontend/out/index.html").exists()),
            (f"Chromium at {CHROMIUM}", Path(CHROMIUM).exists()),
            (f"axe-core at {AXE_SCRIPT} (npm ci in frontend)", AXE_SCRIPT.exists()),
        )
        if not ok
    ]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture starts: a browser test without its prerequisites is skipped on a
    developer's machine, but fails in CI (which installs both), so the browser suite cannot
    silently vanish from CI (an xfail or a skip would pass there)."""
    if item.get_closest_marker("browser") is None:
        return
    missing = missing_prerequisites()
    if not missing:
        return
    message = "missing " + ", ".join(missing)
    if in_ci():
        pytest.fail(f"{message} (CI must run the browser tests)", pytrace=False)
    pytest.skip(message)


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
