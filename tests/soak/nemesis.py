"""The nemesis run (issue 14): many protocol clients record sessions for minutes while faults
land every few seconds; a checker then compares what every client was told with what is stored.

    python tests/soak/nemesis.py --seed N --minutes 10 --clients 20      (make soak)

Real processes: storage and the web process (api + ingest + embedded compile worker +
sweeper) run as `tapedeck serve storage` / `tapedeck serve web`; storage's data directory is
the power-cut file system (tests/powercut/fs.py), which also plays the full disk. Clients
reach the web port through a TCP proxy of ours (proxy.py) that drops and stalls sockets.

Faults (schedule.py, from the seed): SIGKILL storage, SIGKILL the web process (each restarted),
SIGKILL a compile or a follower (the worker retries), power cut (SIGKILL storage, drop what was
not synced, restart storage), a full disk for a few seconds (ENOSPC from the power-cut file
system's capacity option), drop every client socket, stall every client socket, pause a client.

The checker (checker.py) runs once the nemesis stopped and every compile settled. The run exits
1 when it found a violation, and prints its seed first and a summary last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import httpx  # noqa: E402
import psutil  # noqa: E402

from harness import Stack, make_stack, wait_for  # noqa: E402
from media import ffmpeg_binary, make_h264_webm, make_opus_webm, packets  # noqa: E402
from powercut.mount import PowerCutDir, fuse_missing  # noqa: E402
from soak.checker import (  # noqa: E402
    KNOWN,
    check_track,
    compare_packets,
    descriptors,
    explained,
    leftovers,
    split_known,
)
from soak.proxy import FaultyProxy  # noqa: E402
from soak.schedule import Fault, Kind, counts, make_schedule  # noqa: E402
from tapedeck.compiler.run import compile_files  # noqa: E402
from tapedeck.ingest.uploader import UploadRejected, upload_track  # noqa: E402
from tapedeck.storage.client import StorageClient, StorageError  # noqa: E402

T0 = 1_760_000_000_000.0
TIMESLICE = 1.0  # seconds of media per WebSocket frame, as MediaRecorder(timeslice=1000) sends
UNSETTLED_PER_CLIENT = 2  # a client waits for its older sessions beyond this many compiling
API_PATIENCE = 180.0  # seconds a client keeps retrying one api call before it gives up


# --- media ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Media:
    key: str
    data: bytes
    mime: str


def make_media(directory: Path) -> dict[str, Media]:
    """Small real recordings (H.264 in Matroska, Opus in WebM) of a few seconds each."""
    made = {
        "v3": make_h264_webm(directory / "v3.webm", 3.0, fps=15, size=(320, 240)),
        "v5": make_h264_webm(directory / "v5.webm", 5.0, fps=15, size=(320, 240)),
        "a3": make_opus_webm(directory / "a3.webm", 3.0, frequency=330),
        "a5": make_opus_webm(directory / "a5.webm", 5.0, frequency=550),
    }
    mimes = {"v": "video/webm;codecs=h264", "a": "audio/webm;codecs=opus"}
    return {k: Media(k, p.read_bytes(), mimes[k[0]]) for k, p in made.items()}


# (video, audio) fixtures a session records; None: no such track.
PAIRS: list[tuple[str | None, str | None]] = [
    ("v3", "a3"),
    ("v5", "a5"),
    ("v3", "a5"),
    ("v5", None),
    (None, "a3"),
]
AUDIO_DELAYS_MS = [0.0, 250.0, 480.0]


# --- what the clients saw ------------------------------------------------------------------


@dataclass
class TrackLog:
    name: str
    media: str
    started_at: float
    acks: list[int] = field(default_factory=list)
    finished: bool = False
    connections: int = 0
    error: str | None = None
    finished_unanswered: bool = False
    """Finished on a connection that dropped before `finished` arrived (see _finished_before)."""


@dataclass
class SessionLog:
    id: str
    client: int
    tracks: list[TrackLog]
    compile_requested: bool = False
    compile_answer: str | None = None
    failures_seen: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None


@dataclass
class Record:
    sessions: list[SessionLog] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    faults: list[tuple[float, Fault, str]] = field(default_factory=list)
    """(when it landed, the fault, what it hit)"""
    noops: dict[str, int] = field(default_factory=dict)
    disk_full_seen: bool = False
    finishes_unanswered: int = 0

    def injected(self) -> dict[str, int]:
        return counts([fault for _t, fault, _what in self.faults])


class ApiGaveUp(Exception):
    pass


class Client:
    """One protocol client recording sessions one after another, as a browser tab would."""

    def __init__(
        self,
        index: int,
        seed: int,
        base_url: str,
        ws_base: str,
        media: dict[str, Media],
        record: Record,
        deadline: float,
    ) -> None:
        self.index = index
        self.rng = random.Random(f"{seed}-client-{index}")
        self.http = httpx.AsyncClient(base_url=base_url, timeout=10.0)
        self.ws_base = ws_base
        self.media = media
        self.record = record
        self.deadline = deadline
        self.paused_until = 0.0
        self.unsettled: list[str] = []

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def _after_frame(self, _ws: object, _offset: int) -> None:
        while time.monotonic() < self.paused_until:
            await asyncio.sleep(0.1)

    async def call(self, method: str, url: str, ok: set[int], what: str) -> httpx.Response:
        """The api through the faulty proxy: retried on transport errors, 5xx, 429 and 409
        `still-recording`."""
        give_up = time.monotonic() + API_PATIENCE
        delay = 0.1
        last = ""
        while time.monotonic() < give_up:
            try:
                response = await self.http.request(method, url)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in ok:
                    return response
                last = f"{response.status_code} {response.text[:300]}"
                # A connection the server has not yet seen drop still counts as writing: the
                # user asks again. Once every upload ended, it must not last.
                transient = response.status_code == 409 and "still-recording" in response.text
                if response.status_code < 500 and response.status_code != 429 and not transient:
                    raise ApiGaveUp(f"{what}: {last}")
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
        raise ApiGaveUp(f"{what}: no answer for {API_PATIENCE:.0f}s (last: {last})")

    async def run(self) -> None:
        await asyncio.sleep(self.rng.uniform(0, 3))  # not all at once
        try:
            while time.monotonic() < self.deadline:
                await self._wait_for_backlog()
                await self.session()
                await asyncio.sleep(self.rng.uniform(0.5, 2.5))  # the user's pause
        except ApiGaveUp as exc:
            self.record.violations.append(f"client {self.index}: {exc}")
        finally:
            await self.http.aclose()

    async def _wait_for_backlog(self) -> None:
        while len(self.unsettled) >= UNSETTLED_PER_CLIENT:
            oldest = self.unsettled[0]
            try:
                reply = await self.http.get(f"/api/sessions/{oldest}")
                state = reply.json().get("state") if reply.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                state = None
            if state in ("ready", "failed"):
                self.unsettled.pop(0)
            else:
                await asyncio.sleep(1.0)
            if time.monotonic() >= self.deadline:
                return

    async def session(self) -> None:
        created = (await self.call("POST", "/api/sessions", {201}, "create a session")).json()
        video, audio = self.rng.choice(PAIRS)
        delay = self.rng.choice(AUDIO_DELAYS_MS)
        tracks = []
        if video:
            tracks.append(TrackLog("video", video, T0))
        if audio:
            tracks.append(TrackLog("audio", audio, T0 + delay))
        log = SessionLog(created["id"], self.index, tracks)
        self.record.sessions.append(log)
        await asyncio.gather(*(self._upload(created, t) for t in tracks))
        answer = await self.call("POST", f"/api/compile-video/{log.id}", {202}, f"compile {log.id}")
        log.compile_requested = True
        log.compile_answer = answer.json().get("state")
        self.unsettled.append(log.id)

    async def _upload(self, created: dict[str, Any], track: TrackLog) -> None:
        media = self.media[track.media]
        frames = max(1, round(float(track.media[1:]) / TIMESLICE))
        try:
            result = await upload_track(
                self.ws_base,
                track.name,
                media.data,
                session_id=created["id"],
                token=created["uploadToken"],
                mime_type=media.mime,
                started_at=track.started_at,
                frame_bytes=math.ceil(len(media.data) / frames),
                frame_interval=TIMESLICE,
                max_connections=5000,
                after_frame=self._after_frame,
            )
        except UploadRejected as exc:
            if await self._finished_before(created["id"], track, exc):
                return
            track.error = str(exc)
            self.record.violations.append(
                f"{created['id']} {track.name}: upload rejected: {exc} (its acks are unknown)"
            )
            return
        track.acks = result.acks
        track.finished = True
        track.connections = result.connections

    async def _finished_before(self, sid: str, track: TrackLog, exc: UploadRejected) -> bool:
        """What the browser client does (docs/protocol.md): a reconnect refused with 4409
        because the track is finished is a success when every byte is stored: the `finish`
        was committed and only its answer was lost (a dropped socket)."""
        if exc.code != 4409 or (exc.error or {}).get("code") != "finished":
            return False
        detail = (await self.call("GET", f"/api/sessions/{sid}", {200}, f"read {sid}")).json()
        stored = {t["name"]: t for t in detail.get("tracks", [])}.get(track.name, {})
        if stored.get("finished") and stored.get("bytes") == len(self.media[track.media].data):
            track.finished = True
            track.finished_unanswered = True
            self.record.finishes_unanswered += 1
            return True
        return False


# --- the system under test and the nemesis -------------------------------------------------


class System:
    """Storage on the power-cut file system, the web process, and the proxy in front of it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.capacity = work / "capacity"
        os.environ["POWERCUT_CAPACITY_FILE"] = str(self.capacity)  # read by fs.py (mounts)
        self.mount = PowerCutDir(work / "mnt", work / "disk", work / "powercut.log")
        self.scratch = work / "scratch"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.stack: Stack = make_stack(
            work,
            sessions_per_minute="0",
            compile_max_attempts="10",
        )
        self.stack.env["TAPEDECK_DATA_DIR"] = str(self.mount.path)
        self.stack.env["TMPDIR"] = str(self.scratch)  # compiles' scratch directories
        self.stack.data_dir = self.mount.path
        self.proxy = FaultyProxy("127.0.0.1", self.stack.port)
        self.idle_fds = 0
        self.idle_targets: list[str] = []

    async def start(self) -> None:
        self.mount.mount()
        await asyncio.to_thread(self.stack.start)
        await self.proxy.start()
        await asyncio.sleep(2.0)
        self.idle_fds = self.storage_process().num_fds()
        self.idle_targets = fd_targets(self.storage_process().pid)

    async def stop(self) -> None:
        await self.proxy.close()
        await asyncio.to_thread(self.stack.stop)
        await asyncio.to_thread(self.mount.unmount)

    def storage_process(self) -> psutil.Process:
        assert self.stack.storage.process is not None
        return psutil.Process(self.stack.storage.process.pid)

    def web_process(self) -> psutil.Process:
        assert self.stack.web.process is not None
        return psutil.Process(self.stack.web.process.pid)

    async def restart_storage(self, *, cut: bool = False) -> None:
        await asyncio.to_thread(self.stack.storage.kill)
        if cut:
            await asyncio.to_thread(self.mount.cut)
        await asyncio.to_thread(self.stack.start_storage)

    async def restart_web(self) -> None:
        await asyncio.to_thread(self.stack.web.kill)
        await asyncio.to_thread(self.stack.start_web)

    def compiles(self) -> list[tuple[int, str]]:
        """(pid, what) of the web process's compile and follower children."""
        found = []
        with contextlib.suppress(psutil.Error):
            for proc in self.web_process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    cmd = proc.cmdline()
                    if cmd[-2:-1] in (["compile"], ["tapedeck.compiler.follow"]):
                        found.append((proc.pid, " ".join(cmd[-2:])))
        return sorted(found)

    def fill_disk(self, room: int) -> None:
        tmp = self.capacity.with_suffix(".new")
        tmp.write_text(str(room))
        tmp.replace(self.capacity)

    def free_disk(self) -> None:
        self.capacity.unlink(missing_ok=True)


