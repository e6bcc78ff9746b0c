"""The `RecordingSession` contract (SPEC §9), shared by the api and the operator.

The CRD itself is `charts/tapedeck/crds/recordingsessions.tapedeck.io.yaml`; this module is
what Python needs of it: names, the spec as a validated model, and the compile-request rule.

Compile requests. `spec.compile: true` asks for a compile; `spec.compileRequest` (a counter,
0 by default) names the request. The operator records the request it has acted on in
`status.compileRequest`, so a request is acted on once: re-applying the same spec, or
restarting the operator, never starts a second compile. Asking again (after a failure, say)
means raising `spec.compileRequest`, which is what the api does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from tapedeck.compiler.plan import OutputOptions
from tapedeck.lifecycle import check_ttl
from tapedeck.sessions import SESSION_ID_PATTERN, InvalidTitle, validate_title
from tapedeck.settings import Duration

GROUP = "tapedeck.io"
VERSION = "v1alpha1"
PLURAL = "recordingsessions"
KIND = "RecordingSession"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_SESSION_ID = "tapedeck.io/session-id"
FINALIZER = "tapedeck.io/cleanup"

_LABEL_VALUE = re.compile(r"^([a-z0-9A-Z]([-_.a-z0-9A-Z]{0,61}[a-z0-9A-Z])?)?$")


class InvalidSpec(ValueError):
    pass


class RecordingSessionSpec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)
    compile: bool = False
    compile_request: int = Field(default=0, ge=0)
    output: OutputOptions = OutputOptions()
    ttl: Duration | None = None
    title: str | None = None
    """The session's title; the operator applies it (and every change of it)."""


def parse_spec(spec: Mapping[str, Any]) -> RecordingSessionSpec:
    """The spec, validated as the CRD's schema does (an API server may not have: the
    resource could predate the CRD's validation, or the emulator in tests has none)."""
    try:
        parsed = RecordingSessionSpec.model_validate(dict(spec))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidSpec(f"spec.{where}: {first['msg']}") from None
    if parsed.ttl is not None:
        try:
            check_ttl(parsed.ttl.total_seconds())
        except ValueError as err:
            raise InvalidSpec(f"spec.ttl: {err}") from None
    if parsed.title is not None:
        try:
            parsed = parsed.model_copy(update={"title": validate_title(parsed.title)})
        except InvalidTitle as err:
            raise InvalidSpec(f"spec.title: {err}") from None
    return parsed


def session_id_of(resource: Mapping[str, Any]) -> str:
    """`spec.sessionId`, defaulting to the resource's name."""
    spec = resource.get("spec") or {}
    return str(spec.get("sessionId") or resource["metadata"]["name"])


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and _LABEL_VALUE.fullmatch(value) is not None


def pending_compile_request(spec: RecordingSessionSpec, status: Mapping[str, Any]) -> int | None:
    """The compile request the operator has yet to act on, if any."""
    if not spec.compile:
        return None
    handled = status.get("compileRequest")
    if isinstance(handled, int) and handled >= spec.compile_request:
        return None
    return spec.compile_request


def compile_patch(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that asks for a (new) compile, or None if one is already pending."""
    spec = resource.get("spec") or {}
    if not spec.get("compile"):
        return {"spec": {"compile": True}}
    request = int(spec.get("compileRequest") or 0)
    handled = (resource.get("status") or {}).get("compileRequest")
    if not isinstance(handled, int) or handled < request:
        return None  # the operator has not acted on the current request yet
    return {"spec": {"compileRequest": handled + 1}}


def new_resource(session_id: str, namespace: str, compile: bool = False) -> dict[str, Any]:
    """The resource the api creates for a session it created (name = session id)."""
    metadata: dict[str, Any] = {"name": session_id, "namespace": namespace}
    if is_label_value(session_id):
        metadata["labels"] = {LABEL_SESSION_ID: session_id}
    spec: dict[str, Any] = {"sessionId": session_id}
    if compile:
        spec["compile"] = True
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
