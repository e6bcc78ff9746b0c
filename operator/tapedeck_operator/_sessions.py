"""What the handlers do, with the I/O: storage over gRPC, Jobs and status over the API.

The decisions are not here: `tapedeck.compiler.queue.request_compile` (the api's own
compare-and-set), `tapedeck.lifecycle`, `jobs` and `status` make them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from tapedeck._proto import storage_pb2 as pb
from tapedeck.cluster.kube import KubeConflict, KubeError
from tapedeck.cluster.resources import (
    LABEL_SESSION_ID,
    InvalidSpec,
    RecordingSessionSpec,
    is_label_value,
    parse_spec,
    pending_compile_request,
)
from tapedeck.compiler.queue import request_compile
from tapedeck.lifecycle import AfterExit, CompileVerdict, is_expired
from tapedeck.sessions import State
from tapedeck.storage.records import PB_TO_STATE, now_ms
from tapedeck_operator import followers as fl
from tapedeck_operator import status as st
from tapedeck_operator._context import Context
from tapedeck_operator._errors import classified
from tapedeck_operator.jobs import (
    FOLLOW_SELECTOR,
    build_follower_job,
    build_job,
    follower_name,
    is_follower,
)

log = logging.getLogger(__name__)

WAIT_FOR_RECORDING = 15.0  # seconds between looks at a recording that must finish first
WAIT_FOR_FOLLOWER = 2.0  # seconds between looks at a follower Job being deleted

Json = dict[str, Any]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_body(resource: Mapping[str, Any]) -> kopf.Body:
    """What kopf's Event posting takes (it needs apiVersion, kind and metadata)."""
    if isinstance(resource, kopf.Body):
        return resource
    return kopf.Body(cast(kopf.RawBody, dict(resource)))