async def nemesis(
    system: System, clients: list[Client], schedule: list[Fault], record: Record, t0: float
) -> None:
    for fault in schedule:
        wait = t0 + fault.at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        landed = time.monotonic() - t0
        try:
            what = await inject(system, clients, fault, record)
        except Exception as exc:  # a restart that never came back is a finding, not a crash
            record.violations.append(f"{fault.describe()}: {type(exc).__name__}: {exc}")
            what = f"error: {exc}"
        if what is None:
            record.noops[fault.kind.value] = record.noops.get(fault.kind.value, 0) + 1
        else:
            record.faults.append((landed, fault, what))
        print(f"[{landed:7.1f}s] {fault.kind.value}: {what or 'nothing to hit'}", flush=True)


async def inject(system: System, clients: list[Client], fault: Fault, record: Record) -> str | None:
    if fault.kind == Kind.KILL_STORAGE:
        await system.restart_storage()
        return "storage killed and restarted"
    if fault.kind == Kind.POWER_CUT:
        await system.restart_storage(cut=True)
        return "storage killed, power cut, storage restarted"
    if fault.kind == Kind.KILL_WEB:
        await system.restart_web()
        return "web killed and restarted"
    if fault.kind == Kind.KILL_COMPILE:
        running = system.compiles()
        if not running:
            return None
        pid, what = running[int(fault.pick * len(running))]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return f"killed {what}"
    if fault.kind == Kind.DISK_FULL:
        record.disk_full_seen = True
        system.fill_disk(fault.room)
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            system.free_disk()
        return f"disk full after {fault.room} more bytes for {fault.seconds:.1f}s"
    if fault.kind == Kind.DROP:
        dropped = system.proxy.drop()
        return f"dropped {dropped} connections" if dropped else None
    if fault.kind == Kind.STALL:
        await system.proxy.stall(fault.seconds)
        return f"stalled every connection for {fault.seconds:.1f}s"
    if fault.kind == Kind.PAUSE_CLIENT:
        client = clients[int(fault.pick * len(clients))]
        client.pause(fault.seconds)
        return f"paused client {client.index} for {fault.seconds:.1f}s"
    raise AssertionError(fault.kind)


