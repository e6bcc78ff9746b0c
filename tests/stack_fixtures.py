"""Fixtures that run real Tapedeck processes (registered from conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from harness import Stack, Up, make_stack, start_up


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Storage + web (api and ingest on one port) as separate processes, like `tapedeck up`.
    Shared by a module's tests; tests that kill processes use `fresh_stack`."""
    running = make_stack(tmp_path_factory.mktemp("stack")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def fresh_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = make_stack(tmp_path_factory.mktemp("fresh")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`tapedeck up` as a user runs it (storage and web as its children)."""
    running = start_up(tmp_path_factory.mktemp("up"))
    try:
        yield running
    finally:
        running.stop()
