"""The HTTP API against its own OpenAPI document: schemathesis with every check over every
phase (examples, coverage, fuzzing, stateful), against a real api process and real storage.

The document must say what the server enforces: a request it declares valid is accepted, one
it declares invalid is refused with a declared status and the JSON error shape, no answer is
a 5xx, every 405 carries `Allow`. The rate limits are lifted, so 429s hide no answers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import Stack, make_stack

TOKEN = "fuzz-token-0123456789"
MAX_EXAMPLES = 80  # per operation and phase; the stateful phase adds its own scenarios


def schemathesis_cli() -> str:
    return str(Path(sys.executable).with_name("schemathesis"))


def run_schemathesis(stack: Stack, workdir: Path, *extra: str) -> None:
    command = [
        schemathesis_cli(),
        "run",
        f"{stack.base_url}/openapi.json",
        "--checks=all",
        "--phases=examples,coverage,fuzzing,stateful",
        f"--max-examples={MAX_EXAMPLES}",
        "--generation-database=none",
        "--request-timeout=30",
        "--workers=1",
        "--no-color",
        *extra,
    ]
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=600, check=False
    )
    print(f"\n$ {' '.join(command)}\n{result.stdout[-6000:]}")
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-4000:]
    total = re.search(r"Selected: \d+/(\d+)", result.stdout)
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert total and tested and tested[1] == total[1], "not every operation was tested"
    assert httpx.get(f"{stack.base_url}/readyz").status_code == 200


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """No API token (loopback), no creation limits, and a UI mounted at `/` as `make test`
    has it (the mount answers what no route fully matches: 404s and 405s)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "ui").mkdir()
    (tmp / "ui" / "index.html").write_text("<!doctype html><title>ui</title>")
    running = make_stack(
        tmp, sessions_per_minute="0", max_open_sessions="1000000", frontend_dir=str(tmp / "ui")
    ).start()
    try:
        yield running
    finally:
        running.stop()


def test_the_api_does_what_its_document_says(unlimited: Stack, tmp_path: Path) -> None:
    run_schemathesis(unlimited, tmp_path)


def test_with_an_api_token(tmp_path: Path) -> None:
    """With a token, the document declares bearer auth: requests without it must be refused
    (`ignored_auth`), requests with it behave as above."""
    stack = make_stack(
        tmp_path, api_token=TOKEN, sessions_per_minute="0", max_open_sessions="1000000"
    ).start()
    try:
        run_schemathesis(
            stack,
            tmp_path,
            f"--header=Authorization: Bearer {TOKEN}",
            "--max-examples=15",
        )
    finally:
        stack.stop()