# --- settling and checking -----------------------------------------------------------------


async def settle(system: System, record: Record, timeout: float) -> None:
    """Wait until every session asked to compile is `ready` or `failed`; compile again (as a
    user would) those that failed for a reason a fault explains."""
    async with httpx.AsyncClient(base_url=system.stack.base_url, timeout=10.0) as api:
        for again in (False, True):
            pending = {s.id: s for s in record.sessions if s.compile_requested}
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline:
                for sid, log in list(pending.items()):
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        detail = (await api.get(f"/api/sessions/{sid}")).json()
                        if detail.get("state") in ("ready", "failed"):
                            log.final = detail
                            del pending[sid]
                await asyncio.sleep(1.0)
            for sid in pending:
                record.violations.append(f"{sid}: stuck (did not reach ready or failed)")
            if again:
                return
            retry = [
                s
                for s in record.sessions
                if s.final
                and s.final["state"] == "failed"
                and explained(s.final.get("error") or "", record.disk_full_seen)
            ]
            if not retry:
                return
            for log in retry:
                log.failures_seen.append(log.final["error"] if log.final else "")
                await api.post(f"/api/compile-video/{log.id}")


@dataclass
class Summary:
    tracks_checked: int = 0
    acknowledged_bytes: int = 0
    lost_bytes: int = 0
    compiled_compared: int = 0
    failed_explained: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)


