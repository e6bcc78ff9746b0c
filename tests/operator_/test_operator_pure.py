"""The operator's pure decisions: Job manifests, status, compile requests, the CRD, the docs."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import kopf
import pytest
import yaml

from operator_harness import CRD
from tapedeck._proto import storage_pb2 as pb
from tapedeck.cli import main as cli_main
from tapedeck.cluster.kube import KubeError
from tapedeck.cluster.resources import (
    InvalidSpec,
    compile_patch,
    parse_spec,
    pending_compile_request,
)
from tapedeck.compiler.plan import OutputOptions
from tapedeck.lifecycle import AfterExit
from tapedeck.sessions import SESSION_ID_PATTERN, State
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageError
from tapedeck_operator import status as st
from tapedeck_operator._errors import classified
from tapedeck_operator.jobs import (
    MAX_NAME,
    build_follower_job,
    build_job,
    compile_args,
    example_job,
    job_name,
)

ROOT = Path(__file__).parents[2]
OWNER = {"metadata": {"name": "talk", "namespace": "tapedeck", "uid": "u-1"}}
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

# --- jobs ---


def test_job_names_are_deterministic_valid_and_distinct() -> None:
    assert job_name("0c136489-c0ad-4ddb-856c-adf166df948c", 0) == (
        "tapedeck-compile-0c136489-c0ad-4ddb-856c-adf166df948c-0"
    )
    long_a, long_b = "a" * 62 + "1", "a" * 62 + "2"
    names = {job_name(long_a, 7), job_name(long_b, 7), job_name(long_a, 8)}
    assert len(names) == 3
    for name in (*names, job_name("x" * 63, 123456789)):
        assert len(name) <= MAX_NAME
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert job_name(long_a, 7) == job_name(long_a, 7)


def test_job_manifest() -> None:
    settings = Settings.model_construct(
        storage_addr="storage:50051", compile_max_attempts=4, compile_image="img:1"
    )
    output = OutputOptions(video_codec="h264", crf=18, preset="slow", max_height=720)
    job = build_job(OWNER, "abcdefgh-1", 3, output, settings)
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job["metadata"]["labels"]["tapedeck.io/compile-request"] == "3"
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "img:1"
    assert container["command"] == ["tapedeck"]
    assert container["args"] == compile_args("abcdefgh-1", output)
    assert container["args"] == [
        "compile", "abcdefgh-1", "--video-codec", "h264", "--crf", "18",
        "--preset", "slow", "--max-height", "720",
    ]  # fmt: skip
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["emptyDir"] == {"sizeLimit": "10Gi"}
    assert container["resources"] == settings.compile_resources
    assert container["resources"] is not settings.compile_resources


def test_compile_command_flags_map_onto_output_options(capsys: pytest.CaptureFixture[str]) -> None:
    parsed: list[OutputOptions] = []

    async def fake_main(session_id: str, settings: Settings, options: OutputOptions) -> int:
        parsed.append(options)
        return 0

    import tapedeck.compiler.job as job_module

    saved = job_module.main
    job_module.main = fake_main  # type: ignore[assignment]
    try:
        for options in (
            OutputOptions(crf=30, max_height=480),
            OutputOptions(hls=True),
            OutputOptions(hls=False),
        ):
            with pytest.raises(SystemExit) as done:
                cli_main(["compile", "abcdefgh-1", *compile_args("abcdefgh-1", options)[2:]])
            assert done.value.code == 0
        with pytest.raises(SystemExit) as refused:
            cli_main(["compile", "abcdefgh-1", "--crf", "52"])
        assert refused.value.code == 2
    finally:
        job_module.main = saved
    assert parsed == [
        OutputOptions(crf=30, max_height=480),
        OutputOptions(hls=True),
        OutputOptions(hls=False),
    ]
    assert "--crf" in capsys.readouterr().err


# --- status ---


def session(state: int, **fields: Any) -> pb.Session:
    return pb.Session(
        id="abcdefgh-1",
        state=state,
        created_at_ms=1_000,
        expires_at_ms=86_401_000,
        tracks=[pb.Track(name="video", committed_size=2048, finished=True)],
        **fields,
    )


def job(*conditions: tuple[str, str], active: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "labels": {"tapedeck.io/compile-request": "2"}},
        "status": {
            "active": active,
            "conditions": [
                {"type": kind, "status": "True", "reason": reason, "message": f"{reason}!"}
                for kind, reason in conditions
            ],
        },
    }


def test_an_absurd_stored_expiry_is_clamped_not_a_crash() -> None:
    """A session stored before TTLs were bounded: every status update failed on it."""
    huge = session(pb.SESSION_STATE_RECORDED)
    huge.expires_at_ms = 1_000 + 100_000_000 * 86_400_000
    assert st.build_status(huge, {}, T0)["expiresAt"] == "9999-12-31T23:59:59Z"
    huge.expires_at_ms = 2**63 - 1
    assert st.build_status(huge, {}, T0)["expiresAt"] == "9999-12-31T23:59:59Z"


def test_job_view_reads_job_conditions() -> None:
    assert st.job_view(job()).phase == st.JOB_PENDING
    assert st.job_view(job(active=1)).phase == st.JOB_RUNNING
    done = st.job_view(job(("Complete", "Done")))
    assert done.phase == st.JOB_SUCCEEDED and done.finished and done.request == 2
    failed = st.job_view(job(("FailureTarget", "BackoffLimitExceeded")))
    assert (failed.phase, failed.reason) == (st.JOB_FAILED, "BackoffLimitExceeded")
    assert "BackoffLimitExceeded" in st.give_up_message(failed)


def test_after_job_is_the_workers_rule_with_the_jobs_budget_spent() -> None:
    assert st.after_job(State.READY) == AfterExit.DONE
    assert st.after_job(State.FAILED) == AfterExit.DONE
    assert st.after_job(State.COMPILING) == AfterExit.GIVE_UP
    assert st.after_job(State.QUEUED) == AfterExit.GIVE_UP


def test_ready_status() -> None:
    ready = session(
        pb.SESSION_STATE_READY,
        progress=1.0,
        output=pb.Output(size=3 * 1024 * 1024, duration_seconds=65.5, video_codec="h264"),
    )
    status = st.build_status(ready, {}, T0, generation=4, compile_request=0)
    assert status["phase"] == "Ready" and status["size"] == "3.0 MiB"
    assert status["duration"] == "1m05s" and status["expiresAt"] == "1970-01-02T00:00:01Z"
    assert status["output"]["size"] == 3 * 1024 * 1024
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [
        ("Recorded", "True"),
        ("Compiled", "True"),
        ("Ready", "True"),
    ]
    assert all(c["observedGeneration"] == 4 for c in status["conditions"])


def test_conditions_keep_their_transition_time_until_they_change() -> None:
    compiling = session(pb.SESSION_STATE_COMPILING, progress=0.5)
    first = st.build_status(compiling, {}, T0)
    later = st.build_status(compiling, first, T0 + timedelta(minutes=1))
    assert later["conditions"] == first["conditions"]
    failed = session(pb.SESSION_STATE_FAILED, error="x" * 5000)
    after = st.build_status(failed, later, T0 + timedelta(minutes=2))
    times = {c["type"]: c["lastTransitionTime"] for c in after["conditions"]}
    assert times["Recorded"] == "2026-11-28T12:00:00Z"
    assert times["Compiled"] == "2026-11-28T12:02:00Z"
    assert len(after["message"]) == st.MESSAGE_LIMIT and after["message"].startswith("…")


def test_status_patch_sends_only_changes_and_is_stable() -> None:
    recorded = session(pb.SESSION_STATE_RECORDED)
    first = st.build_status(recorded, {}, T0, job={"name": "j", "reason": None})
    stored = st._stored(first)  # what the API server keeps of it
    again = st.build_status(
        recorded, stored, T0 + timedelta(seconds=5), job={"name": "j", "reason": None}
    )
    assert st.status_patch(stored, again) == {}
    queued = st.build_status(session(pb.SESSION_STATE_QUEUED), stored, T0)
    patch = st.status_patch(stored, queued)
    assert patch["phase"] == "Queued" and "tracks" not in patch


def test_events_on_phase_changes() -> None:
    assert st.events({"phase": "Ready"}, {"phase": "Ready"}) == []
    # The session's own transitions are storage's events (one source: session_event).
    assert st.events({"phase": "Compiling"}, {"phase": "Failed", "message": "boom"}) == []
    assert st.events({"phase": "Compiling"}, {"phase": "Ready"}) == []
    (queued,) = st.events({}, {"phase": "Queued", "job": {"name": "j-0"}})
    assert not queued.warning and queued.message == "compile queued (Job j-0)"
    (missing,) = st.events({"phase": "Ready"}, {"phase": st.MISSING})
    assert missing.warning


def test_storage_events_become_kubernetes_events_named_once() -> None:
    resource = {
        "apiVersion": "tapedeck.io/v1",
        "kind": "RecordingSession",
        "metadata": {"name": "rs-1", "namespace": "ns", "uid": "u-1"},
    }
    at = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)
    failed = st.session_event("msg_ab12", "compile.failed", {"message": "boom"}, resource, at)
    assert failed["metadata"] == {"name": "rs-1.msg-ab12", "namespace": "ns"}
    assert failed["involvedObject"]["uid"] == "u-1"
    assert (failed["type"], failed["reason"]) == ("Warning", "CompileFailed")
    assert "boom" in failed["message"] and failed["firstTimestamp"] == "2026-12-04T22:00:00Z"
    ready = st.session_event(
        "msg_cd34",
        "compile.ready",
        {"size": 1000, "durationSeconds": 2.0, "videoCodec": "h264", "audioCodec": "aac"},
        resource,
        at,
    )
    assert (ready["type"], ready["reason"]) == ("Normal", "Compiled")
    assert ready["message"] == "compiled: 1000 bytes, 2.0 s, h264/aac"


# --- compile requests and spec ---


@pytest.mark.parametrize(
    ("spec", "status", "pending"),
    [
        ({}, {}, None),
        ({"compile": True}, {}, 0),
        ({"compile": True}, {"compileRequest": 0}, None),
        ({"compile": True, "compileRequest": 1}, {"compileRequest": 0}, 1),
        ({"compile": False, "compileRequest": 5}, {}, None),
    ],
)
def test_pending_compile_request(
    spec: dict[str, Any], status: dict[str, Any], pending: int | None
) -> None:
    assert pending_compile_request(parse_spec(spec), status) == pending


def test_compile_patch_asks_once_per_request() -> None:
    assert compile_patch({"spec": {}}) == {"spec": {"compile": True}}
    assert compile_patch({"spec": {"compile": True}}) is None  # pending, not acted on yet
    handled = {"spec": {"compile": True, "compileRequest": 2}, "status": {"compileRequest": 2}}
    assert compile_patch(handled) == {"spec": {"compileRequest": 3}}


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"sessionId": "UPPER-case1"}, "spec.sessionId"),
        ({"output": {"crf": 52}}, "spec.output.crf"),
        ({"output": {"preset": "instant"}}, "spec.output.preset"),
        ({"ttl": "soon"}, "spec.ttl"),
        ({"ttl": "0s"}, "spec.ttl"),
        ({"ttl": "100000000d"}, "spec.ttl"),
        ({"ttl": "1000000000d"}, "spec.ttl"),
        ({"ttl": "3651d"}, "spec.ttl"),
        ({"compileRequest": -1}, "spec.compileRequest"),
    ],
)
def test_invalid_specs(spec: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(where)):
        parse_spec(spec)


def test_errors_are_classified() -> None:
    with pytest.raises(kopf.TemporaryError), classified("x"):
        raise StorageError(grpc.StatusCode.UNAVAILABLE, "down")
    with pytest.raises(kopf.PermanentError), classified("x"):
        raise StorageError(grpc.StatusCode.INVALID_ARGUMENT, "bad id")
    with pytest.raises(kopf.TemporaryError), classified("x"):
        raise KubeError(0, "connection refused")
    with pytest.raises(kopf.TemporaryError), classified("x"):
        raise KubeError(403, "forbidden")
    with pytest.raises(kopf.PermanentError), classified("x"):
        raise KubeError(422, "invalid Job")


# --- the CRD, the example and the docs ---


def test_crd_matches_the_code() -> None:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["metadata"]["name"] == "recordingsessions.tapedeck.io"
    assert crd["spec"]["names"]["shortNames"] == ["recsession"]
    assert crd["spec"]["names"]["categories"] == ["tapedeck"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Phase", "Size", "Duration", "Expires", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["sessionId"]["pattern"] == SESSION_ID_PATTERN
    crf = spec["properties"]["output"]["properties"]["crf"]
    assert (crf["minimum"], crf["maximum"]) == (0, 51)
    ttl = re.compile(spec["properties"]["ttl"]["pattern"])
    for fine in ("90s", "1h30m", "7d", "3650d", "87600h", "315360000s", "1.5h"):
        assert ttl.fullmatch(fine), fine
    for absurd in ("100000000d", "10000d", "9999999999s", "forever"):
        assert not ttl.fullmatch(absurd), absurd
    rules = [v["rule"] for v in spec["x-kubernetes-validations"]]
    assert any("oldSelf.sessionId" in r for r in rules)
    phases = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(phases["phase"]["enum"]) >= {*st.PHASES.values(), st.INVALID, st.MISSING}

    def structural(node: dict[str, Any], path: str) -> None:
        assert "type" in node or "x-kubernetes-preserve-unknown-fields" in node, path
        for name, child in (node.get("properties") or {}).items():
            structural(child, f"{path}.{name}")
        if "items" in node:
            structural(node["items"], f"{path}[]")

    structural(version["schema"]["openAPIV3Schema"], "")


def test_example_is_valid_and_its_job_is_in_the_docs() -> None:
    example = yaml.safe_load((ROOT / "examples/recordingsession.yaml").read_text())
    parse_spec(example["spec"])
    printed = subprocess.run(
        [sys.executable, "-m", "tapedeck_operator.jobs", "examples/recordingsession.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert yaml.safe_load(printed) == example_job(example)
    docs = (ROOT / "docs/kubernetes.md").read_text()
    assert printed in docs, "docs/kubernetes.md: paste `python -m tapedeck_operator.jobs ...`"


def test_a_job_gets_every_storage_replica() -> None:
    """Several replicas: the compile pod gets every address and finds the session's owner;
    with one, the job is what it was."""
    output = OutputOptions()
    single = Settings(storage_addr="storage:50051")
    env = build_job(OWNER, "abcdefgh-1", 0, output, single)["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    assert "TAPEDECK_STORAGE_ADDRS" not in {e["name"] for e in env}
    several = Settings(storage_addrs="s-0.h:50051,s-1.h:50051")  # type: ignore[arg-type]
    env = build_job(OWNER, "abcdefgh-1", 0, output, several)["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    assert {"name": "TAPEDECK_STORAGE_ADDRS", "value": "s-0.h:50051,s-1.h:50051"} in env


def test_a_job_and_its_pods_carry_the_release() -> None:
    """The chart's NetworkPolicies select compile pods by their release (TAPEDECK_INSTANCE,
    `app.kubernetes.io/instance`): two releases in one namespace keep to their own."""
    output = OutputOptions()
    settings = Settings(instance="rel-a")
    compile_job = build_job(OWNER, "abcdefgh-1", 0, output, settings)
    follower = build_follower_job(OWNER, "abcdefgh-1", output, settings)
    for job in (compile_job, follower):  # a follower reaches storage like a compile pod
        for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
            assert labels["app.kubernetes.io/instance"] == "rel-a"
            assert labels["app.kubernetes.io/component"] == "compile"
    unset = build_job(OWNER, "abcdefgh-1", 0, output, Settings(instance=""))
    assert "app.kubernetes.io/instance" not in unset["spec"]["template"]["metadata"]["labels"]
    for bad in ("two words", "-leading", "x" * 64):
        with pytest.raises(ValueError, match="instance"):
            Settings(instance=bad)
