"""The hash lock (requirements/*.txt, `make lock`) against pyproject.toml, offline: every file
pins each dependency its role declares, within the declared range, with hashes, and at the
version dev.txt (what CI tests) pins. `make lock-check` re-resolves against the index too."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
ROLES = {"dev": "dev", "service": "cluster", "compile": "compile", "embedded": "embedded"}
"""Lock file → the extra it installs (on top of the dependencies every role has)."""


def pins(name: str) -> dict[str, set[str]]:
    """Distribution → its pinned versions (more than one where markers split by Python)."""
    text = (REPO / "requirements" / f"{name}.txt").read_text()
    result: dict[str, set[str]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", entry)
        assert match, entry[:200]
        assert "--hash=sha256:" in entry, f"{name}.txt pins {match.group(0)} without a hash"
        result.setdefault(canonicalize_name(match.group(1)), set()).add(match.group(2))
    return result


def declared(extra: str) -> list[Requirement]:
    """The project's dependencies plus an extra's, following `tapedeck[...]` references."""
    result = [Requirement(d) for d in PROJECT["dependencies"]]
    todo, seen = [extra], set()
    while todo:
        current = todo.pop()
        seen.add(current)
        for line in PROJECT["optional-dependencies"][current]:
            requirement = Requirement(line)
            if requirement.name == PROJECT["name"]:
                todo += [e for e in requirement.extras if e not in seen]
            else:
                result.append(requirement)
    return result


def problems(locked: dict[str, set[str]], requirements: list[Requirement]) -> list[str]:
    """What a lock file gets wrong for these requirements."""
    found = []
    for requirement in requirements:
        versions = locked.get(canonicalize_name(requirement.name))
        if not versions:
            found.append(f"{requirement} is not pinned")
        for version in versions or ():
            if not requirement.specifier.contains(version, prereleases=True):
                found.append(f"{requirement.name}=={version} is outside {requirement}")
        if requirement.extras and not ({"standard"} >= requirement.extras and "uvloop" in locked):
            found.append(f"{requirement}: the extras' packages are not pinned")
    return found


@pytest.mark.parametrize("role", ROLES)
def test_the_lock_pins_every_declared_dependency_in_range(role: str) -> None:
    assert problems(pins(role), declared(ROLES[role])) == [], f"{role}.txt: run make lock"


@pytest.mark.parametrize("role", [r for r in ROLES if r != "dev"])
def test_every_role_pins_what_ci_tests(role: str) -> None:
    dev = pins("dev")
    for name, versions in pins(role).items():
        assert versions <= dev.get(name, set()), f"{role}.txt: {name} {versions} vs dev.txt"


def test_a_stale_lock_is_caught() -> None:
    """The check can fail: a dependency pyproject.toml gained, a raised lower bound."""
    stale = [Requirement("tomli-w>=1"), Requirement("kubernetes>=999")]
    assert len(problems(pins("service"), declared("cluster") + stale)) == 2


@pytest.mark.parametrize("role", ["service", "embedded"])
def test_the_web_roles_websocket_library_is_locked(role: str) -> None:
    """uvicorn imports the WebSocket library the web process names only when it starts: a
    library that only the dev lock holds passes every test in the dev venv and leaves the
    image's and `make run`'s web process unable to serve /ws."""
    from tapedeck.settings import Settings

    library = {"wsproto": "wsproto", "websockets-sansio": "websockets"}[
        Settings.model_fields["ws_implementation"].default
    ]
    assert library in pins(role), f"{role}.txt lacks {library}: declare it in pyproject.toml"