async def check(system: System, record: Record, media: dict[str, Media], work: Path) -> Summary:
    summary = Summary()
    storage = StorageClient(system.stack.storage_addr)
    references: dict[tuple[Any, ...], dict[str, list[bytes]]] = {}
    checks = work / "check"
    checks.mkdir(exist_ok=True)
    async with httpx.AsyncClient(base_url=system.stack.base_url, timeout=60.0) as api:
        for log in record.sessions:
            stored: dict[str, bytes] = {}
            acked: dict[str, int] = {}
            for track in log.tracks:
                try:
                    data = b"".join([c async for c in storage.read(log.id, track.name)])
                except StorageError as err:
                    data = b""
                    if err.code.name != "NOT_FOUND":
                        record.violations.append(f"{log.id} {track.name}: read: {err.message}")
                stored[track.name] = data
                verdict = check_track(
                    f"{log.id} {track.name}",
                    media[track.media].data,
                    track.acks,
                    track.finished,
                    data,
                )
                record.violations.extend(verdict.violations)
                summary.tracks_checked += 1
                summary.acknowledged_bytes += verdict.acknowledged
                summary.lost_bytes += verdict.lost
                acked[track.name] = verdict.acknowledged
            if not log.compile_requested:
                continue
            final = log.final or {}
            if final.get("state") == "failed":
                error = final.get("error") or ""
                if explained(error, record.disk_full_seen):
                    summary.failed_explained.append(f"{log.id}: {error}")
                else:
                    record.violations.append(f"{log.id}: compile failed: {error}")
                continue
            if final.get("state") != "ready":
                continue  # reported as stuck
            manifest = {t["name"]: t for t in final.get("tracks", [])}
            inputs = []
            for track in log.tracks:
                started = manifest.get(track.name, {}).get("startedAt")
                if started != track.started_at:
                    record.violations.append(
                        f"{log.id} {track.name}: startedAt {started}, sent {track.started_at}"
                    )
                # A rejected upload's acks are unknown: what is stored (checked above to be
                # a prefix of what was sent) is then what the compile had to use.
                size = acked[track.name] if track.finished else len(stored[track.name])
                if size:
                    inputs.append((track.name, track.media, size, started))
            key = tuple(inputs)
            if key not in references:
                try:
                    references[key] = await reference(key, media, checks / f"ref{len(references)}")
                except Exception as exc:
                    record.violations.append(
                        f"{log.id}: ready, but a one-shot compile of its acknowledged bytes "
                        f"{key} fails: {exc}"
                    )
                    continue
            mp4 = checks / "got.mp4"
            response = await api.get(f"/api/download/{log.id}")
            if response.status_code != 200:
                record.violations.append(f"{log.id}: download answered {response.status_code}")
                continue
            mp4.write_bytes(response.content)
            got = media_packets(mp4, references[key])
            record.violations.extend(compare_packets(log.id, references[key], got))
            summary.compiled_compared += 1
        summary.orphans = await orphans(api, {s.id for s in record.sessions})
    await storage.close()
    return summary