def post(resource: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    for event in st.events(previous, new):
        if event.warning:
            kopf.warn(as_body(resource), reason=event.reason, message=event.message)
        else:
            kopf.info(as_body(resource), reason=event.reason, message=event.message)


async def get_or_none(ctx: Context, session_id: str) -> pb.Session | None:
    with classified("reading the session"):
        return await ctx.sessions.get_or_none(session_id)


async def ensure_session(ctx: Context, session_id: str, spec: RecordingSessionSpec) -> pb.Session:
    """The session in storage, created if it is not there yet; its expiry follows `spec.ttl`
    and its title `spec.title`."""
    ttl = int(spec.ttl.total_seconds()) if spec.ttl else 0
    session = await get_or_none(ctx, session_id)
    with classified("creating the session"):
        if session is None:
            session = await ctx.sessions.create_or_get(
                session_id, ttl_seconds=ttl, title=spec.title or ""
            )
        if spec.title and session.title != spec.title:
            session = await ctx.sessions.update(session_id, title=spec.title)
        if ttl and session.expires_at_ms != session.created_at_ms + ttl * 1000:
            session = await ctx.sessions.update(
                session_id, expires_at_ms=session.created_at_ms + ttl * 1000
            )
    return session


@dataclass
class CompileOutcome:
    session: pb.Session
    job: Json | None
    handled: int | None
    note: str = ""
    wait: bool = False
    delay: float = WAIT_FOR_RECORDING


async def has_running_job(ctx: Context, body: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    if not job or job.get("phase") in (st.JOB_SUCCEEDED, st.JOB_FAILED):
        return False
    found = await ctx.kube.get_job(str(job["name"]), body["metadata"]["namespace"])
    return found is not None and not st.job_view(found).finished


async def ensure_job(ctx: Context, body: Mapping[str, Any], manifest: Json) -> Json:
    """Create the request's Job, or adopt it if an earlier attempt (ours) already did."""
    try:
        return await ctx.kube.create_job(manifest)
    except KubeConflict:
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        existing = await ctx.kube.get_job(name, namespace)
        uid = body["metadata"].get("uid")
        owners = (existing or {}).get("metadata", {}).get("ownerReferences") or []
        if existing is not None and any(o.get("uid") == uid for o in owners):
            log.info("adopting the existing Job %s", name)
            return existing
        raise kopf.TemporaryError(
            f"a Job named {name} exists but is not this resource's (an older one being "
            "deleted?); trying again",
            delay=30,
        ) from None


async def ensure_follower(
    ctx: Context, body: Mapping[str, Any], spec: RecordingSessionSpec, session: pb.Session
) -> None:
    """A recording session gets its follower Job (one per session, `operator_followers_max`
    at most in the namespace). Best effort: a follower the API refused now is tried again at
    the next sweep, and a session nobody followed gets the one-shot compile Job."""
    limit = ctx.settings.operator_followers_max
    state = PB_TO_STATE[session.state]
    if not fl.should_follow(state, 0, limit):
        return
    namespace = body["metadata"]["namespace"]
    name = follower_name(session.id)
    try:
        if await ctx.kube.get_job(name, namespace) is not None:
            return  # at most one per session, even once it ended
        running = fl.active_followers(
            j for j in await ctx.kube.list_jobs(FOLLOW_SELECTOR, namespace) if is_follower(j)
        )
        if not fl.should_follow(state, running, limit):
            log.info("%s: %d followers run already; not following it", session.id, running)
            return
        await ctx.kube.create_job(build_follower_job(body, session.id, spec.output, ctx.settings))
    except KubeConflict:
        return  # made meanwhile
    except KubeError as err:
        log.warning("%s: no follower Job: %s", session.id, err)
        return
    kopf.info(
        as_body(body), reason="FollowerCreated", message=f"compiling while recording: Job {name}"
    )


async def start_compile(
    ctx: Context,
    body: Mapping[str, Any],
    spec: RecordingSessionSpec,
    session: pb.Session,
    request: int,
    status: Mapping[str, Any],
) -> CompileOutcome:
    """Act on compile request `request`: queue the session (the api's compare-and-set) and
    make the request's one Job."""
    job = status.get("job")
    namespace = body["metadata"]["namespace"]
    follower = await ctx.kube.get_job(follower_name(session.id), namespace)
    who = fl.at_compile_request(follower, session.id, spec.output)
    if who == fl.AtRequest.STOP_FIRST:
        # Queued while it runs, it would compile too (and with other options, maybe first).
        await ctx.kube.delete_job(follower_name(session.id), namespace)
        note = "stopping the follower Job before the one-shot compile"
        handled = status.get("compileRequest")
        return CompileOutcome(session, job, handled, note, wait=True, delay=WAIT_FOR_FOLLOWER)
    result = await request_compile(ctx.storage, session)
    if result.verdict == CompileVerdict.STILL_RECORDING:
        note = "waiting for the recording to finish before compiling"
        return CompileOutcome(session, job, status.get("compileRequest"), note, wait=True)
    if result.verdict in (CompileVerdict.EMPTY, CompileVerdict.EXPIRED):
        note = (
            "nothing was recorded in this session"
            if result.verdict == CompileVerdict.EMPTY
            else "the session has expired"
        )
        kopf.warn(as_body(body), reason="CompileRefused", message=note)
        return CompileOutcome(session, job, request, note)
    start = result.queued or (
        result.state in (State.QUEUED, State.COMPILING)
        and not await has_running_job(ctx, body, job or {})
    )
    if start and who == fl.AtRequest.FOLLOWER and follower is not None:
        # The follower sees `queued` within 50 ms and compiles what it prepared.
        job = dataclasses.replace(st.job_view(follower), request=request).as_status()
        kopf.info(
            as_body(body),
            reason="FollowerCompiles",
            message=f"compile request {request}: the follower Job {job['name']} compiles",
        )
    elif start:
        manifest = build_job(body, session.id, request, spec.output, ctx.settings)
        job = st.job_view(await ensure_job(ctx, body, manifest)).as_status()
        kopf.info(
            as_body(body),
            reason="JobCreated",
            message=f"compile request {request}: Job {manifest['metadata']['name']}",
        )
    return CompileOutcome(await ctx.storage.get_session(session.id), job, request)


def apply(
    patch: MutableMapping[str, Any],
    body: Mapping[str, Any],
    previous: Mapping[str, Any],
    new: Mapping[str, Any],
) -> None:
    changes = st.status_patch(previous, new)
    if changes:
        patch.setdefault("status", {}).update(changes)
    post(body, previous, new)


async def reconcile_spec(ctx: Context, body: Mapping[str, Any], patch: kopf.Patch) -> None:
    """On create, resume and every spec change: the session exists, and a pending compile
    request gets its Job."""
    meta = body["metadata"]
    status = dict(body.get("status") or {})
    generation = meta.get("generation")
    kept = {"job": status.get("job"), "compile_request": status.get("compileRequest")}
    try:
        spec = parse_spec(body.get("spec") or {})
    except InvalidSpec as err:
        new = st.build_status(
            None, status, utcnow(), generation=generation, note=str(err), phase=st.INVALID, **kept
        )
        apply(patch, body, status, new)
        raise kopf.PermanentError(str(err)) from None
    session_id = spec.session_id or meta["name"]
    if (
        is_label_value(session_id)
        and (meta.get("labels") or {}).get(LABEL_SESSION_ID) != session_id
    ):
        patch.metadata.setdefault("labels", {})[LABEL_SESSION_ID] = session_id
    session = await ensure_session(ctx, session_id, spec)
    outcome = CompileOutcome(session, kept["job"], kept["compile_request"])
    request = pending_compile_request(spec, status)
    if request is not None:
        with classified("requesting a compile"):
            outcome = await start_compile(ctx, body, spec, session, request, status)
    else:
        await ensure_follower(ctx, body, spec, session)
    new = st.build_status(
        outcome.session,
        status,
        utcnow(),
        job=outcome.job,
        compile_request=outcome.handled,
        generation=generation,
        note=outcome.note,
    )
    apply(patch, body, status, new)
    if outcome.wait:
        raise kopf.TemporaryError(outcome.note, delay=outcome.delay)


async def patch_status(
    ctx: Context, resource: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any]
) -> None:
    changes = st.status_patch(previous, new)
    if changes:
        meta = resource["metadata"]
        with classified("updating the status"):
            await ctx.kube.patch_session_status(meta["name"], changes, meta["namespace"])
    post(resource, previous, new)


async def expire(ctx: Context, resource: Mapping[str, Any], session_id: str) -> None:
    """TTL: the data and then the resource go (its finalizer finds nothing left to delete)."""
    meta = resource["metadata"]
    # The operator's own decision (storage's `session.expired` follows, once the resource
    # may already be gone).
    kopf.info(as_body(resource), reason="Expiring", message="the session expired; deleting it")
    with classified("deleting an expired session"):
        await ctx.sessions.delete_if_exists(session_id)
        await ctx.kube.delete_session(meta["name"], meta["namespace"])


async def refresh(
    ctx: Context, resource: Mapping[str, Any], job: Mapping[str, Any] | None = None
) -> None:
    """Mirror storage (and the current request's Job) into status; settle a session whose
    Job ended without settling it; delete the session when it has expired."""
    meta = resource["metadata"]
    if meta.get("deletionTimestamp"):
        return
    status = dict(resource.get("status") or {})
    try:
        spec = parse_spec(resource.get("spec") or {})
    except InvalidSpec:
        return  # reported by the spec handler; nothing is stored under an invalid id
    session_id = spec.session_id or meta["name"]
    handled = status.get("compileRequest")
    kept = {"compile_request": handled, "generation": status.get("observedGeneration")}
    now = utcnow()
    session = await get_or_none(ctx, session_id)
    if session is None:
        expires = status.get("expiresAt")
        if expires and datetime.fromisoformat(expires.replace("Z", "+00:00")) <= now:
            await expire(ctx, resource, session_id)
            return
        note = "the session's data is not in storage"
        new = st.build_status(
            None, status, now, job=status.get("job"), note=note, phase=st.MISSING, **kept
        )
        await patch_status(ctx, resource, status, new)
        return
    if is_expired(session.expires_at_ms, now_ms()):
        await expire(ctx, resource, session_id)
        return

    current: Mapping[str, Any] = status.get("job") or {}
    # The follower compiles the current request (status.job names it, with the request).
    following = current.get("name") == follower_name(session_id)
    view: st.JobView | None = None
    if job is not None:
        view = st.job_view(job)
    elif current and current.get("phase") not in (st.JOB_SUCCEEDED, st.JOB_FAILED):
        with classified("reading the compile Job"):
            found = await ctx.kube.get_job(str(current["name"]), meta["namespace"])
        view = st.job_view(found) if found else st.vanished_job(current)
    if view is not None and following and view.name == current.get("name"):
        view = dataclasses.replace(view, request=current.get("request"))
    if view is not None and (handled is None or view.request != handled):
        view = None  # a Job of an earlier request: the current one is what status shows
    if view is not None and view.finished and view.name == follower_name(session_id):
        if fl.one_shot_after_follower(PB_TO_STATE[session.state]) and handled is not None:
            ended = view.reason or view.phase
            manifest = build_job(resource, session_id, handled, spec.output, ctx.settings)
            with classified("creating the compile Job"):
                view = st.job_view(await ensure_job(ctx, resource, manifest))
            kopf.info(
                as_body(resource),
                reason="JobCreated",
                message=f"compile request {handled}: the follower Job ended ({ended}); "
                f"Job {manifest['metadata']['name']}",
            )
    elif view is not None and view.finished:
        state = PB_TO_STATE[session.state]
        if st.after_job(state) == AfterExit.GIVE_UP:
            message = st.give_up_message(view)
            with classified("recording a failed compile"):
                session = await ctx.sessions.mark_failed(
                    session_id, message
                ) or await ctx.sessions.get(session_id)

    state = PB_TO_STATE[session.state]
    if state == State.RECORDING:
        await ensure_follower(ctx, resource, spec, session)
    same_phase = status.get("phase") == st.PHASES[state]
    note = str(status.get("message") or "") if same_phase and state != State.FAILED else ""
    new = st.build_status(
        session,
        status,
        now,
        job=view.as_status() if view else (current or None),
        note=note,
        **kept,
    )
    await patch_status(ctx, resource, status, new)


async def cleanup(ctx: Context, body: Mapping[str, Any]) -> None:
    """The finalizer: the session's data goes with its resource."""
    try:
        spec = parse_spec(body.get("spec") or {})
    except InvalidSpec:
        return  # nothing is ever stored under an invalid id
    session_id = spec.session_id or body["metadata"]["name"]
    with classified("deleting the session's data"):
        await ctx.sessions.delete_if_exists(session_id)
    log.info("deleted the data of session %s", session_id)
