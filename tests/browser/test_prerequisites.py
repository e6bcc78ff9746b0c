"""The browser suite cannot vanish from CI: missing Chromium or a missing frontend build
fails the run there (and only skips elsewhere). Runs this directory's real conftest in a
pytest of its own (pytester), in a copy of the repository's layout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HERE = Path(__file__).resolve().parent

A_BROWSER_TEST = """
import pytest

pytestmark = pytest.mark.browser


def test_records() -> None:
    pass
"""


def run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    *,
    ci: str | None,
    chromium: bool,
    frontend: bool,
) -> pytest.RunResult:
    """The conftest at tests/browser/, ROOT (two levels up) standing in for the repository."""
    pytester.makeini("[pytest]\nmarkers =\n    browser: drives a real Chromium\n")
    browser = pytester.path / "tests" / "browser"
    browser.mkdir(parents=True)
    (browser / "__init__.py").write_text("")
    (browser / "conftest.py").write_text((HERE / "conftest.py").read_text())
    (browser / "test_recording.py").write_text(A_BROWSER_TEST)
    if frontend:
        out = pytester.path / "frontend" / "out"
        out.mkdir(parents=True)
        (out / "index.html").write_text("<!doctype html>")
        axe = pytester.path / "frontend" / "node_modules" / "axe-core"
        axe.mkdir(parents=True)
        (axe / "axe.min.js").write_text("")
    # Anything that exists stands in for Chromium: the conftest only looks for the file.
    chromium_path = sys.executable if chromium else str(pytester.path / "no" / "chromium")
    monkeypatch.setenv("TAPEDECK_TEST_CHROMIUM", chromium_path)
    monkeypatch.setenv("PYTHONPATH", str(HERE.parent))  # for `harness`
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "tests")


@pytest.mark.parametrize(
    ("chromium", "frontend", "named"),
    [
        (False, True, "Chromium at"),
        (True, False, "the frontend build (make frontend)"),
        (False, False, "Chromium at"),
    ],
)
def test_ci_fails_when_a_prerequisite_is_missing(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    chromium: bool,
    frontend: bool,
    named: str,
) -> None:
    result = run(pytester, monkeypatch, ci="true", chromium=chromium, frontend=frontend)
    assert result.ret != 0, result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 1, outcomes
    assert "xfailed" not in outcomes and "skipped" not in outcomes, outcomes
    result.stdout.fnmatch_lines([f"*missing*{named}*"])


def test_outside_ci_a_missing_prerequisite_skips(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, ci=None, chromium=False, frontend=True)
    assert result.ret == 0, result.stdout.str()
    assert result.parseoutcomes() == {"skipped": 1}
    result.stdout.fnmatch_lines(["*missing*Chromium at*"])


@pytest.mark.parametrize("ci", ["true", None])
def test_with_every_prerequisite_the_tests_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    result = run(pytester, monkeypatch, ci=ci, chromium=True, frontend=True)
    assert result.ret == 0, result.stdout.str()
    assert result.parseoutcomes() == {"passed": 1}