async def reference(
    key: tuple[Any, ...], media: dict[str, Media], directory: Path
) -> dict[str, list[bytes]]:
    """A one-shot compile (`compile_files`) of exactly the acknowledged bytes."""
    directory.mkdir(exist_ok=True)
    inputs = []
    for name, media_key, size, started in key:
        path = directory / f"{name}.webm"
        path.write_bytes(media[media_key].data[:size])
        inputs.append((name, path, started))
    out = directory / "one-shot.mp4"
    await compile_files(ffmpeg_binary(), inputs, out)
    kinds = {name for name, *_ in key}
    return media_packets(out, dict.fromkeys(kinds))


def media_packets(path: Path, kinds: Any) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for kind in kinds:
        try:
            out[kind] = packets(path, kind)
        except (IndexError, OSError) as exc:  # no such stream, or not an MP4 at all
            out[kind] = [f"unreadable: {exc}".encode()]
    return out


async def orphans(api: httpx.AsyncClient, known: set[str]) -> list[str]:
    """Sessions no client knows of: created by a request whose answer a dropped socket lost."""
    found, cursor = [], ""
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        reply = (await api.get("/api/sessions", params=params)).json()
        for item in reply["items"]:
            if item["id"] not in known:
                found.append(f"{item['id']} ({item['state']}, {item['bytes']} bytes)")
        cursor = reply.get("nextCursor") or ""
        if not cursor:
            return found


