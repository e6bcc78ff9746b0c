"""The browser suite cannot vanish from CI: missing Chromium (Firefox and geckodriver for a
Firefox test) or a missing frontend build fails the run there (and only skips elsewhere).
Runs this directory's real conftest in a pytest of its own (pytester), in a copy of the
repository's layout."""

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

A_FIREFOX_TEST = """
import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def firefox() -> None:
    \"\"\"Stands in for the conftest's: the test only needs to ask for a Firefox.\"\"\"


def test_records_in_firefox(firefox: None) -> None:
    pass
"""


def run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    *,
    ci: str | None,
    chromium: bool,
    frontend: bool,
    firefox: tuple[bool, bool] | None = None,
) -> pytest.RunResult:
    """The conftest at tests/browser/, ROOT (two levels up) standing in for the repository."""
    pytester.makeini("[pytest]\nmarkers =\n    browser: drives a real Chromium\n")
    browser = pytester.path / "tests" / "browser"
    browser.mkdir(parents=True)
    (browser / "__init__.py").write_text("")
    (browser / "conftest.py").write_text((HERE / "conftest.py").read_text())
    (browser / "test_recording.py").write_text(
        A_BROWSER_TEST if firefox is None else A_FIREFOX_TEST
    )
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
    # (Firefox, geckodriver): whether each exists.
    firefox_there, geckodriver_there = firefox or (False, False)
    for variable, there in (
        ("TAPEDECK_TEST_FIREFOX", firefox_there),
        ("TAPEDECK_TEST_GECKODRIVER", geckodriver_there),
    ):
        monkeypatch.setenv(variable, sys.executable if there else str(pytester.path / "no" / "it"))
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


@pytest.mark.parametrize(
    ("firefox", "geckodriver", "named"),
    [(False, True, "Firefox at"), (True, False, "geckodriver"), (False, False, "Firefox at")],
)
def test_ci_fails_when_firefox_or_geckodriver_is_missing(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    firefox: bool,
    geckodriver: bool,
    named: str,
) -> None:
    result = run(
        pytester,
        monkeypatch,
        ci="true",
        chromium=True,
        frontend=True,
        firefox=(firefox, geckodriver),
    )
    assert result.ret != 0, result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 1, outcomes
    result.stdout.fnmatch_lines([f"*missing*{named}*"])


def test_a_firefox_test_needs_no_chromium(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(
        pytester, monkeypatch, ci="true", chromium=False, frontend=True, firefox=(True, True)
    )
    assert result.ret == 0, result.stdout.str()
    assert result.parseoutcomes() == {"passed": 1}
