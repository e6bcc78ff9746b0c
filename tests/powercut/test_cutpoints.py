"""Randomized power cuts (seeded): storage runs a random workload on the power-cut file system,
the power goes at a random moment with calls in flight, a new storage starts on what survived,
and a checker compares it with everything storage acknowledged (powercut/model.py).

TAPEDECK_POWERCUT_SEED picks the seed (printed, and named by every failure) and
TAPEDECK_POWERCUT_CUTS the number of cut points (200 in `make test`, thousands in
`make test-powercut`). A failure names the cut point: rerunning with the same seed and that
many cuts makes the same choices (thread timing still varies, so a rare race may need a few
runs). At the end, a few sessions the run finished (streamed from real WebM, through cuts)
are compiled with the real compiler and must become `ready`.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import av
import pytest

from harness import free_port
from media import make_h264_webm, make_opus_webm
from powercut.model import (
    DiskView,
    Observed,
    ObservedOutput,
    ObservedTrack,
    Stats,
    check,
)
from powercut.mount import PowerCutDir
from powercut.serving import storage_on
from powercut.workload import KEEP, Workload
from tapedeck._proto import storage_pb2 as pb
from tapedeck.compiler.job import EXIT_OK, compile_session
from tapedeck.compiler.plan import OutputOptions
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient, StorageError
from tapedeck.storage.local import MANIFEST
from tapedeck.storage.records import SessionRecord

CUTS = int(os.environ.get("TAPEDECK_POWERCUT_CUTS") or 200)
ACTORS = (2, 5)  # concurrent clients per cut point


def seed_from_env() -> int:
    value = os.environ.get("TAPEDECK_POWERCUT_SEED")
    return int(value) if value else random.SystemRandom().randrange(1 << 32)


@pytest.fixture(scope="module")
def cut_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real WebM as browsers record it, small so that each cut point stays cheap."""
    media = tmp_path_factory.mktemp("cut-media")
    return {
        "video": make_h264_webm(media / "video.webm", 2.0, fps=15, size=(160, 120)).read_bytes(),
        "audio": make_opus_webm(media / "audio.webm", 2.0).read_bytes(),
    }


def storage_settings(path: Path) -> Settings:
    return Settings(
        data_dir=path, storage_addr=f"127.0.0.1:{free_port()}", max_session_bytes=1_000_000
    )


async def read_all(client: StorageClient, sid: str, obj: str) -> bytes:
    return b"".join([chunk async for chunk in client.read(sid, obj)])


def state_name(state: pb.SessionState.ValueType) -> str:
    return pb.SessionState.Name(state).removeprefix("SESSION_STATE_").lower()


async def observe(client: StorageClient) -> dict[str, Observed]:
    listed: dict[str, Observed] = {}
    token = ""
    while True:
        page = await client.list_sessions(page_size=1000, page_token=token)
        for s in page.sessions:
            tracks = {
                t.name: ObservedTrack(
                    t.committed_size, t.finished, await read_all(client, s.id, t.name)
                )
                for t in s.tracks
            }
            output = None
            if s.HasField("output"):
                data = await read_all(client, s.id, "output")
                output = ObservedOutput(s.output.size, s.output.etag, data)
            listed[s.id] = Observed(state_name(s.state), s.compile_generation, tracks, output)
        token = page.next_page_token
        if not token:
            return listed


def disk_view(root: Path) -> DiskView:
    manifests: dict[str, bool] = {}
    leftovers: list[str] = []
    for entry in os.scandir(root):
        if entry.name.startswith(".deleted-"):
            leftovers.append(entry.name)
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        directory = Path(entry.path)
        leftovers += [f"{entry.name}/{t.name}" for t in directory.glob(f".{MANIFEST}.*.tmp")]
        manifest = directory / MANIFEST
        if manifest.exists():
            try:
                SessionRecord.model_validate_json(manifest.read_bytes())
                manifests[entry.name] = True
            except ValueError:
                manifests[entry.name] = False
    return DiskView(manifests, sorted(leftovers))


async def check_restart(
    client: StorageClient, root: Path, work: Workload, stats: Stats, where: str
) -> None:
    try:
        listed = await observe(client)
    except StorageError as err:
        raise AssertionError(
            f"{where}: reading back failed: {err.code.name} {err.message}"
        ) from err
    checked = check(work.sessions, listed, disk_view(root))
    stats.add(checked)
    problems = work.violations + checked.violations
    assert not problems, f"{where}: " + "; ".join(problems[:10])
    work.restarted(set(listed))