async def leaks(system: System, record: Record) -> None:
    # Compiles and followers end once nothing is left to compile; their scratch goes with them.
    with contextlib.suppress(TimeoutError):
        await asyncio.to_thread(wait_for, lambda: not system.compiles(), 60, "compiles to end")
    data = [
        str(Path(root, name).relative_to(system.mount.path))
        for root, dirs, files in os.walk(system.mount.path)
        for name in [*dirs, *files]
    ]
    scratch = [p.name for p in system.scratch.iterdir()]
    scratch += [
        f"{root.name}/{p.name}"
        for root in system.scratch.glob("tapedeck-scratch-*")
        if root.is_dir()
        for p in root.iterdir()
    ]
    record.violations.extend(leftovers(data, scratch))
    mount = str(system.mount.path)

    def idle() -> bool:
        proc = system.storage_process()
        return proc.num_fds() <= system.idle_fds and not any(
            f.path.startswith(mount) for f in proc.open_files()
        )

    with contextlib.suppress(TimeoutError):
        await asyncio.to_thread(wait_for, idle, 30, "storage idle")
    proc = system.storage_process()
    files = [f.path for f in proc.open_files() if f.path.startswith(mount)]
    found = descriptors(system.idle_fds, proc.num_fds(), files)
    if found:  # say what they are: sockets (with their peers), pipes, event fds
        peers = [f"{c.laddr}->{c.raddr} {c.status}" for c in proc.net_connections()]
        found = [
            f"{found[0]}; at start: {system.idle_targets}; now: {fd_targets(proc.pid)}; "
            f"connections: {peers}"
        ]
    record.violations.extend(found)


def fd_targets(pid: int) -> list[str]:
    """What each descriptor of a process is (a socket, a pipe, an anon inode, a file)."""
    out = []
    for fd in sorted(Path(f"/proc/{pid}/fd").iterdir(), key=lambda p: int(p.name)):
        with contextlib.suppress(OSError):
            out.append(os.readlink(fd).split(":[")[0])
    return out


# --- the run -------------------------------------------------------------------------------


@dataclass
class Options:
    seed: int
    seconds: float
    clients: int
    mean_gap: float
    work: Path
    settle_timeout: float = 300.0
    known: list[str] = field(default_factory=list)
    """Kinds of known defects (checker.KNOWN) listed apart instead of failing the run."""


async def soak(options: Options) -> int:
    print(
        f"soak: seed {options.seed}, {options.seconds:.0f}s, {options.clients} clients, "
        f"work dir {options.work}",
        flush=True,
    )
    schedule = make_schedule(options.seed, options.seconds, mean_gap=options.mean_gap)
    print(f"soak: {len(schedule)} faults scheduled: {counts(schedule)}", flush=True)
    media = await asyncio.to_thread(make_media, options.work / "media")
    record = Record()
    system = System(options.work)
    started = time.monotonic()
    await system.start()
    try:
        t0 = time.monotonic()
        deadline = t0 + options.seconds
        base = f"http://127.0.0.1:{system.proxy.port}"
        clients = [
            Client(i, options.seed, base, base.replace("http", "ws"), media, record, deadline)
            for i in range(options.clients)
        ]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        await nemesis(system, clients, schedule, record, t0)
        system.free_disk()
        print("soak: nemesis done; waiting for the clients' last sessions", flush=True)
        await asyncio.gather(*tasks)
        ran = time.monotonic() - t0
        print("soak: settling", flush=True)
        await settle(system, record, options.settle_timeout)
        print("soak: checking", flush=True)
        summary = Summary()
        try:
            summary = await check(system, record, media, options.work)
            await leaks(system, record)
        except Exception:
            record.violations.append(f"the checker crashed: {traceback.format_exc()}")
    finally:
        await system.stop()
        dump(options.work / "soak-record.json", record)
    violations, known = split_known(record.violations, options.known)
    report(options, record, summary, ran, time.monotonic() - started, violations, known)
    return 1 if violations else 0


