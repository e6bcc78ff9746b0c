"""The power-cut suite's clients: a few actors doing what ingest, the api and the compiler do
to storage, at random (seeded), each recording in the model what storage acknowledged.

An actor loops until cancelled (the cut): create a session, stream a track (offset-checked
writes resumed from the committed size, as ingest does after a reconnect), finish it, finalize
a session into `queued`, compile one (begin_compile, upload an output, mark it ready), update
one, delete one. Refusals are part of the game (a session finalized or deleted under a
writer); an actor counts them and goes on.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc

from powercut.model import SessionFacts, TrackFacts, Upload
from tapedeck._proto import storage_pb2 as pb
from tapedeck.sessions import new_session_id
from tapedeck.storage.client import StorageClient, StorageError

MAX_LIVE = 8  # sessions not yet deleted (besides those kept): keeps each restart cheap
KEEP = 3  # complete sessions kept for the compile at the end of the run
DAY_MS = 86_400_000
MIME = {"video": "video/webm;codecs=h264", "audio": "audio/webm;codecs=opus"}


class Workload:
    def __init__(self, media: dict[str, bytes], scratch: Path) -> None:
        self.media = media
        self.scratch = scratch
        self.sessions: dict[str, SessionFacts] = {}
        self.operations: Counter[str] = Counter()
        self.violations: list[str] = []  # seen live, while the workload runs
        self._busy: set[tuple[str, str]] = set()  # (session, track or "compile") in use

    # --- choosing ------------------------------------------------------------------------

    def _live(self) -> list[SessionFacts]:
        return [s for s in self.sessions.values() if not s.delete_tried]

    def _recording(self, takeover: bool = False) -> list[tuple[SessionFacts, str]]:
        """Tracks to stream; `takeover`: also those another actor streams (a client that
        reconnects while storage still holds its old stream)."""
        return [
            (s, name)
            for s in self._live()
            if s.created and not s.queued
            for name, t in s.tracks.items()
            if not t.finished and (takeover or (s.id, name) not in self._busy)
        ]

    def _choose(self, rng: random.Random) -> str:
        live = self._live()
        undeleted = [s for s in self.sessions.values() if s.delete_tried and not s.deleted]
        weights = {
            "create": 3.0 if sum(not s.keep for s in live) < MAX_LIVE else 0.0,
            "stream": 8.0 if self._recording() else 0.0,
            "finalize": 2.0 if any(not s.queued and s.created for s in live) else 0.0,
            "compile": 3.0 if any(s.queued and not s.ready for s in live) else 0.0,
            "update": 1.0 if any(s.created for s in live) else 0.0,
            "delete": (
                0.5
                + (2.0 if any(s.ready for s in live) else 0.0)
                + (2.0 if undeleted else 0.0)
                + (2.0 if len(live) >= MAX_LIVE else 0.0)
            )
            if live or undeleted
            else 0.0,
        }
        kinds = [k for k, w in weights.items() if w > 0]
        return rng.choices(kinds, [weights[k] for k in kinds])[0]

    # --- acting --------------------------------------------------------------------------

    async def actor(self, client: StorageClient, rng: random.Random) -> None:
        while True:
            kind = self._choose(rng)
            self.operations[kind] += 1
            try:
                await getattr(self, kind)(client, rng)
            except StorageError as err:
                self.operations[f"{kind} refused ({err.code.name})"] += 1
            await asyncio.sleep(0)

    async def create(self, client: StorageClient, rng: random.Random) -> None:
        tracks = ["video", "audio"] if rng.random() < 0.8 else [rng.choice(["video", "audio"])]
        session = SessionFacts(
            id=new_session_id(), tracks={t: TrackFacts(self.media[t]) for t in tracks}
        )
        self.sessions[session.id] = session  # before the call: its answer may never come
        await client.create_session(session.id)
        session.created = True

    async def stream(self, client: StorageClient, rng: random.Random) -> None:
        choices = self._recording(takeover=rng.random() < 0.1)
        if not choices:
            return
        session, name = rng.choice(choices)
        track = session.tracks[name]
        key = (session.id, name)
        self._busy.add(key)
        try:
            await self._stream(client, rng, session, name, track)
        finally:
            self._busy.discard(key)  # a taken-over stream lets go of it early: harmless

    async def _stream(
        self,
        client: StorageClient,
        rng: random.Random,
        session: SessionFacts,
        name: str,
        track: TrackFacts,
    ) -> None:
        writer = await client.open_writer(session.id, name, MIME[name], 1_760_000_000_000.0)
        try:
            offset = writer.committed
            if offset < track.acked or offset > len(track.media):
                self.violations.append(
                    f"session {session.id} {name}: a writer was told {offset} bytes are "
                    f"committed; {track.acked} were acknowledged, {len(track.media)} sent"
                )
                return
            track.acked = max(track.acked, offset)
            end = len(track.media) if rng.random() < 0.5 else rng.randint(offset, len(track.media))
            finish = end == len(track.media)
            if offset == end and not finish:
                return

            async def acks() -> None:
                async for ack in writer.acks():
                    track.acked = max(track.acked, ack.committed_size)
                    if ack.finished:
                        track.finished = True
                    if ack.committed_size >= end and (ack.finished or not finish):
                        return

            acking = asyncio.create_task(acks())
            try:
                while offset < end and not acking.done():
                    size = min(end - offset, rng.randint(1, 16 * 1024))
                    await writer.send(offset, track.media[offset : offset + size])
                    offset += size
                    if rng.random() < 0.3:
                        await asyncio.sleep(rng.uniform(0, 0.005))
                if finish:
                    await writer.send(offset, b"", finish=True)
                await acking
            finally:
                acking.cancel()
        finally:
            writer.cancel()
        if session.complete and not session.keep and sum(s.keep for s in self._live()) < KEEP:
            session.keep = True

    async def finalize(self, client: StorageClient, rng: random.Random) -> None:
        """Stop (all tracks finished) or idle finalization (some still open)."""
        candidates = [s for s in self._live() if not s.queued and s.created]
        if not candidates:
            return
        complete = [s for s in candidates if s.complete]
        session = rng.choice(complete if complete and rng.random() < 0.8 else candidates)
        answer = await client.update_session(
            pb.UpdateSessionRequest(
                session_id=session.id,
                finish_tracks=True,
                state=pb.SESSION_STATE_QUEUED,
                if_state_in=[pb.SESSION_STATE_RECORDING, pb.SESSION_STATE_RECORDED],
            )
        )
        session.queued = True
        for seen in answer.tracks:
            if seen.finished and seen.name in session.tracks:
                session.tracks[seen.name].finished = True

    async def compile(self, client: StorageClient, rng: random.Random) -> None:
        """What a compile does to storage; its output is random bytes (real compiles run at
        the end of the run, on what survived)."""
        candidates = [
            s
            for s in self._live()
            if s.queued and not s.ready and (s.id, "compile") not in self._busy
        ]
        if not candidates:
            return
        session = rng.choice(candidates)
        self._busy.add((session.id, "compile"))
        try:
            voided, session.recompiling = session.recompiling, session.output is not None
            try:
                begun = await client.update_session(
                    pb.UpdateSessionRequest(
                        session_id=session.id,
                        begin_compile=True,
                        if_state_in=[pb.SESSION_STATE_QUEUED, pb.SESSION_STATE_COMPILING],
                    )
                )
            except StorageError as err:
                if err.code == grpc.StatusCode.FAILED_PRECONDITION:
                    session.recompiling = voided  # refused: it voided nothing
                raise
            generation = begun.compile_generation
            session.generation = max(session.generation, generation)
            upload = Upload(generation, rng.randbytes(rng.randint(1, 96 * 1024)))
            session.uploads.append(upload)
            with tempfile.NamedTemporaryFile(dir=self.scratch) as f:
                f.write(upload.data)
                f.flush()
                await client.upload_output(session.id, Path(f.name), generation)
            session.output, session.recompiling = upload, False
            await client.update_session(
                pb.UpdateSessionRequest(
                    session_id=session.id,
                    state=pb.SESSION_STATE_READY,
                    progress=1.0,
                    if_state_in=[pb.SESSION_STATE_COMPILING],
                    if_compile_generation=generation,
                )
            )
            session.ready = True
        finally:
            self._busy.discard((session.id, "compile"))

    async def update(self, client: StorageClient, rng: random.Random) -> None:
        session = rng.choice([s for s in self._live() if s.created])
        await client.update_session(
            pb.UpdateSessionRequest(
                session_id=session.id,
                expires_at_ms=int(time.time() * 1000) + 30 * DAY_MS + rng.randint(0, 10**6),
            )
        )

    async def delete(self, client: StorageClient, rng: random.Random) -> None:
        undeleted = [s for s in self.sessions.values() if s.delete_tried and not s.deleted]
        live = [s for s in self._live() if not s.keep and s.created]
        if undeleted and rng.random() < 0.5:
            session = rng.choice(undeleted)  # a client retrying a delete it never saw answered
        elif live:
            ready = [s for s in live if s.ready]
            session = rng.choice(ready if ready and rng.random() < 0.6 else live)
        else:
            return
        session.delete_tried = True
        try:
            await client.delete_session(session.id)
        except StorageError as err:
            if err.code != grpc.StatusCode.NOT_FOUND:
                raise
        session.forget()  # answered: gone, and it must stay gone

    def restarted(self, listed: set[str]) -> None:
        """After a restart's check: what was in doubt is settled by what survived. A create
        that did not survive is forgotten (were it to come back, it would be listed but never
        created); a delete in doubt that happened counts as answered from now on."""
        for session in list(self.sessions.values()):
            if not session.created:
                if session.id in listed:
                    session.created = True
                else:
                    del self.sessions[session.id]
            elif session.delete_tried and not session.deleted and session.id not in listed:
                session.forget()
