"""A server that refuses a recording for good (here: its session was finalized while the
web process was down, so every reconnect is refused with 4409 `finished`) never costs the
person the recording: the page keeps every chunk in IndexedDB, says why the server
refused, and offers each track as the WebM MediaRecorder produced, byte for byte. Only
the person's "Discard" removes that copy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from browser.test_recording import open_app
from browser.test_reload import stored_uploads, wait_storage_empty
from harness import Stack, wait_for
from tapedeck._proto import storage_pb2 as pb
from tapedeck.storage.client import StorageClient

pytestmark = pytest.mark.browser

TRACKS = ("video", "audio")

# Every blob each MediaRecorder hands out, in order, tagged by what it records; and
# whether it has stopped (after `stop`, no more `dataavailable`).
CAPTURE_CHUNKS_JS = """(() => {
  const Original = window.MediaRecorder;
  if (!Original) return;
  window.__tapedeckChunks = [];
  window.MediaRecorder = class extends Original {
    constructor(stream, options) {
      super(stream, options);
      const entry = {
        kind: stream.getVideoTracks().length > 0 ? "video" : "audio",
        blobs: [],
        stopped: false,
      };
      window.__tapedeckChunks.push(entry);
      this.addEventListener("dataavailable", (ev) => {
        if (ev.data && ev.data.size > 0) entry.blobs.push(ev.data);
      });
      this.addEventListener("stop", () => { entry.stopped = true; });
    }
  };
})();"""

RECORDED_JS = """async () => {
  const out = {};
  for (const entry of window.__tapedeckChunks || []) {
    if (!entry.stopped) return null;
    const bytes = new Uint8Array(await new Blob(entry.blobs).arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    out[entry.kind] = [entry.blobs.length, btoa(binary)];
  }
  return out;
}"""


@pytest.fixture
def stack_page(browser: Browser, fresh_stack: Stack) -> Iterator[Page]:
    """A page on a stack whose storage and web run as separate processes, so a test can
    stop the web process alone and change storage behind the page's back."""
    context = browser.new_context(
        base_url=fresh_stack.base_url,
        accept_downloads=True,
        viewport={"width": 1280, "height": 900},
    )
    context.grant_permissions(["camera", "microphone"], origin=fresh_stack.base_url)
    opened = context.new_page()
    yield opened
    context.close()


def recorded_chunks(page: Page) -> dict[str, tuple[int, bytes]]:
    """What each stopped recorder produced: (number of chunks, their bytes concatenated)."""
    result: dict[str, tuple[int, bytes]] = {}

    def stopped() -> bool:
        got = page.evaluate(RECORDED_JS)
        if got is None:
            return False
        result.update({k: (int(n), base64.b64decode(b)) for k, (n, b) in got.items()})
        return True

    wait_for(stopped, 15, "the recorders to stop")
    return result


def finalize_in_storage(stack: Stack, session_id: str) -> None:
    """Finish the session's tracks in storage directly, as the idle sweeper would."""

    async def finalize() -> None:
        async with StorageClient(stack.storage_addr) as client:
            await client.update_session(
                pb.UpdateSessionRequest(
                    session_id=session_id,
                    finish_tracks=True,
                    if_state_in=[pb.SESSION_STATE_RECORDING],
                )
            )

    # Playwright's sync API runs an event loop in this thread: use a thread of our own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, finalize()).result(30)


def save_track(page: Page, scope: Page | Locator, track: str, target: Path) -> bytes:
    status = scope.get_by_test_id(f"track-status-{track}")
    button = status.get_by_role("button", name=re.compile("Save recording to this computer"))
    expect(button).to_be_enabled(timeout=10_000)
    with page.expect_download() as info:
        button.click()
    download = info.value
    assert re.fullmatch(rf"tapedeck-[a-z0-9-]+-{track}\.webm", download.suggested_filename)
    download.save_as(target)
    return target.read_bytes()


def record_until_refused(page: Page, stack: Stack) -> str:
    """Start recording; once some of each track is acknowledged, stop the web process,
    finalize the session in storage (as its idle sweeper does), start the web process
    again: every reconnect is refused with 4409 `finished`. Returns the session id."""
    page.get_by_role("button", name="Start recording").click()
    session = page.get_by_test_id("session-id")
    expect(session).to_have_text(re.compile(r"^[a-z0-9-]{8,}$"), timeout=10_000)
    session_id = session.inner_text()
    video = page.get_by_test_id("track-status-video")
    # Some of each track reached the server and was acknowledged.
    for track in TRACKS:
        expect(page.get_by_test_id(f"track-status-{track}")).not_to_have_attribute(
            "data-bytes-acknowledged", "0", timeout=15_000
        )

    # The web process goes away; the page keeps recording and reconnecting.
    stack.web.kill()
    expect(video).not_to_have_attribute("data-reconnects", "0", timeout=15_000)
    # Meanwhile storage finalizes the session (as its idle sweeper does).
    finalize_in_storage(stack, session_id)
    stack.start_web()

    # Every reconnect is now refused for good: the page says so and why.
    for track in TRACKS:
        status = page.get_by_test_id(f"track-status-{track}")
        expect(status).to_have_attribute("data-state", "refused", timeout=30_000)
        assert status.get_attribute("data-close-code") == "4409"
        assert status.get_attribute("data-error-code") == "finished"
        expect(status.get_by_role("alert")).to_contain_text("finished")
    return session_id


def test_refused_recording_is_offered_whole_and_kept_until_discarded(
    stack_page: Page, fresh_stack: Stack, tmp_path: Path
) -> None:
    page = stack_page
    page.add_init_script(CAPTURE_CHUNKS_JS)
    open_app(page)
    assert stored_uploads(page) == (0, 0)

    session_id = record_until_refused(page, fresh_stack)
    video = page.get_by_test_id("track-status-video")
    # The recorder keeps going after the refusal; those chunks are kept too.
    stored_at_refusal = int(video.get_attribute("data-bytes-stored") or 0)
    expect(video).not_to_have_attribute("data-bytes-stored", str(stored_at_refusal), timeout=10_000)
    page.get_by_role("button", name="Stop recording").click()
    recorded = recorded_chunks(page)
    assert set(recorded) == set(TRACKS), recorded.keys()

    for track in TRACKS:
        count, produced = recorded[track]
        assert count >= 3, (track, count)
        saved = save_track(page, page, track, tmp_path / f"{track}.webm")
        assert saved[:4] == b"\x1a\x45\xdf\xa3", track  # the EBML header: the file plays
        assert len(saved) == len(produced), (track, len(saved), len(produced))
        assert saved == produced, track

    # A reload shows the kept recording as refused, with Save and Discard; nothing retries.
    assert stored_uploads(page)[0] == 2
    page.reload()
    resume = page.get_by_test_id("resume-status")
    expect(resume).to_have_attribute("data-resume-session-id", session_id, timeout=15_000)
    expect(resume).to_have_attribute("data-state", "refused", timeout=15_000)
    for track in TRACKS:
        status = resume.get_by_test_id(f"track-status-{track}")
        expect(status).to_have_attribute("data-state", "refused")
        expect(status).to_contain_text("finished")
        assert status.get_attribute("data-reconnects") == "0"
        saved = save_track(page, resume, track, tmp_path / f"reloaded-{track}.webm")
        assert saved == recorded[track][1], track

    # Discard (after confirming) removes this browser's copy, and only then.
    page.once("dialog", lambda dialog: dialog.dismiss())
    resume.get_by_test_id("track-status-video").get_by_role(
        "button", name=re.compile("Discard")
    ).click()
    assert stored_uploads(page)[0] == 2
    for track in TRACKS:
        page.once("dialog", lambda dialog: dialog.accept())
        resume.get_by_test_id(f"track-status-{track}").get_by_role(
            "button", name=re.compile("Discard")
        ).click()
    wait_storage_empty(page)
    expect(page.get_by_test_id("resume-status")).to_have_count(0, timeout=10_000)


def test_without_indexeddb_the_unconfirmed_part_is_offered(
    stack_page: Page, fresh_stack: Stack, tmp_path: Path
) -> None:
    """Memory-only mode (no IndexedDB): what memory holds, the part the server had not
    confirmed, is offered, and the page says that is all it kept."""
    page = stack_page
    page.add_init_script(CAPTURE_CHUNKS_JS)
    page.add_init_script(
        'Object.defineProperty(window, "indexedDB", { value: undefined, configurable: true });'
    )
    open_app(page)
    record_until_refused(page, fresh_stack)
    video = page.get_by_test_id("track-status-video")
    assert video.get_attribute("data-persistent") == "false"
    expect(video).to_contain_text("kept only the part the server had not confirmed")
    page.get_by_role("button", name="Stop recording").click()
    recorded = recorded_chunks(page)
    for track in TRACKS:
        status = page.get_by_test_id(f"track-status-{track}")
        acknowledged = int(status.get_attribute("data-bytes-acknowledged") or 0)
        produced = recorded[track][1]
        assert 0 < acknowledged < len(produced), (track, acknowledged, len(produced))
        saved = save_track(page, page, track, tmp_path / f"{track}.webm")
        # Everything from the first chunk not wholly acknowledged on, to the last one.
        assert 0 < len(saved) < len(produced), track
        assert len(produced) - len(saved) <= acknowledged, track
        assert saved == produced[len(produced) - len(saved) :], track
        expect(status.get_by_role("status")).to_contain_text("may not play on its own")

    # That copy lives in this page only: leaving asks first.
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", answer)
    with contextlib.suppress(PlaywrightTimeoutError):
        page.reload(timeout=3_000)
    assert asked == ["beforeunload"], asked
    expect(page.get_by_test_id("track-status-video")).to_have_attribute("data-state", "refused")


FIRST_CHUNKS_JS = """async (sessionId) => new Promise((resolve, reject) => {
  const req = indexedDB.open("tapedeck");
  req.onerror = () => reject(req.error);
  req.onsuccess = () => {
    const db = req.result;
    const tx = db.transaction(["chunks"], "readonly");
    const keys = tx.objectStore("chunks").getAllKeys(
      IDBKeyRange.bound([sessionId, "", 0], [sessionId, "\\uffff", Infinity]));
    tx.oncomplete = () => {
      db.close();
      resolve(keys.result.filter((k) => k[2] === 0).map((k) => k[1]).sort());
    };
    tx.onerror = () => reject(tx.error);
  };
})"""


def test_acknowledged_chunks_stay_stored_until_the_track_is_finished(
    stack_page: Page, fresh_stack: Stack
) -> None:
    """An ack does not delete the stored header chunk (a saved file needs it); a track the
    server finished with every byte leaves nothing behind."""
    page = stack_page
    page.add_init_script(CAPTURE_CHUNKS_JS)
    open_app(page)
    page.get_by_role("button", name="Start recording").click()
    session = page.get_by_test_id("session-id")
    expect(session).to_have_text(re.compile(r"^[a-z0-9-]{8,}$"), timeout=10_000)
    session_id = session.inner_text()
    first_chunk = (
        "(kind) => window.__tapedeckChunks.find((e) => e.kind === kind)?.blobs[0]?.size ?? 0"
    )
    for track in TRACKS:
        status = page.get_by_test_id(f"track-status-{track}")

        def first_chunk_acknowledged(status: Locator = status, track: str = track) -> bool:
            size = int(page.evaluate(first_chunk, track))
            acked = int(status.get_attribute("data-bytes-acknowledged") or 0)
            return 0 < size <= acked

        wait_for(first_chunk_acknowledged, 15, f"an ack past the first {track} chunk")
    page.wait_for_timeout(1000)  # what the page does with IndexedDB after an ack is done
    assert page.evaluate(FIRST_CHUNKS_JS, session_id) == sorted(TRACKS)
    page.get_by_role("button", name="Stop recording").click()
    for track in TRACKS:
        expect(page.get_by_test_id(f"track-status-{track}")).to_have_attribute(
            "data-state", "uploaded", timeout=30_000
        )
    wait_storage_empty(page)


def test_upload_refused_on_resume_is_kept_and_offered(
    stack_page: Page, fresh_stack: Stack, tmp_path: Path
) -> None:
    """Issue 13 item 1 seen from the browser: the tab goes away while the server is
    unreachable, storage finalizes the session meanwhile, and the next page's resume is
    refused (4409 `finished`, with fewer bytes than stored). The card shows the refusal
    and offers the stored WebM; nothing is deleted."""
    page = stack_page
    page.add_init_script(CAPTURE_CHUNKS_JS)
    open_app(page)
    page.get_by_role("button", name="Start recording").click()
    session = page.get_by_test_id("session-id")
    expect(session).to_have_text(re.compile(r"^[a-z0-9-]{8,}$"), timeout=10_000)
    session_id = session.inner_text()
    video = page.get_by_test_id("track-status-video")
    for track in TRACKS:
        expect(page.get_by_test_id(f"track-status-{track}")).not_to_have_attribute(
            "data-bytes-acknowledged", "0", timeout=15_000
        )
    fresh_stack.web.kill()
    expect(video).not_to_have_attribute("data-reconnects", "0", timeout=15_000)
    # Chunks the server never acknowledged are stored (what the refusal concerns).
    for track in TRACKS:
        status = page.get_by_test_id(f"track-status-{track}")
        wait_for(
            lambda status=status: (
                int(status.get_attribute("data-bytes-stored") or 0)
                > int(status.get_attribute("data-bytes-acknowledged") or 0)
            ),
            15,
            f"unacknowledged {track} chunks in IndexedDB",
        )
    stored = {
        track: int(
            page.get_by_test_id(f"track-status-{track}").get_attribute("data-bytes-stored") or 0
        )
        for track in TRACKS
    }
    # What the recorders produced so far (they are still running: don't wait for a stop).
    so_far = page.evaluate(RECORDED_JS.replace("if (!entry.stopped) return null;", ""))
    produced = {kind: base64.b64decode(data) for kind, (_, data) in so_far.items()}
    context = page.context
    page.close(run_before_unload=False)  # like a crashed tab
    finalize_in_storage(fresh_stack, session_id)
    fresh_stack.start_web()

    fresh = context.new_page()
    open_app(fresh)
    resume = fresh.get_by_test_id("resume-status")
    expect(resume).to_have_attribute("data-resume-session-id", session_id, timeout=15_000)
    expect(resume).to_have_attribute("data-state", "refused", timeout=30_000)
    for track in TRACKS:
        status = resume.get_by_test_id(f"track-status-{track}")
        expect(status).to_have_attribute("data-state", "refused")
        expect(status.get_by_role("alert")).to_contain_text("finished")
        saved = save_track(fresh, resume, track, tmp_path / f"{track}.webm")
        # Everything stored before the tab went away, from the header on, as recorded.
        assert len(saved) >= stored[track], (track, len(saved), stored[track])
        assert saved[:4] == b"\x1a\x45\xdf\xa3", track
        # Both are the start of one recording (either may hold a chunk more).
        common = min(len(saved), len(produced[track]))
        assert common >= stored[track], (track, common, stored[track])
        assert saved[:common] == produced[track][:common], track
    assert stored_uploads(fresh)[0] == 2
