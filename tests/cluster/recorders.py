"""Protocol clients that record on the real node until told to stop (issue 17's rolling-update
and autoscaling tests): sessions made through the api Service, video and audio sent at once over
the ingest Service, paced like a browser's MediaRecorder, each track resumed from `committed`
after whatever close it gets, and checks of what the node's volume holds."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cluster.helpers import wait_until
from media import make_h264_webm, make_opus_webm
from tapedeck.ingest.uploader import UploadResult, upload_track

MEDIA_SECONDS = 600  # longer than a round: every recorder is still recording when it stops
TIMESLICE = 0.5  # seconds of media per frame, like MediaRecorder's timeslice
T0 = 1_760_000_000_000.0
TRACKS = {"video": "video/webm;codecs=h264", "audio": "audio/webm;codecs=opus"}


@dataclass(frozen=True)
class Media:
    tracks: dict[str, bytes]

    def frame_bytes(self, track: str) -> int:
        return max(1024, int(len(self.tracks[track]) / MEDIA_SECONDS * TIMESLICE))


def make_media(where: Path) -> Media:
    """Ten minutes of small H.264 video and Opus audio, as a browser records them."""
    video = make_h264_webm(where / "video.webm", MEDIA_SECONDS, fps=15, size=(320, 180))
    audio = make_opus_webm(where / "audio.webm", MEDIA_SECONDS)
    return Media({"video": video.read_bytes(), "audio": audio.read_bytes()})


@dataclass
class Recording:
    session_id: str
    token: str
    results: dict[str, UploadResult] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)


class Recorders:
    """Every client's two tracks in one event loop on a thread, until `stop()`. `speed` > 1
    sends media faster than real time (load)."""

    def __init__(
        self, ingest: str, recordings: list[Recording], media: Media, speed: float = 1.0
    ) -> None:
        self.ingest, self.recordings, self.media, self.speed = ingest, recordings, media, speed
        self.loop = asyncio.new_event_loop()
        self.stopping = asyncio.Event()
        self.thread = threading.Thread(target=self._run, name="recorders", daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._all())
        self.loop.close()

    async def _all(self) -> None:
        await asyncio.gather(*(self._track(r, t) for r in self.recordings for t in TRACKS))

    async def _track(self, recording: Recording, track: str) -> None:
        try:
            recording.results[track] = await upload_track(
                self.ingest,
                track,
                self.media.tracks[track],
                session_id=recording.session_id,
                token=recording.token,
                mime_type=TRACKS[track],
                started_at=T0,
                frame_bytes=self.media.frame_bytes(track),
                frame_interval=TIMESLICE / self.speed,
                max_connections=10_000,  # storage is away for a while: many 4503s in a row
                stop=self.stopping,
            )
        except Exception as err:  # reported by the test, with the session
            recording.errors.append(err)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 300) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the recorders did not finish their tracks"


def new_sessions(api: str, host: str, token: str, count: int) -> list[Recording]:
    headers = {"Authorization": f"Bearer {token}", "Host": host}
    recordings: list[Recording] = []
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        while len(recordings) < count:
            reply = client.post("/api/sessions", json={"title": f"recorder {len(recordings)}"})
            if reply.status_code == 429:  # the per-client creation budget: wait as told
                time.sleep(float(reply.headers.get("Retry-After", "1")))
                continue
            assert reply.status_code == 201, reply.text
            created = reply.json()
            recordings.append(Recording(created["id"], created["uploadToken"]))
    return recordings


def track_file(volume: Path, session_id: str, track: str) -> Path:
    """The track as storage keeps it on the node's volume (docs/storage.md, Layout)."""
    found = list(volume.glob(f"**/{session_id}/{track}.webm"))
    assert len(found) == 1, found
    return found[0]


def stored_sizes(volume: Path, recordings: list[Recording]) -> dict[tuple[str, str], int]:
    sizes = {}
    for r in recordings:
        for track in TRACKS:
            found = list(volume.glob(f"**/{r.session_id}/{track}.webm"))
            sizes[r.session_id, track] = found[0].stat().st_size if found else 0
    return sizes


def keeps_recording(
    volume: Path, recordings: list[Recording], what: str, timeout: float = 240
) -> None:
    """Every track's stored bytes grow past what they were now: every client recovered."""
    before = stored_sizes(volume, recordings)

    def grown() -> bool:
        now = stored_sizes(volume, recordings)
        return all(now[key] > before[key] for key in before)

    wait_until(grown, timeout, f"every track to grow after {what}", 1)


def check_stored(recording: Recording, media: Media, volume: Path) -> dict[str, int]:
    """Every acknowledged byte on the volume: each track file is exactly the bytes the client
    sent (all acknowledged once `finished`), and no ack ever ran past them. Returns the stored
    size of each track."""
    assert not recording.errors, (recording.session_id, recording.errors)
    sizes = {}
    for track, data in media.tracks.items():
        result = recording.results[track]
        assert 0 < result.sent < len(data), (track, result.sent)  # still recording at the stop
        stored = track_file(volume, recording.session_id, track).read_bytes()
        acked = max(result.acks, default=0)
        assert acked <= result.committed == result.sent == len(stored), (
            recording.session_id,
            track,
            acked,
            result.committed,
            result.sent,
            len(stored),
        )
        assert stored == data[: len(stored)], (recording.session_id, track)
        sizes[track] = len(stored)
    return sizes