async def run_until_cut(
    client: StorageClient, work: Workload, powercut_dir: PowerCutDir, rng: random.Random, name: str
) -> None:
    """Actors at work for a random while; then the power goes with their calls in flight."""
    actors = [
        asyncio.create_task(work.actor(client, random.Random(f"{name}-{i}")))
        for i in range(rng.randint(*ACTORS))
    ]
    await asyncio.sleep(rng.uniform(0, 0.02) if rng.random() < 0.2 else rng.uniform(0.02, 0.3))
    for actor in actors:
        if actor.done():  # an actor may only end by being cancelled
            actor.result()
    powercut_dir.power_off()  # blocks the loop: storage's threads fail, nothing else runs
    for actor in actors:
        actor.cancel()
    for result in await asyncio.gather(*actors, return_exceptions=True):
        if not isinstance(result, asyncio.CancelledError | Exception):
            raise AssertionError(f"an actor ended: {result!r}")


async def compile_kept(client: StorageClient, work: Workload, settings: Settings) -> int:
    """Every finished session compiles: a few of them, from what survived, with the real
    compiler against the restarted storage."""
    compiled = 0
    kept = [s for s in work.sessions.values() if s.keep and not s.delete_tried][:KEEP]
    for session in kept:
        detail = await client.get_session(session.id)
        if detail.state in (pb.SESSION_STATE_READY, pb.SESSION_STATE_FAILED):
            await client.update_session(
                pb.UpdateSessionRequest(session_id=session.id, state=pb.SESSION_STATE_QUEUED)
            )
        elif detail.state in (pb.SESSION_STATE_RECORDING, pb.SESSION_STATE_RECORDED):
            await client.update_session(
                pb.UpdateSessionRequest(
                    session_id=session.id, finish_tracks=True, state=pb.SESSION_STATE_QUEUED
                )
            )
        code = await compile_session(client, session.id, settings, OutputOptions())
        detail = await client.get_session(session.id)
        assert code == EXIT_OK and detail.state == pb.SESSION_STATE_READY, (
            f"session {session.id} ({', '.join(session.tracks)}) did not compile: "
            f"{state_name(detail.state)} {detail.error}"
        )
        mp4 = Path(work.scratch) / f"{session.id}.mp4"
        await client.download(session.id, "output", mp4)
        with av.open(str(mp4)) as container:
            kinds = {s.type for s in container.streams}
            assert kinds == set(session.tracks), (session.id, kinds)
            assert container.duration and container.duration > 0
        compiled += 1
    return compiled


@pytest.mark.timeout(300 + 2 * CUTS)
async def test_nothing_acknowledged_is_lost_at_any_cut_point(
    powercut_dir: PowerCutDir,
    cut_media: dict[str, bytes],
    tmp_path: Path,
    powercut_report: list[str],
) -> None:
    seed = seed_from_env()
    stats = Stats(seed=seed)
    print(f"power-cut suite: TAPEDECK_POWERCUT_SEED={seed} TAPEDECK_POWERCUT_CUTS={CUTS}")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    work = Workload(cut_media, scratch)
    settings = storage_settings(powercut_dir.path)
    try:
        for cut in range(1, CUTS + 1):
            rng = random.Random(f"{seed}-{cut}")
            settings = storage_settings(powercut_dir.path)
            async with storage_on(settings) as client:
                if cut > 1:
                    await check_restart(
                        client, powercut_dir.path, work, stats, cut_point(seed, cut - 1)
                    )
                await run_until_cut(client, work, powercut_dir, rng, f"{seed}-{cut}")
            stats.cuts += 1
            # A new mount point at each boot: a stopped storage may still have calls that
            # run to their end (a delete does), and they must not reach the new mount.
            powercut_dir.power_on(tmp_path / f"boot-{cut}")
        settings = storage_settings(powercut_dir.path)
        async with storage_on(settings) as client:
            await check_restart(client, powercut_dir.path, work, stats, cut_point(seed, CUTS))
            stats.compiled = await compile_kept(client, work, settings)
    finally:
        stats.operations = work.operations
        print(stats.summary())
        powercut_report.append(stats.summary())
    assert stats.lost_bytes == 0
    if CUTS >= 100:
        assert stats.compiled > 0, "the run finished no session to compile"


def cut_point(seed: int, cut: int) -> str:
    return (
        f"after power cut {cut} of {CUTS} (replay: TAPEDECK_POWERCUT_SEED={seed} "
        f"TAPEDECK_POWERCUT_CUTS={cut})"
    )
