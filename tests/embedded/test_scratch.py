"""Scratch copies of compiles and followers go away whatever ends the process.

Followers and compiles are SIGKILLed (the worker kills them at a timeout or a stop, `up`
kills children with their parent), so they cannot clean up after themselves: the embedded
worker removes a run's directory once its process has exited, and at start removes what runs
of processes that are gone left behind. Real processes throughout: storage, the web process
with its worker, the compile and follower children, and FFmpeg. The scratch directory is
found from what the child really uses (its open files, FFmpeg's arguments), not from where
it is supposed to be.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.asyncio.client import ClientConnection

from harness import Stack, make_stack, wait_for
from media import ffmpeg_binary
from tapedeck.ingest.uploader import upload_track

T0 = 1_760_000_000_000.0
TRACKS = [("video", "video/webm;codecs=vp8"), ("audio", "audio/webm;codecs=opus")]


def start_stack(tmp: Path, **settings: str) -> Stack:
    """A stack whose temporary directory is the test's own, so nothing is left unseen."""
    stack = make_stack(tmp, **settings)
    (tmp / "tmp").mkdir()
    stack.env["TMPDIR"] = str(tmp / "tmp")
    return stack.start()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """An FFmpeg that waits for a file before it runs: a compile stays mid-run until told."""
    opened = tmp_path / "gate-open"
    script = tmp_path / "ffmpeg-gated"
    script.write_text(
        f'#!/bin/sh\nwhile [ ! -e "{opened}" ]; do sleep 0.05; done\n'
        f'exec "{ffmpeg_binary()}" "$@"\n'
    )
    script.chmod(0o755)
    yield script
    opened.touch()  # whatever is still waiting finishes (or was killed with its parent)


def children(stack: Stack, *marker: str) -> list[psutil.Process]:
    """The web process's descendants whose command line ends with `marker`."""
    assert stack.web.process is not None
    found = []
    for proc in psutil.Process(stack.web.process.pid).children(recursive=True):
        try:
            if tuple(proc.cmdline()[-len(marker) :]) == marker:
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def one(procs: list[psutil.Process]) -> psutil.Process:
    assert len(procs) == 1, procs
    return procs[0]


def scratch_of_ffmpeg(compile_process: psutil.Process) -> Path | None:
    """The directory of the tracks an FFmpeg under `compile_process` reads (`-i …webm`)."""
    for proc in compile_process.children(recursive=True):
        try:
            argv = proc.cmdline()
        except psutil.NoSuchProcess:
            continue
        for arg in argv:
            if arg.endswith(".webm"):
                return Path(arg).parent
    return None


def scratch_of_follower(follower: psutil.Process) -> Path | None:
    """The directory of the track copies a follower holds open."""
    for f in follower.open_files():
        if f.path.endswith(".webm"):
            return Path(f.path).parent
    return None


def upload(
    stack: Stack, session: dict[str, str], media: dict[str, Path], pause: threading.Event | None
) -> threading.Thread:
    """Uploads the tracks in a thread, in 12 frames each; with `pause`, the second half
    waits for it to be set (the recording goes on as long as the test needs)."""

    def pausing(size: int) -> Callable[[ClientConnection, int], Awaitable[None]]:
        async def after_frame(_ws: ClientConnection, offset: int) -> None:
            if pause is not None and offset >= size // 2:
                await asyncio.to_thread(pause.wait)

        return after_frame

    async def all_tracks() -> None:
        uploads = []
        for name, mime in TRACKS:
            data = media[name].read_bytes()
            uploads.append(
                upload_track(
                    stack.ws_base,
                    name,
                    data,
                    session_id=session["id"],
                    token=session["uploadToken"],
                    mime_type=mime,
                    started_at=T0,
                    frame_bytes=len(data) // 12 + 1,
                    after_frame=pausing(len(data)),
                )
            )
        await asyncio.gather(*uploads)

    thread = threading.Thread(target=asyncio.run, args=(all_tracks(),), daemon=True)
    thread.start()
    return thread


