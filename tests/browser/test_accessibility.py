"""Accessibility of both views (the recorder, and the list of recordings with its player):
axe-core (the frontend's dev dependency, injected into the page) finds no violations, and
every control is reachable with Tab and works from the keyboard alone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from browser.conftest import AXE_SCRIPT
from browser.test_recording import open_app, probe, wait_uploaded
from harness import Up, start_up

pytestmark = pytest.mark.browser

# Every control a person can use: what must be reachable with Tab (or, for the radios of
# a group, with the arrow keys from the group's one Tab stop).
CONTROLS_JS = """() => {
  // A native control counts even with tabindex="-1" (which would take it out of the Tab
  // order); other elements count when they ask to be in it.
  const selector = 'a[href], button, input, select, textarea, video[controls], '
    + '[tabindex]:not([tabindex^="-"])';
  return [...document.querySelectorAll(selector)]
    .filter((el) => !el.matches(':disabled') && el.getClientRects().length > 0)
    .map((el) => window.__describe(el));
}"""

DESCRIBE_JS = """() => {
  window.__describe = (el) => {
    if (!el || el === document.body) return 'body';
    // A select's text is its options, which change as devices show up: its id names it.
    const field = ['SELECT', 'INPUT', 'TEXTAREA'].includes(el.tagName) && el.id;
    const text = (el.getAttribute('aria-label') || el.textContent || '').trim();
    const name = field ? `#${el.id}` : text;
    const kind = el.type === 'radio' ? `radio-group:${el.name}` : el.tagName.toLowerCase();
    const row = el.closest('[data-session-id]');
    const where = row ? ' in ' + row.dataset.sessionId : '';
    return `${kind} "${el.type === 'radio' ? '' : name}"${where}`;
  };
}"""


def axe_violations(page: Page) -> list[str]:
    """axe-core's violations on the page as it is now, in the light and the dark color
    scheme (the page has both), one readable line each."""
    page.add_script_tag(path=str(AXE_SCRIPT))
    found = []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        found += [f"{scheme}: {line}" for line in axe_run(page)]
    page.emulate_media(color_scheme="light")
    return found


def axe_run(page: Page) -> list[str]:
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, { resultTypes: ['violations'] })"
    )
    # axe did check the page (these are rules it ran and that passed).
    assert len(result["passes"]) > 10, result["passes"]
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + "; ".join(" ".join(node["target"]) for node in v["nodes"])
        for v in result["violations"]
    ]


def from_top(page: Page) -> None:
    """Where a person starts: a click on the page's heading (not a control) drops focus and
    makes the next Tab go to the first control of the page."""
    page.get_by_role("heading", name="Tapedeck", level=1).click()


def tab_order(page: Page, limit: int = 80) -> list[str]:
    """What Tab focuses, from the top of the page until focus leaves the document."""
    page.evaluate(DESCRIBE_JS)
    from_top(page)
    order: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = str(page.evaluate("() => window.__describe(document.activeElement)"))
        if focused == "body" or (order and focused == order[0]):
            break
        order.append(focused)
    return order


def assert_every_control_reachable(page: Page) -> list[str]:
    order = tab_order(page)
    controls = page.evaluate(CONTROLS_JS)
    unreachable = [c for c in controls if c not in order]
    assert controls, "no controls found"
    assert unreachable == [], f"not reachable with Tab: {unreachable}; Tab order: {order}"
    return order


def focus_with_tab(page: Page, name: str, limit: int = 80) -> None:
    """Press Tab until the control whose accessible name starts with `name` has focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        label = page.evaluate(
            "() => { const el = document.activeElement;"
            " return (el.getAttribute('aria-label') || el.textContent || '').trim(); }"
        )
        if str(label).startswith(name):
            return
    raise AssertionError(f"Tab never reached {name!r}")


