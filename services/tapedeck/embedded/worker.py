"""Local compile worker: a bounded pool running `tapedeck compile ID`, the same command a
Kubernetes compile Job runs, as a child process (so a crash or a kill stays contained).

A compile child marks its session `ready` as soon as the MP4 is published and then makes the
extras (poster, storyboard, HLS): the worker waits for the child's exit as before, so it is
neither killed nor retried for that; only the compile timeout bounds it (a child killed then
leaves the session `ready` without the extras it had not made).

Children are killed (at the compile timeout, at a stop, with their parent), so they cannot be
trusted to remove their scratch copies: the worker removes each child's run directory once
the child has exited, and at start what children of earlier workers left (compiler/scratch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable

from tapedeck import metrics
from tapedeck._proto import storage_pb2 as pb
from tapedeck.compiler import scratch
from tapedeck.lifecycle import AfterExit, after_compile_exit
from tapedeck.processes import child_command
from tapedeck.sessions import State, validate_session_id
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient, StorageError
from tapedeck.storage.records import PB_TO_STATE
from tapedeck.storage.session_client import COMPILE_PENDING, SessionClient

log = logging.getLogger(__name__)


FOLLOW_SCAN = 1.0  # seconds between looks for recordings to compile while they record


def compile_command(session_id: str) -> list[str]:
    return [sys.executable, "-m", "tapedeck", "compile", session_id]


def follow_command(session_id: str) -> list[str]:
    """Compile while recording, then as `compile_command` once asked (compiler/follow.py)."""
    return [sys.executable, "-m", "tapedeck.compiler.follow", session_id]


class LocalCompileWorker:
    def __init__(self, storage: StorageClient, settings: Settings) -> None:
        self.storage = storage
        self.sessions = SessionClient(storage)
        self.settings = settings
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.pending: set[str] = set()
        self.tasks: list[asyncio.Task[None]] = []
        self.followers: dict[str, asyncio.subprocess.Process] = {}
        self._followed: set[str] = set()
        self.scratch = settings.scratch_root()
        self._reapers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        try:
            await asyncio.to_thread(scratch.ensure_root, self.scratch)
            removed = await asyncio.to_thread(scratch.sweep, self.scratch)
        except OSError as exc:
            log.warning("scratch directory %s: %s", self.scratch, exc)
        else:
            if removed:
                log.info("removed scratch left by %d runs that are gone", len(removed))
        self.tasks = [
            asyncio.create_task(self._work()) for _ in range(self.settings.compile_concurrency)
        ]
        self.tasks.append(asyncio.create_task(self._recover()))
        if self.settings.speculative_compiles > 0:
            self.tasks.append(asyncio.create_task(self._follow_recordings()))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for process in self.followers.values():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        for process in self.followers.values():
            await process.wait()
        self.followers.clear()
        await asyncio.gather(*self._reapers)  # every child is gone: its scratch goes too

    async def _follow_recordings(self) -> None:
        """Starts a follower (compile while recording) for new recordings, a few at once."""
        while True:
            await asyncio.sleep(FOLLOW_SCAN)
            for session_id, process in list(self.followers.items()):
                if process.returncode is not None and session_id not in self.pending:
                    del self.followers[session_id]
            room = self.settings.speculative_compiles - len(self.followers)
            if room <= 0:
                continue
            try:
                page = await self.storage.list_sessions(100, "", [pb.SESSION_STATE_RECORDING])
            except StorageError:
                continue
            recording = {s.id for s in page.sessions}
            self._followed &= recording  # forget sessions that stopped recording
            for session in reversed(page.sessions):  # oldest first
                if room <= 0:
                    break
                if session.id in self._followed or not any(
                    t.committed_size for t in session.tracks
                ):
                    continue
                self._followed.add(session.id)
                self.followers[session.id] = await self._spawn(follow_command, session.id)
                room -= 1

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TAPEDECK_STORAGE_ADDR": self.storage.addr,
            "TAPEDECK_SCRATCH_DIR": str(self.scratch),  # the root this worker cleans
        }

    async def _spawn(
        self, command: Callable[[str], list[str]], session_id: str
    ) -> asyncio.subprocess.Process:
        """Start a compile or follower child; its run directory is removed once it exits."""
        validate_session_id(session_id)
        process = await asyncio.create_subprocess_exec(
            *child_command(command(session_id)), env=self._env()
        )
        reaper = asyncio.create_task(self._reap(session_id, process))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        return process

    async def _reap(self, session_id: str, process: asyncio.subprocess.Process) -> None:
        """Whatever ended the child (its own exit, a kill, a crash), its scratch goes with it.
        The child's pid is that of the command we started: `setpriv` and `nice` exec."""
        await process.wait()
        await asyncio.to_thread(scratch.remove_run, self.scratch, session_id, process.pid)

    async def submit(self, session_id: str) -> None:
        if session_id not in self.pending:
            self.pending.add(session_id)
            self.queue.put_nowait(session_id)
            metrics.compile_queue_depth.set(self.queue.qsize())

    async def _recover(self) -> None:
        """Sessions left queued or compiling by a previous process get their compile back."""
        while True:
            try:
                async for session in self.sessions.all(COMPILE_PENDING):
                    await self.submit(session.id)  # a second walk submits nothing twice
                return
            except StorageError as err:
                log.warning("compile recovery: storage unavailable (%s); retrying", err.message)
                await asyncio.sleep(2)

    async def _work(self) -> None:
        while True:
            session_id = await self.queue.get()
            metrics.compile_queue_depth.set(self.queue.qsize())
            try:
                await self._compile(session_id)
            except Exception:
                log.exception("compile worker: %s", session_id)
            finally:
                self.pending.discard(session_id)

    async def _compile(self, session_id: str) -> None:
        while True:
            started = time.perf_counter()
            metrics.compile_running.inc()
            try:
                code = await self._run(session_id)
            finally:
                metrics.compile_running.dec()
            if code is None:  # killed at the timeout: another try would only time out again
                timeout = f"{self.settings.compile_timeout.total_seconds():g} s"
                if await self._was_ready(session_id):
                    # `ready` comes before the extras (docs/decisions.md, "Ready first"):
                    # the MP4 is there, only some extras are missing.
                    log.warning(
                        "compile %s was ready but its extras did not finish within %s; killed",
                        session_id,
                        timeout,
                    )
                    _count(State.READY.value, started)
                    return
                log.warning("compile %s did not finish within %s; killed", session_id, timeout)
                _count("failed", started)
                await self._give_up(
                    session_id,
                    f"compile did not finish within {timeout} (TAPEDECK_COMPILE_TIMEOUT)",
                )
                return
            try:
                session = await self.storage.get_session(session_id)
            except StorageError as err:
                log.warning("compile %s: cannot read back its state: %s", session_id, err.message)
                return
            state = PB_TO_STATE[session.state]
            decision = after_compile_exit(
                state, session.compile_attempts, self.settings.compile_max_attempts
            )
            _count(state.value if decision == AfterExit.DONE else decision.value, started)
            if decision == AfterExit.DONE:
                return
            if decision == AfterExit.GIVE_UP:
                await self._give_up(
                    session_id,
                    f"compile did not finish after {session.compile_attempts} attempts "
                    f"(last exit code {code})",
                )
                return
            delay = min(30.0, 0.5 * 2**session.compile_attempts)
            log.warning(
                "compile %s exited %s while %s; retrying in %.1f s",
                session_id,
                code,
                state.value,
                delay,
            )
            await asyncio.sleep(delay)

    async def _was_ready(self, session_id: str) -> bool:
        try:
            session = await self.storage.get_session(session_id)
        except StorageError:
            return False
        return PB_TO_STATE[session.state] == State.READY

    async def _give_up(self, session_id: str, error: str) -> None:
        """The session is `failed` with `error`, unless it settled meanwhile."""
        if await self.sessions.mark_failed(session_id, error) is None:
            log.info("compile %s: the session settled meanwhile; left as it is", session_id)

    async def _run(self, session_id: str) -> int | None:
        """The child's exit status; None when it was killed at the compile timeout."""
        process = self.followers.pop(session_id, None)
        if process is None or process.returncode is not None:
            # No follower (or it already gave up): the compile a Kubernetes Job would run.
            process = await self._spawn(compile_command, session_id)
        try:
            return await asyncio.wait_for(
                process.wait(), self.settings.compile_timeout.total_seconds()
            )
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise


def _count(outcome: str, started: float) -> None:
    metrics.compile_outcomes.labels(outcome).inc()
    metrics.compile_duration.labels(outcome).observe(time.perf_counter() - started)
