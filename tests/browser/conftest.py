"""Real browsers against `tapedeck up`: Debian's Chromium through Playwright, and Debian's
Firefox ESR through Selenium and geckodriver (tests that take the `firefox` fixture); both
headless, with fake cameras and microphones."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from selenium import webdriver
from selenium.webdriver.firefox.options import Options as FirefoxOptions
from selenium.webdriver.firefox.service import Service as FirefoxService

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


# TAPEDECK_TEST_FIREFOX / TAPEDECK_TEST_GECKODRIVER: other binaries. geckodriver is built
# once per machine into a cache outside the repository (tests/browser/build-geckodriver.sh).
FIREFOX = (
    os.environ.get("TAPEDECK_TEST_FIREFOX")
    or shutil.which("firefox-esr")
    or shutil.which("firefox")
    or "/usr/bin/firefox-esr"
)
GECKODRIVER_SCRIPT = ROOT / "tests/browser/build-geckodriver.sh"


def geckodriver() -> str | None:
    """The cached geckodriver's path, None while it is not built."""
    if found := os.environ.get("TAPEDECK_TEST_GECKODRIVER"):
        return found if Path(found).exists() else None
    checked = subprocess.run(
        ["bash", str(GECKODRIVER_SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    return checked.stdout.strip() if checked.returncode == 0 else None


FIREFOX_PREFS: dict[str, str | int | bool] = {
    # Firefox's fake camera and microphone, without a permission prompt.
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    # Loopback only: nothing that calls out of the machine.
    "app.update.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "toolkit.telemetry.enabled": False,
}

# axe-core's browser script, a dev dependency of the frontend (there after `npm ci`).
AXE_SCRIPT = ROOT / "frontend/node_modules/axe-core/axe.min.js"


def missing_prerequisites(firefox: bool = False) -> list[str]:
    """What a browser test lacks; a Firefox test (one taking the `firefox` fixture) needs
    Firefox and geckodriver instead of Chromium."""
    browsers = (
        [
            (f"Firefox at {FIREFOX}", Path(FIREFOX).exists()),
            ("geckodriver (tests/browser/build-geckodriver.sh)", geckodriver() is not None),
        ]
        if firefox
        else [(f"Chromium at {CHROMIUM}", Path(CHROMIUM).exists())]
    )
    return [
        what
        for what, ok in (
            ("the frontend build (make frontend)", (ROOT / "frontend/out/index.html").exists()),
            *browsers,
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
    missing = missing_prerequisites(firefox="firefox" in getattr(item, "fixturenames", ()))
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


@pytest.fixture
def firefox(up: Up) -> Iterator[webdriver.Firefox]:
    """Selenium drives Debian's Firefox ESR (headless, a fresh profile each time) through the
    cached geckodriver, with Firefox's fake camera and microphone."""
    options = FirefoxOptions()
    options.binary_location = FIREFOX
    options.add_argument("-headless")
    for name, value in FIREFOX_PREFS.items():
        options.set_preference(name, value)
    driver_path = geckodriver()
    assert driver_path is not None  # pytest_runtest_setup checked
    service = FirefoxService(executable_path=driver_path, log_output=subprocess.DEVNULL)
    driver = webdriver.Firefox(options=options, service=service)
    driver.set_window_size(1280, 900)
    try:
        yield driver
    finally:
        driver.quit()
