"""The follower Job and who compiles a request (operator/tapedeck_operator/followers.py):
pure, no servers."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from tapedeck.cli import main as cli_main
from tapedeck.compiler.plan import OutputOptions
from tapedeck.sessions import State
from tapedeck.settings import Settings
from tapedeck_operator import followers as fl
from tapedeck_operator.jobs import (
    FOLLOW_SELECTOR,
    MAX_NAME,
    build_follower_job,
    build_job,
    follow_args,
    follower_fits,
    follower_name,
    is_follower,
    job_name,
)
from tapedeck_operator.status import follower_running

OWNER = {"metadata": {"name": "talk", "namespace": "tapedeck", "uid": "u-1"}}
SID = "0c136489-c0ad-4ddb-856c-adf166df948c"


def test_follower_names_are_deterministic_valid_distinct_and_not_compile_names() -> None:
    assert follower_name(SID) == f"tapedeck-{SID}-follow"
    long_a, long_b = "a" * 62 + "1", "a" * 62 + "2"
    assert follower_name(long_a) != follower_name(long_b)
    assert follower_name(long_a) == follower_name(long_a)
    for name in (follower_name(long_a), follower_name("x" * 63), follower_name(SID)):
        assert len(name) <= MAX_NAME
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
        assert name.endswith("-follow")
    assert follower_name(SID) not in {job_name(SID, n) for n in range(3)}


def test_follower_job_manifest() -> None:
    settings = Settings.model_construct(
        storage_addr="storage:50051",
        storage_addrs=["s-0:50051", "s-1:50051"],
        compile_image="img:1",
        compile_max_attempts=4,
    )
    output = OutputOptions(crf=30, max_height=720)
    job = build_follower_job(OWNER, SID, output, settings)
    meta = job["metadata"]
    assert meta["name"] == follower_name(SID) and meta["namespace"] == "tapedeck"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "tapedeck.io/v1alpha1",
            "kind": "RecordingSession",
            "name": "talk",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["annotations"] == {"tapedeck.io/session-id": SID}
    # A compile pod to the chart's NetworkPolicies (storage only), a follower to the operator.
    assert meta["labels"] == {
        "app.kubernetes.io/name": "tapedeck",
        "app.kubernetes.io/component": "compile",
        "app.kubernetes.io/managed-by": "tapedeck-operator",
        "tapedeck.io/follower": "true",
    }
    assert "tapedeck.io/compile-request" not in meta["labels"]
    assert is_follower(job) and not is_follower(build_job(OWNER, SID, 0, output, settings))
    assert (
        FOLLOW_SELECTOR
        == "tapedeck.io/follower=true,app.kubernetes.io/managed-by=tapedeck-operator"
    )
    spec = job["spec"]
    assert spec["backoffLimit"] == 0  # a failed follower is replaced by the one-shot compile
    assert "podFailurePolicy" not in spec
    assert spec["activeDeadlineSeconds"] == 6 * 3600 + 30 * 60
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert spec["template"]["metadata"]["labels"] == meta["labels"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["name"] == "follow" and container["image"] == "img:1"
    assert container["command"] == ["tapedeck"]
    assert container["args"] == [
        "follow", SID, "--video-codec", "auto", "--crf", "30",
        "--preset", "veryfast", "--max-height", "720",
    ]  # fmt: skip
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "320Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TAPEDECK_STORAGE_ADDR"] == "storage:50051"
    assert env["TAPEDECK_STORAGE_ADDRS"] == "s-0:50051,s-1:50051"
    assert env["TMPDIR"] == "/tmp"
    longer = Settings.model_construct(follower_timeout=timedelta(hours=12))
    assert build_follower_job(OWNER, SID, output, longer)["spec"]["activeDeadlineSeconds"] == (
        12 * 3600
    )


def test_the_follow_command_takes_the_compile_flags() -> None:
    calls: list[tuple[str, OutputOptions]] = []

    async def fake_follow(session_id: str, settings: Settings, options: OutputOptions) -> int:
        calls.append((session_id, options))
        return 0

    import tapedeck.compiler.follow as follow_module

    saved = follow_module.follow
    follow_module.follow = fake_follow  # type: ignore[assignment]
    try:
        options = OutputOptions(crf=30, hls=False)
        with pytest.raises(SystemExit) as done:
            cli_main(follow_args(SID, options))
        assert done.value.code == 0
        with pytest.raises(SystemExit) as refused:
            cli_main(["follow", "../../etc"])
        assert refused.value.code == 2
    finally:
        follow_module.follow = saved
    assert calls == [(SID, OutputOptions(crf=30, hls=False))]


def follower(*, ready: int = 1, done: str = "", output: OutputOptions | None = None) -> Any:
    job = build_follower_job(OWNER, SID, output or OutputOptions(), Settings.model_construct())
    status: dict[str, Any] = {"active": 1, "ready": ready, "startTime": "2026-12-05T04:00:00Z"}
    if done:
        status = {"failed": 1, "conditions": [{"type": done, "status": "True", "reason": "X"}]}
    return job | {"status": status}


def test_who_compiles_a_request() -> None:
    default = OutputOptions()
    assert fl.at_compile_request(None, SID, default) == fl.AtRequest.ONE_SHOT
    assert fl.at_compile_request(follower(), SID, default) == fl.AtRequest.FOLLOWER
    for ended in ("Failed", "Complete"):
        assert fl.at_compile_request(follower(done=ended), SID, default) == fl.AtRequest.ONE_SHOT
    # Still pending: it could start after a compile Job and compile too.
    assert fl.at_compile_request(follower(ready=0), SID, default) == fl.AtRequest.STOP_FIRST
    # Made before the spec's output changed: its MP4 would not be the one asked for.
    other = follower(output=OutputOptions(crf=30))
    assert fl.at_compile_request(other, SID, default) == fl.AtRequest.STOP_FIRST
    assert fl.at_compile_request(other, SID, OutputOptions(crf=30)) == fl.AtRequest.FOLLOWER
    assert follower_fits(other, SID, OutputOptions(crf=30))
    assert not follower_running(follower(ready=0)) and follower_running(follower())


def test_when_to_follow_and_when_the_one_shot_takes_over() -> None:
    assert fl.should_follow(State.RECORDING, 0, 20)
    assert fl.should_follow(State.RECORDING, 19, 20)
    assert not fl.should_follow(State.RECORDING, 20, 20)  # the cap
    assert not fl.should_follow(State.RECORDING, 0, 0)  # disabled
    for state in State:
        if state != State.RECORDING:
            assert not fl.should_follow(state, 0, 20)
    assert fl.active_followers([follower(), follower(ready=0), follower(done="Failed")]) == 2
    assert {s for s in State if fl.one_shot_after_follower(s)} == {
        State.QUEUED,
        State.COMPILING,
    }


def test_the_charts_follower_values_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPEDECK_OPERATOR_FOLLOWERS_MAX", "0")
    monkeypatch.setenv("TAPEDECK_FOLLOWER_TIMEOUT", "6h30m")
    monkeypatch.setenv(
        "TAPEDECK_FOLLOWER_RESOURCES", '{"requests": {"cpu": "100m"}, "limits": {"cpu": "2"}}'
    )
    settings = Settings()
    assert settings.operator_followers_max == 0
    assert settings.follower_timeout == timedelta(hours=6, minutes=30)
    assert settings.follower_resources == {"requests": {"cpu": "100m"}, "limits": {"cpu": "2"}}
    monkeypatch.setenv("TAPEDECK_OPERATOR_FOLLOWERS_MAX", "-1")
    with pytest.raises(ValueError, match="operator_followers_max"):
        Settings()
