"""Schema-driven fuzzing of the HTTP API from its own OpenAPI document (schemathesis), against
a real api process and real storage: no input may produce a server error, and every error is
the documented JSON shape."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

from harness import Stack

CASES_PER_OPERATION = 60


def test_no_input_breaks_the_api(stack: Stack) -> None:
    document = httpx.get(f"{stack.base_url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    ran: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        fuzz(stack, operation, f"{operation.method.upper()} {operation.path}", ran)
    assert {"POST /api/sessions", "GET /api/download/{session_id}"} <= set(ran)
    print(f"\nschemathesis: {sum(ran.values())} cases over {len(ran)} operations: {ran}")
    assert httpx.get(f"{stack.base_url}/readyz").status_code == 200


def fuzz(stack: Stack, operation: object, label: str, ran: dict[str, int]) -> None:
    ran[label] = 0

    @settings(
        max_examples=CASES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    def check(case: schemathesis.Case) -> None:
        ran[label] += 1
        response = case.call(base_url=stack.base_url)
        assert response.status_code < 500, (label, case.path_parameters, response.text)
        if response.status_code >= 400 and case.method.upper() != "HEAD":
            where = (label, response.status_code, response.request.url, response.text[:200])
            content_type = response.headers.get("content-type") or [""]
            assert content_type[0] == "application/json", where
            error = response.json()["error"]
            assert error["code"] and error["message"], where

    check()