def wait_state(api: httpx.Client, session_id: str, state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (detail := api.get(f"/api/sessions/{session_id}").json())["state"] != state:
        if state != "failed":
            assert detail["state"] != "failed", detail["error"]
        assert time.monotonic() < deadline, detail
        time.sleep(0.05)


def run_dirs(tmp: Path) -> list[Path]:
    """Every directory below the stack's temporary directory that holds files."""
    return sorted(p.parent for p in (tmp / "tmp").rglob("*") if p.is_file())


def test_a_follower_killed_mid_recording_leaves_no_scratch(
    tmp_path: Path, vp8_webm: Path, opus_webm: Path
) -> None:
    stack = start_stack(tmp_path)
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            session = api.post("/api/sessions").json()
            resume = threading.Event()
            uploading = upload(stack, session, {"video": vp8_webm, "audio": opus_webm}, resume)
            try:
                wait_for(
                    lambda: children(stack, "tapedeck.compiler.follow", session["id"]),
                    60,
                    "a follower",
                )
                follower = one(children(stack, "tapedeck.compiler.follow", session["id"]))
                wait_for(lambda: scratch_of_follower(follower), 60, "the follower's copies")
                scratch = scratch_of_follower(follower)
                assert scratch is not None and any(scratch.iterdir())
                follower.send_signal(signal.SIGKILL)
                follower.wait(10)
                wait_for(lambda: not scratch.exists(), 20, f"{scratch} to be removed")
            finally:
                resume.set()
                uploading.join(60)
            assert api.post(f"/api/compile-video/{session['id']}").status_code == 202
            wait_state(api, session["id"], "ready")
        wait_for(lambda: not run_dirs(tmp_path), 20, "no scratch left")
    finally:
        stack.stop()


def test_a_compile_killed_mid_run_leaves_no_scratch_and_the_retry_none_either(
    tmp_path: Path, vp8_webm: Path, opus_webm: Path, gate: Path
) -> None:
    stack = start_stack(tmp_path, speculative_compiles="0", ffmpeg=str(gate))
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            session = api.post("/api/sessions").json()
            upload(stack, session, {"video": vp8_webm, "audio": opus_webm}, None).join(60)
            assert api.post(f"/api/compile-video/{session['id']}").status_code == 202
            marker = ("tapedeck", "compile", session["id"])
            wait_for(lambda: children(stack, *marker), 60, "the compile")
            compile_process = one(children(stack, *marker))
            wait_for(lambda: scratch_of_ffmpeg(compile_process), 60, "FFmpeg to start")
            scratch = scratch_of_ffmpeg(compile_process)
            assert scratch is not None and (scratch / "video.webm").exists()
            compile_process.send_signal(signal.SIGKILL)
            compile_process.wait(10)
            wait_for(lambda: not scratch.exists(), 20, f"{scratch} to be removed")
            (gate.parent / "gate-open").touch()
            wait_state(api, session["id"], "ready")  # the worker's retry
        wait_for(lambda: not run_dirs(tmp_path), 20, "no scratch left")
    finally:
        stack.stop()


def test_a_compile_killed_with_the_web_process_leaves_no_scratch_after_the_restart(
    tmp_path: Path, vp8_webm: Path, opus_webm: Path, gate: Path
) -> None:
    """`up` restarts a web process that died; its compile died with it (`--pdeathsig`)."""
    stack = start_stack(tmp_path, speculative_compiles="0", ffmpeg=str(gate))
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            session = api.post("/api/sessions").json()
            upload(stack, session, {"video": vp8_webm, "audio": opus_webm}, None).join(60)
            assert api.post(f"/api/compile-video/{session['id']}").status_code == 202
            marker = ("tapedeck", "compile", session["id"])
            wait_for(lambda: children(stack, *marker), 60, "the compile")
            compile_process = one(children(stack, *marker))
            wait_for(lambda: scratch_of_ffmpeg(compile_process), 60, "FFmpeg to start")
            scratch = scratch_of_ffmpeg(compile_process)
            assert scratch is not None
            assert stack.web.process is not None
            os.kill(stack.web.process.pid, signal.SIGKILL)  # the web process only, not its group
            stack.web.process.wait(10)
            compile_process.wait(10)  # killed with its parent
            assert scratch.exists()  # nobody was left to remove it
            stack.start_web()
            wait_for(lambda: not scratch.exists(), 60, f"{scratch} to be removed")
            # The worker cleans up in the app's startup, before uvicorn listens.
            wait_for(lambda: api.get("/readyz").status_code == 200, 60, "web /readyz")
            (gate.parent / "gate-open").touch()
            wait_state(api, session["id"], "ready")  # recovered by the new worker
        wait_for(lambda: not run_dirs(tmp_path), 20, "no scratch left")
    finally:
        stack.stop()


def test_a_compile_killed_at_its_timeout_leaves_no_scratch(
    tmp_path: Path, vp8_webm: Path, opus_webm: Path, gate: Path
) -> None:
    stack = start_stack(
        tmp_path,
        speculative_compiles="0",
        ffmpeg=str(gate),
        compile_timeout="20s",
        compile_max_attempts="1",
    )
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            session = api.post("/api/sessions").json()
            upload(stack, session, {"video": vp8_webm, "audio": opus_webm}, None).join(60)
            assert api.post(f"/api/compile-video/{session['id']}").status_code == 202
            marker = ("tapedeck", "compile", session["id"])
            wait_for(lambda: children(stack, *marker), 60, "the compile")
            compile_process = one(children(stack, *marker))
            wait_for(lambda: scratch_of_ffmpeg(compile_process), 60, "FFmpeg to start")
            scratch = scratch_of_ffmpeg(compile_process)
            assert scratch is not None
            wait_state(api, session["id"], "failed")  # killed at the timeout, not retried
            detail = api.get(f"/api/sessions/{session['id']}").json()
            assert detail["error"] == (
                "compile did not finish within 20 s (TAPEDECK_COMPILE_TIMEOUT)"
            )
            wait_for(lambda: not scratch.exists(), 20, f"{scratch} to be removed")
        assert not run_dirs(tmp_path)
    finally:
        stack.stop()


def test_the_worker_removes_what_dead_runs_left_at_start(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    root.mkdir(mode=0o700)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = root / f"deleted-session-1.{dead.pid}"
    left.mkdir()
    (left / "video.webm").write_bytes(b"a deleted session's media")
    code = (
        "import sys, time; from pathlib import Path; "
        "from tapedeck.compiler.scratch import make_run_dir; "
        "run = make_run_dir(Path(sys.argv[1]), 'running-session-2'); "
        "(run / 'audio.webm').write_bytes(b'in use'); print(run, flush=True); time.sleep(300)"
    )
    alive = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE)
    assert alive.stdout is not None
    running = Path(alive.stdout.readline().decode().strip())
    # Not runs: the name says whose they are not (an id, a dot, a process id).
    foreign = [root / "notes.txt", root / f"Not-An-Id.{dead.pid}", root / "lost+found"]
    foreign[0].write_text("kept")
    foreign[1].mkdir()
    foreign[2].mkdir()
    reused = root / f"other-session-3.{os.getpid()}"  # a live pid, but no run holds its lock
    reused.mkdir()
    try:
        stack = start_stack(tmp_path, scratch_dir=str(root))
        try:
            wait_for(lambda: not left.exists(), 20, f"{left} to be removed")
            wait_for(lambda: not reused.exists(), 20, f"{reused} to be removed")
            assert (running / "audio.webm").read_bytes() == b"in use"
            assert all(p.exists() for p in foreign)
        finally:
            stack.stop()
    finally:
        alive.kill()
        alive.wait()
