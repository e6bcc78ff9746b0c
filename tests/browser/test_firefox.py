"""Firefox (Debian's ESR, through Selenium and geckodriver) with its fake camera and
microphone: it records VP8/Opus in WebM, which the compiler transcodes (Chromium's H.264
is copied), and the MP4 plays as H.264/AAC. The reload-and-resume flow of test_reload.py
works in Firefox too; axe finds nothing there either (recorder, player, resume panel)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import av
import httpx
import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver import Firefox
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from browser.conftest import AXE_SCRIPT
from browser.test_reload import RECORD_BEFORE_RELOAD, STORED_UPLOADS_JS, TIMESLICE, TRACKS
from harness import Up

pytestmark = pytest.mark.browser

RECORD_SECONDS = 5.0
T = TypeVar("T")


def wait(driver: Firefox, what: str, check: Callable[[], T | None], timeout: float = 15) -> T:
    """Until `check` returns something truthy (elements that re-render are looked up again)."""

    def attempt(_: Any) -> T | None:
        try:
            return check()
        except (NoSuchElementException, StaleElementReferenceException):
            return None

    result = WebDriverWait(driver, timeout, poll_frequency=0.1).until(attempt, what)
    assert result is not None  # until() returns only what is truthy
    return result


def button(driver: Firefox | WebElement, name: str) -> WebElement:
    return driver.find_element(By.XPATH, f".//button[normalize-space()='{name}']")


def by_test_id(driver: Firefox | WebElement, test_id: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{test_id}"]')


def open_app(driver: Firefox, up: Up) -> None:
    driver.get(f"{up.url}/")
    wait(driver, "the recorder", lambda: button(driver, "Start recording").is_enabled())


def start_recording(driver: Firefox) -> str:
    button(driver, "Start recording").click()

    def shown() -> str | None:
        text = by_test_id(driver, "session-id").text
        return text if re.fullmatch(r"[a-z0-9-]{8,}", text) else None

    session_id = wait(driver, "a session id", shown)
    for track in TRACKS:
        wait(driver, f"{track} recording", lambda t=track: state(driver, t) == "recording")  # type: ignore[misc]
    return session_id


def state(driver: Firefox | WebElement, track: str) -> str | None:
    return by_test_id(driver, f"track-status-{track}").get_attribute("data-state")


def number(element: WebElement, attribute: str) -> float:
    return float(element.get_attribute(attribute) or 0)


def wait_uploaded(driver: Firefox, within: Callable[[], Firefox | WebElement]) -> None:
    for track in TRACKS:
        wait(
            driver,
            f"{track} uploaded",
            lambda t=track: state(within(), t) == "uploaded",  # type: ignore[misc]
            timeout=30,
        )


def compile_and_fetch(driver: Firefox, up: Up, session_id: str, target: Path) -> Path:
    """Compile with the row's button, then fetch what its Download link points at."""

    def row() -> WebElement:
        return driver.find_element(By.CSS_SELECTOR, f'[data-session-id="{session_id}"]')

    wait(driver, "the session in the list", lambda: row().is_displayed())
    button(row(), "Compile").click()
    link = wait(
        driver,
        "the Download link",
        lambda: row().find_element(By.LINK_TEXT, "Download"),
        timeout=90,
    )
    # The player mounts with the link; Firefox may lay it out a moment later (seen once in CI:
    # present, not yet displayed). Waited for, so a player that never shows still fails.
    wait(
        driver,
        "the player to be displayed",
        lambda: (
            row()
            .find_element(By.CSS_SELECTOR, f'video[aria-label="Recording {session_id}"]')
            .is_displayed()
        ),
    )
    href = link.get_attribute("href") or ""
    assert href.startswith(up.url), href
    target.write_bytes(httpx.get(href, timeout=30).raise_for_status().content)
    return target


def ffprobe(path: Path) -> tuple[tuple[str, ...], float]:
    """The codecs of the MP4's audio and video streams (ffprobe), and its duration; and it
    plays: the video's timestamps only go forward and every packet decodes (PyAV)."""
    shown = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-print_format", "json", "-show_format"),
            *("-show_streams", "-select_streams", "v", "-show_entries", "packet=dts", str(path)),
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    info = json.loads(shown.stdout)
    assert info["format"]["format_name"].startswith("mov,mp4"), info["format"]
    dts = [int(p["dts"]) for p in info["packets"]]
    assert len(dts) > 10 and all(a < b for a, b in itertools.pairwise(dts)), dts
    with av.open(str(path)) as container:
        codecs = tuple(
            sorted(s.codec_context.name for s in container.streams if s.type in ("audio", "video"))
        )
        frames = {"audio": 0, "video": 0}
        for frame in container.decode(*container.streams):
            frames["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    assert frames["video"] == len(dts) and frames["audio"] > 0, frames
    return codecs, float(info["format"]["duration"])


def axe_violations(driver: Firefox) -> list[str]:
    driver.execute_script(AXE_SCRIPT.read_text())
    result: dict[str, Any] = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, { resultTypes: ['violations'] }).then(done, (e) => done(String(e)));"
    )
    assert isinstance(result, dict), result
    assert len(result["passes"]) > 10, result["passes"]
    return [f"{v['id']} ({v['impact']}): {v['help']}" for v in result["violations"]]


