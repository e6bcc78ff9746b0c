"""The page keeps unacknowledged chunks in IndexedDB: a reload, or a tab that goes away
without running its unload handlers, loses the recorder but not the recording. The next
page load resumes the upload from the server's `committed` and finishes the tracks; the
MP4 holds what was recorded before the page went away."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from browser.test_recording import compile_and_download, open_app, probe
from harness import Up

pytestmark = pytest.mark.browser

TRACKS = ("video", "audio")
RECORD_BEFORE_RELOAD = 3.0
# MediaRecorder hands over data every 1 s (timeslice); whatever the page had not
# received and stored when it went away is lost, so the kept media ends up to about one
# timeslice before that moment.
TIMESLICE = 1.0

STORED_UPLOADS_JS = """async () => {
  const dbs = indexedDB.databases ? await indexedDB.databases() : [];
  if (!dbs.some((d) => d.name === "tapedeck")) return [0, 0];
  return await new Promise((resolve, reject) => {
    const req = indexedDB.open("tapedeck");
    req.onerror = () => reject(req.error);
    req.onsuccess = () => {
      const db = req.result;
      const tx = db.transaction(["uploads", "chunks"], "readonly");
      const uploads = tx.objectStore("uploads").count();
      const chunks = tx.objectStore("chunks").count();
      tx.oncomplete = () => { db.close(); resolve([uploads.result, chunks.result]); };
      tx.onerror = () => reject(tx.error);
    };
  });
}"""


def stored_uploads(page: Page) -> tuple[int, int]:
    """(uploads, chunks) in this browser context's IndexedDB."""
    uploads, chunks = page.evaluate(STORED_UPLOADS_JS)
    return int(uploads), int(chunks)


def wait_storage_empty(page: Page, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := stored_uploads(page)) != (0, 0):
        assert time.monotonic() < deadline, f"IndexedDB still holds {left}"
        page.wait_for_timeout(200)


def attr(locator: Locator, name: str) -> int:
    return int(locator.get_attribute(name) or 0)


def start_recording(page: Page) -> str:
    page.get_by_role("button", name="Start recording").click()
    session = page.get_by_test_id("session-id")
    expect(session).to_have_text(re.compile(r"^[a-z0-9-]{8,}$"), timeout=10_000)
    for track in TRACKS:
        expect(page.get_by_test_id(f"track-status-{track}")).to_have_attribute(
            "data-state", "recording", timeout=10_000
        )
    return session.inner_text()


def record_then_leave(page: Page, leave: str) -> tuple[str, dict[str, int], float]:
    """Record for RECORD_BEFORE_RELOAD s, then reload or close the page. Returns the
    session id, the bytes each track had stored in IndexedDB just before, and when
    (epoch ms) the page went away."""
    session_id = start_recording(page)
    page.wait_for_timeout(RECORD_BEFORE_RELOAD * 1000)
    stored = {}
    for track in TRACKS:
        status = page.get_by_test_id(f"track-status-{track}")
        assert status.get_attribute("data-persistent") == "true"
        stored[track] = attr(status, "data-bytes-stored")
        assert stored[track] > 0, track
    left_at = time.time() * 1000
    if leave == "reload":
        # The page warns before leaving a live recording; accept, as a person would.
        page.on("dialog", lambda dialog: dialog.accept())
        page.reload()
    else:
        page.close(run_before_unload=False)
    return session_id, stored, left_at


def check_resumed(
    page: Page,
    up: Up,
    session_id: str,
    stored_before: dict[str, int],
    left_at: float,
    target: Path,
) -> None:
    resume = page.get_by_test_id("resume-status")
    expect(resume).to_have_attribute("data-resume-session-id", session_id, timeout=15_000)
    expect(resume).to_contain_text(re.compile("interrupted by a reload|uploaded"))
    for track in TRACKS:
        status = resume.get_by_test_id(f"track-status-{track}")
        expect(status).to_have_attribute("data-state", "uploaded", timeout=30_000)
        assert status.get_attribute("data-resumed") == "true"
    expect(resume).to_have_attribute("data-state", "uploaded")
    expect(resume).to_contain_text("You can compile it below")

    # Every byte the page had stored was acknowledged, and the server holds exactly that.
    session = httpx.get(f"{up.url}/api/sessions/{session_id}").json()
    on_server = {t["name"]: t for t in session["tracks"]}
    for track in TRACKS:
        status = resume.get_by_test_id(f"track-status-{track}")
        recorded = attr(status, "data-bytes-recorded")
        assert attr(status, "data-bytes-acknowledged") == recorded, track
        assert attr(status, "data-backlog") == 0, track
        assert recorded >= stored_before[track], (track, recorded, stored_before)
        assert on_server[track]["finished"] is True, on_server
        assert on_server[track]["bytes"] == recorded, (track, on_server[track], recorded)
    assert session["state"] == "recorded", session["state"]
    wait_storage_empty(page)

    # What was kept is the recording up to the moment the page went away (at most one
    # timeslice short of it, which the recorder had not handed over yet).
    started = min(t["startedAt"] for t in on_server.values())
    assert float(resume.get_attribute("data-started-at") or 0) == pytest.approx(started, abs=1)
    kept = float(resume.get_attribute("data-recorded-seconds") or 0)
    until_left = (left_at - started) / 1000
    assert until_left - TIMESLICE - 0.5 <= kept <= until_left + 0.1, (kept, until_left)

    out = compile_and_download(page, session_id, target)
    codecs, duration = probe(out)
    assert codecs == ("aac", "h264")
    assert abs(duration - kept) <= 0.7, (duration, kept, until_left)