def test_axe_finds_nothing_on_either_view(page: Page, up: Up) -> None:
    open_app(page)
    expect(page.get_by_text("No recordings yet.")).to_be_visible(timeout=10_000)
    assert axe_violations(page) == []

    page.get_by_role("button", name="Start recording").click()
    expect(page.get_by_test_id("session-id")).to_have_text(re.compile(r"\S"), timeout=10_000)
    wait_recording = page.get_by_test_id("track-status-video")
    expect(wait_recording).to_have_attribute("data-state", "recording", timeout=10_000)
    assert axe_violations(page) == [], "while recording"
    page.wait_for_timeout(2000)
    page.get_by_role("button", name="Stop recording").click()
    wait_uploaded(page, "video", "audio")
    session_id = page.get_by_test_id("session-id").inner_text()

    row = page.locator(f'[data-session-id="{session_id}"]')
    expect(row).to_be_visible(timeout=15_000)
    assert axe_violations(page) == [], "a recorded session in the list"
    row.get_by_role("button", name="Compile").click()
    expect(row.get_by_role("link", name="Download")).to_be_visible(timeout=90_000)
    expect(row.get_by_label(f"Recording {session_id}")).to_be_visible()
    assert axe_violations(page) == [], "the player of a compiled session"


def test_every_control_works_from_the_keyboard(page: Page, up: Up, tmp_path: Path) -> None:
    """Record, stop, compile, download and delete with the keyboard only; on each view every
    enabled control is in the Tab order."""
    open_app(page)
    order = assert_every_control_reachable(page)
    assert order[0].startswith("radio-group:mode"), order

    # The source radios: one Tab stop, the arrow keys choose.
    from_top(page)
    page.keyboard.press("Tab")
    camera = page.get_by_label("Camera + microphone")
    screen = page.get_by_label("Screen + microphone")
    expect(camera).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(screen).to_be_checked()
    page.keyboard.press("ArrowUp")
    expect(camera).to_be_checked()
    expect(page.locator("#camera-select")).to_be_visible()

    from_top(page)
    focus_with_tab(page, "Start preview")
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Stop preview")).to_be_visible(timeout=10_000)

    from_top(page)
    focus_with_tab(page, "Start recording")
    page.keyboard.press("Enter")
    session = page.get_by_test_id("session-id")
    expect(session).to_have_text(re.compile(r"^[a-z0-9-]{8,}$"), timeout=10_000)
    expect(page.get_by_test_id("track-status-video")).to_have_attribute(
        "data-state", "recording", timeout=10_000
    )
    assert_every_control_reachable(page)
    page.wait_for_timeout(2000)
    from_top(page)
    focus_with_tab(page, "Stop recording")
    page.keyboard.press("Enter")
    wait_uploaded(page, "video", "audio")
    session_id = session.inner_text()

    row = page.locator(f'[data-session-id="{session_id}"]')
    expect(row).to_be_visible(timeout=15_000)
    assert_every_control_reachable(page)
    compile_button = row.get_by_role("button", name="Compile")
    from_top(page)
    focus_with_tab(page, "Compile")
    expect(compile_button).to_be_focused()
    page.keyboard.press("Space")
    download = row.get_by_role("link", name="Download")
    expect(download).to_be_visible(timeout=90_000)
    order = assert_every_control_reachable(page)
    assert f'video "Recording {session_id}" in {session_id}' in order, order

    from_top(page)
    focus_with_tab(page, "Download")
    expect(download).to_be_focused()
    with page.expect_download() as info:
        page.keyboard.press("Enter")
    target = tmp_path / "keyboard.mp4"
    info.value.save_as(target)
    codecs, _ = probe(target)
    assert codecs == ("aac", "h264")

    from_top(page)
    focus_with_tab(page, "Delete")
    expect(row.get_by_role("button", name="Delete")).to_be_focused()
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("Enter")
    expect(row).to_have_count(0, timeout=10_000)
    assert not (up.data_dir / session_id).exists()


@pytest.fixture
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`tapedeck up` with an API token: the page asks for it."""
    running = start_up(tmp_path_factory.mktemp("guarded"), api_token="a-token-for-tests")
    try:
        yield running
    finally:
        running.stop()


def test_the_token_form_is_accessible_and_works_from_the_keyboard(page: Page, guarded: Up) -> None:
    page.goto(guarded.url + "/")
    field = page.get_by_role("textbox", name="Access token")
    expect(field).to_be_visible(timeout=15_000)
    assert axe_violations(page) == []
    assert_every_control_reachable(page)
    from_top(page)
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "api-token":
            break
    expect(field).to_be_focused()
    page.keyboard.type("a-token-for-tests")
    page.keyboard.press("Enter")
    expect(field).to_have_count(0, timeout=10_000)
    expect(page.get_by_text("No recordings yet.")).to_be_visible(timeout=10_000)
