"""The kopf handlers: `kopf run -m tapedeck_operator.handlers`, or `tapedeck operator`.

- create / resume / spec change → the session exists in storage, a recording session gets
  its follower Job, and a pending compile request gets exactly one compiler: the running
  follower, or else one Job (`_sessions.reconcile_spec`, `followers`);
- Job events → the outcome is mirrored into status (and a Job that ended without settling
  the session marks it failed) before Kubernetes cleans the Job up;
- timers → progress while compiling, status and TTL otherwise: an expired session's data
  and resource are deleted;
- deletion → the finalizer deletes the session's data from storage.
"""

from __future__ import annotations

from typing import Any

import kopf

from tapedeck import metrics
from tapedeck.cluster.resources import FINALIZER, GROUP, KIND, PLURAL, VERSION
from tapedeck.settings import Settings
from tapedeck_operator import _sessions
from tapedeck_operator._context import MEMO_KEY, Context, context
from tapedeck_operator.jobs import FOLLOW_SUFFIX, LABEL_MANAGED_BY, MANAGED_BY, is_follower
from tapedeck_operator.status import JobView, job_view
from tapedeck_operator.tally import JobTally

TALLY = JobTally()


def count_job(uid: str, job: JobView, deleted: bool) -> None:
    """The compile Jobs → `tapedeck_compile_*` (tally.py says why not a Pushgateway)."""
    finished = TALLY.observe(uid, job, deleted)
    metrics.compile_queue_depth.set(TALLY.queued)
    metrics.compile_running.set(TALLY.running)
    if finished is not None:
        metrics.compile_outcomes.labels(finished.outcome).inc()
        if finished.seconds is not None:
            metrics.compile_duration.labels(finished.outcome).observe(finished.seconds)


# Read once, when kopf loads this module: timers' intervals are part of their registration.
SWEEP_INTERVAL = Settings().sweep_interval.total_seconds()
PROGRESS_INTERVAL = min(2.0, SWEEP_INTERVAL)
FOLLOWER_INTERVAL = 0.25

SESSIONS = (GROUP, VERSION, PLURAL)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own names for what kopf keeps on the resources, and nothing in `status` that the
    # CRD's structural schema would prune.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # One replica (Deployment strategy Recreate), no peering: see docs/kubernetes.md.
    settings.peering.standalone = True
    # A resource deleted while its sweep timer runs waits this long for the timer to stop
    # before the finalizer goes (kopf's default is 60 s, which made TTL expiry slow).
    settings.background.cancellation_polling = 5
    # The CRD comes with the chart, before the operator: no need to watch for CRDs (nor the
    # cluster-wide RBAC that would take).
    settings.scanning.disabled = True
    port = Settings().operator_metrics_port
    if port:  # the compile metrics above (and kopf's process), for Prometheus
        from prometheus_client import start_http_server

        start_http_server(port)
    if MEMO_KEY not in memo:
        memo[MEMO_KEY] = Context.from_environment()
    context(memo).start_sweeper()
    context(memo).start_deliverer()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if MEMO_KEY in memo:
        await context(memo).close()


@kopf.on.resume(*SESSIONS)
@kopf.on.create(*SESSIONS)
@kopf.on.update(*SESSIONS, field="spec")
async def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _sessions.reconcile_spec(context(memo), body, patch)


@kopf.on.delete(*SESSIONS)
async def delete_data(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _sessions.cleanup(context(memo), body)


def _compiling(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") in ("Queued", "Compiling")


def _follower_compiling(status: kopf.Status, **_: Any) -> bool:
    """A follower compiles the request: it ends in a second or two, and `Ready` should follow
    its MP4 at once rather than at the next progress tick."""
    job = status.get("job") or {}
    return _compiling(status) and str(job.get("name", "")).endswith(FOLLOW_SUFFIX)


@kopf.timer(*SESSIONS, interval=FOLLOWER_INTERVAL, when=_follower_compiling, id="follower")
@kopf.timer(*SESSIONS, interval=PROGRESS_INTERVAL, when=_compiling, id="progress")
@kopf.timer(*SESSIONS, interval=SWEEP_INTERVAL, initial_delay=SWEEP_INTERVAL, id="sweep")
async def refresh(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    ctx = context(memo)
    meta = body["metadata"]
    fresh = await ctx.kube.get_session(meta["name"], meta["namespace"])  # not the timer's copy
    if fresh is not None and fresh["metadata"].get("uid") == meta.get("uid"):
        await _sessions.refresh(ctx, fresh)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if not is_follower(body):  # a follower is not a compile until asked, and then it is fast
        count_job(str(body["metadata"].get("uid", "")), job_view(body), type == "DELETED")
    if type == "DELETED":
        return  # a finished Job's outcome was mirrored when it finished; timers cover the rest
    owner = next(
        (
            ref
            for ref in body["metadata"].get("ownerReferences") or []
            if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(GROUP + "/")
        ),
        None,
    )
    if owner is None:
        return
    ctx = context(memo)
    resource = await ctx.kube.get_session(owner["name"], body["metadata"]["namespace"])
    if resource is not None and resource["metadata"].get("uid") == owner.get("uid"):
        await _sessions.refresh(ctx, resource, job=body)