def test_reload_mid_recording_resumes_the_upload(page: Page, up: Up, tmp_path: Path) -> None:
    errors = open_app(page)
    assert stored_uploads(page) == (0, 0)
    session_id, stored, left_at = record_then_leave(page, "reload")
    expect(page.get_by_role("button", name="Start recording")).to_be_enabled(timeout=15_000)
    check_resumed(page, up, session_id, stored, left_at, tmp_path / "reloaded.mp4")
    assert errors == [], errors


def test_closed_tab_resumes_in_a_new_page(page: Page, up: Up, tmp_path: Path) -> None:
    """Like a crashed tab: no unload handlers run. IndexedDB outlives the page within the
    browser context, so the next page of the same origin finishes the upload."""
    open_app(page)
    context = page.context
    session_id, stored, left_at = record_then_leave(page, "close")
    fresh = context.new_page()
    errors = open_app(fresh)
    check_resumed(fresh, up, session_id, stored, left_at, tmp_path / "closed.mp4")
    assert errors == [], errors


def test_second_tab_does_not_take_over_a_live_recording(page: Page, up: Up) -> None:
    """A second tab that opens during a recording sees its chunks in IndexedDB but must
    not resume them: the recording tab owns the upload (Web Locks)."""
    open_app(page)
    session_id = start_recording(page)
    other = page.context.new_page()
    open_app(other)
    other.wait_for_timeout(2000)
    expect(other.get_by_test_id("resume-status")).to_have_count(0)
    page.get_by_role("button", name="Stop recording").click()
    for track in TRACKS:
        status = page.get_by_test_id(f"track-status-{track}")
        expect(status).to_have_attribute("data-state", "uploaded", timeout=30_000)
        assert attr(status, "data-bytes-acknowledged") == attr(status, "data-bytes-recorded")
    # A takeover would have closed the recording tab's sockets with 4409 and left its tracks
    # in "error", never "uploaded". (A plain reconnect, which a loaded machine can cause,
    # resumes from `committed` and is no takeover.)
    wait_storage_empty(page)
    expect(other.get_by_test_id("resume-status")).to_have_count(0)
    session = httpx.get(f"{up.url}/api/sessions/{session_id}").json()
    assert session["state"] == "recorded"


def test_small_memory_budget_resends_from_indexeddb(page: Page, up: Up, tmp_path: Path) -> None:
    """With a tiny memory budget the backlog lives in IndexedDB: a server drop mid-recording
    makes the page read chunks back to resend them, and the MP4 is still whole."""
    budget = 16 * 1024
    page.add_init_script(f"localStorage.setItem('tapedeck.memoryBudgetBytes', '{budget}')")
    open_app(page)
    session_id = start_recording(page)
    started = time.monotonic()
    video = page.get_by_test_id("track-status-video")
    page.wait_for_timeout(2000)
    up.kill_child("web")
    expect(video).not_to_have_attribute("data-reconnects", "0", timeout=15_000)
    in_memory: list[int] = []
    largest_backlog = 0
    while time.monotonic() - started < 7.0:
        in_memory.append(attr(video, "data-bytes-in-memory"))
        largest_backlog = max(largest_backlog, attr(video, "data-backlog"))
        page.wait_for_timeout(100)
    stopped_at = time.time() * 1000
    page.get_by_role("button", name="Stop recording").click()
    for track in TRACKS:
        expect(page.get_by_test_id(f"track-status-{track}")).to_have_attribute(
            "data-state", "uploaded", timeout=30_000
        )
    print(f"in memory at most {max(in_memory)} B; backlog up to {largest_backlog} B")
    # Memory held at most the budget plus the one chunk being resent, while the backlog
    # (what the outage piled up) was larger than that.
    chunk_cap = 1024 * 1024
    assert max(in_memory) <= budget + chunk_cap, max(in_memory)
    assert largest_backlog > 2 * budget, largest_backlog
    wait_storage_empty(page)
    session = httpx.get(f"{up.url}/api/sessions/{session_id}").json()
    recorded = (stopped_at - min(t["startedAt"] for t in session["tracks"])) / 1000
    out = compile_and_download(page, session_id, tmp_path / "budget.mp4")
    codecs, duration = probe(out)
    assert codecs == ("aac", "h264")
    assert abs(duration - recorded) <= 0.7, (duration, recorded)