def report(
    options: Options,
    record: Record,
    summary: Summary,
    ran: float,
    total: float,
    violations: list[str],
    known: list[str],
) -> None:
    sessions = record.sessions
    lines = [
        "",
        "=== soak summary ===",
        f"seed:                      {options.seed}",
        f"duration:                  {ran:.0f}s of clients and faults ({total:.0f}s in all)",
        f"clients:                   {options.clients}",
        f"sessions:                  {len(sessions)} "
        f"({sum(s.compile_requested for s in sessions)} asked to compile)",
        f"faults injected:           {len(record.faults)} {record.injected()}",
        f"faults with nothing to hit: {sum(record.noops.values())} {record.noops}",
        f"reconnections:             "
        f"{sum(max(0, t.connections - 1) for s in sessions for t in s.tracks)}",
        f"finishes whose answer a drop lost (4409 finished, all stored): "
        f"{record.finishes_unanswered}",
        f"tracks checked:            {summary.tracks_checked}",
        f"acknowledged bytes checked: {summary.acknowledged_bytes}",
        f"sessions compiled and compared: {summary.compiled_compared}",
        f"compiles failed by a fault and compiled again: "
        f"{sum(bool(s.failures_seen) for s in sessions)}",
        f"failed, explained by a fault: {len(summary.failed_explained)}",
        f"orphan sessions (answer lost to a dropped socket): {len(summary.orphans)}",
        f"acknowledged bytes lost:   {summary.lost_bytes}",
        f"violations:                {len(violations)}",
        *(f"  - {v}" for v in violations),
    ]
    if options.known:
        lines.append(f"known defects ({', '.join(options.known)}), not failing: {len(known)}")
        lines += [f"  - {v}" for v in known]
    print("\n".join(lines), flush=True)


def dump(path: Path, record: Record) -> None:
    data = {
        "faults": [
            {"landed": round(t, 2), "kind": f.kind.value, "seconds": f.seconds, "what": w}
            for t, f, w in record.faults
        ],
        "sessions": [
            {
                "id": s.id,
                "client": s.client,
                "state": (s.final or {}).get("state"),
                "error": (s.final or {}).get("error"),
                "failuresSeen": s.failures_seen,
                "tracks": [
                    {
                        "name": t.name,
                        "media": t.media,
                        "acks": t.acks,
                        "connections": t.connections,
                        "error": t.error,
                    }
                    for t in s.tracks
                ],
            }
            for s in record.sessions
        ],
        "violations": record.violations,
    }
    path.write_text(json.dumps(data, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=None, help="overrides --minutes")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--mean-gap", type=float, default=4.0, help="seconds between faults")
    parser.add_argument("--work", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the work dir on success")
    parser.add_argument(
        "--known",
        action="append",
        default=[],
        choices=sorted(KNOWN),
        help="list this known defect apart instead of failing on it",
    )
    args = parser.parse_args(argv)
    missing = fuse_missing()
    if missing:
        print(f"soak needs FUSE (make .venv/.stamp-powercut): {missing}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    work = args.work or Path(tempfile.mkdtemp(prefix=f"tapedeck-soak-{seed}-"))
    work.mkdir(parents=True, exist_ok=True)
    options = Options(
        seed=seed,
        seconds=args.seconds if args.seconds is not None else args.minutes * 60,
        clients=args.clients,
        mean_gap=args.mean_gap,
        work=work,
        known=args.known,
    )
    code = asyncio.run(soak(options))
    if code == 0 and not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"soak: logs and soak-record.json kept in {work}")
    return code


if __name__ == "__main__":
    sys.exit(main())
