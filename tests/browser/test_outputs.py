"""Issue 19 in a real Chromium: the poster in the list, an HLS recording that plays and seeks
without downloading the MP4, storyboard previews on the seek bar, titles edited and searched."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from playwright.sync_api import Page, expect

from harness import Up, start_up

from .test_recording import open_app, record, wait_uploaded

RECORD_SECONDS = 6.0
LUMA_THRESHOLD = 25.0
"""Chromium's fake camera is dark: its frames' mean luma cycles 9-33 (about 20 on average), a
black frame is 16. Above 25 is neither black nor that camera's average frame (which FFmpeg's
`thumbnail` filter picked: 20.0, before compiler/extras.py picked by luma)."""
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`tapedeck up` with HLS for every compile (a setting), so a short recording has it."""
    running = start_up(tmp_path_factory.mktemp("up-outputs"), hls_min_duration="0s")
    try:
        yield running
    finally:
        running.stop()


def mean_luma(path: Path) -> float:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0)).reformat(format="gray")
    plane = frame.planes[0]
    data, stride = bytes(plane), plane.line_size
    total = sum(sum(data[y * stride : y * stride + frame.width]) for y in range(frame.height))
    return total / (frame.width * frame.height)


def test_poster_hls_playback_seek_and_titles(page: Page, tmp_path: Path) -> None:
    errors = open_app(page)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    session_id = record(page, RECORD_SECONDS)
    wait_uploaded(page, "video", "audio")
    row = page.locator(f'[data-session-id="{session_id}"]')
    expect(row).to_be_visible(timeout=15_000)
    row.get_by_role("button", name="Compile").click()
    expect(row.get_by_role("link", name="Download")).to_be_visible(timeout=90_000)

    # The poster in the list, without a reload (it follows `ready`; the page polls for it):
    # loaded, and not a black frame.
    poster = row.get_by_test_id("session-poster")
    expect(poster).to_be_visible(timeout=15_000)
    page.wait_for_function(
        "el => el.complete && el.naturalWidth > 0", arg=poster.element_handle(), timeout=15_000
    )
    src = poster.get_attribute("src") or ""
    image = page.request.get(src)
    assert image.ok and image.headers["content-type"] == "image/jpeg"
    (tmp_path / "poster.jpg").write_bytes(image.body())
    luma = mean_luma(tmp_path / "poster.jpg")
    assert luma > LUMA_THRESHOLD, f"the poster is dark (mean luma {luma:.1f})"

    # HLS: hls.js plays it (Chromium has MSE), taken up when the playlist lands, and from
    # then on the MP4 is never fetched (before, the player may have read the MP4's head).
    video = row.get_by_label(f"Recording {session_id}")
    expect(video).to_have_attribute("data-playback", "hls.js", timeout=15_000)
    on_hls = len(requests)
    handle = video.element_handle()
    page.evaluate("v => { v.muted = true; return v.play(); }", handle)
    page.wait_for_function("v => v.currentTime > 0.5", arg=handle, timeout=20_000)
    page.evaluate("v => v.pause()", handle)
    seek_bar = row.get_by_label("Seek with previews")
    expect(seek_bar).to_be_visible()
    box = seek_bar.bounding_box()
    assert box is not None
    seek_bar.click(position={"x": box["width"] * 0.75, "y": box["height"] / 2})  # a seek
    target = float(seek_bar.input_value())
    assert target > 3.0, target
    page.wait_for_function(
        "([v, t]) => !v.seeking && Math.abs(v.currentTime - t) < 0.3 && v.readyState >= 2",
        arg=[handle, target],
        timeout=20_000,
    )
    assert any("/hls/hls-" in url for url in requests), requests
    assert not any("/api/download/" in url for url in requests[on_hls:]), requests

    # Storyboard previews over the seek bar.
    seek_bar.hover(position={"x": box["width"] * 0.5, "y": box["height"] / 2})
    preview = row.get_by_test_id("seek-preview")
    expect(preview).to_be_visible(timeout=10_000)
    assert "storyboard.jpg" in (preview.get_attribute("style") or "")

    # Titles: edited in the page, shown, searched, and naming the download.
    row.get_by_role("button", name=re.compile(r"^Rename ")).click()
    row.get_by_test_id("title-input").fill("Équipe weekly")
    row.get_by_role("button", name="Save").click()
    expect(row.get_by_test_id("session-title")).to_have_text("Équipe weekly", timeout=10_000)
    page.get_by_role("searchbox").fill("équipe")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.get_by_test_id("session-row")).to_have_count(1, timeout=10_000)
    page.get_by_role("searchbox").fill("no recording is called this")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.get_by_test_id("session-row")).to_have_count(0, timeout=10_000)
    page.get_by_role("searchbox").fill("")
    page.get_by_role("button", name="Search", exact=True).click()
    row = page.locator(f'[data-session-id="{session_id}"]')
    with page.expect_download() as info:
        row.get_by_role("link", name="Download").click()
    assert info.value.suggested_filename == "Équipe weekly.mp4"
    assert errors == [], errors