def test_firefox_records_vp8_opus_and_gets_an_h264_aac_mp4(
    firefox: Firefox, up: Up, tmp_path: Path
) -> None:
    open_app(firefox, up)
    assert axe_violations(firefox) == []
    session_id = start_recording(firefox)
    # Firefox's MediaRecorder has no H.264: the page picks VP8 and Opus.
    assert "vp8" in by_test_id(firefox, "video-codec").text, by_test_id(firefox, "video-codec").text
    assert "opus" in by_test_id(firefox, "audio-codec").text
    time.sleep(RECORD_SECONDS)
    stopped_at = time.time() * 1000
    button(firefox, "Stop recording").click()
    wait_uploaded(firefox, lambda: firefox)
    video = by_test_id(firefox, "track-status-video")
    assert number(video, "data-bytes-acknowledged") > 10_000
    assert number(video, "data-backlog") == 0

    session = httpx.get(f"{up.url}/api/sessions/{session_id}").json()
    mimes = {t["name"]: t["mimeType"] for t in session["tracks"]}
    assert "vp8" in mimes["video"] and "opus" in mimes["audio"], mimes
    recorded = (stopped_at - min(t["startedAt"] for t in session["tracks"])) / 1000
    out = compile_and_fetch(firefox, up, session_id, tmp_path / "firefox.mp4")
    codecs, duration = ffprobe(out)
    assert codecs == ("aac", "h264")
    assert abs(duration - recorded) <= 0.7, (duration, recorded)
    assert axe_violations(firefox) == [], "the player of a compiled session"


def stored_uploads(driver: Firefox) -> tuple[int, int]:
    """(uploads, chunks) in this Firefox profile's IndexedDB for the page's origin."""
    uploads, chunks = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"({STORED_UPLOADS_JS})().then(done, (e) => done(String(e)));"
    )
    return int(uploads), int(chunks)


def test_firefox_reload_mid_recording_resumes_the_upload(
    firefox: Firefox, up: Up, tmp_path: Path
) -> None:
    """As test_reload.py's test of the same name: the page stores unacknowledged chunks in
    IndexedDB, a reload loses the recorder, and the next load finishes the upload."""
    open_app(firefox, up)
    assert stored_uploads(firefox) == (0, 0)
    session_id = start_recording(firefox)
    time.sleep(RECORD_BEFORE_RELOAD)
    stored = {}
    for track in TRACKS:
        status = by_test_id(firefox, f"track-status-{track}")
        assert status.get_attribute("data-persistent") == "true"
        stored[track] = number(status, "data-bytes-stored")
        assert stored[track] > 0, track
    left_at = time.time() * 1000
    # WebDriver accepts the page's "leave this page?" prompt on a navigation, as a person would.
    firefox.refresh()
    open_app_after_reload = wait(
        firefox, "the resumed upload", lambda: by_test_id(firefox, "resume-status")
    )
    assert open_app_after_reload.get_attribute("data-resume-session-id") == session_id

    def resume() -> WebElement:
        return by_test_id(firefox, "resume-status")

    wait_uploaded(firefox, resume)
    wait(
        firefox, "the resume panel done", lambda: resume().get_attribute("data-state") == "uploaded"
    )
    assert "You can compile it below" in resume().text
    assert axe_violations(firefox) == [], "the resumed upload's panel"
    session = httpx.get(f"{up.url}/api/sessions/{session_id}").json()
    on_server = {t["name"]: t for t in session["tracks"]}
    for track in TRACKS:
        status = by_test_id(resume(), f"track-status-{track}")
        assert status.get_attribute("data-resumed") == "true"
        recorded = number(status, "data-bytes-recorded")
        assert number(status, "data-bytes-acknowledged") == recorded, track
        assert recorded >= stored[track], (track, recorded, stored)
        assert on_server[track]["finished"] is True, on_server
        assert on_server[track]["bytes"] == recorded, (track, on_server[track], recorded)
    assert session["state"] == "recorded", session["state"]
    wait(firefox, "IndexedDB emptied", lambda: stored_uploads(firefox) == (0, 0), timeout=10)

    started = min(t["startedAt"] for t in on_server.values())
    kept = number(resume(), "data-recorded-seconds")
    until_left = (left_at - started) / 1000
    assert until_left - TIMESLICE - 0.5 <= kept <= until_left + 0.1, (kept, until_left)
    out = compile_and_fetch(firefox, up, session_id, tmp_path / "reloaded.mp4")
    codecs, duration = ffprobe(out)
    assert codecs == ("aac", "h264")
    assert abs(duration - kept) <= 0.7, (duration, kept, until_left)
