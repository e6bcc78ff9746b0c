"""Every 405 says which methods the path has (`Allow`, RFC 9110): FastAPI's own 405s and
those of the UI's mount, which sees `/api` requests with a method no route has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import Stack, make_stack

CASES = [
    ("PUT", "/api/sessions", "GET, POST"),
    ("OPTIONS", "/api/sessions", "GET, POST"),
    ("PUT", "/api/sessions/abcdefgh-1234", "DELETE, GET, PATCH"),
    ("POST", "/api/download/abcdefgh-1234", "GET, HEAD"),
    ("GET", "/api/compile-video/abcdefgh-1234", "POST"),
    ("POST", "/healthz", "GET"),
]


def fake_ui(where: Path) -> str:
    where.mkdir()
    (where / "index.html").write_text("<!doctype html><title>ui</title>")
    return str(where)


@pytest.fixture(scope="module", params=["default", "ui"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """`ui`: a UI mounted at `/`, which sees every request no route fully matched.
    `default`: FastAPI's own 405s, unless a frontend build exists (then the UI's again)."""
    tmp = tmp_path_factory.mktemp(request.param)
    settings = {"frontend_dir": fake_ui(tmp / "ui")} if request.param == "ui" else {}
    running = make_stack(tmp, **settings).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(("method", "path", "allow"), CASES)
def test_405_names_the_allowed_methods(server: Stack, method: str, path: str, allow: str) -> None:
    response = httpx.request(method, server.base_url + path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert response.json()["error"]["code"] == "method-not-allowed"


def test_the_uis_files_allow_get_and_head(server: Stack, request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params["server"] != "ui":
        pytest.skip("only a mounted UI serves files")
    response = httpx.post(server.base_url + "/some/page")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
