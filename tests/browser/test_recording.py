"""A person's flow in a real browser: record, watch the upload, compile, play, download,
delete, with Chromium's fake camera and microphone (and screen)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import av
import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from harness import Up

RECORD_SECONDS = 5.0
pytestmark = pytest.mark.browser


def open_app(page: Page) -> list[str]:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto("/")
    expect(page.get_by_role("button", name="Start recording")).to_be_enabled(timeout=15_000)
    return errors


def record(page: Page, seconds: float, during: object = None) -> str:
    page.get_by_role("button", name="Start recording").click()
    session = page.get_by_test_id("session-id")
    expect(session).to_have_text(re.compile(r"^[a-z0-9-]{8,}$"), timeout=10_000)
    started = time.monotonic()
    if callable(during):
        during()
    page.wait_for_timeout(max(0, seconds - (time.monotonic() - started)) * 1000)
    page.get_by_role("button", name="Stop recording").click()
    return session.inner_text()


def compile_and_download(page: Page, session_id: str, target: Path) -> Path:
    row = page.locator(f'[data-session-id="{session_id}"]')
    expect(row).to_be_visible(timeout=15_000)
    row.get_by_role("button", name="Compile").click()
    expect(row.get_by_label("Compile progress").first).to_be_attached(timeout=10_000)
    download_link = row.get_by_role("link", name="Download")
    expect(download_link).to_be_visible(timeout=90_000)
    expect(row.get_by_label(f"Recording {session_id}")).to_be_visible()
    with page.expect_download() as info:
        download_link.click()
    info.value.save_as(target)
    return target


def probe(path: Path) -> tuple[tuple[str, ...], float]:
    with av.open(str(path)) as container:
        kinds = tuple(
            sorted(s.codec_context.name for s in container.streams if s.type in ("audio", "video"))
        )
        return kinds, float(container.duration or 0) / av.time_base


def wait_uploaded(page: Page, *tracks: str) -> None:
    for track in tracks:
        expect(page.get_by_test_id(f"track-status-{track}")).to_have_attribute(
            "data-state", "uploaded", timeout=30_000
        )


def test_camera_recording_compiles_and_downloads(page: Page, up: Up, tmp_path: Path) -> None:
    errors = open_app(page)
    assert errors == [], errors  # a clean page load
    session_id = record(page, RECORD_SECONDS)
    wait_uploaded(page, "video", "audio")
    video_status = page.get_by_test_id("track-status-video")
    assert int(video_status.get_attribute("data-bytes-acknowledged") or 0) > 10_000
    assert video_status.get_attribute("data-backlog") == "0"
    expect(page.get_by_test_id("video-codec")).to_contain_text("h264")
    out = compile_and_download(page, session_id, tmp_path / "camera.mp4")
    codecs, duration = probe(out)
    assert codecs == ("aac", "h264")
    assert abs(duration - RECORD_SECONDS) <= 0.7, duration

    row = page.locator(f'[data-session-id="{session_id}"]')
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0, timeout=10_000)
    assert not (up.data_dir / session_id).exists()


def test_screen_recording(page: Page, tmp_path: Path) -> None:
    open_app(page)
    page.get_by_label("Screen + microphone").check()
    session_id = record(page, RECORD_SECONDS)
    wait_uploaded(page, "screen", "audio")
    out = compile_and_download(page, session_id, tmp_path / "screen.mp4")
    codecs, duration = probe(out)
    assert codecs == ("aac", "h264")
    assert abs(duration - RECORD_SECONDS) <= 0.7, duration


def test_server_drop_mid_recording_keeps_full_duration(page: Page, up: Up, tmp_path: Path) -> None:
    """SIGKILL the web process (ingest) mid-recording: `up` restarts it, the page reconnects
    and resends from `committed`, and the MP4 still has the whole recording."""
    open_app(page)

    def drop() -> None:
        page.wait_for_timeout(2000)
        up.kill_child("web")
        expect(page.get_by_test_id("track-status-video")).not_to_have_attribute(
            "data-reconnects", "0", timeout=15_000
        )

    session_id = record(page, RECORD_SECONDS + 1, during=drop)
    wait_uploaded(page, "video", "audio")
    out = compile_and_download(page, session_id, tmp_path / "dropped.mp4")
    codecs, duration = probe(out)
    assert codecs == ("aac", "h264")
    assert abs(duration - (RECORD_SECONDS + 1)) <= 0.7, duration
